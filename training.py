"""The one training loop of the repository (entropy LM, baselines, BLT), in the shape of nanoGPT's train.py.

A training script sets up, visibly and in this order, then calls train():

    dist, device = setup_distributed(device_name)           # torchrun? join its process group
    model = MyModel(config).to(device)
    optimizer = make_optimizer(model, config.lr, config.weight_decay, device)
    start = resume_from(path, model, optimizer, config) if path else 0   # exact resume
    trained = maybe_compile(distribute(model, dist), compile)
    result = train(trained, optimizer, data, config, device=device, dist=dist, out="m.pth", start_step=start)
    cleanup_distributed()

`data.batch(step, batch_size, rank, world_size)` returns (*inputs, targets) for this rank, a pure function
of the step (byte_data.ByteWindows, train_blt.PatchedWindows), so a resumed run and N processes see the
batches one uninterrupted process would. `config` holds the TrainFields.
"""
from __future__ import annotations

import dataclasses
import math
import os
import random
import shutil
import signal
import tempfile
import threading
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as tdist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_state_dict,
)
from torch.distributed.fsdp import FSDPModule, fully_shard
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from common import Block, atomic_write, config_from_dict, pick_device
from save_entropy_model import CheckpointError, load_checkpoint, load_into, save_checkpoint, unwrap

BITS_PER_NAT = 1 / math.log(2)
# training fields a resumed run must share with the run it continues (with every model field)
RESUME_KEYS = ("max_steps", "batch_size", "lr", "min_lr_ratio", "warmup_steps", "weight_decay", "grad_clip",
               "seed")


class TrainingError(ValueError):
    """A run that cannot go on (a non-finite loss, an empty or NaN evaluation); one line, no traceback."""


class Interrupted(TrainingError):
    """Ctrl-C: the run saved a resumable checkpoint and stopped."""


@dataclass
class TrainFields:
    """The data and training fields every training config shares (train() reads them), declared once here:
    EntropyConfig and TemplateConfig add their model fields and call check_lm_sizes() from __post_init__."""

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
    eval_max_bytes: int = 200_000  # held-out bytes scored at intermediate evaluations (the last scores all)
    ckpt_interval: int = 500  # steps between checkpoints (0 = only at the end)
    seed: int = 1337  # init and data order

    def __post_init__(self):  # configs that add fields call check_lm_sizes() from their own
        self.check_train_sizes()

    def check_train_sizes(self):
        for name in ("lr", "min_lr_ratio", "weight_decay", "grad_clip"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be a finite number, got {getattr(self, name)}")
        if min(self.batch_size, self.max_steps) < 1:
            raise ValueError(f"batch_size and max_steps must be positive, got batch_size={self.batch_size}, "
                             f"max_steps={self.max_steps}")
        for name in ("max_bytes", "eval_max_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("warmup_steps", "eval_interval", "ckpt_interval", "grad_clip", "weight_decay"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"min_lr_ratio must lie in [0, 1], got {self.min_lr_ratio}")

    def check_lm_sizes(self):
        self.check_train_sizes()
        if self.d_model % self.n_heads or (self.d_model // self.n_heads) % 2:
            raise ValueError(f"d_model {self.d_model} must split into {self.n_heads} heads of even size")
        if min(self.d_model, self.n_layers, self.max_seq_len) < 1:  # the step counts: check_train_sizes
            raise ValueError("sizes and step counts must be positive")


def train(model, optimizer, data, cfg, *, device, dist: Dist, out: str, start_step: int = 0, evaluate=None,
          meta: dict | None = None, bytes_per_step: float | None = None, bpb_per_loss: float = BITS_PER_NAT,
          desc: str = "train", history: dict | None = None) -> dict:
    """Train from start_step to cfg.max_steps; returns the last loss, the evaluations and bytes/s.

    evaluate(step) -> dict of figures runs on rank 0 every cfg.eval_interval steps and at the end; the
    checkpoint (model, optimizer, step, cfg; `meta` as run facts) is written atomically to `out` every
    cfg.ckpt_interval steps and at the end. bytes_per_step is this rank's (default: its rows x
    max_seq_len); bpb_per_loss turns the loss into bits per byte for the bar (tokens per byte / ln 2).
    `history` is what resume_run read from the checkpoint: a finished run returns its stored result.
    A non-finite loss or gradient stops the run (TrainingError naming the step; the last checkpoint stays
    as it was); Ctrl-C finishes the step, saves a resumable checkpoint and raises Interrupted."""
    history = history or {}
    if start_step >= cfg.max_steps:  # a finished run: its stored result, nothing to train
        if not history.get("evals") and evaluate:
            raise TrainingError(f"{out}: the run already finished at step {start_step} and stored no "
                                "evaluation; nothing to do")
        return {"loss": history.get("loss", float("nan")), "evals": history.get("evals", []),
                "bytes_per_s": history.get("bytes_per_s", float("nan")), "finished_before": True}
    bytes_per_step = bytes_per_step or cfg.batch_size // dist.world_size * cfg.max_seq_len
    evals, speed, smooth, loss_val = list(history.get("evals", [])), Speed(), None, float("nan")
    saved = history.get("step")  # the step of the last checkpoint written to `out`, if known
    bar = tqdm(range(start_step, cfg.max_steps), desc=desc, disable=not dist.is_main, dynamic_ncols=True,
               initial=start_step, total=cfg.max_steps)
    model.train()
    with StopOnSigint() as sigint:
        for step in bar:
            for group in optimizer.param_groups:  # schedule
                group["lr"] = lr_at(step, cfg.max_steps, cfg.lr, cfg.warmup_steps, cfg.min_lr_ratio)
            batch = data.batch(step, cfg.batch_size, dist.rank, dist.world_size)  # batch: this rank's rows
            *inputs, targets = (t.to(device) for t in batch)
            with autocast(device):
                _, loss = model(*inputs, targets=targets)  # forward
            if dist.enabled:  # rows may hold padding: weight each rank's mean by its share of the targets
                loss = loss * global_share(targets, dist)
            loss_val, stop = global_mean_and_any(loss.detach(), sigint.requested, dist)  # all ranks agree
            if not math.isfinite(loss_val):
                raise diverged("loss", loss_val, step, cfg, out, saved)
            if stop:
                save_on_interrupt(out, model, optimizer, step, cfg, meta, evals, dist)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # under DDP the gradients of all ranks are averaged here
            # the norm is measured even without clipping (max_norm inf clips nothing): an inf or NaN gradient
            # would turn every weight NaN at optimizer.step()
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip or math.inf)
            if not torch.isfinite(norm):
                raise diverged("gradient norm", float(norm), step, cfg, out, saved)
            optimizer.step()

            speed.tick(bytes_per_step * dist.world_size)
            smooth = loss_val if smooth is None else 0.95 * smooth + 0.05 * loss_val  # one batch is noisy
            bar.set_postfix(loss=f"{smooth:.3f}", bpb=f"{smooth * bpb_per_loss:.3f}", **speed.shown(),
                            refresh=False)  # log
            last = step + 1 == cfg.max_steps
            with speed.paused():  # evaluation and saving are not training: keep them out of bytes/s
                sharded = is_sharded(model)  # FSDP: every rank takes part in evaluating and saving
                if (dist.is_main or sharded) and evaluate and (last or every(cfg.eval_interval, step)):
                    with gathered(model):  # FSDP: whole weights on every rank while evaluating
                        evals.append({"step": step + 1, **checked(evaluate(step + 1), step + 1)})
                    bar.write(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                                       for k, v in evals[-1].items()))
                    model.train()
                if (dist.is_main or sharded) and (last or every(cfg.ckpt_interval, step)):
                    result = {"loss": loss_val, "evals": evals, "bytes_per_s": speed.rate}
                    save_run(out, model, optimizer, step + 1, cfg, meta, result)
                    saved = step + 1
    bar.close()
    if dist.enabled:  # no rank leaves before rank 0 has written the checkpoint the others may read next
        tdist.barrier()
    return {"loss": loss_val, "evals": evals, "bytes_per_s": speed.rate}


def checked(figures: dict, step: int) -> dict:
    """An evaluation's figures; a NaN or empty score is an error, never a result."""
    bpb, n = figures.get("val_bpb"), figures.get("val_bytes")
    if n == 0:
        raise TrainingError(f"step {step}: the held-out evaluation scored no bytes")
    if bpb is not None and not math.isfinite(bpb):
        raise TrainingError(f"step {step}: the held-out evaluation gave {bpb} bits per byte")
    return figures


def diverged(what: str, value: float, step: int, cfg, out: str, saved: int | None) -> TrainingError:
    kept = (f"the last good checkpoint, {out} (step {saved}), is kept" if saved
            else "no checkpoint was written")
    return TrainingError(f"training diverged: the {what} became {value} at step {step + 1}; try a lower "
                         f"--lr (now {cfg.lr:g}); {kept}")


def save_on_interrupt(out, model, optimizer, step: int, cfg, meta, evals, dist):
    """Ctrl-C arrived: `step` steps are done; save them (rank 0) and stop every rank."""
    if dist.is_main or is_sharded(model):  # FSDP: every rank writes its shard
        save_run(out, model, optimizer, step, cfg, meta, {"loss": float("nan"), "evals": evals})
    if dist.enabled:
        tdist.barrier()
    raise Interrupted(f"interrupted after step {step} of {cfg.max_steps}; saved {out}; continue with the "
                      "same command and --resume")


class StopOnSigint:
    """The first Ctrl-C asks the loop to stop at the next step (`requested`); a second one stops at once.
    Only the main thread can take signals; elsewhere (a notebook's worker thread) Ctrl-C acts as usual."""

    def __init__(self):
        self.requested, self.previous = False, None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        self.requested = True
        signal.signal(signal.SIGINT, self.previous or signal.default_int_handler)

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


def save_run(path: str, model, optimizer, step: int, cfg, meta: dict | None = None,
             result: dict | None = None):
    """The model and what resume_run needs (step, optimizer state, config, result so far), atomically."""
    if is_sharded(model):
        return save_sharded(path, model, optimizer, step, cfg, meta, result)
    train_state = {"step": step, "optimizer": optimizer.state_dict(), "config": dataclasses.asdict(cfg),
                   "result": result or {}}
    save_checkpoint(model, path, train=train_state, meta=meta)


# ----------------------------------------------------------------------------------------------------
# FSDP2 (--fsdp): parameters, gradients and AdamW state sharded over the ranks


def shard(model, dist: Dist):
    """fully_shard every transformer Block, then the root (FSDP2), under torchrun; before the optimizer is
    made, which then holds only this rank's shard of each parameter. Gradients are averaged over ranks as
    DistributedDataParallel averages them, so N sharded processes train as one process does."""
    if dist.enabled:
        # a unit per Block gathers one block's weights at a time; a sliding-window CausalLM calls its blocks'
        # parts (window_blocks), past the hooks that gather them, so it is one unit, gathered whole
        if not getattr(model, "window", None):
            for module in model.modules():
                if isinstance(module, Block):
                    fully_shard(module)
        fully_shard(model)
    return model


def is_sharded(model) -> bool:
    return isinstance(unwrap(model), FSDPModule)


@contextmanager
def gathered(model):
    """Under FSDP, every unit's whole weights in place (evaluation may call a model's parts directly, past
    the hooks that gather them); nothing to do otherwise."""
    units = [m for m in unwrap(model).modules() if isinstance(m, FSDPModule)]
    for m in units:
        m.unshard()
    try:
        yield
    finally:
        for m in units:
            m.reshard()


def save_sharded(path: str, model, optimizer, step: int, cfg, meta: dict | None = None,
                 result: dict | None = None):
    """Every rank calls it. `path` gets the whole model (gathered to rank 0: it loads like any checkpoint)
    with the step and config; path + ".dcp" the sharded model and optimizer state through
    torch.distributed.checkpoint, which resume_from reads back into a sharded run."""
    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    model_state, optim_state = get_state_dict(model, optimizer)
    folder, rank0 = path + ".dcp", tdist.get_rank() == 0
    if rank0:
        shutil.rmtree(folder + ".tmp", ignore_errors=True)
    tdist.barrier()
    dcp.save({"model": model_state, "optimizer": optim_state, "step": step}, checkpoint_id=folder + ".tmp")
    tdist.barrier()
    if rank0:
        full["_extra_state"] = {**unwrap(model).get_extra_state(), "meta": meta,
                                "train": {"step": step, "config": dataclasses.asdict(cfg),
                                          "result": result or {}, "sharded": os.path.basename(folder)}}
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(folder + ".tmp", folder)
        atomic_write(path, lambda tmp: torch.save(full, tmp))
    tdist.barrier()


def resume_sharded(path: str, model, optimizer) -> int:
    """Load the sharded model and optimizer state that save_sharded wrote beside `path`; returns its step."""
    folder = path + ".dcp"
    if not os.path.isdir(folder):
        raise CheckpointError(f"{path}: no {os.path.basename(folder)} beside it (not from an --fsdp run)")
    model_state, optim_state = get_state_dict(model, optimizer)
    state = {"model": model_state, "optimizer": optim_state, "step": -1}
    dcp.load(state, checkpoint_id=folder)
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])
    return state["step"]


def every(interval: int, step: int) -> bool:
    """Whether step (0-based, just done) ends a period of `interval` steps (0 = never)."""
    return interval > 0 and (step + 1) % interval == 0


class Speed:
    """Training bytes per second, from the second step on (the first pays for warm-up allocations)."""

    def __init__(self):
        self.t0, self.bytes, self.pause_s = None, 0, 0.0

    def tick(self, n_bytes: float):
        if self.t0 is None:
            self.t0 = time.perf_counter()
        else:
            self.bytes += n_bytes

    @property
    def rate(self) -> float:
        elapsed = time.perf_counter() - self.t0 - self.pause_s if self.t0 is not None else 0.0
        return self.bytes / elapsed if self.bytes and elapsed > 0 else float("nan")

    def shown(self) -> dict:
        return {"B/s": f"{self.rate:.0f}"} if self.bytes else {}

    @contextmanager
    def paused(self):
        t = time.perf_counter()
        yield
        self.pause_s += time.perf_counter() - t


# ----------------------------------------------------------------------------------------------------
# Set-up before the loop: seed, optimizer, schedule, resume, DDP, compile


def seed_everything(seed: int):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def autocast(device: torch.device):
    """bf16 autocast on CUDA; plain fp32 elsewhere (CPU bf16 is slower on most laptops)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float, device: torch.device):
    """AdamW, decay on matrices only (not norms, biases or embeddings); the fused kernel (CPU and CUDA)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.dim() >= 2 and "emb" not in name else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), fused=device.type in ("cuda", "cpu"))


def lr_at(step: int, max_steps: int, lr: float, warmup_steps: int, min_lr_ratio: float = 0.1) -> float:
    """Linear warmup, then cosine decay to min_lr_ratio * lr at max_steps."""
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, max_steps - warmup_steps))
    return lr * (min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def resume_from(path: str, model, optimizer, cfg, meta: dict | None = None) -> int:
    """Load a checkpoint's weights and optimizer state; returns the step to continue from (resume_run)."""
    return resume_run(path, model, optimizer, cfg, meta)["step"]


def resume_run(path: str, model, optimizer, cfg, meta: dict | None = None) -> dict:
    """Load a checkpoint's weights and optimizer state; returns the step to continue from and the result
    stored so far (train's `history`). Refused (ValueError) when the run it continues had another schedule,
    batch, seed or model config, or other data, patches or entropy model (the facts of `meta` in
    SAME_RUN_META): that would not continue the same run."""
    sharded = is_sharded(model)
    extra = load_checkpoint(path, unwrap(model).kind)["_extra_state"] if sharded else load_into(model, path)
    if "train" not in extra:
        raise CheckpointError(f"{path}: holds no training state to resume from")
    now = {**dataclasses.asdict(unwrap(model).config), **dataclasses.asdict(cfg)}
    saved = {**extra.get("config", {}), **extra["train"].get("config", {})}
    train_only = {f.name for f in dataclasses.fields(TrainFields)}
    keys = [k for k in now if k in RESUME_KEYS or k not in train_only]
    diff = [f"{k}={saved[k]!r} (now {now[k]!r})" for k in keys if k in saved and saved[k] != now[k]]
    if diff:
        raise ValueError(f"{path}: was trained with other settings: {', '.join(diff)}")
    check_same_run(path, extra.get("meta") or {}, meta or {})
    if sharded:
        step = resume_sharded(path, model, optimizer)
        if step != extra["train"]["step"]:
            raise CheckpointError(f"{path}: its .dcp holds step {step}, the file {extra['train']['step']}")
    elif "optimizer" not in extra["train"]:
        raise CheckpointError(f"{path}: written by an --fsdp run; resume it with --fsdp under torchrun")
    else:
        optimizer.load_state_dict(extra["train"]["optimizer"])
    return {"step": extra["train"]["step"], **(extra["train"].get("result") or {})}


# run facts a resumed run must share with the run it continues, and how an error names them
SAME_RUN_META = {"train_data": "training data", "patch": "patches", "entropy_fingerprint": "entropy model",
                 "tokenizer_sha256": "tokenizer"}


def check_same_run(path: str, saved: dict, now: dict):
    """Refuse to continue a run on other data (a digest of the training documents), patches or entropy model.
    A fact the resumed run records but the checkpoint does not is refused too: it cannot be checked."""
    keys = [k for k in SAME_RUN_META if k in now]
    missing = [SAME_RUN_META[k] for k in keys if k not in saved]
    if missing:
        raise ValueError(f"{path}: records no digest of its {', '.join(missing)} (an older checkpoint); "
                         "cannot check that --resume continues the same run; start a new run")
    diff = [SAME_RUN_META[k] for k in keys if saved[k] != now[k]]
    if diff:
        raise ValueError(f"{path}: was trained with other {', '.join(diff)}; --resume continues the same run "
                         "only (same --data, --max_bytes, patching and entropy model)")


def distribute(model, dist: Dist):
    """DistributedDataParallel under torchrun (gradients averaged over ranks), the model itself otherwise."""
    return DistributedDataParallel(model) if dist.enabled else model


def maybe_compile(model, compile: bool):
    """torch.compile behind a flag (worth it on GPUs; compile time dominates short CPU runs)."""
    return torch.compile(model) if compile else model


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


def is_main_process() -> bool:
    """Rank 0 of a torchrun job, or a lone process: the one that prints results and writes reports."""
    return int(os.environ.get("RANK", 0)) == 0


def setup_distributed(device_name: str | None = None) -> tuple[Dist, torch.device]:
    """Join the torchrun process group if launched by torchrun (nccl on CUDA, gloo on CPU)."""
    if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Dist(), pick_device(device_name)
    d = Dist(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0)))
    device = pick_device(device_name)
    if device.type == "cuda":
        device = torch.device("cuda", d.local_rank)
        torch.cuda.set_device(device)
    if not tdist.is_initialized():
        tdist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return d, device


def cleanup_distributed():
    if tdist.is_available() and tdist.is_initialized():
        tdist.destroy_process_group()


def global_mean_and_any(x: torch.Tensor, flag: bool, dist: Dist) -> tuple[float, bool]:
    """The mean of a scalar over all ranks, and whether any rank raised `flag` (one all_reduce)."""
    if not dist.enabled:
        return x.item(), flag
    both = torch.stack([x.float(), torch.tensor(float(flag), device=x.device)])
    tdist.all_reduce(both)
    return both[0].item() / dist.world_size, both[1].item() > 0


def global_share(targets: torch.Tensor, dist: Dist) -> torch.Tensor:
    """world_size x this rank's share of the global batch's targets (those not -100): a rank's mean loss
    times this, averaged over ranks (as DDP averages gradients), is the mean over all targets of the global
    batch, the loss one process would compute (not a mean of per-rank means)."""
    n = (targets != -100).sum().to(torch.float64)
    total = n.clone()
    tdist.all_reduce(total)
    return (n * dist.world_size / total).float()


# ----------------------------------------------------------------------------------------------------
# The flags every training script shares, and the checks run before any data is read or model built
# (DESIGN.md, "Bad input gets a clear error, and nothing is lost")


def add_run_args(parser, presets: dict, out: str, model: str, quick_help: str):
    """The flags every training script shares: data, model size (--preset), the one shortcut for a small
    run (--quick_demo), checkpoints (--checkpoint: the model file a command reads), report, device."""
    parser.add_argument("--data", default="builtin", help="builtin | builtin:code | builtin:prose | file | "
                        "folder | .jsonl/.parquet/.arrow file | hf:NAME[:CONFIG] (default: builtin)")
    parser.add_argument("--text_field", default=None, help="text column of a datasets source (default: text)")
    parser.add_argument("--preset", default="cpu", choices=list(presets), help=f"{model} size (default: cpu)")
    parser.add_argument("--quick_demo", action="store_true", help=quick_help)
    parser.add_argument("--out", default=out, help=f"checkpoint to write (default: {out})")
    parser.add_argument("--checkpoint", default=None, help="model to read with --eval or --resume")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run saved in --checkpoint (default: --out), exactly")
    parser.add_argument("--eval", action="store_true", help="evaluate --checkpoint on every byte of --data")
    parser.add_argument("--report", default=None, help="write the figures as JSON here")
    parser.add_argument("--device", default=None, help="cpu | cuda | cuda:1 ... (default: cuda if present)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model (GPU)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace existing files other than --out (such as a model trained on the way)")


def check_run_args(args):
    """A training command's paths: --out and --report writable (--out, the command's declared output, may
    be replaced), the checkpoint that --eval or --resume reads present."""
    if getattr(args, "eval", False) or getattr(args, "generate", False):
        check_existing(args.checkpoint)
    else:
        check_output(args.out)
        if args.resume:
            check_existing(resume_path(args), "--checkpoint" if args.checkpoint else "--resume (--out)")
    if args.report:
        check_output(args.report, "--report")


def resume_path(args) -> str | None:
    """The checkpoint --resume continues: --checkpoint, else --out (None without --resume)."""
    return (args.checkpoint or args.out) if args.resume else None


def preset_config(cls, presets: dict, preset: str, *layers: dict, **overrides):
    """Dataclass `cls` from a named preset (a model size), then each dict of `layers` in turn (such as the
    quick-demo settings), then explicit overrides (flags). Unknown names and keys are errors."""
    if preset not in presets:
        raise ValueError(f"unknown preset '{preset}' (choose from {', '.join(presets)})")
    fields = dict(presets[preset])
    for layer in layers:
        fields.update(layer)
    return config_from_dict(cls, fields, **overrides)


def check_output(path: str, flag: str = "--out", may_replace: bool = True, overwrite: bool = False):
    """Refuse (ValueError) an output path that cannot be written: a folder, under a file, in a folder
    that cannot be written, or an existing file the command may not replace (may_replace: it is the
    command's own declared output; else only with --overwrite)."""
    if not path:
        raise ValueError(f"{flag}: empty path")
    path = os.path.abspath(path)
    if os.path.isdir(path):
        raise ValueError(f"{flag} {path}: is a folder; give a file name")
    if os.path.exists(path) and not (may_replace or overwrite):
        raise ValueError(f"{flag} {path}: exists and would be replaced; add --overwrite to replace it")
    folder = os.path.dirname(path)
    while not os.path.exists(folder):  # atomic_write creates missing folders: check the first that exists
        folder = os.path.dirname(folder)
    if not os.path.isdir(folder):
        raise ValueError(f"{flag} {path}: lies under {folder}, which is a file")
    try:  # os.access says yes to root on read-only mounts: try it
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".write_test.", suffix=".tmp")
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        why = e.strerror or type(e).__name__
        raise ValueError(f"{flag} {path}: cannot write in {folder} ({why})") from None


def check_existing(path: str | None, flag: str = "--checkpoint"):
    """A file a command reads (a checkpoint to resume or evaluate) must exist and be a file."""
    if path is None:
        return
    if not os.path.exists(path):
        raise ValueError(f"{flag} {path}: no such file")
    if os.path.isdir(path):
        raise ValueError(f"{flag} {path}: is a folder, not a checkpoint file")


def check_split(train_docs: list, val_docs: list, data: str = "the corpus"):
    """A run needs bytes to train on and bytes to hold out: a NaN held-out score is no result."""
    if not val_docs or not sum(map(len, val_docs)):
        raise ValueError(f"{data}: too small to hold out any bytes for validation (give more data or a "
                         "larger --max_bytes)")
    if not train_docs or not sum(map(len, train_docs)):
        raise ValueError(f"{data}: leaves no bytes to train on after holding out validation documents")
