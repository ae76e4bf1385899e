"""BLT training step: our BLTModel against Hugging Face's BltForCausalLM at the same config and patches.

    python bench/blt_train_step.py --out bench/results/blt_train_step.json
    python bench/blt_train_step.py --quick                 # seconds: the tiny preset
    python bench/blt_train_step.py --no_before             # only ours and HF

One training step = forward with targets, backward, grad-norm clip at 1.0, AdamW step (training.make_optimizer
for both models, so the optimizer code is identical). Both models see the same (B, T) bytes of builtin
text and the SAME (B, P) patch_lengths (space patching, max patch 16 bytes). Timed in alternating rounds
of --steps steps each after one warm-up step; bytes/s = B x T x steps / seconds; `ratio` = ours / HF,
the median over rounds of the per-round ratio. Side `before` is the frozen copy of blt_model.py from
before issue 12 (bench/blt_model_before.py, same weights layout), so `ratio_ours_over_before` is measured
in the same run too. Every figure is measured; nothing is extrapolated.

Peak memory: each side runs alone in a fresh subprocess, builds its model, optimizer and batch, then
resets the kernel's peak-RSS mark (/proc/self/clear_refs) and runs its first steps (the first allocates
AdamW's state). `peak_rss_delta` = peak RSS during those steps - RSS just before them: the step's
activations, gradients and optimizer state, whatever allocator torch uses (tracemalloc cannot see them).
That figure includes what glibc keeps of freed blocks (heap fragmentation: it grows with the steps
measured and moves by tens of MB from run to run), so each side runs a second time with
MALLOC_MMAP_THRESHOLD_=65536: every block of 64 KB or more is then mapped alone and returned on free, and
`peak_live_delta` follows the tensors alive at the peak (a little slower, so only a memory figure).

HF side: transformers BltConfig with our encoder/global/decoder widths, layers, heads, SwiGLU sizes,
hash n-gram sizes 3..8 and table size, cross_attn_k and local window, sdpa attention, random init; no
in-forward patcher (patch_in_forward=False): patch_lengths are passed in, as to ours. Differences that
remain are listed under `architecture_differences` in the JSON.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys

import bench_utils as bu
import blt_model_before
import numpy as np
import torch

from blt_model import BLTConfig, BLTModel, flops_per_byte
from byte_data import load_corpus
from entropy_patcher import PatchConfig, patch_lengths_from_entropies
from training import make_optimizer

ARCH_DIFFERENCES = [
    "HF decoder reads encoder byte states directly as its input; ours normalises and projects them "
    "(in_norm + in_proj, C_enc x C_dec) and shifts by one byte with a learned start state.",
    "HF's global transformer has no input projection when cross_attn_k x encoder width equals the global "
    "width (identity); ours always projects (in_proj K*C_enc x D).",
    "HF decoder patch ids come from patch_lengths[:, 1:] (a BOS-patch convention), ours from the lengths as "
    "given (DESIGN.md alignment); the decoder cross-attention matrix has the same size either way.",
    "HF cross-attention adds the residual inside the layer and again outside; ours once. Same FLOPs.",
    "HF loss shifts labels (position t predicts byte t+1: T-1 targets); ours predicts byte t at position t "
    "(T targets). HF logits are cast to fp32 before the loss; ours are fp32 already.",
    "HF local self-attention builds a dense (T x T) sliding-window mask for sdpa; ours computes blocks of "
    "`local_window` queries against two key blocks (T x 2W), a real algorithmic saving at T >> W.",
    "HF's hash embedding is one table of 6 x table_size rows (offset ids); ours six tables; same parameters.",
    "Init differs (HF truncated normal 1/sqrt(fan_in); ours GPT-2 normal 0.02): speed-neutral.",
]


def build_batch(cfg: BLTConfig, B: int, T: int, max_patch: int):
    """(B, T) bytes of builtin text and their (B, P) space-patch lengths, right-padded with zeros."""
    docs = load_corpus("builtin", max_bytes=B * T * 4)
    stream = b"".join(docs)
    rows = [stream[i * T:(i + 1) * T] for i in range(B)]
    pc = PatchConfig(method="space", min_patch_size=1, max_patch_size=max_patch, cache_patches=False)
    lengths = [patch_lengths_from_entropies(None, r, pc) for r in rows]
    P = max(len(x) for x in lengths)
    pl = np.zeros((B, P), dtype=np.int64)
    for i, x in enumerate(lengths):
        pl[i, :len(x)] = x
    idx = torch.tensor(np.frombuffer(b"".join(rows), dtype=np.uint8).reshape(B, T).astype(np.int64))
    return idx, torch.from_numpy(pl)


def build_side(side: str, cfg: BLTConfig):
    torch.manual_seed(0)
    if side == "ours":
        model = BLTModel(cfg)
    elif side == "before":
        model = blt_model_before.BLTModel(blt_model_before.BLTConfig(**dataclasses.asdict(cfg)))
    else:
        from transformers import BltForCausalLM

        model = BltForCausalLM(bu.hf_blt_config(cfg))
    model.train()
    opt = make_optimizer(model, 1e-3, 0.1, torch.device("cpu"))
    return model, opt


def make_step(side: str, model, opt, idx, pl):
    def step():
        if side != "hf":
            _, loss = model(idx, pl, targets=idx)
        else:
            loss = model(input_ids=idx, patch_lengths=pl, labels=idx, use_cache=False).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return loss.item()
    return step


def param_counts(model, side: str) -> dict:
    total = sum(p.numel() for p in model.parameters())
    hash_names = ("hash_emb",) if side != "hf" else ("encoder_hash_tok_embedding",)
    hashed = sum(p.numel() for n, p in model.named_parameters() if any(h in n for h in hash_names))
    return {"total": total, "hash_tables": hashed, "without_hash_tables": total - hashed}


def memory_child(side: str, cfg: BLTConfig, B: int, T: int, max_patch: int, steps: int):
    """Runs in its own process: prints one JSON line with this side's RSS figures."""
    model, opt = build_side(side, cfg)
    idx, pl = build_batch(cfg, B, T, max_patch)
    step = make_step(side, model, opt, idx, pl)
    before = bu.current_rss()
    ok = bu.reset_peak_rss()
    for _ in range(steps):
        step()
    peak = bu.peak_rss()
    print(json.dumps({"side": side, "rss_before_steps": before, "peak_rss_during_steps": peak,
                      "peak_rss_delta": peak - before, "peak_reset_worked": ok, "steps": steps}))


def measure_memory(side: str, args) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--_memory_child", side] + _size_args(args)
    res = {}
    for env in (dict(os.environ), dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")):
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
        if out.returncode != 0 or not lines:
            err = out.stderr.strip()
            return {"error": err.splitlines()[-1] if err else f"exit {out.returncode}"}
        if not res:
            res = json.loads(lines[-1])
        else:
            res["peak_live_delta"] = json.loads(lines[-1])["peak_rss_delta"]
    return res


def _size_args(args) -> list[str]:
    a = ["--preset", args.preset, "--batch_size", str(args.batch_size), "--seq_len", str(args.seq_len),
         "--max_patch", str(args.max_patch)]
    if args.threads:
        a += ["--threads", str(args.threads)]
    return a


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    bu.add_common_args(p)
    p.add_argument("--preset", default=None, help="BLTConfig preset (default cpu; quick tiny)")
    p.add_argument("--batch_size", type=int, default=None, help="rows per step (default 8; quick 2)")
    p.add_argument("--seq_len", type=int, default=None, help="bytes per row (default 1024; quick 128)")
    p.add_argument("--max_patch", type=int, default=16, help="longest space patch, bytes")
    p.add_argument("--rounds", type=int, default=None, help="alternating rounds (default 5; quick 2)")
    p.add_argument("--steps", type=int, default=None, help="steps per side per round (default 3; quick 2)")
    p.add_argument("--no_before", action="store_true", help="skip the pre-issue-12 side")
    p.add_argument("--no_memory", action="store_true", help="skip the peak-memory subprocesses")
    p.add_argument("--_memory_child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    bu.setup_threads(args)
    args.preset = args.preset or ("tiny" if args.quick else "cpu")
    args.batch_size = args.batch_size or (2 if args.quick else 8)
    args.seq_len = args.seq_len or (128 if args.quick else 1024)
    rounds = args.rounds or (2 if args.quick else 5)
    steps = args.steps or (2 if args.quick else 3)
    cfg = BLTConfig.from_preset(args.preset, max_seq_len=args.seq_len)
    B, T = args.batch_size, args.seq_len
    if args._memory_child:
        memory_child(args._memory_child, cfg, B, T, args.max_patch, steps=2)
        return 0

    idx, pl = build_batch(cfg, B, T, args.max_patch)
    mean_ps = float(pl.sum() / (pl > 0).sum())
    sides, counts, first_loss = {}, {}, {}
    names = ("ours", "hf") if args.no_before else ("ours", "hf", "before")
    for side in names:
        model, opt = build_side(side, cfg)
        counts[side] = param_counts(model, side)
        sides[side] = make_step(side, model, opt, idx, pl)
        first_loss[side] = sides[side]()  # warm-up step (allocations, AdamW state)
    report = {"benchmark": "blt_train_step", "machine": bu.machine_info(),
              "config": {"blt": dataclasses.asdict(cfg), "preset": args.preset, "batch_size": B, "seq_len": T,
                         "patching": f"space, max_patch_size {args.max_patch}", "patches_per_row": pl.size(1),
                         "mean_patch_size": mean_ps, "rounds": rounds, "steps_per_round": steps,
                         "optimizer": "training.make_optimizer AdamW (fused off on CPU), grad clip 1.0"},
              "params": counts, "first_step_loss": first_loss,
              "architecture_differences": ARCH_DIFFERENCES}
    print(f"{args.preset}: B={B} T={T}, {pl.size(1)} patches/row (mean {mean_ps:.2f} bytes), params ours "
          f"{counts['ours']['total']:,} hf {counts['hf']['total']:,}; {torch.get_num_threads()} threads")
    print("timing (alternating rounds):")

    def run(side):
        def f(r):
            for _ in range(steps):
                sides[side]()
        return f

    times = bu.alternate({side: run(side) for side in names}, rounds)
    nbytes = B * T * steps
    res = {}
    peak = bu.matmul_peak(512 if args.quick else 2048)
    train_flops_per_byte = 3 * flops_per_byte(cfg, mean_ps, T)
    for side in names:
        bps = [nbytes / t for t in times[side]]
        res[side] = {"seconds_per_round": times[side], "bytes_per_s": bu.summary(bps),
                     "step_seconds_median": bu.median(times[side]) / steps}
    ratio = bu.median([th / to for to, th in zip(times["ours"], times["hf"])])
    if "before" in times:
        res["ratio_ours_over_before"] = bu.median([tb / to for to, tb in zip(times["ours"], times["before"])])
        res["ratio_before_over_hf"] = bu.median([th / tb for tb, th in zip(times["before"], times["hf"])])
    res["ours"]["train_mfu"] = train_flops_per_byte * res["ours"]["bytes_per_s"]["median"] / peak
    report.update({"results": res, "ratio": ratio, "ratio_target": 2.0, "ratio_target_met": ratio >= 2.0,
                   "matmul_peak_flops_per_s": peak, "train_flops_per_byte_ours": train_flops_per_byte})
    if not args.no_memory:
        mem = {side: measure_memory(side, args) for side in names}
        if all("peak_rss_delta" in m for m in mem.values()):
            mem["ratio_ours_over_hf"] = mem["ours"]["peak_rss_delta"] / mem["hf"]["peak_rss_delta"]
            mem["live_ratio_ours_over_hf"] = mem["ours"]["peak_live_delta"] / mem["hf"]["peak_live_delta"]
        report["memory"] = mem
    report["machine"]["loadavg_at_end"] = bu.loadavg()

    rows = []
    for side in names:
        m = report.get("memory", {}).get(side, {})
        mb = [m.get(k, float("nan")) / 2**20 for k in ("peak_rss_delta", "peak_live_delta")]
        rows.append((side, res[side]["bytes_per_s"]["median"], res[side]["step_seconds_median"], *mb,
                     counts[side]["total"]))
    bu.print_table(rows, ("side", "train bytes/s", "s/step", "peak MB (delta)", "live MB", "params"))
    print(f"ratio ours/hf = {ratio:.2f} (target >= 2.0)"
          + (f"; ours/before = {res['ratio_ours_over_before']:.2f}" if "before" in times else ""))
    bu.write_json(args.out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
