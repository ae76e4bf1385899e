"""Issue 14: check everything before training starts, never replace a user's model, never report NaN.

One test per case of the issue (numbered as there); every command runs in-process on tiny presets
(seconds), except Ctrl-C, which needs a real process and a real signal (slow).
"""
import glob
import json
import os
import signal
import stat
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest
import torch

import common
import entropy_llm
import entropy_patcher
import template_llm
import train_blt
from entropy_llm import EntropyConfig, MinimalLLM, compute_entropies
from entropy_patcher import EntropyPatcher, PatchConfig, cached_entropies, entropy_cache_path
from save_entropy_model import CheckpointError, load_checkpoint, load_entropy_model, save_checkpoint
from training import make_optimizer, resume_from

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = ["--max_steps", "2", "--batch_size", "2", "--warmup_steps", "1", "--eval_interval", "0",
         "--ckpt_interval", "0"]
LM_FLAGS = ["--preset", "tiny", *STEPS]  # entropy_llm and template_llm
BLT_FLAGS = ["--preset", "tiny", "--max_patch_size", "16", *STEPS]
SCRIPTS = {"entropy_llm": entropy_llm.main, "template_llm": template_llm.main, "train_blt": train_blt.main}


@pytest.fixture(autouse=True)
def own_cache_one_thread(tmp_path, monkeypatch):
    """Every test writes its entropy caches to its own folder (never ~/.cache), and runs its tiny models on
    one thread: on a busy 2-core machine a second OpenMP thread makes them ~30x slower, never faster."""
    monkeypatch.setenv("BLT_CACHE_DIR", str(tmp_path / "cache"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Twelve documents of ~600 bytes: enough to hold some out, small enough for seconds-long runs."""
    folder = tmp_path_factory.mktemp("corpus")
    rng = np.random.default_rng(0)
    words = [b"alpha", b"beta", b"gamma", b"delta", b"(x)", b"\n", b"    ", b"return", b"=", b"0x1f"]
    for i in range(12):
        (folder / f"doc{i:02d}.txt").write_bytes(b" ".join(words[j] for j in rng.integers(0, 10, 120)))
    return str(folder)


@pytest.fixture(scope="module")
def entropy_path(tmp_path_factory):
    torch.manual_seed(0)
    path = str(tmp_path_factory.mktemp("entropy") / "entropy.pth")
    save_checkpoint(MinimalLLM(EntropyConfig(d_model=32, n_heads=2, n_layers=1, max_seq_len=64)), path)
    return path


def tiny_entropy_model(seed=0):
    torch.manual_seed(seed)
    return MinimalLLM(EntropyConfig(d_model=32, n_heads=2, n_layers=1, max_seq_len=64)).eval()


def one_line_error(capsys, *words):
    """The command ends with a one-line error (progress bars and warnings may come first), no traceback."""
    out = capsys.readouterr().err
    err = out.strip().splitlines()[-1] if out.strip() else ""
    assert err.startswith("error: ") and "Traceback" not in out, out
    for w in words:
        assert w in err, err
    return err


def blt_args(corpus, entropy_path, out, *more):
    return [*BLT_FLAGS, "--data", corpus, "--entropy_model_path", entropy_path, "--out", str(out), *more]


# ----------------------------------------------------------------------------------------------------
# Work lost


@pytest.fixture(scope="module")
def blt_with_entropy(corpus, tmp_path_factory):
    """`train_blt.py --train_entropy --preset tiny`, run in a folder that holds a user's entropy_model.pth."""
    cwd = tmp_path_factory.mktemp("cwd")
    user_model = cwd / "entropy_model.pth"
    user_model.write_bytes(b"the user's own model")
    out = tmp_path_factory.mktemp("run") / "mybl.pth"
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BLT_CACHE_DIR", str(cwd / "cache"))
        mp.chdir(cwd)
        torch.set_num_threads(1)
        try:
            rc = train_blt.main([*BLT_FLAGS, "--data", corpus, "--train_entropy", "--out", str(out)])
        finally:
            torch.set_num_threads(threads)
    return rc, user_model, out


def test_1_train_entropy_writes_beside_out_and_never_replaces_a_model(blt_with_entropy, corpus, capsys):
    rc, user_model, out = blt_with_entropy
    assert rc == 0
    assert user_model.read_bytes() == b"the user's own model"  # ./entropy_model.pth untouched
    beside = out.parent / "mybl.entropy.pth"
    assert beside.exists()
    assert train_blt.load_blt(str(out)).patcher.entropy_model is not None  # the BLT reads that model
    before = beside.read_bytes()
    capsys.readouterr()
    again = str(out.parent / "other.pth")
    assert train_blt.main([*BLT_FLAGS, "--data", corpus, "--train_entropy", "--out", again,
                           "--entropy_model_path", str(beside)]) == 2
    one_line_error(capsys, str(beside), "--overwrite")
    assert beside.read_bytes() == before


def test_2_a_tiny_preset_shrinks_the_entropy_model_it_trains(blt_with_entropy):
    _, _, out = blt_with_entropy
    extra = load_checkpoint(str(out.parent / "mybl.entropy.pth"))["_extra_state"]
    assert extra["config"]["d_model"] == entropy_llm.ENTROPY_PRESETS["tiny"]["d_model"]
    assert extra["train"]["step"] == 2  # the run's --max_steps, not the cpu preset's 1500


@pytest.mark.parametrize("script", list(SCRIPTS))
@pytest.mark.parametrize("where", ["folder", "under_a_file", "unwritable"])
def test_3_an_unwritable_out_is_refused_before_training(script, where, tmp_path, corpus, entropy_path,
                                                         capsys, monkeypatch):
    (tmp_path / "a_file").write_bytes(b"x")
    out = {"folder": str(tmp_path), "under_a_file": str(tmp_path / "a_file" / "m.pth"),
           "unwritable": "/proc/no_such_folder/m.pth"}[where]

    def no_data(*a, **k):
        raise AssertionError("the corpus was read before the output was checked")

    monkeypatch.setattr(sys.modules[script], "load_corpus", no_data)
    flags = blt_args(corpus, entropy_path, out) if script == "train_blt" else [*LM_FLAGS, "--data", corpus,
                                                                               "--out", out]
    assert SCRIPTS[script](flags) == 2
    one_line_error(capsys, out)


def test_4_a_read_only_working_folder_does_not_stop_train_blt(tmp_path, corpus, entropy_path, monkeypatch):
    monkeypatch.delenv("BLT_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.chdir("/proc")  # a folder nobody can write in, root included
    assert train_blt.main(blt_args(corpus, entropy_path, tmp_path / "blt.pth")) == 0
    assert glob.glob(str(tmp_path / "xdg" / "entropy-blt" / "entropies" / "*.npz"))
    # and the folder is the user's to choose
    monkeypatch.setenv("BLT_CACHE_DIR", str(tmp_path / "mine"))
    model = load_entropy_model(entropy_path)
    cached_entropies(model, [b"some bytes"], "")  # "": the default folder, which the variable sets
    assert glob.glob(str(tmp_path / "mine" / "*.npz"))
    assert train_blt.main(blt_args(corpus, entropy_path, tmp_path / "b3.pth", "--cache_dir",
                                   str(tmp_path / "flag"))) == 0
    assert glob.glob(str(tmp_path / "flag" / "*.npz"))


# ----------------------------------------------------------------------------------------------------
# Silent wrong results


@pytest.mark.parametrize("script", ["entropy_llm", "template_llm"])
def test_5_resume_with_other_data_is_refused(script, tmp_path, corpus, capsys):
    out = str(tmp_path / "m.pth")
    assert SCRIPTS[script]([*LM_FLAGS, "--data", corpus, "--out", out]) == 0
    capsys.readouterr()
    assert SCRIPTS[script]([*LM_FLAGS, "--data", corpus, "--out", out, "--max_bytes", "4000",
                            "--resume"]) == 2
    one_line_error(capsys, "other training data")
    other = tmp_path / "other.txt"
    other.write_bytes(b"some other corpus entirely. " * 400)
    assert SCRIPTS[script]([*LM_FLAGS, "--data", str(other), "--out", out, "--resume"]) == 2
    one_line_error(capsys, "other training data")


def test_6_blt_resume_with_another_entropy_model_or_threshold_is_refused(tmp_path, corpus, entropy_path,
                                                                        capsys):
    out = tmp_path / "blt.pth"
    assert train_blt.main(blt_args(corpus, entropy_path, out)) == 0
    other = str(tmp_path / "other_entropy.pth")
    save_checkpoint(tiny_entropy_model(seed=1), other)
    capsys.readouterr()
    assert train_blt.main(blt_args(corpus, other, out, "--resume")) == 2
    one_line_error(capsys, "entropy model")
    assert train_blt.main(blt_args(corpus, entropy_path, out, "--resume", "--entropy_threshold", "0.5")) == 2
    one_line_error(capsys, "patches")


def test_7_entropy_batch_size_below_one_is_an_error(entropy_path, capsys):
    model = tiny_entropy_model()
    for bad in (-1, 0):
        with pytest.raises(ValueError, match="batch_size"):
            compute_entropies(model, b"every entropy would be zero", batch_size=bad)
    assert entropy_patcher.main(["--entropy_model_path", entropy_path, "--text", "hello there",
                                 "--batch_size", "-1"]) == 2
    one_line_error(capsys, "batch_size")


def test_8_a_zeroed_block_inside_a_cache_file_is_detected(tmp_path):
    model, docs = tiny_entropy_model(), [bytes(range(256)) * 40, b"a second document " * 50]
    fresh = cached_entropies(model, docs, str(tmp_path))
    (path,) = glob.glob(str(tmp_path / "*"))
    raw = bytearray(open(path, "rb").read())
    mid = len(raw) // 2
    raw[mid:mid + 512] = bytes(512)  # bit-rot in the middle of the payload
    open(path, "wb").write(raw)
    with pytest.warns(UserWarning, match="recomputing"):
        again, hit = cached_entropies(model, docs, str(tmp_path), with_hit=True)
    assert not hit and all(np.array_equal(a, b) for a, b in zip(fresh, again))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the rewritten file is trusted again
        assert cached_entropies(model, docs, str(tmp_path), with_hit=True)[1]


def test_9_a_nan_target_patch_size_is_refused(tmp_path, corpus, entropy_path, capsys):
    out = tmp_path / "b.pth"
    assert train_blt.main(blt_args(corpus, entropy_path, out, "--target_patch_size", "nan")) == 2
    one_line_error(capsys, "target_patch_size")
    assert entropy_patcher.main(["--entropy_model_path", entropy_path, "--text", "hello",
                                 "--target_patch_size", "nan"]) == 2
    one_line_error(capsys, "target_patch_size")
    assert train_blt.main(blt_args(corpus, entropy_path, out, "--entropy_threshold", "inf")) == 2
    one_line_error(capsys, "entropy_threshold")


@pytest.mark.parametrize("script", list(SCRIPTS))
def test_10_resuming_a_finished_run_reports_its_stored_result(script, tmp_path, corpus, entropy_path, capsys):
    out, r1, r2 = str(tmp_path / "m.pth"), str(tmp_path / "r1.json"), str(tmp_path / "r2.json")
    base = blt_args(corpus, entropy_path, out) if script == "train_blt" else [*LM_FLAGS, "--data", corpus,
                                                                              "--out", out]
    assert SCRIPTS[script]([*base, "--report", r1]) == 0
    capsys.readouterr()
    before = os.path.getmtime(out)
    assert SCRIPTS[script]([*base, "--report", r2, "--resume"]) == 0
    said = capsys.readouterr().out
    assert "already finished" in said and "nan" not in said, said
    first, second = json.load(open(r1)), json.load(open(r2))
    assert np.isfinite(second["val_bpb"]) and second["val_bpb"] == first["val_bpb"]
    assert second["val_bytes"] == first["val_bytes"] > 0
    assert os.path.getmtime(out) == before  # nothing to train, nothing rewritten


@pytest.mark.parametrize("script", ["entropy_llm", "template_llm", "train_blt"])
def test_11_a_corpus_too_small_to_hold_out_is_refused(script, tmp_path, entropy_path, capsys, monkeypatch):
    tiny = tmp_path / "one_byte.txt"
    tiny.write_bytes(b"x")
    flags = (blt_args(str(tiny), entropy_path, tmp_path / "m.pth") if script == "train_blt"
             else [*LM_FLAGS, "--data", str(tiny), "--out", str(tmp_path / "m.pth")])
    monkeypatch.setattr(sys.modules[script], "train", lambda *a, **k: pytest.fail("training started"),
                        raising=False)
    assert SCRIPTS[script](flags) == 2
    one_line_error(capsys, "hold out")
    assert not os.path.exists(tmp_path / "m.pth")


def test_12_a_checkpoint_with_nan_weights_is_refused(tmp_path):
    model = tiny_entropy_model()
    path = str(tmp_path / "e.pth")
    save_checkpoint(model, path)
    state = torch.load(path, weights_only=True)
    state["head.weight"][0, 0] = float("nan")
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="non-finite"):
        load_entropy_model(path)
    with torch.no_grad():
        model.head.weight[0, 0] = float("inf")
    good = str(tmp_path / "good.pth")
    save_checkpoint(tiny_entropy_model(), good)
    with pytest.raises(CheckpointError, match="non-finite"):  # a diverged model never replaces a good one
        save_checkpoint(model, good)
    load_entropy_model(good)


# ----------------------------------------------------------------------------------------------------
# Tracebacks instead of one-line errors


@pytest.mark.parametrize("script", list(SCRIPTS))
@pytest.mark.parametrize("flag,value,words", [
    ("--batch_size", "0", "batch_size"), ("--batch_size", "-3", "batch_size"), ("--lr", "0", "lr"),
    ("--lr=-1e-3", None, "lr"), ("--lr", "nan", "lr"), ("--lr", "inf", "lr"),
    ("--max_steps", "0", "max_steps"), ("--grad_clip", "-1", "grad_clip"),
    ("--min_lr_ratio", "2", "min_lr_ratio")])
def test_13_bad_numbers_are_one_line_errors_before_any_data(script, flag, value, words, tmp_path, corpus,
                                                            entropy_path, capsys, monkeypatch):
    monkeypatch.setattr(sys.modules[script], "load_corpus", lambda *a, **k: pytest.fail("data was read"))
    out = tmp_path / "m.pth"
    flags = blt_args(corpus, entropy_path, out) if script == "train_blt" else [*LM_FLAGS, "--data", corpus,
                                                                               "--out", str(out)]
    assert SCRIPTS[script]([*flags, flag] + ([value] if value else [])) == 2
    one_line_error(capsys, words)


def test_13_generation_flags_are_range_checked(tmp_path, corpus, entropy_path, capsys):
    out = str(tmp_path / "b.pth")
    assert train_blt.main(blt_args(corpus, entropy_path, out)) == 0
    for flag, value in (("--temperature", "nan"), ("--temperature", "-1"), ("--top_k", "0"),
                        ("--max_new_bytes", "-5")):
        capsys.readouterr()
        assert train_blt.main(["--generate", "--checkpoint", out, flag, value]) == 2
        one_line_error(capsys, flag)


@pytest.mark.parametrize("script", ["entropy_llm", "train_blt"])
def test_14_a_diverging_run_stops_with_one_line_and_keeps_the_last_good_checkpoint(script, tmp_path, corpus,
                                                                                   entropy_path, capsys):
    out = str(tmp_path / "m.pth")
    base = blt_args(corpus, entropy_path, out) if script == "train_blt" else [*LM_FLAGS, "--data", corpus,
                                                                              "--out", out]
    flags = [*base, "--lr", "1e6", "--warmup_steps", "0", "--max_steps", "50", "--ckpt_interval", "1",
             "--grad_clip", "0"]
    assert SCRIPTS[script](flags) == 2
    err = one_line_error(capsys, "diverged", "step", "lower --lr")
    if os.path.exists(out):  # the last checkpoint written before the divergence: finite, resumable
        assert "last good checkpoint" in err
        load_checkpoint(out)


def test_14_a_nan_evaluation_is_an_error():
    from training import TrainingError, checked
    with pytest.raises(TrainingError, match="nan"):
        checked({"val_bpb": float("nan"), "val_bytes": 10}, 5)
    with pytest.raises(TrainingError, match="no bytes"):
        checked({"val_bpb": 1.0, "val_bytes": 0}, 5)


@pytest.mark.parametrize("wrong", ["npy", "text", "empty", "folder"])
def test_15_a_wrong_type_cache_file_is_recomputed(tmp_path, wrong):
    model, docs = tiny_entropy_model(), [b"some bytes to patch", b"and some more"]
    fresh = cached_entropies(model, docs, str(tmp_path))
    path = entropy_cache_path(model, docs, str(tmp_path))
    os.remove(path)
    if wrong == "npy":  # a plain array of the right size and type, where the .npz belongs
        with open(path, "wb") as f:
            np.save(f, np.zeros(sum(map(len, docs)), np.float32))
    elif wrong == "folder":
        os.makedirs(path)
    else:
        open(path, "wb").write(b"" if wrong == "empty" else b"not numpy at all")
    with pytest.warns(UserWarning):
        again, hit = cached_entropies(model, docs, str(tmp_path), with_hit=True)
    assert not hit and all(np.array_equal(a, b) for a, b in zip(fresh, again))
    lengths = EntropyPatcher(model, PatchConfig(entropy_threshold=1.0, cache_dir=str(tmp_path)))
    assert sum(map(int, lengths.patch_lengths(docs[0]))) == len(docs[0])


@pytest.mark.slow
def test_16_ctrl_c_saves_a_resumable_checkpoint_and_says_how_to_resume(tmp_path, corpus):
    out = str(tmp_path / "m.pth")
    cmd = [sys.executable, "-u", os.path.join(ROOT, "entropy_llm.py"), *LM_FLAGS, "--max_steps", "1000000",
           "--data", corpus, "--out", out]
    env = {**os.environ, "BLT_CACHE_DIR": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)
    try:
        for line in proc.stdout:  # the set-up line: the loop starts right after it
            if line.startswith("entropy model:"):
                break
        time.sleep(2.0)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    last = err.strip().splitlines()[-1]
    assert "Traceback" not in err and "--resume" in last and out in last, err
    config = entropy_llm.build_config("tiny", max_steps=1000000, batch_size=2, warmup_steps=1,
                                      eval_interval=0, ckpt_interval=0)
    model = MinimalLLM(config)
    optimizer = make_optimizer(model, config.lr, config.weight_decay, torch.device("cpu"))
    assert resume_from(out, model, optimizer, config) >= 1
    assert not glob.glob(out + ".*.tmp")


# ----------------------------------------------------------------------------------------------------
# Housekeeping


def test_17_atomic_writes_keep_the_umask_fsync_and_leave_no_temporaries(tmp_path, monkeypatch):
    path = str(tmp_path / "m.json")
    old = os.umask(0o022)
    try:
        common.write_report(path, {"a": 1})
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
        os.umask(0o027)
        common.write_report(path, {"a": 2})
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o640
    finally:
        os.umask(old)
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd) or real_fsync(fd))
    common.write_report(path, {"a": 3})
    assert synced  # flushed to disk before the rename

    def fails(tmp):
        open(tmp, "w").write("half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        common.atomic_write(path, fails)
    assert json.load(open(path)) == {"a": 3}
    # a killed run's temporaries (a dead writer's pid, or an old one without a pid) are cleared
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    stale = [tmp_path / f"m.json.{dead}.abc123.tmp", tmp_path / "m.json.k2j4h5l6.tmp"]
    for s in stale:
        s.write_bytes(b"left by a kill")
    os.utime(stale[1], (time.time() - 2 * common.STALE_TMP_S,) * 2)
    live = tmp_path / f"m.json.{os.getpid()}.zz.tmp"  # a writer that is still running: kept
    live.write_bytes(b"")
    common.write_report(path, {"a": 4})
    assert not any(s.exists() for s in stale) and live.exists()
    assert sorted(os.listdir(tmp_path)) == sorted(["m.json", live.name])


def test_17_caches_live_in_a_user_cache_folder_not_the_working_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("BLT_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.chdir(tmp_path)
    model, docs = tiny_entropy_model(), [b"where does the cache go?"]
    EntropyPatcher(model, PatchConfig(entropy_threshold=1.0)).document_patch_lengths(docs)
    assert not os.path.exists(tmp_path / ".patch_cache")
    assert glob.glob(str(tmp_path / "xdg" / "entropy-blt" / "entropies" / "*.npz"))
