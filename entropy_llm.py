"""The entropy model: a small causal byte-level LM whose next-byte entropies drive patching.

Train (defaults are CPU-sized; --preset names a model size: tiny, cpu, seed = the seed's 384 x 6 x 512):
    python entropy_llm.py                                   # builtin corpus -> entropy_model.pth
    python entropy_llm.py --quick_demo                      # a few minutes on a laptop CPU
    python entropy_llm.py --preset seed --batch_size 64 --max_steps 20000 --lr 1e-3 \
        --data hf:wikitext:wikitext-103-raw-v1 --max_bytes 500000000      # a GPU run
    python entropy_llm.py --resume                          # continue the run saved in entropy_model.pth
    torchrun --standalone --nproc_per_node=2 entropy_llm.py # DistributedDataParallel (gloo on CPU)
Evaluate bits per byte over every byte of some data:
    python entropy_llm.py --eval --checkpoint entropy_model.pth --data my_text.txt --report r.json

In Python:
    model = load_entropy_model("entropy_model.pth")        # from save_entropy_model
    H = compute_entropies(model, b"some bytes")             # float32 nats, one per byte

Shapes: B batch, T bytes in a window, C model width, V = 256 byte classes.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as tdist
import torch.nn.functional as F
from tqdm import tqdm

from byte_data import (
    ByteWindows,
    DataError,
    MappedCorpus,
    document_digests,
    entropy_file,
    is_prepared,
    load_corpus,
    precomputed_entropies,
    split_documents,
)
from common import (
    CausalLM,
    add_config_args,
    block_flops_per_token,
    causal_context,
    check_batch_size,
    config_from_dict,
    config_overrides,
    count_params,
    lm_flops_per_token,
    mlp_hidden,
    pick_device,
    write_report,
)
from save_entropy_model import CheckpointError, data_digest, load_entropy_model, model_fingerprint
from training import (
    Interrupted,
    TrainFields,
    add_run_args,
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
class EntropyConfig(TrainFields):
    # model
    d_model: int = 128  # width of the residual stream
    n_heads: int = 4  # attention heads (d_model / n_heads = head dim, even for rotary)
    n_layers: int = 4  # transformer blocks
    max_seq_len: int = 256  # W: each layer attends to the W-1 positions up to its own (sliding window)
    vocab_size: int = 256  # byte values 0..255; fixed
    sliding_window: bool = True  # False: full attention in fixed windows of W (checkpoints from before)
    row_len: int = 0  # bytes per training row (0 = W-1: each sees its whole row); longer: the window slides
    # one window per row: at equal bytes per step, rows of 2W and 4W (fewer, longer rows) ended 0.08 and
    # 0.22 held-out BPB worse at the quick scale, one window as good as full attention (docs/research)
    batch_size: int = 32  # rows of train_row_len bytes per optimizer step (global, over all processes)

    def __post_init__(self):
        if self.vocab_size != 256:
            raise ValueError("vocab_size is 256: the entropy model reads and predicts raw bytes")
        self.check_lm_sizes()
        if self.row_len < 0:
            raise ValueError("row_len must not be negative")

    @property
    def train_row_len(self) -> int:
        """Bytes per training row: row_len with the sliding window, by default W-1 (the most bytes whose
        every byte sees the whole row before it: the plain causal kernel computes the window); else W."""
        return (self.row_len or self.max_seq_len - 1) if self.sliding_window else self.max_seq_len

    @classmethod
    def from_dict(cls, d: dict) -> EntropyConfig:
        """A checkpoint's config; one saved before the sliding window had full attention in windows."""
        return config_from_dict(cls, {"sliding_window": False, **d})


# Model sizes (--preset). "cpu" is the default; "seed" is the seed README's model, meant for a GPU.
ENTROPY_PRESETS = {
    "tiny": dict(d_model=32, n_heads=2, n_layers=1, max_seq_len=64),
    "cpu": {},
    "seed": dict(d_model=384, n_heads=8, n_layers=6, max_seq_len=512),
}
# --quick_demo: a shorter run on less data, a few minutes on a CPU
QUICK_DEMO = dict(max_steps=400, max_bytes=1_500_000, eval_interval=0, ckpt_interval=0)


class MinimalLLM(CausalLM):
    """Causal byte transformer. logits[:, t] is the distribution of byte idx[:, t] given idx[:, :t].

    The input at position t is the embedding of byte t-1; position 0 reads a learned start vector, so
    every byte value stays an ordinary byte and a document's first byte has a prediction too.
    """

    kind = "entropy_llm"
    config_class = EntropyConfig
    arch_fields = ("d_model", "n_heads", "n_layers", "vocab_size")


def flops_per_byte(config: EntropyConfig, seq_len: int | None = None) -> float:
    """Forward FLOPs per byte: the blocks at mean causal context, plus the 256-way head."""
    seq_len = seq_len or config.max_seq_len
    if not config.sliding_window:
        return lm_flops_per_token(config.d_model, config.n_layers, config.vocab_size, seq_len)
    context = causal_context(seq_len, config.max_seq_len - 1)  # each layer: the W-1 positions up to its own
    return config.n_layers * block_flops_per_token(config.d_model, mlp_hidden(config.d_model), context) \
        + 2 * config.d_model * config.vocab_size


# ----------------------------------------------------------------------------------------------------
# Entropies and per-byte scores over long documents


def entropy_windows(n: int, W: int) -> list[tuple[int, int, int]]:
    """(start, keep_from, keep_to) of the windows that cover n bytes.

    Windows start every W/2 bytes and keep only their second half (the first keeps everything), so every
    byte past the first window is scored with at least W/2 bytes of context. Windows depend only on the
    positions, never on n, so a prefix gets exactly the windows (and values) of the whole.
    """
    S = max(1, W // 2)
    out = [(0, 0, min(W, n))]
    s = S
    while s + (W - S) < n:
        out.append((s, s + W - S, min(s + W, n)))
        s += S
    return out


def entropy_of(logits):
    """(..., V) logits -> (..., V) log-probabilities (fp32) and (...) entropies in nats."""
    logp = F.log_softmax(logits.float(), dim=-1)
    return logp, -(logp.exp() * logp).sum(-1)


@torch.inference_mode()
def score_sequences(model, seqs, batch_size: int = 32, want_nll: bool = False,
                    show_progress: bool | None = None, unit: str = "B"):
    """Per sequence: entropy (nats, float32) and, with want_nll, -log p (nats, float64) at every position.

    `seqs` are bytes or 1-D integer arrays of token ids; `model` is any CausalLM-style model whose
    logits[:, t] predict id t. Sequences longer than the model's window are scored in overlapping
    windows (see entropy_windows); windows of all sequences share batches, each in its own row.
    """
    check_batch_size(batch_size)
    model.eval()
    W = model.config.max_seq_len
    device = next(model.parameters()).device
    arrays = [np.frombuffer(s, dtype=np.uint8) if isinstance(s, (bytes, bytearray)) else np.asarray(s)
              for s in seqs]
    if getattr(model, "window", None):
        return score_windowed(model, arrays, batch_size * W, want_nll, show_progress, unit)
    ent = [np.zeros(len(a), dtype=np.float32) for a in arrays]
    nll = [np.zeros(len(a), dtype=np.float64) for a in arrays] if want_nll else None
    jobs = [(i, *w) for i, a in enumerate(arrays) if len(a) for w in entropy_windows(len(a), W)]
    total = sum(len(a) for a in arrays)
    if show_progress is None:
        show_progress = total > 1_000_000
    bar = tqdm(total=total, desc="scoring", unit=unit, unit_scale=True, disable=not show_progress)
    for b in range(0, len(jobs), batch_size):
        chunk = jobs[b:b + batch_size]
        x = np.zeros((len(chunk), W), dtype=np.int64)  # rows padded on the right: causal, so harmless
        for r, (i, s, _, e) in enumerate(chunk):
            x[r, : e - s] = arrays[i][s:e]
        xt = torch.from_numpy(x).to(device)
        logits, _ = model(xt)  # fp32 even on CUDA: generation streams fp32 entropies, patches must agree
        logp, h = entropy_of(logits)  # (B, T, V), (B, T)
        h = h.cpu().numpy()
        if want_nll:
            nl = -logp.gather(-1, xt.unsqueeze(-1)).squeeze(-1).double().cpu().numpy()  # (B, T)
        for r, (i, s, k0, k1) in enumerate(chunk):
            ent[i][k0:k1] = h[r, k0 - s:k1 - s]
            if want_nll:
                nll[i][k0:k1] = nl[r, k0 - s:k1 - s]
            bar.update(k1 - k0)
    bar.close()
    return (ent, nll) if want_nll else ent


@torch.inference_mode()
def score_windowed(model, arrays, slice_len: int, want_nll: bool, show_progress: bool | None, unit: str):
    """score_sequences for a sliding-window model: one pass, each position computed once.

    The sequences are laid end to end in one row, each padded to whole chunks (model.chunk), and run in
    slices of about slice_len positions; each slice continues the previous one's keys and values
    (model.window_blocks), and a chunk never reads keys before its own sequence's start.
    """
    Q, back = model.chunk, model.back
    device = next(model.parameters()).device
    lens = np.array([len(a) for a in arrays], dtype=np.int64)
    padded = -(-lens // Q) * Q
    offs = np.concatenate([[0], np.cumsum(padded)])  # where each sequence starts in the row
    total_pos = int(offs[-1])
    ids = np.zeros(total_pos, dtype=np.int64)  # input of position p: the id before it
    first = np.zeros(total_pos // Q, dtype=np.int64)  # first chunk of each chunk's sequence
    starts = np.zeros(total_pos, dtype=bool)
    pos = np.arange(total_pos) - np.repeat(offs[:-1], padded)  # offset from its sequence's start (rotary)
    for i, a in enumerate(arrays):
        o = offs[i]
        if len(a):
            ids[o + 1:o + len(a)] = a[:-1]
            starts[o] = True
        first[o // Q:offs[i + 1] // Q] = o // Q
    ent = [np.zeros(n, dtype=np.float32) for n in lens]
    nll = [np.zeros(n, dtype=np.float64) for n in lens] if want_nll else None
    h_all = np.zeros(total_pos, dtype=np.float32)
    nl_all = np.zeros(total_pos, dtype=np.float64) if want_nll else None
    tgt = np.zeros(total_pos, dtype=np.int64)
    for i, a in enumerate(arrays):
        tgt[offs[i]:offs[i] + len(a)] = a
    if show_progress is None:
        show_progress = int(lens.sum()) > 1_000_000
    bar = tqdm(total=total_pos, desc="scoring", unit=unit, unit_scale=True, disable=not show_progress)
    step = max(Q, slice_len // Q * Q)
    carries, j = None, torch.arange(back + 1, device=device)
    for s in range(0, total_pos, step):
        e = min(s + step, total_pos)
        x = model.embed(torch.from_numpy(ids[s:e]).to(device)).unsqueeze(0)  # (1, L, C)
        st = torch.from_numpy(starts[s:e]).to(device)
        x[0, st] = model.start.to(x.dtype)  # a sequence's first position reads the start vector
        g = torch.arange(s // Q, e // Q, device=device).view(-1, 1)  # (S, 1) chunk index in the row
        ok = g - back + j >= torch.from_numpy(first[s // Q:e // Q]).to(device).view(-1, 1)  # (S, back+1)
        h, carries = model.window_blocks(x, ok, carries, torch.from_numpy(pos[s:e]).to(device))
        logp, H = entropy_of(model.head(model.norm(h)))  # (1, L, V), (1, L)
        h_all[s:e] = H[0].cpu().numpy()
        if want_nll:
            t = torch.from_numpy(tgt[s:e]).to(device).view(1, -1, 1)
            nl_all[s:e] = -logp.gather(-1, t)[0, :, 0].double().cpu().numpy()
        bar.update(e - s)  # positions, chunk padding included
    bar.close()
    for i, n in enumerate(lens):
        ent[i][:] = h_all[offs[i]:offs[i] + n]
        if want_nll:
            nll[i][:] = nl_all[offs[i]:offs[i] + n]
    return (ent, nll) if want_nll else ent


def score_bytes(model: MinimalLLM, docs: list[bytes], batch_size: int = 32, want_nll: bool = False,
                show_progress: bool | None = None):
    """Per document: entropy H[i] (nats, float32) and, with want_nll, -log p(byte i) (nats, float64)."""
    return score_sequences(model, docs, batch_size, want_nll, show_progress)


def compute_entropies(model: MinimalLLM, data, batch_size: int | None = None,
                      show_progress: bool | None = None):
    """H[i] in nats for every byte: one float32 array for `bytes`, a list of arrays for a list of documents.

    batch_size windows per forward: by default 8 on a CPU (larger batches overflow its caches and run
    slower; bench/entropy_throughput.py) and 64 on a GPU. Rows are independent, so it never changes H.
    """
    if batch_size is None:
        batch_size = 64 if next(model.parameters()).device.type == "cuda" else 8
    check_batch_size(batch_size)
    if isinstance(data, (bytes, bytearray, memoryview)):
        return score_bytes(model, [bytes(data)], batch_size, show_progress=show_progress)[0]
    return score_bytes(model, [bytes(d) for d in data], batch_size, show_progress=show_progress)


def evaluate_bpb(model: MinimalLLM, docs: list[bytes], batch_size: int = 32) -> tuple[float, int]:
    """(bits per byte, number of bytes) over every byte of `docs`, each scored from its own start."""
    _, nll = score_bytes(model, docs, batch_size, want_nll=True)
    n = sum(len(a) for a in nll)
    if n == 0:
        raise ValueError("no bytes to evaluate")
    return float(sum(a.sum() for a in nll) / (math.log(2) * n)), n


def cap_bytes(docs: list[bytes], max_bytes: int) -> list[bytes]:
    """The first documents of `docs` up to max_bytes (whole documents, at least one)."""
    out, total = [], 0
    for d in docs:
        if out and total + len(d) > max_bytes:
            break
        out.append(d)
        total += len(d)
    return out


# ----------------------------------------------------------------------------------------------------
# Entropies of a prepared corpus, precomputed once and shared by the ranks of a torchrun job

PRECOMPUTE_CHUNK_BYTES = 1 << 20  # documents are computed in chunks of about 1 MB: the unit of resuming


def entropy_chunks(lengths: np.ndarray, chunk_bytes: int = PRECOMPUTE_CHUNK_BYTES) -> list[tuple[int, int]]:
    """(first, end) document ranges of about chunk_bytes each, fixed by the corpus alone: which rank computes
    a chunk never changes its batches, so N processes write exactly one process's values."""
    ends = np.flatnonzero(np.diff(np.cumsum(lengths) // chunk_bytes, prepend=0)) + 1
    bounds = [0, *[int(e) for e in ends if 0 < e < len(lengths)], len(lengths)]
    return list(zip(bounds[:-1], bounds[1:]))


def precompute_entropies(model, folder: str, device_name: str | None = None, batch_size: int | None = None,
                         chunk_bytes: int = PRECOMPUTE_CHUNK_BYTES, show_progress: bool = True) -> dict:
    """Write H (float16) of every document of the prepared corpus `folder` to byte_data.entropy_file.

    Under torchrun chunk k goes to rank k mod N; a chunk is marked done once its values are flushed, so an
    interrupted run resumes with the chunks not yet marked; the file's .json, written last, says it is whole
    (byte_data.precomputed_entropies reads it). Returns the report (bytes/s over every process).
    """
    if not is_prepared(folder):
        raise DataError(f"{folder}: not a prepared corpus; write one with `python byte_data.py prepare "
                        f"--data {folder} --out DIR` and pass --data DIR")
    dist, device = setup_distributed(device_name)
    try:
        model = model.to(device).eval()
        fingerprint = model_fingerprint(model)
        corpus = MappedCorpus(folder)
        corpus = corpus.view(np.arange(len(corpus.side)))  # every stored document, dropped ones too
        path, total = entropy_file(folder, fingerprint), int(corpus.offsets[-1])
        parts = path + ".parts"
        chunks = entropy_chunks(corpus.lengths, chunk_bytes)
        report = {"entropies": path, "fingerprint": fingerprint, "num_bytes": total, "chunks": len(chunks),
                  "processes": dist.world_size, "computed_chunks": 0, "bytes_per_s": float("nan")}
        if precomputed_entropies(corpus, fingerprint) is not None:
            return report
        if dist.is_main:
            os.makedirs(parts, exist_ok=True)
            if not os.path.exists(path) or os.path.getsize(path) != 2 * total:
                with open(path, "wb") as f:  # a sparse file of the final size: every rank writes its chunks
                    f.truncate(2 * total)
                shutil.rmtree(parts)
                os.makedirs(parts)
        if dist.enabled:
            tdist.barrier()
        values = np.memmap(path, dtype=np.float16, mode="r+")
        mine = [k for k in range(dist.rank, len(chunks), dist.world_size)
                if not os.path.exists(os.path.join(parts, f"{k:06d}"))]
        done = 0
        bar = tqdm(total=int(sum(corpus.lengths[a:b].sum() for a, b in (chunks[k] for k in mine))),
                   desc=f"entropies (rank {dist.rank})", unit="B", unit_scale=True,
                   disable=not (show_progress and dist.is_main))
        t0 = time.perf_counter()
        for k in mine:
            a, b = chunks[k]
            hs = compute_entropies(model, [corpus[i] for i in range(a, b)], batch_size)
            for i, h in zip(range(a, b), hs):
                s = int(corpus.starts[i])
                values[s:s + len(h)] = h.astype(np.float16)
            values.flush()
            open(os.path.join(parts, f"{k:06d}"), "w").close()
            done += int(corpus.lengths[a:b].sum())
            bar.update(int(corpus.lengths[a:b].sum()))
        bar.close()
        counts = torch.tensor([float(done), float(len(mine))], dtype=torch.float64)  # bytes, chunks
        seconds = torch.tensor([time.perf_counter() - t0], dtype=torch.float64)
        if dist.enabled:
            tdist.all_reduce(counts)
            tdist.all_reduce(seconds, op=tdist.ReduceOp.MAX)  # the job takes as long as its slowest rank
        report.update(computed_chunks=int(counts[1]),
                      bytes_per_s=float(counts[0] / seconds[0]) if counts[0] else float("nan"))
        if dist.is_main:
            missing = [k for k in range(len(chunks)) if not os.path.exists(os.path.join(parts, f"{k:06d}"))]
            if missing:
                raise RuntimeError(f"{path}: chunks {missing[:5]} were not written")
            info = {"fingerprint": fingerprint, "corpus_sha256": corpus.info["sha256"], "dtype": "float16",
                    "window": model.config.max_seq_len, "chunks": len(chunks)}
            with open(path + ".json.tmp", "w") as f:
                json.dump(info, f)
            os.replace(path + ".json.tmp", path + ".json")
            shutil.rmtree(parts)
        if dist.enabled:
            tdist.barrier()
        return report
    finally:
        cleanup_distributed()


# ----------------------------------------------------------------------------------------------------
# Training


def train_entropy_model(config: EntropyConfig, train_docs: list[bytes], val_docs: list[bytes], out: str,
                        device_name: str | None = None, resume: str | None = None, compile: bool = False,
                        fsdp: bool = False) -> dict:
    """Train MinimalLLM on train_docs, evaluate held-out BPB on val_docs, save to `out`; returns the report.

    `resume` is a checkpoint of the same run to continue from (exactly: the same batches follow).
    """
    dist, device = setup_distributed(device_name)
    try:
        seed_everything(config.seed)
        model = MinimalLLM(config).to(device)
        if fsdp:  # sharded before the optimizer is made (FSDP2)
            shard(model, dist)
        optimizer = make_optimizer(model, config.lr, config.weight_decay, device)
        meta = {"train_bytes": sum(map(len, train_docs)), "train_documents": document_digests(train_docs),
                "train_data": data_digest(train_docs)}
        history = resume_run(resume, model, optimizer, config, meta) if resume else {"step": 0}
        trained = maybe_compile(model if fsdp else distribute(model, dist), compile)
        windows = ByteWindows(train_docs, config.train_row_len, seed=config.seed)  # rows: train_row_len
        train_bytes = int(windows.lengths.sum())

        def evaluate(step):  # intermediate evaluations score a prefix of the held-out documents
            docs = val_docs if step == config.max_steps else cap_bytes(val_docs, config.eval_max_bytes)
            bpb, n = evaluate_bpb(model, docs)
            return {"val_bpb": bpb, "val_bytes": n}

        if dist.is_main:
            print(f"entropy model: {count_params(model):,} params, train {len(train_docs)} docs "
                  f"{train_bytes:,} bytes, val {len(val_docs)} docs {sum(map(len, val_docs)):,} bytes, "
                  f"device {device}, {dist.world_size} process(es)")
        result = train(trained, optimizer, windows, config, device=device, dist=dist, out=out,
                       start_step=history["step"], evaluate=evaluate if val_docs else None, meta=meta,
                       bytes_per_step=config.batch_size // dist.world_size * config.train_row_len,
                       desc="entropy LM", history=history)
        final = result["evals"][-1] if result["evals"] else {}
        return {"val_bpb": final.get("val_bpb", float("nan")), "val_bytes": final.get("val_bytes", 0),
                "train_bytes": train_bytes, "params": count_params(model),
                "bytes_per_s": result["bytes_per_s"], "train_loss": result["loss"],
                "flops_per_byte": flops_per_byte(config), "checkpoint": out, "steps": config.max_steps,
                "evals": result["evals"], "config": dataclasses.asdict(config),
                "finished_before": result.get("finished_before", False)}
    finally:
        cleanup_distributed()


def build_config(preset: str = "cpu", quick_demo: bool = False, **overrides) -> EntropyConfig:
    """EntropyConfig of a model size (ENTROPY_PRESETS), the quick-demo settings, then explicit overrides."""
    quick = QUICK_DEMO if quick_demo else {}
    return preset_config(EntropyConfig, ENTROPY_PRESETS, preset, quick, **overrides)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_args(p, ENTROPY_PRESETS, out="entropy_model.pth", model="entropy model",
                 quick_help="fewer steps and bytes: a few minutes on a CPU")
    add_config_args(p, EntropyConfig)
    p.add_argument("--fsdp", action="store_true",
                   help="shard parameters, gradients and AdamW state over torchrun processes (FSDP2); "
                        "checkpoints add a torch.distributed.checkpoint folder, OUT.dcp")
    p.add_argument("--precompute", action="store_true",
                   help="write the entropies of --checkpoint over the prepared corpus --data (float16, "
                        "beside its bytes; shared between torchrun processes, resumable)")
    p.add_argument("--precompute_chunk_bytes", type=int, default=PRECOMPUTE_CHUNK_BYTES,
                   help="bytes per chunk of --precompute: the unit a rank takes and a resumed run skips")
    args = p.parse_args(argv)
    if args.eval and not args.checkpoint:
        p.error("--eval needs --checkpoint")
    try:
        check_run_args(args)
        if args.precompute:
            if not args.checkpoint:
                p.error("--precompute needs --checkpoint")
            report = precompute_entropies(load_entropy_model(args.checkpoint), args.data, args.device,
                                          chunk_bytes=args.precompute_chunk_bytes)
            if not is_main_process():
                return 0
            print(f"{report['entropies']}: {report['num_bytes']:,} bytes, {report['computed_chunks']} of "
                  f"{report['chunks']} chunks computed now, {report['bytes_per_s']:,.0f} bytes/s over "
                  f"{report['processes']} process(es)")
        elif args.eval:
            model = load_entropy_model(args.checkpoint, device=pick_device(args.device))
            docs = load_corpus(args.data, getattr(args, "max_bytes", None), text_field=args.text_field)
            t0 = time.perf_counter()
            bpb, n = evaluate_bpb(model, docs)
            report = {"val_bpb": bpb, "num_bytes": n, "bytes_per_s": n / (time.perf_counter() - t0),
                      "checkpoint": args.checkpoint, "data": args.data}
            print(f"{args.data}: {bpb:.4f} bits per byte over {n:,} bytes")
        else:
            config = build_config(args.preset, args.quick_demo, **config_overrides(args, EntropyConfig))
            docs = load_corpus(args.data, max_bytes=config.max_bytes, text_field=args.text_field)
            train_docs, val_docs = split_documents(docs)
            check_split(train_docs, val_docs, args.data)
            report = train_entropy_model(config, train_docs, val_docs, args.out, args.device,
                                         resume_path(args), args.compile, args.fsdp)
            if not is_main_process():  # torchrun: rank 0 speaks for the job
                return 0
            done = f"{resume_path(args)}: already finished; its " if report["finished_before"] else ""
            print(f"{done}held-out {report['val_bpb']:.4f} bits per byte on {report['val_bytes']:,} bytes; "
                  f"{report['bytes_per_s']:,.0f} training bytes/s; saved {args.out}")
    except Interrupted as e:
        print(e, file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("interrupted before training started; nothing was saved", file=sys.stderr)
        return 130
    except (CheckpointError, DataError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    write_report(args.report, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())


# ----------------------------------------------------------------------------------------------------
# Streaming entropies (generation)


class EntropyStream:
    """H of the next byte, one byte at a time, with a KV cache: the values compute_entropies gives.

    push(byte) feeds a byte; next_entropy() is H[i] for i = the bytes pushed so far, read from the same
    window as compute_entropies reads it (entropy_windows: the last window covering bytes 0..i). Inside
    a window the cache grows by the bytes pushed since the last call; entering a new window restarts it
    from the start vector (the windowed model starts fresh there too).
    """

    def __init__(self, model):
        self.model = model.eval()
        self.W = model.config.max_seq_len
        self.rings = model.new_rings() if getattr(model, "window", None) else None  # sliding window
        self.history = bytearray()  # every byte pushed
        self.window_start = -1  # first byte of the window in the cache (-1: none yet)
        self.fed = 0  # bytes of history in the cache, as an absolute position
        self.caches = None
        self.logits = None  # (V,) the cache's prediction of byte `fed`

    def push(self, byte: int):
        self.history.append(byte)

    @torch.inference_mode()
    def next_entropy(self) -> float:
        if self.rings is not None:
            return self.next_windowed()
        i = len(self.history)
        s = entropy_windows(i + 1, self.W)[-1][0]  # the window that scores byte i
        m, dev = self.model, next(self.model.parameters()).device
        if s != self.window_start:  # a new window: fresh cache, start vector, then bytes s..i-1
            self.caches, self.window_start, self.fed = m.new_caches(1, self.W + 1), s, s
            self.logits = m.step(None, self.caches)[0, -1]
        if self.fed < i:
            x = torch.tensor([list(self.history[self.fed:i])], device=dev)  # (1, t)
            self.logits = m.step(x, self.caches)[0, -1]
            self.fed = i
        return float(entropy_of(self.logits)[1])  # float32 nats, as compute_entropies stores them

    def next_windowed(self) -> float:
        """Sliding window: the positions not yet fed go through window_step one at a time, each with the
        rows score_windowed gives it, so the entropy has the same bits as compute_entropies'."""
        m, i = self.model, len(self.history)
        dev = next(m.parameters()).device
        while self.fed <= i:  # position p reads byte p-1 (the start vector at p = 0)
            p = self.fed
            h = m._start(1) if p == 0 else m.embed(torch.tensor([[self.history[p - 1]]], device=dev))
            h = torch.cat([h, h.new_zeros(1, WINDOW_STEP_ROWS - 1, h.size(-1))], dim=1)  # (1, R, C)
            self.logits = m.window_step(h, self.rings, p)  # (1, R, V)
            self.fed = p + 1
        return float(entropy_of(self.logits)[1][0, 0])  # float32 nats, as compute_entropies stores them


WINDOW_STEP_ROWS = 16  # a one-position step is padded to 16 rows: BLAS takes another path below ~12
