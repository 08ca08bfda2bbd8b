"""LoRA-Dash: plain LoRA for a pre-launch phase, then extra training along task-specific directions.

The method ("Unleashing the Power of Task-Specific Directions in Parameter Efficient Fine-tuning",
Si et al., 2024), as implemented here:

1. Pre-launch: ``t`` optimizer steps of ordinary peft LoRA.
2. At step ``t``, for every adapted linear layer with frozen weight ``W`` (out x in) and LoRA update
   ``dW = scale * B @ A``: take the SVD ``W = U diag(sigma) V^T`` and the change rate of each singular
   direction, ``r_i = |u_i^T dW v_i| / sigma_i``. The ``s`` directions with the largest rates are the
   layer's task-specific directions.
3. Dash: each chosen direction gets one trainable coefficient ``delta_i`` (starting at 0), so the
   layer's weight becomes ``W + dW + sum_i delta_i u_i v_i^T``. A, B and delta train together.

The dash term is a small module (`DashTerm`) attached to each peft LoRA layer as ``dash_term`` and
added to the layer's output by a forward hook, so peft's own forward, saving and merging are left
untouched. No Qt here.

On disk, next to the standard peft adapter (adapter_config.json + adapter_model.safetensors):
``lora_dash.safetensors`` (``<layer>.U``, ``<layer>.V``, ``<layer>.delta``) and ``lora_dash.json``
(t, s, installed, layer names, chosen indices).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from studio.errors import UserError
from studio.fileio import atomic_file

LOG = logging.getLogger("studio.lora_dash")

DASH_ATTR = "dash_term"  # no "lora_" in it (older peft kept every key with "lora_"); save() filters it too
DASH_WEIGHTS = "lora_dash.safetensors"
DASH_META = "lora_dash.json"
FORMAT_VERSION = 1


class DashTerm(nn.Module):
    """``x -> ((x @ V) * delta) @ U^T``: the update ``U diag(delta) V^T`` applied to an input."""

    def __init__(self, U: torch.Tensor, V: torch.Tensor, delta: torch.Tensor | None = None,
                 indices: list[int] | None = None) -> None:
        super().__init__()
        if U.ndim != 2 or V.ndim != 2 or U.shape[1] != V.shape[1]:
            raise ValueError(f"U {tuple(U.shape)} and V {tuple(V.shape)} must be (out x s) and (in x s)")
        s = U.shape[1]
        self.register_buffer("U", U.contiguous())
        self.register_buffer("V", V.contiguous())
        init = torch.zeros(s, dtype=torch.float32, device=U.device) if delta is None else delta
        self.delta = nn.Parameter(init.detach().to(device=U.device, dtype=torch.float32).clone())
        self.indices = list(indices) if indices is not None else []
        self.merged = False
        self.hook_handle = None

    @property
    def num_directions(self) -> int:
        return int(self.delta.shape[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = self.U.dtype
        coeffs = (x.to(dtype) @ self.V) * self.delta.to(dtype)
        return coeffs @ self.U.T

    def delta_weight(self) -> torch.Tensor:
        """The (out x in) update this term adds to the weight, in float32."""
        U, V = self.U.float(), self.V.float()
        return (U * self.delta.detach().float()) @ V.T


def _dash_hook(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
    dash = getattr(module, DASH_ATTR, None)
    if dash is None or dash.merged or getattr(module, "disable_adapters", False):
        return output
    return output + dash(args[0]).to(output.dtype)


# ---------------------------------------------------------------------------------------------
# Finding layers and directions
# ---------------------------------------------------------------------------------------------

def lora_layers(model: nn.Module, adapter: str = "default") -> list[tuple[str, nn.Module]]:
    """(name, module) of every peft LoRA linear layer that carries `adapter`, in model order."""
    from peft.tuners.lora import LoraLayer

    found = []
    for name, module in model.named_modules():
        if isinstance(module, LoraLayer) and adapter in getattr(module, "lora_A", {}):
            if isinstance(module.get_base_layer(), nn.Linear) or hasattr(module.get_base_layer(), "weight"):
                found.append((name, module))
    return found


def frozen_weight(layer: nn.Module) -> torch.Tensor:
    """The layer's frozen base weight W as an (out x in) float32 tensor (dequantized if needed)."""
    from peft.utils.integrations import dequantize_module_weight

    base = layer.get_base_layer()
    weight = dequantize_module_weight(base).detach().float()
    if getattr(layer, "fan_in_fan_out", False):
        weight = weight.T
    return weight


def change_rates(weight: torch.Tensor, delta_w: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """SVD of `weight` and the change rate of each singular direction under `delta_w`.

    Returns (rates, U, sigma, V) with U (out x k), V (in x k), k = min(out, in), all float32.
    """
    W = weight.float()
    U, sigma, Vh = torch.linalg.svd(W, full_matrices=False)
    V = Vh.T
    dW = delta_w.to(device=W.device, dtype=torch.float32)
    projections = (U * (dW @ V)).sum(dim=0)  # u_i^T dW v_i for each i, without forming U^T dW V
    tiny = torch.finfo(torch.float32).tiny
    rates = projections.abs() / sigma.clamp_min(tiny)
    return rates, U, sigma, V


def select_directions(layer: nn.Module, s: int, adapter: str = "default") -> dict:
    """The top-`s` singular directions of `layer`'s frozen weight by change rate."""
    weight = frozen_weight(layer)
    delta_w = layer.get_delta_weight(adapter).detach().float()
    if delta_w.shape != weight.shape:  # fan_in_fan_out layers report dW in storage layout
        delta_w = delta_w.T
    rates, U, _sigma, V = change_rates(weight, delta_w)
    k = rates.shape[0]
    if s > k:
        raise UserError(f"num_directions = {s} is more than this layer has ({k} singular directions).",
                        field="num_directions", fix=f"Use a value of at most {k}.")
    top = torch.topk(rates, s).indices
    return {"indices": top.tolist(), "U": U[:, top].contiguous(), "V": V[:, top].contiguous(),
            "rates": rates[top].tolist()}


# ---------------------------------------------------------------------------------------------
# Installing and querying dash terms
# ---------------------------------------------------------------------------------------------

def attach_dash(layer: nn.Module, dash: DashTerm) -> DashTerm:
    """Attach `dash` to a peft LoRA layer and hook it into the layer's output."""
    old = getattr(layer, DASH_ATTR, None)
    if old is not None:
        detach_dash(layer)
    setattr(layer, DASH_ATTR, dash)
    dash.hook_handle = layer.register_forward_hook(_dash_hook)
    return dash


def detach_dash(layer: nn.Module) -> DashTerm | None:
    dash = getattr(layer, DASH_ATTR, None)
    if dash is None:
        return None
    if dash.hook_handle is not None:
        dash.hook_handle.remove()
        dash.hook_handle = None
    delattr(layer, DASH_ATTR)
    return dash


def dash_terms(model: nn.Module) -> dict[str, DashTerm]:
    """{layer name: DashTerm} for every layer of `model` that has one."""
    return {name: getattr(module, DASH_ATTR) for name, module in model.named_modules()
            if isinstance(getattr(module, DASH_ATTR, None), DashTerm)}


def has_dash(model: nn.Module) -> bool:
    return bool(dash_terms(model))


def dash_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [dash.delta for dash in dash_terms(model).values()]


def install_dash(model: nn.Module, num_directions: int, adapter: str = "default") -> dict:
    """Choose the top-s directions in every LoRA layer and attach zero-initialised dash terms.

    Returns info for the log: layers, directions per layer, seconds spent, and per layer the chosen
    singular indices and their change rates.
    """
    if num_directions < 1:
        raise UserError(f"num_directions must be at least 1 (got {num_directions}).",
                        field="num_directions", fix="Use 1 or more (the paper uses 8).")
    layers = lora_layers(model, adapter)
    if not layers:
        raise UserError("LoRA-Dash found no LoRA layers to extend in this model.", field="target_modules",
                        fix="Check that target_modules matches some linear layers of the model.")
    started = time.perf_counter()
    chosen = {}
    for name, layer in layers:
        with torch.no_grad():
            picked = select_directions(layer, num_directions, adapter)
        dtype = layer.lora_A[adapter].weight.dtype
        if not dtype.is_floating_point:
            dtype = torch.float32
        dash = DashTerm(picked["U"].to(dtype), picked["V"].to(dtype), indices=picked["indices"])
        attach_dash(layer, dash)
        chosen[name] = {"indices": picked["indices"], "rates": picked["rates"]}
    return {"layers": len(layers), "directions_per_layer": num_directions,
            "new_parameters": len(layers) * num_directions,
            "seconds": round(time.perf_counter() - started, 3), "chosen": chosen}


# ---------------------------------------------------------------------------------------------
# The training-loop callback
# ---------------------------------------------------------------------------------------------

class LoraDashCallback:
    """Switches from the pre-launch phase to the dash phase at step `pre_launch_steps`.

    `on_step_end(step, model, optimizer)` is called by the loop after optimizer step `step` (1-based).
    At step == t it installs the dash terms and adds their coefficients to the optimizer's first
    param group (see `add_to_optimizer`). It returns the switch info at step t (else None) and
    passes a one-line summary to `log`.
    """

    def __init__(self, pre_launch_steps: int = 100, num_directions: int = 8, adapter: str = "default",
                 log: Callable[[str], None] | None = None) -> None:
        if pre_launch_steps < 1:
            raise UserError(f"pre_launch_steps must be at least 1 (got {pre_launch_steps}).",
                            field="pre_launch_steps", fix="Use 1 or more (the paper uses 100).")
        if num_directions < 1:
            raise UserError(f"num_directions must be at least 1 (got {num_directions}).",
                            field="num_directions", fix="Use 1 or more (the paper uses 8).")
        self.pre_launch_steps = int(pre_launch_steps)
        self.num_directions = int(num_directions)
        self.adapter = adapter
        self.log = log
        self.info: dict | None = None

    def on_step_end(self, step: int, model: nn.Module, optimizer) -> dict | None:
        if step < self.pre_launch_steps:
            return None
        if step > self.pre_launch_steps or has_dash(model):
            # Dash phase, or resumed from a checkpoint saved after the switch: make sure the optimizer
            # holds the coefficients (a no-op when it already does).
            if optimizer is not None and has_dash(model):
                add_to_optimizer(model, optimizer)
            return None
        info = install_dash(model, self.num_directions, self.adapter)
        if optimizer is not None:
            add_to_optimizer(model, optimizer)
        info["step"] = step
        self.info = info
        message = (f"LoRA-Dash: dash phase from step {step}: {info['layers']} layers x "
                   f"{info['directions_per_layer']} directions ({info['new_parameters']} new trainable "
                   f"coefficients, directions found in {info['seconds']:.1f} s)")
        LOG.info(message)
        if self.log is not None:
            self.log(message)
        return info


def add_to_optimizer(model: nn.Module, optimizer) -> int:
    """Put the model's dash coefficients that the optimizer does not hold yet into its first group.

    They train with exactly the first group's settings (lr, weight_decay, betas, ...). They join that
    group rather than a new one because an LR scheduler made before the switch only knows the groups
    that existed then (torch 2.13's schedulers even refuse to step once a group is added), while a member of
    the first group follows the schedule with no help. Optimizer state for them starts fresh at their
    first step. Returns how many were added.
    """
    held = {id(p) for group in optimizer.param_groups for p in group["params"]}
    new = [p for p in dash_parameters(model) if id(p) not in held]
    for p in new:
        p.requires_grad_(True)
    optimizer.param_groups[0]["params"].extend(new)
    return len(new)


# ---------------------------------------------------------------------------------------------
# Save, load, merge
# ---------------------------------------------------------------------------------------------

def save_dash(model: nn.Module, out_dir: str | Path, pre_launch_steps: int | None = None,
              num_directions: int | None = None) -> Path:
    """Write lora_dash.safetensors + lora_dash.json for `model`'s dash terms (peft adapter not included)."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    terms = dash_terms(model)
    tensors = {}
    layers = {}
    for name, dash in terms.items():
        tensors[f"{name}.U"] = dash.U.detach().cpu().contiguous()
        tensors[f"{name}.V"] = dash.V.detach().cpu().contiguous()
        tensors[f"{name}.delta"] = dash.delta.detach().cpu().contiguous()
        layers[name] = {"indices": dash.indices, "num_directions": dash.num_directions}
    if num_directions is None and terms:
        num_directions = next(iter(terms.values())).num_directions
    meta = {"method": "lora_dash", "format_version": FORMAT_VERSION, "installed": bool(terms),
            "pre_launch_steps": pre_launch_steps, "num_directions": num_directions, "layers": layers}
    if tensors:
        with atomic_file(out / DASH_WEIGHTS) as tmp:
            save_file(tensors, str(tmp), metadata={"format": "pt", "method": "lora_dash"})
    else:
        (out / DASH_WEIGHTS).unlink(missing_ok=True)
    (out / DASH_META).write_text(json.dumps(meta, indent=2), encoding="utf-8")
    return out


def save(model: nn.Module, out_dir: str | Path, pre_launch_steps: int | None = None,
         num_directions: int | None = None) -> Path:
    """The LoRA adapter in standard peft format plus the LoRA-Dash files."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # peft's own key filter changed between releases (0.21 keeps every tensor under a LoRA layer,
    # dash terms included), so hand it a state dict without them: the adapter file stays plain LoRA.
    marker = f".{DASH_ATTR}."
    state = {k: v for k, v in model.state_dict().items() if marker not in k}
    model.save_pretrained(str(out), state_dict=state)
    return save_dash(model, out, pre_launch_steps, num_directions)


def read_meta(adapter_dir: str | Path) -> dict:
    path = Path(adapter_dir) / DASH_META
    if not path.is_file():
        raise UserError(f"{DASH_META} is missing: this folder is not a LoRA-Dash adapter.", path=path.parent,
                        fix="Pick the adapter folder a LoRA-Dash run saved, or load it with the LoRA method.")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"could not be read ({exc}).", path=path,
                        fix="Save the adapter again from its run.") from exc
    if not isinstance(meta, dict) or meta.get("method") != "lora_dash" or not isinstance(meta.get("layers"), dict):
        raise UserError("is not a LoRA-Dash description.", path=path, fix="Save the adapter again from its run.")
    return meta


def load_dash(model: nn.Module, adapter_dir: str | Path, is_trainable: bool = False) -> nn.Module:
    """Attach the dash terms saved in `adapter_dir` to `model` (a PeftModel carrying the LoRA layers)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    adapter_dir = Path(adapter_dir)
    meta = read_meta(adapter_dir)
    if not meta.get("installed"):
        return model
    weights_path = adapter_dir / DASH_WEIGHTS
    try:
        tensors = load_file(str(weights_path))
    except (OSError, SafetensorError) as exc:
        raise UserError(f"could not be read ({exc}).", path=weights_path,
                        fix="Save the adapter again from its run.") from exc
    modules = dict(model.named_modules())
    for name, entry in meta["layers"].items():
        layer = modules.get(name)
        keys = [f"{name}.{part}" for part in ("U", "V", "delta")]
        if layer is None or any(k not in tensors for k in keys):
            raise UserError(f"layer '{name}' is missing from the model or from {DASH_WEIGHTS}.", path=adapter_dir,
                            fix="Load this adapter onto the base model it was trained on.")
        U, V, delta = (tensors[k] for k in keys)
        weight = frozen_weight(layer)
        if U.shape[0] != weight.shape[0] or V.shape[0] != weight.shape[1]:
            raise UserError(f"layer '{name}' has shape {tuple(weight.shape)} but the adapter expects "
                            f"({U.shape[0]}, {V.shape[0]}).", path=adapter_dir,
                            fix="Load this adapter onto the base model it was trained on.")
        device = weight.device
        dash = DashTerm(U.to(device), V.to(device), delta.to(device), indices=entry.get("indices"))
        dash.delta.requires_grad_(is_trainable)
        attach_dash(layer, dash)
    return model


def load(base_model: nn.Module, adapter_dir: str | Path, is_trainable: bool = False) -> nn.Module:
    """Re-create LoRA (peft) + dash terms on `base_model` from a folder written by `save`."""
    from peft import PeftModel

    adapter_dir = Path(adapter_dir)
    read_meta(adapter_dir)  # fail early, before touching the base model
    if not (adapter_dir / "adapter_config.json").is_file():
        raise UserError("adapter_config.json is missing.", path=adapter_dir,
                        fix="Pick the adapter folder a LoRA-Dash run saved.")
    model = PeftModel.from_pretrained(base_model, str(adapter_dir), is_trainable=is_trainable)
    return load_dash(model, adapter_dir, is_trainable=is_trainable)


def merge(model: nn.Module) -> nn.Module:
    """Fold the dash terms into the frozen weights, then LoRA (peft merge_and_unload); returns the base model."""
    from peft.utils.integrations import dequantize_module_weight

    modules = dict(model.named_modules())
    for name, dash in dash_terms(model).items():
        layer = modules[name]
        base = layer.get_base_layer()
        weight = base.weight
        if dequantize_module_weight(base) is not weight or not weight.dtype.is_floating_point:
            raise UserError("LoRA-Dash cannot fold its directions into a quantized base model.", field="model",
                            fix="Reload the base model without quantization, load the adapter onto it, then merge.")
        with torch.no_grad():
            update = dash.delta_weight().to(device=weight.device)
            if getattr(layer, "fan_in_fan_out", False):
                update = update.T
            weight.add_(update.to(weight.dtype))
        dash.merged = True
        detach_dash(layer)
    if hasattr(model, "merge_and_unload"):
        return model.merge_and_unload()
    return model
