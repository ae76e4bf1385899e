"""The plain transformer baseline over bytes or BPE tokens, and the template for a new approach.

A causal transformer LM built from the shared layers (common.CausalLM), trained and scored like the
entropy model, over one of two alphabets:
    --tokenizer bytes   ids are the bytes 0..255 (the same model as entropy_llm.MinimalLLM)
    --tokenizer bpe     a byte-level BPE trained here, with `tokenizers`, on the training documents only;
                        saved beside the checkpoint as <checkpoint stem>.tokenizer.json
Held-out bits per byte are comparable across both (and with the BLT): a document's token nats summed,
divided by ln 2 x the number of bytes its tokens cover (DESIGN.md, "Bits per byte").

Train (defaults are CPU-sized; --preset names a model size: tiny, cpu, gpu = GPT-2 small's shape):
    python template_llm.py                                          # bytes, builtin -> template_model.pth
    python template_llm.py --tokenizer bpe --vocab_size 4096        # + template_model.tokenizer.json
    python template_llm.py --quick_demo --tokenizer bpe --report r.json   # a minute or two on a laptop CPU
    python template_llm.py --preset gpu --tokenizer bpe --batch_size 64 --max_steps 20000 --lr 6e-4 \
        --data hf:wikitext:wikitext-103-raw-v1 --max_bytes 500000000          # a GPU run
    torchrun --standalone --nproc_per_node=2 template_llm.py        # DistributedDataParallel (gloo on CPU)
Evaluate bits per byte over every byte of some data (the tokenizer is found beside the checkpoint):
    python template_llm.py --eval --checkpoint template_model.pth --data my_text.txt --report r.json

In Python (what complete_entropy_workflow.py calls):
    report = train_template(TemplateConfig(tokenizer="bpe"), train_docs, val_docs, "bpe.pth")
    model, tokenizer = load_template_model("bpe.pth")
    bpb, n_bytes, n_tokens = evaluate_bpb(model, tokenizer, docs)
    train_flops(config), flops_per_byte(config, tokens_per_byte)     # 3x forward over a run; forward per byte

Copying this file for a new approach (say `my_lm.py`):
    1. Rename TemplateConfig / TemplateLLM and change the model class; keep the forward contract
       forward(idx, targets=None) -> (logits, loss) with logits[:, t] predicting id t from ids < t.
    2. Give it a new `kind` ("my_lm") and register it in save_entropy_model.MODEL_KINDS
       ("my_lm": "my_lm:MyLM"), so checkpoints load with no flags; list in `arch_fields` the config
       fields that change the weights.
    3. Rewrite flops_per_byte() to count the new model's forward matmuls and attention per byte.
    4. Keep the report keys val_bpb, params, flops_per_byte, bytes_per_s, checkpoint (DESIGN.md) so the
       comparison study can add the approach as one more run; add a causality test and a CLI smoke test.
    The training loop (training.train), the data windows (byte_data.ByteWindows) and the scorer
    (entropy_llm.score_sequences) are shared: a new approach should not need its own; train_template()
    shows the set-up around the loop to copy.

Shapes: B batch, T ids in a window (tokens, or bytes with --tokenizer bytes), C model width, V vocab size.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import math
import os
import re
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch.distributed as tdist

from byte_data import ByteWindows, DataError, load_corpus, split_documents
from common import (
    CausalLM,
    add_config_args,
    atomic_write,
    config_overrides,
    count_params,
    lm_flops_per_token,
    pick_device,
    write_report,
)
from entropy_llm import cap_bytes, score_sequences
from save_entropy_model import CheckpointError, data_digest, load_checkpoint, model_from_state
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
    train,
)

TOKENIZERS = ("bytes", "bpe")
DEFAULT_VOCAB = {"bytes": 256, "bpe": 4096}


@dataclass
class TemplateConfig(TrainFields):
    # model
    tokenizer: str = "bytes"  # 'bytes' (ids are bytes 0..255) or 'bpe' (byte-level BPE of the training docs)
    vocab_size: int = 0  # ids read and predicted; 0 = the tokenizer's default (bytes: 256 only; bpe: 4096)
    d_model: int = 128  # width of the residual stream
    n_heads: int = 4  # attention heads (d_model / n_heads = head dim, even for rotary)
    n_layers: int = 4  # transformer blocks
    max_seq_len: int = 256  # ids (tokens, or bytes) per training window and per scoring window

    def __post_init__(self):
        if self.tokenizer not in TOKENIZERS:
            raise ValueError(f"tokenizer must be one of {', '.join(TOKENIZERS)}, not '{self.tokenizer}'")
        if self.vocab_size == 0:
            self.vocab_size = DEFAULT_VOCAB[self.tokenizer]
        if self.tokenizer == "bytes" and self.vocab_size != 256:
            raise ValueError("vocab_size is 256 with --tokenizer bytes (ids are raw bytes)")
        if self.tokenizer == "bpe" and self.vocab_size < 256:
            raise ValueError(f"a byte-level BPE needs vocab_size >= 256 (the byte alphabet), "
                             f"not {self.vocab_size}")
        self.check_lm_sizes()


# Model sizes (--preset). "cpu" is the default; "gpu" is GPT-2 small's shape.
TEMPLATE_PRESETS = {
    "tiny": dict(d_model=32, n_heads=2, n_layers=1, max_seq_len=64),
    "cpu": {},
    "gpu": dict(d_model=768, n_heads=12, n_layers=12, max_seq_len=1024),
}
# --quick_demo: shorter windows, fewer steps, less data: a minute or two on a CPU
QUICK_DEMO = dict(max_seq_len=128, max_steps=300, warmup_steps=30, max_bytes=1_000_000, eval_interval=0,
                  ckpt_interval=0)


class TemplateLLM(CausalLM):
    """Causal transformer over ids 0..vocab_size-1: logits[:, t] is the distribution of idx[:, t] given
    idx[:, :t].

    Position 0 reads a learned start vector (common.CausalLM), so no id is reserved and a document's first
    token is predicted (and counted in its bits per byte) too.
    """

    kind = "template_llm"
    config_class = TemplateConfig
    arch_fields = ("tokenizer", "vocab_size", "d_model", "n_heads", "n_layers")


def flops_per_token(config: TemplateConfig, seq_len: int | None = None) -> float:
    """Forward FLOPs per id: the blocks at mean causal context, plus the V-way head (2 C V)."""
    seq_len = seq_len or config.max_seq_len
    return lm_flops_per_token(config.d_model, config.n_layers, config.vocab_size, seq_len)


def flops_per_byte(config: TemplateConfig, tokens_per_byte: float = 1.0, seq_len: int | None = None) -> float:
    """Forward FLOPs per byte: FLOPs per token x tokens per byte (1 for bytes, measured for BPE)."""
    return flops_per_token(config, seq_len) * tokens_per_byte


def train_flops(config: TemplateConfig) -> float:
    """Training FLOPs of a whole run: 3 x forward, over max_steps x batch_size x max_seq_len ids."""
    return 3 * flops_per_token(config) * config.max_steps * config.batch_size * config.max_seq_len


# ----------------------------------------------------------------------------------------------------
# Tokenizers: bytes <-> ids, exactly, for every byte sequence


class ByteTokenizer:
    """The identity: id i is byte i."""

    name = "bytes"
    vocab_size = 256

    def encode(self, doc: bytes) -> np.ndarray:
        return np.frombuffer(bytes(doc), dtype=np.uint8)

    def decode(self, ids) -> bytes:
        return bytes(np.asarray(ids, dtype=np.uint8))


def _byte_chars() -> list[str]:
    """GPT-2's printable stand-in for each byte (the ByteLevel alphabet of `tokenizers`), indexed by byte.

    Printable Latin-1 bytes stand for themselves; the other 68 (controls, space, DEL, NBSP, soft hyphen)
    take the characters from U+0100 on, in byte order. None of the 256 is whitespace.
    """
    printable = {*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)}
    out, shifted = [], 0
    for b in range(256):
        if b in printable:
            out.append(chr(b))
        else:
            out.append(chr(0x100 + shifted))
            shifted += 1
    return out


BYTE_CHARS = _byte_chars()
_TO_CHARS = {b: c for b, c in enumerate(BYTE_CHARS)}  # str.translate table over a latin-1 decoded string
_FROM_CHARS = {c: b for b, c in enumerate(BYTE_CHARS)}

# Pre-split into words (merges never cross them), GPT-2 style but over bytes: contractions, letters with an
# optional leading space (bytes >= 0x80, i.e. UTF-8 multi-byte characters, count as letters), up to three
# digits, other symbols, whitespace runs. Every byte falls in exactly one word.
_WORDS = re.compile(rb"'(?:[sdmt]|ll|ve|re)| ?[A-Za-z\x80-\xff]+| ?[0-9]{1,3}| ?[^\sA-Za-z0-9\x80-\xff]+"
                    rb"|\s+(?!\S)|\s+")


class BPETokenizer:
    """A byte-level BPE (`tokenizers`) that round-trips every byte sequence, valid UTF-8 or not.

    `tokenizers`' ByteLevel pre-tokenizer takes a `str` and maps its UTF-8 bytes to 256 stand-in characters,
    so bytes that are not UTF-8 could never reach it. We do that mapping ourselves, byte by byte: a
    document's words (split by _WORDS on the raw bytes) become strings over BYTE_CHARS, joined by spaces
    (no stand-in is whitespace), and the tokenizer (BPE model, WhitespaceSplit pre-tokenizer, ByteLevel
    decoder) works on those. The 256 stand-ins are the initial alphabet, so every byte is a token; each
    id's exact bytes are known (token_bytes), and encode() checks that decoding gives the document back.
    """

    name = "bpe"

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        vocab = tokenizer.get_vocab()
        self.vocab_size = len(vocab)
        self.token_bytes = [b""] * self.vocab_size
        for piece, i in vocab.items():
            self.token_bytes[i] = bytes(_FROM_CHARS[c] for c in piece)
        self.dtype = np.uint16 if self.vocab_size <= 2**16 else np.int32

    @staticmethod
    def to_chars(doc: bytes) -> str:
        """A document as the space-separated stand-in strings of its words."""
        return " ".join(w.decode("latin-1").translate(_TO_CHARS) for w in _WORDS.findall(doc))

    @classmethod
    def train(cls, docs: list[bytes], vocab_size: int, min_frequency: int = 2) -> BPETokenizer:
        """Learn merges from `docs` (training documents only) up to vocab_size tokens, alphabet included."""
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, show_progress=False,
                                      initial_alphabet=BYTE_CHARS, special_tokens=[])
        tok.train_from_iterator((cls.to_chars(bytes(d)) for d in docs), trainer)
        return cls(tok)

    @classmethod
    def load(cls, path: str) -> BPETokenizer:
        from tokenizers import Tokenizer

        return cls(Tokenizer.from_file(path))

    def save(self, path: str):
        atomic_write(path, lambda tmp: self.tokenizer.save(tmp))

    def encode_batch(self, docs: list[bytes]) -> list[np.ndarray]:
        encoded = self.tokenizer.encode_batch([self.to_chars(bytes(d)) for d in docs])
        out = [np.array(e.ids, dtype=self.dtype) for e in encoded]
        for doc, ids in zip(docs, out):
            if self.decode(ids) != bytes(doc):  # BPB counts the bytes the tokens cover: they must be the doc
                raise ValueError("BPE tokens do not reproduce the document's bytes")
        return out

    def encode(self, doc: bytes) -> np.ndarray:
        return self.encode_batch([doc])[0]

    def decode(self, ids) -> bytes:
        return b"".join(self.token_bytes[i] for i in np.asarray(ids).tolist())


def encode_all(tokenizer, docs: list[bytes]) -> list[np.ndarray]:
    """Every document as one id array (BPE encodes whole documents, in parallel)."""
    if isinstance(tokenizer, BPETokenizer):
        return tokenizer.encode_batch(docs)
    return [tokenizer.encode(d) for d in docs]


def build_tokenizer(config: TemplateConfig, train_docs: list[bytes]):
    """The tokenizer `config` asks for; a BPE learns from train_docs, which must hold no held-out byte."""
    if config.tokenizer == "bytes":
        return ByteTokenizer()
    return BPETokenizer.train(train_docs, config.vocab_size)


def tokenizer_path(checkpoint: str) -> str:
    """Where a BPE checkpoint's tokenizer lives: beside it, <stem>.tokenizer.json."""
    return os.path.splitext(checkpoint)[0] + ".tokenizer.json"


def _sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def tokenizer_of_checkpoint(path: str, extra: dict):
    """The tokenizer a checkpoint was trained with (its meta names the file, relative to the checkpoint)."""
    if extra["config"].get("tokenizer", "bytes") == "bytes":
        return ByteTokenizer()
    meta = extra.get("meta") or {}
    name = meta.get("tokenizer_file") or os.path.basename(tokenizer_path(path))
    tpath = os.path.join(os.path.dirname(os.path.abspath(path)), name)
    if not os.path.isfile(tpath):
        raise CheckpointError(f"{path}: its BPE tokenizer {tpath} is missing (training writes it beside it)")
    if meta.get("tokenizer_sha256") and _sha256(tpath) != meta["tokenizer_sha256"]:
        raise CheckpointError(f"{path}: the tokenizer {tpath} is not the one this model was trained with "
                              "(a later run overwrote it?)")
    try:
        tok = BPETokenizer.load(tpath)
    except Exception as e:
        raise CheckpointError(f"{path}: cannot read its tokenizer {tpath} ({str(e).strip()[:120]})") from None
    if tok.vocab_size > extra["config"]["vocab_size"]:
        raise CheckpointError(f"{path}: tokenizer {tpath} has {tok.vocab_size} tokens, the model only "
                              f"{extra['config']['vocab_size']}")
    return tok


def load_template_model(path: str, device="cpu"):
    """(TemplateLLM in eval mode, its tokenizer) from a checkpoint; needs no flags."""
    state = load_checkpoint(path, TemplateLLM.kind)
    tokenizer = tokenizer_of_checkpoint(path, state["_extra_state"])
    return model_from_state(state, path).to(device).eval(), tokenizer


# ----------------------------------------------------------------------------------------------------
# Scoring


def document_nats(model, ids: list[np.ndarray], batch_size: int = 32) -> np.ndarray:
    """Each document's total nats (its tokens' -log p summed), documents already encoded as `ids`, each
    scored from its own start in windows of max_seq_len ids overlapping by half (entropy_windows)."""
    _, nll = score_sequences(model, ids, batch_size, want_nll=True, unit="tok")
    return np.array([a.sum() for a in nll], dtype=np.float64)


def evaluate_bpb(model, tokenizer, docs: list[bytes], batch_size: int = 32, per_document: bool = False):
    """(bits per byte, bytes, tokens) over every byte of `docs`: each document encoded whole, its token
    nats summed and divided by ln 2 x its number of bytes (the bytes those tokens cover). per_document=True
    adds each document's nats and bytes (two arrays in the order of `docs`)."""
    ids = encode_all(tokenizer, docs)
    nats, n_bytes = document_nats(model, ids, batch_size), sum(len(d) for d in docs)
    if n_bytes == 0:
        raise ValueError("no bytes to evaluate")
    out = (float(nats.sum()) / (math.log(2) * n_bytes), n_bytes, sum(len(a) for a in ids))
    return (*out, nats, np.array([len(d) for d in docs], dtype=np.int64)) if per_document else out


# ----------------------------------------------------------------------------------------------------
# Training


def shared_tokenizer(config, train_docs, out, dist, resume: str | None, tokenizer):
    """Rank 0 builds (or takes over) the tokenizer and saves it beside `out`; the other ranks read it."""
    if config.tokenizer == "bytes":
        return ByteTokenizer(), None
    path = tokenizer_path(out)
    if dist.is_main:
        if tokenizer is None and resume:  # continue with the tokenizer the run started with
            extra = load_checkpoint(resume, TemplateLLM.kind)["_extra_state"]
            tokenizer = tokenizer_of_checkpoint(resume, extra)
        if tokenizer is None:
            tokenizer = build_tokenizer(config, train_docs)
        if not isinstance(tokenizer, BPETokenizer):
            raise ValueError("tokenizer 'bpe' needs a BPETokenizer")
        tokenizer.save(path)
    if dist.enabled:
        tdist.barrier()
        if not dist.is_main:
            tokenizer = BPETokenizer.load(path)
    if tokenizer.vocab_size > config.vocab_size:
        raise ValueError(f"the tokenizer has {tokenizer.vocab_size} tokens, more than vocab_size "
                         f"{config.vocab_size}")
    return tokenizer, path


def train_template(config: TemplateConfig, train_docs: list[bytes], val_docs: list[bytes], out: str,
                   device_name: str | None = None, resume: str | None = None, compile: bool = False,
                   tokenizer=None, per_document: bool = False) -> dict:
    """Train TemplateLLM on train_docs, score held-out BPB on val_docs, save to `out`; returns the report.

    With tokenizer 'bpe' the BPE is learned from train_docs (or `tokenizer` is used, or on resume the
    one of `resume`) and saved to tokenizer_path(out), which the checkpoint's meta names. per_document=True
    adds doc_nats and doc_bytes of the final evaluation (every held-out document, in order).
    """
    dist, device = setup_distributed(device_name)
    try:
        tokenizer, tok_path = shared_tokenizer(config, train_docs, out, dist, resume, tokenizer)
        seed_everything(config.seed)
        model = TemplateLLM(config).to(device)
        optimizer = make_optimizer(model, config.lr, config.weight_decay, device)
        meta = {"train_data": data_digest(train_docs)}
        if tok_path:
            meta.update(tokenizer_file=os.path.basename(tok_path), tokenizer_sha256=_sha256(tok_path))
        history = resume_run(resume, model, optimizer, config, meta) if resume else {"step": 0}
        trained = maybe_compile(distribute(model, dist), compile)

        t0 = time.perf_counter()
        train_ids, val_ids = encode_all(tokenizer, train_docs), encode_all(tokenizer, val_docs)
        encode_s = time.perf_counter() - t0
        train_bytes, train_tokens = sum(map(len, train_docs)), sum(map(len, train_ids))
        tokens_per_byte = train_tokens / train_bytes if train_bytes else 1.0
        windows = ByteWindows(train_ids, config.max_seq_len, seed=config.seed)

        per_doc = {}  # the final evaluation's per-document figures (with per_document)

        def evaluate(step):  # intermediate evaluations score a prefix of the held-out documents
            k = len(val_docs) if step == config.max_steps else len(cap_bytes(val_docs, config.eval_max_bytes))
            doc_nats = document_nats(model, val_ids[:k])
            nats, n_bytes = float(doc_nats.sum()), sum(map(len, val_docs[:k]))
            n_tokens = sum(map(len, val_ids[:k]))
            if per_document and step == config.max_steps:
                per_doc.update(doc_nats=doc_nats, doc_bytes=np.array([len(d) for d in val_docs], np.int64))
            return {"val_bpb": nats / (math.log(2) * n_bytes), "val_bytes": n_bytes, "val_tokens": n_tokens}

        meta.update(train_bytes=train_bytes, train_tokens=train_tokens, tokens_per_byte=tokens_per_byte)
        if dist.is_main:
            print(f"template LM ({config.tokenizer}, vocab {tokenizer.vocab_size}): {count_params(model):,} "
                  f"params, train {len(train_docs)} docs {train_bytes:,} bytes = {train_tokens:,} tokens "
                  f"({tokens_per_byte:.3f} per byte, encoded in {encode_s:.1f}s), val {len(val_docs)} docs "
                  f"{sum(map(len, val_docs)):,} bytes, device {device}, {dist.world_size} process(es)")
        rows = config.batch_size // dist.world_size
        result = train(trained, optimizer, windows, config, device=device, dist=dist, out=out,
                       start_step=history["step"], evaluate=evaluate if val_docs else None, meta=meta,
                       desc=f"template {config.tokenizer}", history=history,
                       bytes_per_step=rows * config.max_seq_len / tokens_per_byte,
                       bpb_per_loss=tokens_per_byte / math.log(2))
        final = result["evals"][-1] if result["evals"] else {}
        return {"val_bpb": final.get("val_bpb", float("nan")), "val_bytes": final.get("val_bytes", 0),
                "val_tokens": final.get("val_tokens", 0), "params": count_params(model),
                "flops_per_byte": flops_per_byte(config, tokens_per_byte), "train_flops": train_flops(config),
                "bytes_per_s": result["bytes_per_s"], "checkpoint": out, "tokenizer": config.tokenizer,
                "tokenizer_file": tok_path, "tokens_per_byte": tokens_per_byte, "train_bytes": train_bytes,
                "train_tokens": train_tokens, "train_loss": result["loss"], "steps": config.max_steps,
                "evals": result["evals"], "config": dataclasses.asdict(config), **per_doc,
                "finished_before": result.get("finished_before", False)}
    finally:
        cleanup_distributed()


def build_config(preset: str = "cpu", quick_demo: bool = False, **overrides) -> TemplateConfig:
    """TemplateConfig of a model size (TEMPLATE_PRESETS), the quick-demo settings, then explicit overrides."""
    quick = QUICK_DEMO if quick_demo else {}
    return preset_config(TemplateConfig, TEMPLATE_PRESETS, preset, quick, **overrides)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_args(p, TEMPLATE_PRESETS, out="template_model.pth", model="baseline model",
                 quick_help="a smaller, shorter run: a minute or two on a CPU")
    add_config_args(p, TemplateConfig)
    args = p.parse_args(argv)
    if args.eval and not args.checkpoint:
        p.error("--eval needs --checkpoint")
    try:
        check_run_args(args)
        if args.eval:
            model, tokenizer = load_template_model(args.checkpoint, device=pick_device(args.device))
            docs = load_corpus(args.data, getattr(args, "max_bytes", None), text_field=args.text_field)
            t0 = time.perf_counter()
            bpb, n, n_tok = evaluate_bpb(model, tokenizer, docs)
            report = {"val_bpb": bpb, "num_bytes": n, "num_tokens": n_tok, "tokens_per_byte": n_tok / n,
                      "bytes_per_s": n / (time.perf_counter() - t0), "checkpoint": args.checkpoint,
                      "data": args.data}
            print(f"{args.data}: {bpb:.4f} bits per byte over {n:,} bytes ({n_tok:,} tokens)")
        else:
            config = build_config(args.preset, args.quick_demo, **config_overrides(args, TemplateConfig))
            docs = load_corpus(args.data, max_bytes=config.max_bytes, text_field=args.text_field)
            train_docs, val_docs = split_documents(docs)
            check_split(train_docs, val_docs, args.data)
            report = train_template(config, train_docs, val_docs, args.out, args.device, resume_path(args),
                                    args.compile)
            if not is_main_process():  # torchrun: rank 0 speaks for the job
                return 0
            done = f"{resume_path(args)}: already finished; its " if report["finished_before"] else ""
            print(f"{done}held-out {report['val_bpb']:.4f} bits per byte on {report['val_bytes']:,} bytes; "
                  f"{report['flops_per_byte']:,.0f} FLOPs per byte; {report['bytes_per_s']:,.0f} training "
                  f"bytes/s; saved {args.out}" + (f" and {tok}" if (tok := report["tokenizer_file"]) else ""))
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
