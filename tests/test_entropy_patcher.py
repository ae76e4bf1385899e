"""entropy_patcher: invariants and causality for every method and every scorer (one entropy model or an
ensemble), streaming == batch == torch, hand-worked cases, calibration, the disk cache, pictures and the
command line."""
import html
import json
import os
import re

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import entropy_patcher as ep
from entropy_llm import EntropyConfig, MinimalLLM, compute_entropies
from entropy_patcher import (
    ENTROPY_METHODS,
    METHODS,
    CalibrationError,
    EntropyPatcher,
    PatchConfig,
    PatchStream,
    analyze_entropy_distribution,
    cached_entropies,
    calibrate,
    calibrate_threshold,
    entropy_cache_path,
    patch_lengths_batch,
    patch_lengths_from_entropies,
    patch_start_mask,
    patcher_from_meta,
    split_patches,
    starts_to_lengths,
)
from patch_pictures import format_patches, plot_entropies, terminal_view, write_html

FAST = settings(max_examples=150, deadline=None)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py: tiny models run on one thread


def tiny_model(seed=0):
    torch.manual_seed(seed)
    return MinimalLLM(EntropyConfig(d_model=32, n_heads=2, n_layers=1, max_seq_len=64)).eval()


@pytest.fixture(scope="module")
def model():
    return tiny_model()


COMBINES = [None, "mean", "max", "js"]  # None: one entropy model; else an ensemble of three


def scorer(model, combine):
    """What a patcher reads H from: the model itself, or an ensemble of it and two others."""
    return model if combine is None else ep.EntropyEnsemble([model, tiny_model(1), tiny_model(2)], combine)


# -------------------------------------------------------------------------------- reference


def _word(b: int) -> bool:
    return chr(b).isascii() and chr(b).isalnum() or b == ord("_") or b >= 0x80


def reference_lengths(H, data: bytes, cfg: PatchConfig) -> list[int]:
    """DESIGN.md's rule read literally, byte by byte, independent of the code under test."""
    lo, hi = cfg.size_bounds
    t, t2 = cfg.entropy_threshold, cfg.monotonic_threshold
    H = [float(h) for h in H] if H is not None else None

    def candidate(i):
        return {
            "global": lambda: H[i] > t,
            "monotonic": lambda: H[i] - H[i - 1] > t,
            "global_monotonic": lambda: H[i] > t and H[i] - H[i - 1] > t2,
            "static": lambda: i % cfg.patch_size == 0,
            "space": lambda: i >= 2 and not _word(data[i - 1]) and _word(data[i - 2]),
            "byte": lambda: True,
        }[cfg.method]()

    lengths = []
    for i in range(len(data)):
        if i == 0 or lengths[-1] >= hi or (lengths[-1] >= lo and candidate(i)):
            lengths.append(1)
        else:
            lengths[-1] += 1
    return lengths


def starts_of(lengths) -> list[int]:
    return list(np.cumsum(lengths) - lengths)


ALPHABET = list(b"ab Z9 ,.\n-") + [0xC3, 0xA9, 0xE2, 0x80, 0x00, 0xFF]
ENTROPY = st.sampled_from([0.0, 0.5, 0.6, 1.0, 2.0, 3.5]) | st.floats(0, 6, width=32)
THRESHOLD = st.sampled_from([-1.0, 0.0, 0.3, 0.6, 1.0, 100.0]) | st.floats(-3, 7)


@st.composite
def configs(draw, methods=METHODS):
    lo = draw(st.integers(1, 6))
    hi = draw(st.integers(lo, 12))
    return PatchConfig(method=draw(st.sampled_from(methods)), entropy_threshold=draw(THRESHOLD),
                       monotonic_threshold=draw(THRESHOLD), patch_size=draw(st.integers(1, hi)),
                       min_patch_size=lo, max_patch_size=hi, cache_patches=False)


@st.composite
def documents(draw, max_len=80, n=None):
    n = draw(st.integers(0, max_len)) if n is None else n
    H = np.array(draw(st.lists(ENTROPY, min_size=n, max_size=n)), dtype=np.float32)
    data = bytes(draw(st.lists(st.sampled_from(ALPHABET), min_size=n, max_size=n)))
    return H, data


def check_invariants(lengths, n, cfg):
    lo, hi = cfg.size_bounds
    assert lengths.dtype == np.int64 and int(lengths.sum()) == n
    assert all(1 <= x <= hi for x in lengths)
    assert all(x >= lo for x in lengths[:-1])


# -------------------------------------------------------------------------------- properties


@FAST
@given(cfg=configs(), doc=documents())
def test_every_method_matches_the_reference_and_keeps_the_invariants(cfg, doc):
    H, data = doc
    lengths = patch_lengths_from_entropies(H, data, cfg)
    check_invariants(lengths, len(data), cfg)
    assert lengths.tolist() == reference_lengths(H, data, cfg)
    patches = split_patches(data, lengths)
    assert b"".join(patches) == data and [len(p) for p in patches] == lengths.tolist()


@FAST
@given(cfg=configs(), doc=documents(max_len=40))
def test_causality_a_change_at_j_moves_no_earlier_start(cfg, doc):
    H, data = doc
    base = starts_of(patch_lengths_from_entropies(H, data, cfg))
    for j in range(len(data)):
        for dh in (-7.0, 7.0):  # crosses every threshold: H[j] may decide whether j starts, nothing before j
            H2 = H.copy()
            H2[j] += dh
            s = starts_of(patch_lengths_from_entropies(H2, data, cfg))
            assert [x for x in s if x < j] == [x for x in base if x < j], f"H[{j}] moved an earlier start"
        # flip byte j between word and space-like: it may not even decide whether j starts
        data2 = data[:j] + (b" " if _word(data[j]) else b"a") + data[j + 1:]
        s = starts_of(patch_lengths_from_entropies(H, data2, cfg))
        assert [x for x in s if x <= j] == [x for x in base if x <= j], f"byte {j} moved an earlier start"


@FAST
@given(cfg=configs(), doc=documents())
def test_streaming_gives_exactly_the_batch_lengths(model, cfg, doc):
    H, data = doc
    stream = PatchStream(cfg, model)  # decide() takes H as given: the rule alone
    starts = []
    for i, b in enumerate(data):
        if stream.decide(float(H[i]) if cfg.needs_entropy else None):
            starts.append(i)
        stream.push(b)
    assert starts == starts_of(patch_lengths_from_entropies(H, data, cfg))


def middle_threshold(scores) -> float:
    """Halfway across the widest gap between distinct scores of the middle half: the KV-cached stream's
    entropies may differ from the batch's in the last float32 bits, which must not flip a start there."""
    v = np.unique(np.asarray(scores, dtype=np.float64))
    lo, hi = len(v) // 4, 3 * len(v) // 4
    k = lo + int(np.argmax(np.diff(v[lo:hi + 1])))
    return float((v[k] + v[k + 1]) / 2)


@pytest.mark.parametrize("method, combine", [(m, None) for m in METHODS]
                         + [(m, c) for m in ENTROPY_METHODS for c in COMBINES[1:]])  # ensembles: H methods
def test_the_stream_with_its_entropy_model_gives_the_batch_lengths(model, method, combine):
    """next_starts_patch / push byte by byte (each entropy model on its own KV cache, across windows of 64)
    == prefill of the whole == the batch rule on the batch scores (compute_entropies, or an ensemble's)."""
    data = ("Streams and batches agree, window after window: é, ü, 42. " * 3).encode()
    em = scorer(model, combine)
    H = ep.document_entropies(em, [data])[0]
    assert combine is not None or np.array_equal(H, compute_entropies(model, data))
    t = middle_threshold(H if method != "monotonic" else np.diff(H.astype(np.float64)))
    cfg = PatchConfig(method=method, entropy_threshold=t, monotonic_threshold=0.0, min_patch_size=2,
                      max_patch_size=7, patch_size=3)
    want = starts_of(patch_lengths_from_entropies(H, data, cfg))
    assert len(data) > 2 * model.config.max_seq_len and 2 < len(want) <= len(data)
    stream = EntropyPatcher(em, cfg).stream()
    starts = []
    for i, b in enumerate(data):
        if stream.next_starts_patch():
            starts.append(i)
        stream.push(b)
    assert starts == want
    flags = EntropyPatcher(em, cfg).stream().prefill(data)
    assert [i for i, s in enumerate(flags) if s] == want
    # a prefilled stream continues as one fed byte by byte
    s = EntropyPatcher(em, cfg).stream()
    head = s.prefill(data[:100])
    tail = []
    for b in data[100:]:
        tail.append(s.next_starts_patch())
        s.push(b)
    assert [i for i, f in enumerate(head + tail) if f] == want


@pytest.mark.parametrize("combine", COMBINES)
def test_causality_of_the_scores_a_changed_byte_moves_no_earlier_score_or_start(model, combine):
    """Score i (H, or an ensemble's combined score) reads bytes < i only: changing byte j leaves scores
    0..j and every start at or before j as they were, across the windows of 64 bytes."""
    em = scorer(model, combine)
    data = bytearray(b"causal scores over windows of sixty-four bytes, again and again. " * 3)
    base = ep.document_entropies(em, [bytes(data)])[0]
    cfg = PatchConfig(entropy_threshold=float(np.median(base)), min_patch_size=1, cache_patches=False)
    starts = starts_of(patch_lengths_from_entropies(base, bytes(data), cfg))
    for j in (0, 5, 63, 64, 100, len(data) - 1):
        other = bytearray(data)
        other[j] = (other[j] + 101) % 256
        h = ep.document_entropies(em, [bytes(other)])[0]
        assert np.array_equal(h[:j + 1], base[:j + 1]), f"byte {j} moved an earlier score"
        if j + 1 < len(data):
            assert not np.array_equal(h[j + 1:], base[j + 1:]), "the scores ignore the bytes"
        s = starts_of(patch_lengths_from_entropies(h, bytes(other), cfg))
        assert [x for x in s if x <= j] == [x for x in starts if x <= j]


@FAST
@given(cfg=configs(), docs=st.lists(documents(max_len=40), min_size=1, max_size=4))
def test_torch_batch_equals_numpy_per_row(cfg, docs):
    B, T = len(docs), max(len(d) for _, d in docs) + 3
    H = torch.full((B, T), float("nan"))  # padding: garbage that must not matter
    X = torch.full((B, T), -1, dtype=torch.long)
    for b, (h, d) in enumerate(docs):
        H[b, :len(d)] = torch.from_numpy(h)
        X[b, :len(d)] = torch.tensor(list(d), dtype=torch.long)
    valid = torch.tensor([len(d) for _, d in docs])
    out = patch_lengths_batch(H, X, valid, cfg)
    assert out.dtype == torch.long and out.shape[0] == B
    for b, (h, d) in enumerate(docs):
        row = patch_lengths_from_entropies(h, d, cfg)
        assert out[b, :len(row)].tolist() == row.tolist() and not out[b, len(row):].any()
    assert out.shape[1] == max(len(patch_lengths_from_entropies(h, d, cfg)) for h, d in docs)


def test_starts_to_lengths_scans_a_given_mask():
    cfg = PatchConfig(min_patch_size=2, max_patch_size=3)
    mask = np.array([0, 1, 1, 0, 0, 0, 0, 1, 0], dtype=bool)  # byte 0 starts even when unmarked
    assert starts_to_lengths(mask, cfg).tolist() == [2, 3, 2, 2]  # starts 0, 2, 5 (forced), 7


# -------------------------------------------------------------------------------- hand-worked


@pytest.mark.parametrize("cfg, H, data, expected", [
    # the module docstring's example: h and a are candidates inside a too-short patch
    (dict(entropy_threshold=1.0, min_patch_size=2), [3.0, 1.2, 0.4, 0.2, 2.5, 1.1, 0.3, 0.1, 2.2, 0.9, 0.2],
     b"the cat sat", [4, 4, 3]),
    (dict(entropy_threshold=0.5, min_patch_size=1), [0.9, 0.1, 0.8, 0.2, 0.2, 0.7], b"abcdef", [2, 3, 1]),
    (dict(entropy_threshold=0.5, min_patch_size=3), [0.9, 0.1, 0.8, 0.2, 0.2, 0.7], b"abcdef", [5, 1]),
    (dict(entropy_threshold=0.5, min_patch_size=1, max_patch_size=2), [0.9, 0.1, 0.8, 0.2, 0.2, 0.7],
     b"abcdef", [2, 2, 1, 1]),
    (dict(entropy_threshold=0.6, min_patch_size=1), [0.6, 0.6, 0.61, 0.6], b"abcd", [2, 2]),  # strictly above
    (dict(method="monotonic", entropy_threshold=0.3, min_patch_size=1), [1.0, 0.2, 0.9, 1.0, 0.1, 0.8],
     b"abcdef", [2, 3, 1]),
    (dict(method="global_monotonic", entropy_threshold=0.5, monotonic_threshold=0.3, min_patch_size=1),
     [0.1, 0.9, 0.95, 0.2, 0.7], b"abcde", [1, 3, 1]),
    (dict(method="static", patch_size=3), None, b"abcdefgh", [3, 3, 2]),
    (dict(method="static", patch_size=2, min_patch_size=4), None, b"abcde", [2, 2, 1]),  # min does not apply
    (dict(method="space", min_patch_size=1), None, b"hello, world", [6, 6]),
    (dict(method="space", min_patch_size=1), None, b"hi there", [3, 5]),
    (dict(method="space", min_patch_size=1), None, b"  a b", [4, 1]),  # leading space joins the first patch
    (dict(method="space", min_patch_size=1), None, "né là".encode(), [4, 3]),  # UTF-8 bytes are word bytes
    (dict(method="space", min_patch_size=1), None, b"a_b c", [4, 1]),  # `_` is a word byte (DESIGN.md)
    (dict(method="space", min_patch_size=4), None, b"a b c d e f", [4, 4, 3]),
    (dict(method="byte"), None, b"abc", [1, 1, 1]),  # min_patch_size 4 does not apply
])
def test_hand_worked_cases(cfg, H, data, expected):
    c = PatchConfig(cache_patches=False, **cfg)
    assert patch_lengths_from_entropies(H, data, c).tolist() == expected
    assert EntropyPatcher(None, c).create_patches(data, entropies=H) == split_patches(data, expected)


def test_masks_work_on_batches_of_rows():
    cfg = PatchConfig(method="monotonic", entropy_threshold=0.3)
    H = np.array([[1.0, 0.2, 0.9], [0.0, 0.5, 0.6]])
    assert patch_start_mask(H, None, cfg).tolist() == [[True, False, True], [True, True, False]]


# -------------------------------------------------------------------------------- config


@pytest.mark.parametrize("kw, msg", [
    (dict(method="entropy"), "unknown patching method"),
    (dict(min_patch_size=8, max_patch_size=4), "min_patch_size"),
    (dict(min_patch_size=0), ">= 1"),
    (dict(max_patch_size=-3), ">= 1"),
    (dict(patch_size=0), ">= 1"),
    (dict(method="static", patch_size=200), "max_patch_size"),
    (dict(min_patch_size=2.5), "integer"),
    (dict(entropy_threshold=float("nan")), "entropy_threshold"),
    (dict(entropy_threshold=float("inf")), "entropy_threshold"),
    (dict(monotonic_threshold=float("-inf")), "monotonic_threshold"),
    (dict(target_patch_size=float("nan")), "target_patch_size"),
    (dict(target_patch_size=0.5), "target_patch_size"),
])
def test_invalid_configs_fail_at_construction(kw, msg):
    with pytest.raises(ValueError, match=msg):
        PatchConfig(**kw)


def test_unknown_config_keys_fail():
    with pytest.raises(TypeError):
        PatchConfig(threshold=0.6)
    with pytest.raises(TypeError):
        EntropyPatcher(None, min_size=3)


def test_both_constructors_of_the_seed():
    a = EntropyPatcher(None, threshold=0.3, method="monotonic")
    assert a.config.method == "monotonic" and a.config.entropy_threshold == 0.3
    b = EntropyPatcher(None, PatchConfig(method="space", min_patch_size=2))
    assert b.config.method == "space" and b.config.min_patch_size == 2
    with pytest.raises(TypeError, match="threshold="):
        EntropyPatcher(None, 0.6)


# -------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("method", METHODS)
def test_empty_and_one_byte_input(method):
    cfg = PatchConfig(method=method, cache_patches=False)
    p = EntropyPatcher(None, cfg)
    assert p.patch_lengths(b"", entropies=np.zeros(0)).tolist() == []
    assert p.create_patches(b"", entropies=[]) == []
    assert p.create_patches(b"x", entropies=[1.0]) == [b"x"]
    patches, stats = p.process_data([b"", b"x"], entropies=[np.zeros(0), np.ones(1)])
    assert patches == [[], [b"x"]] and stats["num_patches"] == 1 and stats["num_bytes"] == 1
    empty = patch_lengths_batch(torch.zeros(2, 0), torch.zeros(2, 0, dtype=torch.long), None, cfg)
    assert empty.shape == (2, 0)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("threshold", [0.0, 100.0])
def test_extreme_thresholds_and_a_repeated_byte(method, threshold):
    cfg = PatchConfig(method=method, entropy_threshold=threshold, monotonic_threshold=threshold,
                      cache_patches=False)
    data = b"a" * 2000
    H = np.linspace(0.0, 0.001, 2000, dtype=np.float32)  # nearly flat: what a model gives on repetition
    lengths = patch_lengths_from_entropies(H, data, cfg)
    check_invariants(lengths, 2000, cfg)
    assert lengths.tolist() == reference_lengths(H, data, cfg)


def test_invalid_utf8_patches_and_displays():
    data = b"ok \xff\xfe\xc3 fin\x80"
    cfg = PatchConfig(method="space", min_patch_size=1, cache_patches=False)
    patches = EntropyPatcher(None, cfg).create_patches(data)
    assert b"".join(patches) == data
    shown = format_patches(patches)
    assert "\ufffd" in shown and "▏" in shown


def test_str_input_gets_a_clear_error():
    with pytest.raises(TypeError, match="encode"):
        EntropyPatcher(None, PatchConfig(method="byte")).create_patches("text")
    with pytest.raises(TypeError, match="list of documents"):
        EntropyPatcher(None, PatchConfig(method="byte")).process_data(b"one document")


# -------------------------------------------------------------------------------- thresholds


def synthetic_corpus(n_docs=5, n=4000, seed=0):
    rng = np.random.default_rng(seed)
    docs = [bytes(rng.integers(97, 123, n, dtype=np.uint8)) for _ in range(n_docs)]
    ents = [rng.gamma(2.0, 0.6, n).astype(np.float32) for _ in range(n_docs)]
    return docs, ents


@pytest.mark.parametrize("method, target, sizes", [
    ("global", 4.5, dict(min_patch_size=1)), ("global", 2.0, dict(min_patch_size=1)),
    ("global", 6.0, {}), ("monotonic", 4.5, dict(min_patch_size=1)), ("monotonic", 8.0, {}),
    ("global_monotonic", 6.0, {}), ("global_monotonic", 3.0, dict(min_patch_size=1)),
])
def test_calibration_reaches_its_target(method, target, sizes):
    docs, ents = synthetic_corpus()
    base = PatchConfig(cache_patches=False, **sizes)
    t = calibrate_threshold(None, docs, target, method, base, entropies=ents)
    patcher = EntropyPatcher(None, base, threshold=t, method=method)
    _, stats = patcher.process_data(docs, entropies=ents)
    assert abs(stats["mean_patch_size"] - target) <= 0.05 * target


def test_calibration_says_when_the_target_is_out_of_reach():
    docs, ents = synthetic_corpus(n_docs=2)
    with pytest.raises(CalibrationError, match="smallest reachable"):  # min_patch_size=4: mean >= ~4
        calibrate_threshold(None, docs, 2.0, "global", PatchConfig(), entropies=ents)
    with pytest.raises(CalibrationError, match="largest reachable"):
        calibrate_threshold(None, docs, 500.0, "global", PatchConfig(max_patch_size=16), entropies=ents)
    with pytest.raises(ValueError, match="global"):
        calibrate_threshold(None, docs, 4.0, "space", entropies=ents)


def test_calibrate_resolves_a_none_threshold_only():
    docs, ents = synthetic_corpus()
    for method in ENTROPY_METHODS:
        for target in (4.5, 5.0, 7.0):  # 4.5 under min_patch_size 4: the reach of the rule, not the default
            asked = PatchConfig(method=method, entropy_threshold=None, target_patch_size=target)
            cfg = calibrate(asked, None, docs, ents)
            assert cfg.entropy_threshold is not None and cfg.method == method
            _, stats = EntropyPatcher(None, cfg).process_data(docs, entropies=ents)
            assert abs(stats["mean_patch_size"] - target) <= 0.05 * target, (method, target)
    fixed = PatchConfig(entropy_threshold=0.6)
    space = PatchConfig(method="space", entropy_threshold=None)
    assert calibrate(fixed, None, docs, ents) is fixed and calibrate(space, None, docs, ents) is space
    with pytest.raises(ValueError, match="calibrate"):
        EntropyPatcher(None, PatchConfig(entropy_threshold=None)).process_data(docs, entropies=ents)


def test_meta_roundtrip(model):
    p = EntropyPatcher(model, PatchConfig(method="global_monotonic", entropy_threshold=1.25, min_patch_size=2,
                                          cache_dir="elsewhere"))
    meta = p.to_meta()
    assert json.loads(json.dumps(meta)) == meta and "cache_dir" not in meta
    q = patcher_from_meta(meta, model)
    assert q.entropy_model is model and q.config.patch_key() == p.config.patch_key()
    with pytest.raises(ValueError, match="unknown PatchConfig keys"):
        patcher_from_meta({**meta, "threshold": 0.6}, model)


def test_entropy_analysis():
    docs, ents = synthetic_corpus()
    a = analyze_entropy_distribution(None, docs, entropies=ents)
    flat = np.concatenate(ents)
    assert a["mean"] == pytest.approx(flat.mean(), rel=1e-5)
    assert a["std"] == pytest.approx(flat.std(), rel=1e-4)
    pct = [a["percentiles"][p] for p in (10, 25, 50, 75, 90, 95)]
    assert pct == sorted(pct)
    assert set(a["thresholds_for_patch_size"]) == {"global", "monotonic"}
    for method, by_size in a["thresholds_for_patch_size"].items():
        assert set(by_size) == {2, 3, 4.5, 6, 8}
        for size, t in by_size.items():
            cfg = PatchConfig(method=method, min_patch_size=1, entropy_threshold=t, cache_patches=False)
            _, stats = EntropyPatcher(None, cfg).process_data(docs, entropies=ents)
            assert abs(stats["mean_patch_size"] - size) <= 0.05 * size, (method, size)


def test_calibration_with_the_model(model):
    docs = [b"The quick brown fox jumps over the lazy dog. " * 20, b"0123456789 " * 30]
    t = calibrate_threshold(model, docs, 3.0, "global", PatchConfig(min_patch_size=1))
    _, stats = EntropyPatcher(model, threshold=t, min_patch_size=1, cache_patches=False).process_data(docs)
    assert abs(stats["mean_patch_size"] - 3.0) <= 0.15


# -------------------------------------------------------------------------------- the model


def test_patcher_uses_the_entropy_model(model):
    text = "Byte Latent Transformer: entropy patches, é and ü.".encode()
    p = EntropyPatcher(model, threshold=5.539, method="global", min_patch_size=1, cache_patches=False)
    H = compute_entropies(model, text)
    np.testing.assert_array_equal(p.entropies(text), H)
    assert p.patch_lengths(text).tolist() == patch_lengths_from_entropies(H, text, p.config).tolist()
    assert b"".join(p.create_patches(text)) == text
    with pytest.raises(ValueError, match="entropy model"):
        EntropyPatcher(None, threshold=0.6).create_patches(b"needs a model")


@pytest.fixture
def counted(monkeypatch):
    """Count compute_entropies calls (the expensive part the cache saves)."""
    calls = []

    def counting(model, data, *a, **kw):
        calls.append(len(data))
        return compute_entropies(model, data, *a, **kw)

    monkeypatch.setattr(ep, "compute_entropies", counting)
    return calls


def test_process_data_batches_documents_and_reports(model, counted, tmp_path):
    docs = [b"first document", b"", b"second, longer document with more bytes", b"x"]
    p = EntropyPatcher(model, PatchConfig(entropy_threshold=5.53, cache_dir=str(tmp_path)))
    patches, stats = p.process_data(docs)
    assert counted == [3]  # one call for all non-empty documents
    assert [b"".join(ps) for ps in patches] == docs
    assert stats["num_documents"] == 4 and stats["num_bytes"] == sum(map(len, docs))
    lengths = [len(x) for ps in patches for x in ps]
    assert stats["num_patches"] == len(lengths)
    assert stats["mean_patch_size"] == pytest.approx(np.mean(lengths))
    assert stats["median_patch_size"] == np.median(lengths)
    assert sum(stats["size_histogram"].values()) == len(lengths)
    assert [n.tolist() for n in p.document_patch_lengths(docs)] == [[len(x) for x in ps] for ps in patches]


def test_entropy_cache_hit_and_recompute_on_model_or_data_change(model, counted, tmp_path):
    docs = [b"cache me if you can " * 5, b"another document"]
    cfg = PatchConfig(entropy_threshold=5.53, min_patch_size=2, cache_dir=str(tmp_path))
    first, s1 = EntropyPatcher(model, cfg).process_data(docs, cache_key="my data/v1")
    assert len(counted) == 1 and not s1["cache_hit"]
    (cached,) = os.listdir(tmp_path)
    assert cached.startswith("my_data_v1-") and cached.endswith(".npz")
    again, s2 = EntropyPatcher(model, cfg).process_data(docs, cache_key="my data/v1")
    assert len(counted) == 1 and s2["cache_hit"] and again == first
    # another threshold: the same entropies (a hit), other patches recomputed from them
    other_t, s3 = EntropyPatcher(model, cfg, threshold=6.0).process_data(docs, cache_key="my data/v1")
    assert len(counted) == 1 and s3["cache_hit"] and other_t != first
    EntropyPatcher(model, cfg).process_data(docs[:1])  # other data
    assert len(counted) == 2
    other = tiny_model()
    with torch.no_grad():
        next(other.parameters()).add_(1e-3)  # other weights
    EntropyPatcher(other, cfg).process_data(docs, cache_key="my data/v1")
    assert len(counted) == 3
    window = MinimalLLM(EntropyConfig(d_model=32, n_heads=2, n_layers=1, max_seq_len=32))
    window.load_state_dict(model.state_dict(), strict=False)  # same weights, another window
    assert entropy_cache_path(window, docs, str(tmp_path)) != entropy_cache_path(model, docs, str(tmp_path))
    EntropyPatcher(model, cfg, cache_patches=False).process_data(docs)  # no cache at all
    assert len(counted) == 4 and len(os.listdir(tmp_path)) == 3
    np.testing.assert_array_equal(np.concatenate(cached_entropies(model, docs, str(tmp_path))),
                                  np.concatenate(compute_entropies(model, docs)))


@pytest.mark.parametrize("garbage", [b"", b"not a numpy file", "pickle", "npz", "float64", "short", "nan"])
def test_a_corrupt_cache_file_is_recomputed(model, counted, tmp_path, garbage):
    docs = [b"corrupt caches are never trusted", b"!"]
    p = EntropyPatcher(model, PatchConfig(entropy_threshold=5.53, cache_dir=str(tmp_path)))
    good, _ = p.process_data(docs)
    path = entropy_cache_path(model, docs, str(tmp_path))
    assert os.path.exists(path)
    n = sum(map(len, docs))
    if garbage == "pickle":
        with open(path, "wb") as f:  # a file object: np.save would add .npy to the cache's .npz name
            np.save(f, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    elif garbage == "npz":
        with open(path, "wb") as f:
            np.savez(f, x=np.zeros(n, np.float32))
    elif garbage in ("float64", "short", "nan"):
        bad = {"float64": np.zeros(n), "short": np.zeros(n - 1, np.float32),
               "nan": np.full(n, np.nan, np.float32)}[garbage]
        with open(path, "wb") as f:
            np.save(f, bad)
    else:
        open(path, "wb").write(garbage)
    with pytest.warns(UserWarning, match="recomputing"):
        redo, stats = p.process_data(docs)
    assert redo == good and not stats["cache_hit"] and len(counted) == 2
    _, stats = p.process_data(docs)  # the file was rewritten
    assert stats["cache_hit"] and len(counted) == 2


# -------------------------------------------------------------------------------- pictures


def test_plot_and_html(tmp_path):
    data = ("<script>alert('x')</script> & naïve text\n" * 12).encode() + b"\xff"
    H = np.random.default_rng(0).gamma(2.0, 0.5, len(data)).astype(np.float32)
    cfg = PatchConfig(min_patch_size=1, cache_patches=False)
    lengths = patch_lengths_from_entropies(H, data, cfg)
    plot_entropies(data, H, lengths, 0.6, tmp_path / "p.png")  # 505 bytes: truncated to 300 with a note
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
    write_html(data, H, lengths, tmp_path / "p.html")
    page = (tmp_path / "p.html").read_text(encoding="utf-8")
    assert "<script" not in page and "&lt;" in page
    shown = page.split('<div class="text">')[1].split("</div>")[0]
    # \ufffd at the end
    assert html.unescape(re.sub(r"<[^>]+>", "", shown)) == data.decode("utf-8", errors="replace")
    assert f"H = {H[0]:.3f} nats" in page and 'class="p1"' in page
    write_html(b"", None, np.zeros(0, dtype=np.int64), tmp_path / "empty.html")


def test_terminal_format_shows_separators_and_whitespace():
    assert format_patches([b"hi ", b"there\n", b"\tx"]) == "hi·▏there↵▏→x"
    assert terminal_view(b"ab cd ef", [3, 3, 2], max_bytes=7) == "ab·▏cd· ..."  # whole patches only
    assert terminal_view(b"ab cd ef", [3, 3, 2]) == "ab·▏cd·▏ef"


# -------------------------------------------------------------------------------- command line


def test_cli_space_method_needs_no_model(tmp_path, capsys):
    report = tmp_path / "r.json"
    assert ep.main(["--method", "space", "--min_patch_size", "1", "--text", "hello, world", "--report",
                    str(report), "--html", str(tmp_path / "h.html")]) == 0
    assert "hello,▏·world" in capsys.readouterr().out
    r = json.loads(report.read_text())
    assert r["method"] == "space" and r["num_bytes"] == 12
    assert r["num_patches"] == 2 and r["mean_patch_size"] == 6
    assert r["threshold"] is None and r["entropy_bytes_per_s"] is None


@pytest.mark.parametrize("flag", ["--checkpoint", "--entropy_model_path"])
def test_cli_missing_checkpoint_is_one_line(tmp_path, capsys, flag):
    assert ep.main([flag, str(tmp_path / "nope.pth"), "--text", "hi"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "nope.pth" in err and err.count("\n") == 1


def test_cli_with_a_checkpoint(model, tmp_path, capsys):
    from save_entropy_model import save_checkpoint

    ckpt = tmp_path / "e.pth"
    save_checkpoint(model, str(ckpt))
    report = tmp_path / "r.json"
    text = "Entropy patching groups predictable bytes. " * 4
    assert ep.main(["--checkpoint", str(ckpt), "--text", text, "--target_patch_size", "4.5",
                    "--min_patch_size", "1", "--plot", str(tmp_path / "p.png"),
                    "--html", str(tmp_path / "p.html"), "--report", str(report)]) == 0
    r = json.loads(report.read_text())
    assert {"method", "threshold", "num_bytes", "num_patches", "mean_patch_size",
            "entropy_bytes_per_s"} <= set(r)
    assert r["num_bytes"] == len(text) and abs(r["mean_patch_size"] - 4.5) <= 0.225
    assert r["entropy_bytes_per_s"] > 0
    assert (tmp_path / "p.png").exists() and (tmp_path / "p.html").exists()
    bad = ["--checkpoint", str(ckpt), "--text", "x", "--min_patch_size", "9", "--max_patch_size", "3"]
    assert ep.main(bad) == 2
    assert "min_patch_size" in capsys.readouterr().err
    assert ep.main(["--entropy_model_path", str(ckpt), "--text", text, "--method", "global_monotonic",
                    "--target_patch_size", "5", "--report", str(report)]) == 0
    r = json.loads(report.read_text())
    assert r["method"] == "global_monotonic" and abs(r["mean_patch_size"] - 5) <= 0.25
