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

import random

from studio.plugins import tensor_subset
from studio.errors import UserError

ATTR = tensor_subset.ATTR           # names of the trained parameters, set by apply()/load()


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
    tensor_subset.save(model, out_dir, "lisa", "LISA")


def load(base_model, adapter_dir, is_trainable: bool = False):
    return tensor_subset.load(base_model, adapter_dir, "LISA", is_trainable)


def merge(model):
    """The trained layers already are the model's weights: drop the LISA bookkeeping."""
    return tensor_subset.merge(model, extra_attrs=("_lisa_layers", "_lisa_state"))
