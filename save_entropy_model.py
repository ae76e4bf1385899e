"""One checkpoint format for every model in the repository: save, load, inspect.

A checkpoint is the model's own state dict. The model's kind and config ride inside it as the root
module's `_extra_state` (see common.CarriesConfig), so both of these work:

    model = load_entropy_model("entropy_model.pth")                   # no flags needed
    model = MinimalLLM(config); model.load_state_dict(torch.load("entropy_model.pth"))  # the seed's way

Training scripts add a `train` entry (step, optimizer state, ...) and a `meta` entry (patch config,
entropy model fingerprint, ...) to the same `_extra_state`; loading a model ignores both.

    python save_entropy_model.py inspect entropy_model.pth
"""
from __future__ import annotations

import argparse
import hashlib
import importlib
import inspect
import json
import os
import sys
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from common import CarriesConfig, atomic_write, config_from_dict, count_params, write_report

# kind -> "module:Class", imported by name when a checkpoint of that kind is loaded: this module depends on
# common only (every model module may import it), and loading one kind never imports the others
MODEL_KINDS = {
    "entropy_llm": "entropy_llm:MinimalLLM",
    "blt": "blt_model:BLTModel",
    "template_llm": "template_llm:TemplateLLM",
    "hf_blt_patcher": "save_entropy_model:HFEntropyModel",  # Meta's released entropy model (hf:)
}
HF_ENTROPY_KIND = "hf_blt_patcher"
ENTROPY_KINDS = ("entropy_llm", HF_ENTROPY_KIND)


class CheckpointError(Exception):
    """A checkpoint that cannot be used; the message is one line naming the file and the problem."""


def _first_lines(e: BaseException, width: int = 160, lines: int = 1) -> str:
    """The start of an exception's message, for a one-line error."""
    text = str(e).strip().splitlines()
    return " ".join(text[:lines])[:width] if text else type(e).__name__


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module under DistributedDataParallel and torch.compile wrappers."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, nn.Module):  # DDP
            model = model.module
        elif hasattr(model, "_orig_mod"):  # torch.compile
            model = model._orig_mod
        else:
            return model


def save_checkpoint(model: nn.Module, path: str, train: dict | None = None, meta: dict | None = None):
    """Write the model (with its config) atomically; `train` holds resume state, `meta` run facts."""
    state = unwrap(model).state_dict()
    if "_extra_state" not in state:
        raise TypeError(f"{type(model).__name__} does not carry its config (derive it from "
                        "common.CarriesConfig)")
    extra = dict(state["_extra_state"])
    if train is not None:
        extra["train"] = train
    if meta is not None:
        extra["meta"] = meta
    state["_extra_state"] = extra
    bad = non_finite(state)
    if bad:  # never replace a good checkpoint with a diverged model
        raise CheckpointError(f"{path}: not saved: the model holds non-finite weights ({bad})")
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def non_finite(state: dict) -> str | None:
    """The name of the first floating tensor of a state dict holding NaN or inf, else None."""
    for name, value in state.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point() and not torch.isfinite(value).all():
            return name
    return None


def load_checkpoint(path: str, kind: str | None = None) -> dict:
    """Read and validate a checkpoint file; returns its state dict (with `_extra_state`)."""
    if not os.path.exists(path):
        raise CheckpointError(f"{path}: no such file")
    if os.path.isdir(path):
        raise CheckpointError(f"{path}: is a folder, not a checkpoint file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for truncated or foreign files; name the file instead
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated or not a torch file: "
                              f"{_first_lines(e, 120)})") from None
    extra = state.get("_extra_state") if isinstance(state, dict) else None
    if not isinstance(extra, dict) or "kind" not in extra:
        raise CheckpointError(f"{path}: not a checkpoint of this repository (no model kind or config inside)")
    found = extra["kind"]
    if found not in MODEL_KINDS:
        raise CheckpointError(f"{path}: unknown model kind '{found}'")
    if kind is not None and found != kind:
        raise CheckpointError(f"{path}: holds a '{found}' model, expected a '{kind}' model")
    if bad := non_finite(state):
        raise CheckpointError(f"{path}: holds non-finite weights (NaN or inf in {bad}); a diverged run's "
                              "model cannot be used")
    return state


def model_class(kind: str):
    """The model class of a checkpoint kind (MODEL_KINDS)."""
    module, name = MODEL_KINDS[kind].split(":")
    return getattr(importlib.import_module(module), name)


def model_from_state(state: dict, path: str = "checkpoint") -> nn.Module:
    """Build the model a checkpoint describes and load its weights."""
    extra = state["_extra_state"]
    cls = model_class(extra["kind"])
    try:
        if hasattr(cls.config_class, "from_dict"):  # older dicts read its own way (BLTConfig)
            config = cls.config_class.from_dict(extra["config"])
        else:
            config = config_from_dict(cls.config_class, extra["config"])
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: config does not fit this version of {cls.__name__}: {e}") from None
    model = cls(config)
    try:
        model.load_state_dict(state)
    except (RuntimeError, ValueError) as e:
        why = _first_lines(e, 200, lines=2)
        raise CheckpointError(f"{path}: weights do not fit the saved config: {why}") from None
    return model


def load_model(path: str, kind: str | None = None, device="cpu") -> nn.Module:
    """Load any model of the repository from its checkpoint; needs no config or flags."""
    return model_from_state(load_checkpoint(path, kind), path).to(device)


def load_entropy_model(path: str, device="cpu"):
    """The entropy byte LM saved at `path` (MinimalLLM), in eval mode; "hf:NAME_OR_DIR" loads the patcher
    of a Hugging Face BLT checkpoint instead (load_hf_entropy_model: Meta's released entropy model)."""
    if path.startswith("hf:"):
        return load_hf_entropy_model(path[3:], device=device)
    state = load_checkpoint(path)
    if state["_extra_state"]["kind"] not in ENTROPY_KINDS:
        raise CheckpointError(f"{path}: holds a '{state['_extra_state']['kind']}' model, expected an entropy "
                              "model")
    return model_from_state(state, path).to(device).eval()


def load_into(model: nn.Module, path: str) -> dict:
    """Load a checkpoint into an existing model (for --resume); returns its `_extra_state`.

    A checkpoint of another kind or architecture gives a CheckpointError naming the difference.
    """
    state = load_checkpoint(path, getattr(unwrap(model), "kind", None))
    try:
        unwrap(model).load_state_dict(state)
    except (RuntimeError, ValueError) as e:
        raise CheckpointError(f"{path}: {_first_lines(e, 200, lines=2)}") from None
    return state["_extra_state"]


def model_fingerprint(model: nn.Module) -> str:
    """SHA-256 of a model's weights and config: the key for caches that depend on the model."""
    h = hashlib.sha256()
    for name, value in sorted(unwrap(model).state_dict().items()):
        h.update(name.encode())
        if isinstance(value, torch.Tensor):
            t = value.detach().cpu().contiguous()
            h.update(str(t.dtype).encode() + str(tuple(t.shape)).encode())
            h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        else:
            h.update(repr(value.get("config") if isinstance(value, dict) else value).encode())
    return h.hexdigest()


def data_digest(docs: list) -> str:
    """SHA-256 of a list of documents with their boundaries: what a checkpoint records of its data."""
    h = hashlib.sha256()
    for d in docs:
        d = d if isinstance(d, (bytes, bytearray)) else np.ascontiguousarray(d).tobytes()
        h.update(len(d).to_bytes(8, "little") + bytes(d))
    return h.hexdigest()


def describe(path: str) -> str:
    """Human-readable summary of a checkpoint: kind, config, parameter count, training state."""
    state = load_checkpoint(path)
    extra = state["_extra_state"]
    model = model_from_state(state, path)
    lines = [f"file:    {path} ({os.path.getsize(path) / 1e6:.2f} MB)", f"kind:    {extra['kind']}",
             f"params:  {count_params(model):,}", "config:"]
    lines += [f"  {k} = {v!r}" for k, v in extra["config"].items()]
    if "train" in extra:
        lines.append(f"train:   step {extra['train'].get('step')}")
    for k, v in (extra.get("meta") or {}).items():
        lines.append(f"meta:    {k} = {v!r}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------
# Meta's released entropy model: a Hugging Face BLT checkpoint's patcher behind MinimalLLM's contract
#
#     model = load_entropy_model("hf:itazap/blt-1b-hf")    # save_entropy_model: a hub name or a folder
#     H = compute_entropies(model, b"some bytes")          # nats, transformers' own patcher's entropies
#
# The patcher's ids are 0 BOE, 1 BOS, 2 EOS, 3 PAD, and byte b is id b + 4; it is an ordinary causal LM
# over a document fed as [BOS, b0+4, b1+4, ...]. forward() feeds [BOS, idx[:, :-1] + 4], so logits[:, t]
# predicts byte t and BOS plays MinimalLLM's start vector. transformers' patching makes byte j a start
# when the entropy of its prediction exceeds the threshold (byte 0 always): this repository's rule, so
# the released 1.335-nat threshold (config.hf_threshold) applies unchanged to the global method.
# specials="keep" (default): logits (B, T, 260), bytes first (column b = byte b), then the 4 specials, so
# H is HF's 260-way entropy, the quantity that threshold was calibrated on; "renormalize": the 256 byte
# columns only. Window: max_seq_len defaults to max_position_embeddings (8192 for the release); stacked
# sliding-window layers see n_layers * (sliding_window - 1) positions back, so documents longer than one
# window are exact only with max_seq_len = config.exact_window (compute_entropies' half-overlapping
# windows, rotary positions being relative). transformers, huggingface_hub and safetensors are imported
# only when such a model is built or loaded.

BYTE_OFFSET = 4  # HF/Meta ids: byte b is id b + 4
HF_BOS_ID = 1
SPECIALS_MODES = ("keep", "renormalize")
# Patcher config fields that, with the weights, fully determine its computation (kept in our config, so
# the fingerprint covers them and the model can be rebuilt without the HF folder).
PATCHER_FIELDS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                  "num_key_value_heads", "intermediate_size", "rms_norm_eps", "rope_parameters",
                  "max_position_embeddings", "sliding_window")


@dataclass
class HFEntropyConfig:
    patcher: dict = field(default_factory=dict)  # PATCHER_FIELDS of the HF BltPatcherConfig
    max_seq_len: int = 0  # bytes per compute_entropies window; 0 = the patcher's max_position_embeddings
    specials: str = "keep"  # "keep": softmax over all 260 ids (HF's entropy); "renormalize": over 256 bytes
    bos_id: int = HF_BOS_ID
    byte_offset: int = BYTE_OFFSET
    hf_threshold: float | None = None  # the checkpoint's patching_threshold (global method, nats), if any

    def __post_init__(self):
        if self.specials not in SPECIALS_MODES:
            raise ValueError(f"specials must be one of {SPECIALS_MODES}, not {self.specials!r}")
        V = self.patcher.get("vocab_size", 256 + self.byte_offset)
        if V != 256 + self.byte_offset:
            raise ValueError(f"patcher vocabulary is {V}, expected {256 + self.byte_offset} "
                             "(4 specials + 256 bytes): "
                             "not a byte-level BLT patcher")
        if not self.max_seq_len:
            self.max_seq_len = int(self.patcher.get("max_position_embeddings") or 8192)
        if self.max_seq_len < 2:
            raise ValueError("max_seq_len must be at least 2")

    @property
    def exact_window(self) -> int | None:
        """Smallest max_seq_len whose windows reproduce HF's one pass over a document of ANY length.

        Each sliding-window layer reaches sliding_window - 1 positions further back, so a byte's receptive
        field is n_layers * (sliding_window - 1) positions; compute_entropies keeps bytes at window offsets
        >= W/2, which must see that field whole and not BOS: W >= 2 * (n_layers * (sliding_window - 1) + 1).
        None without a sliding window (full attention: only documents <= max_seq_len are exact).
        """
        sw = self.patcher.get("sliding_window")
        return 2 * (self.patcher["num_hidden_layers"] * (sw - 1) + 1) if sw else None

    @property
    def vocab_size(self) -> int:
        """Width of the logits forward() returns: 260 with specials kept, else 256."""
        return 256 + self.byte_offset if self.specials == "keep" else 256

    @property
    def sliding_window(self):
        return self.patcher.get("sliding_window")

    @property
    def d_model(self) -> int:  # with n_layers and vocab_size: flops_per_byte's estimate applies
        return self.patcher["hidden_size"]

    @property
    def n_layers(self) -> int:
        return self.patcher["num_hidden_layers"]


def _hf_blt():
    """transformers' BLT classes, or a one-line CheckpointError when transformers lacks them."""
    try:
        from transformers import BltConfig, BltPatcherConfig
        from transformers.models.blt.modeling_blt import BltPatcher
    except ImportError as e:
        raise CheckpointError(f"hf: entropy models need transformers with BLT support (pip install -U "
                              f"transformers): {e}") from None
    return BltConfig, BltPatcherConfig, BltPatcher


def _cache_kw(fn) -> str:
    """The name of `fn`'s KV-cache argument ("cache" in recent transformers, "past_key_values" before)."""
    params = inspect.signature(fn).parameters
    return "cache" if "cache" in params else "past_key_values"


class HFStreamCache:
    """State of one streaming pass (see HFEntropyModel.step): a transformers DynamicCache and its length."""

    def __init__(self, patcher_config, batch: int):
        from transformers import DynamicCache

        self.cache = DynamicCache(config=patcher_config)
        self.batch, self.len = batch, 0


class HFEntropyModel(CarriesConfig, torch.nn.Module):
    """A Hugging Face BltPatcher behind this repo's entropy-model contract (see the comment above)."""

    kind = HF_ENTROPY_KIND
    config_class = HFEntropyConfig

    def __init__(self, config: HFEntropyConfig, patcher: torch.nn.Module | None = None):
        super().__init__()
        _, BltPatcherConfig, BltPatcher = _hf_blt()
        self.config = config
        if patcher is None:  # rebuild from our config (the weights come from a state dict)
            patcher = BltPatcher(BltPatcherConfig(**config.patcher))
        self.patcher = patcher.eval()
        self.patcher.requires_grad_(False)

    def set_extra_state(self, state):  # CarriesConfig's, with its own messages
        if not isinstance(state, dict) or state.get("kind") != self.kind:
            raise ValueError(f"state dict does not hold a '{self.kind}' model")
        if state.get("config", {}).get("patcher") != self.config.patcher:
            raise ValueError("was saved with another patcher config")

    def _to_bytes(self, logits):
        """HF logits (..., 260) -> ours: bytes first (column b = byte b), then the 4 specials if kept."""
        o = self.config.byte_offset
        if self.config.specials == "keep":
            return torch.cat([logits[..., o:], logits[..., :o]], dim=-1)
        return logits[..., o:]

    def forward(self, idx, targets=None):
        """idx (B, T) bytes 0..255 -> (logits (B, T, V), loss or None); logits[:, t] predicts idx[:, t].

        V = config.vocab_size (260 with specials kept, 256 renormalised); byte b is column b either way.
        """
        B = idx.size(0)
        bos = torch.full((B, 1), self.config.bos_id, dtype=torch.long, device=idx.device)
        ids = torch.cat([bos, idx[:, :-1].long() + self.config.byte_offset], dim=1)  # (B, T): shifted right
        _, _, logits = self.patcher(input_ids=ids)  # HF's own forward: (entropies, patch lengths, logits)
        logits = self._to_bytes(logits)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1),
                                   ignore_index=-100)
        return logits, loss

    # -- streaming (generation's causal patching): same results as forward on the same window
    def new_caches(self, batch: int, max_len: int) -> HFStreamCache:
        """Empty state for step(); max_len is unused (a DynamicCache grows; sliding layers stay bounded)."""
        return HFStreamCache(self.patcher.config, batch)

    @torch.no_grad()
    def step(self, x, caches: HFStreamCache):
        """Feed inputs, get logits (B, t, V) where row t predicts the byte AFTER input t.

        x is (B, t) bytes, or None to feed BOS (whose logits predict the first byte).
        """
        from transformers.masking_utils import create_causal_mask, create_sliding_window_causal_mask

        p = self.patcher
        dev = p.embed_tokens.weight.device
        if x is None:
            ids = torch.full((caches.batch, 1), self.config.bos_id, dtype=torch.long, device=dev)
        else:
            ids = x.to(dev).long() + self.config.byte_offset
        h = p.embed_tokens(ids)
        pos = torch.arange(caches.len, caches.len + ids.size(1), device=dev).unsqueeze(0)
        mask_fn = create_causal_mask if p.config.sliding_window is None else create_sliding_window_causal_mask
        kw = _cache_kw(mask_fn)
        mask = mask_fn(config=p.config, inputs_embeds=h, attention_mask=None, position_ids=pos,
                       **{kw: caches.cache})
        pe = p.rotary_emb(h, pos)
        lkw = _cache_kw(type(p.layers[0]).forward)
        for layer in p.layers:
            h = layer(h, position_embeddings=pe, attention_mask=mask, use_cache=True, **{lkw: caches.cache})
        caches.len += ids.size(1)
        return self._to_bytes(p.lm_head(p.norm(h)))

    def num_params(self) -> int:
        return count_params(self)


_LOCAL_PREFIXES = (os.sep, "." + os.sep, ".." + os.sep, "~")


def _looks_local(name: str) -> bool:
    """A path rather than a hub name ("owner/name" or "name"): never sent to the network."""
    return name.startswith(_LOCAL_PREFIXES) or os.path.exists(name) or name.count("/") > 1


def _hub_fetcher(repo: str, revision: str | None, local_files_only: bool, cache_dir: str | None = None):
    """fetch(patterns, ready) -> snapshot folder of `repo` holding the files matching `patterns`.

    The local Hugging Face cache is tried first (no network when `ready(folder)` already holds); then the Hub,
    downloading only those files. Every failure is a one-line CheckpointError.
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = f"hf:{repo}"

    def fetch(patterns: list[str], ready) -> str:
        try:
            folder = snapshot_download(repo, revision=revision, allow_patterns=patterns,
                                       local_files_only=True, cache_dir=cache_dir)
            if ready(folder):
                return folder
        except LocalEntryNotFoundError:
            pass
        if local_files_only:
            raise CheckpointError(f"{where}: not a local folder and not in the Hugging Face cache "
                                  "(local_files_only)")
        try:
            return snapshot_download(repo, revision=revision, allow_patterns=patterns, cache_dir=cache_dir)
        except GatedRepoError:
            raise CheckpointError(f"{where}: gated model; accept its licence on huggingface.co and log in "
                                  "(`hf auth login`)") from None
        except RepositoryNotFoundError:
            raise CheckpointError(f"{where}: not a local folder, and no such model on the Hugging Face Hub "
                                  "(or a private one: log in with `hf auth login`)") from None
        except RevisionNotFoundError:
            raise CheckpointError(f"{where}: no revision {revision!r} on the Hub") from None
        except LocalEntryNotFoundError:
            raise CheckpointError(f"{where}: not a local folder, not in the Hugging Face cache, and the Hub "
                                  "cannot be reached (offline?); download it where there is a network "
                                  f"(`hf download {repo}`, "
                                  "or save_pretrained) and pass the folder") from None
        except (OSError, ValueError) as e:  # other network or hub errors
            raise CheckpointError(f"{where}: cannot download from the Hugging Face Hub: {_first_lines(e)}") \
                from None

    return fetch


def _resolve(name_or_dir: str, revision: str | None, local_files_only: bool, cache_dir: str | None = None):
    """(fetch, label): fetch(patterns, ready) returns a folder holding those files (a local one as is)."""
    if os.path.isdir(name_or_dir):
        if not os.path.exists(os.path.join(name_or_dir, "config.json")):
            raise CheckpointError(f"hf:{name_or_dir}: no config.json: not a folder written by "
                                  "save_pretrained")
        return (lambda patterns, ready: name_or_dir), f"hf:{name_or_dir}"
    if _looks_local(name_or_dir):
        raise CheckpointError(f"hf:{name_or_dir}: no such folder")
    return _hub_fetcher(name_or_dir, revision, local_files_only, cache_dir), f"hf:{name_or_dir}"


def _has(*names):
    return lambda folder: all(os.path.exists(os.path.join(folder, n)) for n in names)


def _patcher_weights(fetch, label: str, prefixes: tuple[str, ...]) -> dict:
    """The patcher's tensors from safetensors (single or sharded) or pytorch_model.bin, prefix stripped.

    From a sharded hub checkpoint only the shards that hold patcher tensors are downloaded.
    """
    from safetensors import safe_open

    def keep(k):
        return next((k[len(p):] for p in prefixes if k.startswith(p)), None)

    folder = fetch(["config.json", "model.safetensors.index.json"], _has("config.json"))
    index = os.path.join(folder, "model.safetensors.index.json")
    state = {}
    if os.path.exists(index):
        with open(index) as f:
            weight_map = json.load(f)["weight_map"]
        shards = sorted({fn for k, fn in weight_map.items() if keep(k) is not None})
        folder = fetch(shards, _has(*shards)) if shards else folder
        paths = [os.path.join(folder, s) for s in shards]
    else:
        folder = fetch(["model.safetensors"], _has("model.safetensors"))
        single = os.path.join(folder, "model.safetensors")
        paths = [single] if os.path.exists(single) else []
    for path in paths:
        with safe_open(path, framework="pt") as f:
            for k in f.keys():
                if (name := keep(k)) is not None:
                    state[name] = f.get_tensor(k)
    if not paths:
        folder = fetch(["pytorch_model.bin"], _has("pytorch_model.bin"))
        binary = os.path.join(folder, "pytorch_model.bin")
        if not os.path.exists(binary):
            raise CheckpointError(f"{label}: no model.safetensors, model.safetensors.index.json or "
                                  "pytorch_model.bin")
        for k, v in torch.load(binary, map_location="cpu", weights_only=True).items():
            if (name := keep(k)) is not None:
                state[name] = v
    if not state:
        raise CheckpointError(f"{label}: the checkpoint holds no patcher weights "
                              "(saved with patch_in_forward=False?)")
    return state


def load_hf_entropy_model(name_or_dir: str, device="cpu", *, max_seq_len: int | None = None,
                          specials: str = "keep", dtype: torch.dtype = torch.float32,
                          revision: str | None = None, local_files_only: bool = False,
                          cache_dir: str | None = None) -> nn.Module:
    """The entropy model (patcher) of a Hugging Face BLT checkpoint: an HFEntropyModel, in eval mode.

    name_or_dir: a folder written by save_pretrained (BltForCausalLM, BltModel, or a bare BltPatcher), or a
    hub name such as "itazap/blt-1b-hf". A folder never touches the network; a hub name reads the local HF
    cache first and downloads only what is missing there (config.json and the weight shards that hold the
    patcher; cache_dir overrides the HF cache folder). Errors are a CheckpointError with a one-line message.
    Weights are cast to `dtype` (float32 by default: the repo computes entropies in fp32).
    max_seq_len and specials: see HFEntropyConfig.
    """
    BltConfig, BltPatcherConfig, BltPatcher = _hf_blt()
    fetch, label = _resolve(name_or_dir, revision, local_files_only, cache_dir)
    folder = fetch(["config.json", "model.safetensors.index.json"], _has("config.json"))
    try:
        with open(os.path.join(folder, "config.json")) as f:
            raw = json.load(f)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{label}: unreadable config.json ({_first_lines(e)})") from None
    model_type = raw.get("model_type") if isinstance(raw, dict) else None
    threshold = None
    if model_type not in ("blt", "blt_patcher"):
        raise CheckpointError(f"{label}: model_type {model_type!r} is not a BLT checkpoint "
                              "('blt' or 'blt_patcher')")
    if model_type == "blt" and raw.get("patch_in_forward") is False:
        raise CheckpointError(f"{label}: saved without a patcher (patch_in_forward=False)")
    try:
        if model_type == "blt":
            cfg = BltConfig.from_dict(raw)
            pcfg, threshold = cfg.patcher_config, cfg.patching_threshold
            if isinstance(pcfg, dict):
                pcfg = BltPatcherConfig.from_dict(pcfg)
            prefixes = ("model.patcher.", "patcher.")  # BltForCausalLM, BltModel
        else:
            pcfg = BltPatcherConfig.from_dict(raw)
            prefixes = ("",)
    except Exception as e:  # strict config classes raise many types
        raise CheckpointError(f"{label}: config.json does not fit this transformers' BltConfig: "
                              f"{_first_lines(e)}") from None
    patcher_fields = {k: getattr(pcfg, k) for k in PATCHER_FIELDS}
    if isinstance(patcher_fields.get("rope_parameters"), dict):
        patcher_fields["rope_parameters"] = dict(patcher_fields["rope_parameters"])
    try:
        config = HFEntropyConfig(patcher=patcher_fields, max_seq_len=max_seq_len or 0, specials=specials,
                                  bos_id=raw.get("bos_token_id") or HF_BOS_ID,
                                  hf_threshold=float(threshold) if threshold is not None else None)
    except ValueError as e:
        raise CheckpointError(f"{label}: {e}") from None
    state = _patcher_weights(fetch, label, prefixes)
    patcher = BltPatcher(pcfg)
    try:
        patcher.load_state_dict(state, strict=True)
    except RuntimeError as e:
        why = _first_lines(e, 200)
        raise CheckpointError(f"{label}: patcher weights do not fit its config: {why}") from None
    return HFEntropyModel(config, patcher).to(device=device, dtype=dtype).eval()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    inspect = sub.add_parser("inspect", help="print kind, config and parameter count")
    inspect.add_argument("file")
    inspect.add_argument("--report", default=None, help="also write kind, params and config as JSON here")
    args = p.parse_args(argv)
    try:
        print(describe(args.file))
        if args.report:
            extra = load_checkpoint(args.file)["_extra_state"]
            write_report(args.report, {"kind": extra["kind"], "params": count_params(load_model(args.file)),
                                       "config": extra["config"],
                                       "step": (extra.get("train") or {}).get("step")})
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
