"""Shared pieces: the transformer layers every model is built from, CausalLM, configs and their flags,
device, files and reports.

Letters used in shape comments:
    B batch, T sequence length (bytes or tokens), H heads, Dh head dim, C model width, S cached length.
"""
from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import math
import os
import re
import tempfile
import time
from contextlib import suppress

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

# ----------------------------------------------------------------------------------------------------
# Layers


class RMSNorm(nn.Module):
    """RMSNorm without bias (Zhang & Sennrich 2019); computed in fp32 for stability under bf16."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        if torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad):
            return _RMSNormFn.apply(x.float(), self.weight.float(), self.eps).type_as(x)
        # F.rms_norm: one call instead of six elementwise ones (less overhead per step), the same arithmetic
        return F.rms_norm(x.float(), self.weight.shape, self.weight.float(), self.eps).type_as(x)


class _RMSNormFn(torch.autograd.Function):
    """F.rms_norm's forward (the same bits) with a hand-written backward: autograd's own through the
    composite (pow, mean, rsqrt, muls) keeps two (.., C) tensors per norm until the backward, this one
    one (a BLT step's live peak 576 -> 518 MB), and takes half the time alone."""

    @staticmethod
    def forward(ctx, x, weight, eps):
        y, rstd = torch.ops.aten._fused_rms_norm(x, [x.size(-1)], weight, eps)  # rstd (.., 1)
        ctx.save_for_backward(x, rstd, weight)
        return y

    @staticmethod
    def backward(ctx, g):
        x, rstd, weight = ctx.saved_tensors
        xhat = x * rstd
        gw = (g * xhat).flatten(0, -2).sum(0)
        gx = g * weight
        gx = rstd * (gx - xhat * (gx * xhat).mean(-1, keepdim=True))
        return gx, gw, None


class Rotary(nn.Module):
    """Rotary position embedding (Su et al. 2021): cos/sin tables precomputed for max_len positions.
    forward(start, length) takes Python ints (a KV cache's length): no forward pass reads a tensor back to
    the host; a generation past max_len doubles the tables (a Python-side check, also sync-free)."""

    def __init__(self, head_dim: int, max_len: int, theta: float = 10000.0):
        super().__init__()
        assert head_dim % 2 == 0, "rotary needs an even head dim"
        inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        self._build(max(1, max_len))

    def _build(self, n: int):
        t = torch.arange(n, device=self.inv_freq.device, dtype=torch.float32)
        freqs = torch.outer(t, self.inv_freq)  # (n, Dh/2)
        # buffers: they follow .to(device) with the model, and stay out of the state dict
        self.register_buffer("cos", freqs.cos(), persistent=False)
        self.register_buffer("sin", freqs.sin(), persistent=False)

    def forward(self, start: int, length: int):
        """cos, sin (length, Dh/2) for positions start..start+length-1."""
        if start + length > self.cos.size(0):
            self._build(max(start + length, 2 * self.cos.size(0)))
        return self.cos[start:start + length], self.sin[start:start + length]


def apply_rotary(x, cos, sin):
    """x (B, H, T, Dh); rotates pairs (first half, second half) of the head dim."""
    x1, x2 = x.float().chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).type_as(x)


def rotated_qkv(qkv, cos, sin):
    """(B, T, 3, H, Dh) projections -> q, k, v (B, H, T, Dh), q and k rotated together (one set of ops)."""
    qk, v = qkv.split([2, 1], dim=2)  # split, not slices: its backward is one cat, not zero-fill + copy
    q, k = apply_rotary(qk, cos[:, None, None], sin[:, None, None]).permute(2, 0, 3, 1, 4)  # 2x (B, H, T, Dh)
    return q, k, v.squeeze(2).transpose(1, 2)


class KVCache:
    """Keys and values of one attention layer for incremental decoding, preallocated to max_len."""

    def __init__(self, batch: int, n_heads: int, head_dim: int, max_len: int, device, dtype):
        self.k = torch.zeros(batch, n_heads, max_len, head_dim, device=device, dtype=dtype)
        self.v = torch.zeros_like(self.k)
        self.len = 0

    def append(self, k, v):
        """k, v (B, H, T, Dh) -> all keys and values so far, (B, H, S, Dh)."""
        t = k.size(2)
        if self.len + t > self.k.size(2):  # grow instead of failing on long generations
            extra = max(t, self.k.size(2))
            self.k = torch.cat([self.k, torch.zeros_like(self.k[:, :, :extra])], dim=2)
            self.v = torch.cat([self.v, torch.zeros_like(self.v[:, :, :extra])], dim=2)
        self.k[:, :, self.len:self.len + t] = k
        self.v[:, :, self.len:self.len + t] = v
        self.len += t
        return self.k[:, :, :self.len], self.v[:, :, :self.len]


def window_layout(window: int) -> tuple[int, int]:
    """(chunk, back) of a sliding window of `window` keys computed in chunks: every chunk of `chunk` queries
    attends to its own chunk and the `back` chunks before it, which hold every key it may see."""
    # eight chunks hold the W-1 keys before a query, so it reads (back + 1) * chunk ~ 1.125 W keys (four:
    # 1.25 W, 4% slower over the whole pass at W = 256; sixteen: no faster); >= 16 rows: BLAS gives a row
    # the same bits at any row count (tested)
    chunk = max(16, -(-(window - 1) // 8))
    return chunk, max(1, -(-(window - 1) // chunk))


def chunk_window_mask(window: int, chunk: int, back: int, chunk_ok: torch.Tensor,
                      dtype=torch.float32) -> torch.Tensor:
    """(S, 1, Q, K) additive mask, 0 = may attend, -inf = may not: query r of a chunk (local position
    back*Q + r) sees key c (local position c) iff 0 <= back*Q + r - c < window and key chunk c // Q is allowed
    by chunk_ok (S, back+1): False for chunks before the document's start. Additive, not bool: sdpa turns a
    bool mask into this on every call (over every head); this is built once and broadcast over heads."""
    r = torch.arange(chunk, device=chunk_ok.device).view(chunk, 1)
    c = torch.arange((back + 1) * chunk, device=chunk_ok.device).view(1, -1)
    d = back * chunk + r - c  # (Q, K): how far back each key is
    band = torch.zeros(d.shape, dtype=dtype, device=d.device).masked_fill_((d < 0) | (d >= window), -math.inf)
    allowed = torch.zeros(chunk_ok.shape, dtype=dtype, device=d.device).masked_fill_(~chunk_ok, -math.inf)
    return (band + allowed.repeat_interleave(chunk, dim=1).unsqueeze(1)).unsqueeze(1)  # one pass over S*Q*K


def window_tables(positions, inv_freq):
    """Rotary tables (T, 1, Dh) [cos, cos] and [-sin, sin] of `positions` (T,) ints, each a position's offset
    from its document's start, for window_rotate. The angles are taken in float64, so a position far into a
    long document is rotated as exactly as one near its start; keys are rotated once, at their own position
    (never per query chunk), and a query's scores depend on the offsets alone, up to rounding."""
    theta = positions.to(torch.float64).view(-1, 1) * inv_freq.to(positions.device, torch.float64)
    c, s = theta.cos().float(), theta.sin().float()  # (T, Dh/2); float before cat: 4x faster on a CPU
    return torch.cat([c, c], dim=-1).unsqueeze(1), torch.cat([-s, s], dim=-1).unsqueeze(1)


def window_rotate(x, cos, sin):
    """x (..., T, H, Dh) rotated by window_tables (T, 1, Dh): x * [cos, cos] + (x with its halves swapped) *
    [-sin, sin], apply_rotary's arithmetic in ops over the whole head dim (no strided halves)."""
    h = x.size(-1) // 2
    xs = torch.cat([x[..., h:], x[..., :h]], dim=-1)
    return (x.float() * cos).add_(xs.float() * sin).type_as(x)


def window_keys(k, v, S: int, chunk: int, back: int):
    """Keys and values of S query chunks from k, v (B, (back+S)*Q, H, Dh) (the `back` chunks before the first
    query chunk, then the S chunks; keys already rotated): (B*S, H, K, Dh) each, K = (back+1)*Q, the
    chunks' overlapping windows as views (copied only when B > 1)."""
    B, _, H, Dh = k.shape
    K = (back + 1) * chunk
    return [t.unfold(1, K, chunk).permute(0, 1, 4, 2, 3).reshape(B * S, K, H, Dh).transpose(1, 2)
            for t in (k, v)]


class Attention(nn.Module):
    """Multi-head self-attention with rotary positions through scaled_dot_product_attention. `mask` is None
    (plain causal), or a boolean mask broadcastable to (B, H, T, S) where True = may attend. With a KVCache
    the new keys are appended and the queries attend to everything cached (plus `mask`)."""

    def __init__(self, dim: int, n_heads: int):
        super().__init__()
        assert dim % n_heads == 0, f"width {dim} is not divisible by {n_heads} heads"
        self.n_heads, self.head_dim = n_heads, dim // n_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim, bias=False)

    def forward(self, x, cos, sin, mask=None, cache: KVCache | None = None):
        B, T, C = x.shape
        q, k, v = rotated_qkv(self.qkv(x).view(B, T, 3, self.n_heads, self.head_dim), cos, sin)
        if cache is not None:
            k, v = cache.append(k, v)  # (B, H, S, Dh)
        if mask is None and cache is not None and T > 1:  # cached decoding: query t sits at S - T + t
            S = k.size(2)
            mask = torch.ones(T, S, dtype=torch.bool, device=x.device).tril(S - T)
        # no mask: causal without a cache; with one, a single query sees every cached key
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None and cache is None)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))  # (B, T, C)

    def window_forward(self, x, cos, sin, mask, carry, chunk: int, back: int):
        """Sliding-window attention over S = T/Q whole chunks (window_layout), continuing `carry`: k
        (rotated) and v (B, back*Q, H, Dh) of the chunks before x. mask (S or B*S, 1, Q, K) from
        chunk_window_mask; cos, sin (T, 1, Dh) window_tables of x's positions. Returns the output (B, T, C)
        and the next carry."""
        B, T, C = x.shape
        H, Dh, S = self.n_heads, self.head_dim, T // chunk
        qkv = self.qkv(x).view(B, T, 3, H, Dh)
        qk = window_rotate(qkv[:, :, :2], cos.unsqueeze(1), sin.unsqueeze(1))  # (B, T, 2, H, Dh)
        k = torch.cat([carry[0], qk[:, :, 1]], dim=1)  # (B, (back+S)*Q, H, Dh)
        v = torch.cat([carry[1], qkv[:, :, 2]], dim=1)
        keys, vals = window_keys(k, v, S, chunk, back)  # (B*S, H, K, Dh)
        q = qk[:, :, 0].reshape(B * S, chunk, H, Dh).transpose(1, 2)  # (B*S, H, Q, Dh)
        y = F.scaled_dot_product_attention(q, keys, vals, attn_mask=mask)  # (B*S, H, Q, Dh)
        y = y.transpose(1, 2).reshape(B, T, C)
        return self.proj(y), (k[:, S * chunk:], v[:, S * chunk:])

    def window_step(self, x, cos, sin, mask_row, ring, r: int, chunk: int, back: int):
        """One query at row r of the newest chunk (x (1, R, C): row 0 real, the rest padding so that the
        matmuls take the same path as window_forward's); ring holds k (rotated) and v (1, K, H, Dh) of the
        chunks back..0 and receives this position's. cos, sin (1, 1, Dh) of its position; mask_row
        (1, 1, 1, K). Returns (1, R, C); row 0 is the output."""
        _, R, C = x.shape
        H, Dh = self.n_heads, self.head_dim
        qkv = self.qkv(x).view(1, R, 3, H, Dh)
        qk = window_rotate(qkv[:, :, :2], cos.unsqueeze(1), sin.unsqueeze(1))  # (1, R, 2, H, Dh)
        ring[0][:, back * chunk + r] = qk[:, 0, 1]
        ring[1][:, back * chunk + r] = qkv[:, 0, 2]
        keys, vals = window_keys(ring[0], ring[1], 1, chunk, back)  # (1, H, K, Dh)
        y = F.scaled_dot_product_attention(qk[:, :, 0].transpose(1, 2), keys, vals, attn_mask=mask_row)
        return self.proj(y.transpose(1, 2).reshape(1, R, C))  # (1, R, C)


class MLP(nn.Module):
    """SwiGLU feed-forward (Shazeer 2020)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.up = nn.Linear(dim, 2 * hidden, bias=False)
        self.down = nn.Linear(hidden, dim, bias=False)

    def forward(self, x):
        h = self.down.in_features
        if torch.is_grad_enabled():  # two matmuls on the weight halves: contiguous outputs, no strided chunk
            a, b = F.linear(x, self.up.weight[:h]), F.linear(x, self.up.weight[h:])
            return _SwiGLUDownFn.apply(a, b, self.down.weight)
        # inference (one generated byte): one matmul, one call less
        a, b = F.linear(x, self.up.weight).split(h, dim=-1)
        return self.down(F.silu(a) * b)


class _SwiGLUDownFn(torch.autograd.Function):
    """down(silu(a) * b), the same bits, keeping a and b for the backward and recomputing silu(a) * b
    there: two (.., hidden) tensors less per MLP until the backward than autograd keeps."""

    @staticmethod
    def forward(ctx, a, b, weight):
        ctx.save_for_backward(a, b, weight)
        return F.linear(F.silu(a) * b, weight.to(a.dtype))

    @staticmethod
    def backward(ctx, g):
        a, b, weight = ctx.saved_tensors
        s = F.silu(a)
        gw = (g.flatten(0, -2).t() @ (s * b).flatten(0, -2)).to(weight.dtype)  # (C, hidden)
        gh = g @ weight.to(g.dtype)  # (.., hidden)
        return torch.ops.aten.silu_backward(gh * b, a), gh * s, gw


def mlp_hidden(dim: int, mult: float = 8 / 3, multiple_of: int = 32) -> int:
    """SwiGLU hidden size with about the parameters of a 4x GELU MLP, rounded for fast matmuls."""
    return multiple_of * math.ceil(int(mult * dim) / multiple_of)


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, dim: int, n_heads: int, hidden: int | None = None):
        super().__init__()
        self.attn_norm = RMSNorm(dim)
        self.attn = Attention(dim, n_heads)
        self.mlp_norm = RMSNorm(dim)
        self.mlp = MLP(dim, hidden or mlp_hidden(dim))

    def forward(self, x, cos, sin, mask=None, cache: KVCache | None = None):
        x = x + self.attn(self.attn_norm(x), cos, sin, mask=mask, cache=cache)
        return x + self.mlp(self.mlp_norm(x))

    def window_forward(self, x, cos, sin, mask, carry, chunk: int, back: int):
        """Block.forward with sliding-window attention (Attention.window_forward); returns x, next carry."""
        a, carry = self.attn.window_forward(self.attn_norm(x), cos, sin, mask, carry, chunk, back)
        x = x + a
        return x + self.mlp(self.mlp_norm(x)), carry

    def window_step(self, x, cos, sin, mask_row, ring, r: int, chunk: int, back: int):
        """Block.forward of one position with sliding-window attention (Attention.window_step)."""
        x = x + self.attn.window_step(self.attn_norm(x), cos, sin, mask_row, ring, r, chunk, back)
        return x + self.mlp(self.mlp_norm(x))


def run_blocks(blocks, x, cos, sin, mask=None, caches: list[KVCache] | None = None):
    """x (B, T, C) through a stack of blocks; with caches (one per block) the T positions follow the cache."""
    for i, block in enumerate(blocks):
        x = block(x, cos, sin, mask=mask, cache=caches[i] if caches else None)
    return x


def init_weights(module: nn.Module, std: float = 0.02):
    """GPT-2 style init: normal(0, std) for linear and embedding weights, zero biases."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, mean=0.0, std=std)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)


def scale_residual_init(blocks, n_layers: int, std: float = 0.02):
    """GPT-2: residual output projections start smaller the deeper the stack."""
    for block in blocks:
        nn.init.normal_(block.attn.proj.weight, std=std / math.sqrt(2 * n_layers))
        nn.init.normal_(block.mlp.down.weight, std=std / math.sqrt(2 * n_layers))


def block_flops_per_token(dim: int, hidden: int, context: float) -> float:
    """Forward FLOPs of one Block for one token attending to `context` keys (2 FLOPs per multiply-add)."""
    matmul = 2 * (3 * dim * dim + dim * dim + 3 * dim * hidden)  # qkv, proj, SwiGLU up (2x) and down
    return matmul + 2 * 2 * dim * context  # + the q.k scores and the weighted sum of values


def lm_flops_per_token(dim: int, n_layers: int, vocab_size: int, seq_len: int) -> float:
    """Forward FLOPs per token of a CausalLM: its blocks at mean causal context, plus the vocab head."""
    blocks = n_layers * block_flops_per_token(dim, mlp_hidden(dim), causal_context(seq_len))
    return blocks + 2 * dim * vocab_size  # + the head


def causal_context(seq_len: int, window: int | None = None) -> float:
    """Mean number of keys a causal query sees over a sequence of seq_len (optionally windowed)."""
    if window is None or window >= seq_len:
        return (seq_len + 1) / 2
    # first `window` queries see 1..window keys, the rest see exactly `window`
    return (window * (window + 1) / 2 + (seq_len - window) * window) / seq_len


def count_params(module: nn.Module, exclude: tuple[str, ...] = ()) -> int:
    """Parameters of `module`, leaving out those whose name contains any string of `exclude`."""
    return sum(p.numel() for n, p in module.named_parameters() if not any(e in n for e in exclude))


# ----------------------------------------------------------------------------------------------------
# Configs carried by models and checkpoints


class CarriesConfig:
    """Mixin for nn.Modules whose config rides in their state dict (`_extra_state`): a bare state dict
    loads with model.load_state_dict, and a checkpoint knows how to rebuild its model. Subclasses set
    `kind` and `arch_fields` (config fields that shape the weights: a checkpoint disagreeing is refused)."""

    kind: str = ""
    arch_fields: tuple[str, ...] = ()

    def get_extra_state(self):
        return {"kind": self.kind, "config": dataclasses.asdict(self.config)}

    def set_extra_state(self, state):
        if not isinstance(state, dict) or "kind" not in state:
            raise ValueError("state dict carries no model description (_extra_state)")
        if state["kind"] != self.kind:
            raise ValueError(f"holds a '{state['kind']}' model, not a '{self.kind}' model")
        saved = state.get("config", {})
        mine = dataclasses.asdict(self.config)
        diff = [f"{k}={saved.get(k)!r} (model has {mine[k]!r})"
                for k in self.arch_fields if saved.get(k) != mine[k]]
        if diff:
            raise ValueError("was saved with another config: " + ", ".join(diff))


def config_from_dict(cls, d: dict, **overrides):
    """Build dataclass `cls` from a dict; unknown keys are an error, never silently dropped."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names) + sorted(set(overrides) - names)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} keys: {', '.join(unknown)}")
    return cls(**{**d, **overrides})


def add_config_args(parser, cls, skip: tuple[str, ...] = (), defaults: dict | None = None,
                    aliases: dict[str, tuple[str, ...]] | None = None):
    """One --flag per field of dataclass `cls`. A flag that is not given leaves no attribute on the parsed
    args (config_overrides skips it), so the config keeps its own value, or the script's `defaults` (shown
    in --help). Fields that may be None take "none"; tuple fields get no flag. `aliases`: a field's old
    spellings, left out of --help."""
    defaults, aliases, comments = defaults or {}, aliases or {}, field_comments(cls)
    for f in dataclasses.fields(cls):
        default = defaults.get(f.name, f.default)
        kind = _flag_type(f, default)
        if f.name in skip or kind is None:
            continue
        shown = "" if default is dataclasses.MISSING else f" (default: {default})"
        metavar = "BOOL" if kind is bool else f.name.upper()
        parse = _parse_bool if kind is bool else _or_none(kind, f)
        kw = dict(dest=f.name, type=parse, default=argparse.SUPPRESS, metavar=metavar)
        about = comments.get(f.name, f"{cls.__name__}.{f.name}").replace("%", "%%")
        parser.add_argument(f"--{f.name}", help=about + shown, **kw)
        for old in aliases.get(f.name, ()):
            parser.add_argument(f"--{old}", help=argparse.SUPPRESS, **kw)


def config_overrides(args, cls) -> dict:
    """The fields of dataclass `cls` that were given on the command line (see add_config_args)."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}


def field_comments(cls) -> dict[str, str]:
    """The comment after each field of a dataclass and its bases (`name: type = default  # comment`)."""
    out = {}
    for klass in reversed(cls.__mro__):
        try:
            source = inspect.getsource(klass)
        except (OSError, TypeError):  # built in, or defined where no source is kept
            continue
        out.update(re.findall(r"^\s+(\w+): [^#\n]+#\s*(.+)$", source, flags=re.MULTILINE))
    return out


def _flag_type(f, default):
    """int, float, str or bool for a field's flag; None for fields without one (tuples, dicts)."""
    if default is not None and default is not dataclasses.MISSING:
        return type(default) if type(default) in (int, float, str, bool) else None
    name = str(f.type).split("|")[0].strip()  # "float | None" -> float (annotations are strings here)
    return {"int": int, "float": float, "str": str, "bool": bool}.get(name)


def _or_none(kind, f):
    def parse(s: str):
        if s.lower() == "none" and "None" in str(f.type):
            return None
        return kind(s)

    parse.__name__ = kind.__name__  # argparse names the type in its error messages
    return parse


def _parse_bool(s: str) -> bool:
    if s.lower() in ("1", "true", "yes", "on"):
        return True
    if s.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"not a boolean: {s}")


class CausalLM(CarriesConfig, nn.Module):
    """A causal transformer LM over ids 0..vocab_size-1 (bytes or tokens): the entropy model and baselines.
    logits[:, t] is the distribution of idx[:, t] given idx[:, :t]: the input at position t is the
    embedding of id t-1, and position 0 reads a learned start vector, so no id is reserved for "start"
    and the first id of a document is predicted too. Targets are therefore the inputs themselves (with
    -100 where padded). `config` needs d_model, n_heads, n_layers, max_seq_len and vocab_size.
    """

    def __init__(self, config):
        super().__init__()
        self.config = config
        C, V = config.d_model, config.vocab_size
        self.embed = nn.Embedding(V, C)
        self.start = nn.Parameter(torch.zeros(C))
        # sliding window (config.sliding_window): a position sees itself and the max_seq_len-2 before it,
        # so byte i is predicted from the min(i, max_seq_len-1) bytes before it (the start vector while i
        # < max_seq_len-1), whatever the length of the row or document
        self.window = config.max_seq_len - 1 if getattr(config, "sliding_window", False) else None
        self.chunk, self.back = window_layout(self.window) if self.window else (0, 0)
        self.rotary = Rotary(C // config.n_heads, config.max_seq_len)
        self.blocks = nn.ModuleList(Block(C, config.n_heads) for _ in range(config.n_layers))
        self.norm = RMSNorm(C)
        self.head = nn.Linear(C, V, bias=False)
        init_weights(self)
        nn.init.normal_(self.start, std=0.02)
        scale_residual_init(self.blocks, config.n_layers)

    def _start(self, batch: int):
        return self.start.view(1, 1, -1).expand(batch, 1, -1).to(self.embed.weight.dtype)  # (B, 1, C)

    def forward(self, idx, targets=None):
        B, T = idx.shape
        x = torch.cat([self._start(B), self.embed(idx[:, :-1])], dim=1)  # (B, T, C): shifted right
        if self.window and T > self.window:  # every row starts a document; whole chunks, padding dropped
            pad = -T % self.chunk
            x = F.pad(x, (0, 0, 0, pad))  # (B, T + pad, C)
            S = x.size(1) // self.chunk
            j = torch.arange(self.back + 1, device=x.device)
            ok = torch.arange(S, device=x.device).view(S, 1) - self.back + j >= 0  # (S, back+1): chunks >= 0
            x = self.window_blocks(x, ok)[0][:, :T]
        else:  # no row longer than the window: plain causal attention is the window (a faster kernel)
            x = run_blocks(self.blocks, x, *self.rotary(0, T))
        logits = self.head(self.norm(x))  # (B, T, V)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1),
                                   ignore_index=-100)
        return logits, loss

    def window_blocks(self, x, chunk_ok, carries=None, positions=None):
        """The blocks with sliding-window attention over x (B, T, C), T whole chunks of self.chunk, after
        the chunks in `carries` (per block: k (rotated), v (B, back*Q, H, Dh); None = nothing before x).
        chunk_ok (S, back+1) bool: which key chunks each query chunk may read (False before its
        document's start). positions (T,) ints: each position's offset from its document's start (None:
        0..T-1). Returns the block outputs (B, T, C) and the carries for the next chunks."""
        B, T, _ = x.shape
        H = self.config.n_heads
        if positions is None:
            positions = torch.arange(T, device=x.device)
        cos, sin = window_tables(positions, self.rotary.inv_freq)
        mask = chunk_window_mask(self.window, self.chunk, self.back, chunk_ok, x.dtype)  # (S, 1, Q, K)
        if B > 1:  # query chunks are batched row-major: (B*S, H, Q, Dh)
            mask = mask.repeat(B, 1, 1, 1)
        if carries is None:
            z = x.new_zeros(B, self.back * self.chunk, H, self.config.d_model // H)
            carries = [(z, z)] * len(self.blocks)
        out = []
        for block, carry in zip(self.blocks, carries):
            x, carry = block.window_forward(x, cos, sin, mask, carry, self.chunk, self.back)
            out.append(carry)
        return x, out

    def new_rings(self) -> list[list[torch.Tensor]]:
        """Empty rolling KV caches of a sliding-window stream (window_step): per block, k (rotated) and v
        (1, K, H, Dh) of the back+1 chunks that hold a position's window."""
        p, H = self.head.weight, self.config.n_heads
        shape = (1, (self.back + 1) * self.chunk, H, self.config.d_model // H)
        return [[p.new_zeros(shape), p.new_zeros(shape)] for _ in self.blocks]

    def window_step(self, h, rings, pos: int):
        """Logits (1, R, V) of position `pos` of a document from its input h (1, R, C) (row 0; rows 1..
        are padding, so the matmuls see as many rows as in window_blocks and give the same bits); rings
        (new_rings) hold positions pos-back*Q-r..pos-1 and are rolled here when pos starts a chunk."""
        b, r = divmod(pos, self.chunk)
        if r == 0 and b > 0:
            for ring in rings:
                for i, a in enumerate(ring):
                    ring[i] = torch.cat([a[:, self.chunk:], torch.zeros_like(a[:, :self.chunk])], dim=1)
        cos, sin = window_tables(torch.tensor([pos], device=h.device), self.rotary.inv_freq)
        ok = (torch.arange(self.back + 1, device=h.device) >= self.back - b).view(1, -1)  # key chunks >= 0
        mask_row = chunk_window_mask(self.window, self.chunk, self.back, ok, h.dtype)[:, :, r:r + 1]
        for block, ring in zip(self.blocks, rings):
            h = block.window_step(h, cos, sin, mask_row, ring, r, self.chunk, self.back)
        return self.head(self.norm(h))  # (1, R, V)

    def new_caches(self, batch: int, max_len: int) -> list[KVCache]:
        """Empty KV caches for incremental decoding with step()."""
        p = self.head.weight
        hd = self.config.d_model // self.config.n_heads
        return [KVCache(batch, self.config.n_heads, hd, max_len, p.device, p.dtype) for _ in self.blocks]

    def step(self, x, caches: list[KVCache]):
        """Feed x (B, t) ids, or None for the start vector; logits (B, t, V): row t predicts the id AFTER
        input t (the start vector's, the first id)."""
        h = self._start(caches[0].k.size(0)) if x is None else self.embed(x)  # (B, t, C)
        h = run_blocks(self.blocks, h, *self.rotary(caches[0].len, h.size(1)), caches=caches)
        return self.head(self.norm(h))  # (B, t, V)

    def num_params(self) -> int:
        return count_params(self)


# ----------------------------------------------------------------------------------------------------
# Device, files, reports


def pick_device(name: str | None = None) -> torch.device:
    """The device to run on: `name` if given, else this process's GPU (torchrun's LOCAL_RANK), else CPU."""
    if name:
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def atomic_write(path: str, write_fn):
    """Call write_fn(tmp_path), fsync, then rename over `path`: a crash or power cut mid-write leaves the
    old file intact. The new file gets the permissions the umask gives any new file (not mkstemp's 0600);
    the temporary file is removed on failure, and ones left by killed runs are cleared first."""
    path = os.path.abspath(path)
    folder, base = os.path.split(path)
    os.makedirs(folder, exist_ok=True)
    remove_stale_temporaries(path)
    # OUT.<pid>.<random>.tmp: the pid tells a later run whether the writer is still alive
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f"{base}.{os.getpid()}.", suffix=".tmp")
    os.close(fd)
    try:
        write_fn(tmp)
        os.chmod(tmp, 0o666 & ~current_umask())
        fsync(tmp)  # the bytes reach the disk before the name does
        os.replace(tmp, path)
        with suppress(OSError):  # makes the rename durable; folders cannot be opened on Windows
            fsync(folder)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def current_umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask


def fsync(path: str):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


STALE_TMP_S = 3600  # a temporary file of no known writer is a leftover once this old


def remove_stale_temporaries(path: str):
    """Delete `path`'s temporary files (PATH.<pid>.<random>.tmp) whose writer is gone: a killed run's."""
    folder, base = os.path.split(os.path.abspath(path))
    pattern = re.compile(re.escape(base) + r"\.(?:(\d+)\.)?[A-Za-z0-9_]+\.tmp$")
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for m in filter(None, map(pattern.match, names)):
        tmp = os.path.join(folder, m.group(0))
        with suppress(OSError):
            if m.group(1) is not None:
                stale = not process_alive(int(m.group(1)))
            else:  # written before temporaries carried a pid
                stale = time.time() - os.path.getmtime(tmp) > STALE_TMP_S
            if stale:
                os.remove(tmp)


def process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True  # this process may be writing it (another thread)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else (PermissionError)
        pass
    return True


def check_batch_size(batch_size, name: str = "batch_size"):
    """Batch sizes are whole numbers >= 1 (a negative one would silently skip every batch)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {batch_size!r}")


def write_report(path: str | None, report: dict):
    """Write a script's figures as JSON (the --report contract in DESIGN.md)."""
    if not path:
        return

    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(report, f, indent=2, default=_json_default)
            f.write("\n")

    atomic_write(path, write)


def _json_default(x):
    if isinstance(x, (np.integer, np.floating, np.ndarray)):
        return x.tolist()  # a Python int or float, or lists of them
    raise TypeError(f"cannot write {type(x).__name__} to a report")
