"""Byte corpora, the held-out split, training windows and the memory-mapped corpus store.

A corpus is a list of documents, each `bytes`. Sources (`--data`):
    builtin            offline: the Python reference manual (pydoc_data.topics), then the standard
                       library's .py files in sorted order
    builtin:code       offline: the standard library's .py files with docstrings and comments removed
    builtin:prose      offline: the reference manual, then the docstrings and comments of the standard
                       library, one document per source file
    PATH               a file (one document) or a folder (every file below it, recursively, sorted); a
                       .jsonl/.json/.parquet/.arrow file is read through `datasets`, one row's `text_field`
                       per document (rows that are lines of articles are grouped, see rows_to_documents),
                       or a folder written by `python byte_data.py prepare` (read through a memory map)
    hf:NAME[:CONFIG]   a Hugging Face dataset streamed with `datasets` (needs a network), rows as above

`max_bytes` keeps whole documents only: the corpus stops before the first one that does not fit, so a
document never reaches the split cut short. Only a first document larger than max_bytes is cut, giving a
one-document corpus.

The split: split_documents (DESIGN.md, "Held-out split"); training windows: ByteWindows.

    >>> docs = load_corpus("builtin", max_bytes=200_000)
    >>> train, val = split_documents(docs)
"""
from __future__ import annotations

import argparse
import ast
import hashlib
import inspect
import io
import itertools
import json
import os
import re
import sys
import sysconfig
import tokenize
import warnings
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import torch
from tqdm import tqdm

VAL_EVERY = 10  # about 1 document in 10 is held out, chosen by its content hash
BLOCK_BYTES = 4096  # held-out check: documents are also recorded as digests of aligned 4 KB blocks
BLOCK_DIGEST = 16  # hex characters per block digest (64 bits): 4 bytes of record per KB trained on
LOCAL_DATASET_FORMATS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".arrow": "arrow"}
# A top-level wikitext heading, " = Title = \n", starts an article; " = = Section = = \n" does not.
ARTICLE_HEADING = re.compile(r" = [^=](?:.*[^=])? = \n?")
TOOL_COMMENT = re.compile(r"(-\*- )?(en)?coding[:=]|noqa|type:|pragma|fmt:")  # directives, not English


class DataError(Exception):
    """A --data value that cannot be read; the message is one line."""


class Document(bytes):
    """A document whose side of the split is decided by `split_key` (its source file) instead of itself,
    so a file and everything made from it (builtin:code, builtin:prose) are on the same side in all three
    builtin corpora. Slicing or joining gives plain bytes: only the whole derived document has the key."""

    def __new__(cls, data: bytes, split_key: bytes):
        doc = super().__new__(cls, data)
        doc.split_key = split_key
        return doc


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return (text.splitlines()[0] if text else type(e).__name__)[:160]


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise DataError(f"{path}: cannot read it ({e.strerror or _first_line(e)})") from None


# ---------------------------------------------------------------------------------------------------- builtin


def _files_below(root: str, suffix: str = "", skip_dirs: tuple[str, ...] = ()) -> list[str]:
    """Every file below `root` in sorted order (by relative path), optionally filtered by suffix."""
    out = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in skip_dirs and not d.startswith("."))
        out += [os.path.join(folder, f) for f in sorted(files)
                if f.endswith(suffix) and not f.startswith(".")]
    return sorted(out, key=lambda p: os.path.relpath(p, root))


def stdlib_sources() -> list[str]:
    """The standard library's .py files, sorted by path (installed packages excluded), but for
    pydoc_data/topics.py: the reference manual as string literals, whose held-out topics it would leak."""
    stdlib = sysconfig.get_paths()["stdlib"]
    paths = _files_below(stdlib, suffix=".py", skip_dirs=("site-packages", "dist-packages", "__pycache__"))
    return [p for p in paths if not p.endswith(os.path.join("pydoc_data", "topics.py"))]


def manual_topics() -> Iterator[bytes]:
    """The Python reference manual as pydoc ships it, one topic per document, sorted by name. A topic whose
    text lies inside another is left out (it would be trained on as part of the other one while held out
    itself); identical topics are kept once."""
    from pydoc_data.topics import topics  # a 0.8 MB module: imported only when the corpus is read

    texts = list(dict.fromkeys(topics[name].encode("utf-8") for name in sorted(topics)))
    for text in texts:
        if not any(text in other for other in texts if other is not text):
            yield text


def builtin_documents() -> Iterator[bytes]:
    """The `builtin` corpus: reference-manual topics, then stdlib sources."""
    yield from manual_topics()
    yield from map(_read, stdlib_sources())


def _parse(source: str) -> ast.Module | None:
    with warnings.catch_warnings():  # invalid escapes in old test files: not our concern
        warnings.simplefilter("ignore")
        try:
            return ast.parse(source)
        except (SyntaxError, ValueError):
            return None


def _docstrings(tree: ast.AST) -> Iterator[tuple[ast.AST, ast.Expr]]:
    """(owner, statement) for every docstring: the leading string statement of a module, class or def."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
                    and isinstance(first.value.value, str):
                yield node, first


def _comments(source: str) -> list[tokenize.TokenInfo] | None:
    try:
        tokens = tokenize.generate_tokens(io.StringIO(source).readline)
        return [t for t in tokens if t.type == tokenize.COMMENT]
    except (tokenize.TokenError, SyntaxError):
        return None


def strip_docstrings_and_comments(source: str) -> str | None:
    """Python source without its docstrings and comments, layout otherwise kept; None if it does not parse.
    A docstring that is a body's only statement becomes `pass`; lines left empty by a removal go, blank
    lines of the original stay (at most two in a row)."""
    tree, comments = _parse(source), _comments(source)
    if tree is None or comments is None:
        return None
    lines = source.split("\n")

    def char_col(row: int, byte_col: int) -> int:  # ast counts UTF-8 bytes, tokenize characters
        return len(lines[row - 1].encode("utf-8")[:byte_col].decode("utf-8", errors="ignore"))

    edits = [(t.start, t.end, "") for t in comments]
    for owner, stmt in _docstrings(tree):
        start = (stmt.lineno, char_col(stmt.lineno, stmt.col_offset))
        end = (stmt.end_lineno, char_col(stmt.end_lineno, stmt.end_col_offset))
        only = len(owner.body) == 1 and not isinstance(owner, ast.Module)
        edits.append((start, end, "pass" if only else ""))
    out: list[str | None] = list(lines)
    edited = set()
    for (r0, c0), (r1, c1), repl in sorted(edits, reverse=True):  # from the end: earlier positions hold
        rest = out[r1 - 1][c1:]
        if not repl and rest.lstrip().startswith(";"):  # `"doc"; x = 1` keeps `x = 1`
            rest = rest.lstrip()[1:].lstrip()
        out[r0 - 1] = (out[r0 - 1][:c0] + repl + rest).rstrip()
        out[r0:r1] = [None] * (r1 - r0)
        edited.add(r0 - 1)
    kept = [line for i, line in enumerate(out) if line is not None and (i not in edited or line.strip())]
    code = re.sub(r"\n{4,}", "\n\n\n", "\n".join(kept)).strip("\n") + "\n"
    return code if code.strip() and _parse(code) is not None else None


def docstrings_and_comments(source: str) -> str:
    """The English of a Python source: its docstrings (cleaned of indentation) and comment blocks, in order.
    Shebang, coding and tool lines (`noqa`, `type:`, `pragma`) and comments without words are left out."""
    tree, comments = _parse(source), _comments(source)
    pieces = []  # (line, text)
    for _, stmt in _docstrings(tree) if tree is not None else ():
        text = inspect.cleandoc(stmt.value.value)
        if re.search(r"[A-Za-z]{2}", text):
            pieces.append((stmt.lineno, text))
    blocks, last_row = [], -2  # [line, text] of each run of comments on consecutive lines
    for tok in comments or ():
        text = tok.string.lstrip("#").strip()
        skip = tok.string.startswith("#!") or TOOL_COMMENT.match(text)
        if skip or not re.search(r"[A-Za-z]{2}", text):
            continue
        if tok.start[0] == last_row + 1 and blocks:
            blocks[-1][1] += "\n" + text
        else:
            blocks.append([tok.start[0], text])
        last_row = tok.start[0]
    return "\n\n".join(text for _, text in sorted(pieces + blocks, key=lambda p: p[0]))


def _stdlib_texts(transform) -> Iterator[Document]:
    """transform(source) of every stdlib .py file (decoded as its coding cookie says; undecodable files
    left out), split by the file's bytes (on the side the file has in `builtin`)."""
    for path in stdlib_sources():
        try:
            with tokenize.open(path) as f:
                source = f.read()
        except (SyntaxError, UnicodeDecodeError, OSError):
            continue
        text = transform(source)
        if text and text.strip():
            yield Document(text.encode("utf-8"), split_key=_read(path))


def builtin_code_documents() -> Iterator[bytes]:
    """The standard library's .py files without docstrings and comments (unparsable files left out)."""
    yield from _stdlib_texts(strip_docstrings_and_comments)


def builtin_prose_documents() -> Iterator[bytes]:
    """The reference manual's topics, then the docstrings and comments of each standard-library file."""
    yield from manual_topics()
    yield from _stdlib_texts(docstrings_and_comments)


BUILTIN_CORPORA = {"builtin": builtin_documents, "builtin:code": builtin_code_documents,
                   "builtin:prose": builtin_prose_documents}


# ---------------------------------------------------------------------------------------------------- loading


def group_articles(rows: Iterable[str]) -> Iterator[str]:
    """Join the line rows of a line dataset (wikitext) into articles: a row " = Title = " starts one, any
    other row (empty ones too) is a line of the current one (rows before the first heading form their own).
    A row without a final newline gets one, so wikitext's empty rows come back as its blank lines."""
    article: list[str] = []
    for row in rows:
        if ARTICLE_HEADING.fullmatch(row) and article:
            yield "".join(article)
            article = []
        article.append(row if row.endswith("\n") else row + "\n")
    if article:
        yield "".join(article)


def rows_to_documents(rows: Iterable[str], probe: int = 100) -> Iterator[bytes]:
    """Documents (UTF-8) from the text rows of a dataset, in order, whitespace-only ones dropped. Rows are
    documents, unless one of the first `probe` rows is a wikitext article heading: then they are lines,
    grouped into articles, so that a held-out document is a whole article, never a line of a training one."""
    rows = iter(rows)
    head = list(itertools.islice(rows, probe))
    rows = itertools.chain(head, rows)
    texts = group_articles(rows) if any(ARTICLE_HEADING.fullmatch(r) for r in head) else rows
    for text in texts:
        if text.strip():
            yield text.encode("utf-8")


def _dataset_rows(where: str, text_field: str | None, hint: str, *args, **kwargs) -> Iterator[str]:
    """The `text_field` strings of datasets.load_dataset(*args, **kwargs), streamed; errors name `where`."""
    try:
        import datasets  # heavy and optional: only the corpora that need it import it
    except ImportError:
        raise DataError(f"{where}: reading it needs the `datasets` package (pip install datasets)") from None
    field = text_field or "text"
    try:
        for row in datasets.load_dataset(*args, split="train", streaming=True, **kwargs):
            if field not in row:
                raise DataError(f"{where}: rows have no field '{field}' (fields: {', '.join(row)}); "
                                "choose one with --text_field")
            if isinstance(row[field], str):
                yield row[field]
    except DataError:
        raise
    except Exception as e:  # no network, unknown dataset, a broken file, ...: one line, not a deep traceback
        raise DataError(f"{where}: cannot read it ({_first_line(e)}){hint}") from None


def iter_documents(data: str = "builtin", text_field: str | None = None) -> Iterator[bytes]:
    """The documents of `data` (module docstring), in a fixed order, streamed; DataError if unreadable."""
    if data in BUILTIN_CORPORA:
        return BUILTIN_CORPORA[data]()
    if data.startswith("builtin:"):
        raise DataError(f"{data}: no such builtin corpus (choose from {', '.join(BUILTIN_CORPORA)})")
    if data.startswith("hf:"):  # a streamed Hugging Face dataset NAME[:CONFIG], its train split
        name, _, config = data[3:].partition(":")
        hint = "; it needs a network connection to the Hugging Face hub, or use a local file/folder"
        return rows_to_documents(_dataset_rows(data, text_field, hint, name, config or None))
    if os.path.isfile(data):
        builder = LOCAL_DATASET_FORMATS.get(os.path.splitext(data)[1].lower())
        if builder:
            return rows_to_documents(_dataset_rows(data, text_field, "", builder, data_files=data))
        return iter([_read(data)])
    if os.path.isdir(data):
        paths = _files_below(data)
        if not paths:
            raise DataError(f"{data}: folder holds no files")
        return (_read(p) for p in paths)
    raise DataError(f"{data}: no such file or folder (use builtin, builtin:code, builtin:prose, a path, "
                    "or hf:NAME[:CONFIG])")


def capped_documents(source: Iterable[bytes], max_bytes: int | None) -> Iterator[bytes]:
    """Non-empty documents of `source` totalling at most max_bytes (module docstring)."""
    total = 0
    for doc in source:
        if not doc:
            continue
        if max_bytes is not None and total + len(doc) > max_bytes:
            if total == 0 and max_bytes > 0:  # the first document: a one-document corpus, its tail held out
                yield doc[:max_bytes]
            return
        yield doc
        total += len(doc)


def load_corpus(data: str = "builtin", max_bytes: int | None = None,
                text_field: str | None = None) -> list[bytes]:
    """The documents of `data`, in a fixed order, totalling at most max_bytes (module docstring); a prepared
    folder gives a MappedCorpus. `text_field` names the text column of a dataset, "text" when None."""
    if is_prepared(data):
        return MappedCorpus(data).capped(max_bytes)
    docs = list(capped_documents(iter_documents(data, text_field), max_bytes))
    if not docs:
        raise DataError(f"{data}: holds no bytes")
    return docs


# -------------------------------------------------------------------------------------------------- the split


def content_hash(doc: bytes) -> int:
    """What decides a document's side of the split: the first 8 bytes of the sha256 of the first
    BLOCK_BYTES of its split key (its source file for a Document, else itself), as an integer. Hashing
    the head puts near-duplicates that share it (an edited copy, a longer cut) on the same side."""
    key = getattr(doc, "split_key", doc)
    return int.from_bytes(hashlib.sha256(key[:BLOCK_BYTES]).digest()[:8], "big")


def short_prefixes(heads: list[bytes]) -> set[bytes]:
    """Those of `heads` (documents, or their first BLOCK_BYTES) shorter than BLOCK_BYTES that start another.

    A longer prefix shares its document's first 4 KB, so its side, and is kept."""
    ordered = sorted(set(heads))  # a prefix sorts right before the documents it starts
    return {a for a, b in zip(ordered, ordered[1:]) if len(a) < BLOCK_BYTES and b.startswith(a)}


def distinct_documents(docs: list[bytes]) -> list[bytes]:
    """The documents split_documents splits, in corpus order: empty ones, exact duplicates and those under
    4 KB that are a prefix of another dropped (a prefix's bytes are all in the longer one, on its side)."""
    if isinstance(docs, MappedCorpus):
        return docs.documents()
    docs = [d for d in dict.fromkeys(docs) if d]
    prefixes = short_prefixes([d[:BLOCK_BYTES] for d in docs])
    return [d for d in docs if d not in prefixes]


def held_out_mask(hashes: np.ndarray, val_every: int = VAL_EVERY) -> np.ndarray:
    """Which documents (of more than one, by content_hash) are held out: the lowest 1/val_every of the hash
    range; at least one (the lowest hash) and never all (the highest is trained on)."""
    hashes = np.asarray(hashes, dtype=np.uint64)
    val = hashes <= np.uint64((2**64 - 1) // val_every)  # h * val_every < 2**64
    if not val.any():
        val[int(np.argmin(hashes))] = True
    if val.all():
        val[int(np.argmax(hashes))] = False
    return val


def tail_cut(n: int, val_every: int = VAL_EVERY) -> int:
    """Where a one-document corpus of n bytes is cut: its last 1/val_every (at least one byte) is held out."""
    return n - max(1, n // val_every) if n > 1 else n


def split_documents(docs: list[bytes], val_every: int = VAL_EVERY) -> tuple[list[bytes], list[bytes]]:
    """(train, val): whole documents, in corpus order, after distinct_documents, held out by their
    content_hash (held_out_mask), so a side depends neither on where a document sits nor on which others
    are loaded. A single document is split into its head (train) and contiguous tail (val, 1/val_every)."""
    if isinstance(docs, MappedCorpus):  # split when it was prepared, by this rule
        return docs.split()
    docs = distinct_documents(docs)
    if len(docs) == 1:
        doc = docs[0]
        cut = tail_cut(len(doc), val_every)
        return [doc[:cut]], ([doc[cut:]] if cut < len(doc) else [])
    if not docs:
        return [], []
    val = held_out_mask(np.array([content_hash(d) for d in docs], dtype=np.uint64), val_every)
    return [d for d, v in zip(docs, val) if not v], [d for d, v in zip(docs, val) if v]


class ByteWindows:
    """Fixed-length training windows at random offsets inside documents, deterministic per step.

    Documents are `bytes` (ids 0..255) or 1-D integer arrays (token ids, e.g. a BPE baseline's), and
    lengths and offsets count those ids. batch(step) gives the rows of the global batch that belong to
    `rank`: every rank draws the same global batch from (seed, step) and keeps its contiguous slice, so
    N processes with batch B/N each train on exactly what one process with batch B would."""

    def __init__(self, docs: list[bytes] | list[np.ndarray], seq_len: int, seed: int = 0):
        if not docs:
            raise DataError("no training documents")
        self.seq_len, self.seed = seq_len, seed
        if isinstance(docs, MappedCorpus):  # windows straight from the memory map: nothing is copied
            self.lengths, self.starts, self.buffer = docs.lengths, docs.starts, docs.buffer
        else:
            self.lengths = np.array([len(d) for d in docs], dtype=np.int64)
            self.starts = np.concatenate([[0], np.cumsum(self.lengths)[:-1]])
            if all(isinstance(d, (bytes, bytearray)) for d in docs):
                self.buffer = np.frombuffer(b"".join(docs), dtype=np.uint8)
            else:
                self.buffer = np.concatenate([np.asarray(d).ravel() for d in docs])
            if not np.issubdtype(self.buffer.dtype, np.integer):
                raise DataError(f"training documents must be bytes or integer ids, not {self.buffer.dtype}")
        self.prob = self.lengths / self.lengths.sum()  # documents drawn in proportion to their length

    def batch(self, step: int, batch_size: int, rank: int = 0, world_size: int = 1):
        """x (B/world, T) ids, y (B/world, T) targets (= x, with -100 on padding past a short document)."""
        if batch_size % world_size:
            raise ValueError(f"batch_size {batch_size} is not divisible by {world_size} processes")
        rng = np.random.default_rng((self.seed, step))  # the global batch: a document and offset per row
        doc = rng.choice(len(self.lengths), size=batch_size, p=self.prob)
        room = np.maximum(self.lengths[doc] - self.seq_len, 0)
        offset = (rng.random(batch_size) * (room + 1)).astype(np.int64)
        per = batch_size // world_size
        doc, offset = doc[rank * per:(rank + 1) * per], offset[rank * per:(rank + 1) * per]
        pos = offset[:, None] + np.arange(self.seq_len)[None, :]  # (B, T) position inside the document
        valid = pos < self.lengths[doc][:, None]
        flat = np.where(valid, self.starts[doc][:, None] + pos, 0)
        x = torch.from_numpy(np.where(valid, self.buffer[flat], 0).astype(np.int64))  # reads B x T bytes
        y = x.masked_fill(~torch.from_numpy(valid), -100)
        return x, y


# --------------------------------------------------------------------------------------------- held-out check


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:BLOCK_DIGEST]


def block_digests(doc: bytes, start: int = 0) -> list[str]:
    """Digests of the document's full BLOCK_BYTES blocks at aligned offsets (multiples of the block size,
    from the document's first byte) that end after `start`: the block straddling `start` counts."""
    first = start // BLOCK_BYTES * BLOCK_BYTES
    return [_digest(doc[o:o + BLOCK_BYTES]) for o in range(first, len(doc) - BLOCK_BYTES + 1, BLOCK_BYTES)]


def prefix_digests(doc: bytes) -> list[str]:
    """Digests of doc[:k * BLOCK_BYTES] for k = 1, 2, ...: the document's prefix chain."""
    h, out = hashlib.sha256(), []
    for o in range(0, len(doc) - BLOCK_BYTES + 1, BLOCK_BYTES):
        h.update(doc[o:o + BLOCK_BYTES])
        out.append(h.copy().hexdigest()[:BLOCK_DIGEST])
    return out


def document_digests(docs: list[bytes]) -> list[list]:
    """[digest, length, block digests, prefix digests] of each document: a record of what a model trained
    on, 8 bytes per KB. The digests are joined into strings (not bytes, so torch.load(weights_only=True)
    reads them); they let held_out_seen notice a model that trained on another cut of the same document."""
    return [[_digest(d), len(d), "".join(block_digests(d)), "".join(prefix_digests(d))] for d in docs]


def held_out_seen(trained_on: list[list], docs: list[bytes], val_docs: list[bytes]) -> int:
    """How many of `val_docs` (the held-out part of corpus `docs`) a model trained on `trained_on` saw.

    A held-out document counts when its digest is among the trained ones; when one of its aligned blocks
    was trained on, unless this corpus's own training documents hold that same block too. For a
    one-document corpus (its tail held out) the blocks checked start with the one straddling the cut, and
    the tail also counts as seen when the model trained on a prefix of the document reaching into it, or
    on a document longer than the cut that shares the document's prefix up to the last 4 KB boundary
    within both (another cut of it, longer or shorter). Records are [digest, length] (old), + block
    digests, + prefix digests; each check runs where its part of the record is there. An overlap that
    holds no whole aligned block, with no shared 4 KB boundary, can go unnoticed (documents under 4 KB)."""
    whole = {entry[0] for entry in trained_on}
    blocks = {e[2][o:o + BLOCK_DIGEST] for e in trained_on if len(e) > 2
              for o in range(0, len(e[2]), BLOCK_DIGEST)}
    docs = distinct_documents(docs)  # as split_documents sees them
    one_doc = len(docs) == 1 and bool(val_docs)
    cut = len(docs[0]) - len(val_docs[0]) if one_doc else 0
    if blocks:  # blocks this split itself trains on are shared content, not a leak
        val_set = set(val_docs)
        own_train = [docs[0][:cut]] if one_doc else [d for d in docs if d not in val_set]
        blocks -= {b for d in own_train for b in block_digests(d)}
    count = 0
    for v in val_docs:
        seen = _digest(v) in whole
        if not seen and blocks:
            seen = any(b in blocks for b in (block_digests(docs[0], cut) if one_doc else block_digests(v)))
        if not seen and one_doc:
            seen = _one_document_seen(trained_on, docs[0], cut)
        count += seen
    return count


def _one_document_seen(trained_on: list[list], doc: bytes, cut: int) -> bool:
    """Whether a trained document is another cut of `doc` reaching past `cut` (see held_out_seen)."""
    if any(cut < n <= len(doc) and _digest(doc[:n]) == sha for sha, n in {(e[0], e[1]) for e in trained_on}):
        return True
    chain = prefix_digests(doc)
    for entry in trained_on:
        if len(entry) > 3 and entry[1] > cut:
            k = min(entry[1], len(doc)) // BLOCK_BYTES  # the last boundary within both
            if k and entry[3][(k - 1) * BLOCK_DIGEST:k * BLOCK_DIGEST] == chain[k - 1]:
                return True
    return False


# ------------------------------------------------------------------------------------------ prepared corpora


PREPARED_FORMAT = "byte_data.prepared/1"
TRAIN, VAL, DROPPED = 0, 1, 2  # a prepared document's side (split.npy)


def is_prepared(data: str) -> bool:
    """Whether `data` is a folder written by prepare_corpus."""
    return all(os.path.isfile(os.path.join(data, name)) for name in ("corpus.json", "bytes.bin"))


def prepare_corpus(data: str, out: str, max_bytes: int | None = None, text_field: str | None = None,
                   show_progress: bool = True) -> dict:
    """Write the documents of `data` once for memory-mapped reading; returns what corpus.json holds.

    `out` gets bytes.bin (every kept document, back to back), offsets.npy (int64, documents + 1), split.npy
    (uint8 per document: TRAIN, VAL or DROPPED) and corpus.json. The split is split_documents' rule:
    empty documents and exact duplicates are never written, short prefixes of another are DROPPED, sides
    come from content_hash, and a one-document corpus is stored as its head (TRAIN) and tail (VAL).
    Memory: a digest per document and each document's first 4 KB (for the prefix rule), never the corpus."""
    os.makedirs(out, exist_ok=True)
    lengths, hashes, heads, seen = [], [], [], set()
    digest = hashlib.sha256()
    bar = tqdm(desc=f"prepare {data}", unit="B", unit_scale=True, disable=not show_progress)
    with bar, open(os.path.join(out, "bytes.bin.tmp"), "wb") as f:
        for doc in capped_documents(iter_documents(data, text_field), max_bytes):
            key = hashlib.sha256(doc).digest()
            if key in seen:  # an exact duplicate
                continue
            seen.add(key)
            f.write(doc)
            digest.update(doc)
            lengths.append(len(doc))
            hashes.append(content_hash(doc))
            heads.append(bytes(doc[:BLOCK_BYTES]))
            bar.update(len(doc))
    if not lengths:
        raise DataError(f"{data}: holds no bytes")
    prefixes = short_prefixes(heads)
    side = np.array([DROPPED if h in prefixes else TRAIN for h in heads], dtype=np.uint8)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    kept = np.flatnonzero(side != DROPPED)
    if len(kept) == 1:  # one document: its head trains, its tail is held out (two stored documents)
        i = int(kept[0])
        cut = int(offsets[i]) + tail_cut(lengths[i])
        offsets = np.concatenate([offsets[:i + 1], [cut], offsets[i + 1:]])
        side = np.concatenate([side[:i], [TRAIN, VAL], side[i + 1:]]).astype(np.uint8)
        if cut == offsets[i + 2]:  # one byte: nothing to hold out
            side[i + 1] = DROPPED
    else:
        side[kept[held_out_mask(np.array(hashes, dtype=np.uint64)[kept])]] = VAL
    np.save(os.path.join(out, "offsets.npy"), offsets)
    np.save(os.path.join(out, "split.npy"), side)
    info = {"format": PREPARED_FORMAT, "source": data, "max_bytes": max_bytes, "text_field": text_field,
            "documents": int(len(side)), "num_bytes": int(offsets[-1]), "sha256": digest.hexdigest(),
            "one_document": bool(len(kept) == 1),
            "train_bytes": int(np.diff(offsets)[side == TRAIN].sum()),
            "val_bytes": int(np.diff(offsets)[side == VAL].sum())}
    with open(os.path.join(out, "corpus.json.tmp"), "w") as f:
        json.dump(info, f, indent=1)
    os.replace(os.path.join(out, "bytes.bin.tmp"), os.path.join(out, "bytes.bin"))
    os.replace(os.path.join(out, "corpus.json.tmp"), os.path.join(out, "corpus.json"))  # last: complete
    return info


class MappedCorpus(Sequence):
    """Documents of a prepared folder, read through a memory map: the corpus is never loaded whole.

    corpus[i] is document i as bytes (a copy of that document only); `buffer`, `starts` and `lengths` let
    ByteWindows read windows straight from the map. A view (split(), capped()) is a subset of documents."""

    def __init__(self, folder: str):
        try:
            with open(os.path.join(folder, "corpus.json")) as f:
                self.info = json.load(f)
            offsets = np.load(os.path.join(folder, "offsets.npy"))
            self.side = np.load(os.path.join(folder, "split.npy"))
        except (OSError, ValueError) as e:
            raise DataError(f"{folder}: not a readable prepared corpus ({_first_line(e)})") from None
        if self.info.get("format") != PREPARED_FORMAT or len(offsets) != len(self.side) + 1 \
                or os.path.getsize(os.path.join(folder, "bytes.bin")) != offsets[-1]:
            raise DataError(f"{folder}: not a complete prepared corpus of this version; prepare it again")
        self.folder, self.offsets = folder, offsets
        self.buffer = np.memmap(os.path.join(folder, "bytes.bin"), dtype=np.uint8, mode="r")
        self._select(np.flatnonzero(self.side != DROPPED))

    def _select(self, index) -> MappedCorpus:
        self.index = np.asarray(index, dtype=np.int64)
        self.starts = self.offsets[self.index]
        self.lengths = self.offsets[self.index + 1] - self.starts
        return self

    def view(self, index) -> MappedCorpus:
        out = MappedCorpus.__new__(MappedCorpus)
        out.__dict__.update(self.__dict__)
        return out._select(index)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return self.view(self.index[i])
        s = int(self.starts[i])
        return self.buffer[s:s + int(self.lengths[i])].tobytes()

    def split(self) -> tuple[MappedCorpus, MappedCorpus]:
        """(train, val) as stored at prepare time."""
        side = self.side[self.index]
        return self.view(self.index[side == TRAIN]), self.view(self.index[side == VAL])

    def capped(self, max_bytes: int | None) -> MappedCorpus:
        """Whole documents up to max_bytes (at least one): each keeps its side, as load_corpus's cap does. A
        one-document corpus is kept whole (its stored cut is the split)."""
        if max_bytes is None or self.info.get("one_document"):
            return self
        keep = max(1, int(np.searchsorted(np.cumsum(self.lengths), max_bytes, side="right")))
        return self.view(self.index[:keep])

    def documents(self) -> list[bytes]:
        """The documents as split_documents saw them at prepare time (a one-document corpus whole)."""
        if self.info.get("one_document"):
            s, e = int(self.starts.min()), int((self.starts + self.lengths).max())
            return [self.buffer[s:e].tobytes()]
        return list(self)

    @property
    def num_bytes(self) -> int:
        return int(self.lengths.sum())


def entropy_file(folder: str, fingerprint: str) -> str:
    """Where a prepared corpus keeps the entropies (entropy_llm.py --precompute) of the model with this
    fingerprint (model_fingerprint): float16, one per byte, laid out as bytes.bin (the same offsets); its
    .json is written last, when every chunk is in. The version follows the entropy cache key's
    (entropy_patcher): v3 rotates keys once at their offset from the document's start (values differ from
    v2's in the last bits), so an older file is neither read nor resumed."""
    return os.path.join(folder, f"entropies-v3-{fingerprint[:16]}.f16")


class MappedEntropies(Sequence):
    """Per-document float32 entropies of a MappedCorpus (view), read from the precomputed float16 file."""

    def __init__(self, corpus: MappedCorpus, values: np.ndarray):
        self.corpus, self.values = corpus, values

    def __len__(self) -> int:
        return len(self.corpus)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return MappedEntropies(self.corpus[i], self.values)
        s = int(self.corpus.starts[i])
        return self.values[s:s + int(self.corpus.lengths[i])].astype(np.float32)


def precomputed_entropies(corpus: MappedCorpus, fingerprint: str) -> MappedEntropies | None:
    """The entropies of `corpus`'s documents under the model with `fingerprint`, if precomputed whole."""
    path = entropy_file(corpus.folder, fingerprint)
    try:
        with open(path + ".json") as f:
            info = json.load(f)
    except (OSError, ValueError):
        return None
    if info.get("fingerprint") != fingerprint or info.get("corpus_sha256") != corpus.info["sha256"] \
            or os.path.getsize(path) != 2 * int(corpus.offsets[-1]):
        return None
    return MappedEntropies(corpus, np.memmap(path, dtype=np.float16, mode="r"))


def corpus_summary(docs: list[bytes]) -> str:
    n = docs.num_bytes if isinstance(docs, MappedCorpus) else sum(len(d) for d in docs)
    return f"{len(docs)} documents, {n:,} bytes"


def main(argv=None) -> int:
    """`python byte_data.py [DATA [MAX_BYTES]]`: the split's summary; `... prepare --data D --out DIR`."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        if argv[:1] == ["prepare"]:
            p = argparse.ArgumentParser(prog="byte_data.py prepare", description="Write a corpus once for "
                                        "memory-mapped reading (any --data then takes the folder).")
            p.add_argument("--data", default="builtin", help="what to prepare (a --data value)")
            p.add_argument("--out", required=True, help="the folder to write")
            p.add_argument("--max_bytes", type=int, default=None, help="cap in bytes (default: everything)")
            p.add_argument("--text_field", default=None, help="the text column of a dataset (default: text)")
            args = p.parse_args(argv[1:])
            info = prepare_corpus(args.data, args.out, args.max_bytes, args.text_field)
            print(f"{args.out}: {info['documents']} documents, {info['num_bytes']:,} bytes "
                  f"(train {info['train_bytes']:,}, val {info['val_bytes']:,})")
        else:
            spec = argv[0] if argv else "builtin"
            docs = load_corpus(spec, max_bytes=int(argv[1]) if len(argv) > 1 else None)
            train, val = split_documents(docs)
            print(f"{spec}: {corpus_summary(docs)}; train {corpus_summary(train)}; val {corpus_summary(val)}")
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
