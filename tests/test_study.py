"""The study's protocol (issue 15): bootstrap intervals, matched FLOPs, budgets and seeds as separate runs,
the overwrite refusal, DDP loss with padded rows, and a tiny end-to-end study."""
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

import complete_entropy_workflow as wf
import template_llm
import train_blt as tb

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# BPE at its CPU size over 64-byte rows: the smallest baseline a light BLT can match in FLOPs per byte
TINY = ["--template_preset", "cpu", "--blt_preset", "tiny", "--entropy_preset", "tiny",
        "--entropy_steps", "20", "--max_bytes", "60000", "--context_bytes", "64", "--blt_local_dim", "32",
        "--bpe_vocab_size", "300", "--batch_size", "2", "--bootstrap_reps", "200"]
KEYS = {"name", "val_bpb", "mean_patch_size", "flops_per_byte", "train_flops", "budget", "seed",
        "context_bytes", "bytes_seen", "params", "params_no_hash", "bpb_ci", "diff_vs_bpe", "diff_ci",
        "patching_flops_per_byte", "model_config", "steps", "wall_s"}


# ---------------------------------------------------------------------------------------------- bootstrap


def docs(n=40, seed=0):
    rng = np.random.default_rng(seed)
    nbytes = rng.integers(100, 5000, n).astype(float)
    return nbytes * rng.uniform(1.0, 3.0, n), nbytes  # nats, bytes


def test_identical_runs_differ_by_exactly_zero():
    nats, nbytes = docs()
    assert wf.paired_difference(nats, nats, nbytes) == (0.0, 0.0, 0.0)


def test_a_constant_shift_gives_that_shift_and_a_point_interval():
    nats, nbytes = docs()
    shifted = nats + 0.25 * math.log(2) * nbytes  # 0.25 more bits on every byte
    d, lo, hi = wf.paired_difference(shifted, nats, nbytes)
    assert d == pytest.approx(0.25) and lo == pytest.approx(0.25) and hi == pytest.approx(0.25)


def test_bpb_and_its_interval():
    nats, nbytes = docs()
    bpb, lo, hi = wf.bpb_interval(nats, nbytes, reps=500)
    assert bpb == pytest.approx(nats.sum() / (math.log(2) * nbytes.sum()))
    assert lo < bpb < hi and hi - lo < 1.0
    d, dlo, dhi = wf.paired_difference(nats, nats[::-1], nbytes, reps=500)
    assert dlo <= d <= dhi and dlo < dhi


def test_bootstrap_is_seeded():
    nats, nbytes = docs()
    assert wf.bpb_interval(nats, nbytes, seed=3) == wf.bpb_interval(nats, nbytes, seed=3)
    assert wf.bpb_interval(nats, nbytes, seed=3) != wf.bpb_interval(nats, nbytes, seed=4)


def test_verdict_says_no_difference_when_the_interval_holds_zero():
    assert wf.verdict(-0.1, 0.2) == "no difference"
    assert wf.verdict(-0.3, -0.1) == "better than BPE" and wf.verdict(0.1, 0.3) == "worse than BPE"


# ------------------------------------------------------------------------------------ runs, sizes, budgets


def test_run_names():
    assert wf.parse_run("blt-static") == {"method": "static", "size": 4}
    assert wf.parse_run("blt-static-6") == {"method": "static", "size": 6}
    assert wf.parse_run("blt-entropy-4.5") == {"method": "global", "size": 4.5}
    assert wf.parse_run("blt-entropy-global_monotonic-8") == {"method": "global_monotonic", "size": 8.0}
    assert wf.parse_run("bpe") == {"tokenizer": "bpe"}
    assert wf.parse_run("blt-entropy-ensemble-4.5") == {"method": "global", "size": 4.5, "ensemble": "mean"}
    assert wf.parse_run("blt-entropy-ensemble-js-6") == {"method": "global", "size": 6.0, "ensemble": "js"}
    for bad in ("blt-entropy-0.5", "blt-entropy-foo-4", "gpt", "blt-entropy-ensemble-sum-4",
                "blt-entropy-ensemble-0.5", "blt-entropy-ensemble"):
        with pytest.raises(ValueError):
            wf.parse_run(bad)


@pytest.mark.parametrize("patch", [1.5, 4, 4.5, 6, 8])
def test_default_sizes_match_the_bpe_baselines_inference_flops(patch):
    tpb = 0.27  # builtin's tokens per byte under the 4096-token BPE
    cfg = template_llm.build_config("cpu", tokenizer="bpe", vocab_size=4096, max_seq_len=round(1024 * tpb))
    target = template_llm.flops_per_byte(cfg, tpb)
    blt, f = wf.size_blt(target, patch, tb.model_config("cpu", max_seq_len=1024), local_dim=64)
    assert abs(f / target - 1) <= 0.10 and blt.encoder_dim == blt.decoder_dim == 64
    assert blt.encoder_layers == blt.decoder_layers == 1 and blt.max_seq_len == 1024
    _, fb = wf.size_byte_lm(target, 1024)
    assert abs(fb / target - 1) <= 0.10
    with pytest.raises(ValueError, match="10%"):
        wf.check_matched("blt-x", 1.2 * target, target)


def test_each_budget_gets_its_own_step_count_and_schedule():
    s1, s3 = wf.steps_for(1e12, 8e5, 8, 1024), wf.steps_for(3e12, 8e5, 8, 1024)
    assert s1 == round(1e12 / (3 * 8e5 * 8 * 1024)) and s3 == pytest.approx(3 * s1, abs=1)
    assert wf.schedule(s3, 7) == dict(max_steps=s3, warmup_steps=min(100, s3 // 10), eval_interval=0,
                                      ckpt_interval=0, seed=7)
    assert wf.StudyConfig(flops_budgets="1e12,3e12").budgets == [1e12, 3e12]
    with pytest.raises(ValueError):
        wf.StudyConfig(flops_budgets="1e12,x")


# ------------------------------------------------------------------------------------- overwrite refusal


def test_refuses_an_existing_entropy_model_or_run_checkpoint(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "study"
    out.mkdir()
    (out / "entropy_model.pth").write_bytes(b"hours of training")
    code = wf.main([*TINY, "--train_entropy", "--out", str(out), "--runs", "blt-entropy-6"])
    assert code == 2 and "--overwrite" in capsys.readouterr().err
    assert (out / "entropy_model.pth").read_bytes() == b"hours of training"
    (out / "entropy_model.pth").unlink()
    ckpt = wf.checkpoint_path(str(out), "byte", 3e9, 1338)
    open(ckpt, "wb").write(b"a run")
    code = wf.main([*TINY, "--out", str(out), "--runs", "byte", "--flops_budget", "3e9", "--seeds", "2"])
    assert code == 2 and os.path.basename(ckpt) in capsys.readouterr().err
    assert open(ckpt, "rb").read() == b"a run" and not os.path.exists(tmp_path / "entropy_model.pth")


# ------------------------------------------------------------------------------------------------- DDP


@pytest.mark.slow
def test_ddp_loss_with_padded_rows_is_the_one_process_loss(tmp_path):
    """Documents shorter than a row: ranks hold different numbers of targets. The loss of a step is the
    mean over all targets of the global batch (one process's), not a mean of the two ranks' means."""
    folder = tmp_path / "corpus"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(40):
        n = int(rng.integers(4, 60))  # shorter than the 64-byte rows of the tiny preset
        (folder / f"d{i:02d}.txt").write_bytes(rng.integers(97, 123, n, dtype=np.uint8).tobytes())
    flags = ["--preset", "tiny", "--data", str(folder), "--batch_size", "4", "--max_steps", "4",
             "--lr", "1e-2", "--warmup_steps", "1", "--eval_interval", "0", "--ckpt_interval", "0"]
    reports = []
    for n, launch in ((1, []), (2, ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"])):
        rep = tmp_path / f"r{n}.json"
        r = subprocess.run([sys.executable, *launch, os.path.join(ROOT, "template_llm.py"), *flags,
                            "--out", str(tmp_path / f"m{n}.pth"), "--report", str(rep)],
                           cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
        reports.append(json.load(open(rep)))
    one, two = reports
    assert two["train_loss"] == pytest.approx(one["train_loss"], abs=1e-5)
    assert two["val_bpb"] == pytest.approx(one["val_bpb"], abs=1e-5)  # the same weights


# ---------------------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_tiny_study_two_budgets_two_seeds(tmp_path, monkeypatch):
    seen = []
    build = template_llm.build_tokenizer

    def spy(config, docs):
        seen.append((config.tokenizer, list(docs)))
        return build(config, docs)

    monkeypatch.setattr(template_llm, "build_tokenizer", spy)
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "study"
    runs = "bpe,blt-entropy-6"
    code = wf.main([*TINY, "--train_entropy", "--out", str(out), "--runs", runs, "--flops_budgets", "2e9,4e9",
                    "--seeds", "2", "--report", str(tmp_path / "r.json")])
    assert code == 0
    info = json.load(open(out / "results.json"))
    assert info == json.load(open(tmp_path / "r.json"))
    assert {"runs", "summary", "entropy_model", "command", "wall_s", "headline", "plots"} <= set(info)
    assert not os.path.exists(tmp_path / "entropy_model.pth") and os.path.exists(out / "entropy_model.pth")
    assert len(info["runs"]) == 2 * 2 * 2
    target = info["target_flops_per_byte"]
    for r in info["runs"]:
        assert KEYS <= set(r), KEYS - set(r)
        assert abs(r["flops_per_byte"] / target - 1) <= 0.10, r["name"]  # matched inference FLOPs
        assert abs(r["train_flops"] / r["budget"] - 1) <= 0.10, (r["name"], r["budget"])  # matched training
        assert r["bpb_ci"][0] <= r["val_bpb"] <= r["bpb_ci"][1] and r["context_bytes"] == 64
        assert r["bytes_seen"] == r["steps"] * 2 * 64
        if r["name"] != "bpe":
            assert r["diff_ci"][0] <= r["diff_vs_bpe"] <= r["diff_ci"][1]
    by = {(r["name"], r["budget"], r["seed"]): r for r in info["runs"]}
    for name in runs.split(","):
        assert by[(name, 4e9, 1337)]["steps"] >= 2 * by[(name, 2e9, 1337)]["steps"] - 1  # own schedule
        assert by[(name, 2e9, 1337)]["val_bpb"] != by[(name, 2e9, 1338)]["val_bpb"]  # seeds change init
    assert by[("blt-entropy-6", 2e9, 1337)]["mean_patch_size"] == pytest.approx(6, rel=0.05)
    assert by[("blt-entropy-6", 2e9, 1337)]["patching_flops_per_byte"] > 0
    assert info["entropy_model"]["train_flops"] > 0
    summary = {(s["name"], s["budget"]): s for s in info["summary"]}
    blt = summary[("blt-entropy-6", 2e9)]
    assert len(summary) == 4 and blt["seeds"] == [1337, 1338] and blt["val_bpb_std"] > 0 and blt["verdict"]
    assert summary[("bpe", 2e9)]["diff_vs_bpe"] is None
    for f in ["results.md", *info["plots"]]:
        assert os.path.getsize(out / f) > 0
    assert len(info["plots"]) == 4
    table = open(out / "results.md").read()
    assert all(f"| {name} |" in table for name in runs.split(",")) and "[95% CI]" in table

    # the BPE learned once, from training documents only: not one held-out document reached it
    from byte_data import load_corpus, split_documents

    train, val = split_documents(load_corpus("builtin", max_bytes=60000))
    bpe_docs = [d for kind, d in seen if kind == "bpe"]
    assert len(bpe_docs) == 1 and all(d in train for d in bpe_docs[0]) and not set(bpe_docs[0]) & set(val)
