"""Shared pieces: transformer layers, the device/dtype block, the LR schedule, torchrun setup, reports.

Every model in the repository (the entropy byte LM, the baselines, the BLT's three stacks) is built from
the blocks below, so a fix to attention or the MLP lands everywhere at once.

Letters used in shape comments:
    B batch, T sequence length (bytes or tokens), H heads, Dh head dim, C model width, S cached length.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import tempfile
from contextlib import nullcontext
from dataclasses import dataclass

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
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (xf * self.weight.float()).type_as(x)


class Rotary(nn.Module):
    """Rotary position embedding (Su et al. 2021): cos/sin tables precomputed for max_len positions.

    forward(start, length) slices positions start..start+length-1. Both are Python ints (a KV cache's
    length), so no forward pass reads a tensor back to the host; a generation that runs past max_len
    doubles the tables (a Python-side check, also sync-free).
    """

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
    out = torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)
    return out.type_as(x)


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


class Attention(nn.Module):
    """Multi-head self-attention with rotary positions through scaled_dot_product_attention.

    `mask` is None (plain causal), or a boolean mask broadcastable to (B, H, T, S) where True = may attend.
    With a KVCache the new keys are appended and the queries attend to everything cached (plus `mask`).
    """

    def __init__(self, dim: int, n_heads: int):
        super().__init__()
        assert dim % n_heads == 0, f"width {dim} is not divisible by {n_heads} heads"
        self.n_heads, self.head_dim = n_heads, dim // n_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim, bias=False)

    def forward(self, x, cos, sin, mask=None, cache: KVCache | None = None):
        B, T, C = x.shape
        qkv = self.qkv(x).view(B, T, 3, self.n_heads, self.head_dim)  # (B, T, 3, H, Dh)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # 3x (B, H, T, Dh)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if cache is not None:
            k, v = cache.append(k, v)  # (B, H, S, Dh)
        if mask is None and (cache is None or T == 1):  # causal; one cached query sees every key
            y = F.scaled_dot_product_attention(q, k, v, is_causal=cache is None)
        elif mask is None:  # cached decoding: query t sits at absolute position S - T + t
            S = k.size(2)
            mask = torch.ones(T, S, dtype=torch.bool, device=x.device).tril(S - T)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))  # (B, T, C)


class MLP(nn.Module):
    """SwiGLU feed-forward (Shazeer 2020)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.up = nn.Linear(dim, 2 * hidden, bias=False)
        self.down = nn.Linear(hidden, dim, bias=False)

    def forward(self, x):
        h = self.down.in_features  # two matmuls on the weight's halves: contiguous outputs, no strided chunk
        a, b = F.linear(x, self.up.weight[:h]), F.linear(x, self.up.weight[h:])
        return self.down(F.silu(a) * b)


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
    attention = 2 * 2 * dim * context  # q.k scores and the weighted sum of values
    return matmul + attention


def lm_flops_per_token(dim: int, n_layers: int, vocab_size: int, seq_len: int) -> float:
    """Forward FLOPs per token of a CausalLM: its blocks at mean causal context, plus the vocab head."""
    return n_layers * block_flops_per_token(dim, mlp_hidden(dim), causal_context(seq_len)) + 2 * dim * vocab_size


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
    """Mixin for nn.Modules whose config rides in their state dict (as `_extra_state`).

    So `model.load_state_dict(torch.load(path))` works on a bare state dict and a checkpoint knows how to
    rebuild its model. Subclasses set `kind` (a name) and `arch_fields` (config fields that change the
    weights: a checkpoint disagreeing on one of them is refused with a readable message).
    """

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
        diff = [f"{k}={saved.get(k)!r} (model has {mine[k]!r})" for k in self.arch_fields if saved.get(k) != mine[k]]
        if diff:
            raise ValueError("was saved with another config: " + ", ".join(diff))


def config_from_dict(cls, d: dict, **overrides):
    """Build dataclass `cls` from a dict; unknown keys are an error, never silently dropped."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names) + sorted(set(overrides) - names)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} keys: {', '.join(unknown)}")
    return cls(**{**d, **overrides})


def add_config_args(parser, cls, skip: tuple[str, ...] = ()):
    """Add one --flag per dataclass field (default None = keep the config's value)."""
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        kind = type(f.default) if f.default is not dataclasses.MISSING else str
        if kind is bool:
            parser.add_argument(f"--{f.name}", type=_parse_bool, default=None, metavar="BOOL")
        elif kind in (int, float, str):
            parser.add_argument(f"--{f.name}", type=kind, default=None)


def preset_config(cls, presets: dict, preset: str, quick_demo: bool = False, **overrides):
    """Dataclass `cls` from a named preset, then presets["quick"] when quick_demo, then explicit overrides."""
    if preset not in presets:
        raise ValueError(f"unknown preset '{preset}' (choose from {', '.join(presets)})")
    fields = dict(presets[preset])
    if quick_demo:
        fields.update(presets["quick"])
    return config_from_dict(cls, fields, **overrides)


def add_run_args(parser, presets: dict, out: str, quick_help: str):
    """The flags every LM training script shares (train, resume, evaluate, report, device)."""
    parser.add_argument("--data", default="builtin", help="builtin | file | folder | hf:NAME[:CONFIG]")
    parser.add_argument("--preset", default="cpu", choices=sorted(presets))
    parser.add_argument("--quick_demo", action="store_true", help=quick_help)
    parser.add_argument("--out", default=out, help="checkpoint to write")
    parser.add_argument("--resume", default=None, help="checkpoint to continue training from")
    parser.add_argument("--eval", action="store_true", help="only evaluate --checkpoint on every byte of --data")
    parser.add_argument("--checkpoint", default=None, help="model to evaluate with --eval")
    parser.add_argument("--report", default=None, help="write the figures as JSON here")
    parser.add_argument("--device", default=None, help="cpu | cuda | cuda:1 ... (default: cuda if present)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model (GPU)")


def config_overrides(args, cls) -> dict:
    """The dataclass fields that were given on the command line."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if getattr(args, f.name, None) is not None}


def _parse_bool(s: str) -> bool:
    if s.lower() in ("1", "true", "yes", "on"):
        return True
    if s.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"not a boolean: {s}")


@dataclass
class LMTrainingFields:
    """The data and training fields that CausalLM configs share (EntropyConfig, TemplateConfig).

    Subclasses add the model fields (d_model, n_heads, n_layers, max_seq_len, vocab_size) and call
    check_lm_sizes() from their __post_init__.
    """

    # data
    max_bytes: int = 2_000_000  # corpus cap in bytes, before the train/val split
    # training
    batch_size: int = 32  # windows per optimizer step (global, over all processes)
    max_steps: int = 1500  # optimizer steps
    lr: float = 3e-3  # peak learning rate
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    warmup_steps: int = 100  # linear warmup steps
    weight_decay: float = 0.1  # AdamW decay on matrices
    grad_clip: float = 1.0  # max global gradient norm (0 = off)
    eval_interval: int = 500  # steps between held-out evaluations (0 = only at the end)
    eval_max_bytes: int = 200_000  # held-out bytes scored at intermediate evaluations (the final one scores all)
    ckpt_interval: int = 500  # steps between checkpoints (0 = only at the end)
    seed: int = 1337  # init and data order

    def check_lm_sizes(self):
        if self.d_model % self.n_heads or (self.d_model // self.n_heads) % 2:
            raise ValueError(f"d_model {self.d_model} must split into {self.n_heads} heads of even size")
        if min(self.d_model, self.n_layers, self.max_seq_len, self.batch_size, self.max_steps) < 1:
            raise ValueError("sizes and step counts must be positive")


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
        x = run_blocks(self.blocks, x, *self.rotary(0, T))
        logits = self.head(self.norm(x))  # (B, T, V)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-100)
        return logits, loss

    def new_caches(self, batch: int, max_len: int) -> list[KVCache]:
        """Empty KV caches for incremental decoding with step()."""
        p = self.head.weight
        hd = self.config.d_model // self.config.n_heads
        return [KVCache(batch, self.config.n_heads, hd, max_len, p.device, p.dtype) for _ in self.blocks]

    def step(self, x, caches: list[KVCache]):
        """Feed inputs, get logits (B, t, V) where row t predicts the id AFTER input t.

        x is (B, t) ids, or None to feed the start vector (whose logits predict the first id).
        """
        h = self._start(caches[0].k.size(0)) if x is None else self.embed(x)  # (B, t, C)
        h = run_blocks(self.blocks, h, *self.rotary(caches[0].len, h.size(1)), caches=caches)
        return self.head(self.norm(h))  # (B, t, V)

    def num_params(self) -> int:
        return count_params(self)


# ----------------------------------------------------------------------------------------------------
# Device, precision, optimisation, distributed


def pick_device(name: str | None = None) -> torch.device:
    """The device to run on: `name` if given, else this process's GPU when present (torchrun's LOCAL_RANK), else CPU."""
    if name:
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def autocast(device: torch.device):
    """bf16 autocast on CUDA; plain fp32 elsewhere (CPU bf16 is slower on most laptops)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def seed_everything(seed: int):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def lr_at(step: int, max_steps: int, lr: float, warmup_steps: int, min_lr_ratio: float = 0.1) -> float:
    """Linear warmup, then cosine decay to min_lr_ratio * lr at max_steps."""
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, max_steps - warmup_steps))
    return lr * (min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def make_optimizer(model: nn.Module, lr: float, weight_decay: float, device: torch.device):
    """AdamW with decay on matrices only (not norms, biases or embeddings); the fused kernel (CPU and CUDA)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.dim() >= 2 and "emb" not in name else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), fused=device.type in ("cuda", "cpu"))


@dataclass
class Dist:
    """Where this process sits in a torchrun job (a single process is rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed(device_name: str | None = None) -> tuple[Dist, torch.device]:
    """Join the torchrun process group if launched by torchrun (nccl on CUDA, gloo on CPU)."""
    if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Dist(), pick_device(device_name)
    import torch.distributed as dist

    d = Dist(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0)))
    device = pick_device(device_name)
    if device.type == "cuda":
        device = torch.device("cuda", d.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return d, device


def cleanup_distributed():
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def train_loop(model, optimizer, batch_fn, cfg, *, device, dist: Dist, start_step: int = 0,
               bytes_per_step: int, evaluate=None, save=None, desc: str = "train", postfix=None,
               bpb_per_loss: float = 1 / math.log(2)) -> dict:
    """The one training loop of the repository (entropy LM, baselines and BLT all use it).

    batch_fn(step) -> (inputs: tuple, targets) for this rank, a pure function of the step, so a resumed
    run sees exactly the batches an uninterrupted one would. `cfg` provides max_steps, lr, warmup_steps,
    min_lr_ratio, grad_clip and eval_interval. evaluate(step) -> dict and save(step) run on rank 0 only;
    postfix(step) -> dict adds fields to the progress bar (whose loss is smoothed; the returned `loss` is
    the last batch's, exactly reproducible on resume); bpb_per_loss converts the loss to bits per byte
    for the bar (1/ln 2 for byte models, tokens-per-byte/ln 2 for token models). Returns the last loss, the eval history and
    the training throughput in bytes/s (all ranks together).
    """
    import time

    from tqdm import tqdm

    history, loss_val, t0, timed_bytes, paused, smooth = [], float("nan"), None, 0, 0.0, None
    bar = tqdm(range(start_step, cfg.max_steps), desc=desc, disable=not dist.is_main, dynamic_ncols=True,
               initial=start_step, total=cfg.max_steps)
    model.train()
    for step in bar:
        for g in optimizer.param_groups:
            g["lr"] = lr_at(step, cfg.max_steps, cfg.lr, cfg.warmup_steps, cfg.min_lr_ratio)
        inputs, targets = batch_fn(step)
        with autocast(device):
            _, loss = model(*inputs, targets=targets)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss became {loss.item()} at step {step}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        loss_val = loss.detach()
        if dist.enabled:  # log the global-batch loss, not one shard's
            import torch.distributed as tdist

            tdist.all_reduce(loss_val)
            loss_val = loss_val / dist.world_size
        loss_val = loss_val.item()
        if t0 is None:  # the first step pays for warm-up allocations; time from the second on
            t0 = time.perf_counter()
        else:
            timed_bytes += bytes_per_step * dist.world_size
        smooth = loss_val if smooth is None else 0.95 * smooth + 0.05 * loss_val  # one batch is noisy
        shown = {"loss": f"{smooth:.3f}", "bpb": f"{smooth * bpb_per_loss:.3f}"}
        if timed_bytes:
            shown["B/s"] = f"{timed_bytes / (time.perf_counter() - t0 - paused):.0f}"
        if postfix is not None:
            shown.update(postfix(step))
        bar.set_postfix(shown, refresh=False)
        last = step + 1 == cfg.max_steps
        t_pause = time.perf_counter()  # evaluation and saving are not training: keep them out of bytes/s
        if dist.is_main and evaluate is not None and (last or (cfg.eval_interval and (step + 1) % cfg.eval_interval == 0)):
            result = {"step": step + 1, **evaluate(step + 1)}
            history.append(result)
            bar.write(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in result.items()))
            model.train()
        if dist.is_main and save is not None and (last or (cfg.ckpt_interval and (step + 1) % cfg.ckpt_interval == 0)):
            save(step + 1)
        paused += time.perf_counter() - t_pause
    bar.close()
    elapsed = time.perf_counter() - t0 - paused if t0 is not None else 0.0
    return {"loss": loss_val, "evals": history, "bytes_per_s": timed_bytes / elapsed if elapsed > 0 else float("nan")}


# training-config fields a resumed run must share with the run it continues
RESUME_KEYS = ("max_steps", "batch_size", "lr", "min_lr_ratio", "warmup_steps", "weight_decay", "grad_clip", "seed",
               "max_seq_len", "seq_len")


def train_model(model, cfg, data, out: str, *, device, dist: Dist, resume: str | None = None, compile: bool = False,
                evaluate=None, meta: dict | None = None, desc: str = "train", bytes_per_step: float | None = None,
                bpb_per_loss: float = 1 / math.log(2), postfix=None) -> dict:
    """The training driver the scripts share: AdamW, --resume, DDP, torch.compile, checkpoints, train_loop.

    `model` is built and on `device`; `data.batch(step, batch_size, rank, world_size)` returns
    (*inputs, targets) on the CPU (byte_data.ByteWindows does). Checkpoints go to `out` (atomically)
    with the optimizer state under `train` and `meta` as run facts. bytes_per_step is this rank's bytes
    per step (default: its rows x cfg.max_seq_len, right for byte models). Returns train_loop's dict.
    """
    from torch.nn.parallel import DistributedDataParallel as DDP

    from save_entropy_model import load_into, save_checkpoint

    optimizer = make_optimizer(model, cfg.lr, cfg.weight_decay, device)
    start_step = 0
    run_config = dataclasses.asdict(cfg)
    if resume:
        extra = load_into(model, resume)
        if "train" not in extra:
            raise ValueError(f"{resume}: holds no training state to resume from")
        saved = extra["train"].get("config", {})
        diff = [f"{k}={saved[k]!r} (now {run_config[k]!r})" for k in RESUME_KEYS if k in saved and saved[k] != run_config.get(k)]
        if diff:  # another schedule or data order would not continue the same run
            raise ValueError(f"{resume}: was trained with other settings: {', '.join(diff)}")
        optimizer.load_state_dict(extra["train"]["optimizer"])
        start_step = extra["train"]["step"]
    trained = DDP(model) if dist.enabled else model
    if compile:
        trained = torch.compile(trained)

    def batch_fn(step):
        *inputs, targets = data.batch(step, cfg.batch_size, dist.rank, dist.world_size)
        return tuple(x.to(device) for x in inputs), targets.to(device)

    def save(step):
        save_checkpoint(model, out, train={"step": step, "optimizer": optimizer.state_dict(), "config": run_config},
                        meta=meta)

    if bytes_per_step is None:
        bytes_per_step = cfg.batch_size // dist.world_size * cfg.max_seq_len
    result = train_loop(trained, optimizer, batch_fn, cfg, device=device, dist=dist, start_step=start_step,
                        bytes_per_step=bytes_per_step, evaluate=evaluate, save=save, desc=desc,
                        bpb_per_loss=bpb_per_loss, postfix=postfix)
    if dist.enabled:  # no rank leaves before rank 0 has written the checkpoint others may read next
        import torch.distributed as tdist

        tdist.barrier()
    return result


# ----------------------------------------------------------------------------------------------------
# Files


def atomic_write(path: str, write_fn):
    """Call write_fn(tmp_path) then rename over `path`: a crash mid-write leaves the old file intact."""
    path = os.path.abspath(path)
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=os.path.basename(path) + ".", suffix=".tmp")
    os.close(fd)
    try:
        write_fn(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


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
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating,)):
        return float(x)
    if isinstance(x, np.ndarray):
        return x.tolist()
    raise TypeError(f"cannot write {type(x).__name__} to a report")
