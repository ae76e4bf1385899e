"""The comparison study: at the same training compute, how do entropy patches compare with fixed
patches, space patches, plain bytes and BPE tokens?

    python complete_entropy_workflow.py --quick_demo --train_entropy          # ~15 minutes on a laptop CPU
    python complete_entropy_workflow.py --train_entropy --out runs/study      # the default, longer budget
    python complete_entropy_workflow.py --entropy_model_path entropy_model.pth --flops_budget 1e14
    python complete_entropy_workflow.py --train_entropy --blt_preset tiny --template_preset tiny \
        --entropy_preset tiny --entropy_steps 20 --max_bytes 60000 --flops_budget 5e9   # a smoke run

Steps: corpus -> whole-document split -> entropy model (trained here on the training documents with
--train_entropy, or loaded) -> thresholds calibrated to --target_patch_size on training documents ->
six runs, each trained to the same training-FLOP budget (3 x forward FLOPs per byte x bytes trained):
    byte                   plain transformer over bytes (template_llm.py)
    bpe                    the same over a byte-level BPE learned from the training documents
    blt-static             BLT, fixed patches of round(target) bytes
    blt-space              BLT, a patch after each run of non-word bytes
    blt-entropy-global     BLT, a patch where H[i] > threshold
    blt-entropy-monotonic  BLT, a patch where H[i] - H[i-1] > threshold
-> held-out bits per byte for each; DIR/results.md, DIR/results.json and plots in DIR.
The study's settings are StudyConfig's fields (each a flag); --quick_demo is a smaller corpus and budget.

The BLT paper's claim (Pagnoni et al. 2024): entropy patching matches token models' bits per byte at
equal training FLOPs, and needs fewer inference FLOPs per byte as patches grow.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from dataclasses import dataclass

import numpy as np

import entropy_llm
import template_llm as tl
import train_blt as tb
from byte_data import DataError, load_corpus, split_documents
from common import add_config_args, config_from_dict, config_overrides, pick_device, write_report
from patch_pictures import plot_entropies
from save_entropy_model import CheckpointError, load_entropy_model

RUN_NAMES = ("byte", "bpe", "blt-static", "blt-space", "blt-entropy-global", "blt-entropy-monotonic")
BLT_METHODS = {"blt-static": "static", "blt-space": "space", "blt-entropy-global": "global",
                "blt-entropy-monotonic": "monotonic"}


@dataclass
class StudyConfig:
    max_bytes: int = 2_000_000  # corpus cap in bytes, before the train/val split
    flops_budget: float = 4e13  # training FLOPs of every run (3 x forward), matched by the step count
    target_patch_size: float = 4.5  # bytes per patch the entropy thresholds are calibrated to
    bpe_vocab_size: int = 4096  # vocabulary of the BPE baseline
    eval_points: int = 4  # held-out evaluations per run, for the BPB-vs-FLOPs curve
    template_preset: str = "cpu"  # model size of the byte and BPE baselines (template_llm.TEMPLATE_PRESETS)
    blt_preset: str = "cpu"  # model size of the BLT runs (blt_model.BLT_PRESETS)
    entropy_preset: str = "cpu"  # entropy model size with --train_entropy (entropy_llm.ENTROPY_PRESETS)
    entropy_steps: int = 0  # entropy model training steps with --train_entropy (0: entropy_llm's default)
    seed: int = 1337  # every run's init and data order

    def __post_init__(self):
        if self.flops_budget <= 0 or self.target_patch_size < 1 or self.eval_points < 1:
            raise ValueError("flops_budget must be positive, target_patch_size >= 1, eval_points >= 1")
        if self.entropy_steps < 0:
            raise ValueError("entropy_steps must not be negative")


# --quick_demo: a 1 MB corpus and 1e13 training FLOPs a run (about 15 minutes on a laptop CPU)
QUICK_DEMO = dict(max_bytes=1_000_000, flops_budget=1e13)


def steps_for(budget: float, flops_per_step: float) -> int:
    """Optimizer steps that spend `budget` training FLOPs at flops_per_step each (at least one)."""
    return max(1, round(budget / flops_per_step))


def schedule(steps: int, eval_points: int) -> dict:
    """Warmup, evaluation and checkpoint intervals for a run of `steps` steps."""
    return dict(max_steps=steps, warmup_steps=max(1, min(100, steps // 10)),
                eval_interval=max(1, steps // eval_points), ckpt_interval=0, eval_max_bytes=10**12)


def run_template(name: str, study: StudyConfig, train_docs, val_docs, out_dir: str, device) -> dict:
    """The byte or BPE baseline, trained to the study's FLOP budget."""
    tokenizer = "bytes" if name == "byte" else "bpe"
    extra = {"vocab_size": study.bpe_vocab_size} if tokenizer == "bpe" else {}
    cfg = tl.build_config(study.template_preset, tokenizer=tokenizer, seed=study.seed, **extra)
    tok = tl.build_tokenizer(cfg, train_docs)
    train_bytes = sum(map(len, train_docs))
    tokens_per_byte = sum(map(len, tl.encode_all(tok, train_docs))) / train_bytes
    per_step = 3 * tl.flops_per_token(cfg) * cfg.batch_size * cfg.max_seq_len
    cfg = dataclasses.replace(cfg, **schedule(steps_for(study.flops_budget, per_step), study.eval_points))
    out = os.path.join(out_dir, f"{name}.pth")
    rep = tl.train_template(cfg, train_docs, val_docs, out, device, tokenizer=tok)
    curve = [(e["step"] * per_step, e["val_bpb"]) for e in rep["evals"]]
    return {"name": name, "val_bpb": rep["val_bpb"], "mean_patch_size": 1 / tokens_per_byte,
            "flops_per_byte": rep["flops_per_byte"], "train_flops": rep["train_flops"],
            "params": rep["params"],
            "bytes_per_s": rep["bytes_per_s"], "steps": cfg.max_steps, "curve": curve,
            "tokens_per_byte": tokens_per_byte, "checkpoint": rep["checkpoint"]}


def run_blt(name: str, study: StudyConfig, docs, entropy_model, entropy_path, out_dir: str, device
            ) -> tuple[dict, tb.PatchedDataset]:
    """A BLT with this run's patching, trained to the study's FLOP budget; also returns its dataset."""
    method = BLT_METHODS[name]
    pcfg = tb.patch_config(method=method, target_patch_size=study.target_patch_size,
                           patch_size=max(1, round(study.target_patch_size)))
    ds = tb.prepare_dataset(docs, pcfg, entropy_model if pcfg.needs_entropy else None, entropy_path)
    model = tb.build_model(tb.model_config(study.blt_preset), study.seed)
    T = model.config.max_seq_len
    base = tb.train_config(seed=study.seed)
    per_step = 3 * model.flops_per_byte(ds.mean_patch_size, T) * base.batch_size * T
    cfg = dataclasses.replace(base, **schedule(steps_for(study.flops_budget, per_step), study.eval_points))
    rep = tb.train_blt(model, ds, cfg, os.path.join(out_dir, f"{name}.pth"), device)
    curve = [(e["step"] * per_step, e["val_bpb"]) for e in rep["evals"]]
    return ({"name": name, "val_bpb": rep["val_bpb"], "mean_patch_size": rep["mean_patch_size"],
             "flops_per_byte": rep["flops_per_byte"], "train_flops": rep["train_flops"],
             "params": rep["params"],
             "bytes_per_s": rep["bytes_per_s"], "steps": cfg.max_steps, "curve": curve,
             "entropy_threshold": rep["entropy_threshold"],
             "patching_flops_per_byte": rep["patching_flops_per_byte"], "checkpoint": rep["checkpoint"]}, ds)


# ----------------------------------------------------------------------------------------------------
# Results: table, JSON, plots


def results_markdown(runs: list[dict], study: StudyConfig, command: str) -> str:
    lines = ["# Comparison at matched training compute", "",
             f"`{command}`", "",
             f"Corpus cap {study.max_bytes:,} bytes; training budget {study.flops_budget:.3g} FLOPs per run; "
             f"entropy thresholds calibrated to {study.target_patch_size} bytes per patch on training "
             f"documents; BPB on held-out documents never trained on.", "",
             "| run | params | mean patch (bytes) | training FLOPs | inference FLOPs/byte | held-out BPB "
             "| train bytes/s |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in runs:
        lines.append(f"| {r['name']} | {r['params'] / 1e6:.2f}M | {r['mean_patch_size']:.2f} | "
                     f"{r['train_flops']:.3g} | {r['flops_per_byte'] / 1e6:.2f}M | {r['val_bpb']:.4f} | "
                     f"{r['bytes_per_s']:,.0f} |")
    ent = [r for r in runs if r.get("patching_flops_per_byte")]
    if ent:
        cost = ent[0]["patching_flops_per_byte"] / 1e6
        lines += ["", f"Entropy patching costs a further {cost:.2f}M FLOPs per byte (the entropy model's "
                      "forward pass, windows overlapping by half), not counted above."]
    return "\n".join(lines) + "\n"


def plot_study(runs: list[dict], datasets: dict, out_dir: str, paragraph=None) -> list[str]:
    """BPB against training FLOPs, patch-size histograms, and one held-out paragraph's entropies."""
    from matplotlib.figure import Figure

    paths = []
    fig = Figure(figsize=(7, 4.5))
    ax = fig.add_subplot()
    for r in runs:
        xs, ys = zip(*r["curve"]) if r["curve"] else ((), ())
        ax.plot(xs, ys, marker="o", label=f"{r['name']} ({r['val_bpb']:.3f})")
    ax.set_xlabel("training FLOPs")
    ax.set_ylabel("held-out bits per byte")
    ax.set_title("Held-out BPB against training compute")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    paths.append(os.path.join(out_dir, "bpb_vs_flops.png"))
    fig.savefig(paths[-1], dpi=120)

    if datasets:
        fig = Figure(figsize=(3.2 * len(datasets), 3))
        for k, (name, ds) in enumerate(datasets.items()):
            ax = fig.add_subplot(1, len(datasets), k + 1)
            sizes = np.concatenate(ds.train_lengths)
            ax.hist(sizes, bins=np.arange(1, min(int(sizes.max()), 40) + 2) - 0.5, color=f"C{k}")
            ax.set_title(f"{name}\nmean {sizes.mean():.2f}", fontsize=9)
            ax.set_xlabel("patch size (bytes)")
        fig.tight_layout()
        paths.append(os.path.join(out_dir, "patch_sizes.png"))
        fig.savefig(paths[-1], dpi=120)

    if paragraph is not None:
        data, H, lengths, threshold = paragraph
        paths.append(os.path.join(out_dir, "entropy_patches.png"))
        plot_entropies(data, H, lengths, threshold, paths[-1],
                       title="held-out paragraph: entropy and patches")
    return paths


def held_out_paragraph(ds, entropy_model, max_len: int = 160):
    """A paragraph of a held-out document (after its first blank line), its entropies and global patches."""
    idx = next((i for i, d in enumerate(ds.val_docs) if b"\n\n" in d[:4000]), 0)
    doc = ds.val_docs[idx]
    starts = tb.patch_starts(ds.val_lengths[idx])
    blank = doc.find(b"\n\n", 0, 4000) + 2 if b"\n\n" in doc[:4000] else 0
    s = int(starts[min(np.searchsorted(starts, min(blank, len(doc) - 1)), len(starts) - 1)])  # a patch start
    e = min(len(doc), s + max_len)
    H = entropy_llm.compute_entropies(entropy_model, doc[:e])  # causal: a prefix's entropies are the whole's
    return doc[s:e], H[s:e], tb.window_lengths(starts, s, e), ds.patch_config.entropy_threshold


# ----------------------------------------------------------------------------------------------------


def run_study(study: StudyConfig, data: str, out_dir: str, entropy_model_path: str, train_entropy: bool,
              quick_demo: bool, device=None, runs=RUN_NAMES, command: str = "", text_field: str | None = None
              ) -> dict:
    os.makedirs(out_dir, exist_ok=True)
    t_start = time.perf_counter()
    docs = load_corpus(data, study.max_bytes, text_field=text_field)
    train_docs, val_docs = split_documents(docs)
    print(f"study: {len(train_docs)} training documents ({sum(map(len, train_docs)):,} bytes), "
          f"{len(val_docs)} held-out ({sum(map(len, val_docs)):,} bytes); budget {study.flops_budget:.3g} "
          f"training FLOPs per run")
    entropy_model, entropy_info = None, {}
    if any(BLT_METHODS.get(r) in ("global", "monotonic") for r in runs):
        if train_entropy:
            steps = {"max_steps": study.entropy_steps} if study.entropy_steps else {}
            ecfg = entropy_llm.build_config(study.entropy_preset, quick_demo=quick_demo, seed=study.seed,
                                            **steps)
            erep = entropy_llm.train_entropy_model(ecfg, train_docs, val_docs, entropy_model_path, device)
            entropy_info = {k: erep[k] for k in ("val_bpb", "params", "bytes_per_s", "flops_per_byte")}
        elif not os.path.exists(entropy_model_path):
            raise CheckpointError(f"{entropy_model_path}: no such file; add --train_entropy to train one on "
                                  "this corpus's training documents")
        entropy_model = load_entropy_model(entropy_model_path, pick_device(device))
        entropy_info["checkpoint"] = os.path.abspath(entropy_model_path)

    results, datasets = [], {}
    for name in runs:
        print(f"\n=== {name} ===")
        t0 = time.perf_counter()
        if name in BLT_METHODS:
            r, ds = run_blt(name, study, docs, entropy_model, os.path.abspath(entropy_model_path), out_dir,
                            device)
            datasets[name] = ds
        else:
            r = run_template(name, study, train_docs, val_docs, out_dir, device)
        r["wall_s"] = time.perf_counter() - t0
        results.append(r)
        print(f"{name}: held-out {r['val_bpb']:.4f} BPB, {r['train_flops']:.3g} training FLOPs, "
              f"{r['wall_s']:.0f}s")
    budgets = [r["train_flops"] for r in results]
    spread = (max(budgets) - min(budgets)) / study.flops_budget
    paragraph = None
    if "blt-entropy-global" in datasets:
        paragraph = held_out_paragraph(datasets["blt-entropy-global"], entropy_model)
    plots = plot_study(results, datasets, out_dir, paragraph)
    summary = {"runs": results, "study": dataclasses.asdict(study), "data": data,
               "entropy_model": entropy_info,
               "budget_spread": spread, "plots": [os.path.basename(p) for p in plots],
               "wall_s": time.perf_counter() - t_start, "command": command}
    with open(os.path.join(out_dir, "results.md"), "w") as f:
        f.write(results_markdown(results, study, command))
    write_report(os.path.join(out_dir, "results.json"), summary)
    return summary


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="builtin", help="builtin | builtin:code | builtin:prose | file | "
                   "folder | .jsonl/.parquet/.arrow file | hf:NAME[:CONFIG] (default: builtin)")
    p.add_argument("--text_field", default=None, help="text column of a datasets source (default: text)")
    p.add_argument("--out", default="runs/study", help="folder for checkpoints, results.md/json and plots")
    p.add_argument("--quick_demo", action="store_true", help="a smaller corpus and budget: ~15 min on a CPU")
    p.add_argument("--train_entropy", action="store_true", help="train the entropy model (training docs)")
    p.add_argument("--entropy_model_path", default="entropy_model.pth",
                   help="the entropy model of the BLTs' patcher: loaded, or written with --train_entropy")
    p.add_argument("--runs", default=",".join(RUN_NAMES),
                   help="comma-separated subset of " + ", ".join(RUN_NAMES))
    p.add_argument("--device", default=None, help="cpu | cuda (default: cuda if present)")
    p.add_argument("--report", default=None, help="also write results.json's content here")
    add_config_args(p, StudyConfig)
    args = p.parse_args(argv)
    runs = tuple(r.strip() for r in args.runs.split(",") if r.strip())
    unknown = [r for r in runs if r not in RUN_NAMES]
    if unknown:
        p.error(f"unknown runs: {', '.join(unknown)}")
    try:
        study = config_from_dict(StudyConfig, QUICK_DEMO if args.quick_demo else {},
                                 **config_overrides(args, StudyConfig))
        command = "python complete_entropy_workflow.py " + " ".join(sys.argv[1:] if argv is None else argv)
        summary = run_study(study, args.data, args.out, args.entropy_model_path, args.train_entropy,
                            args.quick_demo, args.device, runs, command.strip(), args.text_field)
    except (CheckpointError, DataError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print()
    print(open(os.path.join(args.out, "results.md")).read())
    print(f"wrote {args.out}/results.md, results.json, {', '.join(summary['plots'])} "
          f"(budgets within {100 * summary['budget_spread']:.1f}%; {summary['wall_s'] / 60:.1f} min)")
    write_report(args.report, summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
