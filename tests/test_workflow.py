"""complete_entropy_workflow.py: its command line (the protocol and an end-to-end study: test_study.py)."""
import pytest

import complete_entropy_workflow as wf

TINY_STUDY = ["--template_preset", "cpu", "--blt_preset", "tiny", "--max_bytes", "60000",
              "--context_bytes", "64", "--blt_local_dim", "32", "--bpe_vocab_size", "300",
              "--batch_size", "2",
              "--flops_budget", "3e9"]


def test_unknown_run_and_missing_entropy_model(tmp_path, capsys):
    with pytest.raises(SystemExit):
        wf.main(["--runs", "byte,nonsense"])
    with pytest.raises(SystemExit):
        wf.main(["--preset", "tiny"])  # the study's settings are its own flags, not a model size
    code = wf.main([*TINY_STUDY, "--runs", "blt-entropy-4.5", "--out", str(tmp_path / "s"),
                    "--entropy_model_path", str(tmp_path / "none.pth")])
    assert code == 2 and "--train_entropy" in capsys.readouterr().err
    code = wf.main([*TINY_STUDY, "--flops_budgets", "1e9,-2", "--out", str(tmp_path / "s")])
    assert code == 2 and "flops_budgets" in capsys.readouterr().err
