"""Entropy-based patching for the Byte Latent Transformer: bytes in, patch lengths out.

The entropy byte LM (entropy_llm.py) gives H[i], the entropy in nats of its prediction for byte i from
bytes < i of the same document. A patching method marks candidate patch starts; a left-to-right scan then
applies the size limits (BLT paper, Pagnoni et al. 2024, section 2.3). Byte 0 always starts a patch.

    global            byte i starts a patch when H[i] > entropy_threshold
    monotonic         ... when H[i] - H[i-1] > entropy_threshold (the paper's "approximate monotonic")
    global_monotonic  ... when both H[i] > entropy_threshold and H[i] - H[i-1] > monotonic_threshold
    static            every patch_size bytes
    space             right after the first space-like byte that follows a word (see below)
    byte              every byte is a patch

The scan: a start is ignored while the current patch is shorter than min_patch_size, and forced when it
reaches max_patch_size. `static` and `byte` fix every patch's length instead (the last may be shorter), so
min_patch_size does not apply to them. Invariants, asserted where lengths are made: every length is in
[1, max_patch_size], every length but a document's last is >= the minimum, they sum to the bytes.

Causality: whether byte i starts a patch depends on bytes < i only (H[i] is a function of bytes < i), so
the same rule runs byte by byte while generating (PatchStream). `space` is the causal form of SpaceByte's
rule (Slagle 2024): byte i starts a patch when byte i-1 is space-like and byte i-2 is not (word bytes:
patch_pictures.WORD_BYTE, so a UTF-8 character is never split; the document start counts as space-like).
b"hello, world" -> b"hello," b" world".

Ensembles: EntropyPatcher([m1, m2, ...], combine=...) patches on one score per byte from several entropy
models, which every rule reads in place of H: the mean or the max of their H_k[i], or "js", the
Jensen-Shannon divergence of their next-byte distributions (their disagreement, in nats). Each H_k[i]
depends on bytes < i only, so the score does too; it costs the sum of its models (patching_flops_per_byte).

Worked example (global, threshold 1.0, min_patch_size 2):

    byte   t    h    e    _    c    a    t    _    s    a    t
    H     3.0  1.2  0.4  0.2  2.5  1.1  0.3  0.1  2.2  0.9  0.2
    cand   *    *              *    *              *
    start  *                   *                   *              -> b"the " b"cat " b"sat", lengths [4, 4, 3]

(h and a are candidates but their patch would still be shorter than 2 bytes, so they are ignored.)

Entropies are computed once per (documents, entropy model, window) and kept on disk (cached_entropies);
patch lengths are cheap and always recomputed from them. Pictures of patches are in patch_pictures.py.
Shape letters: N bytes of one document, B rows of a batch, T bytes per row, P patches (per row).

    python entropy_patcher.py --entropy_model_path entropy_model.pth --text "Hi" --plot p.png --html p.html
    python entropy_patcher.py --checkpoint a.pth --checkpoint b.pth --combine js --target_patch_size 4.5
    python entropy_patcher.py --method space --text "no entropy model needed for space patching"
    python entropy_patcher.py analyze --checkpoint entropy_model.pth --data builtin:code \
        --data builtin:prose --report analysis.json --plot analysis.png  # thresholds per domain, transfer
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import math
import os
import re
import sys
import time
import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import patch_pictures
from byte_data import DataError, load_corpus, split_documents
from common import atomic_write, config_from_dict, pick_device, write_report
from entropy_llm import EntropyStream, compute_entropies, entropy_windows, flops_per_byte
from patch_pictures import WORD_BYTE, patch_start_flags, patch_statistics, split_patches
from save_entropy_model import CheckpointError, load_entropy_model, model_fingerprint

METHODS = ("global", "monotonic", "global_monotonic", "static", "space", "byte")
ENTROPY_METHODS = ("global", "monotonic", "global_monotonic")  # the methods that read H
CACHE_FIELDS = ("cache_patches", "cache_dir")  # config fields that do not change the patches
ANALYSIS_PATCH_SIZES = (2, 3, 4.5, 6, 8)  # target mean patch sizes of analyze_entropy_distribution
ANALYSIS_METHODS = ("global", "monotonic")  # the one-threshold rules analyze_entropy_distribution calibrates
COMBINES = ("mean", "max", "js")  # how an ensemble combines its models' scores (module docstring)


@dataclass
class PatchConfig:
    method: str = "global"  # one of METHODS (module docstring)
    # nats; the threshold of global and monotonic, the H[i] one of global_monotonic. None: calibrate it to
    # target_patch_size on training documents (calibrate()) before patching
    entropy_threshold: float | None = 0.6
    monotonic_threshold: float = 0.3  # nats; global_monotonic only: the H[i] - H[i-1] threshold
    target_patch_size: float = 4.5  # bytes per patch that calibrate() aims at (entropy methods)
    patch_size: int = 4  # bytes; static only: every patch has this length (the last may be shorter)
    min_patch_size: int = 4  # bytes; a start is ignored while the current patch is shorter (not static/byte)
    max_patch_size: int = 128  # bytes; a start is forced when the current patch reaches this length
    cache_patches: bool = True  # keep entropies on disk (cached_entropies), keyed by data + model + window
    cache_dir: str = ""  # folder of that cache ("": $BLT_CACHE_DIR, else ~/.cache/entropy-blt/entropies)

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"unknown patching method {self.method!r}; choose one of {', '.join(METHODS)}")
        for name in ("patch_size", "min_patch_size", "max_patch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name} must be an integer number of bytes >= 1, got {v!r}")
            setattr(self, name, int(v))
        for name, other in (("min_patch_size", self.min_patch_size), ("static patch_size", self.patch_size)):
            if other > self.max_patch_size and (name[0] == "m" or self.method == "static"):
                raise ValueError(f"{name} ({other}) > max_patch_size ({self.max_patch_size})")
        for name in ("entropy_threshold", "monotonic_threshold", "target_patch_size"):
            v = getattr(self, name)
            if v is None and name == "entropy_threshold":
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float, np.number)) or not math.isfinite(v):
                raise ValueError(f"{name} must be a finite number, got {v!r}")
            setattr(self, name, float(v))  # any sign: a threshold on H[i] - H[i-1] may well be negative
        if self.target_patch_size < 1:
            raise ValueError(f"target_patch_size must be at least 1 byte, got {self.target_patch_size}")

    @property
    def needs_entropy(self) -> bool:
        """Whether this method reads the entropy model's H (else patches depend on the bytes only)."""
        return self.method in ENTROPY_METHODS

    @property
    def size_bounds(self) -> tuple[int, int]:
        """(min, max) patch length the scan enforces; static and byte fix every length."""
        fixed = {"byte": 1, "static": self.patch_size}.get(self.method)
        return (fixed, fixed) if fixed else (self.min_patch_size, self.max_patch_size)

    def patch_key(self) -> dict:
        """The fields that decide the patches (everything but the cache settings): checkpoint metadata."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in CACHE_FIELDS}


# ----------------------------------------------------------------------------------------------------
# Pure functions: entropies and bytes -> candidate starts -> patch lengths


def byte_array(data) -> np.ndarray:
    """bytes-like, numpy or torch -> integer array of byte values (no copy for bytes)."""
    if isinstance(data, str):
        raise TypeError("expected bytes, got str; encode it first, e.g. text.encode('utf-8')")
    if isinstance(data, (bytes, bytearray, memoryview)):
        return np.frombuffer(data, dtype=np.uint8)
    x = np.asarray(data.detach().cpu() if isinstance(data, torch.Tensor) else data)
    if x.dtype != np.uint8:
        if not np.issubdtype(x.dtype, np.integer):
            raise TypeError(f"byte values must be integers, got dtype {x.dtype}")
        if x.size and (x.min() < 0 or x.max() > 255):
            raise ValueError("byte values must lie in 0..255")
    return x


def patch_start_mask(entropies, data, config: PatchConfig) -> np.ndarray:
    """Candidate patch starts before the min/max scan: bool (..., N), True where byte i may start a patch.

    entropies: H in nats, (N,) or (B, N), or None for methods that do not read it; data: the bytes, or None
    for methods that do not read them. Rows are independent documents; entry i depends on H[<= i] and bytes
    < i only. Byte 0 is always a start. Comparisons run in float64, so numpy, torch and the streaming form
    (Python floats) agree exactly, also for thresholds that float32 cannot represent.
    """
    if isinstance(entropies, torch.Tensor):
        entropies = entropies.detach().cpu().double()
    h = None if entropies is None else np.asarray(entropies, dtype=np.float64)
    x = None if data is None else byte_array(data)
    method, t = config.method, config.entropy_threshold
    if method in ENTROPY_METHODS and (h is None or t is None):
        raise ValueError(f"patching method {method!r} needs entropies and an entropy_threshold "
                         "(a None threshold: calibrate it first with entropy_patcher.calibrate)")
    if x is None and method == "space":
        raise ValueError("patching method 'space' needs the bytes")
    if h is not None and x is not None and h.shape != x.shape:
        raise ValueError(f"entropies {h.shape} and bytes {x.shape} differ in shape")
    if h is None and x is None:
        raise ValueError("give entropies or bytes (the mask needs at least a length)")
    mask = np.zeros((h if h is not None else x).shape, dtype=bool)  # (..., N)
    if mask.shape[-1] == 0:
        return mask
    if method == "global":
        mask[...] = h > t
    elif method == "monotonic":
        mask[..., 1:] = np.diff(h, axis=-1) > t  # H[i] - H[i-1], (..., N-1)
    elif method == "global_monotonic":
        mask[..., 1:] = (h[..., 1:] > t) & (np.diff(h, axis=-1) > config.monotonic_threshold)
    elif method == "static":
        mask[..., ::config.patch_size] = True
    elif method == "space":
        space = ~WORD_BYTE[x]  # (..., N) True for space-like bytes
        # byte 1 never starts: the document start (byte -1) counts as space-like
        mask[..., 2:] = space[..., 1:-1] & ~space[..., :-2]
    elif method == "byte":
        mask[...] = True
    mask[..., 0] = True
    return mask


def scan_starts(mask: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """The min/max scan over one document's candidates: mask (N,) bool -> patch starts (P,) int64.

    From a start s, the next start is the first candidate at least lo bytes on, or s + hi (forced),
    whichever comes first; byte 0 always starts.
    """
    n = mask.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if lo == hi:  # static / byte: every start is forced
        return np.arange(0, n, hi, dtype=np.int64)
    if lo == 1:  # every candidate is kept; only gaps longer than hi get forced starts (vectorised)
        cand = np.union1d([0], np.flatnonzero(mask))
        extra = (np.diff(cand, append=n) - 1) // hi  # (K,) forced starts inside the gap after each candidate
        base = np.repeat(cand, extra)  # the candidate each forced start follows
        k = np.arange(base.size) - np.repeat(np.cumsum(extra) - extra, extra) + 1  # 1, 2, ... within a gap
        return np.sort(np.concatenate([cand, base + k * hi])).astype(np.int64)
    # General case: a jump table next[s] for every s, then follow it from 0. The loop runs once per
    # patch (not per byte) through a memoryview, which hands out Python ints cheaply.
    dtype = np.int32 if n + hi < 2**31 else np.int64
    pos = np.arange(n + 1, dtype=dtype)
    first = np.where(np.append(mask, True), pos, n).astype(dtype)  # (N+1,) sentinel candidate at n
    first = np.minimum.accumulate(first[::-1])[::-1]  # first[j] = first candidate >= j (n if none)
    jump = memoryview(np.ascontiguousarray(np.minimum(first[np.minimum(pos[:n] + lo, n)], pos[:n] + hi)))
    starts = np.empty((n - 1) // lo + 1, dtype=np.int64)  # all but the last patch are >= lo
    out = memoryview(starts)
    s = p = 0
    while s < n:
        out[p], p, s = s, p + 1, jump[s]
    return starts[:p]


def starts_to_lengths(mask, config: PatchConfig) -> np.ndarray:
    """Candidate starts (N,) bool -> patch lengths (P,) int64 after the min/max scan (invariants asserted)."""
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 1:
        raise ValueError(f"starts_to_lengths takes one document's mask (N,), got shape {mask.shape}")
    (lo, hi), n = config.size_bounds, mask.shape[0]
    lengths = np.diff(scan_starts(mask, lo, hi), append=n)  # (P,)
    assert int(lengths.sum()) == n, f"patch lengths sum to {int(lengths.sum())}, not to the {n} bytes"
    if len(lengths):
        assert lengths.min() >= 1 and lengths.max() <= hi, f"a patch length is outside [1, {hi}]"
        assert len(lengths) == 1 or lengths[:-1].min() >= lo, f"a patch before the last is shorter than {lo}"
    return lengths


def patch_lengths_from_entropies(entropies, data, config: PatchConfig) -> np.ndarray:
    """One document: H (N,) nats (or None) and its bytes (or None) -> patch lengths (P,) int64."""
    return starts_to_lengths(patch_start_mask(entropies, data, config), config)


def patch_lengths_batch(entropies, data, valid_lengths, config: PatchConfig) -> torch.Tensor:
    """A batch of documents: H (B, T) and bytes (B, T) (either None if the method does not read it),
    valid_lengths (B,) (None = all T) -> patch lengths (B, P_max) long, right-padded with zeros.

    Row b's lengths sum to valid_lengths[b]; bytes past it are ignored (the rule is causal, so padding
    cannot move an earlier start). Masks are computed for the whole batch; the scan runs per row on the CPU.
    """
    ref = data if data is not None else entropies
    if ref is None:
        raise ValueError("give entropies or bytes")
    B, T = ref.shape
    valid = np.full(B, T) if valid_lengths is None else np.asarray(
        valid_lengths.cpu() if isinstance(valid_lengths, torch.Tensor) else valid_lengths).reshape(B)
    valid = valid.astype(np.int64)
    if valid.size and (valid.min() < 0 or valid.max() > T):
        raise ValueError(f"valid_lengths must lie in 0..{T}")
    x = None
    if data is not None:  # padding may hold any value (e.g. -1): zero it so the byte table lookup is valid
        x = np.asarray(data.detach().cpu() if isinstance(data, torch.Tensor) else data)
        x = np.where(np.arange(T) < valid[:, None], x, 0)  # (B, T)
    mask = patch_start_mask(entropies, x, config)  # (B, T)
    rows = [starts_to_lengths(mask[b, :valid[b]], config) for b in range(B)]
    out = np.zeros((B, max(map(len, rows), default=0)), dtype=np.int64)  # (B, P_max)
    for b, r in enumerate(rows):
        out[b, :len(r)] = r
    return torch.from_numpy(out).to(ref.device if isinstance(ref, torch.Tensor) else "cpu")


class PatchStream:
    """The patching rule one byte at a time, for generation: one stream per sequence.

        stream = patcher.stream()
        starts = stream.prefill(prompt)       # start flag of every prompt byte (byte 0: True)
        stream.next_starts_patch()            # does the next, not yet known, byte open a patch?
        stream.push(b)                        # feed that byte once it is known; then ask again

    For entropy methods H[i] comes from an EntropyStream (the entropy model with its own KV cache, the
    windows of compute_entropies), so alternating next_starts_patch / push over a sequence gives exactly
    patch_lengths_from_entropies(compute_entropies(model, seq), seq, config), to float32 precision.
    decide(H[i]) is the rule itself for callers that have H already (prefill uses it).
    """

    def __init__(self, config: PatchConfig, entropy_model=None):
        if config.needs_entropy and (entropy_model is None or config.entropy_threshold is None):
            raise ValueError(f"patching method {config.method!r} needs an entropy model and a threshold "
                             "(calibrate first)")
        self.config = config
        self.lo, self.hi = config.size_bounds
        stream = EnsembleStream if isinstance(entropy_model, EntropyEnsemble) else EntropyStream
        self.entropy = stream(entropy_model) if config.needs_entropy else None
        self.position = 0  # index i of the next byte
        self.patch_length = 0  # bytes in the current (open) patch
        self.last = np.zeros(0, dtype=np.uint8)  # bytes i-2, i-1 (the space rule reads them)
        self.prev_entropy = 0.0  # H[i-1], for the monotonic rules
        self.decision: bool | None = None  # whether byte i starts a patch, once decided

    def decide(self, entropy: float | None = None) -> bool:
        """Whether byte i starts a patch, given H[i] (None for methods that do not read it)."""
        assert self.decision is None, "byte i is decided already: push it first"
        c, i = self.config, self.position
        if c.needs_entropy and entropy is None:
            raise ValueError(f"patching method {c.method!r} needs H[i] for every byte")
        if i == 0 or self.patch_length >= self.hi:
            start = True
        elif self.patch_length < self.lo:
            start = False
        else:  # the batch rule itself on H[i-1], H[i] and bytes i-2, i-1 (byte i is unknown: 0)
            n = min(i, 2) + 1  # positions i-n+1..i
            h = None if entropy is None else np.array([self.prev_entropy] * (n - 1) + [float(entropy)])
            start = bool(patch_start_mask(h, np.append(self.last[-(n - 1):], 0), c)[-1])
        self.patch_length = 1 if start else self.patch_length + 1
        self.prev_entropy = None if entropy is None else float(entropy)
        self.decision = start
        return start

    def next_starts_patch(self) -> bool:
        if self.decision is None:
            self.decide(self.entropy.next_entropy() if self.entropy is not None else None)
        return self.decision

    def push(self, byte: int):
        self.next_starts_patch()  # the rule must see every byte, asked or not
        if self.entropy is not None:
            self.entropy.push(byte)
        self.last = np.append(self.last, np.uint8(byte))[-2:]
        self.position += 1
        self.decision = None

    def prefill(self, data) -> list[bool]:
        """Feed `data` (bytes); returns the start flag of each of its bytes. On a fresh stream this is the
        batch rule (entropies in one batched pass), after which the stream continues byte by byte."""
        data = bytes(data)
        H = document_entropies(self.entropy.model, [data])[0] if self.entropy is not None and data else None
        if self.position or self.decision is not None or not data:  # mid-sequence: byte by byte
            starts = []
            for i, b in enumerate(data):
                starts.append(self.decide(None if H is None else float(H[i])))
                self.push(b)
            return starts
        lengths = patch_lengths_from_entropies(H, data, self.config)
        self.position, self.patch_length = len(data), int(lengths[-1])
        self.last = np.frombuffer(data[-2:], dtype=np.uint8).copy()
        self.prev_entropy = None if H is None else float(H[-1])
        for b in data if self.entropy is not None else ():
            self.entropy.push(b)  # history only: the model runs when the next byte's score is asked for
        return patch_start_flags(lengths, len(data)).tolist()


# ----------------------------------------------------------------------------------------------------
# Ensembles: several entropy models, one score per byte


@dataclass
class EnsembleConfig:
    combine: str  # one of COMBINES: how the models' scores make one
    max_seq_len: int  # bytes; the longest window of its models (read by the entropy cache key)


def combine_scores(per_model: list[np.ndarray], combine: str) -> np.ndarray:
    """The models' H_k, each (N,) nats -> (N,) float32, their mean or max. The mean is summed in float64
    in model order, so one byte at a time (EnsembleStream) gives the very same bits."""
    if combine == "max":
        return np.max(np.stack(per_model), axis=0).astype(np.float32)  # (N,)
    return (sum(np.asarray(h, dtype=np.float64) for h in per_model) / len(per_model)).astype(np.float32)


@torch.inference_mode()
def window_js(models, x: np.ndarray, s: int) -> np.ndarray:
    """Jensen-Shannon divergence (nats) of the models' next-byte distributions p_k at every position of
    the window of x (bytes) that starts at byte s: H(mean_k p_k) - mean_k H(p_k), >= 0, 0 where they
    agree. -> (W,) float32; position t reads x[s:s + t] only (each model is causal)."""
    W = models[0].config.max_seq_len
    row = np.zeros(W, dtype=np.int64)  # padded on the right: causal, so harmless
    row[:min(W, len(x) - s)] = x[s:s + W]
    row = torch.from_numpy(row).to(next(models[0].parameters()).device).view(1, -1)  # (1, W)
    p = torch.stack([F.softmax(m(row)[0][0].float(), dim=-1) for m in models]).double()  # (K, W, V)

    def entropy(q):  # (..., V) -> (...), nats
        return -torch.special.xlogy(q, q).sum(-1)

    return (entropy(p.mean(0)) - entropy(p).mean(0)).clamp_min(0).float().cpu().numpy()


def js_scores(models, data: bytes) -> np.ndarray:
    """window_js over one document in the windows of compute_entropies (entropy_windows: overlapping by
    half), one window per forward, so EnsembleStream, which runs the window of each byte alone, agrees."""
    x = np.frombuffer(data, dtype=np.uint8)
    out = np.zeros(len(x), dtype=np.float32)
    for s, k0, k1 in entropy_windows(len(x), models[0].config.max_seq_len):
        out[k0:k1] = window_js(models, x, s)[k0 - s:k1 - s]
    return out


class EntropyEnsemble(nn.Module):
    """Several entropy models read as one (module docstring, "Ensembles"): scores(docs) is the combined
    score of every byte, what the rules read in place of H; EnsembleStream gives it one byte at a time.
    An nn.Module, so model_fingerprint (the entropy cache key) covers every model's weights and config
    and the combine rule (its extra state), and .to() moves them all."""

    def __init__(self, models, combine: str = "mean"):
        super().__init__()
        models = list(models)
        if combine not in COMBINES:
            raise ValueError(f"unknown combine {combine!r}; choose one of {', '.join(COMBINES)}")
        if not models or any(m is None for m in models):
            raise ValueError("an ensemble needs entropy models, one or more")
        windows = sorted({m.config.max_seq_len for m in models})
        if combine == "js" and len(windows) > 1:
            raise ValueError(f"combine='js' compares the models' distributions window by window: give models "
                             f"of one max_seq_len, not {windows}")
        self.models = nn.ModuleList(models)
        self.config = EnsembleConfig(combine, windows[-1])

    def get_extra_state(self):
        return {"config": dataclasses.asdict(self.config)}

    def set_extra_state(self, state):  # the config comes from the constructor; nothing to restore
        pass

    def scores(self, docs: list[bytes], batch_size: int | None = None, show_progress=None) -> list:
        """The combined score (N,) float32 of each document."""
        if self.config.combine == "js":
            return [js_scores(list(self.models), d) for d in docs]
        per_model = [compute_entropies(m, docs, batch_size, show_progress) for m in self.models]
        return [combine_scores([h[k] for h in per_model], self.config.combine) for k in range(len(docs))]


class EnsembleStream:
    """EntropyStream's interface for an ensemble: push(byte); next_entropy() is the combined score of the
    next byte, what EntropyEnsemble.scores gives (mean, max: one EntropyStream per model; js: the window
    that scores the byte, run alone as js_scores runs it)."""

    def __init__(self, ensemble: EntropyEnsemble):
        self.model = ensemble.eval()
        self.history = bytearray()  # every byte pushed
        js = ensemble.config.combine == "js"
        self.streams = [] if js else [EntropyStream(m) for m in ensemble.models]

    def push(self, byte: int):
        self.history.append(byte)
        for s in self.streams:
            s.push(byte)

    def next_entropy(self) -> float:
        c, i = self.model.config, len(self.history)
        if c.combine != "js":
            return float(combine_scores([np.float32([s.next_entropy()]) for s in self.streams], c.combine)[0])
        s = entropy_windows(i + 1, c.max_seq_len)[-1][0]  # the window that scores byte i
        x = np.frombuffer(bytes(self.history), dtype=np.uint8)
        return float(window_js(list(self.model.models), x, s)[i - s])


def patching_flops_per_byte(entropy_model) -> float:
    """Forward FLOPs per patched byte of an entropy model or ensemble (the sum of its models'): each model's
    FLOPs per byte times 2, as its scoring windows overlap by half (entropy_windows)."""
    models = entropy_model.models if isinstance(entropy_model, EntropyEnsemble) else [entropy_model]
    return sum(2 * flops_per_byte(m.config) for m in models)


# ----------------------------------------------------------------------------------------------------
# Entropies of many documents, and their disk cache


def documents(byte_sequences) -> list[bytes]:
    """A list of documents as bytes (bytearray and memoryview converted); a lone document is an error."""
    if isinstance(byte_sequences, (bytes, bytearray, memoryview, str)):
        raise TypeError("expected a list of documents (bytes); wrap a single document as [doc]")
    docs = [bytes(d) if isinstance(d, (bytearray, memoryview)) else d for d in byte_sequences]
    for d in docs:
        if not isinstance(d, bytes):
            raise TypeError(f"documents must be bytes, got {type(d).__name__}")
    return docs


def document_entropies(model, docs: list[bytes], batch_size: int | None = None,
                       show_progress=None) -> list[np.ndarray]:
    """H for each document, from one batched compute_entropies call over all of them (an ensemble: its
    combined score)."""
    if model is None:
        raise ValueError("this patching method needs an entropy model (or precomputed entropies)")
    out = [np.zeros(0, dtype=np.float32) for _ in docs]
    idx = [k for k, d in enumerate(docs) if len(d)]
    todo = [docs[k] for k in idx]
    if not todo:  # nothing to score (and no empty progress bar)
        return out
    ents = (model.scores(todo, batch_size, show_progress) if isinstance(model, EntropyEnsemble)
            else compute_entropies(model, todo, batch_size, show_progress))
    for k, h in zip(idx, ents):
        assert len(h) == len(docs[k]), f"compute_entropies gave {len(h)} values for {len(docs[k])} bytes"
        out[k] = h
    return out


CACHE_ENV = "BLT_CACHE_DIR"  # where entropy caches go when no cache_dir is given


def default_cache_dir() -> str:
    """$BLT_CACHE_DIR, else the per-user cache ($XDG_CACHE_HOME or ~/.cache)/entropy-blt/entropies: never
    the folder a command happens to run in (it may be read-only, or a source tree)."""
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.environ.get(CACHE_ENV) or os.path.join(root, "entropy-blt", "entropies")


def entropy_cache_path(entropy_model, docs: list[bytes], cache_dir: str, label: str | None = None) -> str:
    """cache_dir/LABEL-HASH.npz; HASH = sha256 over the documents (boundaries included), the entropy
    model's fingerprint (weights and config) and its window. The label is for people, never the key.
    v5: the sliding window rotates keys once at their offset from the document's start, in chunks of
    W/8 (v4: per query chunk at window-local positions, chunks of W/4): values moved in the last bits."""
    h = hashlib.sha256(b"entropies v5\0" + model_fingerprint(entropy_model).encode())
    h.update(int(entropy_model.config.max_seq_len).to_bytes(8, "little") + len(docs).to_bytes(8, "little"))
    for d in docs:  # lengths first, so document boundaries are part of the key
        h.update(len(d).to_bytes(8, "little") + d)
    label = re.sub(r"[^A-Za-z0-9_.-]+", "_", label)[:48] if label else "entropies"
    return os.path.join(cache_dir or default_cache_dir(), f"{label}-{h.hexdigest()[:32]}.npz")


def payload_checksum(flat: np.ndarray) -> str:
    """SHA-256 of the entropies' bytes: a cache file carries it beside them, so bit-rot is caught."""
    return hashlib.sha256(np.ascontiguousarray(flat, dtype=np.float32).tobytes()).hexdigest()


def read_entropy_cache(path: str, docs: list[bytes]) -> list[np.ndarray] | None:
    """The cached entropies, or None when the file is missing or cannot be trusted (then recomputed).

    A cache file is an .npz of `entropies` (float32, every document's concatenated) and `sha256` (their
    checksum); anything else (unreadable, another type such as a bare .npy, a wrong shape, a checksum that
    does not match) is recomputed with a warning.
    """
    if not os.path.exists(path):
        return None
    try:
        with np.load(path, allow_pickle=False) as z:  # an .npy gives an array: no context manager -> caught
            flat, stored = z["entropies"], str(z["sha256"])
        if flat.dtype != np.float32 or flat.shape != (sum(map(len, docs)),):
            problem = "does not fit the documents"
        elif payload_checksum(flat) != stored:
            problem = "fails its checksum (damaged)"
        else:
            problem = None if np.isfinite(flat).all() else "holds non-finite values"
    except Exception as e:  # truncated, empty, not an npz at all: a cache is recomputed, never trusted
        problem = f"is unreadable ({type(e).__name__}: {str(e)[:100]})"
    if problem:
        warnings.warn(f"entropy cache {path} {problem}; recomputing", stacklevel=3)
        return None
    return np.split(flat, np.cumsum([len(d) for d in docs])[:-1]) if docs else []


def write_entropy_cache(path: str, ent: list[np.ndarray]):
    """Write the cache file read_entropy_cache reads; a cache that cannot be written is only a warning."""
    flat = np.concatenate(ent).astype(np.float32) if ent else np.zeros(0, np.float32)

    def write(tmp):
        with open(tmp, "wb") as f:  # a file object, so numpy does not append .npz to the temp name
            np.savez(f, entropies=flat, sha256=np.array(payload_checksum(flat)))

    try:
        atomic_write(path, write)
    except OSError as e:
        warnings.warn(f"cannot write the entropy cache {path} ({e.strerror or e}); set --cache_dir or "
                      f"${CACHE_ENV} to a writable folder", stacklevel=3)


def cached_entropies(entropy_model, docs: list[bytes], cache_dir: str | None, label: str | None = None,
                     batch_size: int | None = None, show_progress=None, with_hit: bool = False):
    """H of every document, computed once per (documents, entropy model, window) and kept in cache_dir
    (None: no disk cache; "": default_cache_dir()). A file that is unreadable, damaged or does not fit is
    recomputed and rewritten. with_hit=True returns (entropies, whether they came from the cache)."""
    docs = documents(docs)
    if entropy_model is None:
        raise ValueError("this patching method needs an entropy model (or precomputed entropies)")
    path = None if cache_dir is None else entropy_cache_path(entropy_model, docs, cache_dir, label)
    ent = None if path is None else read_entropy_cache(path, docs)
    hit = ent is not None
    if not hit:
        ent = document_entropies(entropy_model, docs, batch_size, show_progress)
        if path is not None:
            write_entropy_cache(path, ent)
    return (ent, hit) if with_hit else ent


# ----------------------------------------------------------------------------------------------------
# The patcher: an entropy model plus a PatchConfig


class EntropyPatcher:
    """An entropy model (or several) and a PatchConfig. Any of:

        EntropyPatcher(entropy_model, threshold=0.6, method="global")   # other PatchConfig fields as keywords
        EntropyPatcher(entropy_model, patch_config)
        EntropyPatcher([m1, m2, m3], patch_config, combine="js")       # an ensemble: mean, max or js

    entropy_model may be None for static, space and byte, or when every call passes precomputed entropies.
    """

    def __init__(self, entropy_model=None, config: PatchConfig | None = None, *,
                 threshold: float | None = None, method: str | None = None, batch_size: int | None = None,
                 combine: str | None = None, **config_fields):
        if isinstance(entropy_model, (list, tuple)):
            entropy_model = EntropyEnsemble(entropy_model, combine or "mean")
        elif combine is not None:
            raise ValueError("combine= makes an ensemble: pass a list of entropy models")
        if config is not None and not isinstance(config, PatchConfig):
            raise TypeError(f"the second argument is a PatchConfig, got {type(config).__name__} "
                            "(pass a threshold as threshold=...)")
        named = {"entropy_threshold": threshold, "method": method}
        config_fields.update({k: v for k, v in named.items() if v is not None})
        self.config = dataclasses.replace(config or PatchConfig(), **config_fields)
        self.entropy_model = entropy_model
        self.batch_size = batch_size  # passed to compute_entropies (None = its default)

    # one document

    def entropies(self, byte_sequence) -> np.ndarray:
        """H (N,) float32 nats for one document."""
        doc = byte_array(byte_sequence).tobytes()
        return document_entropies(self.entropy_model, [doc], self.batch_size)[0]

    def patch_lengths(self, byte_sequence, entropies=None) -> np.ndarray:
        """(P,) int64 patch lengths of one document (entropies are computed unless given or not needed)."""
        x = byte_array(byte_sequence)
        if entropies is None and self.config.needs_entropy:
            entropies = self.entropies(byte_sequence) if len(x) else np.zeros(0, dtype=np.float32)
        return patch_lengths_from_entropies(entropies, x, self.config)

    def create_patches(self, byte_sequence, entropies=None) -> list[bytes]:
        """One document -> its patches; b"".join(patches) == byte_sequence."""
        return split_patches(byte_sequence, self.patch_lengths(byte_sequence, entropies))

    def stream(self) -> PatchStream:
        """A causal, byte-by-byte stream of patch starts for one sequence (BLTModel.generate)."""
        return PatchStream(self.config, self.entropy_model)

    # many documents

    def document_patch_lengths(self, byte_sequences, cache_key: str | None = None, entropies=None,
                               show_progress=None, with_hit: bool = False):
        """Patch lengths of every document (what training reads); entropies from the disk cache when
        cache_patches (cache_key: a readable label for the cache file); with_hit: also whether they were."""
        docs, hit = documents(byte_sequences), False
        if not self.config.needs_entropy:
            entropies = [None] * len(docs)
        elif entropies is None:
            cache_dir = self.config.cache_dir if self.config.cache_patches else None
            entropies, hit = cached_entropies(self.entropy_model, docs, cache_dir, cache_key, self.batch_size,
                                              show_progress, with_hit=True)
        if len(entropies) != len(docs):
            raise ValueError(f"{len(entropies)} entropy arrays for {len(docs)} documents")
        lengths = [patch_lengths_from_entropies(h, d, self.config) for h, d in zip(entropies, docs)]
        return (lengths, hit) if with_hit else lengths

    def process_data(self, byte_sequences, cache_key: str | None = None, entropies=None,
                     show_progress=None) -> tuple[list[list[bytes]], dict]:
        """Documents -> (patches per document, stats), entropies as in document_patch_lengths."""
        docs = documents(byte_sequences)
        doc_lengths, hit = self.document_patch_lengths(docs, cache_key, entropies, show_progress, True)
        stats = patch_statistics(doc_lengths)
        stats.update(method=self.config.method, cache_hit=hit)
        return [split_patches(d, n) for d, n in zip(docs, doc_lengths)], stats

    def to_meta(self) -> dict:
        """The patch config as a JSON-ready dict, for checkpoint metadata (patcher_from_meta inverts it); an
        ensemble adds {"ensemble": {"combine": ..., "models": K}}."""
        meta, e = self.config.patch_key(), self.entropy_model
        if isinstance(e, EntropyEnsemble):
            meta["ensemble"] = {"combine": e.config.combine, "models": len(e.models)}
        return meta


def patcher_from_meta(meta: dict, entropy_model=None) -> EntropyPatcher:
    """The EntropyPatcher a checkpoint's metadata describes (EntropyPatcher.to_meta), around entropy_model
    (for an ensemble: the list of its models, in order)."""
    meta = dict(meta)
    ensemble = meta.pop("ensemble", None)
    config = config_from_dict(PatchConfig, meta)
    many = isinstance(entropy_model, (list, tuple))
    if ensemble is None and many:
        raise ValueError(f"the metadata describes a patcher of one entropy model, got {len(entropy_model)}")
    if ensemble is None or (entropy_model is None and not config.needs_entropy):
        return EntropyPatcher(entropy_model, config)
    if not many or len(entropy_model) != ensemble["models"]:
        raise ValueError(f"the metadata describes an ensemble of {ensemble['models']} entropy models; pass "
                         "them as a list")
    return EntropyPatcher(list(entropy_model), config, combine=ensemble["combine"])


# ----------------------------------------------------------------------------------------------------
# Thresholds: the entropy distribution and calibration to a target mean patch size


class CalibrationError(ValueError):
    """No threshold reaches the target mean patch size; the message says what is reachable."""


def mean_patch_size(entropies: list[np.ndarray], docs: list[bytes], config: PatchConfig) -> float:
    """Bytes per patch over all documents."""
    n_patches = sum(len(patch_lengths_from_entropies(h, d, config)) for h, d in zip(entropies, docs))
    return sum(map(len, docs)) / n_patches if n_patches else 0.0


def calibrate_threshold(entropy_model, byte_sequences, target_mean_patch_size: float, method: str = "global",
                        config: PatchConfig | None = None, entropies=None, tol: float = 0.05) -> float:
    """The entropy_threshold at which `method` (an entropy method; global_monotonic keeps its configured
    monotonic_threshold) gives a mean patch size within tol of the target, under config's size limits.

    Bisection over the distinct values of the score (H, or H[i] - H[i-1]): the mean patch size only changes
    when the threshold crosses one, and never decreases as the threshold rises. Returns a threshold halfway
    between two neighbouring values, so float rounding cannot move a boundary. Pass entropies (one array
    per document) to skip the model. Raises CalibrationError when the target is out of reach.
    """
    if method not in ENTROPY_METHODS:
        raise ValueError(f"calibration supports the entropy methods {ENTROPY_METHODS}, not {method!r}")
    config, target = dataclasses.replace(config or PatchConfig(), method=method), target_mean_patch_size
    docs = documents(byte_sequences)
    if entropies is None:
        entropies = document_entropies(entropy_model, docs)
    hs = [np.asarray(h, dtype=np.float64) for h in entropies]
    if sum(map(len, docs)) == 0:
        raise CalibrationError("cannot calibrate a threshold on empty data")
    # the score a threshold cuts, per byte but byte 0 (which always starts)
    scores = [h[1:] if method == "global" else np.diff(h) if method == "monotonic"
              else h[1:][np.diff(h) > config.monotonic_threshold] for h in hs]
    vals = np.unique(np.concatenate(scores))
    vals = vals[np.isfinite(vals)]

    def threshold(k: int) -> float:  # k = -1: below every value; k = K-1: above them all (no candidates)
        if vals.size == 0:  # no byte can be cut: any threshold does
            return 0.0
        if k < 0 or k == vals.size - 1:
            v = vals[max(k, 0)]
            return float(v + (1 if k >= 0 else -1) * 1e-3 * max(1.0, abs(v)))
        mid = float(vals[k] + (vals[k + 1] - vals[k]) / 2)
        return mid if mid < vals[k + 1] else float(vals[k])

    means: dict[int, float] = {}

    def mean_at(k: int) -> float:  # each evaluation is a full scan over the data: remember them
        if k not in means:
            means[k] = mean_patch_size(hs, docs, dataclasses.replace(config, entropy_threshold=threshold(k)))
        return means[k]

    lo_k, hi_k = -1, vals.size - 1
    low, high = mean_at(lo_k), mean_at(hi_k)
    if low < target < high:  # invariant: mean_at(lo_k) < target <= mean_at(hi_k)
        while hi_k - lo_k > 1:
            mid = (lo_k + hi_k) // 2
            lo_k, hi_k = (mid, hi_k) if mean_at(mid) < target else (lo_k, mid)
    best = hi_k if target >= high else lo_k if target <= low else min(
        (lo_k, hi_k), key=lambda k: abs(mean_at(k) - target))
    if abs(mean_at(best) - target) <= tol * target:
        return threshold(best)
    lo_sz, hi_sz = config.size_bounds
    if target > high:
        why = f"the largest reachable is {high:.3f} (no entropy starts; max_patch_size={hi_sz})"
    elif target < low:
        why = f"the smallest reachable is {low:.3f} (every byte a candidate, min_patch_size={lo_sz})"
    else:
        why = (f"the mean patch size jumps past it ({mean_at(lo_k):.3f} -> {mean_at(hi_k):.3f} between "
               f"thresholds {threshold(lo_k):.6g} and {threshold(hi_k):.6g}; tied entropy values)")
    raise CalibrationError(f"no {method} threshold gives a mean patch size within {tol:.0%} of {target}: "
                           + why)


def analyze_entropy_distribution(entropy_model, byte_sequences, config: PatchConfig | None = None,
                                 entropies=None, patch_sizes=ANALYSIS_PATCH_SIZES, plot: str | None = None
                                 ) -> dict:
    """The entropy distribution of some text and the thresholds that reach each target mean patch size.

    byte_sequences, a list of documents (pass training documents: the thresholds are fitted to them):
    num_bytes, mean, std and percentiles of H over every byte (nats), and thresholds_for_patch_size
    {method: {size: threshold, None where out of reach}} for the global and monotonic rules.
    byte_sequences, a dict {domain: documents}: each is split (byte_data.split_documents) and the result is
    {"domains": {domain: the figures above from its training documents only, num_held_out_bytes},
     "transfer": {method: {size: {A: {B: mean patch size on B's held-out documents with A's threshold}}}}};
    the diagonal is how well a calibration holds on unseen text of its own domain.
    Limits: config's, by default min_patch_size=1 (max 128), so the thresholds show what the entropies alone
    do (with a minimum of 4, sizes 2 and 3 could not be reached at all). entropies: the list form's H per
    document, to skip the model. plot: save a histogram of H per domain there (PNG) with its thresholds.
    """
    config = config or PatchConfig(min_patch_size=1, cache_patches=False)
    if isinstance(byte_sequences, dict):
        if entropies is not None:
            raise ValueError("the domain form computes its entropies from the model: pass entropies=None")
        return analyze_domains(entropy_model, byte_sequences, config, patch_sizes, plot)
    docs = documents(byte_sequences)
    entropies = entropies if entropies is not None else document_entropies(entropy_model, docs)
    h = np.concatenate([np.asarray(e, dtype=np.float64) for e in entropies] or [np.zeros(0)])
    out = {**patch_pictures.entropy_statistics(h), "thresholds_for_patch_size": {}}
    for method in ANALYSIS_METHODS:
        out["thresholds_for_patch_size"][method] = thresholds = {}
        for size in patch_sizes:
            try:
                thresholds[size] = calibrate_threshold(None, docs, size, method, config, entropies=entropies)
            except CalibrationError:  # out of reach for these data and limits: reported as None, by design
                thresholds[size] = None
    if plot:
        global_t = out["thresholds_for_patch_size"]["global"]
        patch_pictures.plot_entropy_histograms({"documents": h}, {"documents": global_t}, plot)
    return out


def analyze_domains(entropy_model, corpora: dict, config: PatchConfig, patch_sizes, plot=None) -> dict:
    """analyze_entropy_distribution's dict form: per domain figures from its training documents, and the
    transfer table on every domain's held-out documents."""
    out = {"domains": {}, "transfer": {m: {s: {} for s in patch_sizes} for m in ANALYSIS_METHODS}}
    held_out, train_h = {}, {}
    for name, docs in corpora.items():
        train, val = split_documents(documents(docs))
        if not train or not val:
            raise DataError(f"{name}: too small to split into training and held-out documents")
        train_h[name] = document_entropies(entropy_model, train)
        held_out[name] = (val, document_entropies(entropy_model, val))
        figures = analyze_entropy_distribution(None, train, config, train_h[name], patch_sizes)
        out["domains"][name] = {**figures, "num_held_out_bytes": sum(map(len, val))}
    for method in ANALYSIS_METHODS:
        for size in patch_sizes:
            for a in corpora:
                t = out["domains"][a]["thresholds_for_patch_size"][method][size]
                cfg = dataclasses.replace(config, method=method, entropy_threshold=t)
                out["transfer"][method][size][a] = {
                    b: None if t is None else mean_patch_size(hv, v, cfg) for b, (v, hv) in held_out.items()}
    if plot:
        thresholds = {k: d["thresholds_for_patch_size"]["global"] for k, d in out["domains"].items()}
        train_h = {k: np.concatenate(v) for k, v in train_h.items()}
        patch_pictures.plot_entropy_histograms(train_h, thresholds, plot)
    return out


def calibrate(config: PatchConfig, entropy_model, train_docs, entropies=None,
              tol: float = 0.05) -> PatchConfig:
    """`config` with a None entropy_threshold resolved so that patches average target_patch_size bytes on
    train_docs (within tol). global and monotonic: calibrate_threshold. global_monotonic, its own
    two-threshold rule: both thresholds at the same quantile q of their scores (H[i], and H[i] - H[i-1]),
    q found by bisection, so the target is reachable whatever monotonic_threshold was. Entropy-free methods
    and configs with a threshold come back unchanged; entropies come from config's cache when not given."""
    if not config.needs_entropy or config.entropy_threshold is not None:
        return config
    docs, target = documents(train_docs), config.target_patch_size
    if entropies is None:
        entropies = cached_entropies(entropy_model, docs, config.cache_dir if config.cache_patches else None)
    if config.method != "global_monotonic":
        t = calibrate_threshold(None, docs, target, config.method, config, entropies, tol)
        return dataclasses.replace(config, entropy_threshold=t)
    hs = [np.asarray(h, dtype=np.float64) for h in entropies]
    h_all = np.concatenate([h[1:] for h in hs] or [np.zeros(0)])  # byte 0 always starts
    d_all = np.concatenate([np.diff(h) for h in hs] or [np.zeros(0)])
    if h_all.size == 0:
        raise CalibrationError("cannot calibrate global_monotonic on documents of at most one byte")

    def at(q: float) -> PatchConfig:  # the fraction q of each score lies at or below its threshold
        return dataclasses.replace(config, entropy_threshold=float(np.quantile(h_all, q, method="lower")),
                                   monotonic_threshold=float(np.quantile(d_all, q, method="lower")))

    def mean(q: float) -> float:  # never decreases as q rises: fewer candidates, longer patches
        return mean_patch_size(hs, docs, at(q))

    lo, hi = 0.0, 1.0
    for _ in range(40):  # q to 1e-12: far below the gap between neighbouring ranks of any real corpus
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if mean(mid) < target else (lo, mid)
    best = min((lo, hi), key=lambda q: abs(mean(q) - target))
    if abs(mean(best) - target) > tol * target:
        raise CalibrationError(f"no global_monotonic thresholds give a mean patch size within {tol:.0%} of "
                               f"{target}: reachable {mean(0.0):.3f} .. {mean(1.0):.3f}, "
                               f"{mean(lo):.3f} -> {mean(hi):.3f} at the jump")
    return at(best)


# ----------------------------------------------------------------------------------------------------
# Command line


def cli_parser(prog: str | None, description: str) -> argparse.ArgumentParser:
    """A parser with the flags both commands share: the entropy model(s), the device, the JSON report."""
    p = argparse.ArgumentParser(prog=prog, description=description,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--entropy_model_path", "--checkpoint", dest="checkpoints", action="append",
                   help="entropy model (entropy_llm.py; default entropy_model.pth); repeat for an ensemble")
    p.add_argument("--combine", choices=COMBINES, help="how an ensemble combines its models (default mean)")
    p.add_argument("--device", help="cpu, cuda, ... (default: cuda when present)")
    p.add_argument("--report", help="write the figures as JSON")
    return p


def cli_model(args):
    """The entropy model the shared flags name, or for several models or a --combine their EntropyEnsemble."""
    device = pick_device(args.device)
    models = [load_entropy_model(path, device) for path in args.checkpoints or ["entropy_model.pth"]]
    one = len(models) == 1 and args.combine is None
    return models[0] if one else EntropyEnsemble(models, args.combine or "mean")


def analyze_main(argv) -> int:
    """`entropy_patcher.py analyze`: analyze_entropy_distribution over one or more domains."""
    p = cli_parser("entropy_patcher.py analyze", analyze_entropy_distribution.__doc__)
    p.add_argument("--data", action="append", required=True,
                   help="a domain: builtin, builtin:code, builtin:prose, a file, a folder or hf:NAME; repeat")
    p.add_argument("--max_bytes", type=int, default=300_000, help="cap on each domain's bytes")
    p.add_argument("--min_patch_size", type=int, default=1)
    p.add_argument("--max_patch_size", type=int, default=128)
    p.add_argument("--plot", help="save a histogram of H per domain (PNG)")
    args = p.parse_args(argv)
    if len(set(args.data)) != len(args.data):
        p.error("each --data once")
    t0 = time.perf_counter()
    config = PatchConfig(min_patch_size=args.min_patch_size, max_patch_size=args.max_patch_size,
                         cache_patches=False)
    model = cli_model(args)
    corpora = {d: load_corpus(d, args.max_bytes) for d in args.data}
    result = analyze_entropy_distribution(model, corpora, config, plot=args.plot)
    print(patch_pictures.format_analysis(result))
    if args.plot:
        print(f"plot: {args.plot}")
    sizes = {"min_patch_size": config.min_patch_size, "max_patch_size": config.max_patch_size}
    write_report(args.report, {**result, "checkpoints": args.checkpoints or ["entropy_model.pth"],
                               "combine": args.combine, "max_bytes": args.max_bytes, **sizes,
                               "wall_s": time.perf_counter() - t0})
    return 0


def patch_main(argv) -> int:
    """`entropy_patcher.py`: patch a text or a corpus and show it (module docstring)."""
    p = cli_parser(None, __doc__)
    src = p.add_mutually_exclusive_group()
    src.add_argument("--text", help="patch this text (UTF-8)")
    src.add_argument("--data", help="builtin (default), a file, a folder, or hf:NAME[:CONFIG]")
    p.add_argument("--max_bytes", type=int, default=100_000, help="cap on --data bytes")
    p.add_argument("--method", choices=METHODS, default="global")
    p.add_argument("--entropy_threshold", "--threshold", dest="entropy_threshold", type=float,
                   help="nats (default 0.6; 0.3 for monotonic)")
    p.add_argument("--monotonic_threshold", type=float, help="global_monotonic's H[i]-H[i-1] threshold")
    p.add_argument("--target_patch_size", type=float, help="calibrate the threshold to this mean patch size")
    for name in ("patch_size", "min_patch_size", "max_patch_size"):
        p.add_argument(f"--{name}", type=int)
    p.add_argument("--batch_size", type=int, help="compute_entropies batch size")
    p.add_argument("--plot", help="save a plot of the first document (PNG; needs the entropy model)")
    p.add_argument("--html", help="save the first document as HTML with patch colours")
    args = p.parse_args(argv)
    if args.entropy_threshold is not None and args.target_patch_size is not None:
        p.error("give --entropy_threshold or --target_patch_size, not both")
    if args.target_patch_size is not None and args.method not in ENTROPY_METHODS:
        p.error(f"--target_patch_size calibrates the entropy methods only ({', '.join(ENTROPY_METHODS)})")
    names = ("monotonic_threshold", "patch_size", "min_patch_size", "max_patch_size", "target_patch_size")
    fields = {k: getattr(args, k) for k in names if getattr(args, k) is not None}
    threshold = args.entropy_threshold
    if threshold is None and args.target_patch_size is None:
        threshold = 0.3 if args.method == "monotonic" else 0.6
    config = PatchConfig(method=args.method, entropy_threshold=threshold, cache_patches=False, **fields)
    docs = ([args.text.encode("utf-8")] if args.text is not None
            else load_corpus(args.data or "builtin", args.max_bytes))
    entropies, bytes_per_s = None, None
    if config.needs_entropy or args.plot:  # the CLI measures entropy speed: it never reads the cache
        model = cli_model(args)
        t0 = time.perf_counter()
        entropies = document_entropies(model, docs, args.batch_size)
        bytes_per_s = sum(map(len, docs)) / max(time.perf_counter() - t0, 1e-9)
    if config.entropy_threshold is None:
        config = calibrate(config, None, docs, entropies)
        print(f"calibrated {config.method} threshold for mean patch size {config.target_patch_size}: "
              f"{config.entropy_threshold:.4f} nats")

    t0 = time.perf_counter()
    doc_lengths = EntropyPatcher(None, config).document_patch_lengths(docs, entropies=entropies)
    patch_s = max(time.perf_counter() - t0, 1e-9)
    shown_t = config.entropy_threshold if config.method in ("global", "global_monotonic") else None
    stats = patch_pictures.show_patching(docs, entropies, doc_lengths, config.method, shown_t, bytes_per_s,
                                         args.plot, args.html)
    gm = config.method == "global_monotonic"
    monotonic = {"monotonic_threshold": config.monotonic_threshold} if gm else {}
    write_report(args.report, {
        "method": config.method, "threshold": config.entropy_threshold if config.needs_entropy else None,
        "entropy_bytes_per_s": bytes_per_s,
        "patching_bytes_per_s": stats["num_bytes"] / patch_s,  # entropies -> lengths alone
        **{k: stats[k] for k in ("num_bytes", "num_patches", "mean_patch_size", "median_patch_size",
                                 "num_documents")},
        "min_patch_size": config.size_bounds[0], "max_patch_size": config.size_bounds[1], **monotonic,
    })
    return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:  # a bad input is one line on stderr (CalibrationError is a ValueError)
        return analyze_main(argv[1:]) if argv[:1] == ["analyze"] else patch_main(argv)
    except (ValueError, DataError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
