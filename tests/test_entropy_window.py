"""The sliding-window entropy model: causal, one pass equals a dense per-byte reference, prefixes equal the
whole, the stream gives the batch's bits (so patches agree with a threshold right at an entropy), and
checkpoints from before the window keep their overlapping-window values."""
import numpy as np
import pytest
import torch

from common import Rotary
from entropy_llm import (
    EntropyConfig,
    EntropyStream,
    MinimalLLM,
    compute_entropies,
    entropy_of,
    entropy_windows,
)
from entropy_patcher import EntropyPatcher, PatchConfig
from save_entropy_model import load_entropy_model, save_checkpoint

W = 32  # max_seq_len: each layer sees 31 positions (itself and 30 before)


def model_of(n_layers=2, seed=0, **kw):
    torch.manual_seed(seed)
    m = MinimalLLM(EntropyConfig(d_model=32, n_heads=2, n_layers=n_layers, max_seq_len=W, **kw)).eval()
    with torch.no_grad():  # sharper predictions than the init's near-uniform ones
        m.head.weight.mul_(20)
    return m


def text(n, seed=0):
    rng = np.random.default_rng(seed)
    return bytes(rng.choice(np.frombuffer(b"the cat sat on a mat, then ran. ", np.uint8), n))


@torch.inference_mode()
def dense_reference(model, data: bytes, i: int, n_bytes: int) -> float:
    """H[i] from the last min(i, n_bytes) bytes alone: plain blocks, an explicit band mask, absolute
    positions of a fresh rotary table; the start vector only when those bytes reach the document's start."""
    s = max(0, i - n_bytes)
    idx = torch.tensor([list(data[s:i])], dtype=torch.long).view(1, -1)  # (1, t)
    x = model.embed(idx)  # position p reads byte p-1
    if s == 0:
        x = torch.cat([model._start(1), x], dim=1)
    T = x.size(1)
    q = torch.arange(T).view(-1, 1)
    band = ((q - q.T >= 0) & (q - q.T < W - 1)).view(1, 1, T, T)  # itself and the W-2 positions before
    cos, sin = Rotary(model.config.d_model // model.config.n_heads, T)(0, T)
    for block in model.blocks:
        x = block(x, cos, sin, mask=band)
    return float(entropy_of(model.head(model.norm(x)))[1][0, -1])


def test_causal_perturbing_a_byte_moves_no_earlier_entropy():
    m, data = model_of(), text(300)
    H = compute_entropies(m, data, batch_size=1)
    for k in (0, 17, 150, 299):
        other = bytearray(data)
        other[k] = (other[k] + 1) % 256
        H2 = compute_entropies(m, bytes(other), batch_size=1)
        assert np.array_equal(H2[:k + 1], H[:k + 1])
        if k + 1 < len(data):
            assert H2[k + 1] != H[k + 1]


def test_prefix_entropies_equal_the_whole():
    m, data = model_of(), text(500, seed=1)
    H = compute_entropies(m, data, batch_size=2)  # slices of 64 positions: many carries
    for n in (1, 15, 16, 17, 100, 257, 499):
        assert np.array_equal(compute_entropies(m, data[:n], batch_size=3), H[:n])
    # documents of one call do not see each other
    docs = [data[:70], b"", data[70:300], b"x"]
    for d, h in zip(docs, compute_entropies(m, docs, batch_size=2)):
        assert np.array_equal(h, compute_entropies(m, d, batch_size=1))


@pytest.mark.parametrize("n_layers", [1, 2])
def test_one_pass_equals_per_byte_reference_from_its_receptive_field(n_layers):
    # each layer reaches W-2 positions back; byte p-1 sits at position p: layers x (W-2) + 1 bytes, which
    # for one layer is the W-1 bytes before byte i (the BLT paper's window, stacked per layer)
    m, data = model_of(n_layers), text(200, seed=2)
    H = compute_entropies(m, data)
    reach = n_layers * (W - 2) + 1
    ref = np.array([dense_reference(m, data, i, reach) for i in range(len(data))], dtype=np.float32)
    assert np.abs(ref - H).max() < 2e-5
    # less context changes them: the reach is needed (the farthest bytes weigh little, so 8 bytes less)
    short = np.array([dense_reference(m, data, i, reach - 8) for i in range(reach, len(data))])
    assert np.abs(short - H[reach:]).max() > 1e-4


def test_only_offsets_matter_however_far_into_a_document():
    """q and k are rotated once at their position (from the document's start, angles in float64): a window a
    billion bytes in gives the values it gives at the start, up to rounding; other offsets do not."""
    m = model_of()
    with torch.no_grad():  # sharper attention, so that positions weigh
        for b in m.blocks:
            b.attn.qkv.weight.mul_(10)
    S = 4
    x = torch.randn(1, S * m.chunk, 32)
    ok = torch.ones(S, m.back + 1, dtype=torch.bool)
    pos = torch.arange(S * m.chunk)
    with torch.inference_mode():
        near = m.window_blocks(x, ok, positions=pos)[0]
        far = m.window_blocks(x, ok, positions=pos + 10**9 + 7)[0]
        spread = m.window_blocks(x, ok, positions=2 * pos)[0]
    torch.testing.assert_close(far, near, rtol=0, atol=1e-5)  # float32 angles: off by 1e-1
    assert (spread - near).abs().max() > 1e-2


def test_training_forward_is_the_same_computation():
    m, rows = model_of(), [text(4 * W + 5, seed=3), text(4 * W + 5, seed=6)]
    with torch.inference_mode():
        logits, _ = m(torch.tensor([list(r) for r in rows]))  # two rows: chunks of both share a batch
    for r, data in enumerate(rows):
        assert np.array_equal(entropy_of(logits)[1][r].numpy(), compute_entropies(m, data))
    # and it trains: the gradient of the two rows at once is the sum of each row's
    x = torch.tensor([list(r) for r in rows])
    m(x, x)[1].backward()
    both = [p.grad.clone() for p in m.parameters()]
    m.zero_grad()
    for r in range(2):
        (m(x[r:r + 1], x[r:r + 1])[1] / 2).backward()
    for g, p in zip(both, m.parameters()):
        torch.testing.assert_close(g, p.grad, rtol=1e-4, atol=1e-6)


def test_rows_within_the_window_train_with_plain_causal_attention_and_the_same_values(monkeypatch):
    """A row of W-1 bytes (the default training row) never slides the window: forward takes the plain
    causal kernel, and its entropies equal the one-pass window computation's to float rounding."""
    m, data = model_of(), text(W - 1, seed=4)
    assert EntropyConfig(max_seq_len=W).train_row_len == W - 1
    want = compute_entropies(m, data)
    calls = []
    monkeypatch.setattr(m, "window_blocks", lambda *a, **k: calls.append(1))  # would break forward
    with torch.inference_mode():
        logits, _ = m(torch.tensor([list(data)]))
    assert not calls
    np.testing.assert_allclose(entropy_of(logits)[1][0].numpy(), want, rtol=0, atol=1e-5)


def test_stream_equals_batch_bitwise_and_patches_alike_at_the_threshold():
    m, data = model_of(), text(400, seed=4)
    H = compute_entropies(m, data)
    stream = EntropyStream(m)
    streamed = []
    for b in data:
        streamed.append(stream.next_entropy())
        stream.push(b)
    assert np.array_equal(np.array(streamed, dtype=np.float32), H)
    edges = 0
    for k in (37, 100, 211, 350):  # the threshold exactly at an observed entropy: byte k is on the edge
        t = float(H[k])
        cfg = PatchConfig(method="global", entropy_threshold=t, min_patch_size=1, max_patch_size=64,
                          cache_patches=False)
        want = EntropyPatcher(m, cfg).patch_lengths(data)
        s = EntropyPatcher(m, cfg).stream()
        starts = []
        for i, b in enumerate(data):
            if s.next_starts_patch():
                starts.append(i)
            s.push(b)
        assert np.array_equal(np.diff(starts + [len(data)]), want)
        lower = PatchConfig(method="global", entropy_threshold=float(np.nextafter(np.float32(t), -np.inf)),
                            min_patch_size=1, max_patch_size=64, cache_patches=False)
        edges += not np.array_equal(EntropyPatcher(m, lower).patch_lengths(data), want)
    assert edges == 4  # one float32 step lower flips byte k: any stream/batch difference would show


def test_old_checkpoint_keeps_overlapping_windows(tmp_path):
    old = model_of(sliding_window=False)
    path = str(tmp_path / "old.pth")
    save_checkpoint(old, path)
    state = torch.load(path, weights_only=True)  # a file written before the fields existed
    for k in ("sliding_window", "row_len"):
        del state["_extra_state"]["config"][k]
    torch.save(state, path)
    loaded = load_entropy_model(path)
    assert loaded.config.sliding_window is False and loaded.window is None
    data = text(3 * W + 7, seed=5)
    H = compute_entropies(loaded, data)
    want = np.zeros(len(data), dtype=np.float32)
    with torch.inference_mode():
        for s, k0, k1 in entropy_windows(len(data), W):
            logits, _ = loaded(torch.tensor([list(data[s:s + W])]))
            want[k0:k1] = entropy_of(logits)[1][0, k0 - s:k1 - s].numpy()
    assert np.abs(H - want).max() < 1e-5
    windowed = model_of(sliding_window=True)
    windowed.load_state_dict(old.state_dict() | {"_extra_state": windowed.get_extra_state()})
    assert np.abs(compute_entropies(windowed, data) - H)[W:].max() > 1e-3  # the two paths do differ
