"""Resident memory of BLT training over a prepared (memory-mapped) corpus, against the corpus in memory.

Builds a synthetic corpus (a folder of text documents, --size_mb in all), prepares it once with
`byte_data.prepare_corpus`, then trains a tiny BLT with static patching for a few steps, each run in a
fresh process reading a growing share of the corpus (--max_bytes caps of 1/8, 1/2 and all of it), and
reports that process's peak resident memory (VmHWM) with its anonymous and file-backed parts at the end.
Mapped pages a run touched count in RssFile; the kernel can drop them at any time, so RssAnon is what the
run holds. The in-memory side (the folder read into a list of bytes, patch lengths computed up front) runs
on the smallest cap only, unless --memory_all.

    python bench/corpus_memory.py --out bench/results/corpus_memory.json            # 300 MB, a few minutes
    python bench/corpus_memory.py --size_mb 2000 --memory_all                         # where disk allows
    python bench/corpus_memory.py --quick                                             # seconds
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # `python bench/NAME.py` puts bench/ first on the path, not the repository
    sys.path.insert(0, ROOT)

from byte_data import load_corpus, prepare_corpus, split_documents  # noqa: E402
from train_blt import (  # noqa: E402
    PatchedWindows,
    build_model,
    corpus_lengths,
    document_lengths,
    model_config,
    patch_config,
    train_config,
)
from training import Dist, make_optimizer, train  # noqa: E402

WORDS = np.array([w.encode() for w in "the of and a to in is was for on that with as by at from his an were "
                  "are which this be or has had it not but first one their its new after who they have her "
                  "she two been other when there all during into school time may years more most only "
                  "over city some world would where later up such used many can state about national out "
                  "known university united then made".split()], dtype=object)


def write_synthetic_corpus(folder: str, size_bytes: int, doc_kb: int, seed: int = 0) -> int:
    """Documents of words (mean doc_kb KB) totalling about size_bytes; returns the bytes written."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    total, i = 0, 0
    while total < size_bytes:
        n_words = int(rng.integers(doc_kb * 100, doc_kb * 300))  # ~5 bytes a word: mean doc_kb KB
        words = WORDS[rng.integers(0, len(WORDS), n_words)]
        doc = f"= Document {i} =\n".encode() + b" ".join(words) + f"\n{rng.integers(1 << 40)}\n".encode()
        sub = os.path.join(folder, f"{i // 1000:04d}")  # a thousand files a folder
        os.makedirs(sub, exist_ok=True)
        with open(os.path.join(sub, f"{i:07d}.txt"), "wb") as f:
            f.write(doc)
        total += len(doc)
        i += 1
    return total


def child(data: str, max_bytes: int, steps: int, out_dir: str) -> dict:
    """Train a tiny BLT for `steps` steps with static patching on `data` (this process); memory figures."""
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    docs = load_corpus(data, max_bytes)
    train_docs, _ = split_documents(docs)
    static = patch_config(method="static", patch_size=4, max_patch_size=64)
    lengths = document_lengths(train_docs, None, static)
    model = build_model(model_config("tiny"))
    windows = PatchedWindows(train_docs, lengths, model.config.max_seq_len, seed=0)
    load_s = time.perf_counter() - t0
    cfg = train_config(max_steps=steps, batch_size=8, warmup_steps=1, eval_interval=0, ckpt_interval=0)
    optimizer = make_optimizer(model, cfg.lr, cfg.weight_decay, torch.device("cpu"))
    t0 = time.perf_counter()
    result = train(model, optimizer, windows, cfg, device=torch.device("cpu"), dist=Dist(),
                   out=os.path.join(out_dir, "blt.pth"), desc="bench",
                   bytes_per_step=cfg.batch_size * model.config.max_seq_len)
    status = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
                status[key] = int(value.split()[0]) * 1024  # kB -> bytes
    return {"train_bytes": int(corpus_lengths(train_docs).sum()), "peak_rss": status.get("VmHWM"),
            "rss_end": status.get("VmRSS"), "rss_anon_end": status.get("RssAnon"),
            "rss_file_end": status.get("RssFile"), "load_s": load_s, "train_s": time.perf_counter() - t0,
            "loss": result["loss"]}


def run_child(data: str, max_bytes: int, steps: int, out_dir: str) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", data, "--child_max_bytes", str(max_bytes),
           "--steps", str(steps), "--child_out", out_dir]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if r.returncode:
        raise RuntimeError(f"child failed: {r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size_mb", type=float, default=300, help="synthetic corpus size in MB (1e6 bytes)")
    p.add_argument("--doc_kb", type=int, default=16, help="mean document size in KB")
    p.add_argument("--steps", type=int, default=5, help="training steps per run")
    p.add_argument("--work", default=None, help="folder for the corpus (default: a temporary one, removed)")
    p.add_argument("--memory_all", action="store_true", help="also run the in-memory side on every cap")
    p.add_argument("--quick", action="store_true", help="a 6 MB corpus: a smoke run of seconds")
    p.add_argument("--out", default=None, help="write the figures as JSON here")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--child_max_bytes", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--child_out", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.child_max_bytes, args.steps, args.child_out)))
        return 0
    size = int((6 if args.quick else args.size_mb) * 1e6)
    work = args.work or tempfile.mkdtemp(prefix="corpus_memory_")
    try:
        src, prep = os.path.join(work, "src"), os.path.join(work, "prepared")
        t0 = time.perf_counter()
        written = write_synthetic_corpus(src, size, 4 if args.quick else args.doc_kb)
        write_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        info = prepare_corpus(src, prep, show_progress=False)
        prepare_s = time.perf_counter() - t0
        prepare_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # this process, so far
        caps = [written // 8, written // 2, written]
        rows = []
        for i, cap in enumerate(caps):
            rows.append({"side": "mapped", "cap": cap, **run_child(prep, cap, args.steps, work)})
            if i == 0 or args.memory_all:
                rows.append({"side": "memory", "cap": cap, **run_child(src, cap, args.steps, work)})
        mb = 1e6
        print(f"corpus {written / mb:.0f} MB in {info['documents']} documents (written in {write_s:.0f} s, "
              f"prepared in {prepare_s:.0f} s; this process peaked at {prepare_peak / mb:.0f} MB)")
        print(f"{'side':8} {'train MB':>9} {'peak RSS MB':>12} {'RssAnon MB':>11} {'RssFile MB':>11} "
              f"{'load s':>7}")
        for r in rows:
            print(f"{r['side']:8} {r['train_bytes'] / mb:9.0f} {r['peak_rss'] / mb:12.0f} "
                  f"{r['rss_anon_end'] / mb:11.0f} {r['rss_file_end'] / mb:11.0f} {r['load_s']:7.1f}")
        report = {"corpus_bytes": written, "documents": info["documents"], "write_s": write_s,
                  "prepare_s": prepare_s, "prepare_process_peak_rss": prepare_peak, "steps": args.steps,
                  "runs": rows}
        if args.out:
            os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
            with open(args.out, "w") as f:
                json.dump(report, f, indent=1)
        return 0
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
