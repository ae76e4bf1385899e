"""complete_entropy_workflow.py: the whole study with tiny models and a tiny budget."""
import json
import os

import pytest

import complete_entropy_workflow as wf
import template_llm

TINY_STUDY = ["--template_preset", "tiny", "--blt_preset", "tiny", "--entropy_preset", "tiny",
              "--entropy_steps", "20", "--max_bytes", "60000", "--flops_budget", "5e9",
              "--bpe_vocab_size", "300", "--eval_points", "2"]


@pytest.mark.slow
def test_study_end_to_end_matched_budgets_and_a_clean_bpe(tmp_path, monkeypatch):
    seen = []
    build = template_llm.build_tokenizer

    def spy(config, docs):
        seen.append((config.tokenizer, list(docs)))
        return build(config, docs)

    monkeypatch.setattr(template_llm, "build_tokenizer", spy)
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "study"
    code = wf.main([*TINY_STUDY, "--train_entropy", "--out", str(out),
                    "--entropy_model_path", str(tmp_path / "e.pth"), "--report", str(tmp_path / "r.json")])
    assert code == 0
    summary = json.load(open(out / "results.json"))
    assert summary == json.load(open(tmp_path / "r.json"))
    runs = {r["name"]: r for r in summary["runs"]}
    assert list(runs) == list(wf.RUN_NAMES)
    budget = summary["study"]["flops_budget"]
    for r in runs.values():
        assert {"name", "val_bpb", "mean_patch_size", "flops_per_byte", "train_flops"} <= set(r)
        assert abs(r["train_flops"] - budget) / budget <= 0.05, r["name"]
        assert 0 < r["val_bpb"] < 9
    assert runs["blt-static"]["mean_patch_size"] == pytest.approx(4.0, abs=0.2)
    for name in ("blt-entropy-global", "blt-entropy-monotonic"):
        assert runs[name]["mean_patch_size"] == pytest.approx(4.5, rel=0.05)
    for f in ["results.md", *summary["plots"]]:
        assert os.path.getsize(out / f) > 0
    assert len(summary["plots"]) == 3
    table = open(out / "results.md").read()
    assert all(f"| {name} |" in table for name in wf.RUN_NAMES)

    # the BPE learned from training documents only: not one held-out document reached it
    from byte_data import load_corpus, split_documents

    train, val = split_documents(load_corpus("builtin", max_bytes=summary["study"]["max_bytes"]))
    bpe_docs = [docs for kind, docs in seen if kind == "bpe"]
    assert bpe_docs and all(d in train for d in bpe_docs[0]) and not set(bpe_docs[0]) & set(val)


def test_unknown_run_and_missing_entropy_model(tmp_path, capsys):
    with pytest.raises(SystemExit):
        wf.main(["--runs", "byte,nonsense"])
    with pytest.raises(SystemExit):
        wf.main(["--preset", "tiny"])  # the study's settings are its own flags, not a model size
    code = wf.main([*TINY_STUDY, "--runs", "blt-entropy-global", "--out", str(tmp_path / "s"),
                    "--entropy_model_path", str(tmp_path / "none.pth")])
    assert code == 2 and "--train_entropy" in capsys.readouterr().err
