"""What the benchmarks share: machine facts, the matmul peak, alternating timed rounds, JSON and tables,
and the Hugging Face BLT configs that mirror ours.

Every benchmark times its sides in alternating rounds (AB, BA, AB, ...: each side goes first equally
often, so slow drift of the machine hits both alike) and reports medians over rounds, and ratios of
figures measured in the same run.
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # `python bench/NAME.py` puts bench/ first on the path, not the repository
    sys.path.insert(0, ROOT)

import torch  # noqa: E402


def add_common_args(p):
    p.add_argument("--out", default=None, help="write the figures as JSON here")
    p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run of a few seconds")
    p.add_argument("--threads", type=int, default=None,
                   help="torch.set_num_threads (default: leave torch's default, as the figures are meant)")


def setup_threads(args):
    if args.threads:
        torch.set_num_threads(args.threads)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def machine_info() -> dict:
    import numpy as np

    info = {"torch": torch.__version__, "numpy": np.__version__, "python": platform.python_version(),
            "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "cpu_model": cpu_model(),
            "platform": platform.platform(), "loadavg_at_start": loadavg()}
    try:
        import transformers

        info["transformers"] = transformers.__version__
    except ImportError:
        info["transformers"] = None
    return info


def matmul_peak(n: int = 2048, reps: int = 5, trials: int = 3) -> float:
    """This machine's fp32 matmul FLOP/s: the best of `trials` timings of `reps` n x n x n torch.mm."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    out = torch.empty(n, n)
    torch.mm(a, b, out=out)  # warm-up
    best = float("inf")
    for _ in range(trials):
        t0 = time.perf_counter()
        for _ in range(reps):
            torch.mm(a, b, out=out)
        best = min(best, (time.perf_counter() - t0) / reps)
    return 2 * n**3 / best


def timed(fn) -> tuple[float, object]:
    t0 = time.perf_counter()
    result = fn()
    return time.perf_counter() - t0, result


def alternate(sides: dict, rounds: int, verbose: bool = True) -> dict[str, list[float]]:
    """Call each side's fn(round) once per round, rotating who goes first; seconds per side per round.

    sides: name -> fn(round_index). Round r runs the sides starting at position r mod n (AB, BA, AB, ...).
    """
    names = list(sides)
    times: dict[str, list[float]] = {k: [] for k in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            dt, _ = timed(lambda name=name, r=r: sides[name](r))
            times[name].append(dt)
        if verbose:
            line = ", ".join(f"{k} {times[k][-1]:.3f}s" for k in names)
            print(f"  round {r + 1}/{rounds}: {line}", flush=True)
    return times


def median(xs) -> float:
    return float(statistics.median(xs))


def summary(xs) -> dict:
    return {"median": median(xs), "min": float(min(xs)), "max": float(max(xs)), "n": len(xs)}


def write_json(path: str | None, report: dict):
    if not path:
        return
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(report, f, indent=2, default=float)
        f.write("\n")
    os.replace(tmp, path)
    print(f"wrote {path}")


def print_table(rows: list[tuple], header: tuple):
    cols = [header] + [tuple(_fmt(x) for x in r) for r in rows]
    widths = [max(len(str(c[i])) for c in cols) for i in range(len(header))]
    for j, c in enumerate(cols):
        print("  ".join(str(x).rjust(w) if i else str(x).ljust(w) for i, (x, w) in enumerate(zip(c, widths))))
        if j == 0:
            print("  ".join("-" * w for w in widths))


def _fmt(x):
    if isinstance(x, float):
        if x != x:
            return "nan"
        if abs(x) >= 1e5:
            return f"{x:,.0f}"
        if abs(x) >= 100:
            return f"{x:.0f}"
        return f"{x:.3g}"
    return x


def current_rss() -> int:
    """Resident set size of this process now, bytes."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark of this process (Linux >= 4.0, /proc/self/clear_refs '5')."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss() -> int:
    """Peak resident set size (VmHWM) since start or the last reset_peak_rss(), bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# ----------------------------------------------------------------------------------------------------
# Hugging Face configs mirroring ours (random init; nothing is downloaded)


def hf_blt_config(cfg, patcher_cfg=None):
    """transformers.BltConfig with the dims, heads, hash tables, cross_attn_k and window of a BLTConfig.

    MLP intermediate sizes are set to ours (common.mlp_hidden). With patcher_cfg (an EntropyConfig) HF's
    in-forward entropy patcher is built at that size; without it no patcher is built (patch_in_forward
    off), and a forward without patch_lengths makes every byte a patch.
    """
    from transformers import BltConfig as HFBltConfig

    from common import mlp_hidden

    K = cfg.cross_attn_k
    local = dict(vocab_size=256, cross_attn_k=K, hidden_size_global=cfg.global_dim,
                 max_position_embeddings=cfg.max_seq_len)
    kw = {}
    if patcher_cfg is not None:
        kw["patcher_config"] = hf_patcher_config_dict(patcher_cfg)
    return HFBltConfig(
        vocab_size=256, patch_in_forward=patcher_cfg is not None, local_attention_window_len=cfg.local_window,
        cross_attn_k=K, encoder_hash_byte_group_size=list(cfg.ngram_sizes),
        encoder_hash_byte_group_vocab=cfg.hash_table_size, encoder_hash_byte_group_nb_functions=1,
        max_position_embeddings=cfg.max_seq_len, max_patch_length=None,
        encoder_config=dict(local, hidden_size=cfg.encoder_dim, num_attention_heads=cfg.encoder_heads,
                            num_hidden_layers=cfg.encoder_layers,
                            intermediate_size=mlp_hidden(cfg.encoder_dim)),
        global_config=dict(hidden_size=cfg.global_dim, num_attention_heads=cfg.global_heads,
                           num_hidden_layers=cfg.global_layers, intermediate_size=mlp_hidden(cfg.global_dim),
                           max_position_embeddings=cfg.max_seq_len),
        decoder_config=dict(local, hidden_size=cfg.decoder_dim, num_attention_heads=cfg.decoder_heads,
                            num_hidden_layers=cfg.decoder_layers,
                            intermediate_size=mlp_hidden(cfg.decoder_dim)),
        **kw)


def hf_patcher_config_dict(ecfg, sliding_window: int | None = None) -> dict:
    """BltPatcherConfig fields for an EntropyConfig: same width, depth, heads, MLP size, 256 outputs."""
    from common import mlp_hidden

    return dict(vocab_size=256, hidden_size=ecfg.d_model, num_hidden_layers=ecfg.n_layers,
                num_attention_heads=ecfg.n_heads, intermediate_size=mlp_hidden(ecfg.d_model),
                max_position_embeddings=ecfg.max_seq_len, sliding_window=sliding_window)


def hf_patcher(ecfg, sliding_window: int | None = None):
    from transformers import BltPatcherConfig
    from transformers.models.blt.modeling_blt import BltPatcher

    return BltPatcher(BltPatcherConfig(**hf_patcher_config_dict(ecfg, sliding_window))).eval()
