"""End-to-end BLT training on entropy patches, with evaluation and generation commands.

    python entropy_llm.py --quick_demo                                          # the entropy model first
    python train_blt.py --entropy_model_path entropy_model.pth --quick_demo     # a few minutes on a CPU
    python train_blt.py --entropy_model_path entropy_model.pth                  # the default CPU run
    python train_blt.py --train_entropy --quick_demo                            # trains the entropy model too
    python train_blt.py --method space                                          # no entropy model needed
    python train_blt.py --preset tiny --max_steps 8 --max_bytes 60000           # a seconds-long smoke run
    python train_blt.py --resume                                # continue the run saved in blt_model.pth
    python train_blt.py --eval --checkpoint blt_model.pth --data notes.txt      # BPB over every byte
    python train_blt.py --generate --checkpoint blt_model.pth --prompt "def " --show_patches
    torchrun --standalone --nproc_per_node=2 train_blt.py --quick_demo          # DDP (gloo on CPU, nccl: GPU)
    torchrun --nnodes=2 --node_rank=0 --rdzv_backend=c10d --rdzv_endpoint=HOST:29500 \
        --nproc_per_node=8 train_blt.py --preset large --data hf:NAME           # multi-node

Three configs, each with its own flags: BLTConfig (--preset names its size: tiny, cpu, small, ...,
paper-8b-ish; --max_seq_len is the row length), PatchConfig (--method, --entropy_threshold, left unset
to calibrate to --target_patch_size on training documents) and TrainConfig (training.TrainFields).

Data flow: corpus -> whole-document split (byte_data) -> entropies of every document from the entropy
model (entropy_patcher.cached_entropies) -> threshold calibrated on training documents only
(entropy_patcher.calibrate) -> patch lengths per document -> training windows of max_seq_len bytes that
start at a patch start, with the patch lengths inside them (the last one cut at the window's end).
One optimizer step (training.train): PatchedWindows.batch(step) -> x (B, T), patch_lengths (B, P), y ->
BLTModel(x, patch_lengths, targets=y) -> loss.backward() -> clip -> AdamW step.

Shapes: B batch, T bytes per window (max_seq_len), P patches per window.
"""
from __future__ import annotations

import argparse
import hashlib
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

import entropy_llm
from blt_model import BLT_PRESETS, BLTConfig, BLTModel, flops_per_byte
from byte_data import (
    DataError,
    MappedCorpus,
    MappedEntropies,
    held_out_seen,
    load_corpus,
    precomputed_entropies,
    split_documents,
)
from common import (
    add_config_args,
    config_from_dict,
    config_overrides,
    count_params,
    pick_device,
    write_report,
)
from entropy_patcher import (
    EntropyEnsemble,
    PatchConfig,
    cached_entropies,
    calibrate,
    patch_lengths_from_entropies,
    patcher_from_meta,
    patching_flops_per_byte,
)
from patch_pictures import format_patches, patch_statistics
from save_entropy_model import (
    CheckpointError,
    data_digest,
    load_checkpoint,
    load_entropy_model,
    model_fingerprint,
    model_from_state,
)
from training import (
    Interrupted,
    TrainFields,
    add_run_args,
    check_output,
    check_run_args,
    check_split,
    cleanup_distributed,
    distribute,
    is_main_process,
    make_optimizer,
    maybe_compile,
    preset_config,
    resume_path,
    resume_run,
    seed_everything,
    setup_distributed,
    shard,
    train,
)


@dataclass
class TrainConfig(TrainFields):
    """The BLT's training settings (training.TrainFields); its sizes, max_seq_len too, are BLTConfig's."""


# The BLT's CPU defaults over TrainFields': rows of 1024 bytes, so 8 rows a step are the LMs' 32 x 256 bytes
BLT_TRAINING = dict(batch_size=8, max_steps=1200, lr=2e-3, eval_interval=400, eval_max_bytes=100_000,
                    ckpt_interval=400)
# patching defaults of a BLT run: calibrate the threshold; min 1 lets the entropy alone decide (the seed's
# PatchConfig has 4); runs of predictable bytes are cut at 64
BLT_PATCHING = dict(entropy_threshold=None, min_patch_size=1, max_patch_size=64)
# --quick_demo: ~2 MB so that 260 steps stay under one epoch (the hash n-gram tables memorise repeats)
QUICK_MODEL = dict(max_seq_len=512)
QUICK_TRAINING = dict(max_bytes=2_000_000, max_steps=260, batch_size=16, eval_interval=0, ckpt_interval=0,
                      warmup_steps=30)


def model_config(preset: str = "cpu", quick_demo: bool = False, **overrides) -> BLTConfig:
    """BLTConfig of a named size (blt_model.BLT_PRESETS), the quick demo's row length, then overrides."""
    return preset_config(BLTConfig, BLT_PRESETS, preset, QUICK_MODEL if quick_demo else {}, **overrides)


def train_config(quick_demo: bool = False, **overrides) -> TrainConfig:
    quick = QUICK_TRAINING if quick_demo else {}
    return config_from_dict(TrainConfig, {**BLT_TRAINING, **quick}, **overrides)


def patch_config(**overrides) -> PatchConfig:
    return config_from_dict(PatchConfig, BLT_PATCHING, **overrides)


def build_model(config: BLTConfig, seed: int = 1337) -> BLTModel:
    """A freshly initialised BLT, seeded so that a run (and its resumed half) starts from the same weights."""
    seed_everything(seed)
    return BLTModel(config)


# ----------------------------------------------------------------------------------------------------
# Patched data

# bytes of a mapped corpus's first training documents that give its threshold and mean patch size
SAMPLE_BYTES = 8_000_000


def patch_starts(lengths: np.ndarray) -> np.ndarray:
    """Offsets at which the patches of one document start."""
    return np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)


def window_lengths(starts: np.ndarray, s: int, e: int) -> np.ndarray:
    """Patch lengths of bytes [s, e) of a document whose patches start at `starts` (s is one of them)."""
    inside = starts[(starts >= s) & (starts < e)]
    return np.diff(np.append(inside, e))


def window_batch(windows, T: int) -> tuple[np.ndarray, np.ndarray]:
    """x (B, T): the bytes [s, e) of each (document, its patch starts, s, e) window, zero-padded;
    lengths (B, P): its patch lengths, zero-padded."""
    rows = [window_lengths(starts, s, e) for _, starts, s, e in windows]
    x = np.zeros((len(windows), T), dtype=np.int64)
    lengths = np.zeros((len(windows), max(map(len, rows))), dtype=np.int64)
    for r, ((doc, _, s, e), n) in enumerate(zip(windows, rows)):
        x[r, : e - s] = np.frombuffer(doc, dtype=np.uint8, count=e - s, offset=s)
        lengths[r, : len(n)] = n
    return x, lengths


@dataclass
class PatchedDataset:
    """Documents with their patch lengths: what train_blt() trains and evaluates on."""

    train_docs: list[bytes]
    train_lengths: list[np.ndarray]
    val_docs: list[bytes]
    val_lengths: list[np.ndarray]
    patch_config: PatchConfig  # resolved: a calibrated threshold, never None
    entropy_model_path: str | list[str] | None = None  # an ensemble: one path per model, in order
    entropy_fingerprint: str | list[str] | None = None  # an ensemble: one fingerprint per model
    patching_flops_per_byte: float = 0.0  # the entropy model's forward cost per patched byte (ensemble: sum)
    combine: str | None = None  # an ensemble's combine rule (entropy_patcher.COMBINES); None: one model

    @property
    def mean_patch_size(self) -> float:
        lengths = self.train_lengths  # a mapped corpus: over the documents it calibrated on (SAMPLE_BYTES)
        if isinstance(lengths, LazyLengths):
            lengths = list(lengths[: len(self.train_docs.capped(SAMPLE_BYTES))])
        return patch_statistics(lengths)["mean_patch_size"]

    def meta(self) -> dict:
        """What a BLT checkpoint records of its data and patching (load_blt rebuilds the patcher from it)."""
        docs = self.train_docs
        if isinstance(docs, MappedCorpus):  # its bytes' digest (prepare time) and its documents
            train_data = hashlib.sha256(docs.info["sha256"].encode() + docs.index.tobytes()).hexdigest()
        else:
            train_data = data_digest(docs)
        patch = self.patch_config.patch_key()
        if self.combine is not None:  # what EntropyPatcher.to_meta writes for an ensemble
            patch["ensemble"] = {"combine": self.combine, "models": len(self.entropy_fingerprint)}
        return {"patch": patch, "entropy_model": self.entropy_model_path,
                "entropy_fingerprint": self.entropy_fingerprint, "mean_patch_size": self.mean_patch_size,
                "train_data": train_data}


def is_hf(path: str) -> bool:
    """An entropy model named hf:NAME_OR_DIR (a Hugging Face BLT checkpoint's patcher), not a file."""
    return path.startswith("hf:")


def prepare_dataset(docs: list[bytes], config: PatchConfig, entropy_model=None,
                    entropy_model_path: str | list[str] | None = None, combine: str | None = None
                    ) -> PatchedDataset:
    """Split, compute entropies (cached), calibrate on the training split, patch every document. The
    entropy model must not have trained on a held-out document (its patches, and so the BLT's held-out BPB,
    would carry knowledge of them): checked against the record its checkpoint keeps.

    An ensemble: entropy_model a list of models and entropy_model_path the list of their paths (same
    order), combined by `combine` (default mean; entropy_patcher.EntropyEnsemble): patched and calibrated
    on the combined score, each model checked, every path and fingerprint recorded.
    """
    ensemble = isinstance(entropy_model, (list, tuple))
    if combine is not None and not ensemble:
        raise ValueError("combine= makes an ensemble: pass a list of entropy models")
    paths = [entropy_model_path]
    if ensemble:
        paths = entropy_model_path if entropy_model_path is not None else [None] * len(entropy_model)
        if isinstance(paths, str) or len(paths) != len(entropy_model):
            raise ValueError(f"an ensemble of {len(entropy_model)} entropy models needs as many paths")
        entropy_model_path, combine = list(paths), combine or "mean"
    train_docs, val_docs = split_documents(docs)
    if not val_docs:
        raise DataError("the corpus is too small to hold out any bytes for validation")
    train_h = val_h = None
    fingerprint, patch_flops = None, 0.0
    if config.needs_entropy:
        if entropy_model is None:
            raise ValueError(f"patching method '{config.method}' needs an entropy model")
        for path in paths:
            check_entropy_model_is_clean(path, docs, val_docs)
        if ensemble:
            fingerprint = [model_fingerprint(m) for m in entropy_model]
            entropy_model = EntropyEnsemble(entropy_model, combine)
        else:
            fingerprint = model_fingerprint(entropy_model)
        # entropy_llm.py --precompute wrote one model's entropies beside the bytes (an ensemble: computed)
        if isinstance(train_docs, MappedCorpus) and not ensemble:
            train_h, val_h = (precomputed_entropies(d, fingerprint) for d in (train_docs, val_docs))
            if train_h is None:
                print(f"note: {train_docs.folder} holds no precomputed entropies of this entropy model; "
                      "computing them here (torchrun entropy_llm.py --precompute shares the work)",
                      file=sys.stderr)
        if train_h is None:
            cache_dir = config.cache_dir if config.cache_patches else None
            train_h = cached_entropies(entropy_model, list(train_docs), cache_dir, label="train")
            val_h = cached_entropies(entropy_model, list(val_docs), cache_dir, label="val")
        if isinstance(train_h, MappedEntropies):  # calibrated on the first training documents
            k = len(train_docs.capped(SAMPLE_BYTES))
            config = calibrate(config, entropy_model, list(train_docs[:k]), entropies=list(train_h[:k]))
        else:
            config = calibrate(config, entropy_model, train_docs, entropies=train_h)
        patch_flops = patching_flops_per_byte(entropy_model)  # windows overlap by half; ensemble: sum
    return PatchedDataset(train_docs, document_lengths(train_docs, train_h, config), val_docs,
                          document_lengths(val_docs, val_h, config), config, entropy_model_path, fingerprint,
                          patch_flops, combine if ensemble and config.needs_entropy else None)


def check_entropy_model_is_clean(path: str | None, docs: list[bytes], val_docs: list[bytes]):
    """Refuse an entropy model that trained on a held-out document of this corpus (warn if unrecorded:
    Meta's released model, hf:NAME, was trained on Meta's data and keeps no record of it)."""
    extra = load_checkpoint(path, "entropy_llm")["_extra_state"] if path and not is_hf(path) else {}
    record = (extra.get("meta") or {}).get("train_documents")
    if record is None:
        print(f"warning: {path or 'the entropy model'} does not record its training documents; cannot check "
              "that it never saw the held-out ones", file=sys.stderr)
    elif seen := held_out_seen(record, docs, val_docs):
        raise ValueError(f"{path}: the entropy model was trained on {seen} of the {len(val_docs)} held-out "
                         "documents of this corpus; train it on this corpus's training split "
                         "(--train_entropy) so held-out BPB stays honest")


def document_lengths(docs, entropies, config: PatchConfig) -> list[np.ndarray]:
    """Patch lengths of every document; a MappedCorpus (larger than memory) patches one when it is read."""
    lengths = LazyLengths(docs, entropies, config)
    return lengths if isinstance(docs, MappedCorpus) else [lengths[i] for i in range(len(docs))]


class LazyLengths(Sequence):
    """Patch lengths of documents, computed when one is read (entropies: None or a sequence of
    per-document arrays, read the same way)."""

    def __init__(self, docs: MappedCorpus, entropies, config: PatchConfig):
        self.docs, self.entropies, self.config = docs, entropies, config

    def __len__(self) -> int:
        return len(self.docs)

    def __getitem__(self, i):
        h = self.entropies[i] if self.entropies is not None else None
        if isinstance(i, slice):
            return LazyLengths(self.docs[i], h, self.config)
        return patch_lengths_from_entropies(h, self.docs[i], self.config)


def corpus_lengths(docs) -> np.ndarray:
    """The length of every document (a MappedCorpus knows them without reading its documents)."""
    if isinstance(docs, MappedCorpus):
        return docs.lengths
    return np.array([len(d) for d in docs], dtype=np.int64)


class PatchedWindows:
    """Training windows of T bytes that start at a patch start, with their patch lengths.

    A pure function of (seed, step) like byte_data.ByteWindows, so resumed and distributed runs agree.
    A window starts at a patch start chosen uniformly among those that leave a full window, plus the first
    one after them (so the document's end is covered); its last patch is cut at the window's end.
    """

    def __init__(self, docs: list[bytes], lengths: list[np.ndarray], max_seq_len: int, seed: int = 0):
        self.docs, self.lengths, self.max_seq_len, self.seed = docs, lengths, max_seq_len, seed
        sizes = np.asarray(corpus_lengths(docs), dtype=np.float64)
        self.prob = sizes / sizes.sum()
        # a mapped corpus's patches are found per drawn document (LazyLengths), never all at once
        self.found = None if isinstance(lengths, LazyLengths) else [self.starts_of(n, len(d))
                                                                    for n, d in zip(lengths, docs)]

    def starts_of(self, lengths: np.ndarray, size: int) -> tuple[np.ndarray, int]:
        """A document's patch starts, and how many of them start a window: those that leave a full
        window, and the first one past them (whose window runs off the end, a little padded), so a
        document's last bytes are trained on too."""
        starts = patch_starts(lengths)
        last = max(0, size - self.max_seq_len)
        return starts, min(len(starts), int(np.searchsorted(starts, last, side="right")) + 1)

    def batch(self, step: int, batch_size: int, rank: int = 0, world_size: int = 1):
        """x (B', T) bytes, lengths (B', P) zero-padded, y (B', T) targets (-100 past a short document)."""
        if batch_size % world_size:
            raise ValueError(f"batch_size {batch_size} is not divisible by {world_size} processes")
        rng = np.random.default_rng((self.seed, step))
        doc = rng.choice(len(self.docs), size=batch_size, p=self.prob)
        pick = rng.random(batch_size)
        per = batch_size // world_size
        windows = []
        for i in range(rank * per, (rank + 1) * per):
            d, data = doc[i], self.docs[doc[i]]
            st, n_ok = self.found[d] if self.found is not None else self.starts_of(self.lengths[d], len(data))
            s = int(st[int(pick[i] * n_ok)])
            windows.append((data, st, s, min(s + self.max_seq_len, len(data))))
        x, lengths = window_batch(windows, self.max_seq_len)  # a window's patch lengths sum to its bytes
        y = np.where(np.arange(self.max_seq_len) < lengths.sum(1, keepdims=True), x, -100)
        return torch.from_numpy(x), torch.from_numpy(lengths), torch.from_numpy(y)


def eval_windows(docs: list[bytes], lengths: list[np.ndarray], max_seq_len: int):
    """(doc, start, score_from, end) windows covering every byte of every document.

    Each window starts at a patch start; after the first, a window starts about max_seq_len/2 before the first
    byte it scores, so scored bytes keep context (as the entropy model's evaluation does).
    """
    jobs = []
    for i, (d, n) in enumerate(zip(docs, lengths)):
        starts = patch_starts(n)
        cursor = 0
        while cursor < len(d):
            want = max(0, cursor - max_seq_len // 2)
            s = int(starts[np.searchsorted(starts, want, side="right") - 1])
            if s + max_seq_len <= cursor:  # patches longer than half a window: start at the last start
                s = int(starts[np.searchsorted(starts, cursor, side="right") - 1])
            e = min(s + max_seq_len, len(d))
            jobs.append((i, s, cursor, e))
            cursor = e
    return jobs


@torch.inference_mode()
def evaluate(model: BLTModel, docs: list[bytes], lengths: list[np.ndarray], max_seq_len: int,
             batch_size: int = 8, device=None, per_document: bool = False):
    """(bits per byte, bytes) over every byte of `docs`, patched by `lengths`; per_document=True adds each
    document's nats and bytes (two arrays in the order of `docs`: the study's bootstrap over documents).

    In fp32 on every device, as the baselines are scored (template_llm.evaluate_bpb), so that a comparison
    never mixes precisions."""
    model.eval()
    device = device or next(model.parameters()).device
    jobs = eval_windows(docs, lengths, max_seq_len)
    starts = [patch_starts(n) for n in lengths]
    doc_nats, doc_bytes = np.zeros(len(docs)), np.array([len(d) for d in docs], dtype=np.int64)
    for b in range(0, len(jobs), batch_size):
        chunk = jobs[b:b + batch_size]
        x, pl = window_batch([(docs[i], starts[i], s, e) for i, s, _, e in chunk], max_seq_len)
        xt = torch.from_numpy(x).to(device)
        logits, _ = model(xt, torch.from_numpy(pl).to(device))
        nll = F.cross_entropy(logits.float().transpose(1, 2), xt, reduction="none").cpu().double()  # (B, T)
        for r, (i, s, k0, k1) in enumerate(chunk):
            doc_nats[i] += float(nll[r, k0 - s:k1 - s].sum())
    total_bytes = int(doc_bytes.sum())
    if total_bytes == 0:
        raise ValueError("no bytes to evaluate")
    bpb = float(doc_nats.sum()) / (math.log(2) * total_bytes)
    return (bpb, total_bytes, doc_nats, doc_bytes) if per_document else (bpb, total_bytes)


# ----------------------------------------------------------------------------------------------------
# Training


def train_blt(model: BLTModel, dataset: PatchedDataset, config: TrainConfig, out: str = "blt_model.pth",
              device_name: str | None = None, resume: str | None = None, compile: bool = False,
              per_document: bool = False, fsdp: bool = False) -> dict:
    """Train `model` end to end on `dataset`; evaluates held-out BPB and saves `out`. Returns the report.

    `resume` is a checkpoint of the same run (same patches, data and settings) to continue from, exactly.
    per_document=True adds doc_nats and doc_bytes of the final evaluation (every held-out document).
    """
    T, pc = model.config.max_seq_len, dataset.patch_config
    if pc.size_bounds[1] > T:
        raise ValueError(f"max_patch_size {pc.size_bounds[1]} exceeds max_seq_len {T}")
    dist, device = setup_distributed(device_name)
    try:
        model.to(device)
        if fsdp:  # sharded before the optimizer is made (FSDP2)
            shard(model, dist)
        optimizer = make_optimizer(model, config.lr, config.weight_decay, device)
        # resume_run refuses a checkpoint of other documents, patches or entropy model (dataset.meta())
        history = resume_run(resume, model, optimizer, config, dataset.meta()) if resume else {"step": 0}
        trained = maybe_compile(model if fsdp else distribute(model, dist), compile)
        windows = PatchedWindows(dataset.train_docs, dataset.train_lengths, T, config.seed)
        mean_ps, n_train = dataset.mean_patch_size, int(corpus_lengths(dataset.train_docs).sum())

        per_doc = {}  # the final evaluation's per-document figures (with per_document)

        def evaluate_held_out(step):  # intermediate evaluations score a prefix of the held-out documents
            docs, lengths = dataset.val_docs, dataset.val_lengths
            if step != config.max_steps:
                keep = np.searchsorted(np.cumsum(corpus_lengths(docs)), config.eval_max_bytes) + 1
                docs, lengths = docs[:keep], lengths[:keep]
            bpb, n, *docs_out = evaluate(model, docs, lengths, T, device=device,
                                         per_document=per_document and step == config.max_steps)
            per_doc.update(zip(("doc_nats", "doc_bytes"), docs_out))
            return {"val_bpb": bpb, "val_bytes": n}

        if dist.is_main:
            threshold = f" threshold {pc.entropy_threshold:.4f}" if pc.needs_entropy else ""
            print(f"BLT: {count_params(model):,} params ({model.num_params(include_hash=False):,} without "
                  f"hash tables); patching {pc.method}{threshold}, mean patch {mean_ps:.2f} bytes; train "
                  f"{len(dataset.train_docs)} docs {n_train:,} bytes, val {len(dataset.val_docs)} docs "
                  f"{int(corpus_lengths(dataset.val_docs).sum()):,} bytes; device {device}, "
                  f"{dist.world_size} process(es)")
        result = train(trained, optimizer, windows, config, device=device, dist=dist, out=out,
                       start_step=history["step"], evaluate=evaluate_held_out, meta=dataset.meta(),
                       desc=f"BLT (patch {mean_ps:.2f})", history=history,
                       bytes_per_step=config.batch_size // dist.world_size * T)
        final = result["evals"][-1] if result["evals"] else {}
        fpb = flops_per_byte(model.config, mean_ps, T)
        return {"val_bpb": final.get("val_bpb", float("nan")), "val_bytes": final.get("val_bytes", 0),
                "mean_patch_size": mean_ps, "params": count_params(model),
                "params_without_hash": model.num_params(include_hash=False), "flops_per_byte": fpb,
                "train_flops": 3 * fpb * config.batch_size * T * config.max_steps,
                "patching_flops_per_byte": dataset.patching_flops_per_byte,
                "bytes_per_s": result["bytes_per_s"],
                "train_loss": result["loss"], "train_bytes": n_train, "checkpoint": out, "method": pc.method,
                "entropy_threshold": pc.entropy_threshold if pc.needs_entropy else None,
                "steps": config.max_steps, "evals": result["evals"], **per_doc,
                "finished_before": result.get("finished_before", False)}
    finally:
        cleanup_distributed()


# ----------------------------------------------------------------------------------------------------
# Loading a trained BLT with its patching (for --eval and --generate)


def load_blt(path: str, device="cpu") -> BLTModel:
    """The BLT saved at `path`, in eval mode, with `model.patcher` set to the patching it was trained with
    (its entropy model loaded and checked against the fingerprint the checkpoint recorded)."""
    state = load_checkpoint(path, "blt")
    meta = state["_extra_state"].get("meta") or {}
    patch = meta.get("patch", meta.get("patch_config"))  # "patch_config": checkpoints before the redesign
    if patch is None:
        raise CheckpointError(f"{path}: carries no patch config (not written by train_blt.py)")
    model = model_from_state(state, path).to(device).eval()
    pc = config_from_dict(PatchConfig, {k: v for k, v in patch.items() if k != "ensemble"})
    entropy_model = None
    if pc.needs_entropy:
        epath = meta.get("entropy_model", meta.get("entropy_model_path"))
        if not epath:
            raise CheckpointError(f"{path}: trained with entropy patching but names no entropy model")
        many = isinstance(epath, list)  # an ensemble: its models' paths and fingerprints, in order
        paths = epath if many else [epath]
        prints = meta.get("entropy_fingerprint") if many else [meta.get("entropy_fingerprint")]
        if not isinstance(prints, list) or len(prints) != len(paths):
            raise CheckpointError(f"{path}: names {len(paths)} entropy models but not a fingerprint for each")
        models = [load_entropy_model(p, device=device) for p in paths]
        for p, m, fp in zip(paths, models, prints):
            if model_fingerprint(m) != fp:
                raise CheckpointError(f"{path}: its entropy model {p} has changed since training "
                                      "(fingerprint differs)")
        entropy_model = models if many else models[0]
    model.patcher = patcher_from_meta(patch, entropy_model)
    return model


# ----------------------------------------------------------------------------------------------------
# Command line


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_args(p, BLT_PRESETS, out="blt_model.pth", model="BLT",
                 quick_help="a small run: a few minutes on a CPU")
    p.add_argument("--entropy_model_path", default=None,
                   help="the patcher's entropy model (default: entropy_model.pth; with --train_entropy, "
                   "written beside --out as OUT_STEM.entropy.pth)")
    p.add_argument("--train_entropy", action="store_true",
                   help="train that entropy model first, on this corpus's training split, at the size of "
                   "--preset (ENTROPY_FOR_PRESET) with the training flags given")
    p.add_argument("--fsdp", action="store_true",
                   help="shard parameters, gradients and AdamW state over torchrun processes (FSDP2); "
                        "checkpoints add a torch.distributed.checkpoint folder, OUT.dcp")
    p.add_argument("--generate", action="store_true", help="continue --prompt with --checkpoint")
    p.add_argument("--prompt", default="", help="text to continue with --generate")
    p.add_argument("--max_new_bytes", type=int, default=200, help="bytes to generate")
    p.add_argument("--temperature", type=float, default=0.8, help="sampling temperature (0 = greedy)")
    p.add_argument("--top_k", type=int, default=None, help="sample among the k most likely bytes")
    p.add_argument("--show_patches", action="store_true", help="print where the patches of the output fall")
    add_config_args(p, BLTConfig, aliases={"max_seq_len": ("seq_len",)})
    add_config_args(p, PatchConfig, skip=("cache_patches",), defaults=BLT_PATCHING,
                    aliases={"method": ("patching",), "entropy_threshold": ("threshold",)})
    add_config_args(p, TrainConfig, defaults=BLT_TRAINING)
    args = p.parse_args(argv)
    if (args.generate or args.eval) and not args.checkpoint:
        p.error("--eval and --generate need --checkpoint")
    try:
        check_run_args(args)
        report = eval_or_generate(args) if args.generate or args.eval else train_command(args)
    except Interrupted as e:
        print(e, file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("interrupted before the BLT's training started; nothing of it was saved", file=sys.stderr)
        return 130
    except (CheckpointError, DataError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if is_main_process():  # torchrun: rank 0 speaks for the job
        write_report(args.report, report)
    return 0


def train_command(args) -> dict:
    """Train a BLT as the flags say: the corpus, its entropy model (first trained with --train_entropy)."""
    mcfg = model_config(args.preset, args.quick_demo, **config_overrides(args, BLTConfig))
    pcfg = patch_config(**config_overrides(args, PatchConfig))
    tcfg = train_config(args.quick_demo, **config_overrides(args, TrainConfig))
    epath = args.entropy_model_path = entropy_model_path(args, pcfg)
    ecfg = entropy_config(args) if args.train_entropy and pcfg.needs_entropy else None
    docs = load_corpus(args.data, tcfg.max_bytes, text_field=args.text_field)
    check_split(*split_documents(docs), args.data)
    if ecfg is not None:
        train_entropy(args, ecfg, docs)
    entropy_model = load_entropy_model(epath, pick_device(args.device)) if pcfg.needs_entropy else None
    dataset = prepare_dataset(docs, pcfg, entropy_model, epath if is_hf(epath) else os.path.abspath(epath))
    report = train_blt(build_model(mcfg, tcfg.seed), dataset, tcfg, args.out, args.device, resume_path(args),
                       args.compile, fsdp=args.fsdp)
    if is_main_process():
        done = f"{resume_path(args)}: already finished; its " if report["finished_before"] else ""
        print(f"{done}held-out {report['val_bpb']:.4f} bits per byte on {report['val_bytes']:,} bytes; mean "
              f"patch {report['mean_patch_size']:.2f} bytes; {report['bytes_per_s']:,.0f} training bytes/s; "
              f"saved {args.out}")
    return report


# the entropy model --train_entropy trains for each BLT size: (entropy_llm preset, its training defaults)
TINY_ENTROPY = dict(max_steps=200, warmup_steps=20, eval_interval=0, ckpt_interval=0)
ENTROPY_FOR_PRESET = {"tiny": ("tiny", TINY_ENTROPY), "cpu": ("cpu", {}), "cpu-fast": ("cpu", {})}
ENTROPY_FOR_LARGER = ("seed", {})  # every larger BLT preset


def entropy_model_path(args, pcfg: PatchConfig) -> str:
    """The entropy model a run reads, or writes with --train_entropy: beside --out unless named.

    A model that --train_entropy would write over is refused unless --overwrite (or --resume, which
    continues the one this run wrote); a model to read must exist; an entropy-free method needs none.
    """
    if not (args.train_entropy and pcfg.needs_entropy):
        path = args.entropy_model_path or "entropy_model.pth"
        if pcfg.needs_entropy and not is_hf(path) and not os.path.exists(path):
            raise CheckpointError(f"{path}: no such file; train an entropy model first with `python "
                                  "entropy_llm.py --quick_demo`, or add --train_entropy (or use --method "
                                  "space|static|byte, which need none)")
        return path
    path = args.entropy_model_path or os.path.splitext(args.out)[0] + ".entropy.pth"
    if os.path.abspath(path) == os.path.abspath(args.out):
        raise ValueError(f"--entropy_model_path {path}: is --out itself; give the entropy model its own file")
    check_output(path, "--entropy_model_path (written by --train_entropy)", may_replace=False,
                 overwrite=args.overwrite or args.resume)
    return path


def entropy_config(args):
    """--train_entropy's EntropyConfig: the size that goes with --preset, the quick demo's settings, then
    the training flags given on the command line (steps, batch, lr, bytes, seed...)."""
    preset, defaults = ENTROPY_FOR_PRESET.get(args.preset, ENTROPY_FOR_LARGER)
    given = config_overrides(args, TrainConfig)
    return entropy_llm.build_config(preset, args.quick_demo, **{**defaults, **given})


def train_entropy(args, ecfg, docs):
    """--train_entropy: the entropy model on this corpus's training documents (never its held-out ones).

    With --resume an entropy model this run already wrote is continued (or, finished, reused as it is).
    """
    train_docs, val_docs = split_documents(docs)
    path = args.entropy_model_path
    resume = path if args.resume and os.path.exists(path) else None
    rep = entropy_llm.train_entropy_model(ecfg, train_docs, val_docs, path, args.device, resume=resume)
    print(f"entropy model: held-out {rep['val_bpb']:.4f} bits per byte; saved {path}")


def eval_or_generate(args) -> dict:
    """--eval: BPB of --checkpoint over every byte of --data; --generate: --prompt continued."""
    if args.max_new_bytes < 0:
        raise ValueError(f"--max_new_bytes must not be negative, got {args.max_new_bytes}")
    if not (math.isfinite(args.temperature) and args.temperature >= 0):
        raise ValueError(f"--temperature must be a finite number >= 0, got {args.temperature}")
    if args.top_k is not None and args.top_k < 1:
        raise ValueError(f"--top_k must be at least 1, got {args.top_k}")
    model = load_blt(args.checkpoint, pick_device(args.device))
    if args.eval:
        docs = load_corpus(args.data, getattr(args, "max_bytes", None), text_field=args.text_field)
        t0 = time.perf_counter()
        lengths = model.patcher.document_patch_lengths(docs)
        bpb, n = evaluate(model, docs, lengths, model.config.max_seq_len)
        report = {"val_bpb": bpb, "num_bytes": n, "mean_patch_size": n / sum(map(len, lengths)),
                  "bytes_per_s": n / (time.perf_counter() - t0), "checkpoint": args.checkpoint,
                  "data": args.data}
        print(f"{args.data}: {bpb:.4f} bits per byte over {n:,} bytes "
              f"(mean patch {report['mean_patch_size']:.2f})")
    else:
        prompt = args.prompt.encode("utf-8")
        t0 = time.perf_counter()
        new = model.generate(prompt, args.max_new_bytes, temperature=args.temperature, top_k=args.top_k,
                             seed=getattr(args, "seed", None))
        dt = time.perf_counter() - t0
        text = (prompt + new).decode("utf-8", errors="replace")
        print(format_patches(model.patcher.create_patches(prompt + new)) if args.show_patches else text)
        report = {"prompt": args.prompt, "output": new.decode("utf-8", errors="replace"),
                  "new_bytes": len(new), "bytes_per_s": len(new) / dt if dt > 0 else float("nan")}
    return report


if __name__ == "__main__":
    sys.exit(main())
