"""Byte corpora, the held-out split, and training windows.

A corpus is a list of documents, each `bytes`. Sources (`--data`):
    builtin            offline: the Python reference manual (pydoc_data.topics), then the standard
                       library's .py files in sorted order (pydoc_data/topics.py, the manual again as
                       string literals, left out)
    builtin:code       offline: the standard library's .py files with docstrings and comments removed
    builtin:prose      offline: the reference manual, then the docstrings and comments of the standard
                       library, one document per source file
    PATH               a file (one document) or a folder (every file below it, recursively, sorted); a
                       .jsonl/.json/.parquet/.arrow file is read through `datasets`, one row's `text_field`
                       per document (rows that are lines of articles are grouped, see rows_to_documents)
    hf:NAME[:CONFIG]   a Hugging Face dataset streamed with `datasets` (needs a network), rows as above

`max_bytes` keeps whole documents only: the corpus stops before the first one that does not fit, so a
document never reaches the split cut short. Only a first document larger than max_bytes is cut, giving a
one-document corpus.

The split (DESIGN.md, "Held-out split"): empty documents, exact duplicates and documents that are a prefix
of another are dropped, then every document whose split hash (content_hash: of its first 4 KB, so
near-duplicates sharing a head share a side) falls in the lowest 1/10 of its range goes to validation
whole, so its side depends neither on its position nor on max_bytes; a corpus of one document gives its
contiguous tail instead. A document derived from a source file (builtin:code, builtin:prose) is a
`Document` whose `split_key` is that file, so a file and everything made from it are on the same side in
all three builtin corpora. Training reads
fixed-length windows at random offsets inside training documents, a pure function of (seed, step), so
resumed and distributed runs see the same data.

    >>> docs = load_corpus("builtin", max_bytes=200_000)
    >>> train, val = split_documents(docs)
"""
from __future__ import annotations

import ast
import hashlib
import inspect
import io
import itertools
import os
import re
import sys
import sysconfig
import tokenize
import warnings
from collections.abc import Iterable, Iterator

import numpy as np
import torch

VAL_EVERY = 10  # about 1 document in 10 is held out, chosen by its content hash
BLOCK_BYTES = 4096  # held-out check: documents are also recorded as digests of aligned 4 KB blocks
BLOCK_DIGEST = 16  # hex characters per block digest (64 bits): 4 bytes of record per KB trained on
LOCAL_DATASET_FORMATS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".arrow": "arrow"}
# A top-level wikitext heading, " = Title = \n", starts an article; " = = Section = = \n" does not.
ARTICLE_HEADING = re.compile(r" = [^=](?:.*[^=])? = \n?")
# Comments that are directives, not English: coding cookies, linters, type checkers.
TOOL_COMMENT = re.compile(r"(-\*- )?(en)?coding[:=]|noqa|type:|pragma|fmt:")


class DataError(Exception):
    """A --data value that cannot be read; the message is one line."""


class Document(bytes):
    """A document whose side of the split is decided by `split_key` (its source file) instead of itself.

    Slicing or joining gives plain bytes: only the whole derived document carries the key.
    """

    def __new__(cls, data: bytes, split_key: bytes):
        doc = super().__new__(cls, data)
        doc.split_key = split_key
        return doc


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return (text.splitlines()[0] if text else type(e).__name__)[:160]


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
    """The standard library's .py files, sorted by path (installed packages excluded).

    pydoc_data/topics.py is left out: it is the reference manual as string literals, and a training
    document holding the manual would leak its held-out topics.
    """
    stdlib = sysconfig.get_paths()["stdlib"]
    paths = _files_below(stdlib, suffix=".py", skip_dirs=("site-packages", "dist-packages", "__pycache__"))
    return [p for p in paths if not p.endswith(os.path.join("pydoc_data", "topics.py"))]


def manual_topics() -> Iterator[bytes]:
    """The Python reference manual as pydoc ships it, one topic per document, sorted by name.

    A topic whose text lies inside another topic is left out (it would be trained on as part of the
    other one while held out itself); identical topics are kept once.
    """
    from pydoc_data.topics import topics  # a 0.8 MB module: imported only when the corpus is read

    texts = list(dict.fromkeys(topics[name].encode("utf-8") for name in sorted(topics)))
    for text in texts:
        if not any(text in other for other in texts if other is not text):
            yield text


def builtin_documents() -> Iterator[bytes]:
    """Yield the offline corpus: reference-manual topics (sorted by name), then stdlib sources."""
    yield from manual_topics()
    for path in stdlib_sources():
        with open(path, "rb") as f:
            yield f.read()


def _read_source(path: str) -> str | None:
    """A .py file as text (its coding cookie honoured, newlines as \\n), None if it cannot be decoded."""
    try:
        with tokenize.open(path) as f:
            return f.read()
    except (SyntaxError, UnicodeDecodeError, OSError):
        return None


def _docstrings(tree: ast.AST) -> Iterator[tuple[ast.AST, ast.Expr]]:
    """(owner, statement) for every docstring: the leading string statement of a module, class or def."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
                    and isinstance(first.value.value, str):
                yield node, first


def _parse(source: str) -> ast.Module | None:
    with warnings.catch_warnings():  # invalid escapes in old test files: not our concern here
        warnings.simplefilter("ignore")
        try:
            return ast.parse(source)
        except (SyntaxError, ValueError):
            return None


def _comments(source: str) -> list[tokenize.TokenInfo] | None:
    try:
        tokens = tokenize.generate_tokens(io.StringIO(source).readline)
        return [t for t in tokens if t.type == tokenize.COMMENT]
    except (tokenize.TokenError, SyntaxError):
        return None


def strip_docstrings_and_comments(source: str) -> str | None:
    """Python source without its docstrings and comments, layout otherwise kept; None if it does not parse.

    A docstring that is a body's only statement becomes `pass`; lines left empty by a removal go, blank
    lines of the original stay (at most two in a row).
    """
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

    Shebang, coding and tool lines (`noqa`, `type:`, `pragma`) and comments without words are left out.
    """
    tree, comments = _parse(source), _comments(source)
    pieces = []  # (line, text)
    for _, stmt in _docstrings(tree) if tree is not None else ():
        text = inspect.cleandoc(stmt.value.value)
        if re.search(r"[A-Za-z]{2}", text):
            pieces.append((stmt.lineno, text))
    block, last_row = [], -2
    for tok in comments or ():
        text = tok.string.lstrip("#").strip()
        skip = tok.string.startswith("#!") or TOOL_COMMENT.match(text)
        if skip or not re.search(r"[A-Za-z]{2}", text):
            continue
        if tok.start[0] != last_row + 1 and block:
            pieces.append(block[0])
            block = []
        block = [(block[0][0], block[0][1] + "\n" + text)] if block else [(tok.start[0], text)]
        last_row = tok.start[0]
    pieces += block
    return "\n\n".join(text for _, text in sorted(pieces, key=lambda p: p[0]))


def _stdlib_texts(transform) -> Iterator[Document]:
    """transform(source) of every stdlib .py file, split by the file's bytes (on the side the file has in
    `builtin`)."""
    for path in stdlib_sources():
        source = _read_source(path)
        text = transform(source) if source is not None else None
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


# --------------------------------------------------------------------------------------------------- datasets


def group_articles(rows: Iterable[str]) -> Iterator[str]:
    """Join the line rows of a line dataset (wikitext) into articles.

    A row " = Title = " starts a new article; every other row, empty ones included, belongs to the current
    one (rows before the first heading form a document of their own). Each row is one line of the article:
    a row without a final newline gets one, so wikitext's empty rows come back as its blank lines.
    """
    article: list[str] = []
    for row in rows:
        if ARTICLE_HEADING.fullmatch(row) and article:
            yield "".join(article)
            article = []
        article.append(row if row.endswith("\n") else row + "\n")
    if article:
        yield "".join(article)


def rows_to_documents(rows: Iterable[str], probe: int = 100) -> Iterator[bytes]:
    """Documents (UTF-8) from the text rows of a dataset, in order; whitespace-only ones are dropped.

    Rows are documents themselves, unless one of the first `probe` rows is a wikitext article heading:
    then the rows are lines and are grouped into articles (group_articles), so that a held-out document
    is a whole article and never a line of a training one.
    """
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


def hf_documents(spec: str, text_field: str | None = None) -> Iterator[bytes]:
    """Documents of a streamed Hugging Face dataset `NAME[:CONFIG]` (train split), see rows_to_documents."""
    name, _, config = spec.partition(":")
    hint = "; it needs a network connection to the Hugging Face hub, or use a local file/folder"
    yield from rows_to_documents(_dataset_rows(f"hf:{spec}", text_field, hint, name, config or None))


def local_dataset_documents(path: str, text_field: str | None = None) -> Iterator[bytes]:
    """Documents of a local .jsonl/.json/.parquet/.arrow file read through `datasets`."""
    builder = LOCAL_DATASET_FORMATS[os.path.splitext(path)[1].lower()]
    yield from rows_to_documents(_dataset_rows(path, text_field, "", builder, data_files=path))


# ---------------------------------------------------------------------------------------------------- loading


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise DataError(f"{path}: cannot read it ({e.strerror or _first_line(e)})") from None


def load_corpus(data: str = "builtin", max_bytes: int | None = None,
                text_field: str | None = None) -> list[bytes]:
    """The documents of `data`, in a fixed order, totalling at most max_bytes.

    Whole documents only, up to the first that does not fit; a first document larger than max_bytes is
    cut to it (a one-document corpus, split into head and tail). `text_field` names the text column of a
    dataset (hf: or a local .jsonl/.json/.parquet/.arrow file); "text" when None.
    """
    if data in BUILTIN_CORPORA:
        source = BUILTIN_CORPORA[data]()
    elif data.startswith("builtin:"):
        raise DataError(f"{data}: no such builtin corpus (choose from {', '.join(BUILTIN_CORPORA)})")
    elif data.startswith("hf:"):
        source = hf_documents(data[3:], text_field)
    elif os.path.isfile(data):
        if os.path.splitext(data)[1].lower() in LOCAL_DATASET_FORMATS:
            source = local_dataset_documents(data, text_field)
        else:
            source = iter([_read(data)])
    elif os.path.isdir(data):
        paths = _files_below(data)
        if not paths:
            raise DataError(f"{data}: folder holds no files")
        source = (_read(p) for p in paths)
    else:
        raise DataError(f"{data}: no such file or folder (use builtin, builtin:code, builtin:prose, a path, "
                        "or hf:NAME[:CONFIG])")
    docs, total = [], 0
    for doc in source:
        if not doc:
            continue
        if max_bytes is not None and total + len(doc) > max_bytes:
            if not docs and max_bytes > 0:
                docs.append(doc[:max_bytes])  # a one-document corpus: its tail is held out
            break
        docs.append(doc)
        total += len(doc)
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


def distinct_documents(docs: list[bytes]) -> list[bytes]:
    """The documents split_documents splits, in corpus order: empty ones, exact duplicates and those that
    are a prefix of another dropped (a prefix's bytes are all in the longer one, on whichever side)."""
    docs = [d for d in dict.fromkeys(docs) if d]
    ordered = sorted(docs)  # a prefix sorts right before the documents it starts
    prefixes = {a for a, b in zip(ordered, ordered[1:]) if b.startswith(a)}
    return [d for d in docs if d not in prefixes]


def split_documents(docs: list[bytes], val_every: int = VAL_EVERY) -> tuple[list[bytes], list[bytes]]:
    """(train, val): whole documents, in corpus order, after distinct_documents.

    A document is held out when its content_hash lies in the lowest 1/val_every of the range, so its side
    does not depend on where it sits or on which other documents are loaded. A corpus whose hashes hold
    none out gives its lowest-hash document; one that would hold all out trains on its highest. A single
    document is split into its head (train) and contiguous tail (val, 1/val_every of it).
    """
    docs = distinct_documents(docs)
    if len(docs) == 1:
        doc = docs[0]
        cut = len(doc) - max(1, len(doc) // val_every) if len(doc) > 1 else len(doc)
        return [doc[:cut]], ([doc[cut:]] if cut < len(doc) else [])
    if not docs:
        return [], []
    hashes = [content_hash(d) for d in docs]
    val_idx = {i for i, h in enumerate(hashes) if h * val_every < 2**64}
    if not val_idx:
        val_idx = {int(np.argmin(hashes))}
    if len(val_idx) == len(docs):
        val_idx.remove(int(np.argmax(hashes)))
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


# --------------------------------------------------------------------------------------------- held-out check


def _digest(doc: bytes) -> str:
    return hashlib.sha256(doc).hexdigest()[:16]


def block_digests(doc: bytes, start: int = 0) -> list[str]:
    """Hex digests (64 bits) of the document's full BLOCK_BYTES blocks at aligned offsets (multiples of
    the block size, from the document's first byte) that end after `start`: the block straddling `start`
    counts."""
    first = start // BLOCK_BYTES * BLOCK_BYTES
    return [hashlib.sha256(doc[o:o + BLOCK_BYTES]).hexdigest()[:BLOCK_DIGEST]
            for o in range(first, len(doc) - BLOCK_BYTES + 1, BLOCK_BYTES)]


def prefix_digests(doc: bytes) -> list[str]:
    """Hex digests (64 bits) of doc[:k * BLOCK_BYTES] for k = 1, 2, ...: the document's prefix chain."""
    h, out = hashlib.sha256(), []
    for o in range(0, len(doc) - BLOCK_BYTES + 1, BLOCK_BYTES):
        h.update(doc[o:o + BLOCK_BYTES])
        out.append(h.copy().hexdigest()[:BLOCK_DIGEST])
    return out


def document_digests(docs: list[bytes]) -> list[list]:
    """[sha256 prefix, length, block digests, prefix digests] of each document: a compact record of what a
    model trained on.

    The block digests (one string, 16 hex characters per aligned 4 KB block; a string, not bytes, so that
    torch.load(weights_only=True) reads it) and the prefix chain (16 hex characters per 4 KB boundary) let
    held_out_seen notice a model that trained on another cut of the same document, whose copy has another
    whole-document digest. 8 bytes of record per KB trained on.
    """
    return [[_digest(d), len(d), "".join(block_digests(d)), "".join(prefix_digests(d))] for d in docs]


def _unpack(packed: str) -> list[str]:
    return [packed[o:o + BLOCK_DIGEST] for o in range(0, len(packed), BLOCK_DIGEST)]


def held_out_seen(trained_on: list[list], docs: list[bytes], val_docs: list[bytes]) -> int:
    """How many of `val_docs` (the held-out part of corpus `docs`) a model trained on `trained_on` saw.

    A held-out document counts when its digest is among the trained ones; when one of its aligned blocks
    was trained on, unless this corpus's own training documents hold that same block too. For a
    one-document corpus (its tail held out) the blocks checked start with the one straddling the cut, and
    the tail also counts as seen when the model trained on a prefix of the document reaching into it, or
    on a document longer than the cut that shares the document's prefix up to the last 4 KB boundary
    within both (another cut of it, longer or shorter). Records are [digest, length] (old), + block
    digests, + prefix digests; each check runs where its part of the record is there. An overlap that
    holds no whole aligned block, with no shared 4 KB boundary, can go unnoticed (documents under 4 KB).
    """
    whole = {entry[0] for entry in trained_on}
    blocks = {b for e in trained_on if len(e) > 2 for b in _unpack(e[2])}
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


def corpus_summary(docs: list[bytes]) -> str:
    n = sum(len(d) for d in docs)
    return f"{len(docs)} documents, {n:,} bytes"


if __name__ == "__main__":
    spec = sys.argv[1] if len(sys.argv) > 1 else "builtin"
    docs = load_corpus(spec, max_bytes=int(sys.argv[2]) if len(sys.argv) > 2 else None)
    train, val = split_documents(docs)
    print(f"{spec}: {corpus_summary(docs)}; train {corpus_summary(train)}; val {corpus_summary(val)}")
