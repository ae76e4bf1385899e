"""The Byte Latent Transformer (Pagnoni et al. 2024, "Byte Latent Transformer: Patches Scale Better
Than Tokens"): a light local encoder turns bytes into patches, a heavy global transformer runs over the
patches, a light local decoder turns patch states back into next-byte predictions.

    from blt_model import BLTConfig, BLTModel, flops_per_byte
    model = BLTModel(BLTConfig())                          # CPU-sized; BLTConfig.from_preset("paper-8b-ish")
    logits, loss = model(idx, patch_lengths, targets=idx)  # logits[:, t] predicts idx[:, t] from idx[:, :t]
    new = model.generate(b"The ", 100, patcher=entropy_patcher, temperature=0)

Alignment (DESIGN.md, "BLT alignment"), a worked example with 8 bytes and patch_lengths [2, 3, 3]:

    position t           0     1     2     3     4     5     6     7
    byte                 H     i     _     t     h     e     r     e      (_ is a space)
    patch id             0     0     1     1     1     2     2     2
    decoder input        s     e0    e1    e2    e3    e4    e5    e6     (e_k: encoder state of byte k)
    global outputs read  S     S     S,G0  S,G0  S,G0  S,G0, S,G0, S,G0,
                                                       G1    G1    G1

    encoder pools  patch 0 = bytes 0-1, patch 1 = bytes 2-4, patch 2 = bytes 5-7 (each sees only its bytes)
    global         G0 = f(patch 0), G1 = f(patches 0-1), G2 = f(patches 0-2)        (causal over patches)
    s, S           learned start vectors: the decoder input at byte 0, and the "patch -1" output

So the logit at position t (the prediction of byte t) depends on bytes < t only: the encoder states it
reads end at byte t-1, and every global output it reads summarises patches that ended before t. The last
patch's G2 is read by no byte of this row: it would feed the patch after. Bytes past sum(patch_lengths)
are padding: they belong to no patch (patch id P) and their logits are finite but meaningless.

Letters in shape comments: B batch, T bytes, P patches, K cross_attn_k (queries per patch),
C local width (encoder or decoder), D global width, H heads, Dh head dim, S keys, V = 256 byte classes.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn as nn
import torch.nn.functional as F

from common import (
    Attention,
    Block,
    CarriesConfig,
    KVCache,
    RMSNorm,
    Rotary,
    block_flops_per_token,
    causal_context,
    config_from_dict,
    count_params,
    init_weights,
    mlp_hidden,
    rotated_qkv,
    run_blocks,
    scale_residual_init,
    window_rotate,
)

V = 256  # byte classes

# Rolling polynomial hash of byte n-grams: sum_j b_j * BASE^(n-1-j) mod HASH_MOD, then mod the table size.
# Bytes before the start of a row read as HASH_PAD (not a byte value), so an n-gram that runs off the
# start never collides on purpose with one made of real bytes. Every term stays below 2^40: no overflow.
HASH_BASE = 1_000_003
HASH_MOD = 2**31 - 1  # Mersenne prime
HASH_PAD = 256
DECODER_BLOCK = 128  # bytes per block of decoder queries that share a cross-attention key range


@dataclass
class BLTConfig:
    encoder_layers: int = 1  # byte-level transformer blocks before pooling
    encoder_dim: int = 128  # encoder width C
    encoder_heads: int = 4  # attention heads of the encoder (and of its patch cross-attention)
    global_layers: int = 3  # patch-level transformer blocks: most of the compute per patch
    global_dim: int = 256  # global width D
    global_heads: int = 4  # attention heads of the global transformer
    decoder_layers: int = 2  # byte-level blocks, each preceded by cross-attention to the patches
    decoder_dim: int = 128  # decoder width C
    decoder_heads: int = 4  # attention heads of the decoder (and of its cross-attentions)
    ngram_sizes: tuple[int, ...] = (3, 4, 5, 6, 7, 8)  # hashed n-grams ending at each byte (one table per n)
    hash_table_size: int = 8192  # rows per n-gram table (hash values are taken modulo this)
    cross_attn_k: int = 2  # queries per patch in the encoder, keys per patch in the decoder (BLT's k)
    local_window: int = 128  # bytes a local self-attention query sees (itself and window-1 before it)
    max_seq_len: int = 1024  # bytes per training row; sizes the rotary tables and the FLOP count

    # version-1 checkpoint fields, now in the patcher's PatchConfig (checkpoint metadata): dropped on load
    retired_fields: ClassVar[tuple[str, ...]] = ("patching", "patch_size", "min_patch_size", "max_patch_size")

    def __post_init__(self):
        self.ngram_sizes = tuple(int(n) for n in self.ngram_sizes)
        for name in ("encoder", "global", "decoder"):
            dim, heads = getattr(self, f"{name}_dim"), getattr(self, f"{name}_heads")
            if dim < 1 or heads < 1 or dim % heads or (dim // heads) % 2:
                raise ValueError(f"{name}_dim {dim} must split into {name}_heads {heads} heads of even size")
        if min(self.encoder_layers, self.global_layers, self.decoder_layers) < 1:
            raise ValueError("encoder_layers, global_layers and decoder_layers must be at least 1")
        if any(n < 1 for n in self.ngram_sizes) or len(set(self.ngram_sizes)) != len(self.ngram_sizes):
            raise ValueError(f"ngram_sizes must be distinct positive sizes, got {self.ngram_sizes}")
        if self.ngram_sizes and self.hash_table_size < 1:
            raise ValueError("hash_table_size must be positive")
        if min(self.cross_attn_k, self.local_window, self.max_seq_len) < 1:
            raise ValueError("cross_attn_k, local_window and max_seq_len must be positive")

    @classmethod
    def from_preset(cls, name: str, **overrides) -> BLTConfig:
        if name not in BLT_PRESETS:
            raise ValueError(f"unknown BLT preset {name!r}; choose from {', '.join(BLT_PRESETS)}")
        return config_from_dict(cls, BLT_PRESETS[name], **overrides)

    @classmethod
    def from_dict(cls, d: dict) -> BLTConfig:
        """A config from a checkpoint's dict: retired_fields are dropped, any other unknown key fails."""
        return config_from_dict(cls, {k: v for k, v in d.items() if k not in cls.retired_fields})


# Named sizes: "cpu" is the default, the larger ones are for GPUs. "paper-8b-ish" is the seed README's
# 1 x 768 / 24 x 4096 / 6 x 768 (the BLT paper's 8B: global width 4096, hash tables of 500k rows per n).
BLT_PRESETS = {
    "tiny": dict(encoder_dim=32, encoder_heads=2, global_layers=1, global_dim=64, global_heads=2,
                 decoder_layers=1, decoder_dim=32, decoder_heads=2, ngram_sizes=(3, 4), hash_table_size=64,
                 local_window=16, max_seq_len=128),
    "cpu": {},
    "cpu-fast": dict(encoder_dim=96, decoder_dim=96, global_layers=2),  # ~2/3 of the FLOPs per byte of "cpu"
    "small": dict(encoder_dim=256, global_layers=8, global_dim=512, global_heads=8, decoder_layers=4,
                  decoder_dim=256, hash_table_size=2**16, local_window=256, max_seq_len=2048),
    "medium": dict(encoder_dim=512, encoder_heads=8, global_layers=16, global_dim=1536, global_heads=12,
                   decoder_layers=6, decoder_dim=512, decoder_heads=8, hash_table_size=2**17,
                   local_window=512, max_seq_len=4096),
    "large": dict(encoder_dim=768, encoder_heads=12, global_layers=24, global_dim=2048, global_heads=16,
                  decoder_layers=6, decoder_dim=768, decoder_heads=12, hash_table_size=2**18,
                  local_window=512, max_seq_len=8192),
    "paper-8b-ish": dict(encoder_dim=768, encoder_heads=12, global_layers=24, global_dim=4096,
                         global_heads=32, decoder_layers=6, decoder_dim=768, decoder_heads=12,
                         hash_table_size=500_002, local_window=512, max_seq_len=8192),
}


def ngram_hash_ids(idx: torch.Tensor, n: int, table_size: int) -> torch.Tensor:
    """(B, T) bytes -> (B, T) rows of the n-gram table: the hash of bytes t-n+1..t (HASH_PAD before 0)."""
    B, T = idx.shape
    if T == 0:
        return idx.new_zeros(B, 0, dtype=torch.long)
    win = F.pad(idx.long(), (n - 1, 0), value=HASH_PAD).unfold(1, n, 1)  # (B, T, n): bytes t-n+1..t at t
    powers = torch.tensor([pow(HASH_BASE, n - 1 - j, HASH_MOD) for j in range(n)], device=idx.device)
    return (win * powers).sum(-1) % HASH_MOD % table_size  # (B, T)


def last_ngram_hash_ids(history: bytes, sizes: tuple[int, ...], table_size: int) -> list[int]:
    """ngram_hash_ids at the last position of `history` only, in plain Python (one generation step)."""
    out = []
    for n in sizes:
        h = 0
        for b in [HASH_PAD] * (n - len(history)) + list(history[-n:]):  # Horner: sum b_j * BASE^(n-1-j)
            h = (h * HASH_BASE + b) % HASH_MOD
        out.append(h % table_size)
    return out


def patch_ids_from_lengths(patch_lengths: torch.Tensor, T: int) -> torch.Tensor:
    """(B, P) lengths -> (B, T) index of the patch holding each byte; bytes past the lengths get P."""
    ends = patch_lengths.long().cumsum(dim=1)  # (B, P): end (exclusive) of each patch
    pos = torch.arange(T, device=patch_lengths.device).expand(patch_lengths.size(0), T).contiguous()
    return torch.searchsorted(ends, pos, right=True)  # (B, T): number of patches ending at or before t


def check_patch_lengths(idx: torch.Tensor, patch_lengths: torch.Tensor):
    """Readable errors for lengths that cannot describe these bytes."""
    if patch_lengths.dim() != 2 or patch_lengths.size(0) != idx.size(0):
        raise ValueError(f"patch_lengths must be (B, P) with B = {idx.size(0)}, "
                         f"got {tuple(patch_lengths.shape)}")
    if patch_lengths.numel() and bool((patch_lengths < 0).any()):
        raise ValueError("patch_lengths must be non-negative")
    covered = int(patch_lengths.sum(1).max()) if patch_lengths.numel() else 0
    if covered > idx.size(1):
        raise ValueError(f"patch_lengths cover {covered} bytes but rows hold {idx.size(1)}")


def window_mask(q_pos: torch.Tensor, S: int, window: int) -> torch.Tensor:
    """(t,) absolute query positions, S keys at 0..S-1 -> (t, S) bool: causal, the last `window` keys."""
    k = torch.arange(S, device=q_pos.device)
    d = q_pos.view(-1, 1) - k.view(1, -1)  # (t, S): how far back each key is
    return (d >= 0) & (d < window)


class WindowAttention(Attention):
    """Causal self-attention over a sliding window: query t sees keys t-window+1..t. Long rows run in blocks
    of `window` queries that see their own block and the one before (cost T x 2*window, not T x T); with a
    KVCache or a short row it is the parent's attention with an explicit window mask (the same result)."""

    def __init__(self, dim: int, n_heads: int, window: int):
        super().__init__(dim, n_heads)
        self.window = window

    def forward(self, x, cos, sin, mask=None, cache: KVCache | None = None):
        assert mask is None, "the window is the mask"
        B, T, C = x.shape
        W = self.window
        if cache is not None and T == 1:  # one new position (generation): it sees the last W keys, unmasked
            q, k, v = rotated_qkv(self.qkv(x).view(B, 1, 3, self.n_heads, self.head_dim), cos, sin)
            k, v = cache.append(k, v)  # (B, H, S, Dh)
            y = F.scaled_dot_product_attention(q, k[:, :, -W:], v[:, :, -W:])
            return self.proj(y.transpose(1, 2).reshape(B, 1, C))  # (B, 1, C)
        if T + (cache.len if cache is not None else 0) <= W:
            return super().forward(x, cos, sin, cache=cache)  # plain causal: nobody is more than W back
        if cache is not None or T <= 2 * W:
            pos0 = cache.len if cache is not None else 0
            pos = torch.arange(pos0, pos0 + T, device=x.device)
            return super().forward(x, cos, sin, mask=window_mask(pos, pos0 + T, W), cache=cache)
        H, Dh = self.n_heads, self.head_dim
        n = -(-T // W)  # blocks
        q, k, v = rotated_qkv(self.qkv(x).view(B, T, 3, H, Dh), cos, sin)  # 3x (B, H, T, Dh)
        q = F.pad(q, (0, 0, 0, n * W - T)).reshape(B * H, n, W, Dh)  # (B*H, n, W, Dh)
        k, v = (F.pad(a, (0, 0, W, n * W - T)).view(B * H, n + 1, W, Dh) for a in (k, v))  # a block in front
        # keys of block i: block i-1 then block i (2W keys); blocks of W/2 queries reading 1.5 W keys were
        # no faster in the whole step and keep more for the backward
        k, v = (torch.cat([a[:, :n], a[:, 1:]], dim=2) for a in (k, v))  # (B*H, n, 2W, Dh)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=window_bias(W, n, x.device, q.dtype))
        y = y.view(B, H, n * W, Dh)[:, :, :T].transpose(1, 2).reshape(B, T, C)  # (B, T, C)
        return self.proj(y)  # (B, T, C)


@functools.lru_cache(maxsize=16)
def window_bias(W: int, n: int, device, dtype) -> torch.Tensor:
    """(1, n, W, 2W) additive mask of WindowAttention's blocks: 0 where query r of block i (at local position
    W + r) may read key slot c, -inf elsewhere and in block 0's empty block before it. Float and built once
    per shape: sdpa converts no bool mask per call and keeps one copy for every layer. 4-D: CPU sdpa drops
    to its slow math path for a 3-D mask."""
    with torch.inference_mode(False):  # made while generating, it must still serve training steps later
        ok = window_mask(torch.arange(W, 2 * W, device=device), 2 * W, W).repeat(n, 1, 1)  # (n, W, 2W)
        ok[0, :, :W] = False
        return torch.zeros(ok.shape, device=device, dtype=dtype).masked_fill(~ok, float("-inf")).unsqueeze(0)


class LocalBlock(Block):
    """A common.Block whose self-attention is windowed (same parameters, same names)."""

    def __init__(self, dim: int, n_heads: int, window: int):
        super().__init__(dim, n_heads)
        self.attn = WindowAttention(dim, n_heads, window)


class CrossAttention(nn.Module):
    """Queries from one sequence attend to keys/values of another: no positions, a bool mask (True = may
    attend) broadcastable to (B, H, Tq, S). Pre-norm on both sides; returns the update, not the residual."""

    def __init__(self, dim: int, n_heads: int):
        super().__init__()
        self.n_heads, self.head_dim = n_heads, dim // n_heads
        self.q_norm = RMSNorm(dim)
        self.kv_norm = RMSNorm(dim)
        self.q = nn.Linear(dim, dim, bias=False)
        self.kv = nn.Linear(dim, 2 * dim, bias=False)
        self.proj = nn.Linear(dim, dim, bias=False)

    def project_kv(self, src):
        """(B, S, C) -> k, v (B, H, S, Dh), stacked; separate so generation can cache them."""
        B, S, _ = src.shape
        return self.kv(self.kv_norm(src)).view(B, S, 2, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)

    def forward(self, x, src=None, mask=None, kv=None, key_blocks=None):
        """key_blocks: optional [(t0, t1, m)] in place of `mask`: queries t0..t1-1 may see none of the keys
        past n = m.size(-1), so they attend to the first n only, through m (B, 1, t1-t0, n), bool or float."""
        B, T, C = x.shape
        k, v = kv if kv is not None else self.project_kv(src)  # (B, H, S, Dh)
        q = self.q(self.q_norm(x)).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, T, Dh)
        if key_blocks is None:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        else:
            y = torch.cat([F.scaled_dot_product_attention(q[:, :, t0:t1], k[:, :, :m.size(-1)],
                                                          v[:, :, :m.size(-1)], attn_mask=m)
                           for t0, t1, m in key_blocks], dim=2)  # (B, H, T, Dh)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))  # (B, T, C)


class LocalEncoder(nn.Module):
    """Bytes -> byte states (windowed causal self-attention) and patch states: a patch's K queries start as
    the max over its byte states, projected to K x C, and are refined by one cross-attention that sees only
    that patch's bytes; the K outputs, concatenated, are its (B, P, K*C) input to the global transformer."""

    def __init__(self, config: BLTConfig):
        super().__init__()
        C, self.K = config.encoder_dim, config.cross_attn_k
        self.ngram_sizes, self.table_size = config.ngram_sizes, config.hash_table_size
        self.byte_emb = nn.Embedding(V, C)
        self.hash_emb = nn.ModuleList(nn.Embedding(config.hash_table_size, C) for _ in config.ngram_sizes)
        self.rotary = Rotary(C // config.encoder_heads, config.max_seq_len)
        self.blocks = nn.ModuleList(LocalBlock(C, config.encoder_heads, config.local_window)
                                    for _ in range(config.encoder_layers))
        self.pool_proj = nn.Linear(C, self.K * C, bias=False)
        self.cross = CrossAttention(C, config.encoder_heads)

    def embed(self, idx, hash_ids=None):
        """(B, T) bytes -> (B, T, C): byte embedding plus one hashed n-gram embedding per n."""
        x = self.byte_emb(idx)  # (B, T, C)
        for i, (n, table) in enumerate(zip(self.ngram_sizes, self.hash_emb)):
            ids = hash_ids[i] if hash_ids is not None else ngram_hash_ids(idx, n, self.table_size)
            x = x + table(ids)
        return x

    def byte_states(self, x, caches: list[KVCache] | None = None):
        """(B, t, C) embeddings -> (B, t, C) byte states; with caches, the t bytes follow the cached ones."""
        cos, sin = self.rotary(caches[0].len if caches else 0, x.size(1))
        return run_blocks(self.blocks, x, cos, sin, caches=caches)

    def patch_states(self, h, patch_lengths):
        """(B, T, C) byte states, (B, P) lengths -> (B, P, K*C); empty patches give 0. A patch's bytes are
        one contiguous segment of its row, so pooling and the cross-attention's softmax are segment
        reductions over the bytes in order (torch.segment_reduce): every byte is read once, whatever
        the patch lengths, instead of a dense (P*K) x T masked product or P x (longest patch) slots."""
        B, T, C = h.shape
        P, K, H = patch_lengths.size(1), self.K, self.cross.n_heads
        Dh, cross = C // H, self.cross
        # (B*(P+1),) segment lengths: i*(P+1)+j is patch j of row i, i*(P+1)+P the row's padding after them
        lens = torch.cat([patch_lengths, T - patch_lengths.sum(1, keepdim=True)], dim=1).view(-1)
        empty = (lens == 0).view(-1, 1, 1)  # (B*(P+1), 1, 1)
        pooled = torch.segment_reduce(h.reshape(B * T, C), "max", lengths=lens, unsafe=True)  # (B*(P+1), C)
        q = self.pool_proj(pooled.masked_fill(empty.view(-1, 1), 0.0)).view(B * (P + 1), K, C)  # K per patch
        qh = cross.q(cross.q_norm(q)).view(B * (P + 1), K, H, Dh) * Dh**-0.5
        k, v = cross.kv(cross.kv_norm(h)).view(B * T, 1, 2, H, Dh).unbind(2)  # 2x (B*T, 1, H, Dh)
        seg = torch.repeat_interleave(torch.arange(B * (P + 1), device=h.device), lens, output_size=B * T)
        s = (qh.index_select(0, seg) * k).sum(-1)  # (B*T, K, H): each byte against its own patch's queries
        # softmax over each segment's bytes; the max only keeps exp in range (no gradient through it)
        m = torch.segment_reduce(s.detach(), "max", lengths=lens, unsafe=True)  # (B*(P+1), K, H)
        e = (s - m.index_select(0, seg)).exp()  # (B*T, K, H)
        den = torch.segment_reduce(e, "sum", lengths=lens, unsafe=True) + empty  # (B*(P+1), K, H); 1 if empty
        y = torch.segment_reduce(e.unsqueeze(-1) * v, "sum", lengths=lens, unsafe=True) / den.unsqueeze(-1)
        # an empty patch: pooled 0, so q 0 and y 0: it gives 0
        return (q + cross.proj(y.view(B * (P + 1), K, C))).view(B, P + 1, K * C)[:, :P]  # (B, P, K*C)


class GlobalTransformer(nn.Module):
    """Causal transformer over patches: (B, P, K*C_enc) patch states -> (B, P, D) normed outputs."""

    def __init__(self, config: BLTConfig):
        super().__init__()
        D = config.global_dim
        self.in_proj = nn.Linear(config.cross_attn_k * config.encoder_dim, D, bias=False)
        self.rotary = Rotary(D // config.global_heads, config.max_seq_len)
        self.blocks = nn.ModuleList(Block(D, config.global_heads) for _ in range(config.global_layers))
        self.norm = RMSNorm(D)

    def forward(self, p, caches: list[KVCache] | None = None):
        x = self.in_proj(p)  # (B, P, D)
        cos, sin = self.rotary(caches[0].len if caches else 0, x.size(1))
        return self.norm(run_blocks(self.blocks, x, cos, sin, caches=caches))  # (B, P, D)


class LocalDecoder(nn.Module):
    """Encoder byte states (shifted right by one) + global outputs of earlier patches -> next-byte logits.
    Each layer: a cross-attention from bytes to patch keys (each global output projected to K keys, behind
    K keys of a learned start vector, "patch -1": a byte of patch j reads the start and patches 0..j-1, so
    no row is empty), then a windowed causal Block."""

    def __init__(self, config: BLTConfig):
        super().__init__()
        C, self.K = config.decoder_dim, config.cross_attn_k
        self.start = nn.Parameter(torch.zeros(C))  # decoder input at byte 0 (no byte before it)
        self.global_start = nn.Parameter(torch.zeros(config.global_dim))  # what patch 0's bytes read
        self.in_norm = RMSNorm(config.encoder_dim)
        self.in_proj = nn.Linear(config.encoder_dim, C, bias=False)
        self.patch_proj = nn.Linear(config.global_dim, self.K * C, bias=False)
        self.rotary = Rotary(C // config.decoder_heads, config.max_seq_len)
        self.cross = nn.ModuleList(CrossAttention(C, config.decoder_heads)
                                   for _ in range(config.decoder_layers))
        self.blocks = nn.ModuleList(LocalBlock(C, config.decoder_heads, config.local_window)
                                    for _ in range(config.decoder_layers))
        self.norm = RMSNorm(C)
        self.head = nn.Linear(C, V, bias=False)

    def inputs(self, h, first: bool = True):
        """(B, t, C_enc) encoder states of bytes i-1 -> (B, t(+1), C) inputs; `first` prepends the start."""
        x = self.in_proj(self.in_norm(h))  # (B, t, C)
        if first:
            start = self.start.view(1, 1, -1).expand(h.size(0), 1, -1).to(x.dtype)
            x = torch.cat([start, x], dim=1)
        return x

    def patch_keys(self, g):
        """(B, n, D) global outputs -> (B, n*K, C) cross-attention sources, K per patch."""
        B, n, _ = g.shape
        return self.patch_proj(g).view(B, n * self.K, self.patch_proj.out_features // self.K)

    def start_keys(self, B: int):
        return self.patch_keys(self.global_start.view(1, 1, -1).expand(B, 1, -1))  # (B, K, C)

    def forward(self, x, kv_src=None, cross_mask=None, caches: list[KVCache] | None = None, cross_kv=None,
                key_blocks=None):
        """(B, t, C) inputs -> (B, t, V) logits. Keys come from kv_src (B, S, C) or from cached cross_kv;
        key_blocks as in CrossAttention.forward."""
        cos, sin = self.rotary(caches[0].len if caches else 0, x.size(1))
        for i, (cross, block) in enumerate(zip(self.cross, self.blocks)):
            kv = cross_kv[i] if cross_kv else None
            x = x + cross(x, kv_src, mask=cross_mask, kv=kv, key_blocks=key_blocks)
            x = block(x, cos, sin, cache=caches[i] if caches else None)
        return self.head(self.norm(x))  # (B, t, V)


class BLTModel(CarriesConfig, nn.Module):
    """forward(idx (B, T), patch_lengths (B, P), targets) -> (logits (B, T, V), loss); logits[:, t]
    predicts byte t from bytes < t (the module docstring's alignment). patch_lengths are right-padded with
    zeros; a row's lengths sum to its number of real bytes (bytes past that are padding: target -100).
    """

    kind = "blt"
    config_class = BLTConfig
    arch_fields = ("encoder_layers", "encoder_dim", "encoder_heads", "global_layers", "global_dim",
                   "global_heads", "decoder_layers", "decoder_dim", "decoder_heads", "ngram_sizes",
                   "hash_table_size", "cross_attn_k", "local_window")

    def __init__(self, config: BLTConfig):
        super().__init__()
        self.config = config
        self.encoder = LocalEncoder(config)
        self.global_model = GlobalTransformer(config)
        self.decoder = LocalDecoder(config)
        init_weights(self)
        for stack in (self.encoder, self.global_model, self.decoder):
            scale_residual_init(stack.blocks, len(stack.blocks))
        nn.init.normal_(self.decoder.start, std=0.02)
        nn.init.normal_(self.decoder.global_start, std=0.02)
        self.patcher = None  # what generate() patches with by default (the checkpoint loader sets it)

    def forward(self, idx, patch_lengths, targets=None):
        check_patch_lengths(idx, patch_lengths)
        B, T = idx.shape
        if T == 0:  # nothing to predict (and no byte for a patch query to attend to)
            logits = self.decoder.head.weight.new_zeros(B, 0, V)
            loss = None if targets is None else F.cross_entropy(logits.view(0, V), targets.reshape(-1))
            return logits, loss
        P = patch_lengths.size(1)
        patch_ids = patch_ids_from_lengths(patch_lengths, T)  # (B, T)
        h = self.encoder.byte_states(self.encoder.embed(idx))  # (B, T, C)
        p = self.encoder.patch_states(h, patch_lengths)  # (B, P, K*C)
        g = self.global_model(p)  # (B, P, D)
        keys = torch.cat([self.decoder.start_keys(B), self.decoder.patch_keys(g)], dim=1)  # (B, (P+1)*K, C)
        x = self.decoder.inputs(h[:, :-1])[:, :T]  # (B, T, C): position t reads the encoder state of byte t-1
        # bytes in blocks of DECODER_BLOCK: a block needs the keys up to its last byte's patch only (patch ids
        # never decrease along a row), about half of them on average; one host sync for all blocks
        K, Tb = self.config.cross_attn_k, DECODER_BLOCK
        last = patch_ids[:, [min(t + Tb, T) - 1 for t in range(0, T, Tb)]].amax(0)  # (blocks,)
        # key slot e (e = 0: the start, e = j+1: patch j) is visible to a byte of patch j' iff e <= j'; each
        # block's mask additive float, made once for every decoder layer (sdpa converts no bool mask)
        key_patch = torch.arange(P + 1, device=idx.device).repeat_interleave(K)  # ((P+1)*K,)
        key_blocks = []
        for t0, j in zip(range(0, T, Tb), last.tolist()):
            hidden = key_patch[:K * (j + 1)] > patch_ids[:, t0:t0 + Tb, None]  # (B, t, n)
            key_blocks.append((t0, t0 + hidden.size(1),
                               x.new_zeros(hidden.shape).masked_fill_(hidden, float("-inf")).unsqueeze(1)))
        logits = self.decoder(x, keys, key_blocks=key_blocks)  # (B, T, V)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.float().view(-1, V), targets.reshape(-1), ignore_index=-100)
        return logits, loss

    def num_params(self, include_hash: bool = True) -> int:
        return count_params(self, exclude=() if include_hash else ("hash_emb",))

    def flops_per_byte(self, mean_patch_size: float, seq_len: int | None = None) -> float:
        return flops_per_byte(self.config, mean_patch_size, seq_len)

    # --- generation (gpt-fast's shape: prefill, then one byte per row per decode_step)

    @torch.inference_mode()
    def generate(self, prompt: bytes | list[bytes], max_new_bytes: int, patcher=None,
                 temperature: float = 1.0, top_k: int | None = None, use_cache: bool = True,
                 seed: int | None = None, batch_size: int = 16) -> bytes | list[bytes]:
        """Sample max_new_bytes bytes after `prompt` and return them.

        A list of prompts gives a list of outputs, decoded together batch_size rows at a time (prompts of
        any lengths; each row has its own patches); prompt i samples with seed + i, so its output is the
        one it gets alone, up to float rounding of the batched products. `patcher` (an
        entropy_patcher.EntropyPatcher, or anything with .stream()) decides, before each byte is known,
        whether it starts a patch, by the causal rule used for training; None: self.patcher (the checkpoint
        loader sets it to the patching the model was trained with). use_cache=True keeps KV caches in every
        stack (each row's stream keeps its own) and steps the global model when a row closes a patch;
        use_cache=False reruns a fresh stream and the whole BLT on the growing sequence, one prompt at a
        time. temperature=0 is greedy; both paths then give the same bytes.
        """
        if max_new_bytes < 0:
            raise ValueError("max_new_bytes must be non-negative")
        if temperature < 0:
            raise ValueError("temperature must be non-negative")
        if batch_size < 1:
            raise ValueError("batch_size must be positive")
        single = not isinstance(prompt, (list, tuple))
        prompts = [prompt] if single else list(prompt)
        if any(isinstance(p, str) for p in prompts):
            raise TypeError("prompt must be bytes (encode text first, e.g. text.encode('utf-8'))")
        prompts = [bytes(p) for p in prompts]
        patcher = patcher if patcher is not None else self.patcher
        if patcher is None:
            raise ValueError("generate() needs the patching the model was trained with: pass patcher=... (an "
                             "EntropyPatcher), or load the model with its checkpoint's patcher")
        gens = [None if seed is None else torch.Generator(device=self._device()).manual_seed(seed + i)
                for i in range(len(prompts))]
        was_training = self.training
        self.eval()
        try:
            outs = []
            for a in range(0, len(prompts), batch_size):
                rows, row_gens = prompts[a:a + batch_size], gens[a:a + batch_size]
                if use_cache:
                    outs += self._generate_cached(rows, max_new_bytes, patcher, temperature, top_k, row_gens)
                else:
                    outs += [self._generate_rerun(p, max_new_bytes, patcher, temperature, top_k, g)
                             for p, g in zip(rows, row_gens)]
            return outs[0] if single else outs
        finally:
            self.train(was_training)

    def _generate_cached(self, prompts: list[bytes], n: int, patcher, temperature, top_k,
                         gens) -> list[bytes]:
        states = [self.prefill(p, patcher.stream(), n) for p in prompts]
        state = states[0] if len(states) == 1 else self._stack_states(states, n)
        outs = [bytearray() for _ in prompts]
        for i in range(n):
            if temperature == 0:  # one host sync for every row
                new = state.logits.argmax(-1).tolist()
            else:
                new = [sample(logits, temperature, top_k, g) for logits, g in zip(state.logits, gens)]
            for out, byte in zip(outs, new):
                out.append(byte)
            if i + 1 < n:
                self.decode_step(state, new)
        return [bytes(out) for out in outs]

    def _generate_rerun(self, prompt: bytes, n: int, patcher, temperature, top_k, gen) -> bytes:
        out = bytearray()
        for _ in range(n):
            out.append(sample(self._uncached_logits(prompt + out, patcher), temperature, top_k, gen))
        return bytes(out)

    def _device(self):
        return self.decoder.head.weight.device

    def _uncached_logits(self, seq: bytes, patcher):
        """(V,) prediction of the byte after `seq` with no caches: a fresh stream and the whole model."""
        dev, probe = self._device(), seq + b"\0"  # the byte being predicted is unknown; nothing reads it
        starts = [i for i, s in enumerate(patcher.stream().prefill(probe)) if s] + [len(probe)]
        lengths = torch.tensor([[b - a for a, b in zip(starts, starts[1:])]], device=dev)  # (1, P)
        return self(torch.tensor([list(probe)], device=dev), lengths)[0][0, -1]  # (V,)

    def prefill(self, prompt: bytes, stream, max_new_bytes: int = 0) -> GenerationState:
        """Run one prompt through every stack with fresh caches (a state of one row); state.logits[0]
        predicts the byte after it. stream: the patcher's stream (prefill / next_starts_patch / push) for
        this sequence. The global model runs over the prompt's closed patches, the decoder over positions
        0..n (input n reads byte n-1), each seeing the start and the closed patches before its own."""
        cfg, dev, dt = self.config, self._device(), self.decoder.head.weight.dtype
        enc, dec, n, K = self.encoder, self.decoder, len(prompt), cfg.cross_attn_k
        cap = n + max_new_bytes + 1
        state = GenerationState(
            streams=[stream], seqs=[bytearray(prompt)], shift=[0], patch_start=[0], patches=[0],
            h=torch.zeros(1, cap, cfg.encoder_dim, device=dev, dtype=dt),
            enc_caches=self._caches("encoder", 1, cap), global_caches=self._caches("global", 1, cap),
            dec_caches=self._caches("decoder", 1, cap),
            cross_caches=self._caches("decoder", 1, K * (cap + 1)),
            logits=None)
        self._add_patch_keys(state, dec.start_keys(1))
        starts = stream.prefill(prompt) + [stream.next_starts_patch()]  # positions 0..n
        if n:
            x = enc.embed(torch.tensor([list(prompt)], device=dev))  # (1, n, C)
            state.h[:, :n] = enc.byte_states(x, state.enc_caches)
        cut = [i for i in range(n + 1) if starts[i]]  # positions that start a patch
        closed = [b - a for a, b in zip(cut, cut[1:])]
        if closed:
            p = enc.patch_states(state.h[:, :cut[-1]], torch.tensor([closed], device=dev))  # (1, m, K*C)
            self._add_patch_keys(state, dec.patch_keys(self.global_model(p, caches=state.global_caches)))
        state.patch_start, state.patches = [cut[-1]], [len(closed)]  # the open patch (n when n starts one)
        ids = torch.tensor(starts, device=dev).long().cumsum(0) - 1  # (n+1,) patch id of each position
        key_patch = torch.arange(len(closed) + 1, device=dev).repeat_interleave(K)  # (S,)
        mask = key_patch.view(1, -1) <= ids.view(-1, 1)  # (n+1, S)
        cross_kv = [(c.k[:, :, :c.len], c.v[:, :, :c.len]) for c in state.cross_caches]
        x = dec.inputs(state.h[:, :n])  # (1, n+1, C)
        state.logits = dec(x, cross_mask=mask, caches=state.dec_caches, cross_kv=cross_kv)[:, -1]  # (1, V)
        return state

    def _caches(self, stack: str, rows: int, length: int) -> list[KVCache]:
        """One KVCache per layer of the encoder, global or decoder stack."""
        layers, heads, dim = (getattr(self.config, f"{stack}_{f}") for f in ("layers", "heads", "dim"))
        dev, dt = self._device(), self.decoder.head.weight.dtype
        return [KVCache(rows, heads, dim // heads, length, dev, dt) for _ in range(layers)]

    def _add_patch_keys(self, state: GenerationState, src):
        """(1, m*K, C) keys of m patches -> appended to every decoder layer's cross-attention cache."""
        for cache, cross in zip(state.cross_caches, self.decoder.cross):
            cache.append(*cross.project_kv(src))

    def _stack_states(self, states: list[GenerationState], max_new_bytes: int) -> GenerationState:
        """One state of B rows from B prefilled one-row states. Rows end together: row b's byte j sits at
        slot j + shift[b] of h and the byte-level caches, so every step writes one slot for all rows and
        only the slots before a short prompt's start are masked; patch-level caches keep each row's own
        count (state.patches)."""
        K, B = self.config.cross_attn_k, len(states)
        n = [len(s.seqs[0]) for s in states]
        N, P = max(n), max(s.patches[0] for s in states) + max_new_bytes + 1  # slots, patches per row
        cap = N + max_new_bytes + 1
        shift = [N - m for m in n]
        h = states[0].h.new_zeros(B, cap, states[0].h.size(2))
        out = GenerationState(
            streams=[s.streams[0] for s in states], seqs=[s.seqs[0] for s in states], shift=shift,
            patch_start=[s.patch_start[0] + d for s, d in zip(states, shift)],
            patches=[s.patches[0] for s in states], h=h,
            enc_caches=self._caches("encoder", B, cap), global_caches=self._caches("global", B, P),
            dec_caches=self._caches("decoder", B, cap),
            cross_caches=self._caches("decoder", B, K * (P + 1)),
            logits=torch.cat([s.logits for s in states]))
        for b, (s, d) in enumerate(zip(states, shift)):
            h[b, d:d + n[b]] = s.h[0, :n[b]]
            pairs = ((out.enc_caches, s.enc_caches, d), (out.dec_caches, s.dec_caches, d),
                     (out.global_caches, s.global_caches, 0), (out.cross_caches, s.cross_caches, 0))
            for dsts, srcs, offset in pairs:
                for dst, src in zip(dsts, srcs):
                    dst.k[b, :, offset:offset + src.len] = src.k[0, :, :src.len]
                    dst.v[b, :, offset:offset + src.len] = src.v[0, :, :src.len]
        for c in out.enc_caches:
            c.len = N
        for c in out.dec_caches:
            c.len = N + 1
        return out

    def decode_step(self, state: GenerationState, new: list[int]):
        """Feed the byte each row just sampled (all at slot s); state.logits then predicts the next ones.
        The same arithmetic as the forward pass's layers, written out for one position per row (fewer ops
        per byte: generation at batch 1 is bound by per-op costs, not FLOPs)."""
        cfg, dev, enc, dec = self.config, self._device(), self.encoder, self.decoder
        s = len(state.seqs[0]) + state.shift[0]
        if s + 1 >= state.h.size(1):  # slot writes past the caches would drop the byte silently
            raise ValueError(f"this state holds {state.h.size(1)} slots: prefill with a larger max_new_bytes")
        ids = []
        for seq, stream, byte in zip(state.seqs, state.streams, new):
            seq.append(byte)
            stream.push(byte)
            ids.append(last_ngram_hash_ids(seq, cfg.ngram_sizes, cfg.hash_table_size))
        B = len(new)
        hash_ids = torch.tensor(ids, device=dev).T.reshape(-1, B, 1)  # (n_sizes, B, 1)
        x = enc.embed(torch.tensor(new, device=dev).view(B, 1), hash_ids)  # (B, 1, C)
        x = self._local_step(enc, x, state.enc_caches, s, state.shift)  # encoder state of byte s
        state.h[:, s:s + 1] = x
        closing = [stream.next_starts_patch() for stream in state.streams]
        if any(closing):
            self._close_step(state, s, closing)
        x = dec.inputs(x, first=False)  # (B, 1, C): decoder slot s+1 reads byte s
        counts = [cfg.cross_attn_k * (p + 1) for p in state.patches]  # cross-attention keys of each row
        S, mask = max(counts), first_slots(counts, dev)
        rot = rows_rotary(dec.rotary, [s + 1 - d for d in state.shift])
        self_mask = self._local_mask(s + 1, state.shift)
        for cross, c, block, cache in zip(dec.cross, state.cross_caches, dec.blocks, state.dec_caches):
            x = x + cross(x, mask=mask, kv=(c.k[:, :, :S], c.v[:, :, :S]))
            x = _block_step(block, x, rot, cache, self_mask)
        state.logits = dec.head(dec.norm(x))[:, -1]  # (B, V)

    def _local_mask(self, slot: int, shift: list[int]):
        """(B, 1, 1, k) of the k = min(slot+1, W) byte-level keys a query at `slot` reads (the window): False
        on slots before a row's first byte; None if no row has such a slot in the window."""
        lo = max(0, slot + 1 - self.config.local_window)
        if max(shift) <= lo:
            return None
        slots = torch.arange(lo, slot + 1, device=self._device())
        return (slots >= torch.tensor(shift, device=self._device()).view(-1, 1)).view(len(shift), 1, 1, -1)

    def _local_step(self, stack, x, caches: list[KVCache], slot: int, shift: list[int]):
        """x (B, 1, C) at `slot` through the windowed blocks of the encoder (caches hold slots < slot)."""
        rot, mask = rows_rotary(stack.rotary, [slot - d for d in shift]), self._local_mask(slot, shift)
        for block, cache in zip(stack.blocks, caches):
            x = _block_step(block, x, rot, cache, mask)
        return x

    def _close_step(self, state: GenerationState, s: int, closing: list[bool]):
        """Rows whose next byte opens a patch close their open patch (slots patch_start..s): pool it, step
        the global model at the row's own patch count, add its keys. Every row is computed (one batched
        product); a row that does not close writes at the slot its next patch will overwrite, and keeps
        its counts."""
        dec, dev = self.decoder, self._device()
        lengths = [s + 1 - start for start in state.patch_start]  # each row's open patch, ending at s
        L = max(lengths)
        # the window of the last L slots holds each row's open patch at its end: its patch 1, after a patch 0
        # of the slots before it (empty for the longest)
        segments = torch.tensor([[L - n, n] for n in lengths], device=dev)  # (B, 2)
        p = self.encoder.patch_states(state.h[:, s + 1 - L:s + 1], segments)[:, 1:]  # (B, 1, K*C)
        gm, P = self.global_model, state.patches
        x = gm.in_proj(p)  # (B, 1, D)
        mask = first_slots([n + 1 for n in P], dev)  # row b reads its patches 0..P[b]
        rot = rows_rotary(gm.rotary, P)
        for block, cache in zip(gm.blocks, state.global_caches):
            x = _block_step(block, x, rot, cache, mask, slots=P)
        keys = dec.patch_keys(gm.norm(x))  # (B, K, C)
        for cross, cache in zip(dec.cross, state.cross_caches):
            write_rows(cache, [self.config.cross_attn_k * (p + 1) for p in P], *cross.project_kv(keys))
        for b, c in enumerate(closing):
            if c:
                state.patches[b] += 1
                state.patch_start[b] = s + 1


def first_slots(counts: list[int], device):
    """(B, 1, 1, S) bool, S = max(counts): True on row b's first counts[b] slots; None if every row has S."""
    S = max(counts)
    if min(counts) == S:
        return None
    ends = torch.tensor(counts, device=device).view(-1, 1)
    return (torch.arange(S, device=device) < ends).view(-1, 1, 1, S)


def rows_rotary(rotary: Rotary, pos: list[int]):
    """cos2, sin2 (B or 1, 1, 1, 1, Dh) at one position per row: [cos, cos] and [-sin, sin], the layout of
    common.window_tables, from the Rotary table the forward pass reads."""
    cos, sin = rotary(0, max(pos) + 1)
    if min(pos) == max(pos):
        cos, sin = cos[pos[0]:pos[0] + 1], sin[pos[0]:pos[0] + 1]  # (1, Dh/2)
    else:
        idx = torch.tensor(pos, device=cos.device)
        cos, sin = cos[idx], sin[idx]  # (B, Dh/2)
    return torch.cat([cos, cos], -1)[:, None, None, None], torch.cat([-sin, sin], -1)[:, None, None, None]


def write_rows(cache: KVCache, slots: list[int], k, v):
    """k, v (B, H, t, Dh) written at slots[b].. of row b (one slice when every row writes at one slot)."""
    t = k.size(2)
    if min(slots) == max(slots):
        cache.k[:, :, slots[0]:slots[0] + t] = k
        cache.v[:, :, slots[0]:slots[0] + t] = v
        return
    rows = torch.arange(k.size(0), device=k.device).view(-1, 1)
    cols = torch.tensor(slots, device=k.device).view(-1, 1) + torch.arange(t, device=k.device)  # (B, t)
    cache.k[rows, :, cols] = k.transpose(1, 2)  # advanced indices first: (B, t, H, Dh)
    cache.v[rows, :, cols] = v.transpose(1, 2)


def _block_step(block: Block, x, rot, cache: KVCache, mask=None, slots: list[int] | None = None):
    """Block.forward of one new position per row (x (B, 1, C)). slots None: the rows are aligned, the
    position is appended to the cache and attends to the last mask.size(-1) (or the window's) keys
    (LocalBlock) or to all (Block); slots: row b writes at slots[b] and reads keys 0..slots[b] (mask)."""
    a, (B, _, C) = block.attn, x.shape
    q, k, v = _rotate_step(a.qkv(block.attn_norm(x)).view(B, 1, 3, a.n_heads, a.head_dim), *rot)
    if slots is None:
        k, v = cache.append(k, v)  # (B, H, S, Dh)
        window = getattr(a, "window", k.size(2))
        k, v = k[:, :, -window:], v[:, :, -window:]
    else:
        write_rows(cache, slots, k, v)
        k, v = cache.k[:, :, :max(slots) + 1], cache.v[:, :, :max(slots) + 1]
    y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, H, 1, Dh)
    x = x + a.proj(y.transpose(1, 2).reshape(B, 1, C))
    return x + block.mlp(block.mlp_norm(x))


def _rotate_step(qkv, cos2, sin2):
    """(B, 1, 3, H, Dh) projections of one position -> q, k, v (B, H, 1, Dh), q and k rotated by
    common.window_rotate: apply_rotary's bits in a few ops over the whole head dim."""
    qk = window_rotate(qkv[:, :, :2], cos2, sin2)  # (B, 1, 2, H, Dh)
    return qk[:, :, 0].transpose(1, 2), qk[:, :, 1].transpose(1, 2), qkv[:, :, 2].transpose(1, 2)


@dataclass
class GenerationState:
    """What decode_step carries from byte to byte, for B rows (B = 1 after prefill; rows may differ in
    prompt length and patches). Slot s of h and the byte-level caches holds byte s - shift[b] of row b."""

    streams: list  # per row: the patcher's stream (patch starts, with its own entropy-model cache)
    seqs: list[bytearray]  # per row: every byte so far, prompt included
    shift: list[int]  # per row: how many slots its bytes sit to the right (the rows end together)
    patch_start: list[int]  # per row: slot of the first byte of its open patch
    patches: list[int]  # per row: closed patches P (global keys 0..P-1, cross keys 0..K*(P+1)-1)
    h: torch.Tensor  # (B, capacity, C_enc) encoder states by slot (the rest unwritten)
    enc_caches: list[KVCache]  # per encoder layer: keys/values (B, H, slots, Dh)
    global_caches: list[KVCache]  # per global layer: keys/values (B, H, patches, Dh)
    dec_caches: list[KVCache]  # per decoder layer: keys/values (B, H, slots + 1, Dh)
    cross_caches: list[KVCache]  # per decoder layer: patch keys/values (B, H, K*(patches+1), Dh)
    logits: torch.Tensor | None  # (B, V) the prediction of each row's next byte


def sample(logits, temperature: float, top_k: int | None = None, gen=None) -> int:
    """One byte from (V,) logits: argmax at temperature 0, else softmax(logits / T) over the top_k."""
    if temperature == 0:
        return int(logits.argmax())
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.numel():
        kth = torch.topk(logits, top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return int(torch.multinomial(F.softmax(logits, dim=-1), 1, generator=gen))


def flops_breakdown(config: BLTConfig, mean_patch_size: float,
                    seq_len: int | None = None) -> dict[str, float]:
    """Forward FLOPs per byte by part (DESIGN.md, "FLOPs"): matmuls and attention, 2 FLOPs per multiply-add.
    Local blocks see a windowed causal context of bytes; per-patch costs (the global transformer's among
    them) are divided by the mean patch size. Attention counts the keys a query may see, not the masked
    dense product computed; embedding and hash lookups and the max-pool are free."""
    T = seq_len or config.max_seq_len
    ps = float(mean_patch_size)
    if ps < 1:
        raise ValueError(f"mean_patch_size must be at least 1, got {mean_patch_size}")
    P = T / ps  # patches per row
    K, Ce, D, Cd = config.cross_attn_k, config.encoder_dim, config.global_dim, config.decoder_dim
    local_ctx = causal_context(T, config.local_window)
    # a byte of patch j reads the start and patches 0..j-1: j+1 patch slots, K keys each
    dec_keys = K * causal_context(P)
    return {
        "encoder_blocks": config.encoder_layers * block_flops_per_token(Ce, mlp_hidden(Ce), local_ctx),
        # per patch: pool projection C -> K*C, K queries (q and out projections, attention over the patch's
        # bytes); per byte: its key and value
        "encoder_cross": (2 * Ce * K * Ce + K * (2 * Ce * Ce + 2 * Ce * Ce) + K * ps * 4 * Ce) / ps
                         + 2 * Ce * 2 * Ce,
        "global_blocks": (2 * K * Ce * D + config.global_layers
                          * block_flops_per_token(D, mlp_hidden(D), causal_context(P))) / ps,
        # per patch: the projection to K keys and each layer's keys and values of those; per byte: the
        # input projection, and per layer the q and out projections and attention over dec_keys keys
        "decoder_cross": (2 * D * K * Cd + config.decoder_layers * K * 2 * Cd * 2 * Cd) / ps + 2 * Ce * Cd
                         + config.decoder_layers * (2 * Cd * Cd + 2 * Cd * Cd + 4 * Cd * dec_keys),
        "decoder_blocks": config.decoder_layers * block_flops_per_token(Cd, mlp_hidden(Cd), local_ctx),
        "head": 2 * Cd * V,
    }


def flops_per_byte(config: BLTConfig, mean_patch_size: float, seq_len: int | None = None) -> float:
    """Forward FLOPs per byte at this mean patch size and row length (default max_seq_len)."""
    return float(sum(flops_breakdown(config, mean_patch_size, seq_len).values()))
