"""The baseline: causality, exact byte-level BPE, no held-out byte in the tokenizer, BPB per byte,
the command."""
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from byte_data import ByteWindows
from entropy_llm import EntropyConfig, MinimalLLM
from entropy_llm import flops_per_byte as entropy_flops_per_byte
from save_entropy_model import CheckpointError, save_checkpoint
from template_llm import (
    BPETokenizer,
    TemplateConfig,
    TemplateLLM,
    build_config,
    evaluate_bpb,
    flops_per_byte,
    load_template_model,
    tokenizer_path,
    train_template,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = dict(d_model=32, n_heads=2, n_layers=2, max_seq_len=32)
TEXT = [(f"Document {i}: the quick brown fox jumps over the lazy dog {i * 7} times.\n"
         "def main():\n    return sorted(items, key=len)\n").encode() * 3 for i in range(30)]


def random_bytes(n, seed=0):
    return bytes(np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8))


@pytest.fixture(scope="module")
def bpe():
    return BPETokenizer.train(TEXT, vocab_size=400)


# -------------------------------------------------------------------------------- model


def test_causality_perturbing_a_token_moves_no_earlier_logit():
    torch.manual_seed(0)
    model = TemplateLLM(TemplateConfig(tokenizer="bpe", vocab_size=300, **TINY)).eval()
    x = torch.randint(0, 300, (2, 32))
    base, _ = model(x)
    for t in (0, 9, 31):
        y = x.clone()
        y[:, t] = (y[:, t] + 101) % 300
        out, _ = model(y)
        assert torch.equal(out[:, : t + 1], base[:, : t + 1]), f"a logit at or before {t} saw token {t}"
        if t + 1 < 32:
            assert not torch.allclose(out[:, t + 1], base[:, t + 1])


def test_config_vocab_rules_and_presets():
    assert TemplateConfig().vocab_size == 256 and TemplateConfig(tokenizer="bpe").vocab_size == 4096
    with pytest.raises(ValueError, match="256 with --tokenizer bytes"):
        TemplateConfig(vocab_size=4096)
    with pytest.raises(ValueError, match="tokenizer must be"):
        TemplateConfig(tokenizer="wordpiece")
    with pytest.raises(ValueError, match="unknown"):
        build_config("cpu", vocabsize=10)
    assert build_config("gpu").n_layers == 12 and build_config("cpu", quick_demo=True).max_steps < 1500


def test_flops_per_byte_counts_the_head_and_scales_with_tokens_per_byte():
    byte_cfg = TemplateConfig(**TINY)
    full_attention = EntropyConfig(**TINY, sliding_window=False)
    assert flops_per_byte(byte_cfg) == pytest.approx(entropy_flops_per_byte(full_attention))
    bpe_cfg = TemplateConfig(tokenizer="bpe", vocab_size=1000, **TINY)
    per_token = flops_per_byte(byte_cfg) + 2 * 32 * (1000 - 256)  # same blocks, a wider head
    assert flops_per_byte(bpe_cfg, tokens_per_byte=0.25) == pytest.approx(0.25 * per_token)


# -------------------------------------------------------------------------------- BPE


def test_bpe_round_trips_arbitrary_bytes(bpe, tmp_path):
    samples = [b"", b"\x00", bytes(range(256)), b"\xff\xfe\x80 not utf-8 \xc3", "naïve café 日本 🙂".encode(),
               b"\r\n\t  \x0b\x0c\x1c trailing   ", b"'s'll'''ve", random_bytes(3000, 1),
               random_bytes(500, 2)]
    path = str(tmp_path / "t.tokenizer.json")
    bpe.save(path)
    again = BPETokenizer.load(path)
    for s in samples:
        ids = bpe.encode(s)
        assert bpe.decode(ids) == s
        assert np.array_equal(again.encode(s), ids)
        assert (ids < bpe.vocab_size).all()
    assert len(bpe.encode(TEXT[0])) < len(TEXT[0]) / 2  # it did learn merges
    assert sorted(bpe.token_bytes[:256]) == [bytes([b]) for b in range(256)]  # every byte is a token


def test_token_windows_hold_ids_above_255():
    docs = [np.arange(300, 350, dtype=np.uint16), np.full(5, 999, dtype=np.uint16)]
    x, y = ByteWindows(docs, seq_len=8, seed=0).batch(3, 16)
    for row, tgt in zip(x, y):
        real = row[tgt != -100].numpy()
        short = len(real) == 5 and (real == 999).all()  # the whole short document, then padding
        inside = len(real) == 8 and real[0] >= 300 and (np.diff(real) == 1).all()  # a slice of the long one
        assert short or inside, real


def test_the_tokenizer_never_sees_a_held_out_byte(tmp_path, monkeypatch):
    train = [d.replace(b"Q", b"q") for d in TEXT]  # no 'Q' anywhere in training
    val = [b"Qzorblax Qzorblax Qzorblax! " * 40, b"Qzorblax\n" * 30]
    seen = []
    real_train = BPETokenizer.train.__func__

    def spy(cls, docs, *args, **kw):
        docs = list(docs)
        seen.extend(docs)
        return real_train(cls, docs, *args, **kw)

    monkeypatch.setattr(BPETokenizer, "train", classmethod(spy))
    cfg = build_config("tiny", tokenizer="bpe", vocab_size=600, batch_size=8, max_steps=2)
    out = str(tmp_path / "bpe.pth")
    train_template(cfg, train, val, out, "cpu")
    assert seen == train
    tok = BPETokenizer.load(tokenizer_path(out))
    learned = [b for b in tok.token_bytes if len(b) > 1]
    assert learned and not [b for b in learned if b"Q" in b or b"zorbl" in b]
    assert len(tok.encode(val[1])) > len(val[1]) / 2  # the made-up word stays in small pieces


def test_bpe_bits_per_byte_are_token_nats_over_document_bytes(bpe):
    torch.manual_seed(0)
    cfg = TemplateConfig(tokenizer="bpe", vocab_size=bpe.vocab_size, **{**TINY, "max_seq_len": 64})
    model = TemplateLLM(cfg)
    docs = [TEXT[3][:150], b"\xff\x00 odd bytes \xc3(", TEXT[5][:90]]
    nats, n_tokens = 0.0, 0
    for d in docs:  # every document shorter than a window: one plain forward pass each
        ids = torch.tensor(bpe.encode(d).astype(np.int64))[None]
        assert 0 < ids.size(1) <= 64
        logits, _ = model(ids)
        nats -= torch.log_softmax(logits.double(), -1)[0].gather(-1, ids[0, :, None]).sum().item()
        n_tokens += ids.size(1)
    bpb, n_bytes, n_tok = evaluate_bpb(model, bpe, docs)
    assert (n_bytes, n_tok) == (sum(map(len, docs)), n_tokens)
    assert bpb == pytest.approx(nats / (math.log(2) * n_bytes), rel=1e-5)


def test_bpe_resume_keeps_its_tokenizer_and_reaches_the_same_loss(tmp_path, monkeypatch):
    train, val = TEXT[:27], TEXT[27:]
    cfg = build_config("tiny", tokenizer="bpe", vocab_size=400, batch_size=8, max_steps=6, ckpt_interval=3,
                       eval_interval=0)
    full = train_template(cfg, train, val, str(tmp_path / "full.pth"), "cpu")
    killed = str(tmp_path / "killed.pth")
    batch = ByteWindows.batch

    def dies_at_step_4(self, step, *args, **kw):
        if step == 4:
            raise KeyboardInterrupt
        return batch(self, step, *args, **kw)

    monkeypatch.setattr(ByteWindows, "batch", dies_at_step_4)
    with pytest.raises(KeyboardInterrupt):
        train_template(cfg, train, val, killed, "cpu")
    monkeypatch.undo()
    monkeypatch.setattr(BPETokenizer, "train", None)  # resuming must not learn a new tokenizer
    resumed = train_template(cfg, train, val, killed, "cpu", resume=killed)
    assert resumed["train_loss"] == pytest.approx(full["train_loss"], abs=1e-5)
    assert resumed["val_bpb"] == pytest.approx(full["val_bpb"], abs=1e-5)


# -------------------------------------------------------------------------------- command line


def run_script(*args, cwd):
    return subprocess.run([sys.executable, os.path.join(ROOT, "template_llm.py"), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def one_line_error(r, *words):
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0, r.stderr
    for w in words:
        assert w in r.stderr


@pytest.mark.slow
@pytest.mark.parametrize("tokenizer", ["bytes", "bpe"])
def test_command_end_to_end_then_eval(tmp_path, tokenizer):
    ckpt, report = str(tmp_path / "m.pth"), str(tmp_path / "r.json")
    r = run_script("--preset", "tiny", "--batch_size", "8", "--max_steps", "4", "--max_bytes", "40000",
                   "--tokenizer", tokenizer,
                   "--vocab_size", "512" if tokenizer == "bpe" else "256", "--out", ckpt, "--report", report,
                   cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    rep = json.load(open(report))
    assert {"val_bpb", "params", "flops_per_byte", "bytes_per_s", "checkpoint", "tokens_per_byte",
            "train_bytes"} <= set(rep)
    assert 0 < rep["val_bpb"] < 12 and rep["checkpoint"] == ckpt and rep["flops_per_byte"] > 0
    assert rep["evals"][-1]["step"] == 4 and rep["evals"][-1]["val_bpb"] == rep["val_bpb"]
    assert (rep["tokens_per_byte"] == 1.0) == (tokenizer == "bytes")
    assert os.path.exists(tokenizer_path(ckpt)) == (tokenizer == "bpe")
    model, tok = load_template_model(ckpt)
    assert model.config.tokenizer == tokenizer and tok.name == tokenizer

    sample = tmp_path / "sample.bin"
    sample.write_bytes(b"hello \xff\xfe world, " * 20)
    r = run_script("--eval", "--checkpoint", ckpt, "--data", str(sample), "--report", report, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.load(open(report))["num_bytes"] == 320
    if tokenizer == "bpe":
        os.rename(tokenizer_path(ckpt), str(tmp_path / "elsewhere.json"))
        one_line_error(run_script("--eval", "--checkpoint", ckpt, "--data", str(sample), cwd=tmp_path),
                       "tokenizer", "missing")


@pytest.mark.slow
def test_bad_checkpoints_and_data_give_one_line_errors(tmp_path):
    one_line_error(run_script("--eval", "--checkpoint", str(tmp_path / "nope.pth"), cwd=tmp_path),
                   "nope.pth: no such file")
    entropy = str(tmp_path / "entropy.pth")
    save_checkpoint(MinimalLLM(EntropyConfig(**TINY)), entropy)
    one_line_error(run_script("--eval", "--checkpoint", entropy, cwd=tmp_path),
                   "expected a 'template_llm' model")
    with pytest.raises(CheckpointError, match="expected a 'template_llm'"):
        load_template_model(entropy)
    one_line_error(run_script("--preset", "tiny", "--data", str(tmp_path / "missing_dir"), cwd=tmp_path),
                   "no such file or folder")
    r = run_script("--no_such_flag", cwd=tmp_path)
    assert r.returncode != 0 and "unrecognized arguments" in r.stderr
