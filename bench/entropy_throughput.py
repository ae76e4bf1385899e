"""Entropy pass throughput: entropy_llm.compute_entropies against the per-byte way and HF's BltPatcher.

    python bench/entropy_throughput.py --out bench/results/entropy_throughput.json
    python bench/entropy_throughput.py --quick            # seconds: a smoke run on 20 KB

Sides, timed in alternating rounds over the same bytes (the corpus is cut into one shard per round, by
whole documents, so over all rounds each side scores the full --max_bytes once):
  window   compute_entropies with the sliding-window model (the default EntropyConfig): each document in
           one blocked pass, every byte computed once.
  ours     compute_entropies with the same sizes and sliding_window=False (checkpoints from before the
           window): windows of max_seq_len every max_seq_len/2, batched rows. Same weights.
  hf       transformers BltPatcher at the same width, depth, heads, MLP size and 256 outputs, run on the
           very same batches of windows (its forward returns the entropies, via torch.distributions).
  naive    one forward per byte on its growing prefix capped at max_seq_len bytes, timed on a slice of
           --naive_bytes bytes deep inside a document (every forward sees a full window) and scaled.

Weights are random (speed does not depend on them). `mfu` is the achieved FLOP/s of our pass, counting
entropy_llm.flops_per_byte for every position the batches actually compute (overlapping windows and row
padding included), over this machine's fp32 matmul peak (best n x n torch.mm, before or after the
timing); `kept_byte_mfu` counts each byte once, at the FLOPs of the context its model gives it (window:
W-1 keys per layer). The JSON also carries a stage breakdown of the overlapping pass and torch.profiler
summaries of both passes ("profile", "profile_window"), to say what bounds them.
"""
from __future__ import annotations

import argparse
import sys
import time

import bench_utils as bu  # noqa: F401  (puts the repository on sys.path)
import numpy as np
import torch
import torch.nn.functional as F

from byte_data import load_corpus
from common import mlp_hidden
from entropy_llm import EntropyConfig, MinimalLLM, compute_entropies, entropy_windows, flops_per_byte


def shard_documents(docs: list[bytes], n: int) -> list[list[bytes]]:
    """Split docs, in order and whole, into n shards of about equal bytes (no shard empty if avoidable)."""
    total = sum(map(len, docs))
    shards, cur, acc = [], [], 0
    for d in docs:
        cur.append(d)
        acc += len(d)
        if acc >= total * (len(shards) + 1) / n and len(shards) < n - 1:
            shards.append(cur)
            cur = []
    shards.append(cur)
    return [s for s in shards if s]


def window_jobs(docs: list[bytes], W: int):
    """(doc, start, keep_from, keep_to) of every window compute_entropies runs, in its order."""
    return [(i, *w) for i, d in enumerate(docs) if len(d) for w in entropy_windows(len(d), W)]


@torch.inference_mode()
def hf_entropies(patcher, docs: list[bytes], W: int, batch_size: int) -> list[np.ndarray]:
    """BltPatcher's entropies over exactly the windows and batches compute_entropies uses.

    HF's position t is the prediction made after byte t (it has no start vector); the values are stored
    as emitted: this is a timing of the same work, not a parity check (the weights differ anyway).
    """
    arrays = [np.frombuffer(d, dtype=np.uint8) for d in docs]
    ent = [np.zeros(len(a), dtype=np.float32) for a in arrays]
    jobs = window_jobs(docs, W)
    for b in range(0, len(jobs), batch_size):
        chunk = jobs[b:b + batch_size]
        x = np.zeros((len(chunk), W), dtype=np.int64)
        for r, (i, s, _, e) in enumerate(chunk):
            x[r, :e - s] = arrays[i][s:e]
        H, _, _ = patcher(input_ids=torch.from_numpy(x))  # (B, W) entropies, nats
        h = H.float().numpy()
        for r, (i, s, k0, k1) in enumerate(chunk):
            ent[i][k0:k1] = h[r, k0 - s:k1 - s]
    return ent


@torch.inference_mode()
def naive_entropies(model, doc: bytes, start: int, n: int) -> np.ndarray:
    """H[i] for i in start..start+n-1, one forward per byte over bytes max(0, i-W+1)..i (byte i unread)."""
    W = model.config.max_seq_len
    a = torch.frombuffer(bytearray(doc), dtype=torch.uint8).long()
    out = np.empty(n, dtype=np.float32)
    for j, i in enumerate(range(start, start + n)):
        x = a[max(0, i - W + 1):i + 1].view(1, -1)  # (1, <=W): the last position predicts byte i
        logits, _ = model(x)
        logp = F.log_softmax(logits[0, -1].float(), dim=-1)
        out[j] = float(-(logp.exp() * logp).sum())
    return out


def matmul_ceiling_at_our_shapes(cfg: EntropyConfig, rows: int) -> dict:
    """FLOP/s of the pass's own matmul shapes (rows = batch x window positions) at their best."""
    C, Hd = cfg.d_model, mlp_hidden(cfg.d_model)
    shapes = {"qkv": (C, 3 * C), "proj": (C, C), "mlp_up": (C, 2 * Hd), "mlp_down": (Hd, C), "head": (C, 256)}
    out = {}
    for name, (k, n) in shapes.items():
        a, w = torch.randn(rows, k), torch.randn(k, n)
        torch.mm(a, w)
        best = float("inf")
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(3):
                torch.mm(a, w)
            best = min(best, (time.perf_counter() - t0) / 3)
        out[name] = 2 * rows * k * n / best
    return out


@torch.inference_mode()
def stage_breakdown(model, docs: list[bytes], batch_size: int, max_batches: int) -> dict:
    """Seconds per stage of our pass over the first max_batches batches (the loop of score_sequences)."""
    W = model.config.max_seq_len
    arrays = [np.frombuffer(d, dtype=np.uint8) for d in docs]
    ent = [np.zeros(len(a), dtype=np.float32) for a in arrays]
    jobs = window_jobs(docs, W)[:batch_size * max_batches]
    t = {"prep": 0.0, "model_forward": 0.0, "entropy_math": 0.0, "scatter": 0.0}
    for b in range(0, len(jobs), batch_size):
        chunk = jobs[b:b + batch_size]
        t0 = time.perf_counter()
        x = np.zeros((len(chunk), W), dtype=np.int64)
        for r, (i, s, _, e) in enumerate(chunk):
            x[r, :e - s] = arrays[i][s:e]
        xt = torch.from_numpy(x)
        t1 = time.perf_counter()
        logits, _ = model(xt)
        t2 = time.perf_counter()
        logp = F.log_softmax(logits.float(), dim=-1)
        h = -(logp.exp() * logp).sum(-1).numpy()
        t3 = time.perf_counter()
        for r, (i, s, k0, k1) in enumerate(chunk):
            ent[i][k0:k1] = h[r, k0 - s:k1 - s]
        t4 = time.perf_counter()
        for k, dt in zip(t, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            t[k] += dt
    total = sum(t.values())
    return {"seconds": t, "fraction": {k: v / total for k, v in t.items()},
            "batches": -(-len(jobs) // batch_size)}


_CATEGORIES = (  # torch.profiler op name -> what it is, in our pass
    ("matmul", ("aten::mm", "aten::addmm", "aten::bmm")),
    ("attention (sdpa)", ("scaled_dot_product", "flash_attention")),
    ("softmax/entropy", ("log_softmax", "aten::exp")),
    ("elementwise (norm, rotary, swiglu, residual)", ("aten::mul", "aten::add", "aten::pow", "aten::mean",
                                                      "aten::rsqrt", "aten::silu", "aten::sub", "aten::neg",
                                                      "aten::sum")),
    ("copies/cat/index", ("aten::cat", "aten::copy_", "aten::index", "aten::embedding", "aten::clone",
                          "aten::contiguous", "aten::_to_copy", "aten::fill_", "aten::zero_",
                          "aten::masked_fill", "aten::where")),
)


@torch.inference_mode()
def profile_pass(model, docs: list[bytes], batch_size: int, max_batches: int) -> dict:
    """torch.profiler over our pass on a few batches: self CPU time by category, and the top ops."""
    from torch.profiler import ProfilerActivity, profile

    W = model.config.max_seq_len
    sub, n = [], 0
    for d in docs:  # documents enough for max_batches batches
        sub.append(d)
        n += len(d)
        if n >= max_batches * batch_size * W // 2:
            break
    compute_entropies(model, sub[:1], batch_size=batch_size)  # warm-up
    blocks = []  # one-pass model: seconds in its blocks (window_blocks), the rest being embedding and head
    if getattr(model, "window", None):
        def timed_blocks(*a, _fn=model.window_blocks, **k):
            t = time.perf_counter()
            out = _fn(*a, **k)
            blocks.append(time.perf_counter() - t)
            return out
        model.window_blocks = timed_blocks
    try:
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            t0 = time.perf_counter()
            compute_entropies(model, sub, batch_size=batch_size, show_progress=False)
            wall = time.perf_counter() - t0
    finally:
        model.__dict__.pop("window_blocks", None)
    events = [(e.key, e.self_cpu_time_total / 1e6) for e in prof.key_averages()]
    total = sum(s for _, s in events)
    cats = {name: 0.0 for name, _ in _CATEGORIES}
    cats["other"] = 0.0
    for key, s in events:
        for name, pats in _CATEGORIES:
            if any(p in key for p in pats):
                cats[name] += s
                break
        else:
            cats["other"] += s
    top = sorted(events, key=lambda kv: -kv[1])[:12]
    return {"wall_s": wall, "op_self_cpu_s": total, "python_and_dispatch_s_estimate": max(0.0, wall - total),
            **({"blocks_fraction_of_wall": sum(blocks) / wall} if blocks else {}),
            "by_category_fraction_of_op_time": {k: v / total for k, v in cats.items()},
            "top_ops": [{"op": k, "self_cpu_s": s, "fraction": s / total} for k, s in top]}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    bu.add_common_args(p)
    p.add_argument("--max_bytes", type=int, default=None, help="corpus bytes (default 1e6; quick 2e4)")
    p.add_argument("--rounds", type=int, default=None, help="alternating rounds (default 4; quick 2)")
    p.add_argument("--naive_bytes", type=int, default=None, help="bytes timed per round per byte (300)")
    p.add_argument("--batch_size", type=int, default=8, help="windows per batch (CPU default)")
    p.add_argument("--no_hf", action="store_true", help="skip the Hugging Face side")
    p.add_argument("--no_profile", action="store_true", help="skip the profile of our pass")
    args = p.parse_args(argv)
    bu.setup_threads(args)
    max_bytes = args.max_bytes or (20_000 if args.quick else 1_000_000)
    rounds = args.rounds or (2 if args.quick else 4)
    naive_n = args.naive_bytes or (16 if args.quick else 300)

    torch.manual_seed(0)
    cfg = EntropyConfig(sliding_window=False)
    model = MinimalLLM(cfg).eval()
    wcfg = EntropyConfig()
    wmodel = MinimalLLM(wcfg).eval()
    wmodel.load_state_dict(model.state_dict() | {"_extra_state": wmodel.get_extra_state()})
    W = cfg.max_seq_len
    docs = load_corpus("builtin", max_bytes=max_bytes)
    shards = shard_documents(docs, rounds)
    rounds = len(shards)
    report = {"benchmark": "entropy_throughput", "machine": bu.machine_info(),
              "config": {"entropy": vars(cfg), "batch_size": args.batch_size, "bytes": sum(map(len, docs)),
                         "documents": len(docs), "rounds": rounds, "naive_bytes_per_round": naive_n}}
    print(f"entropy model {model.num_params():,} params, {report['config']['bytes']:,} bytes in {len(docs)} "
          f"documents, {rounds} rounds, {torch.get_num_threads()} threads")

    peak = bu.matmul_peak(512 if args.quick else 2048)
    # the naive slice: deep inside the longest document, so every forward sees a full window
    longest = max(docs, key=len)
    naive_start = min(max(W, 10_000), max(0, len(longest) - naive_n))

    hf = None
    if not args.no_hf:
        hf = bu.hf_patcher(cfg, sliding_window=None)
        # rows are exactly W long, so HF's plain causal mask is the same attention as a W window
        report["hf_patcher"] = {"params": sum(p.numel() for p in hf.parameters()),
                                "attn_implementation": hf.config._attn_implementation,
                                "sliding_window": hf.config.sliding_window}
    # warm-up every side once on a little data
    compute_entropies(model, shards[0][:1], batch_size=args.batch_size)
    if hf is not None:
        hf_entropies(hf, shards[0][:1], W, args.batch_size)
    naive_entropies(model, longest, naive_start, 2)

    compute_entropies(wmodel, shards[0][:1], batch_size=args.batch_size)
    sides = {"window": lambda r: compute_entropies(wmodel, shards[r], batch_size=args.batch_size,
                                                   show_progress=False),
             "ours": lambda r: compute_entropies(model, shards[r], batch_size=args.batch_size,
                                                 show_progress=False)}
    if hf is not None:
        sides["hf"] = lambda r: hf_entropies(hf, shards[r], W, args.batch_size)
    sides["naive"] = lambda r: naive_entropies(model, longest, naive_start, naive_n)
    print("timing (alternating rounds):")
    times = bu.alternate(sides, rounds)
    # the peak again after the timing, keeping the best: a neighbour's load during one measurement would
    # lower the peak and inflate every mfu (seen: 72 against 94 GFLOP/s on a shared machine)
    peaks = [peak, bu.matmul_peak(512 if args.quick else 2048)]
    peak = max(peaks)

    shard_bytes = [sum(map(len, s)) for s in shards]
    jobs = [window_jobs(s, W) for s in shards]
    rows = [len(j) for j in jobs]
    win_pos = [sum(e - s for _, s, _, e in j) for j in jobs]
    fpb = flops_per_byte(cfg)  # at a full window of W
    res = {}
    for side in ("ours", "hf"):
        if side not in times:
            continue
        bps = [b / t for b, t in zip(shard_bytes, times[side])]
        # every computed position, padding included
        flops = [fpb * r * W / t for r, t in zip(rows, times[side])]
        res[side] = {"seconds_per_round": times[side], "bytes_per_s": bu.summary(bps),
                     "bytes_per_s_total": sum(shard_bytes) / sum(times[side]),
                     "flops_per_s": bu.median(flops), "mfu": bu.median(flops) / peak}
    res["naive"] = {"seconds_per_round": times["naive"], "bytes_per_round": naive_n,
                    "bytes_per_s": bu.summary([naive_n / t for t in times["naive"]]),
                    "context_per_forward": W, "slice_start": naive_start,
                    "scaled_seconds_for_corpus": sum(shard_bytes) * bu.median(times["naive"]) / naive_n}
    ratios = {"ours_over_naive": bu.median([(b / to) / (naive_n / tn) for b, to, tn
                                            in zip(shard_bytes, times["ours"], times["naive"])])}
    if "hf" in times:
        ratios["ours_over_hf"] = bu.median([th / to for to, th in zip(times["ours"], times["hf"])])
    # mfu over kept bytes only: each byte once, at the FLOPs its model spends on it (the window model at
    # a full window of max_seq_len-1 keys per layer, the overlapping one at its mean causal context)
    kept_fpb = {"window": flops_per_byte(wcfg, 1 << 30), "ours": flops_per_byte(cfg)}
    for side in ("window", "ours"):
        kept = [kept_fpb[side] * b / t for b, t in zip(shard_bytes, times[side])]
        res.setdefault(side, {"seconds_per_round": times[side],
                              "bytes_per_s": bu.summary([b / t for b, t in zip(shard_bytes, times[side])])})
        res[side]["kept_byte_flops_per_byte"] = kept_fpb[side]
        res[side]["kept_byte_mfu"] = bu.median(kept) / peak
    ratios["window_over_overlap"] = bu.median([to / tw for to, tw in zip(times["ours"], times["window"])])
    total_rows, total_pos = sum(rows), sum(win_pos)
    report.update({
        "results": res, "ratios": ratios,
        "matmul_peak_flops_per_s": peak, "matmul_peaks_before_and_after_timing": peaks,
        "mfu": res["ours"]["mfu"],
        "mfu_target": 0.5,
        "mfu_target_met": res["ours"]["mfu"] >= 0.5,
        "kept_byte_mfu": {"window": res["window"]["kept_byte_mfu"], "overlap": res["ours"]["kept_byte_mfu"]},
        "kept_byte_mfu_target_met": res["window"]["kept_byte_mfu"] >= 0.5,
        "window_over_overlap_target": 1.8,
        "window_over_overlap_target_met": ratios["window_over_overlap"] >= 1.8,
        "flop_accounting": {
            "flops_per_position": fpb, "windows": total_rows, "positions_computed": total_rows * W,
            "positions_in_windows": total_pos, "bytes": sum(shard_bytes),
            "overlap_factor": total_pos / sum(shard_bytes),
            "computed_over_bytes": total_rows * W / sum(shard_bytes),
            "note": "positions_computed = windows x max_seq_len (row padding is computed too); the entropy "
                    "softmax itself is not counted as FLOPs"},
    })

    # the per-byte way computes the same H as compute_entropies where the context agrees (first window)
    check = compute_entropies(model, longest[:W])
    naive_check = naive_entropies(model, longest[:W], 0, min(W, 32))
    diff = np.abs(check[:len(naive_check)] - naive_check)
    report["naive_vs_ours_first_window_max_abs_diff"] = float(diff.max())
    if not args.no_profile:
        nb = 2 if args.quick else 16
        ceiling = matmul_ceiling_at_our_shapes(cfg, args.batch_size * W)
        report["matmul_ceiling_at_our_shapes_flops_per_s"] = ceiling
        report["stage_breakdown"] = stage_breakdown(model, docs, args.batch_size, nb)
        report["profile"] = profile_pass(model, docs, args.batch_size, nb)
        report["profile_window"] = profile_pass(wmodel, docs, args.batch_size, nb)
    report["machine"]["loadavg_at_end"] = bu.loadavg()

    table = [("window (one pass)", res["window"]["bytes_per_s"]["median"], ratios["window_over_overlap"],
              res["window"]["kept_byte_mfu"]),
             ("ours, overlapping windows", res["ours"]["bytes_per_s"]["median"], 1.0,
              res["ours"]["kept_byte_mfu"])]
    if "hf" in res:
        table.append(("hf BltPatcher, same windows", res["hf"]["bytes_per_s"]["median"],
                      1 / ratios["ours_over_hf"], res["hf"]["mfu"]))
    table.append(("naive per-byte", res["naive"]["bytes_per_s"]["median"], 1 / ratios["ours_over_naive"],
                  float("nan")))
    print(f"\nmatmul peak {peak / 1e9:.1f} GFLOP/s; "
          f"{total_rows * W / sum(shard_bytes):.2f} positions computed per byte")
    bu.print_table(table, ("side", "bytes/s (median)", "x ours", "kept-byte mfu"))
    if "stage_breakdown" in report:
        stages = report["stage_breakdown"]["fraction"].items()
        print("overlapping pass by stage: " + ", ".join(f"{k} {v:.0%}" for k, v in stages))
        for name, key in (("overlapping", "profile"), ("one-pass", "profile_window")):
            print(f"{name} pass, ops by category: " + ", ".join(
                f"{k} {v:.0%}" for k, v in report[key]["by_category_fraction_of_op_time"].items()))
        print(f"one-pass: blocks {report['profile_window']['blocks_fraction_of_wall']:.0%} of the wall time")
    bu.write_json(args.out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
