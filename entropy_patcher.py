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
min_patch_size does not apply to them (a byte patcher with a minimum of 4 would not be one). Invariants,
asserted where lengths are made: every length is >= 1 and <= max_patch_size, every length but a document's
last is >= the minimum, and the lengths sum to the number of bytes.

Causality: whether byte i starts a patch depends on bytes < i only, so the same rule runs byte by byte
while generating (PatchStream). H[i] is itself a function of bytes < i. The `space` rule of DESIGN.md
("start at the first alphanumeric byte after a non-alphanumeric one", after SpaceByte, Slagle 2024) looks at
byte i itself, which would leak byte i into the patch structure at position i. We use its causal form: byte
i starts a patch when byte i-1 is space-like and byte i-2 is not, i.e. a patch ends after the first
space-like byte that follows a word. Word bytes are ASCII letters and digits and every byte >= 0x80 (so a
UTF-8 character is never split); every other byte is space-like, and the document start counts as
space-like (leading whitespace joins the first patch). b"hello, world" -> b"hello," b" world".

Worked example (global, threshold 1.0, min_patch_size 2):

    byte   t    h    e    _    c    a    t    _    s    a    t
    H     3.0  1.2  0.4  0.2  2.5  1.1  0.3  0.1  2.2  0.9  0.2
    cand   *    *              *    *              *
    start  *                   *                   *              -> b"the " b"cat " b"sat", lengths [4, 4, 3]

(h and a are candidates but their patch would still be shorter than 2 bytes, so they are ignored.)

Shape letters: N bytes of one document, B rows of a batch, T bytes per row, P patches (per row).

    python entropy_patcher.py --checkpoint entropy_model.pth --text "The Byte Latent Transformer groups bytes."
    python entropy_patcher.py --checkpoint entropy_model.pth --text "Hello, world" --plot patches.png --html patches.html
    python entropy_patcher.py --checkpoint entropy_model.pth --data builtin --max_bytes 1000000 --report patcher.json
    python entropy_patcher.py --checkpoint entropy_model.pth --data builtin --target_patch_size 4.5 --method monotonic
    python entropy_patcher.py --method space --text "no entropy model needed for space patching"
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import html
import json
import math
import os
import re
import sys
import time
import warnings
import zipfile
import zlib
from dataclasses import dataclass

import numpy as np
import torch

from byte_data import DataError, load_corpus
from common import atomic_write, pick_device, write_report
from entropy_llm import compute_entropies
from save_entropy_model import CheckpointError, load_entropy_model, model_fingerprint

METHODS = ("global", "monotonic", "global_monotonic", "static", "space", "byte")
ENTROPY_METHODS = ("global", "monotonic", "global_monotonic")  # the methods that read H
CACHE_FIELDS = ("cache_patches", "cache_dir")  # config fields that do not change the patches
ANALYSIS_PATCH_SIZES = (2, 3, 4.5, 6, 8)  # target mean patch sizes of analyze_entropy_distribution

# Word bytes for the `space` rule: ASCII letters and digits, and every byte >= 0x80 (UTF-8 lead and
# continuation bytes), so a multi-byte character is never cut. Every other byte is space-like.
_WORD_BYTE = np.array([(chr(b).isascii() and chr(b).isalnum()) or b >= 0x80 for b in range(256)])  # (256,) bool


@dataclass
class PatchConfig:
    method: str = "global"  # one of METHODS (module docstring)
    entropy_threshold: float = 0.6  # nats; the threshold of global and monotonic, the H[i] one of global_monotonic
    monotonic_threshold: float = 0.3  # nats; global_monotonic only: the H[i] - H[i-1] threshold
    patch_size: int = 4  # bytes; static only: every patch has this length (the last may be shorter)
    min_patch_size: int = 4  # bytes; a start is ignored while the current patch is shorter (not static/byte)
    max_patch_size: int = 128  # bytes; a start is forced when the current patch reaches this length
    cache_patches: bool = True  # EntropyPatcher.process_data keeps lengths on disk, keyed by data+model+config
    cache_dir: str = ".patch_cache"  # folder of that cache

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"unknown patching method {self.method!r}; choose one of {', '.join(METHODS)}")
        for name in ("patch_size", "min_patch_size", "max_patch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise ValueError(f"{name} must be an integer number of bytes, got {v!r}")
            if v < 1:
                raise ValueError(f"{name} must be >= 1 byte, got {v}")
            setattr(self, name, int(v))
        if self.min_patch_size > self.max_patch_size:
            raise ValueError(f"min_patch_size ({self.min_patch_size}) > max_patch_size ({self.max_patch_size})")
        if self.method == "static" and self.patch_size > self.max_patch_size:
            raise ValueError(f"static patch_size ({self.patch_size}) > max_patch_size ({self.max_patch_size})")
        for name in ("entropy_threshold", "monotonic_threshold"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or math.isnan(v):
                raise ValueError(f"{name} must be a number of nats, got {v!r}")
            setattr(self, name, float(v))  # any sign: a threshold on H[i] - H[i-1] may well be negative

    @property
    def needs_entropy(self) -> bool:
        """Whether this method reads the entropy model's H (else patches depend on the bytes only)."""
        return self.method in ENTROPY_METHODS

    @property
    def size_bounds(self) -> tuple[int, int]:
        """(min, max) patch length the scan enforces; static and byte fix every length."""
        if self.method == "byte":
            return 1, 1
        if self.method == "static":
            return self.patch_size, self.patch_size
        return self.min_patch_size, self.max_patch_size

    def patch_key(self) -> dict:
        """The fields that decide the patches (everything but the cache settings)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in CACHE_FIELDS}


# ----------------------------------------------------------------------------------------------------
# Pure functions: entropies and bytes -> candidate starts -> patch lengths


def _byte_array(data) -> np.ndarray:
    """bytes-like, numpy or torch -> integer array of byte values (no copy for bytes)."""
    if isinstance(data, str):
        raise TypeError("expected bytes, got str; encode it first, e.g. text.encode('utf-8')")
    if isinstance(data, (bytes, bytearray, memoryview)):
        return np.frombuffer(data, dtype=np.uint8)
    if isinstance(data, torch.Tensor):
        data = data.detach().cpu().numpy()
    x = np.asarray(data)
    if x.dtype != np.uint8:
        if not np.issubdtype(x.dtype, np.integer):
            raise TypeError(f"byte values must be integers, got dtype {x.dtype}")
        if x.size and (x.min() < 0 or x.max() > 255):
            raise ValueError("byte values must lie in 0..255")
    return x


def _entropy_array(entropies) -> np.ndarray:
    """-> float64 array. Every comparison is made in float64, so numpy, torch and the streaming form
    (Python floats) agree exactly, also for thresholds that float32 cannot represent."""
    if isinstance(entropies, torch.Tensor):
        return entropies.detach().cpu().double().numpy()
    return np.asarray(entropies, dtype=np.float64)


def patch_start_mask(entropies, data, config: PatchConfig) -> np.ndarray:
    """Candidate patch starts before the min/max scan: bool (..., N), True where byte i may start a patch.

    entropies: H in nats, (N,) or (B, N), or None for methods that do not read it. data: the bytes (bytes,
    or an integer array (N,) / (B, N)), or None for methods that do not read them. Rows of a batch are
    independent documents; entry i depends on H[<= i] and bytes < i only. Byte 0 is always a start.
    """
    h = None if entropies is None else _entropy_array(entropies)
    x = None if data is None else _byte_array(data)
    method = config.method
    if h is None and method in ENTROPY_METHODS:
        raise ValueError(f"patching method {method!r} needs entropies")
    if x is None and method == "space":
        raise ValueError("patching method 'space' needs the bytes")
    if h is not None and x is not None and h.shape != x.shape:
        raise ValueError(f"entropies {h.shape} and bytes {x.shape} differ in shape")
    ref = h if h is not None else x
    if ref is None:
        raise ValueError("give entropies or bytes (the mask needs at least a length)")
    mask = np.zeros(ref.shape, dtype=bool)  # (..., N)
    if ref.shape[-1] == 0:
        return mask
    t = config.entropy_threshold
    if method == "global":
        mask[...] = h > t
    elif method == "monotonic":
        mask[..., 1:] = np.diff(h, axis=-1) > t  # H[i] - H[i-1], (..., N-1)
    elif method == "global_monotonic":
        mask[..., 1:] = (h[..., 1:] > t) & (np.diff(h, axis=-1) > config.monotonic_threshold)
    elif method == "static":
        mask[..., ::config.patch_size] = True
    elif method == "space":
        space = ~_WORD_BYTE[x]  # (..., N) True for space-like bytes
        # byte i starts when byte i-1 is space-like and byte i-2 is not; byte 1 never does, because the
        # document start (byte -1) counts as space-like
        mask[..., 2:] = space[..., 1:-1] & ~space[..., :-2]
    elif method == "byte":
        mask[...] = True
    mask[..., 0] = True
    return mask


def _check_lengths(lengths: np.ndarray, n: int, lo: int, hi: int):
    """The patching invariants (module docstring), for the lengths of one document of n bytes."""
    assert int(lengths.sum()) == n, f"patch lengths sum to {int(lengths.sum())}, not to the {n} bytes"
    if len(lengths):
        assert lengths.min() >= 1 and lengths.max() <= hi, f"a patch length is outside [1, {hi}]"
        assert len(lengths) == 1 or lengths[:-1].min() >= lo, f"a patch before the last is shorter than {lo}"


def _scan_starts(mask: np.ndarray, lo: int, hi: int) -> np.ndarray:
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
        cand = np.flatnonzero(mask)
        if cand.size == 0 or cand[0] != 0:
            cand = np.concatenate([[0], cand])
        gaps = np.diff(cand, append=n)  # (K,) bytes from each candidate to the next (or the end)
        extra = (gaps - 1) // hi  # forced starts inside each gap
        if not extra.any():
            return cand.astype(np.int64)
        base = np.repeat(cand, extra)  # the candidate each forced start follows
        k = np.arange(base.size) - np.repeat(np.cumsum(extra) - extra, extra) + 1  # 1, 2, ... within a gap
        return np.sort(np.concatenate([cand, base + k * hi])).astype(np.int64)
    # General case: a jump table next[s] for every s, then follow it from 0. The loop runs once per
    # patch (not per byte) through a memoryview, which hands out Python ints cheaply.
    dtype = np.int32 if n + hi < 2**31 else np.int64
    pos = np.arange(n + 1, dtype=dtype)
    first = np.where(np.append(mask, True), pos, n).astype(dtype)  # (N+1,) sentinel candidate at n
    first = np.minimum.accumulate(first[::-1])[::-1]  # first[j] = first candidate >= j (n if none)
    nxt = np.minimum(first[np.minimum(pos[:n] + lo, n)], pos[:n] + hi)  # (N,) values in (s, n]
    jump = memoryview(np.ascontiguousarray(nxt))
    starts = np.empty((n - 1) // lo + 1, dtype=np.int64)  # all but the last patch are >= lo
    out = memoryview(starts)
    s = p = 0
    while s < n:
        out[p] = s
        p += 1
        s = jump[s]
    return starts[:p]


def starts_to_lengths(mask, config: PatchConfig) -> np.ndarray:
    """Candidate starts (N,) bool -> patch lengths (P,) int64 after the min/max scan (invariants asserted)."""
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 1:
        raise ValueError(f"starts_to_lengths takes one document's mask (N,), got shape {mask.shape}")
    lo, hi = config.size_bounds
    n = mask.shape[0]
    lengths = np.diff(_scan_starts(mask, lo, hi), append=n)  # (P,)
    _check_lengths(lengths, n, lo, hi)
    return lengths


def patch_lengths_from_entropies(entropies, data, config: PatchConfig) -> np.ndarray:
    """One document: H (N,) nats (or None) and its bytes (or None) -> patch lengths (P,) int64."""
    return starts_to_lengths(patch_start_mask(entropies, data, config), config)


def split_patches(data, lengths) -> list[bytes]:
    """Cut bytes into patches of the given lengths."""
    data = bytes(data)
    ends = np.cumsum(lengths).tolist()
    if (ends[-1] if ends else 0) != len(data):
        raise ValueError(f"patch lengths sum to {ends[-1] if ends else 0}, not to the {len(data)} bytes")
    return [data[a:b] for a, b in zip([0] + ends[:-1], ends)]


def patch_lengths_batch(entropies, data, valid_lengths, config: PatchConfig) -> torch.Tensor:
    """A batch of documents: H (B, T) and bytes (B, T) tensors (either None if the method does not read it),
    valid_lengths (B,) (None = all T) -> patch lengths (B, P_max) long, right-padded with zeros.

    Row b's lengths sum to valid_lengths[b]; bytes past it are ignored (the rule is causal, so padding
    cannot move an earlier start). The masks are computed for the whole batch at once; the min/max scan
    runs per row on the CPU.
    """
    ref = data if data is not None else entropies
    if ref is None:
        raise ValueError("give entropies or bytes")
    B, T = ref.shape
    device = ref.device if isinstance(ref, torch.Tensor) else torch.device("cpu")
    if valid_lengths is None:
        valid = np.full(B, T, dtype=np.int64)
    else:
        valid = np.asarray(valid_lengths.cpu() if isinstance(valid_lengths, torch.Tensor) else valid_lengths)
        valid = valid.astype(np.int64).reshape(B)
    if valid.size and (valid.min() < 0 or valid.max() > T):
        raise ValueError(f"valid_lengths must lie in 0..{T}")
    x = None
    if data is not None:  # padding may hold any value (e.g. -1): zero it so the byte table lookup is valid
        x = data.detach().cpu().numpy() if isinstance(data, torch.Tensor) else np.asarray(data)
        x = np.where(np.arange(T) < valid[:, None], x, 0)  # (B, T)
    mask = patch_start_mask(entropies, x, config)  # (B, T)
    rows = [starts_to_lengths(mask[b, :valid[b]], config) for b in range(B)]
    out = np.zeros((B, max((len(r) for r in rows), default=0)), dtype=np.int64)  # (B, P_max)
    for b, r in enumerate(rows):
        out[b, :len(r)] = r
    return torch.from_numpy(out).to(device)


class PatchStream:
    """The patching rule one byte at a time, for generation (BLTModel.generate).

    Before byte i is known, call next_starts_patch(H[i], bytes < i): it says whether byte i opens a new
    patch. H[i] comes from the entropy model run on bytes < i (None for methods that do not read it, see
    needs_entropy). The stream remembers the current patch length and H[i-1]; feeding a whole sequence
    gives exactly the lengths of patch_lengths_from_entropies. One stream per document; reset() restarts.
    """

    def __init__(self, config: PatchConfig):
        self.config = config
        self.lo, self.hi = config.size_bounds
        self.reset()

    def reset(self):
        self.position = 0  # index i of the next byte
        self.patch_length = 0  # bytes in the current (open) patch
        self.prev_entropy: float | None = None  # H[i-1], for the monotonic rules

    @property
    def needs_entropy(self) -> bool:
        return self.config.needs_entropy

    def next_starts_patch(self, entropy: float | None = None, history=b"") -> bool:
        """Whether byte i (= the number of calls so far) starts a patch. entropy = H[i]; history = bytes < i
        of this document (only its last two bytes are read, by the space rule)."""
        c, i = self.config, self.position
        h = None
        if c.needs_entropy:
            if entropy is None:
                raise ValueError(f"patching method {c.method!r} needs H[i] for every byte")
            h = float(entropy)
        if i == 0 or self.patch_length >= self.hi:
            start = True
        elif self.patch_length < self.lo:
            start = False
        else:
            start = self._candidate(i, h, history)
        self.patch_length = 1 if start else self.patch_length + 1
        self.prev_entropy = h
        self.position += 1
        return start

    def _candidate(self, i: int, h: float | None, history) -> bool:
        """The same rules as patch_start_mask, for one position i >= 1 (float64 arithmetic there too)."""
        c = self.config
        if c.method == "global":
            return h > c.entropy_threshold
        if c.method == "monotonic":
            return h - self.prev_entropy > c.entropy_threshold
        if c.method == "global_monotonic":
            return h > c.entropy_threshold and h - self.prev_entropy > c.monotonic_threshold
        if c.method == "static":
            return i % c.patch_size == 0
        if c.method == "space":
            if len(history) < min(i, 2):
                raise ValueError("the space rule needs the last two bytes of the history")
            if i == 1:  # the document start counts as space-like
                return False
            return bool(not _WORD_BYTE[int(history[-1])] and _WORD_BYTE[int(history[-2])])
        return True  # byte


# ----------------------------------------------------------------------------------------------------
# The patcher: an entropy model plus a PatchConfig, with batching across documents and a disk cache


def _compute_entropies(model, docs: list[bytes], batch_size: int | None = None, show_progress=None) -> list[np.ndarray]:
    """H for each document, from one batched compute_entropies call over all of them."""
    if model is None:
        raise ValueError("this patching method needs an entropy model (or precomputed entropies)")
    out = [np.zeros(0, dtype=np.float32) for _ in docs]
    idx = [k for k, d in enumerate(docs) if len(d)]
    if idx:
        kwargs = {} if batch_size is None else {"batch_size": batch_size}
        ents = compute_entropies(model, [docs[k] for k in idx], show_progress=show_progress, **kwargs)
        for k, h in zip(idx, ents):
            assert len(h) == len(docs[k]), f"compute_entropies gave {len(h)} values for {len(docs[k])} bytes"
            out[k] = h
    return out


def _documents(byte_sequences) -> list[bytes]:
    if isinstance(byte_sequences, (bytes, bytearray, memoryview, str)):
        raise TypeError("expected a list of documents (bytes); wrap a single document as [doc]")
    docs = [bytes(d) if isinstance(d, (bytearray, memoryview)) else d for d in byte_sequences]
    for d in docs:
        if not isinstance(d, bytes):
            raise TypeError(f"documents must be bytes, got {type(d).__name__}")
    return docs


def patch_statistics(doc_lengths: list[np.ndarray]) -> dict:
    """Figures over the patch lengths of many documents (JSON-ready)."""
    lengths = np.concatenate(doc_lengths) if doc_lengths else np.zeros(0, dtype=np.int64)
    counts = np.bincount(lengths) if lengths.size else np.zeros(0, dtype=np.int64)
    return {
        "num_documents": len(doc_lengths),
        "num_bytes": int(lengths.sum()),
        "num_patches": int(lengths.size),
        "mean_patch_size": float(lengths.mean()) if lengths.size else 0.0,
        "median_patch_size": float(np.median(lengths)) if lengths.size else 0.0,
        "max_patch_size_seen": int(lengths.max()) if lengths.size else 0,
        "size_histogram": {int(k): int(v) for k, v in enumerate(counts) if v},  # patch length -> count
    }


class EntropyPatcher:
    """An entropy model and a PatchConfig. Either of:

        EntropyPatcher(entropy_model, threshold=0.6, method="global")   # other PatchConfig fields as keywords
        EntropyPatcher(entropy_model, patch_config)

    entropy_model may be None for static, space and byte, or when every call passes precomputed entropies.
    """

    def __init__(self, entropy_model=None, config: PatchConfig | None = None, *, threshold: float | None = None,
                 method: str | None = None, batch_size: int | None = None, **config_fields):
        if config is None:
            config = PatchConfig()
        elif not isinstance(config, PatchConfig):
            raise TypeError(f"the second argument is a PatchConfig, got {type(config).__name__} "
                            "(pass a threshold as threshold=...)")
        if threshold is not None:
            config_fields["entropy_threshold"] = threshold
        if method is not None:
            config_fields["method"] = method
        self.config = dataclasses.replace(config, **config_fields) if config_fields else config
        self.entropy_model = entropy_model
        self.batch_size = batch_size  # passed to compute_entropies (None = its default)

    # one document

    def entropies(self, byte_sequence) -> np.ndarray:
        """H (N,) float32 nats for one document."""
        return _compute_entropies(self.entropy_model, [_byte_array(byte_sequence).tobytes()], self.batch_size)[0]

    def patch_lengths(self, byte_sequence, entropies=None) -> np.ndarray:
        """(P,) int64 patch lengths of one document (entropies are computed unless given or not needed)."""
        x = _byte_array(byte_sequence)
        if entropies is None and self.config.needs_entropy and len(x):
            entropies = self.entropies(byte_sequence)
        if entropies is None and self.config.needs_entropy:  # empty input
            entropies = np.zeros(0, dtype=np.float32)
        return patch_lengths_from_entropies(entropies, x, self.config)

    def create_patches(self, byte_sequence, entropies=None) -> list[bytes]:
        """One document -> its patches; b"".join(patches) == byte_sequence."""
        return split_patches(byte_sequence, self.patch_lengths(byte_sequence, entropies))

    # many documents

    def document_patch_lengths(self, byte_sequences, cache_key: str | None = None, entropies=None,
                               show_progress=None) -> list[np.ndarray]:
        """Patch lengths of every document (what training reads), cached on disk when cache_patches."""
        return self._document_lengths(_documents(byte_sequences), cache_key, entropies, show_progress)[0]

    def process_data(self, byte_sequences, cache_key: str | None = None, entropies=None,
                     show_progress=None) -> tuple[list[list[bytes]], dict]:
        """Documents -> (patches per document, stats). Entropies are computed in one batched call over all
        documents; cache_key is a readable label for the cache file, never a substitute for its hash."""
        docs = _documents(byte_sequences)
        doc_lengths, cache_hit = self._document_lengths(docs, cache_key, entropies, show_progress)
        patches = [split_patches(d, n) for d, n in zip(docs, doc_lengths)]
        stats = patch_statistics(doc_lengths)
        stats.update(method=self.config.method, cache_hit=cache_hit)
        return patches, stats

    def _document_lengths(self, docs, cache_key, entropies, show_progress) -> tuple[list[np.ndarray], bool]:
        # given entropies are the expensive part already done: no cache then
        path = self.cache_path(docs, cache_key) if self.config.cache_patches and entropies is None else None
        if path is not None:
            cached = _read_cache(path, docs, self.config)
            if cached is not None:
                return cached, True
        if self.config.needs_entropy:
            if entropies is None:
                entropies = _compute_entropies(self.entropy_model, docs, self.batch_size, show_progress)
            if len(entropies) != len(docs):
                raise ValueError(f"{len(entropies)} entropy arrays for {len(docs)} documents")
        else:
            entropies = [None] * len(docs)
        lengths = [patch_lengths_from_entropies(h, d, self.config) for h, d in zip(entropies, docs)]
        if path is not None:
            _write_cache(path, lengths)
        return lengths, False

    def cache_path(self, docs: list[bytes], cache_key: str | None = None) -> str:
        """cache_dir/LABEL-HASH.npz, HASH = sha256 over the documents, the model's weights and config,
        and the patch config (without the cache fields)."""
        h = hashlib.sha256(b"entropy_patcher lengths v1\0")
        h.update(json.dumps(self.config.patch_key(), sort_keys=True).encode())
        if self.config.needs_entropy:
            if self.entropy_model is None:
                raise ValueError("this patching method needs an entropy model (or precomputed entropies)")
            h.update(model_fingerprint(self.entropy_model).encode())
        h.update(len(docs).to_bytes(8, "little"))
        for d in docs:  # lengths first, so document boundaries are part of the key
            h.update(len(d).to_bytes(8, "little"))
            h.update(d)
        label = re.sub(r"[^A-Za-z0-9_.-]+", "_", cache_key)[:48] if cache_key else "patches"
        return os.path.join(self.config.cache_dir, f"{label}-{h.hexdigest()[:32]}.npz")


def _write_cache(path: str, doc_lengths: list[np.ndarray]):
    lengths = np.concatenate(doc_lengths) if doc_lengths else np.zeros(0, dtype=np.int64)
    counts = np.array([len(n) for n in doc_lengths], dtype=np.int64)

    def write(tmp):
        with open(tmp, "wb") as f:  # a file object, so numpy does not append .npz to the temp name
            np.savez(f, lengths=lengths.astype(np.int32), counts=counts)

    atomic_write(path, write)


def _read_cache(path: str, docs: list[bytes], config: PatchConfig) -> list[np.ndarray] | None:
    """Cached lengths, or None when there is no file or it cannot be trusted (then it is recomputed)."""
    if not os.path.exists(path):
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            lengths, counts = z["lengths"].astype(np.int64), z["counts"].astype(np.int64)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        warnings.warn(f"patch cache {path} is unreadable ({type(e).__name__}: {e}); recomputing")
        return None
    lo, hi = config.size_bounds
    ok = (lengths.ndim == 1 and counts.shape == (len(docs),) and (counts >= 0).all()
          and int(counts.sum()) == lengths.size)
    if ok:
        doc_lengths = np.split(lengths, np.cumsum(counts)[:-1]) if len(docs) else []
        ok = all(int(n.sum()) == len(d) and (n.size == 0 or (n.min() >= 1 and n.max() <= hi))
                 and (n.size < 2 or n[:-1].min() >= lo) for n, d in zip(doc_lengths, docs))
    if not ok:
        warnings.warn(f"patch cache {path} does not fit the documents; recomputing")
        return None
    return doc_lengths


# ----------------------------------------------------------------------------------------------------
# Thresholds: the entropy distribution and calibration to a target mean patch size


class CalibrationError(ValueError):
    """No threshold reaches the target mean patch size; the message says what is reachable."""


def _mean_patch_size(entropies: list[np.ndarray], docs: list[bytes], config: PatchConfig) -> float:
    n_bytes = sum(len(d) for d in docs)
    n_patches = sum(len(patch_lengths_from_entropies(h, d, config)) for h, d in zip(entropies, docs))
    return n_bytes / n_patches if n_patches else 0.0


def calibrate_threshold(entropy_model, byte_sequences, target_mean_patch_size: float, method: str = "global",
                        config: PatchConfig | None = None, entropies=None, tol: float = 0.05) -> float:
    """The entropy_threshold at which `method` (global or monotonic) gives a mean patch size (bytes per
    patch over all documents) within tol of the target, under config's min/max sizes (default PatchConfig).

    Bisection over the distinct values of the score (H, or H[i] - H[i-1]): the mean patch size only changes
    when the threshold crosses one, and never decreases as the threshold rises. Returns a threshold halfway
    between two neighbouring values, so float rounding cannot move a boundary. Pass entropies (one array
    per document) to skip the model. Raises CalibrationError when the target is out of reach.
    """
    if method not in ("global", "monotonic"):
        raise ValueError(f"calibration supports the 'global' and 'monotonic' methods, not {method!r}")
    config = dataclasses.replace(config or PatchConfig(), method=method)
    docs = _documents(byte_sequences)
    if entropies is None:
        entropies = _compute_entropies(entropy_model, docs)
    entropies = [np.asarray(h, dtype=np.float64) for h in entropies]
    if sum(len(d) for d in docs) == 0:
        raise CalibrationError("cannot calibrate a threshold on empty data")
    scores = [h[1:] if method == "global" else np.diff(h) for h in entropies]  # byte 0 always starts
    vals = np.unique(np.concatenate(scores))
    vals = vals[np.isfinite(vals)]

    def threshold(k: int) -> float:  # k = -1: below every value; k = K-1: at the top (no candidates)
        if vals.size == 0:
            return config.entropy_threshold
        if k < 0:
            return float(vals[0] - 1e-3 * max(1.0, abs(vals[0])))
        if k == vals.size - 1:
            return float(vals[-1] + 1e-3 * max(1.0, abs(vals[-1])))
        mid = float(vals[k] + (vals[k + 1] - vals[k]) / 2)
        return mid if mid < vals[k + 1] else float(vals[k])

    means: dict[int, float] = {}

    def mean_at(k: int) -> float:  # each evaluation is a full scan over the data: remember them
        if k not in means:
            means[k] = _mean_patch_size(entropies, docs, dataclasses.replace(config, entropy_threshold=threshold(k)))
        return means[k]

    lo_k, hi_k = -1, vals.size - 1
    low, high = mean_at(lo_k), mean_at(hi_k)
    if target_mean_patch_size >= high:
        best = hi_k
    elif target_mean_patch_size <= low:
        best = lo_k
    else:  # invariant: mean_at(lo_k) < target <= mean_at(hi_k)
        while hi_k - lo_k > 1:
            mid = (lo_k + hi_k) // 2
            if mean_at(mid) < target_mean_patch_size:
                lo_k = mid
            else:
                hi_k = mid
        best = min((lo_k, hi_k), key=lambda k: abs(mean_at(k) - target_mean_patch_size))
    got = mean_at(best)
    if abs(got - target_mean_patch_size) > tol * target_mean_patch_size:
        lo_sz, hi_sz = config.size_bounds
        if target_mean_patch_size > high:
            why = (f"the largest reachable is {high:.3f} (no entropy starts at all; max_patch_size={hi_sz} "
                   "and document ends bound it)")
        elif target_mean_patch_size < low:
            why = f"the smallest reachable is {low:.3f} (every byte a candidate, min_patch_size={lo_sz})"
        else:
            why = (f"the mean patch size jumps past it ({mean_at(lo_k):.3f} -> {mean_at(hi_k):.3f} between "
                   f"thresholds {threshold(lo_k):.6g} and {threshold(hi_k):.6g}; tied entropy values)")
        raise CalibrationError(f"no {method} threshold gives a mean patch size within {tol:.0%} of "
                               f"{target_mean_patch_size}: {why}")
    return threshold(best)


def analyze_entropy_distribution(entropy_model, byte_sequences, config: PatchConfig | None = None,
                                 entropies=None) -> dict:
    """Mean, std and percentiles (10, 25, 50, 75, 90, 95) of H in nats over all bytes, and the `global`
    threshold reaching each mean patch size in ANALYSIS_PATCH_SIZES (None where out of reach).

    The thresholds use config's size limits; the default is min_patch_size=1 (max 128), so they show what
    the entropies alone do; with the default minimum of 4, sizes 2 and 3 could not be reached at all.
    """
    docs = _documents(byte_sequences)
    if entropies is None:
        entropies = _compute_entropies(entropy_model, docs)
    config = config or PatchConfig(min_patch_size=1)
    h = np.concatenate([np.asarray(e, dtype=np.float64) for e in entropies]) if entropies else np.zeros(0)
    out = {"num_bytes": int(h.size), "mean": float(h.mean()) if h.size else 0.0,
           "std": float(h.std()) if h.size else 0.0,
           "percentiles": {p: float(np.percentile(h, p)) if h.size else 0.0 for p in (10, 25, 50, 75, 90, 95)},
           "thresholds_for_patch_size": {}}
    for size in ANALYSIS_PATCH_SIZES:
        try:
            t = calibrate_threshold(None, docs, size, "global", config, entropies=entropies)
        except CalibrationError:  # out of reach for these data and limits: reported as None, by design
            t = None
        out["thresholds_for_patch_size"][size] = t
    return out


# ----------------------------------------------------------------------------------------------------
# Pictures: a Figure-4-style plot, an HTML page, and patches in the terminal


def _utf8_units(data: bytes) -> list[tuple[int, int, str]]:
    """(start, end, text) per character; a byte that is not part of valid UTF-8 is one U+FFFD unit."""
    units, i, n = [], 0, len(data)
    while i < n:  # display only: bounded by the caller's max_bytes
        b = data[i]
        k = 1 if b < 0x80 else 2 if 0xC2 <= b <= 0xDF else 3 if 0xE0 <= b <= 0xEF else 4 if 0xF0 <= b <= 0xF4 else 0
        if k:
            try:
                units.append((i, i + k, data[i:i + k].decode("utf-8")))
                i += k
                continue
            except UnicodeDecodeError:
                pass
        units.append((i, i + 1, "\ufffd"))
        i += 1
    return units


_VISIBLE = {ord(" "): "·", ord("\n"): "↵", ord("\t"): "→", ord("\r"): "␍"}
_VISIBLE.update({c: f"\\x{c:02x}" for c in list(range(32)) + [127] if c not in _VISIBLE})


def _visible(text: str) -> str:
    """Whitespace and control characters made visible (space -> ·, newline -> ↵, tab -> →)."""
    return text.translate(_VISIBLE)


def format_patches(patches, sep: str = "▏") -> str:
    """Patches (list of bytes) as one line of text, `sep` between patches and whitespace made visible.
    A patch that cuts a UTF-8 character shows U+FFFD on both sides of the cut."""
    return sep.join(_visible(bytes(p).decode("utf-8", errors="replace")) for p in patches)


def plot_entropies(data, entropies, lengths, threshold, path, max_bytes: int = 300, title: str | None = None):
    """Save a plot of H per byte (nats), the threshold (None: no line), the patch boundaries (vertical lines)
    and the characters under the x axis, as in the BLT paper's Figure 4. Shows the first max_bytes bytes."""
    from matplotlib.figure import Figure  # here: only plots need matplotlib; Figure avoids pyplot's global state

    data = bytes(data)
    h = np.asarray(entropies, dtype=np.float64)
    lengths = np.asarray(lengths, dtype=np.int64)
    if h.shape != (len(data),) or int(lengths.sum()) != len(data):
        raise ValueError("plot_entropies needs one entropy per byte and lengths summing to the bytes")
    n = min(len(data), max_bytes)
    starts = np.cumsum(lengths) - lengths  # (P,) first byte of each patch
    starts = starts[(starts > 0) & (starts < n)]
    labels = [""] * n
    for a, _, text in _utf8_units(data[:n]):
        labels[a] = {" ": "·", "\n": "\\n", "\t": "\\t", "\r": "\\r"}.get(text, _visible(text))
    fig = Figure(figsize=(min(max(8.0, 0.13 * n + 1.5), 60.0), 3.6))  # about one character width per byte
    ax = fig.add_subplot()
    x = np.arange(n)
    ax.plot(x, h[:n], marker="o", markersize=2.5, linewidth=1.0, color="tab:blue", label="entropy H[i]")
    if threshold is not None:
        ax.axhline(threshold, color="tab:red", linestyle="--", linewidth=1.0, label=f"threshold {threshold:.4g}")
    if starts.size:
        ax.vlines(starts - 0.5, 0, 1, transform=ax.get_xaxis_transform(), color="0.45", linewidth=0.8,
                  label="patch start")
    ax.set_xticks(x)
    ax.set_xticklabels(labels, fontsize=7, family="monospace")
    ax.tick_params(axis="x", length=0)
    ax.set_xlim(-0.5, max(n, 1) - 0.5)
    ax.set_ylabel("entropy (nats)")
    note = f" (first {n} of {len(data)} bytes shown)" if n < len(data) else ""
    ax.set_title((title or f"{len(lengths)} patches over {len(data)} bytes") + note, fontsize=9)
    if n:
        ax.legend(loc="upper right", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def write_html(data, entropies, lengths, path, max_bytes: int = 100_000, title: str = "entropy patches"):
    """Save the text as HTML with alternating patch colours; hovering a character shows its bytes' H
    (entropies may be None). Invalid UTF-8 shows as U+FFFD. Shows the first max_bytes bytes."""
    data = bytes(data)
    lengths = np.asarray(lengths, dtype=np.int64)
    h = None if entropies is None else np.asarray(entropies, dtype=np.float64)
    if int(lengths.sum()) != len(data) or (h is not None and h.shape != (len(data),)):
        raise ValueError("write_html needs lengths summing to the bytes and one entropy per byte")
    n = min(len(data), max_bytes)
    # characters are decoded over the whole text, so a patch boundary inside a multi-byte character does
    # not garble it: the character is shown whole, in the patch of its first byte, and its tip says so
    patch_of = np.repeat(np.arange(len(lengths)), lengths)  # (N,) patch index of every byte
    groups: dict[int, list[str]] = {}
    for a, b, text in _utf8_units(data[:n]):
        tip = f"byte {a}" + ("" if b - a == 1 else f"-{b - 1}")
        if h is not None:
            tip += ": H = " + ", ".join(f"{v:.3f}" for v in h[a:b]) + " nats"
        if patch_of[a] != patch_of[b - 1]:
            tip += " (a patch starts inside this character)"
        groups.setdefault(int(patch_of[a]), []).append(f'<span title="{html.escape(tip)}">{html.escape(text)}</span>')
    parts = [f'<span class="p{j % 2}">{"".join(spans)}</span>' for j, spans in groups.items()]
    note = f"<p>first {n} of {len(data)} bytes shown</p>" if n < len(data) else ""
    mean = len(data) / len(lengths) if len(lengths) else 0.0
    page = (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>\n"
            "<style>body{font-family:sans-serif} .text{font-family:monospace;white-space:pre-wrap;"
            "line-height:1.6} .p0{background:#cfe3ff} .p1{background:#ffe3a8}</style></head><body>\n"
            f"<p>{len(lengths)} patches over {len(data)} bytes, mean {mean:.2f} bytes per patch; "
            f"hover a character for its entropy.</p>{note}\n<div class=\"text\">{''.join(parts)}</div>\n"
            "</body></html>\n")
    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(page)

    atomic_write(path, write)


# ----------------------------------------------------------------------------------------------------
# Command line


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group()
    src.add_argument("--text", help="patch this text (UTF-8)")
    src.add_argument("--data", help="builtin (default), a file, a folder, or hf:NAME[:CONFIG]")
    p.add_argument("--max_bytes", type=int, default=100_000, help="cap on --data bytes")
    p.add_argument("--checkpoint", default="entropy_model.pth", help="entropy model (entropy_llm.py)")
    p.add_argument("--method", choices=METHODS, default="global")
    p.add_argument("--threshold", type=float, help="entropy_threshold in nats (default 0.6; 0.3 for monotonic)")
    p.add_argument("--monotonic_threshold", type=float, help="global_monotonic's H[i]-H[i-1] threshold")
    p.add_argument("--target_patch_size", type=float, help="calibrate the threshold to this mean patch size")
    p.add_argument("--patch_size", type=int, help="static patch length")
    p.add_argument("--min_patch_size", type=int)
    p.add_argument("--max_patch_size", type=int)
    p.add_argument("--batch_size", type=int, help="compute_entropies batch size")
    p.add_argument("--device", help="cpu, cuda, ... (default: cuda when present)")
    p.add_argument("--plot", help="save a plot of the first document (PNG; needs the entropy model)")
    p.add_argument("--html", help="save the first document as HTML with patch colours")
    p.add_argument("--report", help="write the figures as JSON")
    args = p.parse_args(argv)
    if args.threshold is not None and args.target_patch_size is not None:
        p.error("give --threshold or --target_patch_size, not both")
    if args.target_patch_size is not None and args.method not in ("global", "monotonic"):
        p.error("--target_patch_size calibrates the global and monotonic methods only")

    fields = {k: getattr(args, k) for k in ("monotonic_threshold", "patch_size", "min_patch_size", "max_patch_size")
              if getattr(args, k) is not None}
    threshold = args.threshold if args.threshold is not None else 0.3 if args.method == "monotonic" else 0.6
    try:  # the CLI measures entropy speed, so it always computes rather than reading the cache
        config = PatchConfig(method=args.method, entropy_threshold=threshold, cache_patches=False, **fields)
        if args.text is not None:
            docs = [args.text.encode("utf-8")]
        else:
            docs = load_corpus(args.data or "builtin", args.max_bytes)
    except (ValueError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    num_bytes = sum(len(d) for d in docs)

    entropies, bytes_per_s = None, None
    if config.needs_entropy or args.target_patch_size is not None or args.plot:
        try:
            model = load_entropy_model(args.checkpoint, pick_device(args.device))
        except CheckpointError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        t0 = time.perf_counter()
        entropies = _compute_entropies(model, docs, args.batch_size, show_progress=None)
        elapsed = time.perf_counter() - t0
        bytes_per_s = num_bytes / elapsed if elapsed > 0 else None
    if args.target_patch_size is not None:
        try:
            threshold = calibrate_threshold(None, docs, args.target_patch_size, config.method, config, entropies)
        except CalibrationError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        config = dataclasses.replace(config, entropy_threshold=threshold)
        print(f"calibrated {config.method} threshold for mean patch size {args.target_patch_size}: "
              f"{threshold:.4f} nats")

    t0 = time.perf_counter()
    patcher = EntropyPatcher(None, config)
    doc_lengths = patcher.document_patch_lengths(docs, entropies=entropies if config.needs_entropy else None)
    patch_s = time.perf_counter() - t0
    stats = patch_statistics(doc_lengths)

    patches = split_patches(docs[0], doc_lengths[0])  # the first document, its first ~2000 bytes shown
    k = max(1, int(np.searchsorted(np.cumsum(doc_lengths[0]), 2000, side="right")))
    print(format_patches(patches[:k]) + (" ..." if k < len(patches) else ""))
    speed = f", entropy model {bytes_per_s:,.0f} bytes/s" if bytes_per_s else ""
    print(f"{config.method}: {stats['num_bytes']} bytes in {stats['num_documents']} document(s) -> "
          f"{stats['num_patches']} patches, mean {stats['mean_patch_size']:.2f}, median "
          f"{stats['median_patch_size']:.1f} bytes{speed}")

    if args.plot:
        shown_t = config.entropy_threshold if config.method in ("global", "global_monotonic") else None
        plot_entropies(docs[0], entropies[0], doc_lengths[0], shown_t, args.plot, title=f"{config.method} patching")
        print(f"plot: {args.plot}")
    if args.html:
        write_html(docs[0], None if entropies is None else entropies[0], doc_lengths[0], args.html)
        print(f"html: {args.html}")
    write_report(args.report, {
        "method": config.method,
        "threshold": config.entropy_threshold if config.needs_entropy else None,
        "num_bytes": num_bytes,
        "num_patches": stats["num_patches"],
        "mean_patch_size": stats["mean_patch_size"],
        "entropy_bytes_per_s": bytes_per_s,
        "patching_bytes_per_s": num_bytes / patch_s if patch_s > 0 else None,  # entropies -> lengths alone
        "median_patch_size": stats["median_patch_size"],
        "num_documents": stats["num_documents"],
        "min_patch_size": config.size_bounds[0],
        "max_patch_size": config.size_bounds[1],
        **({"monotonic_threshold": config.monotonic_threshold} if config.method == "global_monotonic" else {}),
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
