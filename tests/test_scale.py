"""Past one machine's memory (issue 13): prepared, memory-mapped corpora."""
import json
import random

import numpy as np
import pytest
import torch

from byte_data import (
    ByteWindows,
    DataError,
    MappedCorpus,
    document_digests,
    held_out_seen,
    load_corpus,
    main,
    prepare_corpus,
    split_documents,
)
from train_blt import LazyLengths, PatchedWindows, document_lengths, patch_config


def synthetic_folder(path, n=120, seed=0):
    rng = random.Random(seed)
    words = ["alpha", "beta", "gamma", "(x)", "\n", "return", "=", "0x1f", "ü"]
    docs = [f"doc {i}: {' '.join(rng.choices(words, k=rng.randint(5, 900)))}".encode() for i in range(n)]
    docs += [docs[3], b"", docs[7][:10], docs[8] + b" and more"]  # a duplicate, empty, short prefixes
    path.mkdir()
    for i, d in enumerate(docs):
        (path / f"d{i:04d}.txt").write_bytes(d)
    return str(path)


def test_a_prepared_corpus_splits_and_reads_as_the_corpus_itself(tmp_path):
    data = synthetic_folder(tmp_path / "src")
    info = prepare_corpus(data, str(tmp_path / "prep"), show_progress=False)
    docs, mapped = load_corpus(data), load_corpus(str(tmp_path / "prep"))
    assert isinstance(mapped, MappedCorpus)
    assert json.loads((tmp_path / "prep" / "corpus.json").read_text()) == info
    train, val = split_documents(docs)
    m_train, m_val = split_documents(mapped)
    assert list(m_train) == train and list(m_val) == val and len(val) >= 5
    assert info["train_bytes"] == sum(map(len, train)) and info["val_bytes"] == sum(map(len, val))
    # a cap keeps whole documents, each on its side
    capped = load_corpus(str(tmp_path / "prep"), max_bytes=20_000)
    c_train, c_val = split_documents(capped)
    assert set(c_train) <= set(train) and set(c_val) <= set(val) and capped.num_bytes <= 20_000
    # windows straight from the map equal windows from the documents in memory
    for step in (0, 5):
        a, b = ByteWindows(m_train, 64, seed=3).batch(step, 8), ByteWindows(train, 64, seed=3).batch(step, 8)
        assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert held_out_seen(document_digests(m_train), mapped, m_val) == 0
    assert held_out_seen(document_digests(mapped), mapped, m_val) == len(val)


def test_a_prepared_one_document_corpus_holds_its_tail_out(tmp_path):
    path = tmp_path / "one.bin"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8).tobytes())
    prepare_corpus(str(path), str(tmp_path / "prep"), show_progress=False)
    mapped = load_corpus(str(tmp_path / "prep"), max_bytes=1000)  # one document: kept whole
    assert [list(x) for x in split_documents(mapped)] == list(split_documents(load_corpus(str(path))))
    train, val = split_documents(mapped)
    longer = document_digests([path.read_bytes()])
    assert held_out_seen(longer, mapped, val) == 1
    assert held_out_seen(document_digests(train), mapped, val) == 0


def test_static_patches_of_a_mapped_corpus_are_read_per_document(tmp_path):
    data = synthetic_folder(tmp_path / "src", n=60)
    prepare_corpus(data, str(tmp_path / "prep"), show_progress=False)
    mapped_train, _ = split_documents(load_corpus(str(tmp_path / "prep")))
    train, _ = split_documents(load_corpus(data))
    config = patch_config(method="static", patch_size=4)
    lazy, eager = document_lengths(mapped_train, None, config), document_lengths(train, None, config)
    assert isinstance(lazy, LazyLengths) and all(np.array_equal(lazy[i], eager[i]) for i in range(len(eager)))
    a = PatchedWindows(mapped_train, lazy, 64, seed=2).batch(3, 8)
    b = PatchedWindows(train, eager, 64, seed=2).batch(3, 8)
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_prepare_command_line_and_bad_folders(tmp_path, capsys):
    data = synthetic_folder(tmp_path / "src", n=30)
    assert main(["prepare", "--data", data, "--out", str(tmp_path / "prep")]) == 0
    assert "documents" in capsys.readouterr().out
    (tmp_path / "prep" / "bytes.bin").write_bytes(b"short")  # truncated
    with pytest.raises(DataError, match="not a complete prepared corpus"):
        load_corpus(str(tmp_path / "prep"))
    assert main(["prepare", "--data", str(tmp_path / "nothing"), "--out", str(tmp_path / "p2")]) == 2
