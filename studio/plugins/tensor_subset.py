"""Adapters that are a subset of the model's own tensors (BitFit's biases, LISA's layers).

Such a method trains some of the base model's parameters in place. Its adapter is those tensors
in one safetensors file plus a small JSON index; loading copies them back into a fresh base
model, and "merging" is a no-op because they already are the model's weights.
"""

from __future__ import annotations

import json
from pathlib import Path

from studio.errors import UserError

ATTR = "studio_trained_tensors"      # names of the trained parameters, set by apply()/load()
TENSORS_FILE = "tensors.safetensors"
META_FILE = "tensors.json"


def save(model, out_dir, method: str, label: str) -> None:
    from safetensors.torch import save_file

    names = getattr(model, ATTR, None)
    if not names:
        raise UserError(f"this model was not prepared by {label}, nothing to save.",
                        fix=f"save the model returned by the {method} plugin's apply() or load().")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    params = dict(model.named_parameters())
    tensors = {n: params[n].detach().to("cpu").contiguous() for n in names}
    save_file(tensors, str(out_dir / TENSORS_FILE), metadata={"format": "pt", "method": method})
    meta = {"method": method, "base_model": getattr(model, "name_or_path", None),
            "num_parameters": sum(t.numel() for t in tensors.values()),
            "tensors": {n: list(t.shape) for n, t in tensors.items()}}
    (out_dir / META_FILE).write_text(json.dumps(meta, indent=1))


def load(base_model, adapter_dir, label: str, is_trainable: bool = False):
    import torch
    from safetensors.torch import load_file

    adapter_dir = Path(adapter_dir)
    path = adapter_dir / TENSORS_FILE
    if not path.is_file():
        raise UserError(f"not a {label} adapter folder (no {TENSORS_FILE}).", path=adapter_dir,
                        fix=f"choose the 'adapter' folder of a finished {label} run.")
    tensors = load_file(str(path))
    params = dict(base_model.named_parameters())
    for name, tensor in tensors.items():
        if name not in params or tuple(params[name].shape) != tuple(tensor.shape):
            raise UserError(f"this adapter was trained on another model (tensor {name} does not fit).",
                            path=path, fix="load it on the base model it was trained on.")
    with torch.no_grad():
        for name, tensor in tensors.items():
            params[name].copy_(tensor.to(params[name].dtype))
    for name, param in base_model.named_parameters():
        param.requires_grad_(is_trainable and name in tensors)
    setattr(base_model, ATTR, list(tensors))
    return base_model


def merge(model, extra_attrs=()):
    """The trained tensors already live in the model: freeze it and drop the bookkeeping."""
    for param in model.parameters():
        param.requires_grad_(False)
    for attr in (ATTR, *extra_attrs):
        model.__dict__.pop(attr, None)
    return model
