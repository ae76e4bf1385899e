"""Generation speed: BLTModel.generate with KV caches against the full rerun, and Hugging Face's generate.

    python bench/generate.py --out bench/results/generate.json
    python bench/generate.py --quick                       # seconds: tiny preset, 16 and 32 new bytes

Greedy decoding (temperature 0) from a 64-byte prompt of builtin text, random weights, the CPU preset
and its default entropy-free patching ("space"); both of our paths must then give the same bytes, which
the JSON records. Sides, per length N (256 and 1024 new bytes):
  ours_cached   generate(..., use_cache=True): KV caches in encoder, global model and decoder.
  ours_rerun    generate(..., use_cache=False): patching and the whole model rerun on the growing bytes.
  hf_rerun      BltForCausalLM.generate(use_cache=False) at the same config (no in-forward patcher,
                so HF makes every byte a patch).
  hf_cached     BltForCausalLM.generate(use_cache=True): recorded as it happens (an exception is a result).
  before_cached the frozen pre-issue-12 model (bench/blt_model_before.py, same weights), cached; timed in
                full at every length in the same alternating rounds as ours_cached.
Measured vs extrapolated: every *_cached figure and every figure at the shorter length is measured in
full; the reruns at the longest length are extrapolated from probes unless --rerun_1024 full (each JSON
entry says which in `method`).
The reruns at 1024 cost O(N^2): by default (--rerun_1024 scaled) each rerun is timed on --probe bytes
generated after prompts of several lengths between the prompt and prompt+1024, and the per-byte cost is
integrated over the 1024 steps (trapezoid); the same estimate is made at 256 and compared with the
measured 256 run (`scaling_check`). --rerun_1024 full times the whole thing instead (minutes).
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import traceback

import bench_utils as bu
import blt_model_before
import numpy as np
import torch

from blt_model import BLTConfig, BLTModel
from byte_data import load_corpus
from entropy_patcher import EntropyPatcher, PatchConfig


def hf_model(cfg: BLTConfig, num_hidden_layers_workaround: bool = False):
    from transformers import BltForCausalLM

    hc = bu.hf_blt_config(cfg)
    if num_hidden_layers_workaround:  # HF's cache setup reads a top-level num_hidden_layers the config lacks
        hc.num_hidden_layers = max(cfg.encoder_layers, cfg.decoder_layers)
    torch.manual_seed(0)
    return BltForCausalLM(hc).eval()


def hf_generate(model, prompt: bytes, n: int, use_cache: bool) -> bytes:
    ids = torch.tensor([list(prompt)])
    with torch.inference_mode():
        out = model.generate(ids, max_new_tokens=n, min_new_tokens=n, do_sample=False, use_cache=use_cache,
                             pad_token_id=0)
    return bytes(out[0, ids.size(1):].tolist())


def attempt(fn) -> dict:
    """Run fn() once; seconds and result, or the exception's type and message."""
    try:
        dt, out = bu.timed(fn)
        return {"ok": True, "seconds": dt, "output": out}
    except Exception as e:  # noqa: BLE001 (a failure of the peer is a legitimate result)
        tb = traceback.extract_tb(e.__traceback__)[-1]
        return {"ok": False, "error_type": type(e).__name__, "error": str(e)[:500],
                "where": f"{tb.filename.split('site-packages/')[-1]}:{tb.lineno}"}


def scaled_rerun_seconds(gen_fn, prompt: bytes, filler: bytes, n_new: int, probe: int, points: int) -> dict:
    """Estimated seconds for a full-rerun generation of n_new bytes: per-byte cost measured at `points`
    context lengths (generating `probe` bytes after prompt + filler[:k]) and integrated over the steps."""
    ks = np.linspace(0, max(0, n_new - probe), points).round().astype(int)
    per_byte = []
    for k in ks:
        dt, _ = bu.timed(lambda k=k: gen_fn(prompt + filler[:k], probe))
        per_byte.append(dt / probe)
    # step i (0-based) runs at context len(prompt) + i; the probe at k covers steps k..k+probe-1
    centers = ks + (probe - 1) / 2
    steps = np.arange(n_new)
    est = float(np.interp(steps, centers, per_byte).sum())
    return {"estimated_seconds": est, "context_offsets": ks.tolist(), "seconds_per_byte": per_byte,
            "probe_bytes": probe}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    bu.add_common_args(p)
    p.add_argument("--preset", default=None, help="BLTConfig preset (default cpu; quick tiny)")
    p.add_argument("--lengths", default=None, help="new-byte counts, comma-separated (default 256,1024)")
    p.add_argument("--rounds", type=int, default=None, help="alternating rounds (default 3)")
    p.add_argument("--rerun_1024", choices=("scaled", "full"), default="scaled",
                   help="time the reruns at the longest length in full, or probe and integrate (default)")
    p.add_argument("--probe", type=int, default=16, help="bytes per probe of the scaled rerun estimate")
    p.add_argument("--points", type=int, default=5, help="context lengths probed by the scaled estimate")
    p.add_argument("--batch", type=int, default=None,
                   help="prompts of a list timed batched against one at a time (default 8; quick 3; 1: skip)")
    p.add_argument("--no_hf", action="store_true", help="skip Hugging Face")
    args = p.parse_args(argv)
    bu.setup_threads(args)
    preset = args.preset or ("tiny" if args.quick else "cpu")
    lengths = [int(x) for x in (args.lengths or ("16,32" if args.quick else "256,1024")).split(",")]
    short, long_ = min(lengths), max(lengths)
    rounds = args.rounds or (2 if args.quick else 3)
    probe = min(args.probe, short)
    args.batch = args.batch or (3 if args.quick else 8)

    text = b"".join(load_corpus("builtin", max_bytes=64 * max(args.batch, 1) + long_ + 64))
    prompt, filler = text[:64], text[64:64 + long_ + 64]
    cfg = BLTConfig.from_preset(preset, max_seq_len=max(BLTConfig.from_preset(preset).max_seq_len, 2048))
    torch.manual_seed(0)
    model = BLTModel(cfg).eval()
    patcher = EntropyPatcher(None, PatchConfig(method="space", min_patch_size=1, max_patch_size=16))

    def ours(use_cache):
        return lambda pr, n: model.generate(pr, n, patcher=patcher, temperature=0, use_cache=use_cache)

    before = blt_model_before.BLTModel(blt_model_before.BLTConfig(**dataclasses.asdict(cfg))).eval()
    before.load_state_dict(model.state_dict())

    def before_cached(pr, n):
        return before.generate(pr, n, patcher=patcher, temperature=0)

    report = {"benchmark": "generate", "machine": bu.machine_info(),
              "config": {"blt": dataclasses.asdict(cfg), "preset": preset, "prompt": prompt.decode("latin-1"),
                         "lengths": lengths, "rounds": rounds, "temperature": 0,
                         "patching": patcher.to_meta(),
                         "rerun_at_longest": args.rerun_1024},
              "params": {"ours": model.num_params()}}
    hf = None
    if not args.no_hf:
        hf = hf_model(cfg)
        report["params"]["hf"] = sum(x.numel() for x in hf.parameters())
    print(f"{preset}: {model.num_params():,} params, prompt {len(prompt)} bytes, "
          f"{torch.get_num_threads()} threads")
    ours(True)(prompt, 4), ours(False)(prompt, 4)  # warm-up
    if hf is not None:
        hf_generate(hf, prompt, 4, use_cache=False)

    res = {}
    # --- the shorter length: every side in full, alternating rounds
    sides = {"ours_cached": lambda r: ours(True)(prompt, short),
             "ours_rerun": lambda r: ours(False)(prompt, short),
             "before_cached": lambda r: before_cached(prompt, short)}
    if hf is not None:
        sides["hf_rerun"] = lambda r: hf_generate(hf, prompt, short, use_cache=False)
    print(f"{short} new bytes (alternating rounds):")
    times = bu.alternate(sides, rounds)
    out_c, out_r = ours(True)(prompt, short), ours(False)(prompt, short)
    res[str(short)] = {k: {"seconds": bu.summary(v), "bytes_per_s": short / bu.median(v),
                           "method": "measured"} for k, v in times.items()}
    res[str(short)]["ours_cached_over_before_cached"] = bu.median(
        [tb / tc for tc, tb in zip(times["ours_cached"], times["before_cached"])])
    res[str(short)]["ours_outputs_match"] = out_c == out_r
    res[str(short)]["cached_over_rerun"] = bu.median([tr / tc for tc, tr in zip(times["ours_cached"],
                                                                                   times["ours_rerun"])])
    if hf is not None:
        hf_rerun_out = hf_generate(hf, prompt, short, use_cache=False)
        res[str(short)]["ours_cached_over_hf_rerun"] = bu.median(
            [th / tc for tc, th in zip(times["ours_cached"], times["hf_rerun"])])
        a = attempt(lambda: hf_generate(hf, prompt, short, use_cache=True))
        a.pop("output", None)
        res[str(short)]["hf_cached"] = a
        hw = hf_model(cfg, num_hidden_layers_workaround=True)
        hw.load_state_dict(hf.state_dict())
        a = attempt(lambda: hf_generate(hw, prompt, short, use_cache=True))
        if a["ok"]:
            o = a.pop("output")
            a["bytes_per_s"] = short / a["seconds"]
            a["outputs_match_hf_rerun"] = o == hf_rerun_out
            diff = [i for i, (x, y) in enumerate(zip(o, hf_rerun_out)) if x != y]
            a["first_differing_byte"] = diff[0] if diff else None
        res[str(short)]["hf_cached_with_num_hidden_layers_set"] = a
    # the scaled estimate at the short length, checked against the measured rerun
    if args.rerun_1024 == "scaled" and long_ > short:
        est = scaled_rerun_seconds(ours(False), prompt, filler, short, probe, args.points)
        res[str(short)]["scaling_check"] = {"ours_rerun_estimated_s": est["estimated_seconds"],
                                            "ours_rerun_measured_s": bu.median(times["ours_rerun"])}

    # --- a list of prompts at the shorter length: one batch against one prompt after another
    if args.batch > 1:
        prompts = [text[64 * i:64 * i + 32 + 32 * i // args.batch] for i in range(args.batch)]  # 32-63 bytes
        print(f"{args.batch} prompts x {short} new bytes: batched, one at a time, before (alternating):")

        def batched(_):
            return model.generate(prompts, short, patcher=patcher, temperature=0)
        tb = bu.alternate({"ours_batched": batched,
                           "ours_one_at_a_time": lambda _: [ours(True)(q, short) for q in prompts],
                           "before_one_at_a_time": lambda _: [before_cached(q, short) for q in prompts]},
                          rounds)
        total = args.batch * short
        r = {k: {"seconds": bu.summary(v), "bytes_per_s": total / bu.median(v), "method": "measured"}
             for k, v in tb.items()}
        r["prompts"] = args.batch
        r["batched_over_one_at_a_time"] = bu.median(
            [to / tb_ for tb_, to in zip(tb["ours_batched"], tb["ours_one_at_a_time"])])
        r["batched_over_before"] = bu.median(
            [to / tb_ for tb_, to in zip(tb["ours_batched"], tb["before_one_at_a_time"])])
        r["outputs_match_one_at_a_time"] = batched(0) == [ours(True)(q, short) for q in prompts]
        res["list"] = r

    # --- the longer length
    if long_ > short:
        r = {}
        print(f"{long_} new bytes: ours_cached and before_cached (alternating rounds):")
        tl = bu.alternate({"ours_cached": lambda _: ours(True)(prompt, long_),
                           "before_cached": lambda _: before_cached(prompt, long_)}, max(2, rounds - 1))
        for k, v in tl.items():
            r[k] = {"seconds": bu.summary(v), "bytes_per_s": long_ / bu.median(v),
                    "method": "measured in full"}
        r["ours_cached_over_before_cached"] = bu.median(
            [tb / tc for tc, tb in zip(tl["ours_cached"], tl["before_cached"])])
        r["cached_outputs_match_before"] = ours(True)(prompt, long_) == before_cached(prompt, long_)
        reruns = {"ours_rerun": ours(False)}
        if hf is not None:
            reruns["hf_rerun"] = lambda pr, n: hf_generate(hf, pr, n, use_cache=False)
        for name, fn in reruns.items():
            print(f"{long_} new bytes: {name} ({args.rerun_1024})", flush=True)
            if args.rerun_1024 == "full":
                dt, out = bu.timed(lambda fn=fn: fn(prompt, long_))
                r[name] = {"seconds": dt, "bytes_per_s": long_ / dt, "method": "measured in full"}
                if name == "ours_rerun":
                    r["ours_outputs_match"] = out == ours(True)(prompt, long_)
            else:
                est = scaled_rerun_seconds(fn, prompt, filler, long_, probe, args.points)
                sec = est["estimated_seconds"]
                r[name] = {"seconds": sec, "bytes_per_s": long_ / sec,
                           "method": f"extrapolated: {args.points} probes of {probe} bytes at growing "
                                     "contexts, integrated",
                           "probe": est}
        r["cached_over_rerun"] = r["ours_rerun"]["seconds"] / r["ours_cached"]["seconds"]["median"]
        if "hf_rerun" in r:
            r["ours_cached_over_hf_rerun"] = r["hf_rerun"]["seconds"] / r["ours_cached"]["seconds"]["median"]
        res[str(long_)] = r
    report["results"] = res
    top = res[str(long_)]
    report["cached_over_rerun_at_longest"] = top["cached_over_rerun"]
    speedup = top.get("ours_cached_over_before_cached")
    report["target"] = {"cached_over_before_at": long_, "at_least": 2.0,
                        "met": speedup is not None and speedup >= 2.0}
    report["machine"]["loadavg_at_end"] = bu.loadavg()

    rows = []
    for n in map(str, sorted(set(lengths))):
        for side in ("ours_cached", "before_cached", "ours_rerun", "hf_rerun"):
            if side in res[n]:
                s = res[n][side]["seconds"]
                s = s["median"] if isinstance(s, dict) else s
                rows.append((f"{n}: {side}", res[n][side]["bytes_per_s"], s))
    bu.print_table(rows, ("new bytes: side", "bytes/s", "seconds"))
    for n in map(str, sorted(set(lengths))):
        print(f"{n}: cached / rerun = {res[n]['cached_over_rerun']:.1f}x, "
              f"cached / before = {res[n]['ours_cached_over_before_cached']:.2f}x")
    if "list" in res:
        r = res["list"]
        print(f"{args.batch} prompts x {short}: batched {r['ours_batched']['bytes_per_s']:.0f} B/s, "
              f"{r['batched_over_one_at_a_time']:.2f}x one at a time, {r['batched_over_before']:.2f}x before")
    if hf is not None:
        hc = res[str(short)]["hf_cached"]
        print("hf generate(use_cache=True): "
              + ("ok" if hc["ok"] else f"{hc['error_type']}: {hc['error'][:90]}"))
    bu.write_json(args.out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
