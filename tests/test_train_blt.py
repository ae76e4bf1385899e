"""train_blt.py: patched windows, held-out evaluation, checkpoints with their patching, resume, CLI, DDP."""
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

import train_blt
from byte_data import load_corpus
from entropy_llm import EntropyConfig, MinimalLLM
from save_entropy_model import load_checkpoint, load_entropy_model, save_checkpoint
from train_blt import (
    PatchedWindows,
    build_model,
    eval_windows,
    load_blt,
    model_config,
    patch_config,
    prepare_dataset,
    train_config,
)
from train_blt import train_blt as train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_FLAGS = ["--preset", "tiny", "--max_patch_size", "16", "--batch_size", "4", "--max_steps", "8",
              "--max_bytes", "60000", "--warmup_steps", "2", "--eval_interval", "0", "--ckpt_interval", "0"]


def tiny_train(**kw):
    small = dict(max_bytes=60_000, batch_size=4, max_steps=8, eval_interval=0, ckpt_interval=0,
                 warmup_steps=2, eval_max_bytes=5_000)
    return train_config(**{**small, **kw})


def tiny_patch(tmp, **kw):
    return patch_config(**{"max_patch_size": 16, "cache_dir": str(tmp), **kw})


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
    docs = [bytes(rng.integers(0, 256, 1000, dtype=np.uint8)), b"short doc",
            bytes(rng.integers(0, 256, 700, dtype=np.uint8))]
    lengths = [np.array([3, 1, 4, 1, 5] * 71 + [6]), np.array([5, 4]), np.array([7] * 100)]
    assert [int(n.sum()) for n in lengths] == [len(d) for d in docs]
    w = PatchedWindows(docs, lengths, max_seq_len=64, seed=1)
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
    jobs = eval_windows(docs, lengths, max_seq_len=64)
    for i, d in enumerate(docs):
        mine = [j for j in jobs if j[0] == i]
        scored = np.concatenate([np.arange(k0, k1) for _, _, k0, k1 in mine])
        assert np.array_equal(scored, np.arange(len(d)))
        starts = set(np.concatenate([[0], np.cumsum(lengths[i])]).tolist())
        assert all(s in starts and e - s <= 64 for _, s, _, e in mine)
        assert all(k0 - s >= 32 - 7 for _, s, k0, _ in mine[1:])  # half a window of context, less a patch


def test_prepare_dataset_calibrates_on_training_documents_only(entropy_path, corpus_dir, tmp_path,
                                                               monkeypatch):
    seen = []
    real = train_blt.calibrate

    def spy(config, model, docs, entropies=None):
        seen.append(list(docs))
        return real(config, model, docs, entropies)

    monkeypatch.setattr(train_blt, "calibrate", spy)
    ds = prepare_dataset(load_corpus(corpus_dir), tiny_patch(tmp_path), load_entropy_model(entropy_path),
                         entropy_path)
    assert seen == [ds.train_docs] and not set(ds.train_docs) & set(ds.val_docs) and ds.val_docs
    assert ds.patch_config.entropy_threshold is not None
    assert abs(ds.mean_patch_size - 4.5) / 4.5 < 0.05  # target_patch_size's default
    assert os.listdir(tmp_path)  # the entropies went to the patch config's cache folder


def test_a_nan_threshold_is_an_error_not_a_request_to_calibrate():
    with pytest.raises(ValueError, match="finite"):
        patch_config(entropy_threshold=float("nan"))
    assert patch_config().entropy_threshold is None  # None (the BLT's default) is what calibrates
    with pytest.raises(ValueError, match="batch_size and max_steps"):
        train_config(batch_size=0)  # TrainConfig checks the shared training fields (training.TrainFields)


def test_a_checkpoint_carries_its_patching_and_generates_with_it(tmp_path, corpus_dir):
    pc = tiny_patch(tmp_path, method="static", patch_size=3)
    ds = prepare_dataset(load_corpus(corpus_dir), pc)
    path = str(tmp_path / "blt.pth")
    train(build_model(model_config("tiny")), ds, tiny_train(max_steps=2), path, "cpu")
    meta = load_checkpoint(path, "blt")["_extra_state"]["meta"]
    assert meta["patch"]["method"] == "static" and meta["patch"]["patch_size"] == 3
    assert meta["entropy_model"] is None and meta["entropy_fingerprint"] is None
    model = load_blt(path)
    assert model.patcher.config.method == "static" and model.patcher.config.patch_size == 3
    assert len(model.generate(b"def ", 7, temperature=0)) == 7  # no patcher passed: the checkpoint's


def test_resume_reaches_the_same_loss_as_an_uninterrupted_run(tmp_path, corpus_dir, monkeypatch):
    cfg = tiny_train(max_steps=8, ckpt_interval=4)
    ds = prepare_dataset(load_corpus(corpus_dir), tiny_patch(tmp_path, method="space"))
    full = train(build_model(model_config("tiny")), ds, cfg, str(tmp_path / "full.pth"), "cpu")
    batch = PatchedWindows.batch

    def dies_at_step_6(self, step, *a, **k):
        if step == 6:
            raise KeyboardInterrupt
        return batch(self, step, *a, **k)

    killed = str(tmp_path / "killed.pth")
    monkeypatch.setattr(PatchedWindows, "batch", dies_at_step_6)
    with pytest.raises(KeyboardInterrupt):
        train(build_model(model_config("tiny")), ds, cfg, killed, "cpu")
    monkeypatch.undo()
    assert load_checkpoint(killed)["_extra_state"]["train"]["step"] == 4
    resumed = train(build_model(model_config("tiny")), ds, cfg, killed, "cpu", resume=killed)
    assert resumed["train_loss"] == pytest.approx(full["train_loss"], abs=1e-5)
    assert resumed["val_bpb"] == pytest.approx(full["val_bpb"], abs=1e-5)


def test_resume_with_other_settings_or_patches_is_refused(tmp_path, corpus_dir):
    docs = load_corpus(corpus_dir)
    ds = prepare_dataset(docs, tiny_patch(tmp_path, method="space"))
    path = str(tmp_path / "a.pth")
    train(build_model(model_config("tiny")), ds, tiny_train(max_steps=3), path, "cpu")
    with pytest.raises(ValueError, match="other settings: lr"):
        train(build_model(model_config("tiny")), ds, tiny_train(max_steps=3, lr=0.5), str(tmp_path / "b.pth"),
              "cpu", resume=path)
    with pytest.raises(ValueError, match="other settings: max_seq_len=128 \\(now 64\\)"):
        train(build_model(model_config("tiny", max_seq_len=64)), ds, tiny_train(max_steps=3),
              str(tmp_path / "b.pth"), "cpu", resume=path)
    static = prepare_dataset(docs, tiny_patch(tmp_path, method="static"))
    with pytest.raises(ValueError, match="other patches"):
        train(build_model(model_config("tiny")), static, tiny_train(max_steps=3), str(tmp_path / "b.pth"),
              "cpu", resume=path)


def test_an_entropy_model_that_saw_held_out_documents_is_refused(tmp_path, corpus_dir):
    from entropy_llm import build_config, train_entropy_model

    docs = load_corpus(corpus_dir)
    leaky = str(tmp_path / "leaky.pth")
    cfg = build_config("tiny", batch_size=8, max_steps=2, eval_interval=0)
    train_entropy_model(cfg, docs, [], leaky, "cpu")  # every document, held-out ones included
    with pytest.raises(ValueError, match=r"trained on (\d+) of the \1 held-out"):
        prepare_dataset(docs, tiny_patch(tmp_path), load_entropy_model(leaky), leaky)
    # the same corpus as one document: the held-out tail lies inside what the model trained on
    one = [b"".join(docs)]
    train_entropy_model(cfg, one, [], leaky, "cpu")
    with pytest.raises(ValueError, match="held-out"):
        prepare_dataset(one, tiny_patch(tmp_path), load_entropy_model(leaky), leaky)


def test_help_shows_one_name_per_concept(capsys):
    with pytest.raises(SystemExit):
        train_blt.main(["--help"])
    out = capsys.readouterr().out
    for name in ("--method", "--entropy_threshold", "--max_seq_len", "--preset", "--quick_demo",
                 "--checkpoint", "--entropy_model_path", "--text_field"):
        assert re.search(rf"{name}\b", out), name
    for old in ("--patching", "--threshold ", "--seq_len", "--train_preset"):
        assert old not in out, old


@pytest.mark.slow
def test_cli_train_eval_generate_end_to_end(tmp_path, entropy_path):
    ckpt, report = str(tmp_path / "blt.pth"), str(tmp_path / "r.json")
    r = run(*TINY_FLAGS, "--entropy_model_path", entropy_path, "--out", ckpt, "--report", report,
            cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    rep = json.load(open(report))
    assert {"val_bpb", "mean_patch_size", "params", "flops_per_byte", "bytes_per_s", "checkpoint"} <= set(rep)
    assert 0 < rep["val_bpb"] < 9 and rep["flops_per_byte"] > 0
    assert "held-out" in r.stdout
    model = load_blt(ckpt)  # the calibrated threshold and the entropy model came along
    assert model.patcher.config.entropy_threshold == rep["entropy_threshold"]
    assert model.patcher.entropy_model is not None

    sample = tmp_path / "sample.txt"
    sample.write_bytes(b"def f(x):\n    return x + 1\n" * 10)
    r = run("--eval", "--checkpoint", ckpt, "--data", str(sample), "--report", report, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.load(open(report))["num_bytes"] == len(sample.read_bytes())

    r = run("--generate", "--checkpoint", ckpt, "--prompt", "def ", "--max_new_bytes", "20", "--show_patches",
            "--temperature", "0", "--report", report, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.load(open(report))["new_bytes"] == 20 and "▏" in r.stdout  # the patch separator


@pytest.mark.slow
def test_clear_one_line_errors(tmp_path, entropy_path):
    cases = [
        ([*TINY_FLAGS, "--entropy_model_path", str(tmp_path / "none.pth")], "python entropy_llm.py"),
        (["--eval", "--checkpoint", entropy_path], "expected a 'blt' model"),
        ([*TINY_FLAGS, "--method", "space", "--data", str(tmp_path / "missing")], "no such file"),
        ([*TINY_FLAGS, "--method", "nonsense"], "unknown patching method"),
        ([*TINY_FLAGS, "--patching", "nonsense"], "unknown patching method"),  # the old spelling, same field
        ([*TINY_FLAGS, "--entropy_threshold", "nan"], "finite"),
    ]
    for args, words in cases:
        r = run(*args, cwd=tmp_path)
        assert r.returncode == 2, (args, r.stderr)
        assert words in r.stderr and r.stderr.strip().count("\n") == 0, r.stderr


@pytest.mark.slow
def test_two_gloo_processes_match_one_process(tmp_path, corpus_dir):
    common = [*TINY_FLAGS, "--method", "space", "--data", corpus_dir, "--max_steps", "5"]
    one, two = str(tmp_path / "one.json"), str(tmp_path / "two.json")
    r = run(*common, "--out", str(tmp_path / "one.pth"), "--report", one, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r = run(*common, "--out", str(tmp_path / "two.pth"), "--report", two, cwd=tmp_path,
            module=("-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "train_blt.py"))
    assert r.returncode == 0, r.stderr[-2000:]
    a, b = json.load(open(one)), json.load(open(two))
    assert b["train_loss"] == pytest.approx(a["train_loss"], abs=1e-4)
    assert b["val_bpb"] == pytest.approx(a["val_bpb"], abs=1e-4)
