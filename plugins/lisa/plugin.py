"""LISA (Pan et al. 2024): layerwise importance sampling, full-parameter training of a few layers.

At any time only `active_layers` randomly chosen decoder layers (plus, by default, the embeddings
and output layer, as in the paper) are trainable; every `switch_every` optimizer steps a new set
is drawn. How it fits the training loop:
- optimizer_param_groups() hands the optimizer *every* decoder-layer parameter up front; the
  frozen ones get no gradient (grad is None), and AdamW skips parameters without a gradient.
- the callback (on_step_end, after optimizer.step()) switches layers: it freezes the old ones,
  clears their gradients and drops their optimizer state (LISA's memory saving), unfreezes the
  new ones. The layer set of period k = step // switch_every is a pure function of (seed, k), so
  a resumed run picks the same layers.
Saving writes the tensors of every layer ever trained (tensors.safetensors + tensors.json); the
result is a partial full fine-tune, so merge() is a no-op.
"""

import json
import random
from pathlib import Path

from studio.errors import UserError

ATTR = "studio_trained_tensors"     # names of every parameter trained so far
TENSORS_FILE = "tensors.safetensors"
META_FILE = "tensors.json"


def decoder_layers(model):
    """The model's list of transformer blocks (nn.ModuleList of num_hidden_layers entries)."""
    import torch
    count = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    found = None
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) > 0 and (
                count is None or len(module) == count):
            if found is None or len(module) > len(found[1]):
                found = (name, module)
    if found is None:
        raise UserError("LISA could not find this model's list of decoder layers.", field="method.id",
                        fix="use LoRA or another adapter method for this architecture.")
    return found


def layers_for_period(period: int, num_layers: int, active: int, seed: int) -> list[int]:
    return sorted(random.Random(f"lisa-{seed}-{period}").sample(range(num_layers), active))


def _always_trained(model) -> list:
    params = []
    for getter in ("get_input_embeddings", "get_output_embeddings"):
        module = getattr(model, getter)()
        if module is not None:
            params += [p for p in module.parameters() if all(p is not q for q in params)]
    return params


def _record(model, prefix: str, layer_idx: list[int]) -> None:
    names = getattr(model, ATTR)
    for i in layer_idx:
        for n, _ in model._lisa_layers[i].named_parameters():
            full = f"{prefix}.{i}.{n}"
            if full not in names:
                names.append(full)


def apply(model, params: dict, ctx: dict):
    prefix, layers = decoder_layers(model)
    if params["active_layers"] > len(layers):
        raise UserError(f"this model has {len(layers)} decoder layers, fewer than {params['active_layers']}.",
                        field="active_layers", fix=f"use at most {len(layers)}.")
    for p in model.parameters():
        p.requires_grad_(False)
    always = _always_trained(model) if params["train_embeddings"] else []
    for p in always:
        p.requires_grad_(True)
    ids = {id(p) for p in always}
    setattr(model, ATTR, [n for n, p in model.named_parameters() if id(p) in ids])
    # plain attributes: nn.Module.__setattr__ would register the ModuleList a second time
    object.__setattr__(model, "_lisa_layers", layers)
    first = layers_for_period(0, len(layers), params["active_layers"], params["seed"])
    for i in first:
        layers[i].requires_grad_(True)
    _record(model, prefix, first)
    object.__setattr__(model, "_lisa_state", {"prefix": prefix, "period": 0, "active": first})
    return model


def optimizer_param_groups(model, params: dict, lr: float) -> list[dict]:
    seen, group = set(), []
    candidates = list(_always_trained(model)) if params["train_embeddings"] else []
    candidates += list(model._lisa_layers.parameters())
    for p in candidates:
        if id(p) not in seen:
            seen.add(id(p))
            group.append(p)
    return [{"params": group, "lr": lr, "name": "lisa"}]


class LayerSwitch:
    def __init__(self, model, params: dict):
        self.params = params

    def on_step_end(self, step: int, model, optimizer) -> None:
        state = model._lisa_state
        period = step // self.params["switch_every"]
        if period == state["period"]:
            return
        layers = model._lisa_layers
        new = layers_for_period(period, len(layers), self.params["active_layers"], self.params["seed"])
        for i in state["active"]:
            if i in new:
                continue
            for p in layers[i].parameters():
                p.requires_grad_(False)
                p.grad = None
                optimizer.state.pop(p, None)     # free Adam moments of the layers leaving training
        for i in new:
            layers[i].requires_grad_(True)
        _record(model, state["prefix"], new)
        state.update(period=period, active=new)


def callbacks(model, params: dict, ctx: dict) -> list:
    return [LayerSwitch(model, params)]


def save(model, out_dir) -> None:
    from safetensors.torch import save_file
    names = getattr(model, ATTR, None)
    if not names:
        raise UserError("this model was not prepared by LISA, nothing to save.",
                        fix="save the model returned by the lisa plugin's apply() or load().")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    params = dict(model.named_parameters())
    tensors = {n: params[n].detach().to("cpu").contiguous() for n in names}
    save_file(tensors, str(out_dir / TENSORS_FILE), metadata={"format": "pt", "method": "lisa"})
    meta = {"method": "lisa", "base_model": getattr(model, "name_or_path", None),
            "num_parameters": sum(t.numel() for t in tensors.values()),
            "tensors": {n: list(t.shape) for n, t in tensors.items()}}
    (out_dir / META_FILE).write_text(json.dumps(meta, indent=1))


def load(base_model, adapter_dir, is_trainable: bool = False):
    import torch
    from safetensors.torch import load_file

    adapter_dir = Path(adapter_dir)
    path = adapter_dir / TENSORS_FILE
    if not path.is_file():
        raise UserError(f"not a LISA adapter folder (no {TENSORS_FILE}).", path=adapter_dir,
                        fix="choose the 'adapter' folder of a finished LISA run.")
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
    """The trained layers already are the model's weights: drop the LISA bookkeeping."""
    for param in model.parameters():
        param.requires_grad_(False)
    for attr in (ATTR, "_lisa_layers", "_lisa_state"):
        if attr in model.__dict__:
            del model.__dict__[attr]
    return model
