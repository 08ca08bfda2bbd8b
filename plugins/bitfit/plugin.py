"""BitFit (Ben Zaken et al. 2022): train only the bias terms, optionally the norm weights too.

Not a peft method: apply() freezes the model except the chosen tensors and returns the model
itself. save() writes just those tensors (tensors.safetensors) and a small tensors.json; load()
copies them into a fresh base model; merge() is a no-op (the trained tensors are the weights).
"""

import json
from pathlib import Path

from studio.errors import UserError

ATTR = "studio_trained_tensors"      # names of the trained parameters, set by apply()/load()
TENSORS_FILE = "tensors.safetensors"
META_FILE = "tensors.json"


def _norm_modules(model):
    for name, module in model.named_modules():
        if "norm" in type(module).__name__.lower() and not list(module.children()):
            yield name, module


def select(model, params: dict) -> list[str]:
    """Names of the parameters BitFit trains for these settings."""
    names = []
    for name, _ in model.named_parameters():
        if name.endswith(".bias") or name == "bias":
            if not params["include_lm_head_bias"] and name.split(".")[-2:-1] == ["lm_head"]:
                continue
            names.append(name)
    if params["include_norms"]:
        own = {id(p): n for n, p in model.named_parameters()}
        for _, module in _norm_modules(model):
            for p in module.parameters(recurse=False):
                if id(p) in own and own[id(p)] not in names:
                    names.append(own[id(p)])
    return names


def apply(model, params: dict, ctx: dict):
    names = select(model, params)
    if not names:
        has_bias = any(n.endswith("bias") for n, _ in model.named_parameters())
        if not has_bias:
            raise UserError("this model has no bias terms, so BitFit has nothing to train.",
                            field="include_norms",
                            fix="tick 'Train norm weights' (include_norms) to train the LayerNorm/RMSNorm "
                                "weights instead, or use IA3 or LoRA, which add their own small weights.")
        raise UserError("no trainable tensors selected.", field="include_lm_head_bias",
                        fix="tick 'Train output bias' or 'Train norm weights'.")
    chosen = set(names)
    for name, param in model.named_parameters():
        param.requires_grad_(name in chosen)
    setattr(model, ATTR, names)
    return model


def save(model, out_dir) -> None:
    from safetensors.torch import save_file
    names = getattr(model, ATTR, None)
    if not names:
        raise UserError("this model was not prepared by BitFit, nothing to save.",
                        fix="save the model returned by the bitfit plugin's apply() or load().")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    params = dict(model.named_parameters())
    tensors = {n: params[n].detach().to("cpu").contiguous() for n in names}
    save_file(tensors, str(out_dir / TENSORS_FILE), metadata={"format": "pt", "method": "bitfit"})
    meta = {"method": "bitfit", "base_model": getattr(model, "name_or_path", None),
            "num_parameters": sum(t.numel() for t in tensors.values()),
            "tensors": {n: list(t.shape) for n, t in tensors.items()}}
    (out_dir / META_FILE).write_text(json.dumps(meta, indent=1))


def load(base_model, adapter_dir, is_trainable: bool = False):
    import torch
    from safetensors.torch import load_file

    adapter_dir = Path(adapter_dir)
    path = adapter_dir / TENSORS_FILE
    if not path.is_file():
        raise UserError(f"not a BitFit adapter folder (no {TENSORS_FILE}).", path=adapter_dir,
                        fix="choose the 'adapter' folder of a finished BitFit run.")
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


def merge(model):
    """The trained tensors already live in the model: just drop the BitFit bookkeeping."""
    for param in model.parameters():
        param.requires_grad_(False)
    if hasattr(model, ATTR):
        delattr(model, ATTR)
    return model
