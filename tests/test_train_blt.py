"""train_blt.py: patched windows, held-out evaluation, the CLI, resume, and two-process DDP."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from byte_data import load_corpus
from entropy_llm import EntropyConfig, MinimalLLM
from save_entropy_model import save_checkpoint
from train_blt import (PatchedWindows, TrainConfig, build_model, eval_windows, prepare_dataset, train_blt,
                       TRAIN_PRESETS)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = TrainConfig(**TRAIN_PRESETS["tiny"])


def run(*args, cwd, module=("train_blt.py",)):
    cmd = [sys.executable, *[os.path.join(ROOT, m) if m.endswith(".py") else m for m in module], *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def entropy_path(tmp_path_factory):
    torch.manual_seed(0)
    path = str(tmp_path_factory.mktemp("entropy") / "entropy.pth")
    save_checkpoint(MinimalLLM(EntropyConfig(d_model=32, n_heads=2, n_layers=1, max_seq_len=64)), path)
    return path


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory):
    """Twenty documents, each longer than a window, so every row of every batch is full."""
    folder = tmp_path_factory.mktemp("corpus")
    rng = np.random.default_rng(0)
    words = [b"alpha", b"beta", b"gamma", b"delta", b"(x)", b"\n", b"    ", b"return", b"=", b"0x1f"]
    for i in range(20):
        text = b" ".join(words[j] for j in rng.integers(0, len(words), 300))
        (folder / f"doc{i:02d}.txt").write_bytes(text)
    return str(folder)


def test_windows_start_at_patch_starts_and_carry_the_documents_patches():
    rng = np.random.default_rng(0)
    docs = [bytes(rng.integers(0, 256, 1000, dtype=np.uint8)), b"short doc", bytes(rng.integers(0, 256, 700, dtype=np.uint8))]
    lengths = [np.array([3, 1, 4, 1, 5] * 71 + [6]), np.array([5, 4]), np.array([7] * 100)]
    assert [int(n.sum()) for n in lengths] == [len(d) for d in docs]
    w = PatchedWindows(docs, lengths, seq_len=64, seed=1)
    x, pl, y = w.batch(3, 32)
    assert torch.equal(x, w.batch(3, 32)[0]) and not torch.equal(x, w.batch(4, 32)[0])
    for r in range(32):
        n = int((y[r] != -100).sum())
        row = bytes(x[r, :n].tolist())
        assert int(pl[r].sum()) == n
        d = next(i for i, doc in enumerate(docs) if row in doc)
        assert n == min(64, len(docs[d]))  # full windows whenever the document allows
        starts = np.concatenate([[0], np.cumsum(lengths[d])]).tolist()
        s = docs[d].find(row)
        assert s in starts  # the window starts at a patch start
        inner = [int(v) for v in pl[r] if v > 0]
        full = np.diff(starts)[starts.index(s):]
        assert inner[:-1] == full[: len(inner) - 1].tolist() and inner[-1] <= full[len(inner) - 1]
    halves = [w.batch(3, 32, rank=k, world_size=2) for k in (0, 1)]
    assert torch.equal(torch.cat([h[0] for h in halves]), x)


def test_eval_windows_score_every_byte_once_from_a_patch_start():
    docs = [b"a" * 1000, b"b" * 10]
    lengths = [np.array([3, 5, 2] * 100 + [7, 3]), np.array([4, 6])]
    jobs = eval_windows(docs, lengths, seq_len=64)
    for i, d in enumerate(docs):
        mine = [j for j in jobs if j[0] == i]
        scored = np.concatenate([np.arange(k0, k1) for _, _, k0, k1 in mine])
        assert np.array_equal(scored, np.arange(len(d)))
        starts = set(np.concatenate([[0], np.cumsum(lengths[i])]).tolist())
        assert all(s in starts and e - s <= 64 for _, s, _, e in mine)
        assert all(k0 - s >= 32 - 7 for _, s, k0, _ in mine[1:])  # at least half a window of context, less a patch


def test_prepare_dataset_calibrates_on_training_documents_only(entropy_path, corpus_dir):
    from save_entropy_model import load_entropy_model

    docs = load_corpus(corpus_dir)
    model = load_entropy_model(entropy_path)
    ds = prepare_dataset(TINY, docs, model, entropy_path, cache_dir=os.path.join(corpus_dir, "..", "cache"))
    assert abs(ds.mean_patch_size - TINY.target_patch_size) / TINY.target_patch_size < 0.05
    assert not set(ds.train_docs) & set(ds.val_docs)
    changed = list(docs)
    changed[9] = b"\x00" * len(docs[9])  # document 9 is held out: calibration must not notice it
    ds2 = prepare_dataset(TINY, changed, model, entropy_path, cache_dir=os.path.join(corpus_dir, "..", "cache"))
    assert ds2.patch_config.entropy_threshold == ds.patch_config.entropy_threshold


def test_resume_reaches_the_same_loss_as_an_uninterrupted_run(tmp_path, corpus_dir, monkeypatch):
    cfg = TrainConfig(**{**TRAIN_PRESETS["tiny"], "patching": "space", "max_steps": 8, "ckpt_interval": 4})
    ds = prepare_dataset(cfg, load_corpus(corpus_dir))
    full = train_blt(build_model(cfg), ds, cfg, str(tmp_path / "full.pth"), "cpu")
    batch = PatchedWindows.batch

    def dies_at_step_6(self, step, *a, **k):
        if step == 6:
            raise KeyboardInterrupt
        return batch(self, step, *a, **k)

    killed = str(tmp_path / "killed.pth")
    monkeypatch.setattr(PatchedWindows, "batch", dies_at_step_6)
    with pytest.raises(KeyboardInterrupt):
        train_blt(build_model(cfg), ds, cfg, killed, "cpu")
    monkeypatch.undo()
    resumed = train_blt(build_model(cfg), ds, cfg, killed, "cpu", resume=killed)
    assert resumed["train_loss"] == pytest.approx(full["train_loss"], abs=1e-5)
    assert resumed["val_bpb"] == pytest.approx(full["val_bpb"], abs=1e-5)


def test_cli_train_eval_generate_end_to_end(tmp_path, entropy_path):
    ckpt, report = str(tmp_path / "blt.pth"), str(tmp_path / "r.json")
    r = run("--train_preset", "tiny", "--entropy_model_path", entropy_path, "--out", ckpt, "--report", report,
            cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    rep = json.load(open(report))
    assert {"val_bpb", "mean_patch_size", "params", "flops_per_byte", "bytes_per_s", "checkpoint"} <= set(rep)
    assert 0 < rep["val_bpb"] < 9 and rep["flops_per_byte"] > 0
    assert "held-out" in r.stdout

    sample = tmp_path / "sample.txt"
    sample.write_bytes(b"def f(x):\n    return x + 1\n" * 10)
    r = run("--eval", "--checkpoint", ckpt, "--data", str(sample), "--report", report, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.load(open(report))["num_bytes"] == len(sample.read_bytes())

    r = run("--generate", "--checkpoint", ckpt, "--prompt", "def ", "--max_new_bytes", "20", "--show_patches",
            "--temperature", "0", "--report", report, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = json.load(open(report))["output"]
    assert len(out.encode("utf-8", errors="surrogateescape")) >= 1 and r.stdout.strip()


def test_clear_one_line_errors(tmp_path, entropy_path):
    cases = [
        (["--train_preset", "tiny", "--entropy_model_path", str(tmp_path / "none.pth")], "python entropy_llm.py"),
        (["--eval", "--checkpoint", entropy_path], "expected a 'blt' model"),
        (["--train_preset", "tiny", "--patching", "space", "--data", str(tmp_path / "missing")], "no such file"),
        (["--train_preset", "tiny", "--patching", "nonsense"], "unknown patching"),
    ]
    for args, words in cases:
        r = run(*args, cwd=tmp_path)
        assert r.returncode == 2, (args, r.stderr)
        assert words in r.stderr and r.stderr.strip().count("\n") == 0, r.stderr


def test_two_gloo_processes_match_one_process(tmp_path, corpus_dir):
    common = ["--train_preset", "tiny", "--patching", "space", "--data", corpus_dir, "--batch_size", "4",
              "--max_steps", "5"]
    one, two = str(tmp_path / "one.json"), str(tmp_path / "two.json")
    r = run(*common, "--out", str(tmp_path / "one.pth"), "--report", one, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r = run(*common, "--out", str(tmp_path / "two.pth"), "--report", two, cwd=tmp_path,
            module=("-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "train_blt.py"))
    assert r.returncode == 0, r.stderr[-2000:]
    a, b = json.load(open(one)), json.load(open(two))
    assert b["train_loss"] == pytest.approx(a["train_loss"], abs=1e-4)
    assert b["val_bpb"] == pytest.approx(a["val_bpb"], abs=1e-4)


def test_an_entropy_model_that_saw_held_out_documents_is_refused(tmp_path, corpus_dir):
    from entropy_llm import build_config, train_entropy_model
    from save_entropy_model import load_entropy_model

    docs = load_corpus(corpus_dir)
    leaky = str(tmp_path / "leaky.pth")
    train_entropy_model(build_config("tiny", max_steps=2, eval_interval=0), docs, [], leaky, "cpu")  # every document
    with pytest.raises(ValueError, match="trained on 2 of the 2 held-out"):
        prepare_dataset(TINY, docs, load_entropy_model(leaky), leaky, cache_dir=str(tmp_path / "c"))
    # the same corpus as one document: the held-out tail lies inside what the model trained on
    one = [b"".join(docs)]
    train_entropy_model(build_config("tiny", max_steps=2, eval_interval=0), one, [], leaky, "cpu")
    with pytest.raises(ValueError, match="held-out"):
        prepare_dataset(TINY, one, load_entropy_model(leaky), leaky, cache_dir=str(tmp_path / "c"))


def test_a_corrupt_entropy_cache_is_recomputed(tmp_path, entropy_path):
    from save_entropy_model import load_entropy_model
    from train_blt import cached_entropies

    model, docs = load_entropy_model(entropy_path), [b"first document", b"second"]
    first = cached_entropies(model, docs, str(tmp_path))
    (path,) = [p for p in tmp_path.iterdir()]
    for junk in (b"", b"not numpy at all"):
        path.write_bytes(junk)
        again = cached_entropies(model, docs, str(tmp_path))
        assert all(np.array_equal(a, b) for a, b in zip(first, again))


def test_resume_with_other_settings_is_refused(tmp_path, corpus_dir):
    cfg = TrainConfig(**{**TRAIN_PRESETS["tiny"], "patching": "space", "max_steps": 3})
    ds = prepare_dataset(cfg, load_corpus(corpus_dir))
    path = str(tmp_path / "a.pth")
    train_blt(build_model(cfg), ds, cfg, path, "cpu")
    other = TrainConfig(**{**TRAIN_PRESETS["tiny"], "patching": "space", "max_steps": 3, "lr": 0.5})
    with pytest.raises(ValueError, match="other settings: lr"):
        train_blt(build_model(other), ds, other, str(tmp_path / "b.pth"), "cpu", resume=path)
