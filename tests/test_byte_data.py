"""byte_data.py: the content-hash split, capping, the held-out check, builtin corpora, dataset rows."""
import ast
import inspect
import io
import itertools
import json
import random
import tokenize

import numpy as np
import pytest
import torch

from byte_data import (
    BLOCK_BYTES,
    DataError,
    Document,
    builtin_code_documents,
    builtin_documents,
    builtin_prose_documents,
    content_hash,
    docstrings_and_comments,
    document_digests,
    group_articles,
    held_out_seen,
    load_corpus,
    manual_topics,
    rows_to_documents,
    split_documents,
    stdlib_sources,
    strip_docstrings_and_comments,
)


def held_out(doc: bytes) -> bool:
    return content_hash(doc) * 10 < 2**64


def synthetic_docs(n: int, seed: int = 0) -> list[bytes]:
    rng = random.Random(seed)
    words = ["alpha", "beta", "gamma", "delta", "(x)", "\n", "return", "=", "0x1f"]
    return [f"doc {i}: ".encode() + " ".join(rng.choices(words, k=rng.randint(20, 400))).encode()
            for i in range(n)]


def random_bytes(n: int, seed: int) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


def held_out_random_bytes(n: int, want: bool, seed: int = 0) -> bytes:
    """Random bytes whose content hash puts them on the wanted side of the split."""
    return next(d for s in itertools.count(seed) if held_out(d := random_bytes(n, s)) == want)


# -------------------------------------------------------------------------------------------------- the split


def test_split_depends_on_content_not_on_order_or_the_rest_of_the_corpus():
    docs = synthetic_docs(300)
    train, val = split_documents(docs)
    assert 15 <= len(val) <= 50 and len(train) + len(val) == 300
    assert not set(train) & set(val) and set(val) == {d for d in docs if held_out(d)}
    assert [d for d in docs if d in set(val)] == val  # corpus order kept
    shuffled = random.Random(1).sample(docs, len(docs))
    assert set(split_documents(shuffled)[1]) == set(val)
    train_s, val_s = split_documents(docs[:150])  # a smaller cut: every document keeps its side
    assert val_s and set(val_s) <= set(val) and set(train_s) <= set(train)


def test_exact_duplicates_are_dropped_before_splitting():
    docs = synthetic_docs(60)
    dup = next(d for d in docs if held_out(d))
    train, val = split_documents(docs + [dup, docs[0], docs[0]])
    assert sorted(train + val) == sorted(docs)
    assert val.count(dup) == 1 and dup not in train


def test_tiny_corpora_still_hold_one_document_out():
    docs = [d for d in synthetic_docs(40) if not held_out(d)][:3]
    train, val = split_documents(docs)
    assert len(val) == 1 and val[0] == min(docs, key=content_hash) and len(train) == 2
    train, val = split_documents([held_out_random_bytes(100, True, s) for s in (0, 50)])
    assert len(train) == 1 and len(val) == 1


def test_one_document_gives_its_tail():
    head, tail = split_documents([b"abcdefghijklmnopqrst"])
    assert head == [b"abcdefghijklmnopqr"] and tail == [b"st"]


def test_empty_documents_are_dropped():
    train, val = split_documents([b"", b"a", b"", b"b", b"c"])
    assert sorted(train + val) == [b"a", b"b", b"c"]
    assert split_documents([b"", b"abcdefghijklmnopqrst"]) == ([b"abcdefghijklmnopqr"], [b"st"])


def test_near_duplicates_land_on_the_same_side():
    heads = [random_bytes(BLOCK_BYTES + 900, seed=s) for s in range(60)]
    docs = heads + [h + b"y" for h in heads] + [h[:BLOCK_BYTES] + b"an edit" + h[BLOCK_BYTES:] for h in heads]
    train, val = split_documents(docs)
    assert len(val) >= 3 and len(train) + len(val) == 2 * len(heads)  # each head is a prefix of head + b"y"
    val_heads = {d[:BLOCK_BYTES] for d in val}
    assert not any(d[:BLOCK_BYTES] in val_heads for d in train)
    short = [f"short {i}".encode() for i in range(40)]  # under 4 KB: a prefix of another is dropped
    train, val = split_documents(short + [d + b"y" for d in short])
    assert sorted(train + val) == sorted(d + b"y" for d in short)


def test_a_document_is_split_by_its_split_key():
    key = held_out_random_bytes(100, want=True)
    derived = [Document(f"derived {i:02d}".encode(), split_key=key) for i in range(20)]
    plain = [d for d in synthetic_docs(60) if not held_out(d)]
    train, val = split_documents(derived + plain)
    assert set(val) == set(derived) and isinstance(val[0], Document)
    assert type(derived[0][:3]) is bytes and derived[0] == b"derived 00"


# ---------------------------------------------------------------------------------------------------- capping


def test_a_cap_keeps_whole_documents_so_no_cut_leaks_into_another(tmp_path):
    docs = synthetic_docs(80)
    for i, d in enumerate(docs):
        (tmp_path / f"doc{i:03d}.txt").write_bytes(d)
    assert load_corpus(str(tmp_path)) == docs
    large = load_corpus(str(tmp_path), max_bytes=10**9)
    _, val_large = split_documents(large)
    # a cap inside a held-out document whose cut copy would land on the training side
    ends = np.cumsum([len(d) for d in docs])
    j = next(j for j in range(5, len(docs)) if held_out(docs[j])
             and not held_out(docs[j][: len(docs[j]) // 2]))
    cap = int(ends[j - 1]) + len(docs[j]) // 2
    small = load_corpus(str(tmp_path), max_bytes=cap)
    assert small == docs[:j] and sum(map(len, small)) <= cap
    train_small, _ = split_documents(small)
    assert not any(v.startswith(t) for t in train_small for v in val_large)
    # a cap below the first document: that document's head, a one-document corpus
    assert load_corpus(str(tmp_path), max_bytes=10) == [docs[0][:10]]


# --------------------------------------------------------------------------------------------- held-out check


def test_held_out_check_catches_a_model_trained_on_a_longer_cut_of_one_document(tmp_path):
    path = tmp_path / "one.bin"
    path.write_bytes(random_bytes(200_000, seed=3))
    small, large = load_corpus(str(path), max_bytes=120_000), load_corpus(str(path))
    (train_s, val_s), (train_l, val_l) = split_documents(small), split_documents(large)
    assert len(small) == 1 and len(small[0]) == 120_000 and len(val_s[0]) == 12_000
    # the long cut trained on bytes 0..180,000, which hold this cut's whole tail (108,000..120,000)
    assert held_out_seen(document_digests(train_l), small, val_s) == 1
    assert held_out_seen(document_digests(train_s), large, val_l) == 0  # 0..108,000 misses 180,000..
    assert held_out_seen(document_digests(train_s), small, val_s) == 0
    assert held_out_seen(document_digests(train_l), large, val_l) == 0
    assert held_out_seen(document_digests(large), small, val_s) == 1  # trained on all of it
    assert held_out_seen(document_digests(train_l), small * 2, val_s) == 1  # duplicates: still one document


def test_held_out_check_catches_a_longer_cut_when_the_cut_is_small(tmp_path):
    path = tmp_path / "one.bin"
    path.write_bytes(random_bytes(200_000, seed=1))
    long_train, _ = split_documents(load_corpus(str(path), max_bytes=100_000))  # bytes 0..90,000
    for cap in (7_000, 40_000, 60_000, 80_000):  # every tail lies inside 0..90,000
        small = load_corpus(str(path), max_bytes=cap)
        train, val = split_documents(small)
        assert held_out_seen(document_digests(long_train), small, val) == 1, cap
        assert held_out_seen(document_digests(train), small, val) == 0, cap
        shorter = load_corpus(str(path), max_bytes=len(train[0]))
        assert held_out_seen(document_digests(split_documents(shorter)[0]), small, val) == 0, cap
    # 7,000: the tail (6,300..7,000) holds no whole block; the model's first 4 KB is this document's
    small = load_corpus(str(path), max_bytes=7_000)
    old = [entry[:3] for entry in document_digests(long_train)]  # records without the prefix chain
    assert held_out_seen(old, small, split_documents(small)[1]) == 0


def test_held_out_check_catches_a_one_document_head_of_a_held_out_document(tmp_path):
    first = held_out_random_bytes(50_000, want=True)
    docs = [first] + [held_out_random_bytes(5_000, want=False, seed=100 + 10 * i) for i in range(5)]
    train, val = split_documents(docs)
    assert val == [first]
    head_model = document_digests(split_documents([first[:30_000]])[0])  # a cap inside the first document
    torch.save(head_model, tmp_path / "record.pt")  # the record lives in checkpoints read with weights_only
    assert torch.load(tmp_path / "record.pt", weights_only=True) == head_model
    assert held_out_seen(head_model, docs, val) == 1
    assert held_out_seen(document_digests(train), docs, val) == 0


def test_shared_blocks_of_this_split_are_not_a_leak():
    shared = random_bytes(3 * 4096, seed=9)  # aligned blocks after each document's own first 4 KB
    a = next(d for s in itertools.count() if held_out(d := random_bytes(4096, 1000 + s) + shared))
    b = next(d for s in itertools.count() if not held_out(d := random_bytes(4096, 5000 + s) + shared))
    docs = [a, b, *synthetic_docs(20)]
    train, val = split_documents(docs)
    assert a in val and b in train
    assert held_out_seen(document_digests(train), docs, val) == 0
    assert held_out_seen(document_digests(docs), docs, val) == len(val)


def test_old_records_are_still_checked_and_the_record_stays_small():
    docs = synthetic_docs(200)
    train, val = split_documents(docs)
    record = document_digests(train)
    old = [entry[:2] for entry in record]
    assert held_out_seen(old, docs, val) == 0
    assert held_out_seen([e[:2] for e in document_digests(docs)], docs, val) == len(val) > 0
    assert held_out_seen([e[:3] for e in document_digests(docs)], docs, val) == len(val)
    one = [b"".join(docs)]
    head, tail = split_documents(one)
    assert held_out_seen([e[:2] for e in document_digests(one)], one, tail) == 1
    assert held_out_seen([e[:2] for e in document_digests(head)], one, tail) == 0
    big = random_bytes(1 << 20, seed=4)
    (entry,) = document_digests([big])
    assert 0 < len(entry[2]) <= 4 * 1024 and 0 < len(entry[3]) <= 4 * 1024  # 8 bytes per KB trained on


# ---------------------------------------------------------------------------------------------------- builtin


def test_builtin_leaves_out_the_manual_as_python_source():
    paths = stdlib_sources()
    assert len(paths) > 100 and not any(p.replace("\\", "/").endswith("pydoc_data/topics.py") for p in paths)
    topics = list(manual_topics())
    assert len(topics) > 50 and len(set(topics)) == len(topics)
    assert not any(a in b for a in topics for b in topics if a is not b)


def test_derived_builtin_documents_share_their_source_files_side():
    n_topics = len(list(manual_topics()))
    raw = set(itertools.islice(builtin_documents(), n_topics, n_topics + 60))  # the first 60 source files
    for corpus in (builtin_code_documents, builtin_prose_documents):
        derived = list(itertools.islice((d for d in corpus() if isinstance(d, Document)), 20))
        assert len(derived) == 20
        for doc in derived:
            assert doc.split_key in raw and content_hash(doc) == content_hash(doc.split_key)


def test_strip_docstrings_and_comments_keeps_the_code():
    src = ('#!/usr/bin/env python\n"""Module doc."""\nimport os  # why\n\ndef f(x):\n    """Döc ü."""\n'
           '    return x  # done\n\nclass A:\n    """Only a docstring."""\n\ndef g(): "one line"\n'
           'def h(): "ü"; return 1\ns = "# not a comment"\n')
    assert strip_docstrings_and_comments(src) == (
        'import os\n\ndef f(x):\n    return x\n\nclass A:\n    pass\n\ndef g(): pass\n'
        'def h(): return 1\ns = "# not a comment"\n')
    assert strip_docstrings_and_comments("def broken(:\n") is None


def test_builtin_code_has_no_docstrings_or_comments():
    docs = load_corpus("builtin:code", max_bytes=300_000)
    assert len(docs) > 10 and sum(map(len, docs)) > 250_000
    for doc in docs:
        text = doc.decode("utf-8")
        tree = ast.parse(text)
        owners = [n for n in ast.walk(tree)
                  if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))]
        assert all(ast.get_docstring(n) is None for n in owners)
        tokens = tokenize.generate_tokens(io.StringIO(text).readline)
        assert not any(t.type == tokenize.COMMENT for t in tokens)
    assert docs == load_corpus("builtin:code", max_bytes=300_000)


def test_builtin_prose_is_the_manual_then_docstrings_and_comments():
    src = ('#!/usr/bin/env python\n# -*- coding: utf-8 -*-\n"""Parse things.\n\n    Indented line.\n"""\n'
           'import os  # noqa: F401\n# First line of a note\n# and its second line.\nx = 1\n# ------\n'
           'def f():\n    """Return one."""\n    return 1  # the answer\n')
    assert docstrings_and_comments(src) == ("Parse things.\n\nIndented line.\n\nFirst line of a note\n"
                                            "and its second line.\n\nReturn one.\n\nthe answer")
    import json as json_module

    assert inspect.cleandoc(json_module.__doc__) in docstrings_and_comments(inspect.getsource(json_module))
    topics = list(manual_topics())
    prose = list(itertools.islice(builtin_prose_documents(), len(topics) + 30))
    assert prose[: len(topics)] == topics
    text = b"\n".join(prose[len(topics):]).decode("utf-8")
    assert sum(c.isalpha() or c.isspace() for c in text) > 0.85 * len(text) > 10_000  # words, not code
    docs = load_corpus("builtin:prose", max_bytes=100_000)
    assert docs == topics[: len(docs)] and sum(map(len, docs)) <= 100_000
    with pytest.raises(DataError, match="no such builtin corpus"):
        load_corpus("builtin:poetry")


# ----------------------------------------------------------------------------------------------- dataset rows


WIKITEXT_ROWS = ["", " = Alpha = \n", "", " Alpha text . \n", " = = Section = = \n", "", " more alpha \n", "",
                 " = Beta = \n", "", " Beta text \n"]


def test_line_rows_are_grouped_into_articles():
    alpha = " = Alpha = \n\n Alpha text . \n = = Section = = \n\n more alpha \n\n"
    assert list(group_articles(WIKITEXT_ROWS)) == ["\n", alpha, " = Beta = \n\n Beta text \n"]
    assert list(rows_to_documents(WIKITEXT_ROWS)) == [alpha.encode(), b" = Beta = \n\n Beta text \n"]
    assert list(rows_to_documents(["doc one", "", "  ", "doc = two"])) == [b"doc one", b"doc = two"]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_local_dataset_files_load_through_datasets(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pytest.importorskip("datasets")
    import pyarrow.parquet as pq

    rows = [{"text": "first document", "body": "b1"}, {"text": "second", "body": "b2"}]
    path = write_jsonl(tmp_path / "rows.jsonl", rows)
    assert load_corpus(path) == [b"first document", b"second"]
    assert load_corpus(path, text_field="body") == [b"b1", b"b2"]
    assert load_corpus(write_jsonl(tmp_path / "wiki.jsonl", [{"text": r} for r in WIKITEXT_ROWS])) == \
        list(rows_to_documents(WIKITEXT_ROWS))
    table = pa.table({"content": ["parquet one", "parquet two"], "id": [1, 2]})
    pq.write_table(table, tmp_path / "rows.parquet")
    two = [b"parquet one", b"parquet two"]
    assert load_corpus(str(tmp_path / "rows.parquet"), text_field="content") == two
    with pa.OSFile(str(tmp_path / "rows.arrow"), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    assert load_corpus(str(tmp_path / "rows.arrow"), text_field="content") == two
    with pytest.raises(DataError, match=r"rows\.parquet: rows have no field 'text'.*content") as e:
        load_corpus(str(tmp_path / "rows.parquet"))
    assert "\n" not in str(e.value)
    (tmp_path / "broken.parquet").write_bytes(b"not a parquet file")
    with pytest.raises(DataError, match=r"broken\.parquet: cannot read it") as e:
        load_corpus(str(tmp_path / "broken.parquet"))
    assert "\n" not in str(e.value)
