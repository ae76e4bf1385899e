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
import os
import sys

import torch
import torch.nn as nn

from common import atomic_write, config_from_dict, count_params, write_report

# kind -> "module:Class", imported by name when a checkpoint of that kind is loaded: this module depends on
# common only (every model module may import it), and loading one kind never imports the others
MODEL_KINDS = {
    "entropy_llm": "entropy_llm:MinimalLLM",
    "blt": "blt_model:BLTModel",
    "template_llm": "template_llm:TemplateLLM",
}


class CheckpointError(Exception):
    """A checkpoint that cannot be used; the message is one line naming the file and the problem."""


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
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated or not a torch file: "
                              f"{first[:120]})") from None
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
        first = str(e).strip().splitlines()
        why = " ".join(first[:2])[:200]
        raise CheckpointError(f"{path}: weights do not fit the saved config: {why}") from None
    return model


def load_model(path: str, kind: str | None = None, device="cpu") -> nn.Module:
    """Load any model of the repository from its checkpoint; needs no config or flags."""
    return model_from_state(load_checkpoint(path, kind), path).to(device)


def load_entropy_model(path: str, device="cpu"):
    """The entropy byte LM (MinimalLLM) saved at `path`, in eval mode."""
    return load_model(path, "entropy_llm", device).eval()


def load_into(model: nn.Module, path: str) -> dict:
    """Load a checkpoint into an existing model (for --resume); returns its `_extra_state`.

    A checkpoint of another kind or architecture gives a CheckpointError naming the difference.
    """
    state = load_checkpoint(path, getattr(unwrap(model), "kind", None))
    try:
        unwrap(model).load_state_dict(state)
    except (RuntimeError, ValueError) as e:
        first = str(e).strip().splitlines()
        raise CheckpointError(f"{path}: {' '.join(first[:2])[:200]}") from None
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
