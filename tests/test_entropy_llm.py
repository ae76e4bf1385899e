"""The entropy byte LM: causality, entropies, training windows, checkpoints, resume, the command.

The corpus sources and the held-out split are tested in test_byte_data.py."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from byte_data import ByteWindows, DataError, load_corpus, split_documents
from common import add_config_args, config_overrides
from entropy_llm import (
    EntropyConfig,
    MinimalLLM,
    build_config,
    compute_entropies,
    evaluate_bpb,
    flops_per_byte,
    score_bytes,
)
from save_entropy_model import (
    CheckpointError,
    describe,
    load_checkpoint,
    load_entropy_model,
    load_into,
    load_model,
    model_fingerprint,
    save_checkpoint,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = dict(d_model=32, n_heads=2, n_layers=2, max_seq_len=32)


def tiny_model(seed=0, **kw):
    torch.manual_seed(seed)
    return MinimalLLM(EntropyConfig(**{**TINY, **kw})).eval()


def random_bytes(n, seed=0):
    return bytes(np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8))


# -------------------------------------------------------------------------------- model


def test_causality_perturbing_a_byte_moves_no_earlier_logit():
    model = tiny_model()
    x = torch.tensor([list(random_bytes(32))])
    base, _ = model(x)
    for t in (0, 5, 31):
        y = x.clone()
        y[0, t] = (y[0, t] + 17) % 256
        out, _ = model(y)
        # logits[:, t] predicts byte t, so positions <= t must not move; t+1 must (else the test is blind)
        assert torch.equal(out[0, : t + 1], base[0, : t + 1]), f"a logit at or before {t} saw byte {t}"
        if t + 1 < 32:
            assert not torch.allclose(out[0, t + 1], base[0, t + 1])


def test_cached_steps_match_the_full_forward():
    model = tiny_model()
    x = torch.tensor([list(random_bytes(20))])
    full, _ = model(x)
    caches = model.new_caches(1, 8)  # smaller than needed: the cache grows
    steps = [model.step(None, caches)] + [model.step(x[:, i:i + 1], caches) for i in range(19)]
    assert torch.allclose(torch.cat(steps, 1), full, atol=1e-5)


def test_loss_is_mean_cross_entropy_and_ignores_padding():
    model = tiny_model()
    x = torch.tensor([list(random_bytes(16))])
    y = x.clone()
    y[0, 10:] = -100
    logits, loss = model(x, y)
    manual = torch.nn.functional.cross_entropy(logits[0, :10], x[0, :10])
    assert torch.allclose(loss, manual)


def test_config_validation_and_presets():
    with pytest.raises(ValueError, match="vocab_size"):
        EntropyConfig(vocab_size=512)
    with pytest.raises(ValueError, match="heads"):
        EntropyConfig(d_model=30, n_heads=4)
    with pytest.raises(ValueError, match="unknown"):
        build_config("cpu", learning_rate=1.0)
    seed = build_config("seed")
    assert (seed.d_model, seed.n_layers, seed.max_seq_len) == (384, 6, 512)


def test_flops_per_byte_hand_count():
    c = EntropyConfig(d_model=32, n_heads=2, n_layers=1, max_seq_len=8, sliding_window=False)
    hidden = 96  # mlp_hidden(32): 8/3 * 32 = 85 -> rounded up to a multiple of 32
    matmul = 2 * (4 * 32 * 32 + 3 * 32 * hidden)
    attention = 4 * 32 * 4.5  # mean causal context over 8 positions is 4.5 keys
    head = 2 * 32 * 256
    assert flops_per_byte(c) == pytest.approx(matmul + attention + head)


# -------------------------------------------------------------------------------- entropies


def test_entropies_of_a_prefix_equal_the_start_of_the_whole():
    model = tiny_model()
    data = random_bytes(300)  # about 18 windows of 32 bytes, overlapping by half
    whole = compute_entropies(model, data)
    assert whole.dtype == np.float32 and whole.shape == (300,)
    for n in (1, 31, 32, 33, 77, 150):
        np.testing.assert_allclose(compute_entropies(model, data[:n]), whole[:n], atol=1e-5)


def test_short_input_equals_one_plain_forward_pass():
    model = tiny_model()
    data = random_bytes(32)
    logits, _ = model(torch.tensor([list(data)]))
    logp = torch.log_softmax(logits[0].detach().double(), -1)
    expected = -(logp.exp() * logp).sum(-1).numpy()
    np.testing.assert_allclose(compute_entropies(model, data), expected, atol=1e-5)


def test_long_input_bytes_see_half_a_window_of_context():
    model = tiny_model()
    data = random_bytes(200)
    H = compute_entropies(model, data)
    # byte 100 is scored in the window starting at 80 (W=32, stride 16): a change at 84 must reach it,
    # a change at 60 (outside that window) must not
    for pos, should_move in ((84, True), (60, False)):
        changed = bytearray(data)
        changed[pos] ^= 0x55
        moved = abs(compute_entropies(model, bytes(changed))[100] - H[100]) > 1e-6
        assert moved == should_move


def test_a_document_alone_equals_it_batched_with_others():
    model = tiny_model()
    docs = [random_bytes(n, seed=n) for n in (5, 100, 33, 64)]
    batched = compute_entropies(model, docs, batch_size=3)
    for doc, H in zip(docs, batched):
        np.testing.assert_allclose(compute_entropies(model, doc, batch_size=1), H, atol=1e-5)


def test_empty_and_odd_inputs():
    model = tiny_model()
    assert compute_entropies(model, b"").shape == (0,)
    out = compute_entropies(model, [b"", b"x", b"\xff\xfe\x80" * 50])
    assert [len(a) for a in out] == [0, 1, 150] and all(np.isfinite(a).all() for a in out)
    assert np.all(out[2] >= 0) and np.all(out[2] <= np.log(256) + 1e-4)


def test_bpb_matches_mean_nll_in_bits():
    model = tiny_model()
    docs = [random_bytes(50, 1), random_bytes(90, 2)]
    bpb, n = evaluate_bpb(model, docs)
    _, nll = score_bytes(model, docs, want_nll=True)
    assert n == 140
    assert bpb == pytest.approx(np.concatenate(nll).mean() / np.log(2))


# -------------------------------------------------------------------------------- data


def test_windows_stay_inside_training_documents_and_repeat_per_step(tmp_path):
    docs = [b"a" * 50, b"b" * 7, b"c" * 300]
    w = ByteWindows(docs, seq_len=16, seed=3)
    x, y = w.batch(5, 64)
    x2, _ = w.batch(5, 64)
    assert torch.equal(x, x2) and not torch.equal(x, w.batch(6, 64)[0])
    for row, tgt in zip(x, y):
        real = bytes(row[tgt != -100].tolist())
        assert len(set(real)) == 1  # one document per window
        assert (tgt == -100).sum() == 0 or real == b"b" * 7  # only the short document is padded
    # two ranks' halves are the one-process batch
    halves = [w.batch(5, 64, rank=r, world_size=2)[0] for r in (0, 1)]
    assert torch.equal(torch.cat(halves), x)


def test_folder_and_bad_paths(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "a.txt").write_bytes(b"first")
    (tmp_path / "b" / "c.bin").write_bytes(b"\xff\x00second")
    assert load_corpus(str(tmp_path)) == [b"first", b"\xff\x00second"]
    with pytest.raises(DataError, match="no such file"):
        load_corpus(str(tmp_path / "missing"))


# -------------------------------------------------------------------------------- checkpoints


def test_checkpoint_roundtrip_and_the_seed_loading_line(tmp_path):
    model = tiny_model(seed=1)
    path = str(tmp_path / "m.pth")
    save_checkpoint(model, path)
    loaded = load_entropy_model(path)
    assert model_fingerprint(loaded) == model_fingerprint(model)
    fresh = MinimalLLM(model.config)
    fresh.load_state_dict(torch.load(path))  # the seed README's line
    assert model_fingerprint(fresh) == model_fingerprint(model)
    assert "entropy_llm" in describe(path)
    from save_entropy_model import main as inspect_main

    assert inspect_main(["inspect", path, "--report", str(tmp_path / "r.json")]) == 0
    assert json.load(open(tmp_path / "r.json"))["params"] == model.num_params()
    assert inspect_main(["inspect", str(tmp_path / "missing.pth")]) == 2


def test_bad_checkpoints_give_one_line_errors(tmp_path):
    model = tiny_model()
    good = str(tmp_path / "good.pth")
    save_checkpoint(model, good)
    truncated = tmp_path / "trunc.pth"
    truncated.write_bytes(open(good, "rb").read()[:300])
    foreign = tmp_path / "foreign.pth"
    torch.save({"weight": torch.zeros(3)}, foreign)
    cases = [(str(tmp_path / "missing.pth"), "no such file"), (str(truncated), "not a readable checkpoint"),
             (str(foreign), "not a checkpoint of this repository")]
    for path, words in cases:
        with pytest.raises(CheckpointError, match=words) as e:
            load_entropy_model(path)
        assert path in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(CheckpointError, match="expected a 'blt' model"):
        load_model(good, kind="blt")
    other = MinimalLLM(EntropyConfig(**{**TINY, "d_model": 64}))
    with pytest.raises(CheckpointError, match="another config: d_model=32"):
        load_into(other, good)


def test_save_is_atomic_when_interrupted(tmp_path, monkeypatch):
    model = tiny_model()
    path = str(tmp_path / "m.pth")
    save_checkpoint(model, path)
    before = open(path, "rb").read()

    def dying_save(obj, f):
        open(f, "wb").write(b"half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tiny_model(seed=5), path)
    assert open(path, "rb").read() == before
    assert os.listdir(tmp_path) == ["m.pth"]


# -------------------------------------------------------------------------------- command line


def test_flags_come_from_the_config_and_old_spellings_stay_hidden():
    import argparse

    from entropy_llm import main

    p = argparse.ArgumentParser()
    add_config_args(p, EntropyConfig, aliases={"max_seq_len": ("seq_len",)})
    assert config_overrides(p.parse_args([]), EntropyConfig) == {}  # nothing given: the config keeps its own
    given = config_overrides(p.parse_args(["--seq_len", "48", "--lr", "0.01"]), EntropyConfig)
    assert given == {"max_seq_len": 48, "lr": 0.01}
    assert "--max_seq_len" in p.format_help() and "--seq_len" not in p.format_help()
    with pytest.raises(SystemExit):
        p.parse_args(["--max_steps", "many"])
    with pytest.raises(SystemExit):
        main(["--preset", "huge"])  # --preset is a model size: tiny, cpu, seed


def run_script(*args, cwd):
    return subprocess.run([sys.executable, os.path.join(ROOT, "entropy_llm.py"), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_training_command_end_to_end_then_eval_and_resume(tmp_path):
    ckpt, report = str(tmp_path / "e.pth"), str(tmp_path / "r.json")
    tiny = ["--preset", "tiny", "--batch_size", "8", "--max_bytes", "100000", "--eval_interval", "0"]
    r = run_script(*tiny, "--max_steps", "12", "--ckpt_interval", "6", "--out", ckpt, "--report", report,
                   cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    rep = json.load(open(report))
    assert {"val_bpb", "train_bytes", "params", "bytes_per_s", "checkpoint"} <= set(rep)
    assert 0 < rep["val_bpb"] < 8.5 and rep["checkpoint"] == ckpt
    assert load_checkpoint(ckpt)["_extra_state"]["train"]["step"] == 12
    # --resume continues the run saved in --out, and refuses another schedule
    r = run_script(*tiny, "--max_steps", "14", "--out", ckpt, "--resume", cwd=tmp_path)
    assert r.returncode == 2 and "other settings: max_steps=12 (now 14)" in r.stderr, r.stderr

    sample = tmp_path / "sample.txt"
    sample.write_bytes(b"hello world, " * 20)
    r = run_script("--eval", "--checkpoint", ckpt, "--data", str(sample), "--report", report, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.load(open(report))["num_bytes"] == 260

    r = run_script("--eval", "--checkpoint", str(tmp_path / "nope.pth"), cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "nope.pth: no such file" in r.stderr
    r = run_script("--no_such_flag", cwd=tmp_path)
    assert r.returncode != 0 and "unrecognized arguments" in r.stderr


def test_resume_reaches_the_same_loss_as_an_uninterrupted_run(tmp_path, monkeypatch):
    from entropy_llm import train_entropy_model

    train, val = split_documents(load_corpus("builtin", max_bytes=40_000))
    cfg = build_config("tiny", batch_size=8, max_steps=10, eval_interval=0, ckpt_interval=5)
    full = train_entropy_model(cfg, train, val, str(tmp_path / "full.pth"), "cpu")

    killed = str(tmp_path / "killed.pth")
    batch = ByteWindows.batch

    def dies_at_step_7(self, step, *args, **kw):
        if step == 7:
            raise KeyboardInterrupt  # the run is killed after its step-5 checkpoint
        return batch(self, step, *args, **kw)

    monkeypatch.setattr(ByteWindows, "batch", dies_at_step_7)
    with pytest.raises(KeyboardInterrupt):
        train_entropy_model(cfg, train, val, killed, "cpu")
    monkeypatch.undo()
    assert load_checkpoint(killed)["_extra_state"]["train"]["step"] == 5
    resumed = train_entropy_model(cfg, train, val, killed, "cpu", resume=killed)
    assert resumed["train_loss"] == pytest.approx(full["train_loss"], abs=1e-5)
    assert resumed["val_bpb"] == pytest.approx(full["val_bpb"], abs=1e-5)


# -------------------------------------------------------------------------------- training.py's loop


def test_lr_warms_up_linearly_then_decays_by_cosine_to_the_floor():
    from training import lr_at

    lrs = [lr_at(s, max_steps=110, lr=1.0, warmup_steps=10, min_lr_ratio=0.1) for s in range(110)]
    assert lrs[:10] == pytest.approx([(s + 1) / 10 for s in range(10)])
    assert lrs[10] == pytest.approx(1.0) and lrs[60] == pytest.approx(0.55)  # cosine's midpoint
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:])) and lrs[-1] == pytest.approx(0.1, abs=1e-3)


def test_intermediate_evaluations_score_a_prefix_and_the_last_scores_everything(tmp_path):
    from entropy_llm import train_entropy_model

    train, val = split_documents(load_corpus("builtin", max_bytes=150_000))
    assert len(val) > 1
    cfg = build_config("tiny", batch_size=4, max_steps=4, eval_interval=2, ckpt_interval=0, eval_max_bytes=1)
    rep = train_entropy_model(cfg, train, val, str(tmp_path / "e.pth"), "cpu")
    assert [e["step"] for e in rep["evals"]] == [2, 4]
    assert rep["evals"][0]["val_bytes"] < rep["evals"][1]["val_bytes"] == sum(map(len, val))
    assert rep["evals"][1]["val_bpb"] == rep["val_bpb"]
