"""Training checkpoints: everything needed to continue a run exactly where it stopped.

A checkpoint is a folder `run_dir/checkpoints/step-<N>/` holding
  adapter/                  the adapter as the method saves it (standard PEFT format for most)
  trainable.safetensors     every trainable tensor by parameter name (what resume loads back)
  optimizer.pt              optimizer.state_dict()   (tensors + numbers only)
  scheduler.pt              scheduler.state_dict()
  state.pt                  step, data position, rng states, optimizer group -> parameter names,
                            callback states
  progress.json             step + data position, human-readable; written last (= complete)
It is written into a hidden temp folder and renamed into place, so a crash never leaves half a
checkpoint under a `step-N` name. `.pt` files are read back with torch.load(weights_only=True).
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import torch

from studio.core.runs import checkpoints_dir, latest_checkpoint, list_checkpoints  # noqa: F401
from studio.errors import UserError
from studio.fileio import atomic_dir, check_free_space, disk_full_as_user_error

KEEP_CHECKPOINTS = 3
# bytes a checkpoint takes per trainable parameter, when no earlier checkpoint tells: the adapter
# and trainable.safetensors (float32 each) and AdamW's two moments, plus room for the rest
BYTES_PER_TRAINABLE = 4 + 4 + 8
SPARE_BYTES = 4 * 1024 * 1024


def folder_bytes(folder) -> int:
    """Total size of the files under `folder` (0 when it is gone)."""
    total = 0
    for path in Path(folder).rglob("*"):
        try:
            if path.is_file():
                total += path.stat().st_size
        except OSError:
            continue
    return total


def checkpoint_bytes_needed(run_dir, model, adapter_only: bool = False) -> int:
    """About how much the next checkpoint (or, `adapter_only`, the final adapter) takes: the
    newest checkpoint's size, else an estimate from the trainable parameter count; plus a margin."""
    last = latest_checkpoint(run_dir)
    size = folder_bytes(last / "adapter" if adapter_only else last) if last is not None else 0
    if size <= 0:
        per_param = 4 if adapter_only else BYTES_PER_TRAINABLE
        size = per_param * sum(p.numel() for p in model.parameters() if p.requires_grad)
    return int(size * 1.1) + SPARE_BYTES


def _rng_state() -> dict:
    import numpy as np

    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": _to_lists(random.getstate()),
        "numpy": [kind, torch.from_numpy(keys.astype("int64")), int(pos), int(has_gauss),
                  float(cached)],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _to_lists(value):
    return [_to_lists(v) for v in value] if isinstance(value, (tuple, list)) else value


def _to_tuples(value):
    return tuple(_to_tuples(v) for v in value) if isinstance(value, list) else value


def _set_rng_state(state: dict) -> None:
    import numpy as np

    torch.set_rng_state(state["torch"].cpu())
    random.setstate(_to_tuples(state["python"]))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype("uint32"), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def trainable_state(model) -> dict[str, torch.Tensor]:
    return {name: p.detach().to("cpu", copy=True).contiguous()
            for name, p in model.named_parameters() if p.requires_grad}


def group_param_names(model, optimizer) -> list[list[str]]:
    names = {id(p): n for n, p in model.named_parameters()}
    return [[names.get(id(p), "") for p in group["params"]] for group in optimizer.param_groups]


def save_checkpoint(run_dir, step: int, *, model, plugin, optimizer, scheduler, position: dict,
                    callbacks=(), extra: dict | None = None, optimizer_state: dict | None = None,
                    group_names: list | None = None) -> Path:
    """Write checkpoints/step-<step>/ (temp folder + rename); prune all but the newest few.
    `optimizer_state` / `group_names` stand for optimizer.state_dict() / group_param_names()
    where the caller has them (a sharded run gathers them whole first)."""
    from safetensors.torch import save_file

    root = checkpoints_dir(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step}"
    needed = checkpoint_bytes_needed(run_dir, model)
    check_free_space(root, needed)
    with disk_full_as_user_error(final, needed), \
            atomic_dir(final, replace=True) as tmp:   # the run's own checkpoint of this step
        plugin.save(model, tmp / "adapter")
        save_file(trainable_state(model), str(tmp / "trainable.safetensors"))
        torch.save(optimizer.state_dict() if optimizer_state is None else optimizer_state,
                   tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        cb_states = [cb.state_dict() if callable(getattr(cb, "state_dict", None)) else None
                     for cb in callbacks]
        torch.save({"step": step, "position": dict(position), "rng": _rng_state(),
                    "group_names": (group_param_names(model, optimizer) if group_names is None
                                    else group_names), "callbacks": cb_states},
                   tmp / "state.pt")
        progress = {"step": step, "position": dict(position), **(extra or {})}
        (tmp / "progress.json").write_text(json.dumps(progress, indent=2), encoding="utf-8")
    for _, old in list_checkpoints(run_dir)[:-KEEP_CHECKPOINTS]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def read_progress(ckpt: Path) -> dict:
    """progress.json of a checkpoint ({} when it cannot be read: older checkpoints lack fields)."""
    try:
        data = json.loads((Path(ckpt) / "progress.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def read_state(ckpt: Path, device) -> dict:
    """The checkpoint's .pt files, loaded with weights_only=True."""
    try:
        saved = {
            "state": torch.load(ckpt / "state.pt", map_location="cpu", weights_only=True),
            "optimizer": torch.load(ckpt / "optimizer.pt", map_location=device, weights_only=True),
            "scheduler": torch.load(ckpt / "scheduler.pt", map_location="cpu", weights_only=True),
        }
        # what the loop saved beside the step (early stopping, the fp16 loss scale, tokens seen)
        for key, value in read_progress(ckpt).items():
            saved["state"].setdefault(key, value)
        return saved
    except (OSError, RuntimeError, EOFError) as err:
        raise UserError(f"checkpoint cannot be read ({type(err).__name__}: {err})", path=ckpt,
                        fix="delete this checkpoint folder to resume from the one before it") from None


def restore_trainable(model, ckpt: Path) -> None:
    """Copy the saved trainable tensors back into the model's parameters, by name."""
    from safetensors.torch import load_file

    saved = load_file(str(ckpt / "trainable.safetensors"))
    params = dict(model.named_parameters())
    missing = sorted(set(saved) - set(params))
    if missing:
        raise UserError(
            f"checkpoint holds {len(missing)} parameters the method did not recreate "
            f"(first: {missing[0]})", path=ckpt,
            fix="resume with the same method and parameters the run was started with")
    with torch.no_grad():
        for name, tensor in saved.items():
            param = params[name]
            if param.shape != tensor.shape:
                raise UserError(f"parameter {name} has shape {tuple(tensor.shape)} in the "
                                f"checkpoint but {tuple(param.shape)} in the model", path=ckpt,
                                fix="resume with the same method parameters (rank, targets)")
            param.copy_(tensor.to(param.device, param.dtype))
            param.requires_grad_(True)


def rebuild_groups(model, state: dict, optimizer_state: dict) -> list[dict]:
    """Optimizer param groups as they were at the checkpoint (same params, same settings)."""
    params = dict(model.named_parameters())
    groups = []
    for names, saved in zip(state["group_names"], optimizer_state["param_groups"]):
        missing = [n for n in names if n not in params]
        if missing:
            raise UserError(f"the optimizer at the checkpoint trained {missing[0]}, which the "
                            "model does not have now", fix="resume with the same method and "
                            "parameters the run was started with")
        settings = {k: v for k, v in saved.items() if k != "params"}
        groups.append({**settings, "params": [params[n] for n in names]})
    return groups


def restore_rng(state: dict) -> None:
    _set_rng_state(state["rng"])
