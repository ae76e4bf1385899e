"""The comparison study, run the way the BLT paper argues: do entropy patches match BPE tokens at equal
training compute, equal inference compute per byte and equal context, and by how much, with what error?

    python complete_entropy_workflow.py --quick_demo --train_entropy          # ~11 minutes on a 2-core CPU
    python complete_entropy_workflow.py --train_entropy --entropy_steps 400 --batch_size 4 \
        --max_bytes 4000000 --flops_budgets 1e12,3e12,1e13 --seeds 2 --out docs/study   # ~6 hours
    python complete_entropy_workflow.py --entropy_model_path entropy_model.pth --flops_budget 1e14
    python complete_entropy_workflow.py --train_entropy --template_preset cpu --blt_preset tiny \
        --entropy_preset tiny --entropy_steps 20 --max_bytes 60000 --context_bytes 128 --blt_local_dim 32 \
        --bpe_vocab_size 300 --batch_size 4 --flops_budget 3e10                # a smoke run, seconds
The seed's research questions (answers in docs/research/README.md): the study per domain, and the entropy
model's data (--domains and --entropy_data_fraction below):
    python complete_entropy_workflow.py --quick_demo --train_entropy --domains builtin:code,builtin:prose
    python complete_entropy_workflow.py --quick_demo --data builtin:code --entropy_data_fraction 0.01,0.1,1.0

Protocol (DESIGN.md, "The comparison protocol"):
- Runs (--runs): byte and bpe (template_llm.py, a plain transformer over bytes or a BPE learned from the
  training documents), blt-static[-N] (fixed patches of N bytes, default 4), blt-space, and
  blt-entropy-[METHOD-]SIZE (METHOD global (default), monotonic or global_monotonic, its thresholds
  calibrated on training documents to SIZE bytes per patch), blt-entropy-ensemble[-COMBINE]-SIZE (global
  thresholds on the combined score of the study's entropy model and a second one trained the same way with
  seed+1, OUT/entropy_model_seed2.pth; COMBINE mean (default), max or js; its patching and entropy training
  FLOPs the sum of both models').
- Equal context: every model trains on rows covering context_bytes bytes (BPE: context_bytes x its measured
  tokens per byte tokens) and scores each held-out document in windows of its row length overlapping by
  half, so every scored byte has half a row of context, or the whole document before it.
- Matched inference FLOPs (default): F = the BPE baseline's forward FLOPs per byte; the byte baseline's
  width and depth, and the BLT's global model (beside light local models of width blt_local_dim), are
  sized so that every run lands within 10% of F. The entropy model's cost is reported apart.
- Budgets: each (run, budget, seed) trains from scratch to its budget with its own cosine schedule:
  steps = budget / (3 x forward FLOPs per byte x batch_size x context_bytes).
- Uncertainty: BPB with a 95% bootstrap interval over held-out documents; BLT minus BPE with a paired
  interval on the same documents; --seeds N changes init and data order (the entropy model and the BPE
  tokenizer are trained once, with the first seed, and shared). An interval holding 0: "no difference".
- Boundary quality of every BLT run's patching of the held-out documents (patch_pictures.boundary_quality),
  its enrichment under the study's entropy model as the reference byte model.
Everything the study trains goes under --out, with results.md, results.json and plots; an existing model
there is refused unless --overwrite.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import os
import re
import sys
import time
from dataclasses import dataclass, field

import numpy as np

import entropy_llm
import template_llm as tl
import train_blt as tb
from blt_model import BLTConfig, flops_per_byte
from byte_data import DataError, load_corpus, split_documents
from common import add_config_args, config_from_dict, config_overrides, pick_device, write_report
from patch_pictures import boundary_markdown, boundary_quality, num, plot_domains, plot_study
from save_entropy_model import CheckpointError, load_checkpoint, load_entropy_model

RUN_NAMES = ("byte", "bpe", "blt-static", "blt-space", "blt-entropy-4.5", "blt-entropy-6", "blt-entropy-8")
ENTROPY_METHODS = ("global", "monotonic", "global_monotonic")
SECOND_ENTROPY_MODEL = "entropy_model_seed2.pth"  # an ensemble run's second entropy model, under --out
LN2 = math.log(2)
MATCH_TOLERANCE = 0.10  # every run's forward FLOPs per byte within 10% of the BPE baseline's


@dataclass
class StudyConfig:
    max_bytes: int = 2_500_000  # corpus cap in bytes, before the train/val split
    flops_budgets: str = "4e13"  # comma-separated training FLOPs per run; each budget a separate set of runs
    context_bytes: int = 1024  # bytes every model's training rows (and scoring windows) cover
    batch_size: int = 8  # rows of context_bytes per optimizer step, every model
    match_inference_flops: bool = True  # size every model to the BPE baseline's forward FLOPs per byte
    blt_local_dim: int = 64  # width of the BLT's one encoder and one decoder layer when matching FLOPs
    bpe_vocab_size: int = 4096  # vocabulary of the BPE baseline
    template_preset: str = "cpu"  # size of the BPE baseline (and byte baseline unmatched): TEMPLATE_PRESETS
    blt_preset: str = "cpu"  # BLT size unmatched; matched, its hash tables and local window (BLT_PRESETS)
    entropy_preset: str = "cpu"  # entropy model size with --train_entropy (entropy_llm.ENTROPY_PRESETS)
    entropy_steps: int = 0  # entropy model training steps with --train_entropy (0: entropy_llm's default)
    seed: int = 1337  # the first seed: init and data order of every run
    seeds: int = 1  # seeds seed..seed+seeds-1, each a separate run of every (run, budget)
    bootstrap_reps: int = 2000  # bootstrap resamples of the held-out documents

    def __post_init__(self):
        if any(b <= 0 for b in self.budgets) or not self.budgets:
            raise ValueError(f"flops_budgets must be positive numbers, got {self.flops_budgets!r}")
        if min(self.context_bytes, self.batch_size, self.seeds, self.bootstrap_reps, self.blt_local_dim) < 1:
            raise ValueError("context_bytes, batch_size, seeds, bootstrap_reps, blt_local_dim must be >= 1")
        if self.entropy_steps < 0:
            raise ValueError("entropy_steps must not be negative")

    @property
    def budgets(self) -> list[float]:
        try:
            return [float(b) for b in str(self.flops_budgets).split(",") if b.strip()]
        except ValueError:
            raise ValueError(f"flops_budgets: not a comma-separated list: {self.flops_budgets!r}") from None


# --quick_demo: 1 MB (about 270 KB held out), one budget, five runs, a tiny entropy model: ~11 min on 2 cores
QUICK_DEMO = dict(max_bytes=1_000_000, flops_budgets="1e12", batch_size=4, entropy_preset="tiny",
                  entropy_steps=300)
QUICK_RUNS = ("byte", "bpe", "blt-space", "blt-entropy-4.5", "blt-entropy-8")


def parse_run(name: str) -> dict:
    """What a run name asks for: {"tokenizer"} for the baselines, {"method", "size"} for a BLT (an
    ensemble of two entropy models adds {"ensemble": its combine rule})."""
    if name in ("byte", "bpe"):
        return {"tokenizer": "bytes" if name == "byte" else "bpe"}
    if name == "blt-space":
        return {"method": "space", "size": None}
    if m := re.fullmatch(r"blt-static(?:-(\d+))?", name):
        return {"method": "static", "size": int(m.group(1) or 4)}
    if m := re.fullmatch(r"blt-entropy-(?:(global|monotonic|global_monotonic)-)?(\d+(?:\.\d+)?)", name):
        if float(m.group(2)) >= 1:
            return {"method": m.group(1) or "global", "size": float(m.group(2))}
    if m := re.fullmatch(r"blt-entropy-ensemble-(?:(mean|max|js)-)?(\d+(?:\.\d+)?)", name):
        if float(m.group(2)) >= 1:
            return {"method": "global", "size": float(m.group(2)), "ensemble": m.group(1) or "mean"}
    raise ValueError(f"unknown run {name!r}: byte, bpe, blt-static[-N], blt-space, "
                     "blt-entropy-[global-|monotonic-|global_monotonic-]SIZE or "
                     "blt-entropy-ensemble-[mean-|max-|js-]SIZE")


def checkpoint_path(out_dir: str, name: str, budget: float, seed: int) -> str:
    return os.path.join(out_dir, f"{name}-{budget:g}-seed{seed}.pth")


def steps_for(budget: float, fwd_flops_per_byte: float, batch_size: int, context_bytes: int) -> int:
    """Optimizer steps spending `budget` training FLOPs (3 x forward) on batch_size rows of context_bytes."""
    return max(1, round(budget / (3 * fwd_flops_per_byte * batch_size * context_bytes)))


def schedule(steps: int, seed: int) -> dict:
    """A run's own schedule: warmup, cosine to its last step, one evaluation at the end, one checkpoint."""
    return dict(max_steps=steps, warmup_steps=min(100, steps // 10), eval_interval=0, ckpt_interval=0,
                seed=seed)


# ----------------------------------------------------------------------------------------------------
# Matched inference FLOPs: size a model so that its forward FLOPs per byte sit at a target


def size_byte_lm(target: float, context_bytes: int) -> tuple[dict, float]:
    """(d_model, n_heads, n_layers) of a byte transformer closest to `target` FLOPs/byte at this context,
    heads of 32, with a mild preference for width/depth near 64."""
    best = None
    for layers in range(1, 13):
        for dim in range(32, 1025, 32):
            cfg = tl.TemplateConfig(tokenizer="bytes", d_model=dim, n_heads=dim // 32, n_layers=layers,
                                    max_seq_len=context_bytes)
            f = tl.flops_per_byte(cfg)
            score = abs(math.log(f / target)) + 0.01 * abs(math.log2(dim / layers / 64))
            if best is None or score < best[0]:
                best = (score, dict(d_model=dim, n_heads=dim // 32, n_layers=layers), f)
    return best[1], best[2]


def size_blt(target: float, mean_patch_size: float, base: BLTConfig, local_dim: int = 64,
             head_dim: int = 32) -> tuple[BLTConfig, float]:
    """`base` (its hash tables, local window and row length kept) with light local models (one encoder and
    one decoder layer of width local_dim) and the global model whose width (a multiple of 64) and depth
    (1..24, width/depth 32..256) bring forward FLOPs/byte at this mean patch size closest to `target`."""
    best = None
    heads = max(1, local_dim // head_dim)
    for layers in range(1, 25):
        for dim in range(64, 2049, 64):
            if not 32 <= dim / layers <= 256:
                continue
            cfg = dataclasses.replace(base, encoder_layers=1, encoder_dim=local_dim, encoder_heads=heads,
                                      decoder_layers=1, decoder_dim=local_dim, decoder_heads=heads,
                                      global_layers=layers, global_dim=dim, global_heads=dim // 64)
            f = flops_per_byte(cfg, mean_patch_size)
            score = abs(math.log(f / target)) + 0.01 * abs(math.log2(dim / layers / 96))
            if best is None or score < best[0]:
                best = (score, cfg, f)
    return best[1], best[2]


def check_matched(name: str, f: float, target: float):
    if abs(f / target - 1) > MATCH_TOLERANCE:
        raise ValueError(f"{name}: {f:.3g} forward FLOPs/byte is not within 10% of the BPE baseline's "
                         f"{target:.3g}; change --blt_local_dim or --context_bytes, or "
                         "--match_inference_flops false")


# ----------------------------------------------------------------------------------------------------
# Uncertainty: bootstrap over held-out documents


def bpb_interval(doc_nats, doc_bytes, reps: int = 2000, seed: int = 0, level: float = 0.95):
    """(bpb, lo, hi): bits per byte over the documents and a percentile bootstrap interval over documents."""
    nats, nbytes = np.asarray(doc_nats, np.float64), np.asarray(doc_bytes, np.float64)
    n = len(nats)  # counts: (reps, n) multiplicities of each document in each resample
    counts = np.random.default_rng(seed).multinomial(n, np.full(n, 1.0 / n), size=reps).astype(np.float64)
    boot = (counts @ nats) / (LN2 * (counts @ nbytes))
    q = (1 - level) / 2
    lo, hi = np.quantile(boot, [q, 1 - q])
    return float(nats.sum() / (LN2 * nbytes.sum())), float(lo), float(hi)


def paired_difference(doc_nats_a, doc_nats_b, doc_bytes, reps: int = 2000, seed: int = 0,
                      level: float = 0.95):
    """(d, lo, hi) for d = BPB(a) - BPB(b) on the same documents, resampled together (paired)."""
    diff = np.asarray(doc_nats_a, np.float64) - np.asarray(doc_nats_b, np.float64)
    return bpb_interval(diff, doc_bytes, reps, seed, level)


def verdict(lo: float, hi: float) -> str:
    return "no difference" if lo <= 0 <= hi else ("better than BPE" if hi < 0 else "worse than BPE")


# ----------------------------------------------------------------------------------------------------
# The runs


@dataclass
class Setup:
    """What every run of the study shares: the split, the BPE tokenizer, the target and the BLTs' data."""

    train_docs: list[bytes]
    val_docs: list[bytes]
    tokenizer: object  # the BPE, learned once from the training documents
    tokens_per_byte: float
    bpe_row_tokens: int  # the BPE's rows: context_bytes x its tokens per byte
    target: float  # the BPE baseline's forward FLOPs per byte
    datasets: dict  # BLT run name -> tb.PatchedDataset
    entropy_train_flops: dict = field(default_factory=dict)  # BLT run name -> its entropy models' training


def model_config(name: str, study: StudyConfig, setup: Setup) -> tuple[object, float]:
    """A run's model config (with matched FLOPs, sized to the target) and its forward FLOPs per byte."""
    if name not in ("byte", "bpe"):
        base = tb.model_config(study.blt_preset, max_seq_len=study.context_bytes)
        patch = setup.datasets[name].mean_patch_size
        if study.match_inference_flops:
            return size_blt(setup.target, patch, base, study.blt_local_dim)
        return base, flops_per_byte(base, patch)
    sizes = dict(max_seq_len=study.context_bytes)
    if name == "bpe":
        sizes = dict(vocab_size=study.bpe_vocab_size, max_seq_len=setup.bpe_row_tokens)
    elif study.match_inference_flops:
        sizes.update(size_byte_lm(setup.target, study.context_bytes)[0])
    cfg = tl.build_config(study.template_preset, tokenizer="bpe" if name == "bpe" else "bytes",
                          batch_size=study.batch_size, **sizes)
    return cfg, tl.flops_per_byte(cfg, setup.tokens_per_byte if name == "bpe" else 1.0)


def run_one(name: str, budget: float, seed: int, study: StudyConfig, setup: Setup, out_dir: str,
            device) -> dict:
    """One run trained from scratch to `budget` with this seed; its record, with per-document nats."""
    t0 = time.perf_counter()
    ckpt = checkpoint_path(out_dir, name, budget, seed)
    cfg, fpb = model_config(name, study, setup)
    steps = steps_for(budget, fpb, study.batch_size, study.context_bytes)
    if name in ("byte", "bpe"):
        tpb = setup.tokens_per_byte if name == "bpe" else 1.0
        cfg = dataclasses.replace(cfg, **schedule(steps, seed))
        rep = tl.train_template(cfg, setup.train_docs, setup.val_docs, ckpt, device,
                                tokenizer=setup.tokenizer if name == "bpe" else None, per_document=True)
        kept = ("tokenizer", "vocab_size", "d_model", "n_heads", "n_layers", "max_seq_len")
        extra = {"mean_patch_size": 1 / tpb, "params_no_hash": rep["params"], "tokens_per_byte": tpb,
                 "patching_flops_per_byte": 0.0, "model_config": {k: getattr(cfg, k) for k in kept}}
    else:
        ds = setup.datasets[name]
        tcfg = tb.train_config(batch_size=study.batch_size, **schedule(steps, seed))
        rep = tb.train_blt(tb.build_model(cfg, seed), ds, tcfg, ckpt, device, per_document=True)
        extra = {"mean_patch_size": rep["mean_patch_size"], "params_no_hash": rep["params_without_hash"],
                 "patching_flops_per_byte": ds.patching_flops_per_byte,
                 "entropy_train_flops": setup.entropy_train_flops.get(name, 0.0),
                 "entropy_threshold": rep["entropy_threshold"], "model_config": dataclasses.asdict(cfg)}
    if len(rep["doc_nats"]) != len(setup.val_docs):
        raise RuntimeError(f"{name}: scored {len(rep['doc_nats'])} held-out documents, not "
                           f"{len(setup.val_docs)}")
    bpb, lo, hi = bpb_interval(rep["doc_nats"], rep["doc_bytes"], study.bootstrap_reps, study.seed)
    return {"name": name, "budget": budget, "seed": seed, "val_bpb": bpb, "bpb_ci": [lo, hi], **extra,
            "flops_per_byte": rep["flops_per_byte"], "train_flops": rep["train_flops"], "steps": steps,
            "context_bytes": study.context_bytes, "batch_size": study.batch_size,
            "bytes_seen": steps * study.batch_size * study.context_bytes, "params": rep["params"],
            "bytes_per_s": rep["bytes_per_s"], "checkpoint": ckpt, "wall_s": time.perf_counter() - t0,
            "doc_nats": np.asarray(rep["doc_nats"], np.float64)}


def entropy_facts(path: str, model, train_docs: list[bytes]) -> dict:
    """The entropy model's costs: training FLOPs (3 x forward per byte x bytes it trained on, from its
    checkpoint's training state) and patching FLOPs per byte (forward per byte x the bytes its scoring
    windows compute per byte kept: entropy_llm.entropy_windows over the training documents)."""
    cfg, fpb = model.config, entropy_llm.flops_per_byte(model.config)
    if cfg.sliding_window:  # one pass, every byte computed once
        overlap = 1.0
    else:  # full attention in windows overlapping by half
        computed = sum(e - s for d in train_docs
                       for s, _, e in entropy_llm.entropy_windows(len(d), cfg.max_seq_len))
        overlap = computed / max(1, sum(map(len, train_docs)))
    train = (load_checkpoint(path, "entropy_llm")["_extra_state"].get("train") or {}).get("config") or {}
    seen = train.get("max_steps", 0) * train.get("batch_size", 0) * cfg.train_row_len or None
    return {"checkpoint": os.path.abspath(path), "params": sum(p.numel() for p in model.parameters()),
            "flops_per_byte": fpb, "bytes_trained": seen, "train_flops": 3 * fpb * seen if seen else None,
            "window_overlap": overlap, "patching_flops_per_byte": fpb * overlap}


def entropy_config(study: StudyConfig, quick_demo: bool, seed: int) -> entropy_llm.EntropyConfig:
    steps = {"max_steps": study.entropy_steps} if study.entropy_steps else {}
    return entropy_llm.build_config(study.entropy_preset, quick_demo=quick_demo, seed=seed, **steps)


def entropy_model_for(path: str, seed: int, missing: str, train: bool, study: StudyConfig, quick_demo: bool,
                      train_docs, val_docs, device) -> tuple[object, dict]:
    """An entropy model and its facts: trained here on the training documents with this seed (into path),
    or read from path (`missing`: the advice when it is not there)."""
    info = {}
    if train:
        erep = entropy_llm.train_entropy_model(entropy_config(study, quick_demo, seed), train_docs, val_docs,
                                               path, device)
        info = {"val_bpb": erep["val_bpb"], "trained_here": True}
    elif not os.path.exists(path):
        raise CheckpointError(f"{path}: no such file; {missing}")
    model = load_entropy_model(path, pick_device(device))
    return model, {**info, **entropy_facts(path, model, train_docs)}


def prepare(study: StudyConfig, docs, runs, out_dir, entropy: list[tuple]) -> Setup:
    """The split, the BPE (once), its tokens per byte, the FLOP target and every BLT run's patched data.

    entropy: (model, absolute path, facts) of the study's entropy model (None, path, {} when no run needs
    one), then of an ensemble run's second entropy model."""
    train_docs, val_docs = split_documents(docs)
    if not val_docs:
        raise DataError("the corpus is too small to hold out any documents")
    cfg = tl.build_config(study.template_preset, tokenizer="bpe", vocab_size=study.bpe_vocab_size)
    tokenizer = tl.build_tokenizer(cfg, train_docs)
    tpb = sum(map(len, tl.encode_all(tokenizer, train_docs))) / sum(map(len, train_docs))
    cfg = dataclasses.replace(cfg, max_seq_len=max(1, round(study.context_bytes * tpb)))
    setup = Setup(train_docs, val_docs, tokenizer, tpb, cfg.max_seq_len, tl.flops_per_byte(cfg, tpb), {})
    for name in runs:
        if "method" not in (spec := parse_run(name)):
            continue
        size = spec["size"] or 4.5
        pcfg = tb.patch_config(method=spec["method"], target_patch_size=size, patch_size=max(1, round(size)),
                               cache_dir=os.path.join(out_dir, "patch_cache"),
                               max_patch_size=min(64, study.context_bytes))
        if "ensemble" in spec:  # the study's entropy model and the second one, combined
            if len(entropy) < 2:
                raise ValueError(f"{name}: an ensemble run needs the second entropy model")
            used = entropy
            ds = tb.prepare_dataset(docs, pcfg, [m for m, _, _ in used], [p for _, p, _ in used],
                                    combine=spec["ensemble"])
        else:
            used = entropy[:1] if pcfg.needs_entropy else []
            ds = tb.prepare_dataset(docs, pcfg, entropy[0][0] if used else None, entropy[0][1])
        ds.patching_flops_per_byte = sum((f["patching_flops_per_byte"] for _, _, f in used), 0.0)
        if pcfg.needs_entropy:
            setup.entropy_train_flops[name] = float(sum(f.get("train_flops") or 0.0 for _, _, f in used))
        setup.datasets[name] = ds
    return setup


def summarize(results: list[dict], study: StudyConfig, doc_bytes) -> list[dict]:
    """Per (run name, budget) over seeds: mean BPB, seed std, intervals of the seed-averaged per-document
    nats and of their paired difference from BPE's (seed-averaged too)."""
    groups: dict = {}
    for r in results:
        groups.setdefault((r["name"], r["budget"]), []).append(r)
    out = []
    for (name, budget), rs in groups.items():
        nats = np.mean([r["doc_nats"] for r in rs], axis=0)
        _, lo, hi = bpb_interval(nats, doc_bytes, study.bootstrap_reps, study.seed)
        bpbs = [r["val_bpb"] for r in rs]
        s = {"name": name, "budget": budget, "seeds": [r["seed"] for r in rs],
             "val_bpb": float(np.mean(bpbs)),
             "val_bpb_std": float(np.std(bpbs, ddof=1)) if len(rs) > 1 else None, "bpb_ci": [lo, hi],
             **{k: float(np.mean([r[k] for r in rs])) for k in
                ("flops_per_byte", "train_flops", "bytes_seen", "params", "mean_patch_size",
                 "patching_flops_per_byte")},
             "entropy_train_flops": float(np.mean([r.get("entropy_train_flops", 0.0) for r in rs])),
             "diff_vs_bpe": None, "diff_ci": None, "verdict": None}
        bpe = groups.get(("bpe", budget))
        if bpe and name != "bpe":
            d, lo, hi = paired_difference(nats, np.mean([r["doc_nats"] for r in bpe], axis=0), doc_bytes,
                                          study.bootstrap_reps, study.seed)
            s.update(diff_vs_bpe=d, diff_ci=[lo, hi], verdict=verdict(lo, hi))
        out.append(s)
    return out


def headline(summary: list[dict]) -> list[str]:
    """The BLT-minus-BPE gap at each budget, with its interval, and how it moves with the budget."""
    lines = []
    for name in dict.fromkeys(s["name"] for s in summary if s["name"].startswith("blt")):
        pts = sorted((s for s in summary if s["name"] == name and s["diff_vs_bpe"] is not None),
                     key=lambda s: s["budget"])
        if not pts:
            continue
        gaps = "; ".join(f"{s['budget']:.3g} FLOPs: {s['diff_vs_bpe']:+.4f} [{s['diff_ci'][0]:+.4f}, "
                         f"{s['diff_ci'][1]:+.4f}] ({s['verdict']})" for s in pts)
        move = ""
        if len(pts) > 1:
            move = (f"; from the smallest budget to the largest the gap moves by "
                    f"{pts[-1]['diff_vs_bpe'] - pts[0]['diff_vs_bpe']:+.4f}")
        lines.append(f"{name} minus BPE, bits per byte: {gaps}{move}")
    return lines


# ----------------------------------------------------------------------------------------------------
# Results: table, JSON, plots


def fmt_ci(ci) -> str:
    return "" if ci is None else f"[{ci[0]:.4f}, {ci[1]:.4f}]"


def results_markdown(info: dict, study: StudyConfig) -> list[str]:
    summary, ent = info["summary"], info["entropy_model"]
    lines = ["# Entropy patches against tokens: matched training FLOPs, inference FLOPs per byte and context",
             "", f"`{info['command']}`", "",
             f"{info['train_docs']} training documents ({info['train_bytes']:,} bytes), {info['val_docs']} "
             f"held-out documents ({info['val_bytes']:,} bytes, never trained on by any model). Every model "
             f"trains on rows of {study.context_bytes} bytes (BPE: {info['bpe_row_tokens']} tokens at "
             f"{info['tokens_per_byte']:.3f} tokens per byte), {study.batch_size} rows a step, and scores "
             "each held-out document in windows of its row length overlapping by half (every scored byte "
             "has half a row of context, or the whole document before it), in fp32. "
             + (f"Forward FLOPs per byte matched to the BPE baseline's {info['target_flops_per_byte']:.3g} "
                "(within 10%; the entropy model's cost apart). " if study.match_inference_flops else "")
             + f"Seeds {info['seeds']}: init and data order (the entropy model and the BPE are trained once, "
             f"shared). Intervals: 95%, bootstrap over held-out documents ({study.bootstrap_reps} "
             "resamples); 'minus BPE' is paired on the same documents; an interval that holds 0 is 'no "
             "difference'.", ""]
    for budget in study.budgets:
        lines += [f"## Training budget {budget:.3g} FLOPs per run", "",
                  "| run | params | mean patch (bytes) | fwd FLOPs/byte | training FLOPs | bytes seen "
                  "| held-out BPB [95% CI] | minus BPE [95% CI] | verdict |",
                  "|---|---:|---:|---:|---:|---:|---|---|---|"]
        for s in (s for s in summary if s["budget"] == budget):
            std = f" ± {s['val_bpb_std']:.4f}" if s["val_bpb_std"] is not None else ""
            diff = "" if s["diff_vs_bpe"] is None else f"{s['diff_vs_bpe']:+.4f} {fmt_ci(s['diff_ci'])}"
            lines.append(f"| {s['name']} | {s['params'] / 1e6:.2f}M | {s['mean_patch_size']:.2f} | "
                         f"{s['flops_per_byte'] / 1e6:.3f}M | {s['train_flops']:.3g} | "
                         f"{s['bytes_seen']:,.0f} | {s['val_bpb']:.4f}{std} {fmt_ci(s['bpb_ci'])} | {diff} | "
                         f"{s['verdict'] or ''} |")
        lines.append("")
    etrain = ent.get("train_flops") or 0.0
    lines += ["## Costs with the entropy model", "",
              f"Entropy model: {ent.get('params', 0):,} params, "
              + (f"{etrain:.3g} training FLOPs (charged in full to every entropy run below), " if etrain else
                 "training FLOPs unknown, ")
              + f"{ent.get('patching_flops_per_byte', 0) / 1e6:.3f}M patching FLOPs per byte."
              + ("" if not (two := ent.get("second")) else
                 f" Second entropy model of the ensemble runs ({SECOND_ENTROPY_MODEL}, seed + 1): "
                 f"{two.get('params', 0):,} params, {two.get('train_flops') or 0:.3g} training FLOPs, "
                 f"{two.get('patching_flops_per_byte', 0) / 1e6:.3f}M patching FLOPs per byte; an ensemble "
                 "run is charged both models' costs."), "",
              "| run | budget | fwd FLOPs/byte | patching FLOPs/byte | incl. patching | training FLOPs "
              "| entropy model training | incl. entropy model |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for s in summary:
        fpb, p, e = s["flops_per_byte"], s["patching_flops_per_byte"], s["entropy_train_flops"]
        lines.append(f"| {s['name']} | {s['budget']:.3g} | {fpb / 1e6:.3f}M | {p / 1e6:.3f}M | "
                     f"{(fpb + p) / 1e6:.3f}M | {s['train_flops']:.3g} | {e:.3g} | "
                     f"{s['train_flops'] + e:.3g} |")
    lines += boundary_markdown(info["boundary"], info["boundary_reference"])
    return lines + ["", "## Headline", ""] + [f"- {h}" for h in info["headline"]]


def write_results(out_dir: str, name: str, lines: list[str], info: dict) -> dict:
    """OUT/NAME.md (the lines) and OUT/NAME.json (info)."""
    with open(os.path.join(out_dir, f"{name}.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    write_report(os.path.join(out_dir, f"{name}.json"), info)
    return info


def held_out_paragraph(ds, entropy_model, max_len: int = 160):
    """A paragraph of a held-out document (after its first blank line), its entropies and patches."""
    idx = next((i for i, d in enumerate(ds.val_docs) if b"\n\n" in d[:4000]), 0)
    doc = ds.val_docs[idx]
    starts = tb.patch_starts(ds.val_lengths[idx])
    blank = doc.find(b"\n\n", 0, 4000) + 2 if b"\n\n" in doc[:4000] else 0
    s = int(starts[min(np.searchsorted(starts, min(blank, len(doc) - 1)), len(starts) - 1)])  # a patch start
    e = min(len(doc), s + max_len)
    H = entropy_llm.compute_entropies(entropy_model, doc[:e])  # causal: a prefix's entropies are the whole's
    return doc[s:e], H[s:e], tb.window_lengths(starts, s, e), ds.patch_config.entropy_threshold


# ----------------------------------------------------------------------------------------------------


def refuse_existing(paths: list[str], overwrite: bool):
    """The study replaces no model it finds in place (hours of training), unless --overwrite."""
    found = [p for p in paths if os.path.exists(p)]
    if found and not overwrite:
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        raise ValueError(f"{found[0]}{more} exists; the study will not replace it: pick another --out, or "
                         "add --overwrite")


def run_study(study: StudyConfig, data: str, out_dir: str, entropy_model_path: str | None = None,
              train_entropy: bool = False, quick_demo: bool = False, device=None, runs=RUN_NAMES,
              command: str = "", text_field: str | None = None, overwrite: bool = False,
              reference=None) -> dict:
    """Train every (run, budget, seed) and write results.md, results.json and plots under out_dir.

    With train_entropy the entropy model is written to entropy_model_path, by default out_dir's
    entropy_model.pth; without, entropy_model_path (default entropy_model.pth) is read, never written.
    reference: the byte model of boundary enrichment (default: the study's entropy model)."""
    t_start = time.perf_counter()
    runs = sorted(runs, key=lambda n: n != "bpe")  # BPE first: every other run is compared with it
    specs = [parse_run(name) for name in runs]
    seeds = [study.seed + k for k in range(study.seeds)]
    needs_entropy = any(s.get("method") in ENTROPY_METHODS for s in specs)
    needs_second = any("ensemble" in s for s in specs)
    if entropy_model_path is None:
        entropy_model_path = (os.path.join(out_dir, "entropy_model.pth") if train_entropy
                              else "entropy_model.pth")
    second_path = os.path.join(out_dir, SECOND_ENTROPY_MODEL)
    planned = [checkpoint_path(out_dir, n, b, s) for b in study.budgets for s in seeds for n in runs]
    refuse_existing(planned + ([entropy_model_path] if needs_entropy and train_entropy else [])
                    + ([second_path] if needs_second and train_entropy else []), overwrite)
    os.makedirs(out_dir, exist_ok=True)
    docs = load_corpus(data, study.max_bytes, text_field=text_field)
    train_docs, val_docs = split_documents(docs)
    print(f"study: {len(train_docs)} training documents ({sum(map(len, train_docs)):,} bytes), "
          f"{len(val_docs)} held-out ({sum(map(len, val_docs)):,} bytes); budgets "
          f"{', '.join(f'{b:.3g}' for b in study.budgets)} training FLOPs; seeds {seeds}")
    entropy_model, entropy_info = None, {}
    shared = (train_entropy, study, quick_demo, train_docs, val_docs, device)
    if needs_entropy:
        entropy_model, entropy_info = entropy_model_for(
            entropy_model_path, study.seed, "add --train_entropy to train one on this corpus's training "
            "documents", *shared)
    entropy = [(entropy_model, os.path.abspath(entropy_model_path), entropy_info)]
    if needs_second:  # the ensemble runs' second entropy model: the first's training with seed + 1
        if train_entropy:
            print(f"\n=== second entropy model (seed {study.seed + 1}) for the ensemble runs ===")
        model2, entropy_info["second"] = entropy_model_for(
            second_path, study.seed + 1, "the ensemble runs need a second entropy model: add --train_entropy "
            "to train both on this corpus's training documents", *shared)
        entropy.append((model2, os.path.abspath(second_path), entropy_info["second"]))
    setup = prepare(study, docs, runs, out_dir, entropy)
    fpb = {name: model_config(name, study, setup)[1] for name in runs}
    if study.match_inference_flops:
        for name, f in fpb.items():
            check_matched(name, f, setup.target)
    reference = reference if reference is not None else entropy_model
    boundary = boundary_figures(setup.datasets, reference)
    print("forward FLOPs per byte: " + ", ".join(f"{n} {f / 1e6:.3f}M" for n, f in fpb.items())
          + f" (BPE target {setup.target / 1e6:.3f}M)")

    results = []
    for budget in study.budgets:
        for seed in seeds:
            for name in runs:
                print(f"\n=== {name}, budget {budget:.3g} FLOPs, seed {seed} ===")
                r = run_one(name, budget, seed, study, setup, out_dir, device)
                r["boundary"] = boundary.get(name)
                results.append(r)
                print(f"{name}: held-out {r['val_bpb']:.4f} BPB {fmt_ci(r['bpb_ci'])}, {r['steps']} steps, "
                      f"{r['train_flops']:.3g} training FLOPs, {r['wall_s']:.0f}s")
    doc_bytes = np.array([len(d) for d in setup.val_docs], dtype=np.float64)
    by_key = {(r["name"], r["budget"], r["seed"]): r for r in results}
    for r in results:
        bpe = by_key.get(("bpe", r["budget"], r["seed"]))
        r["diff_vs_bpe"] = r["diff_ci"] = None
        if bpe is not None and r["name"] != "bpe":
            d, lo, hi = paired_difference(r["doc_nats"], bpe["doc_nats"], doc_bytes, study.bootstrap_reps,
                                          study.seed)
            r["diff_vs_bpe"], r["diff_ci"] = d, [lo, hi]
    summary = summarize(results, study, doc_bytes)
    entropy_runs = [n for n, ds in setup.datasets.items() if ds.patch_config.needs_entropy
                    and ds.combine is None]  # the paragraph shows one model's entropies
    paragraph = held_out_paragraph(setup.datasets[entropy_runs[0]], entropy_model) if entropy_runs else None
    lengths = {name: ds.train_lengths for name, ds in setup.datasets.items()}
    info = {"runs": [{k: v for k, v in r.items() if k != "doc_nats"} for r in results], "summary": summary,
            "entropy_model": entropy_info, "headline": headline(summary), "study": dataclasses.asdict(study),
            "data": data, "seeds": seeds, "train_docs": len(setup.train_docs),
            "val_docs": len(setup.val_docs),
            "train_bytes": sum(map(len, setup.train_docs)), "val_bytes": int(doc_bytes.sum()),
            "tokens_per_byte": setup.tokens_per_byte, "target_flops_per_byte": setup.target,
            "bpe_row_tokens": setup.bpe_row_tokens,
            "plots": [os.path.basename(p) for p in plot_study(summary, lengths, out_dir, paragraph)],
            "command": command, "boundary": boundary,
            "boundary_reference": None if reference is None else "the study's entropy model"}
    info["wall_s"] = time.perf_counter() - t_start
    return write_results(out_dir, "results", results_markdown(info, study), info)


# ----------------------------------------------------------------------------------------------------
# The seed's research questions: boundary quality, domains, the entropy model's data


def boundary_figures(datasets: dict, reference) -> dict:
    """Boundary quality of each BLT run's patches of the held-out documents; the surprisal of enrichment
    is -log p of each byte under `reference` (None: no enrichment)."""
    val = next(iter(datasets.values())).val_docs if datasets else []
    surprisal = (entropy_llm.score_bytes(reference, val, want_nll=True)[1]
                 if reference is not None and val else None)
    return {name: boundary_quality(ds.val_docs, ds.val_lengths, surprisal) for name, ds in datasets.items()}


def slug(data: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", data).strip("_") or "data"


def run_domains(domains: list[str], out_dir: str, train_entropy: bool, entropy_model_path, **kw) -> dict:
    """The same study per domain (OUT/<domain>), then one table and plot of runs by domains."""
    infos = {d: run_study(data=d, out_dir=os.path.join(out_dir, slug(d)), train_entropy=train_entropy,
                          entropy_model_path=entropy_model_path, **kw) for d in domains}
    budget, command = kw["study"].budgets[0], kw.get("command", "")
    cells = {d: {s["name"]: s for s in info["summary"] if s["budget"] == budget} for d, info in infos.items()}
    names = list(dict.fromkeys(n for c in cells.values() for n in c))
    lines = [f"# Runs by domain ({budget:.3g} training FLOPs): held-out BPB [95% CI]; minus BPE [95% CI]",
             "", f"`{command}`", "",
             "Each domain is a separate study (its own split, BPE, entropy model, FLOP matching): see its "
             "folder's results.md.", "",
             "| run | " + " | ".join(domains) + " |", "|---|" + "---|" * len(domains)]
    for n in names:
        row = []
        for c in (cells[d].get(n) for d in domains):
            gap = "" if not c or c["diff_vs_bpe"] is None else \
                f"; {c['diff_vs_bpe']:+.4f} {fmt_ci(c['diff_ci'])} {c['verdict']}"
            row.append("-" if not c else f"{c['val_bpb']:.4f} {fmt_ci(c['bpb_ci'])}{gap}")
        lines.append(f"| {n} | " + " | ".join(row) + " |")
    os.makedirs(out_dir, exist_ok=True)
    summary = {"domains": {d: {"summary": i["summary"], "boundary": i["boundary"], "wall_s": i["wall_s"],
                               "entropy_model": i["entropy_model"]} for d, i in infos.items()},
               "budget": budget, "plots": ["domains.png"], "command": command}
    write_results(out_dir, "domains", lines, summary)  # the tables first: a failed plot loses no figure
    plot_domains(cells, names, os.path.join(out_dir, "domains.png"))
    return summary


def run_entropy_data(study: StudyConfig, data: str, out_dir: str, fractions: list[float], other, runs,
                     device=None, overwrite=False, text_field=None, command: str = "", quick_demo=False
                     ) -> dict:
    """Entropy models on the first F of the training bytes (each F, the same steps) and on `other`'s
    training documents; for each its held-out BPB on `data`, then one BLT run (the first entropy run of
    `runs`) at the first budget. Boundary enrichment is read under the model of the largest fraction."""
    run = next((r for r in runs if (spec := parse_run(r)).get("method") in ENTROPY_METHODS
                and "ensemble" not in spec), "blt-entropy-4.5")
    study = dataclasses.replace(study, flops_budgets=str(study.budgets[0]), seeds=1)
    train_docs, val_docs = split_documents(load_corpus(data, study.max_bytes, text_field=text_field))
    total = sum(map(len, train_docs))
    sources = [(f"{100 * f:g}% of {data}", entropy_llm.cap_bytes(train_docs, max(1, int(f * total))))
               for f in sorted(fractions)]
    if other:
        sources.append((f"{other} (other domain)", split_documents(load_corpus(other, study.max_bytes))[0]))
    ecfg = entropy_config(study, quick_demo, study.seed)
    paths = [os.path.join(out_dir, f"entropy-{slug(label)}.pth") for label, _ in sources]
    refuse_existing(paths, overwrite)
    os.makedirs(out_dir, exist_ok=True)
    rows = []
    for (label, docs), path in zip(sources, paths):
        print(f"\n=== entropy model on {label}: {sum(map(len, docs)):,} bytes ===")
        erep = entropy_llm.train_entropy_model(ecfg, docs, val_docs, path, device)
        rows.append({"entropy_data": label, "entropy_train_bytes": sum(map(len, docs)), "checkpoint": path,
                     "entropy_val_bpb": erep["val_bpb"]})
    reference = load_entropy_model(paths[len(fractions) - 1], pick_device(device))
    for row, (label, _) in zip(rows, sources):
        r = run_study(study, data, os.path.join(out_dir, slug(label)), row["checkpoint"], runs=[run],
                      device=device, overwrite=overwrite, text_field=text_field, reference=reference,
                      command=command)["runs"][0]
        row.update(run=run, **{k: r[k] for k in ("val_bpb", "bpb_ci", "entropy_threshold", "mean_patch_size",
                                                 "boundary")})
    lines = [f"# The entropy model's data: {data}, {run} at {study.budgets[0]:.3g} training FLOPs", "",
             f"`{command}`", "", f"Entropy models: {ecfg.d_model} x {ecfg.n_layers}, {ecfg.max_steps} "
             "steps each; held-out BPB on this corpus's held-out documents. Enrichment under the model of "
             "the largest fraction.", "",
             "| entropy model trained on | bytes | its held-out BPB | threshold | mean patch (training) | "
             "CV (held-out) | word boundaries | enrichment | BLT held-out BPB [95% CI] |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        b = r["boundary"]
        lines.append(f"| {r['entropy_data']} | {r['entropy_train_bytes']:,} | {r['entropy_val_bpb']:.4f} | "
                     f"{r['entropy_threshold']:.3f} | {r['mean_patch_size']:.2f} | {b['patch_size_cv']:.2f} "
                     f"| {num(b['word_boundary_fraction'])} | {num(b['boundary_enrichment'])} | "
                     f"{r['val_bpb']:.4f} {fmt_ci(r['bpb_ci'])} |")
    info = {"entropy_data": rows, "run": run, "budget": study.budgets[0], "command": command, "plots": []}
    return write_results(out_dir, "entropy_data", lines, info)


OTHER_DOMAIN = {"builtin:code": "builtin:prose", "builtin:prose": "builtin:code"}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="builtin", help="builtin | builtin:code | builtin:prose | file | "
                   "folder | .jsonl/.parquet/.arrow file | hf:NAME[:CONFIG] (default: builtin)")
    p.add_argument("--text_field", default=None, help="text column of a datasets source (default: text)")
    p.add_argument("--out", default="runs/study", help="folder for every model the study trains, "
                   "results.md/json and plots (default: runs/study)")
    p.add_argument("--quick_demo", action="store_true", help=f"{QUICK_DEMO['max_bytes']:,} bytes, one budget "
                   f"({QUICK_DEMO['flops_budgets']}), runs {','.join(QUICK_RUNS)}: ~11 min on a 2-core CPU")
    p.add_argument("--train_entropy", action="store_true",
                   help="train the entropy model on the training documents, into OUT/entropy_model.pth")
    p.add_argument("--entropy_model_path", default=None,
                   help="the BLTs' entropy model: read (default entropy_model.pth), or written with "
                        "--train_entropy (default OUT/entropy_model.pth)")
    p.add_argument("--overwrite", action="store_true", help="replace models already in --out")
    p.add_argument("--runs", default=None, help="comma-separated: byte, bpe, blt-static[-N], blt-space, "
                   "blt-entropy-[METHOD-]SIZE, blt-entropy-ensemble-[COMBINE-]SIZE "
                   f"(default: {','.join(RUN_NAMES)})")
    p.add_argument("--device", default=None, help="cpu | cuda (default: cuda if present)")
    p.add_argument("--report", default=None, help="also write results.json's content here")
    p.add_argument("--domains", help="comma-separated --data values: the study on each (OUT/<domain>), then "
                   "one table of runs by domains: BPB and its gap to BPE (domains.md, .json, .png)")
    p.add_argument("--entropy_data_fraction", help="comma-separated fractions F of the training bytes, e.g. "
                   "0.01,0.1,1.0, instead of the runs: entropy models (same steps) on the first F and one on "
                   "--entropy_other_data; for each its held-out BPB, patch statistics and the BLT's held-out "
                   "BPB at the first budget (OUT/entropy_data.md and .json)")
    p.add_argument("--entropy_other_data", help="that study's other-domain corpus (default: the other of "
                   "builtin:code and builtin:prose)")
    add_config_args(p, StudyConfig, aliases={"flops_budgets": ("flops_budget",)})
    args = p.parse_args(argv)
    runs = args.runs.split(",") if args.runs else (QUICK_RUNS if args.quick_demo else RUN_NAMES)
    runs = tuple(dict.fromkeys(r.strip() for r in runs if r.strip()))
    for r in runs:
        try:
            parse_run(r)
        except ValueError as e:
            p.error(str(e))
    try:
        study = config_from_dict(StudyConfig, QUICK_DEMO if args.quick_demo else {},
                                 **config_overrides(args, StudyConfig))
        command = "python complete_entropy_workflow.py " + " ".join(sys.argv[1:] if argv is None else argv)
        kw = dict(study=study, quick_demo=args.quick_demo, device=args.device, runs=runs,
                  command=command.strip(), text_field=args.text_field, overwrite=args.overwrite)
        t0, name = time.perf_counter(), "results"
        if args.entropy_data_fraction:
            fractions = [float(f) for f in args.entropy_data_fraction.split(",") if f.strip()]
            if not fractions or not all(0 < f <= 1 for f in fractions) or args.domains:
                p.error("--entropy_data_fraction takes fractions in (0, 1] and one --data (not --domains)")
            other = args.entropy_other_data or OTHER_DOMAIN.get(args.data)
            info, name = run_entropy_data(data=args.data, out_dir=args.out, fractions=fractions, other=other,
                                          **kw), "entropy_data"
        elif args.domains:
            if args.train_entropy and args.entropy_model_path:
                p.error("with --domains and --train_entropy each domain's model goes to OUT/<domain>/")
            info, name = run_domains(args.domains.split(","), args.out, args.train_entropy,
                                     args.entropy_model_path, **kw), "domains"
        else:
            info = run_study(data=args.data, out_dir=args.out, entropy_model_path=args.entropy_model_path,
                             train_entropy=args.train_entropy, **kw)
    except (CheckpointError, DataError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print()
    print(open(os.path.join(args.out, f"{name}.md")).read())
    print(f"wrote {args.out}/{name}.md, {', '.join([f'{name}.json'] + info['plots'])} "
          f"({(time.perf_counter() - t0) / 60:.1f} min)")
    write_report(args.report, info)
    return 0


if __name__ == "__main__":
    sys.exit(main())
