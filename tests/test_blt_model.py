"""blt_model.py: shapes, causality (fixed and recomputed patches), padding, learning, cached generation,
FLOP accounting, checkpoints. Tiny configs on CPU."""
import dataclasses
import math

import numpy as np
import pytest
import torch

from blt_model import (
    BLT_PRESETS,
    HASH_BASE,
    HASH_MOD,
    HASH_PAD,
    BLTConfig,
    BLTModel,
    WindowAttention,
    flops_breakdown,
    flops_per_byte,
    last_ngram_hash_ids,
    ngram_hash_ids,
    patch_ids_from_lengths,
    window_mask,
)
from common import Rotary
from entropy_llm import EntropyConfig, MinimalLLM, compute_entropies
from entropy_patcher import EntropyPatcher, PatchConfig, patch_lengths_batch
from save_entropy_model import CheckpointError, load_model, save_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py: tiny models run on one thread


TEXT = (b"The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs! "
        b"def f(x):\n    return x * 2  # \xc3\xa9t\xc3\xa9\n")


def tiny(**overrides) -> BLTConfig:
    return BLTConfig.from_preset("tiny", **overrides)


def model(seed=0, **overrides) -> BLTModel:
    torch.manual_seed(seed)
    return BLTModel(tiny(**overrides)).eval()


def spread(m: torch.nn.Module, scale: float = 30.0):
    """Sharpen a random model's head so greedy choices are far from ties (and entropies spread out)."""
    with torch.no_grad():
        m.head.weight.mul_(scale) if hasattr(m, "head") else m.decoder.head.weight.mul_(scale)
    return m


def entropy_model() -> MinimalLLM:
    torch.manual_seed(1)
    return spread(MinimalLLM(EntropyConfig(d_model=32, n_heads=2, n_layers=1, max_seq_len=32)).eval(), 10.0)


def rows(T=40, B=3):
    return torch.tensor([list(TEXT[k * 7:k * 7 + T]) for k in range(B)])


# Patch-length patterns for a row of 40 bytes: byte patches, mixed with length-1 patches, padded patches
# (zeros on the right), lengths covering fewer bytes than the row (the rest is padding), a lone patch.
PATTERNS = [
    [[1] * 40, [5, 7, 1, 1, 20, 6] + [0] * 34, [3] * 13 + [1] + [0] * 26],
    [[40] + [0] * 3, [1, 39, 0, 0], [2, 2, 30, 6]],
    [[4, 4, 4, 0], [10, 1, 1, 0], [0, 0, 0, 0]],
]


# ----------------------------------------------------------------------------------------------------
# Pieces


def test_config_presets_and_validation():
    for name in BLT_PRESETS:
        BLTConfig.from_preset(name)
    seed = BLTConfig.from_preset("paper-8b-ish")
    assert (seed.encoder_layers, seed.encoder_dim, seed.global_layers, seed.global_dim, seed.decoder_layers,
            seed.decoder_dim) == (1, 768, 24, 4096, 6, 768)
    assert BLTConfig().ngram_sizes == (3, 4, 5, 6, 7, 8)
    with pytest.raises(ValueError, match="unknown BLT preset"):
        BLTConfig.from_preset("huge")
    with pytest.raises(ValueError, match="unknown BLTConfig keys"):
        BLTConfig.from_preset("tiny", global_width=3)
    with pytest.raises(ValueError, match="heads"):
        BLTConfig(global_dim=100, global_heads=8)
    with pytest.raises(TypeError):  # patching is the patcher's now, not the model's
        BLTConfig(patching="global")


def test_an_old_config_dict_with_patch_fields_loads():
    """Version-1 checkpoints stored generate()'s patching in BLTConfig: those keys are dropped silently."""
    old = {**dataclasses.asdict(tiny()), "patching": "space", "patch_size": 4, "min_patch_size": 1,
           "max_patch_size": 16}
    assert BLTConfig.from_dict(old) == tiny()
    with pytest.raises(ValueError, match="unknown BLTConfig keys: global_width"):
        BLTConfig.from_dict({**old, "global_width": 3})


def test_hash_ids_use_only_bytes_at_or_before_each_position():
    x = torch.tensor([list(b"abcdefgh"), list(b"abcdXYZW")])
    for n in (1, 3, 8):
        h = ngram_hash_ids(x, n, 1000)
        assert h.shape == x.shape and h.min() >= 0 and h.max() < 1000
        assert torch.equal(h[0, :4], h[1, :4])  # the rows agree on bytes 0..3: so do their hashes there
    for t in range(8):  # the one-position form used while generating agrees
        assert last_ngram_hash_ids(b"abcdXYZW"[:t + 1], (1, 3, 8), 1000) == [
            ngram_hash_ids(x, n, 1000)[1, t].item() for n in (1, 3, 8)]
    # position 1 with n = 3 hashes (PAD, 'a', 'b') as a polynomial in HASH_BASE
    want = (HASH_PAD * HASH_BASE**2 + ord("a") * HASH_BASE + ord("b")) % HASH_MOD % 1000
    assert ngram_hash_ids(x, 3, 1000)[0, 1].item() == want


def test_patch_ids_and_window_mask():
    L = torch.tensor([[2, 3, 0], [1, 0, 0]])
    assert patch_ids_from_lengths(L, 6).tolist() == [[0, 0, 1, 1, 1, 3], [0, 3, 3, 3, 3, 3]]
    assert window_mask(torch.tensor([3]), 5, 2).tolist() == [[False, False, True, True, False]]


@pytest.mark.parametrize("T,W", [(40, 8), (37, 8), (17, 8), (8, 8), (5, 3)])
def test_blocked_window_attention_equals_masked_dense(T, W):
    torch.manual_seed(0)
    attn = WindowAttention(16, 2, W)
    x = torch.randn(2, T, 16)
    cos, sin = Rotary(8, 64)(0, T)
    dense = super(WindowAttention, attn).forward(x, cos, sin, mask=window_mask(torch.arange(T), T, W))
    torch.testing.assert_close(attn(x, cos, sin), dense, atol=1e-6, rtol=1e-5)


def test_window_attention_trains_after_a_pass_in_inference_mode():
    """The blocked window's mask is cached per shape: one first made under inference_mode (generation,
    evaluation) must still serve a training step."""
    attn = WindowAttention(16, 2, 4)
    x = torch.randn(2, 13, 16, requires_grad=True)
    cos, sin = Rotary(8, 64)(0, 13)
    with torch.inference_mode():
        attn(x, cos, sin)
    attn(x, cos, sin).sum().backward()
    assert x.grad is not None and bool(x.grad.isfinite().all())


# ----------------------------------------------------------------------------------------------------
# Forward: shapes, causality, padding


def test_shapes_loss_and_param_counts():
    m = model()
    idx = rows()
    L = torch.tensor(PATTERNS[0])
    logits, loss = m(idx, L, targets=idx)
    assert logits.shape == (3, 40, 256) and loss.dim() == 0
    assert abs(loss.item() - math.log(256)) < 0.5  # a fresh model is near uniform
    assert m(idx, L)[1] is None
    cfg = m.config
    tables = len(cfg.ngram_sizes) * cfg.hash_table_size * cfg.encoder_dim
    assert m.num_params() - m.num_params(include_hash=False) == tables
    with pytest.raises(ValueError, match="cover"):
        m(idx, torch.tensor([[41], [1], [1]]))


@pytest.mark.parametrize("pattern", range(len(PATTERNS)))
def test_causal_with_fixed_patch_lengths(pattern):
    """Perturb byte t: no logit at a position <= t moves (logit t predicts byte t)."""
    m = model()
    idx, L = rows(), torch.tensor(PATTERNS[pattern])
    ref, _ = m(idx, L)
    moved_later = False
    for t in (0, 1, 4, 5, 17, 18, 33, 39):
        x = idx.clone()
        x[:, t] = (x[:, t] + 101) % 256
        out, _ = m(x, L)
        torch.testing.assert_close(out[:, :t + 1], ref[:, :t + 1], atol=1e-5, rtol=0)
        moved_later |= t < 39 and bool((out[:, t + 1:] - ref[:, t + 1:]).abs().max() > 1e-4)
    assert moved_later  # the perturbation is visible downstream, so the check above has teeth


@pytest.mark.parametrize("method", ["space", "global", "monotonic"])
def test_causal_with_recomputed_patches(method):
    """Patches recomputed from the perturbed bytes by the causal patcher still leave logits <= t alone."""
    m = model()
    em = entropy_model() if method != "space" else None
    idx = rows(T=48)
    cfg = PatchConfig(method=method, min_patch_size=2, max_patch_size=6)
    if em is not None:
        H = np.stack([compute_entropies(em, bytes(r.tolist())) for r in idx])
        t = float(np.median(H if method == "global" else np.diff(H)))
        cfg = PatchConfig(method=method, entropy_threshold=t, min_patch_size=2, max_patch_size=6)

    def forward(x):
        H = None if em is None else torch.from_numpy(
            np.stack([compute_entropies(em, bytes(r.tolist())) for r in x]))
        L = patch_lengths_batch(H, x, None, cfg)
        return m(x, L)[0], L

    ref, L0 = forward(idx)
    assert len(set(L0.flatten().tolist()) - {0}) > 1  # patches of several sizes
    changed_patches = False
    for t in (1, 6, 13, 22, 40):
        x = idx.clone()
        x[:, t] = (x[:, t] + 77) % 256
        out, L = forward(x)
        changed_patches |= L.shape != L0.shape or not torch.equal(L, L0)
        torch.testing.assert_close(out[:, :t + 1], ref[:, :t + 1], atol=1e-5, rtol=0)
    assert changed_patches  # some perturbation moved a later boundary, so the patches were really recomputed


def test_padded_rows_are_finite_and_train():
    m = model()
    m.train()
    idx = rows()
    L = torch.tensor([[0, 0, 0], [5, 0, 0], [10, 10, 0]])  # an empty row, and rows shorter than 40 bytes
    real = torch.arange(40).view(1, -1) < L.sum(1, keepdim=True)
    targets = idx.masked_fill(~real, -100)
    targets[0, 0] = idx[0, 0]  # the empty row keeps one target so the loss reads its logits too
    logits, loss = m(idx, L, targets=targets)
    assert torch.isfinite(logits).all() and torch.isfinite(loss)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in m.parameters() if p.grad is not None)
    assert torch.isfinite(m(idx, torch.zeros(3, 0, dtype=torch.long))[0]).all()  # no patches at all
    assert m(idx[:, :0], torch.zeros(3, 0, dtype=torch.long))[0].shape == (3, 0, 256)  # no bytes at all


def test_tiny_model_overfits_one_batch():
    torch.manual_seed(0)
    m = BLTModel(tiny())
    idx = torch.tensor([list(TEXT[:48]), list(TEXT[20:68])])
    L = patch_lengths_batch(None, idx, None, PatchConfig(method="space", min_patch_size=1, max_patch_size=8))
    opt = torch.optim.AdamW(m.parameters(), lr=1e-2)
    first = None
    for _ in range(60):
        _, loss = m(idx, L, targets=idx)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert first > 5.0 and loss.item() < 0.5


# ----------------------------------------------------------------------------------------------------
# Generation


@pytest.mark.parametrize("prompt,patcher", [
    (b"", PatchConfig(method="space", min_patch_size=1, max_patch_size=16)),
    (b"Hello, world. The", PatchConfig(method="static", patch_size=3)),
    (b"def f(x):", "entropy"),  # entropy patching; 200 bytes roll over several entropy-model windows
])
def test_greedy_generation_cached_equals_uncached(prompt, patcher):
    m = spread(model(seed=3))
    if patcher == "entropy":
        em = entropy_model()
        H = compute_entropies(em, TEXT)
        patcher = PatchConfig(method="global", entropy_threshold=float(np.median(H)), min_patch_size=1,
                              max_patch_size=8)
    else:
        em = None
    patcher = EntropyPatcher(em, patcher)
    cached = m.generate(prompt, 200, patcher=patcher, temperature=0)
    full = m.generate(prompt, 200, patcher=patcher, temperature=0, use_cache=False)
    assert len(cached) == 200 and cached == full
    if patcher.config.method != "static":  # space and entropy patches made while generating vary in size
        assert len(set(patcher.patch_lengths(prompt + cached).tolist())) > 2


@pytest.mark.parametrize("patching", ["space", "static", "entropy"])
def test_generate_on_a_list_of_prompts_equals_one_at_a_time(patching):
    """A list is decoded as one batch (rows of other lengths, patches closing at other steps, a window
    rolling past the tiny preset's 16 bytes); each row gives what it gives alone, greedy and sampled."""
    m = spread(model(seed=3))
    em = entropy_model() if patching == "entropy" else None
    config = {"space": PatchConfig(method="space", min_patch_size=1, max_patch_size=16),
              "static": PatchConfig(method="static", patch_size=3),
              "entropy": PatchConfig(method="global", entropy_threshold=float(np.median(compute_entropies(
                  em, TEXT))) if em else None, min_patch_size=1, max_patch_size=8)}[patching]
    patcher = EntropyPatcher(em, config)
    prompts = [b"Hello, world. The", b"", b"def f(x):", b"abc"]
    outs = m.generate(prompts, 40, patcher=patcher, temperature=0)
    assert outs == [m.generate(p, 40, patcher=patcher, temperature=0) for p in prompts]
    assert len(set(outs)) == 4
    assert m.generate(prompts, 40, patcher=patcher, temperature=0, batch_size=3) == outs  # 3 + 1 rows
    sampled = m.generate(prompts, 20, patcher=patcher, seed=7)
    assert sampled == [m.generate(p, 20, patcher=patcher, seed=7 + i) for i, p in enumerate(prompts)]
    with pytest.raises(ValueError, match="batch_size"):
        m.generate(prompts, 5, patcher=patcher, batch_size=0)


def test_generation_of_a_bf16_model_keeps_its_dtype():
    """The decode step rotates in fp32 and casts back, as the forward's rotary does: a bf16 model decodes."""
    m = model(seed=3).to(torch.bfloat16)
    patcher = EntropyPatcher(None, PatchConfig(method="space", min_patch_size=1, max_patch_size=16))
    one = m.generate(b"Hello there", 20, patcher=patcher, temperature=0)
    assert len(one) == 20
    assert m.generate([b"Hello there", b"x"], 20, patcher=patcher, temperature=0)[0] == one


def test_decode_step_refuses_to_run_past_what_prefill_sized():
    m = model()
    patcher = EntropyPatcher(None, PatchConfig(method="static", patch_size=8))
    state = m.prefill(b"abc", patcher.stream(), max_new_bytes=3)
    for b in b"de":  # the bytes generate() would feed for 3 new bytes
        m.decode_step(state, [b])
    m.decode_step(state, [ord("f")])  # one spare slot
    with pytest.raises(ValueError, match="larger max_new_bytes"):
        m.decode_step(state, [ord("g")])


def test_generate_needs_a_patcher_and_uses_self_patcher():
    m = model()
    with pytest.raises(ValueError, match="pass patcher="):
        m.generate(b"abc", 5)
    space = EntropyPatcher(None, PatchConfig(method="space", min_patch_size=1))
    m.patcher = space
    assert m.generate(b"abc", 12, temperature=0) == m.generate(b"abc", 12, patcher=space, temperature=0)
    assert m.generate(b"abc", 12, temperature=0) != m.generate(
        b"abc", 12, patcher=EntropyPatcher(None, PatchConfig(method="byte")), temperature=0)


def test_sampling_is_seeded_and_respects_top_k():
    m = model()
    m.patcher = EntropyPatcher(None, PatchConfig(method="space", min_patch_size=1, max_patch_size=16))
    a = m.generate(b"abc", 30, temperature=1.0, seed=7)
    assert a == m.generate(b"abc", 30, temperature=1.0, seed=7)
    assert a == m.generate(b"abc", 30, temperature=1.0, seed=7, use_cache=False)
    assert m.generate(b"abc", 0) == b""
    m1 = m.generate(b"abc", 20, temperature=1.0, top_k=1, seed=1)
    assert m1 == m.generate(b"abc", 20, temperature=0)  # top_k=1 is greedy
    with pytest.raises(ValueError, match="needs an entropy model"):
        m.generate(b"abc", 5, patcher=EntropyPatcher(None, PatchConfig(method="global")))


# ----------------------------------------------------------------------------------------------------
# Accounting and checkpoints


def test_flops_per_byte_hand_count():
    """tiny: C = 32 (encoder and decoder, SwiGLU hidden 96), D = 64 (hidden 192), K = 2, window 16,
    one layer per stack; rows of 64 bytes, mean patch 4 -> P = 16 patches."""
    cfg = tiny()
    ctx_local = (16 * 17 / 2 + 48 * 16) / 64  # 14.125 keys: the first 16 queries see 1..16, the rest 16
    block_local = 2 * (4 * 32 * 32 + 3 * 32 * 96) + 4 * 32 * ctx_local  # qkv+proj, SwiGLU; attention
    enc_cross = (2 * 32 * 64 + 2 * (2 * 32 * 32 + 2 * 32 * 32) + 2 * 4 * 4 * 32) / 4 + 2 * 32 * 64
    #             pool->K*C   K x (q and out projections)       K x 4 keys    per patch | k,v per byte
    block_global = 2 * (4 * 64 * 64 + 3 * 64 * 192) + 4 * 64 * (17 / 2)  # causal over 16 patches
    glob = (2 * 64 * 64 + block_global) / 4  # input projection 2C*K -> D, then the block, per patch
    dec_cross = ((2 * 64 * 64 + 2 * 2 * 32 * 64) / 4  # per patch: D -> K*C keys; their k and v
                 + 2 * 32 * 32  # per byte: encoder state -> decoder input
                 + 2 * 32 * 32 * 2 + 4 * 32 * (2 * 17 / 2))  # q and out projections; K x (start + 8) keys
    head = 2 * 32 * 256
    want = block_local + enc_cross + glob + dec_cross + block_local + head
    assert want == 122304
    assert flops_per_byte(cfg, 4, 64) == pytest.approx(want)
    parts = flops_breakdown(cfg, 4, 64)
    assert parts["head"] == head and parts["global_blocks"] == pytest.approx(glob)
    assert flops_per_byte(cfg, 8, 64) < flops_per_byte(cfg, 4, 64)  # bigger patches: cheaper global model
    assert BLTModel(cfg).flops_per_byte(4, 64) == flops_per_byte(cfg, 4, 64)


def test_checkpoint_roundtrip(tmp_path):
    m = model(seed=5)
    path = str(tmp_path / "blt.pth")
    save_checkpoint(m, path, meta={"note": "test"})
    loaded = load_model(path, "blt").eval()
    assert loaded.config == m.config and isinstance(loaded.config.ngram_sizes, tuple)
    idx, L = rows(), torch.tensor(PATTERNS[0])
    torch.testing.assert_close(loaded(idx, L)[0], m(idx, L)[0], atol=0, rtol=0)
    other = BLTModel(tiny(local_window=8))
    with pytest.raises(ValueError, match="local_window"):
        other.load_state_dict(torch.load(path, weights_only=True))
    with pytest.raises(CheckpointError, match="expected a 'entropy_llm' model"):
        load_model(path, "entropy_llm")


def test_sparse_cross_attentions_equal_the_dense_masked_reference(monkeypatch):
    """The encoder's segment reductions and the decoder's key blocks against a plain reading:
    each patch's K queries attend over its own bytes one patch at a time, and one decoder block for all."""
    import blt_model

    m = spread(model(seed=5))
    idx = torch.randint(0, 256, (2, 40), generator=torch.Generator().manual_seed(0))
    L = torch.tensor([[3, 1, 7, 5, 2, 9, 4, 6, 3, 0], [10, 10, 10, 2, 2, 0, 0, 0, 0, 0]])  # row 1: 6 padding
    enc, K = m.encoder, m.config.cross_attn_k
    h = enc.byte_states(enc.embed(idx))  # (B, T, C)
    ref = torch.zeros(2, L.size(1), K * h.size(-1))
    for b in range(2):
        s = 0
        for j, n in enumerate(L[b].tolist()):
            if n:
                q = enc.pool_proj(h[b, s:s + n].amax(0)).view(1, K, -1)  # (1, K, C)
                ref[b, j] = (q + enc.cross(q, h[b:b + 1, s:s + n])).flatten()
            s += n
    torch.testing.assert_close(enc.patch_states(h, L), ref, rtol=1e-5, atol=1e-5)
    monkeypatch.setattr(blt_model, "DECODER_BLOCK", 8)  # five blocks, each reading fewer keys
    logits, _ = m(idx, L)
    monkeypatch.setattr(blt_model, "DECODER_BLOCK", 10_000)  # one block: every key, masked densely
    dense, _ = m(idx, L)
    torch.testing.assert_close(logits[0], dense[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(logits[1, :34], dense[1, :34], rtol=1e-5, atol=1e-5)
