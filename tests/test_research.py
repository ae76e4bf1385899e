"""The seed's research questions as commands (issue 11): ensembles of entropy models, per-domain threshold
analysis with its transfer table, and boundary quality. The rule-level tests every patcher passes
(causality, streaming == batch) are parametrized over ensembles in test_entropy_patcher.py."""
import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

import entropy_llm
import entropy_patcher as ep
from blt_model import BLTConfig, BLTModel
from byte_data import split_documents
from entropy_llm import EntropyConfig, MinimalLLM, compute_entropies
from entropy_patcher import (
    EntropyEnsemble,
    EntropyPatcher,
    PatchConfig,
    analyze_entropy_distribution,
    calibrate,
    entropy_cache_path,
    patch_lengths_from_entropies,
    patcher_from_meta,
    patching_flops_per_byte,
)
from patch_pictures import boundary_quality, format_analysis, plot_entropy_histograms
from save_entropy_model import save_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py: tiny models run on one thread


def tiny_model(seed=0, window=64):
    torch.manual_seed(seed)
    return MinimalLLM(EntropyConfig(d_model=32, n_heads=2, n_layers=1, max_seq_len=window)).eval()


@pytest.fixture(scope="module")
def models():
    return [tiny_model(0), tiny_model(1), tiny_model(2)]


TEXT = b"Ensembles of entropy models: mean, max, and how much they disagree (js). " * 3


# -------------------------------------------------------------------------------- ensembles


def test_mean_and_max_combine_the_models_entropies(models):
    per_model = [compute_entropies(m, TEXT) for m in models]
    mean = EntropyEnsemble(models, "mean").scores([TEXT])[0]
    top = EntropyEnsemble(models, "max").scores([TEXT])[0]
    assert mean.dtype == np.float32 and top.dtype == np.float32 and len(mean) == len(TEXT)
    np.testing.assert_allclose(mean, np.mean(per_model, axis=0), rtol=1e-6)
    np.testing.assert_array_equal(top, np.max(per_model, axis=0))
    assert (top >= mean).all() and (top > mean).any()
    one = EntropyEnsemble(models[:1], "mean").scores([TEXT])[0]  # an ensemble of one is the model
    np.testing.assert_array_equal(one, per_model[0])


def test_js_is_the_jensen_shannon_divergence_of_the_next_byte_distributions(models):
    doc = TEXT[:60]  # inside one window: the oracle is one plain forward pass per model
    x = torch.tensor([list(doc)])
    with torch.no_grad():
        p = np.stack([torch.softmax(m(x)[0][0].double(), -1).numpy() for m in models])  # (K, N, V)

    def H(q):
        return -(q * np.log(q)).sum(-1)

    want = H(p.mean(0)) - H(p).mean(0)
    js = EntropyEnsemble(models, "js").scores([doc])[0]
    np.testing.assert_allclose(js, want, rtol=1e-4, atol=1e-6)
    assert (js >= 0).all() and js.max() > 1e-3
    same = EntropyEnsemble([models[0], models[0]], "js").scores([TEXT])[0]
    assert not same.any()  # identical models never disagree
    long = EntropyEnsemble(models, "js").scores([TEXT])[0]  # 219 bytes: windows overlapping by half
    assert np.isfinite(long).all() and np.array_equal(long[:60], js)  # a prefix scores as the whole's start


def test_an_ensemble_calibrates_on_its_combined_score(models, tmp_path):
    docs = [TEXT, b"0123456789 abcdefghij " * 8, b"x"]
    for combine in ("mean", "max", "js"):
        cfg = PatchConfig(entropy_threshold=None, target_patch_size=3.0, min_patch_size=1,
                          cache_dir=str(tmp_path))
        patcher = EntropyPatcher(models, cfg, combine=combine)
        patcher.config = calibrate(cfg, patcher.entropy_model, docs)
        _, stats = patcher.process_data(docs)
        assert abs(stats["mean_patch_size"] - 3.0) <= 0.15, combine
        scores = ep.document_entropies(patcher.entropy_model, docs)
        want = [patch_lengths_from_entropies(h, d, patcher.config) for h, d in zip(scores, docs)]
        assert [n.tolist() for n in patcher.document_patch_lengths(docs)] == [n.tolist() for n in want]


def test_the_cache_key_covers_every_model_and_the_combine_rule(models, tmp_path, monkeypatch):
    calls = []

    def counting(model, data, *a, **kw):
        calls.append(len(data))
        return compute_entropies(model, data, *a, **kw)

    monkeypatch.setattr(ep, "compute_entropies", counting)
    docs = [TEXT, b"another document"]
    cfg = PatchConfig(entropy_threshold=5.5, cache_dir=str(tmp_path))
    _, s1 = EntropyPatcher(models[:2], cfg).process_data(docs)
    assert len(calls) == 2 and not s1["cache_hit"]  # one call per model
    _, s2 = EntropyPatcher(models[:2], cfg).process_data(docs)
    assert len(calls) == 2 and s2["cache_hit"]
    changed = tiny_model(1)
    with torch.no_grad():
        next(changed.parameters()).add_(1e-3)  # the second model's weights change: recomputed
    _, s3 = EntropyPatcher([models[0], changed], cfg).process_data(docs)
    assert len(calls) == 4 and not s3["cache_hit"]
    d = str(tmp_path)
    paths = {entropy_cache_path(m, docs, d) for m in (models[0], EntropyEnsemble(models[:2], "mean"),
                                                        EntropyEnsemble(models[:2], "max"),
                                                        EntropyEnsemble(models[1::-1], "mean"))}
    assert len(paths) == 4  # the model alone, another rule, another order: other keys


def test_an_ensemble_patcher_survives_its_metadata(models):
    p = EntropyPatcher(models, PatchConfig(entropy_threshold=0.02, min_patch_size=1), combine="js")
    meta = p.to_meta()
    assert json.loads(json.dumps(meta)) == meta and meta["ensemble"] == {"combine": "js", "models": 3}
    q = patcher_from_meta(meta, models)
    assert q.entropy_model.config.combine == "js" and q.config.patch_key() == p.config.patch_key()
    assert all(a is b for a, b in zip(q.entropy_model.models, models))
    assert q.patch_lengths(TEXT).tolist() == p.patch_lengths(TEXT).tolist()
    with pytest.raises(ValueError, match="ensemble of 3"):
        patcher_from_meta(meta, models[:2])
    with pytest.raises(ValueError, match="one entropy model"):
        patcher_from_meta(EntropyPatcher(models[0]).to_meta(), models)
    assert "ensemble" not in EntropyPatcher(models[0]).to_meta()


def test_an_ensemble_costs_the_sum_of_its_models():
    a, b = tiny_model(0), MinimalLLM(EntropyConfig(d_model=64, n_heads=2, n_layers=2, max_seq_len=64))
    one = patching_flops_per_byte(a)
    assert one == 2 * entropy_llm.flops_per_byte(a.config)  # scoring windows overlap by half
    assert patching_flops_per_byte(EntropyEnsemble([a, b], "max")) == one + patching_flops_per_byte(b)


def test_bad_ensembles_fail_clearly(models):
    with pytest.raises(ValueError, match="list of entropy models"):
        EntropyPatcher(models[0], combine="mean")
    with pytest.raises(ValueError, match="unknown combine"):
        EntropyPatcher(models, combine="median")
    with pytest.raises(ValueError, match="one max_seq_len"):
        EntropyEnsemble([models[0], tiny_model(3, window=32)], "js")
    with pytest.raises(ValueError, match="one or more"):
        EntropyEnsemble([], "mean")
    EntropyEnsemble([models[0], tiny_model(3, window=32)], "mean")  # mean and max: any windows


def test_a_blt_generates_with_an_ensemble_patcher(models):
    """Generation streams the ensemble like any patcher: cached generation == uncached, and the patches
    made while generating are the batch patches of the generated text."""
    torch.manual_seed(0)
    blt = BLTModel(BLTConfig.from_preset("tiny")).eval()
    H = EntropyEnsemble(models, "max").scores([TEXT])[0]
    patcher = EntropyPatcher(models, PatchConfig(entropy_threshold=float(np.median(H)), min_patch_size=1,
                                                 max_patch_size=8), combine="max")
    cached = blt.generate(b"Ensemble ", 70, patcher=patcher, temperature=0)
    assert len(cached) == 70 and cached == blt.generate(b"Ensemble ", 70, patcher=patcher, temperature=0,
                                                        use_cache=False)
    assert len(set(patcher.patch_lengths(b"Ensemble " + cached).tolist())) > 2


# -------------------------------------------------------------------------------- boundary quality


def test_boundary_quality_on_hand_made_patchings():
    doc = b"hello world"  # word boundaries (bytes i-1, i not both word bytes) at i = 5 and 6
    s = np.array([9, 1, 1, 1, 1, 1, 4, 1, 1, 1, 1], dtype=np.float64)  # byte 0 is left out of every figure
    good = boundary_quality([doc], [[6, 5]], [s])
    assert good["word_boundary_fraction"] == 1.0 and good["word_boundary_base_rate"] == pytest.approx(0.2)
    assert good["boundary_enrichment"] == pytest.approx(4.0)  # 4 at the start 'w', 1 elsewhere
    assert good["mean_patch_size"] == 5.5 and good["median_patch_size"] == 5.5
    assert good["patch_size_cv"] == pytest.approx(0.5 / 5.5)
    bad = boundary_quality([doc], [[3, 8]], [s])  # "hel" | "lo world": cuts a word
    assert bad["word_boundary_fraction"] == 0.0 and bad["boundary_enrichment"] == pytest.approx(1 / (12 / 9))
    assert bad["patch_size_cv"] == pytest.approx(2.5 / 5.5)
    two = boundary_quality([doc, b"a_b c", "né".encode()], [[6, 5], [2, 3], [2, 1]])
    # starts: 6 (boundary); 2 ('_' -> 'b', inside a word); 2 (inside the UTF-8 bytes of é)
    assert two["word_boundary_fraction"] == pytest.approx(1 / 3) and two["boundary_enrichment"] is None
    assert boundary_quality([doc], [[11]])["word_boundary_fraction"] is None  # no start but byte 0
    assert boundary_quality([], [])["mean_patch_size"] == 0.0


def test_cutting_every_byte_scores_the_base_rate_and_equal_sizes_vary_by_nothing():
    rng = np.random.default_rng(0)
    docs = [bytes(rng.choice(list(b"ab _,\xc3"), 50).astype(np.uint8)) for _ in range(4)]
    every = boundary_quality(docs, [np.ones(50, np.int64)] * 4, [rng.random(50) for _ in docs])
    assert every["word_boundary_fraction"] == every["word_boundary_base_rate"]
    assert every["boundary_enrichment"] is None and every["patch_size_cv"] == 0.0  # no byte is not a start
    with pytest.raises(ValueError, match="surprisal"):
        boundary_quality(docs[:1], [[50]], [np.zeros(49)])
    with pytest.raises(ValueError, match="sum"):
        boundary_quality(docs[:1], [[49]])


# -------------------------------------------------------------------------------- per-domain analysis


def domains():
    """Two small corpora of many documents (the split needs some to hold out): prose-like and code-like."""
    words = b"the of and a to in is was that for it with as his on be at by".split()
    rng = np.random.default_rng(0)
    prose = [b" ".join(rng.choice(words, 40)) + b"." for _ in range(60)]
    code = [b"def f%d(x):\n    return x * %d + g(x, %d)\n" % (k, k % 7, k % 3) for k in range(60)]
    return {"prose": prose, "code": code}


def test_analysis_per_domain_and_the_transfer_table(models, tmp_path):
    corpora = domains()
    a = analyze_entropy_distribution(models[0], corpora, plot=str(tmp_path / "h.png"))
    assert (tmp_path / "h.png").read_bytes()[:4] == b"\x89PNG"
    assert set(a["domains"]) == {"prose", "code"} and json.loads(json.dumps(a))
    cfg = PatchConfig(min_patch_size=1, cache_patches=False)
    for name, docs in corpora.items():
        train, val = split_documents(docs)
        d = a["domains"][name]
        assert d["num_bytes"] == sum(map(len, train)) and d["num_held_out_bytes"] == sum(map(len, val))
        h = compute_entropies(models[0], train)
        assert d["mean"] == pytest.approx(np.concatenate(h).mean(), rel=1e-5)  # training documents only
        for method in ("global", "monotonic"):
            for size in (3, 4.5):
                t = d["thresholds_for_patch_size"][method][size]
                c = PatchConfig(method=method, entropy_threshold=t, min_patch_size=1, cache_patches=False)
                _, stats = EntropyPatcher(None, c).process_data(train, entropies=h)
                assert abs(stats["mean_patch_size"] - size) <= 0.05 * size, (name, method, size)
    # transfer: A's threshold on B's held-out documents, recomputed here
    for method in ("global", "monotonic"):
        for A in corpora:
            t = a["domains"][A]["thresholds_for_patch_size"][method][4.5]
            for B, docs in corpora.items():
                val = split_documents(docs)[1]
                c = PatchConfig(method=method, entropy_threshold=t, min_patch_size=1, cache_patches=False)
                h = compute_entropies(models[0], val)
                _, stats = EntropyPatcher(None, c).process_data(val, entropies=h)
                assert a["transfer"][method][4.5][A][B] == pytest.approx(stats["mean_patch_size"])
    g = a["transfer"]["global"][4.5]
    assert g["prose"]["code"] != g["code"]["code"]  # the two domains' thresholds differ in effect
    text = format_analysis(a)
    assert "global: prose -> code" in text and "monotonic" in text
    assert cfg.min_patch_size == 1


def test_analyze_command_and_the_old_command_with_an_ensemble(models, tmp_path, capsys):
    paths = []
    for k, m in enumerate(models[:2]):
        paths.append(str(tmp_path / f"e{k}.pth"))
        save_checkpoint(m, paths[-1])
    report, plot = tmp_path / "a.json", tmp_path / "a.png"
    argv = ["analyze", "--checkpoint", paths[0], "--data", "builtin:code", "--data", "builtin:prose",
            "--max_bytes", "40000", "--report", str(report), "--plot", str(plot)]
    assert ep.main(argv) == 0
    out = capsys.readouterr().out
    assert "builtin:code ->" in out and "threshold (nats)" in out and plot.exists()
    r = json.loads(report.read_text())
    assert set(r["domains"]) == {"builtin:code", "builtin:prose"} and r["wall_s"] > 0
    assert set(r["transfer"]["monotonic"]["4.5"]["builtin:prose"]) == {"builtin:code", "builtin:prose"}
    assert r["domains"]["builtin:code"]["num_bytes"] > 20_000
    # an ensemble in analyze, and in the old single-text command
    assert ep.main(argv[:5] + ["--checkpoint", paths[1], "--combine", "js", "--max_bytes", "20000"]) == 0
    assert "transfer" in capsys.readouterr().out
    assert ep.main(["--checkpoint", paths[0], "--checkpoint", paths[1], "--combine", "max", "--text",
                    TEXT.decode(), "--target_patch_size", "3", "--min_patch_size", "1", "--report",
                    str(report)]) == 0
    r = json.loads(report.read_text())
    assert abs(r["mean_patch_size"] - 3) <= 0.15 and r["num_bytes"] == len(TEXT)
    assert ep.main(["analyze", "--checkpoint", str(tmp_path / "none.pth"), "--data", "builtin"]) == 2
    assert "none.pth" in capsys.readouterr().err


@pytest.mark.slow
def test_analyze_runs_as_a_script(models, tmp_path):
    ckpt = str(tmp_path / "e.pth")
    save_checkpoint(models[0], ckpt)
    cmd = [sys.executable, "entropy_patcher.py", "analyze", "--checkpoint", ckpt, "--data", "builtin:code",
           "--data", "builtin:prose", "--max_bytes", "30000", "--report", str(tmp_path / "r.json")]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    r = json.loads((tmp_path / "r.json").read_text())
    assert math.isfinite(r["domains"]["builtin:prose"]["mean"])


def test_entropy_histograms_plot(tmp_path):
    rng = np.random.default_rng(0)
    plot_entropy_histograms({"a": rng.gamma(2, 0.5, 500), "b": rng.gamma(3, 0.5, 500)},
                            {"a": {2: 0.4, 4.5: 1.2, 8: None}, "b": {}}, tmp_path / "h.png")
    assert (tmp_path / "h.png").read_bytes()[:4] == b"\x89PNG"


# -------------------------------------------------------------------------------- the study's questions

STUDY_TINY = ["--template_preset", "cpu", "--blt_preset", "tiny", "--entropy_preset", "tiny",
              "--entropy_steps", "20", "--max_bytes", "60000", "--context_bytes", "64",
              "--blt_local_dim", "32", "--bpe_vocab_size", "300", "--batch_size", "2",
              "--bootstrap_reps", "200", "--flops_budget", "3e9"]


@pytest.mark.slow
def test_the_study_by_domains_with_boundary_quality(tmp_path, monkeypatch):
    import complete_entropy_workflow as wf

    monkeypatch.chdir(tmp_path)
    out = tmp_path / "dom"
    assert wf.main([*STUDY_TINY, "--train_entropy", "--runs", "bpe,blt-space,blt-entropy-4.5", "--domains",
                    "builtin:code,builtin:prose", "--out", str(out)]) == 0
    info = json.loads((out / "domains.json").read_text())
    assert set(info["domains"]) == {"builtin:code", "builtin:prose"} and (out / "domains.png").exists()
    table = (out / "domains.md").read_text()
    assert "| run | builtin:code | builtin:prose |" in table and "| blt-entropy-4.5 |" in table
    for d in ("builtin_code", "builtin_prose"):
        r = json.loads((out / d / "results.json").read_text())
        assert (out / d / "entropy_model.pth").exists()
        assert r["boundary_reference"] == "the study's entropy model"
        runs = {x["name"]: x for x in r["runs"]}
        assert runs["bpe"]["boundary"] is None
        space, ent = runs["blt-space"]["boundary"], runs["blt-entropy-4.5"]["boundary"]
        assert space["word_boundary_fraction"] == 1.0  # the space rule never cuts a word
        assert ent["word_boundary_fraction"] < 1.0 and ent["boundary_enrichment"] > 0
        assert "## Boundary quality" in (out / d / "results.md").read_text()


@pytest.mark.slow
def test_the_entropy_models_data_study(tmp_path, monkeypatch):
    import complete_entropy_workflow as wf

    monkeypatch.chdir(tmp_path)
    out = tmp_path / "ed"
    assert wf.main([*STUDY_TINY, "--data", "builtin:code", "--entropy_data_fraction", "0.1,1.0",
                    "--out", str(out)]) == 0
    rows = json.loads((out / "entropy_data.json").read_text())["entropy_data"]
    assert [r["entropy_data"] for r in rows] == ["10% of builtin:code", "100% of builtin:code",
                                                 "builtin:prose (other domain)"]
    assert rows[0]["entropy_train_bytes"] < 0.2 * rows[1]["entropy_train_bytes"]
    for r in rows:
        assert math.isfinite(r["entropy_val_bpb"]) and math.isfinite(r["val_bpb"])
        assert r["run"] == "blt-entropy-4.5"
        assert abs(r["mean_patch_size"] - 4.5) < 0.25 and r["boundary"]["boundary_enrichment"] is not None
    assert "| builtin:prose (other domain) |" in (out / "entropy_data.md").read_text()
    with pytest.raises(SystemExit):
        wf.main([*STUDY_TINY, "--entropy_data_fraction", "0,2", "--out", str(out)])


# -------------------------------------------------------------------------------- a BLT on ensemble patches


@pytest.fixture(scope="module")
def two_saved(tmp_path_factory):
    """Two tiny entropy models saved to disk (the ensemble a BLT trains on) and a small corpus."""
    folder = tmp_path_factory.mktemp("ens")
    paths = [str(folder / f"e{k}.pth") for k in range(2)]
    for k, path in enumerate(paths):
        save_checkpoint(tiny_model(k), path)
    rng = np.random.default_rng(0)
    words = [b"alpha", b"beta", b"gamma", b"delta", b"(x)", b"\n", b"    ", b"return", b"=", b"0x1f"]
    docs = [b" ".join(words[j] for j in rng.integers(0, len(words), 200)) for _ in range(20)]
    return paths, docs


def test_prepare_dataset_patches_on_the_ensembles_combined_score(two_saved, tmp_path):
    import train_blt as tb
    from save_entropy_model import load_entropy_model, model_fingerprint

    paths, docs = two_saved
    ms = [load_entropy_model(p) for p in paths]
    pc = tb.patch_config(max_patch_size=16, cache_dir=str(tmp_path), target_patch_size=4.5)
    ds = tb.prepare_dataset(docs, pc, ms, paths, combine="max")
    assert ds.combine == "max" and ds.entropy_model_path == paths
    assert ds.entropy_fingerprint == [model_fingerprint(m) for m in ms]
    assert ds.patching_flops_per_byte == patching_flops_per_byte(EntropyEnsemble(ms, "max"))
    assert abs(ds.mean_patch_size - 4.5) < 0.5
    ens = EntropyPatcher(ms, ds.patch_config, combine="max")
    def listed(lengths):
        return [n.tolist() for n in lengths]

    assert listed(ds.train_lengths) == listed(ens.document_patch_lengths(ds.train_docs))
    assert listed(ds.val_lengths) == listed(ens.document_patch_lengths(ds.val_docs))
    one = EntropyPatcher(ms[0], ds.patch_config)  # the first model alone at that threshold patches otherwise
    assert listed(ds.train_lengths) != listed(one.document_patch_lengths(ds.train_docs))
    assert ds.meta()["patch"]["ensemble"] == {"combine": "max", "models": 2}
    assert ds.meta()["entropy_model"] == paths
    with pytest.raises(ValueError, match="as many paths"):
        tb.prepare_dataset(docs, pc, ms, paths[:1])
    with pytest.raises(ValueError, match="ensemble"):
        tb.prepare_dataset(docs, pc, ms[0], paths[0], combine="max")


def test_a_blt_trained_on_ensemble_patches_reloads_with_its_ensemble(two_saved, tmp_path):
    import shutil

    import train_blt as tb
    from save_entropy_model import CheckpointError, load_entropy_model, model_fingerprint

    paths, docs = two_saved
    paths = [str(shutil.copy(p, tmp_path / f"m{k}.pth")) for k, p in enumerate(paths)]
    ms = [load_entropy_model(p) for p in paths]
    pc = tb.patch_config(max_patch_size=16, cache_dir=str(tmp_path), target_patch_size=4.5)
    ds = tb.prepare_dataset(docs, pc, ms, paths, combine="js")
    ckpt = str(tmp_path / "blt.pth")
    cfg = tb.train_config(max_bytes=60_000, batch_size=2, max_steps=2, eval_interval=0, ckpt_interval=0,
                          warmup_steps=1, eval_max_bytes=2_000)
    tb.train_blt(tb.build_model(tb.model_config("tiny")), ds, cfg, ckpt, "cpu")
    blt = tb.load_blt(ckpt)
    e = blt.patcher.entropy_model
    assert isinstance(e, EntropyEnsemble) and e.config.combine == "js"
    assert [model_fingerprint(m) for m in e.models] == [model_fingerprint(m) for m in ms]
    assert blt.patcher.config.entropy_threshold == ds.patch_config.entropy_threshold
    assert blt.patcher.patch_lengths(ds.val_docs[0]).tolist() == ds.val_lengths[0].tolist()
    save_checkpoint(tiny_model(5), paths[1])  # the second model changed since training: refused
    with pytest.raises(CheckpointError, match="m1.pth has changed"):
        tb.load_blt(ckpt)


def test_the_study_trains_a_blt_on_an_ensemble_of_two_entropy_models(tmp_path, monkeypatch, capsys):
    import complete_entropy_workflow as wf
    from save_entropy_model import load_entropy_model, model_fingerprint

    monkeypatch.chdir(tmp_path)
    out = tmp_path / "ens"
    assert wf.main([*STUDY_TINY, "--train_entropy", "--runs", "bpe,blt-entropy-ensemble-4.5",
                    "--out", str(out)]) == 0
    info = json.loads((out / "results.json").read_text())
    first, second = info["entropy_model"], info["entropy_model"]["second"]
    assert second["checkpoint"] == str(out / "entropy_model_seed2.pth") and second["trained_here"]
    m1, m2 = (load_entropy_model(str(out / f)) for f in ("entropy_model.pth", "entropy_model_seed2.pth"))
    assert model_fingerprint(m1) != model_fingerprint(m2)  # seed + 1: another model
    run = {r["name"]: r for r in info["runs"]}["blt-entropy-ensemble-4.5"]
    assert run["patching_flops_per_byte"] == pytest.approx(first["patching_flops_per_byte"]
                                                           + second["patching_flops_per_byte"])
    assert first["train_flops"] > 0 and run["entropy_train_flops"] == pytest.approx(first["train_flops"]
                                                                                    + second["train_flops"])
    assert math.isfinite(run["val_bpb"]) and abs(run["mean_patch_size"] - 4.5) < 0.5
    blt = wf.tb.load_blt(run["checkpoint"])
    assert [model_fingerprint(m) for m in blt.patcher.entropy_model.models] == [model_fingerprint(m1),
                                                                               model_fingerprint(m2)]
    assert blt.patcher.entropy_model.config.combine == "mean"
    assert "Second entropy model" in (out / "results.md").read_text()
    (out / "entropy_model.pth").rename(out / "first.pth")
    (out / "results.json").unlink()
    for f in out.glob("*-seed*.pth"):
        if f.name != "entropy_model_seed2.pth":
            f.unlink()
    capsys.readouterr()  # the second model alone is refused too, unless --overwrite
    assert wf.main([*STUDY_TINY, "--train_entropy", "--runs", "blt-entropy-ensemble-4.5",
                    "--out", str(out)]) == 2
    assert "entropy_model_seed2.pth exists" in capsys.readouterr().err
