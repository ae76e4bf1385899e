"""Byte corpora, the held-out split, and training windows.

A corpus is a list of documents, each `bytes`. Sources (`--data`):
    builtin            offline: the Python reference manual (pydoc_data.topics), then the standard
                       library's .py files in sorted order, up to max_bytes
    PATH               a file (one document) or a folder (every file below it, recursively, sorted)
    hf:NAME[:CONFIG]   a Hugging Face dataset streamed with `datasets` (needs a network)

The split (DESIGN.md, "Held-out split"): every 10th document goes to validation whole; a corpus of one
document gives its contiguous tail instead. Training reads fixed-length windows at random offsets inside
training documents, a pure function of (seed, step), so resumed and distributed runs see the same data.

    >>> docs = load_corpus("builtin", max_bytes=200_000)
    >>> train, val = split_documents(docs)
"""
from __future__ import annotations

import os
import sys
import sysconfig

import numpy as np
import torch

VAL_EVERY = 10  # every 10th document is held out: about 10%, deterministic by index


class DataError(Exception):
    """A --data value that cannot be read; the message is one line."""


def builtin_documents():
    """Yield the offline corpus: reference-manual topics (sorted by name), then stdlib sources."""
    from pydoc_data.topics import topics

    for name in sorted(topics):
        yield topics[name].encode("utf-8")
    stdlib = sysconfig.get_paths()["stdlib"]
    for path in _files_below(stdlib, suffix=".py", skip_dirs=("site-packages", "dist-packages", "__pycache__")):
        with open(path, "rb") as f:
            yield f.read()


def _files_below(root: str, suffix: str = "", skip_dirs: tuple[str, ...] = ()) -> list[str]:
    """Every file below `root` in sorted order (by relative path), optionally filtered by suffix."""
    out = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in skip_dirs and not d.startswith("."))
        out += [os.path.join(folder, f) for f in sorted(files) if f.endswith(suffix) and not f.startswith(".")]
    return sorted(out, key=lambda p: os.path.relpath(p, root))


def hf_documents(spec: str):
    """Yield the text column of a streamed Hugging Face dataset, `NAME[:CONFIG]`, as UTF-8 documents."""
    try:
        import datasets
    except ImportError:
        raise DataError("hf: datasets needs the `datasets` package (pip install datasets)") from None
    name, _, config = spec.partition(":")
    try:
        ds = datasets.load_dataset(name, config or None, split="train", streaming=True)
        for row in ds:
            text = row.get("text")
            if text is None:  # fall back to the first string column
                text = next((v for v in row.values() if isinstance(v, str)), None)
            if text:
                yield text.encode("utf-8")
    except DataError:
        raise
    except Exception as e:  # no network, unknown dataset, ... : one line, not a deep traceback
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(f"hf:{spec}: cannot stream this dataset ({first[:160]}); it needs a network "
                        "connection to the Hugging Face hub, or use a local file/folder") from None


def load_corpus(data: str = "builtin", max_bytes: int | None = None) -> list[bytes]:
    """The documents of `data`, in a fixed order, totalling at most max_bytes (the last one cut)."""
    if data == "builtin":
        source = builtin_documents()
    elif data.startswith("hf:"):
        source = hf_documents(data[3:])
    elif os.path.isfile(data):
        source = iter([open(data, "rb").read()])
    elif os.path.isdir(data):
        paths = _files_below(data)
        if not paths:
            raise DataError(f"{data}: folder holds no files")
        source = (open(p, "rb").read() for p in paths)
    else:
        raise DataError(f"{data}: no such file or folder (use 'builtin', a path, or hf:NAME[:CONFIG])")
    docs, total = [], 0
    for doc in source:
        if not doc:
            continue
        if max_bytes is not None and total + len(doc) > max_bytes:
            if max_bytes - total > 0:
                docs.append(doc[: max_bytes - total])
            break
        docs.append(doc)
        total += len(doc)
    if not docs:
        raise DataError(f"{data}: holds no bytes")
    return docs


def split_documents(docs: list[bytes], val_every: int = VAL_EVERY) -> tuple[list[bytes], list[bytes]]:
    """(train, val): whole documents, every `val_every`-th to validation (at least one when possible).

    A single document is split into its head (train) and contiguous tail (val, 1/val_every of it).
    """
    if len(docs) == 1:
        doc = docs[0]
        cut = len(doc) - max(1, len(doc) // val_every) if len(doc) > 1 else len(doc)
        return [doc[:cut]], ([doc[cut:]] if cut < len(doc) else [])
    val_idx = set(range(val_every - 1, len(docs), val_every)) or {len(docs) - 1}
    train = [d for i, d in enumerate(docs) if i not in val_idx]
    val = [d for i, d in enumerate(docs) if i in val_idx]
    return train, val


class ByteWindows:
    """Fixed-length training windows at random offsets inside documents, deterministic per step.

    Documents are `bytes` (ids 0..255) or 1-D integer arrays (token ids, e.g. a BPE baseline's), and
    lengths and offsets count those ids. batch(step) gives the rows of the global batch that belong to
    `rank`: every rank draws the same global batch from (seed, step) and keeps its contiguous slice, so
    N processes with batch B/N each train on exactly what one process with batch B would.
    """

    def __init__(self, docs: list[bytes] | list[np.ndarray], seq_len: int, seed: int = 0):
        if not docs:
            raise DataError("no training documents")
        self.seq_len, self.seed = seq_len, seed
        self.lengths = np.array([len(d) for d in docs], dtype=np.int64)
        self.starts = np.concatenate([[0], np.cumsum(self.lengths)[:-1]])
        if all(isinstance(d, (bytes, bytearray)) for d in docs):
            self.buffer = np.frombuffer(b"".join(docs), dtype=np.uint8)
        else:
            self.buffer = np.concatenate([np.asarray(d).ravel() for d in docs])
            if not np.issubdtype(self.buffer.dtype, np.integer):
                raise DataError(f"training documents must be bytes or integer ids, not {self.buffer.dtype}")
        self.prob = self.lengths / self.lengths.sum()  # documents drawn in proportion to their length

    def sample(self, step: int, batch_size: int):
        """(doc index, offset) of every row of the global batch at `step`."""
        rng = np.random.default_rng((self.seed, step))
        doc = rng.choice(len(self.lengths), size=batch_size, p=self.prob)
        room = np.maximum(self.lengths[doc] - self.seq_len, 0)
        offset = (rng.random(batch_size) * (room + 1)).astype(np.int64)
        return doc, offset

    def batch(self, step: int, batch_size: int, rank: int = 0, world_size: int = 1):
        """x (B/world, T) ids, y (B/world, T) targets (= x, with -100 on padding past a short document)."""
        if batch_size % world_size:
            raise ValueError(f"batch_size {batch_size} is not divisible by {world_size} processes")
        doc, offset = self.sample(step, batch_size)
        per = batch_size // world_size
        doc, offset = doc[rank * per:(rank + 1) * per], offset[rank * per:(rank + 1) * per]
        pos = offset[:, None] + np.arange(self.seq_len)[None, :]  # (B, T) position inside the document
        valid = pos < self.lengths[doc][:, None]
        flat = np.where(valid, self.starts[doc][:, None] + pos, 0)
        x = torch.from_numpy(np.where(valid, self.buffer[flat], 0).astype(np.int64))
        y = x.masked_fill(~torch.from_numpy(valid), -100)
        return x, y


def document_digests(docs: list[bytes]) -> list[list]:
    """[sha256 prefix, length] of each document: a compact record of what a model was trained on."""
    import hashlib

    return [[hashlib.sha256(d).hexdigest()[:16], len(d)] for d in docs]


def held_out_seen(trained_on: list[list], docs: list[bytes], val_docs: list[bytes]) -> int:
    """How many of `val_docs` (the held-out part of corpus `docs`) a model trained on `trained_on` saw.

    A held-out document counts when its digest is among the trained ones; for a one-document corpus, whose
    held-out part is its tail, when the model trained on a prefix of that document reaching into the tail.
    """
    import hashlib

    seen = {sha for sha, _ in trained_on}
    count = sum(hashlib.sha256(v).hexdigest()[:16] in seen for v in val_docs)
    if len(docs) == 1 and val_docs:
        doc, cut = docs[0], len(docs[0]) - len(val_docs[0])
        count += any(cut < n <= len(doc) and hashlib.sha256(doc[:n]).hexdigest()[:16] == sha for sha, n in trained_on)
    return count


def corpus_summary(docs: list[bytes]) -> str:
    n = sum(len(d) for d in docs)
    return f"{len(docs)} documents, {n:,} bytes"


if __name__ == "__main__":
    spec = sys.argv[1] if len(sys.argv) > 1 else "builtin"
    docs = load_corpus(spec, max_bytes=int(sys.argv[2]) if len(sys.argv) > 2 else None)
    train, val = split_documents(docs)
    print(f"{spec}: {corpus_summary(docs)}; train {corpus_summary(train)}; val {corpus_summary(val)}")
