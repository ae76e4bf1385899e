"""Past one machine's memory (issue 13): prepared, memory-mapped corpora; precomputed entropies."""
import json
import os
import random
import shutil
import subprocess
import sys

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
    precomputed_entropies,
    prepare_corpus,
    split_documents,
)
from entropy_llm import MinimalLLM, build_config, compute_entropies, entropy_chunks, precompute_entropies
from save_entropy_model import load_entropy_model, model_fingerprint, save_checkpoint
from train_blt import LazyLengths, PatchedWindows, document_lengths, patch_config, prepare_dataset

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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


# ------------------------------------------------------------------------------------- precomputed entropies


def tiny_entropy_model(seed=0):
    """A random tiny entropy model whose entropies spread over nats (a sharper head than at init)."""
    torch.manual_seed(seed)
    model = MinimalLLM(build_config("tiny", max_steps=1, max_seq_len=256)).eval()
    with torch.no_grad():
        model.head.weight.mul_(30)
    return model


def test_precomputed_entropies_equal_compute_entropies_and_resume(tmp_path):
    data = synthetic_folder(tmp_path / "src", n=12)
    prep = str(tmp_path / "prep")
    prepare_corpus(data, prep, show_progress=False)
    model = tiny_entropy_model()
    report = precompute_entropies(model, prep, "cpu", chunk_bytes=4_000, show_progress=False)
    assert report["chunks"] > 4 and report["computed_chunks"] == report["chunks"]
    stored = MappedCorpus(prep)
    stored = stored.view(np.arange(len(stored.side)))  # dropped documents have entropies too
    h = precomputed_entropies(stored, model_fingerprint(model))
    want = compute_entropies(model, list(stored))
    assert all(np.array_equal(h[i], w.astype(np.float16).astype(np.float32)) for i, w in enumerate(want))
    train, _ = split_documents(load_corpus(prep))
    assert precomputed_entropies(train, model_fingerprint(tiny_entropy_model(seed=1))) is None  # other model
    # an interrupted run: the .json not written, one chunk unmarked and its values garbage
    path = report["entropies"]
    before = np.fromfile(path, dtype=np.float16)
    os.remove(path + ".json")
    os.makedirs(path + ".parts")
    chunks = entropy_chunks(stored.lengths, 4_000)
    for k in range(len(chunks)):
        if k != 2:
            open(os.path.join(path + ".parts", f"{k:06d}"), "w").close()
    values = np.memmap(path, dtype=np.float16, mode="r+")
    a, b = chunks[2]
    values[stored.starts[a]:stored.starts[b - 1] + stored.lengths[b - 1]] = 7.0
    values.flush()
    again = precompute_entropies(model, prep, "cpu", chunk_bytes=4_000, show_progress=False)
    assert again["computed_chunks"] == 1 and np.array_equal(np.fromfile(path, dtype=np.float16), before)
    assert precomputed_entropies(stored, model_fingerprint(model)) is not None


def test_train_blt_reads_precomputed_entropies(tmp_path, capsys):
    data = synthetic_folder(tmp_path / "src", n=12)
    prep = str(tmp_path / "prep")
    prepare_corpus(data, prep, show_progress=False)
    model = tiny_entropy_model()
    docs = load_corpus(prep)
    median = float(np.median(compute_entropies(model, docs[0])))
    config = patch_config(method="global", entropy_threshold=median, min_patch_size=1, cache_patches=False)
    prepare_dataset(docs, config, model)  # none precomputed: computed here, with a note
    assert "no precomputed entropies" in capsys.readouterr().err
    precompute_entropies(model, prep, "cpu", show_progress=False)
    dataset = prepare_dataset(docs, config, model)
    assert "no precomputed entropies" not in capsys.readouterr().err
    assert isinstance(dataset.train_lengths, LazyLengths)
    train_docs, lengths = dataset.train_docs, dataset.train_lengths
    assert all(lengths[i].sum() == len(train_docs[i]) for i in range(len(train_docs)))
    assert 1.3 < dataset.mean_patch_size < 3


@pytest.mark.slow
def test_two_gloo_processes_precompute_exactly_what_one_does(tmp_path):
    data = synthetic_folder(tmp_path / "src", n=16)
    prepare_corpus(data, str(tmp_path / "one"), show_progress=False)
    shutil.copytree(tmp_path / "one", tmp_path / "two")
    save_checkpoint(tiny_entropy_model(), str(tmp_path / "m.pth"))
    reports = {}
    for name, launcher in (("one", []), ("two", ["-m", "torch.distributed.run", "--standalone",
                                                  "--nproc_per_node=2"])):
        cmd = [sys.executable, *launcher, os.path.join(ROOT, "entropy_llm.py"), "--precompute", "--data",
               str(tmp_path / name), "--checkpoint", str(tmp_path / "m.pth"),
               "--precompute_chunk_bytes", "6000", "--report", str(tmp_path / f"{name}.json")]
        r = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
        reports[name] = json.loads((tmp_path / f"{name}.json").read_text())
    assert reports["two"]["processes"] == 2
    assert reports["two"]["computed_chunks"] == reports["one"]["chunks"] > 3
    files = [tmp_path / name / os.path.basename(reports[name]["entropies"]) for name in ("one", "two")]
    assert files[0].read_bytes() == files[1].read_bytes()
    assert not os.path.exists(str(files[1]) + ".parts") and os.path.exists(str(files[1]) + ".json")


# --------------------------------------------------------------------------------------------------- FSDP2

DIES_AT_STEP_4 = """import sys
import byte_data, entropy_llm
batch = byte_data.ByteWindows.batch
def dies(self, step, *args, **kwargs):
    if step == 4:
        raise SystemExit(3)  # every rank, after the checkpoint of step 3
    return batch(self, step, *args, **kwargs)
byte_data.ByteWindows.batch = dies
sys.exit(entropy_llm.main(sys.argv[1:]))
"""
TORCHRUN = ("-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2")


def run_script(tmp_path, *args, launcher=(), script="entropy_llm.py"):
    path = script if os.path.isabs(script) else os.path.join(ROOT, script)
    return subprocess.run([sys.executable, *launcher, path, *args], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONPATH": ROOT})


@pytest.mark.slow
def test_fsdp_two_gloo_processes_train_as_one_and_resume(tmp_path):
    flags = ["--preset", "tiny", "--max_steps", "6", "--batch_size", "8", "--max_bytes", "30000",
             "--eval_interval", "0", "--ckpt_interval", "3", "--warmup_steps", "2"]
    runs = {"one": (), "fsdp": TORCHRUN}
    for name, launcher in runs.items():
        extra = ["--fsdp"] if launcher else []
        r = run_script(tmp_path, *flags, *extra, "--out", f"{name}.pth", "--report", f"{name}.json",
                       launcher=launcher)
        assert r.returncode == 0, r.stderr[-3000:]
    one, two = (json.loads((tmp_path / f"{n}.json").read_text()) for n in runs)
    assert two["train_loss"] == pytest.approx(one["train_loss"], abs=1e-4)
    assert two["val_bpb"] == pytest.approx(one["val_bpb"], abs=1e-4)
    assert (tmp_path / "fsdp.pth.dcp").is_dir()
    a, b = load_entropy_model(str(tmp_path / "one.pth")), load_entropy_model(str(tmp_path / "fsdp.pth"))
    pairs = zip(a.state_dict().values(), b.state_dict().values())
    assert all(torch.allclose(x, y, atol=1e-5) for x, y in pairs if isinstance(x, torch.Tensor))
    # interrupted after the checkpoint of step 3, then resumed from its torch.distributed.checkpoint folder
    (tmp_path / "dies.py").write_text(DIES_AT_STEP_4)
    r = run_script(tmp_path, *flags, "--fsdp", "--out", "cut.pth", launcher=TORCHRUN,
                   script=str(tmp_path / "dies.py"))
    assert r.returncode != 0 and (tmp_path / "cut.pth.dcp").is_dir()
    r = run_script(tmp_path, *flags, "--fsdp", "--out", "cut.pth", "--resume", "--report", "cut.json",
                   launcher=TORCHRUN)
    assert r.returncode == 0, r.stderr[-3000:]
    resumed = json.loads((tmp_path / "cut.json").read_text())
    assert resumed["train_loss"] == pytest.approx(two["train_loss"], abs=1e-6)
    r = run_script(tmp_path, *flags, "--out", "cut.pth", "--resume")  # a sharded checkpoint needs --fsdp
    assert r.returncode != 0 and "--fsdp" in r.stderr


@pytest.mark.slow
def test_fsdp_blt_two_gloo_processes_train_as_one(tmp_path):
    flags = ["--preset", "tiny", "--method", "space", "--max_steps", "4", "--batch_size", "4",
             "--max_bytes", "30000", "--eval_interval", "0", "--ckpt_interval", "0", "--warmup_steps", "1",
             "--max_patch_size", "16"]
    for name, launcher in (("one", ()), ("fsdp", TORCHRUN)):
        extra = ["--fsdp"] if launcher else []
        r = run_script(tmp_path, *flags, *extra, "--out", f"{name}.pth", "--report", f"{name}.json",
                       launcher=launcher, script="train_blt.py")
        assert r.returncode == 0, r.stderr[-3000:]
    one, two = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("one", "fsdp"))
    assert two["train_loss"] == pytest.approx(one["train_loss"], abs=1e-4)
    assert two["val_bpb"] == pytest.approx(one["val_bpb"], abs=1e-4)
