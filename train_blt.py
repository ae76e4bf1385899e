"""End-to-end BLT training on entropy patches, with evaluation and generation commands.

    python entropy_llm.py --quick_demo                                          # the entropy model first
    python train_blt.py --entropy_model_path entropy_model.pth --quick_demo     # a few minutes on a CPU
    python train_blt.py --entropy_model_path entropy_model.pth                  # the default CPU run
    python train_blt.py --train_entropy --quick_demo                            # trains the entropy model too
    python train_blt.py --patching space                                        # no entropy model needed
    python train_blt.py --eval --checkpoint blt_model.pth --data notes.txt      # BPB over every byte
    python train_blt.py --generate --checkpoint blt_model.pth --prompt "def " --show_patches
    torchrun --standalone --nproc_per_node=2 train_blt.py --quick_demo          # DDP (gloo on CPU, nccl on GPU)
    torchrun --nnodes=2 --node_rank=0 --rdzv_backend=c10d --rdzv_endpoint=HOST:29500 \
        --nproc_per_node=8 train_blt.py --preset large --data hf:NAME           # multi-node

Data flow: corpus -> whole-document split (byte_data) -> entropies of every document from the entropy
model (cached on disk) -> threshold calibrated on training documents only -> patch lengths per document
(entropy_patcher) -> training windows of seq_len bytes that start at a patch start, with the patch
lengths inside them (the last one cut at the window's end) -> BLTModel.

Shapes: B batch, T bytes per window (seq_len), P patches per window.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import math
import os
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from blt_model import BLTConfig, BLTModel, flops_per_byte
from byte_data import DataError, held_out_seen, load_corpus, split_documents
from common import (add_config_args, atomic_write, autocast, cleanup_distributed, config_from_dict, config_overrides,
                    count_params, pick_device, seed_everything, setup_distributed, train_model, write_report)
from entropy_patcher import (ENTROPY_METHODS, METHODS, PatchConfig, calibrate_threshold, patch_lengths_from_entropies,
                             patch_statistics)
from save_entropy_model import CheckpointError, load_checkpoint, load_entropy_model, model_fingerprint


@dataclass
class TrainConfig:
    # model
    preset: str = "cpu"  # BLTConfig preset (blt_model.BLT_PRESETS); seq_len below sets its max_seq_len
    # data
    max_bytes: int = 2_000_000  # corpus cap in bytes, before the train/val split
    seq_len: int = 1024  # bytes per training window
    # patching
    patching: str = "global"  # global | monotonic | global_monotonic | static | space | byte
    threshold: float = float("nan")  # nats; NaN = calibrate to target_patch_size on the training documents
    monotonic_threshold: float = 0.3  # nats; global_monotonic's second threshold
    target_patch_size: float = 4.5  # bytes per patch that calibration aims at (static uses round() of it)
    min_patch_size: int = 1  # bytes; 1 lets the entropy alone decide (the seed's PatchConfig default is 4)
    max_patch_size: int = 64  # bytes; longer runs of predictable bytes are cut
    # optimisation
    batch_size: int = 8  # windows per optimizer step (global, over all processes)
    max_steps: int = 1200  # optimizer steps
    lr: float = 2e-3  # peak learning rate
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    warmup_steps: int = 100  # linear warmup steps
    weight_decay: float = 0.1  # AdamW decay on matrices
    grad_clip: float = 1.0  # max global gradient norm (0 = off)
    eval_interval: int = 400  # steps between held-out evaluations (0 = only at the end)
    eval_max_bytes: int = 100_000  # held-out bytes scored at intermediate evaluations (the final one scores all)
    ckpt_interval: int = 400  # steps between checkpoints (0 = only at the end)
    seed: int = 1337  # init and data order

    def __post_init__(self):
        if self.patching not in METHODS:
            raise ValueError(f"unknown patching {self.patching!r}")
        if self.max_patch_size > self.seq_len:
            raise ValueError(f"max_patch_size {self.max_patch_size} exceeds seq_len {self.seq_len}")
        if min(self.seq_len, self.batch_size, self.max_steps) < 1:
            raise ValueError("seq_len, batch_size and max_steps must be positive")

    @property
    def needs_entropy(self) -> bool:
        return self.patching in ENTROPY_METHODS


TRAIN_PRESETS = {
    # ~2 MB so that 260 steps stay under one epoch: the hash n-gram tables memorise repeated passes
    "quick": dict(max_bytes=2_000_000, max_steps=260, seq_len=512, batch_size=16, eval_interval=0, ckpt_interval=0,
                  warmup_steps=30),
    "tiny": dict(preset="tiny", max_bytes=60_000, seq_len=128, max_patch_size=16, batch_size=4, max_steps=8,
                 eval_interval=0, ckpt_interval=0, warmup_steps=2, eval_max_bytes=5_000),
}


# ----------------------------------------------------------------------------------------------------
# Patched data


def cached_entropies(entropy_model, docs: list[bytes], cache_dir: str = ".patch_cache") -> list[np.ndarray]:
    """Entropies of every document, computed once per (model weights, documents) and kept on disk.

    A cache file that cannot be read or does not fit the documents is recomputed, never trusted.
    """
    from entropy_llm import compute_entropies

    h = hashlib.sha256(model_fingerprint(entropy_model).encode())
    for d in docs:
        h.update(len(d).to_bytes(8, "little") + d)
    path = os.path.join(cache_dir, f"entropies-{h.hexdigest()[:32]}.npy")
    total = sum(map(len, docs))
    if os.path.exists(path):
        try:
            flat = np.load(path, allow_pickle=False)
            if flat.shape == (total,) and flat.dtype == np.float32 and np.isfinite(flat).all():
                return np.split(flat, np.cumsum([len(d) for d in docs])[:-1])
        except Exception as e:  # unreadable cache (truncated, empty, not numpy): recompute it, never trust it
            print(f"warning: ignoring unreadable entropy cache {path} ({type(e).__name__})", file=sys.stderr)
    ent = compute_entropies(entropy_model, docs, show_progress=total > 200_000)
    flat = np.concatenate(ent) if ent else np.zeros(0, np.float32)

    def write(tmp):
        with open(tmp, "wb") as f:
            np.save(f, flat)

    atomic_write(path, write)
    return ent


def make_patch_config(tcfg: TrainConfig, train_docs, train_entropies) -> PatchConfig:
    """The PatchConfig of a run; an entropy threshold left as NaN is calibrated on training documents."""
    fields = dict(method=tcfg.patching, min_patch_size=tcfg.min_patch_size, max_patch_size=tcfg.max_patch_size,
                  monotonic_threshold=tcfg.monotonic_threshold, patch_size=max(1, round(tcfg.target_patch_size)))
    if tcfg.patching == "static":
        fields["min_patch_size"] = 1
    if not tcfg.needs_entropy:
        return PatchConfig(**fields)
    threshold = tcfg.threshold
    if math.isnan(threshold):
        method = "monotonic" if tcfg.patching == "monotonic" else "global"
        threshold = calibrate_threshold(None, train_docs, tcfg.target_patch_size, method=method,
                                        config=PatchConfig(**fields), entropies=train_entropies)
    return PatchConfig(**fields, entropy_threshold=threshold)


def patch_starts(lengths: np.ndarray) -> np.ndarray:
    """Offsets at which the patches of one document start."""
    return np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)


def document_lengths(docs, entropies, patch_config: PatchConfig) -> list[np.ndarray]:
    return [patch_lengths_from_entropies(h, d, patch_config) for h, d in zip(entropies, docs)]


@dataclass
class PatchedDataset:
    """Documents with their patch lengths: what train_blt() trains and evaluates on."""

    train_docs: list[bytes]
    train_lengths: list[np.ndarray]
    val_docs: list[bytes]
    val_lengths: list[np.ndarray]
    patch_config: PatchConfig
    entropy_model_path: str | None = None
    entropy_fingerprint: str | None = None
    patching_flops_per_byte: float = 0.0  # the entropy model's forward cost per patched byte

    @property
    def mean_patch_size(self) -> float:
        return patch_statistics(self.train_lengths)["mean_patch_size"]


def entropy_training_record(path: str) -> list | None:
    """The [digest, length] list of the documents the entropy model at `path` was trained on, if recorded."""
    return (load_checkpoint(path, "entropy_llm")["_extra_state"].get("meta") or {}).get("train_documents")


def prepare_dataset(tcfg: TrainConfig, docs: list[bytes], entropy_model=None, entropy_model_path=None,
                    cache_dir: str = ".patch_cache") -> PatchedDataset:
    """Split, compute entropies (cached), calibrate on the training split, patch every document.

    The entropy model must not have trained on a held-out document: its patches (and so the BLT's held-out
    BPB) would then carry knowledge of them. Checked against the record its checkpoint keeps.
    """
    from entropy_llm import flops_per_byte as entropy_flops

    train_docs, val_docs = split_documents(docs)
    if not val_docs:
        raise DataError("the corpus is too small to hold out any bytes for validation")
    if tcfg.needs_entropy and entropy_model_path:
        record = entropy_training_record(entropy_model_path)
        if record is None:
            print(f"warning: {entropy_model_path} does not record its training documents; cannot check that it "
                  "never saw the held-out ones", file=sys.stderr)
        elif (seen := held_out_seen(record, docs, val_docs)):
            raise ValueError(f"{entropy_model_path}: the entropy model was trained on {seen} of the {len(val_docs)} "
                             "held-out documents of this corpus; train it on this corpus's training split "
                             "(--train_entropy) so held-out BPB stays honest")
    train_h = val_h = [None] * len(docs)
    fingerprint, patch_flops = None, 0.0
    if tcfg.needs_entropy:
        if entropy_model is None:
            raise ValueError(f"patching '{tcfg.patching}' needs an entropy model")
        train_h = cached_entropies(entropy_model, train_docs, cache_dir)
        val_h = cached_entropies(entropy_model, val_docs, cache_dir)
        fingerprint = model_fingerprint(entropy_model)
        patch_flops = 2 * entropy_flops(entropy_model.config)  # windows overlap by half: each byte runs twice
    pc = make_patch_config(tcfg, train_docs, train_h)
    return PatchedDataset(train_docs, document_lengths(train_docs, train_h, pc), val_docs,
                          document_lengths(val_docs, val_h, pc), pc, entropy_model_path, fingerprint, patch_flops)


def _window_lengths(starts: np.ndarray, s: int, e: int) -> np.ndarray:
    """Patch lengths of bytes [s, e) of a document whose patches start at `starts` (s is one of them)."""
    inside = starts[(starts >= s) & (starts < e)]
    return np.diff(np.append(inside, e))


class PatchedWindows:
    """Training windows of T bytes that start at a patch start, with their patch lengths.

    A pure function of (seed, step) like byte_data.ByteWindows, so resumed and distributed runs agree.
    A window starts at a patch start chosen uniformly among those that leave a full window, plus the first
    one after them (so the document's end is covered); its last patch is cut at the window's end.
    """

    def __init__(self, docs: list[bytes], lengths: list[np.ndarray], seq_len: int, seed: int = 0):
        self.docs, self.seq_len, self.seed = docs, seq_len, seed
        self.starts = [patch_starts(n) for n in lengths]
        sizes = np.array([len(d) for d in docs], dtype=np.float64)
        self.prob = sizes / sizes.sum()
        # per document: the patch starts that leave a full window, and the first one past them (whose window
        # runs off the end, a little padded), so a document's last bytes are trained on too
        self.n_ok = [min(len(st), int(np.searchsorted(st, max(0, len(d) - seq_len), side="right")) + 1)
                     for st, d in zip(self.starts, docs)]

    def batch(self, step: int, batch_size: int, rank: int = 0, world_size: int = 1):
        """x (B', T) bytes, lengths (B', P) zero-padded, y (B', T) targets (-100 past a short document)."""
        if batch_size % world_size:
            raise ValueError(f"batch_size {batch_size} is not divisible by {world_size} processes")
        rng = np.random.default_rng((self.seed, step))
        doc = rng.choice(len(self.docs), size=batch_size, p=self.prob)
        pick = rng.random(batch_size)
        per = batch_size // world_size
        T = self.seq_len
        x = np.zeros((per, T), dtype=np.int64)
        y = np.full((per, T), -100, dtype=np.int64)
        rows = []
        for r, i in enumerate(range(rank * per, (rank + 1) * per)):
            d, st = doc[i], self.starts[doc[i]]
            s = int(st[int(pick[i] * self.n_ok[d])])
            e = min(s + T, len(self.docs[d]))
            x[r, : e - s] = np.frombuffer(self.docs[d], dtype=np.uint8, count=e - s, offset=s)
            y[r, : e - s] = x[r, : e - s]
            rows.append(_window_lengths(st, s, e))
        lengths = np.zeros((per, max(len(n) for n in rows)), dtype=np.int64)  # (B', P)
        for r, n in enumerate(rows):
            lengths[r, : len(n)] = n
        return torch.from_numpy(x), torch.from_numpy(lengths), torch.from_numpy(y)


def eval_windows(docs: list[bytes], lengths: list[np.ndarray], seq_len: int):
    """(doc, start, score_from, end) windows covering every byte of every document.

    Each window starts at a patch start; after the first, a window starts about seq_len/2 before the first
    byte it scores, so scored bytes keep context (as the entropy model's evaluation does).
    """
    jobs = []
    for i, (d, n) in enumerate(zip(docs, lengths)):
        starts = patch_starts(n)
        cursor = 0
        while cursor < len(d):
            want = max(0, cursor - seq_len // 2)
            s = int(starts[np.searchsorted(starts, want, side="right") - 1])
            if s + seq_len <= cursor:  # patches longer than half a window: start at the last start instead
                s = int(starts[np.searchsorted(starts, cursor, side="right") - 1])
            e = min(s + seq_len, len(d))
            jobs.append((i, s, cursor, e))
            cursor = e
    return jobs


@torch.inference_mode()
def evaluate(model: BLTModel, docs: list[bytes], lengths: list[np.ndarray], seq_len: int, batch_size: int = 8,
             device=None) -> tuple[float, int]:
    """(bits per byte, bytes) over every byte of `docs`, patched by `lengths`."""
    model.eval()
    device = device or next(model.parameters()).device
    jobs = eval_windows(docs, lengths, seq_len)
    starts = [patch_starts(n) for n in lengths]
    total_nll, total_bytes = 0.0, 0
    for b in range(0, len(jobs), batch_size):
        chunk = jobs[b:b + batch_size]
        rows = [_window_lengths(starts[i], s, e) for i, s, _, e in chunk]
        x = np.zeros((len(chunk), seq_len), dtype=np.int64)
        pl = np.zeros((len(chunk), max(len(n) for n in rows)), dtype=np.int64)
        for r, ((i, s, _, e), n) in enumerate(zip(chunk, rows)):
            x[r, : e - s] = np.frombuffer(docs[i], dtype=np.uint8, count=e - s, offset=s)
            pl[r, : len(n)] = n
        xt = torch.from_numpy(x).to(device)
        with autocast(xt.device):
            logits, _ = model(xt, torch.from_numpy(pl).to(device))
        nll = F.cross_entropy(logits.float().transpose(1, 2), xt, reduction="none").cpu().double()  # (B, T)
        for r, (i, s, k0, k1) in enumerate(chunk):
            total_nll += float(nll[r, k0 - s:k1 - s].sum())
            total_bytes += k1 - k0
    if total_bytes == 0:
        raise ValueError("no bytes to evaluate")
    return total_nll / (math.log(2) * total_bytes), total_bytes


# ----------------------------------------------------------------------------------------------------
# Training


def train_blt(model: BLTModel, dataset: PatchedDataset, config: TrainConfig, out: str = "blt_model.pth",
              device_name: str | None = None, resume: str | None = None, compile: bool = False) -> dict:
    """Train `model` end to end on `dataset`; evaluates held-out BPB and saves `out`. Returns the report."""
    dist, device = setup_distributed(device_name)
    try:
        model.to(device)
        meta = {"patch_config": dataclasses.asdict(dataset.patch_config), "train_config": dataclasses.asdict(config),
                "entropy_model_path": dataset.entropy_model_path, "entropy_fingerprint": dataset.entropy_fingerprint,
                "mean_patch_size": dataset.mean_patch_size}
        if resume:  # the same patches, or the resumed run would not be the same run
            saved = (load_checkpoint(resume, "blt")["_extra_state"].get("meta") or {}).get("patch_config")
            if saved != meta["patch_config"]:
                raise ValueError(f"{resume}: was trained with other patches ({saved})")
        windows = PatchedWindows(dataset.train_docs, dataset.train_lengths, config.seq_len, config.seed)
        mean_ps = dataset.mean_patch_size
        n_train = sum(map(len, dataset.train_docs))

        def run_eval(step):
            docs, lengths = dataset.val_docs, dataset.val_lengths
            if step != config.max_steps:  # intermediate evaluations score a prefix of the held-out documents
                keep = np.searchsorted(np.cumsum([len(d) for d in docs]), config.eval_max_bytes) + 1
                docs, lengths = docs[:keep], lengths[:keep]
            bpb, n = evaluate(model, docs, lengths, config.seq_len, device=device)
            return {"val_bpb": bpb, "val_bytes": n}

        if dist.is_main:
            pc = dataset.patch_config
            threshold = f" threshold {pc.entropy_threshold:.4f}" if pc.needs_entropy else ""
            print(f"BLT: {count_params(model):,} params ({model.num_params(include_hash=False):,} without hash "
                  f"tables); patching {pc.method}{threshold}, mean patch {mean_ps:.2f} bytes; train "
                  f"{len(dataset.train_docs)} docs {n_train:,} bytes, val {len(dataset.val_docs)} docs "
                  f"{sum(map(len, dataset.val_docs)):,} bytes; device {device}, {dist.world_size} process(es)")
        result = train_model(model, config, windows, out, device=device, dist=dist, resume=resume, compile=compile,
                             evaluate=run_eval, meta=meta, desc="BLT",
                             bytes_per_step=config.batch_size // dist.world_size * config.seq_len,
                             postfix=lambda step: {"patch": f"{mean_ps:.2f}"})
        final = result["evals"][-1] if result["evals"] else {}
        fpb = flops_per_byte(model.config, mean_ps, config.seq_len)
        return {"val_bpb": final.get("val_bpb", float("nan")), "val_bytes": final.get("val_bytes", 0),
                "mean_patch_size": mean_ps, "params": count_params(model),
                "params_without_hash": model.num_params(include_hash=False), "flops_per_byte": fpb,
                "train_flops": 3 * fpb * config.batch_size * config.seq_len * config.max_steps,
                "patching_flops_per_byte": dataset.patching_flops_per_byte, "bytes_per_s": result["bytes_per_s"],
                "train_loss": result["loss"], "train_bytes": n_train, "checkpoint": out,
                "patching": dataset.patch_config.method,
                "threshold": dataset.patch_config.entropy_threshold if dataset.patch_config.needs_entropy else None,
                "steps": config.max_steps, "evals": result["evals"]}
    finally:
        cleanup_distributed()


def build_model(tcfg: TrainConfig, patch_config: PatchConfig | None = None, **overrides) -> BLTModel:
    """A freshly initialised BLT for this run: the preset, seq_len as its row length, seeded init.

    With an entropy-free patch_config, the model's default generation patching becomes that one, so
    generate() without a patcher patches as training did (entropy patching needs the entropy model:
    load_blt() returns the patcher for it).
    """
    if patch_config is not None and not patch_config.needs_entropy:
        overrides = dict(patching=patch_config.method, patch_size=patch_config.patch_size,
                         min_patch_size=patch_config.size_bounds[0], max_patch_size=patch_config.max_patch_size,
                         **overrides)
    seed_everything(tcfg.seed)
    return BLTModel(BLTConfig.from_preset(tcfg.preset, max_seq_len=tcfg.seq_len, **overrides))


# ----------------------------------------------------------------------------------------------------
# Loading a trained BLT with its patching (for --eval and --generate)


def load_blt(path: str, device="cpu"):
    """(model, EntropyPatcher) from a BLT checkpoint: the patching it was trained with, entropy model included."""
    from entropy_patcher import EntropyPatcher
    from save_entropy_model import model_from_state

    state = load_checkpoint(path, "blt")
    meta = state["_extra_state"].get("meta") or {}
    model = model_from_state(state, path).to(device).eval()
    if "patch_config" not in meta:
        raise CheckpointError(f"{path}: carries no patch config (not written by train_blt.py)")
    pc = config_from_dict(PatchConfig, meta["patch_config"])
    entropy_model = None
    if pc.needs_entropy:
        epath = meta.get("entropy_model_path")
        if not epath:
            raise CheckpointError(f"{path}: trained with entropy patching but names no entropy model")
        entropy_model = load_entropy_model(epath, device=device)
        if model_fingerprint(entropy_model) != meta.get("entropy_fingerprint"):
            raise CheckpointError(f"{path}: its entropy model {epath} has changed since training (fingerprint differs)")
    return model, EntropyPatcher(entropy_model, pc)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--entropy_model_path", default="entropy_model.pth", help="entropy model checkpoint")
    p.add_argument("--train_entropy", action="store_true", help="train the entropy model first (on the same split)")
    p.add_argument("--data", default="builtin", help="builtin | file | folder | hf:NAME[:CONFIG]")
    p.add_argument("--quick_demo", action="store_true", help="a small run: a few minutes on a CPU")
    p.add_argument("--train_preset", default=None, choices=sorted(TRAIN_PRESETS), help="named training settings")
    p.add_argument("--out", default="blt_model.pth", help="checkpoint to write")
    p.add_argument("--resume", default=None, help="checkpoint to continue training from")
    p.add_argument("--report", default=None, help="write the figures as JSON here")
    p.add_argument("--device", default=None, help="cpu | cuda | cuda:1 ... (default: cuda if present)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (GPU)")
    p.add_argument("--eval", action="store_true", help="evaluate --checkpoint on every byte of --data")
    p.add_argument("--generate", action="store_true", help="continue --prompt with --checkpoint")
    p.add_argument("--checkpoint", default=None, help="BLT checkpoint for --eval and --generate")
    p.add_argument("--prompt", default="", help="text to continue with --generate")
    p.add_argument("--max_new_bytes", type=int, default=200, help="bytes to generate")
    p.add_argument("--temperature", type=float, default=0.8, help="sampling temperature (0 = greedy)")
    p.add_argument("--top_k", type=int, default=None, help="sample among the k most likely bytes")
    p.add_argument("--show_patches", action="store_true", help="print where the patches of the output fall")
    add_config_args(p, TrainConfig)
    args = p.parse_args(argv)
    try:
        if args.generate or args.eval:
            return _eval_or_generate(args, p)
        fields = {}
        if args.quick_demo:
            fields.update(TRAIN_PRESETS["quick"])
        if args.train_preset:
            fields.update(TRAIN_PRESETS[args.train_preset])
        tcfg = config_from_dict(TrainConfig, fields, **config_overrides(args, TrainConfig))
        docs = load_corpus(args.data, max_bytes=tcfg.max_bytes)
        entropy_model = None
        if tcfg.needs_entropy:
            if args.train_entropy:
                _train_entropy(args, docs)
            elif not os.path.exists(args.entropy_model_path):
                raise CheckpointError(f"{args.entropy_model_path}: no such file; train an entropy model first with "
                                      f"`python entropy_llm.py --quick_demo`, or add --train_entropy "
                                      f"(or use --patching space|static|byte, which need none)")
            entropy_model = load_entropy_model(args.entropy_model_path, pick_device(args.device))
        dataset = prepare_dataset(tcfg, docs, entropy_model, os.path.abspath(args.entropy_model_path))
        model = build_model(tcfg, dataset.patch_config)
        report = train_blt(model, dataset, tcfg, args.out, args.device, args.resume, args.compile)
        if int(os.environ.get("RANK", 0)) != 0:  # torchrun: rank 0 speaks for the job
            return 0
        print(f"held-out {report['val_bpb']:.4f} bits per byte on {report['val_bytes']:,} bytes; mean patch "
              f"{report['mean_patch_size']:.2f} bytes; {report['bytes_per_s']:,.0f} training bytes/s; saved {args.out}")
    except (CheckpointError, DataError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    write_report(args.report, report)
    return 0


def _train_entropy(args, docs):
    """--train_entropy: the entropy model on this corpus's training documents (never its held-out ones)."""
    from entropy_llm import build_config, train_entropy_model

    train_docs, val_docs = split_documents(docs)
    ecfg = build_config("cpu", quick_demo=args.quick_demo)
    rep = train_entropy_model(ecfg, train_docs, val_docs, args.entropy_model_path, args.device)
    print(f"entropy model: held-out {rep['val_bpb']:.4f} bits per byte; saved {args.entropy_model_path}")


def _eval_or_generate(args, p) -> int:
    from entropy_patcher import format_patches

    if not args.checkpoint:
        p.error("--eval and --generate need --checkpoint")
    device = pick_device(args.device)
    model, patcher = load_blt(args.checkpoint, device)
    if args.eval:
        docs = load_corpus(args.data, max_bytes=args.max_bytes)
        t0 = time.perf_counter()
        lengths = patcher.document_patch_lengths(docs)
        bpb, n = evaluate(model, docs, lengths, model.config.max_seq_len)
        report = {"val_bpb": bpb, "num_bytes": n, "mean_patch_size": n / sum(map(len, lengths)),
                  "bytes_per_s": n / (time.perf_counter() - t0), "checkpoint": args.checkpoint, "data": args.data}
        print(f"{args.data}: {bpb:.4f} bits per byte over {n:,} bytes (mean patch {report['mean_patch_size']:.2f})")
    else:
        prompt = args.prompt.encode("utf-8")
        t0 = time.perf_counter()
        new = model.generate(prompt, args.max_new_bytes, patcher=patcher, temperature=args.temperature,
                             top_k=args.top_k, seed=args.seed)
        dt = time.perf_counter() - t0
        text = (prompt + new).decode("utf-8", errors="replace")
        print(format_patches(patcher.create_patches(prompt + new)) if args.show_patches else text)
        report = {"prompt": args.prompt, "output": new.decode("utf-8", errors="replace"),
                  "bytes_per_s": len(new) / dt if dt > 0 else float("nan")}
    write_report(args.report, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
