"""LoRA-Dash (Si et al. 2024): peft LoRA for `pre_launch_steps` steps, then per-layer trainable
scales along the top `num_directions` task-specific singular directions. The algorithm, saving,
loading and merging live in studio.plugins.lora_dash; this file adapts it to the plugin contract."""

import importlib
import logging

from studio.plugins import apply_peft_config, lora_config


def _dash():
    """studio.plugins.lora_dash, imported when first used: it needs torch, and discovery (at the
    window's start-up) reads this file without paying for torch."""
    return importlib.import_module("studio.plugins.lora_dash")

SETTINGS_ATTR = "lora_dash_settings"   # {"pre_launch_steps", "num_directions"} kept on the PeftModel


def apply(model, params: dict, ctx: dict):
    peft_model = apply_peft_config(model, lora_config(params))
    setattr(peft_model, SETTINGS_ATTR, {"pre_launch_steps": params["pre_launch_steps"],
                                        "num_directions": params["num_directions"]})
    total = ctx.get("total_steps") or ctx.get("max_steps")
    if isinstance(total, int) and 0 < total <= params["pre_launch_steps"]:
        logging.getLogger("studio.lora_dash").warning(
            "LoRA-Dash: pre_launch_steps=%d but the run has only %d steps, so the dash phase never "
            "starts and this trains plain LoRA; lower pre_launch_steps to use it.",
            params["pre_launch_steps"], total)
    return peft_model


def callbacks(model, params: dict, ctx: dict) -> list:
    log = ctx.get("log") if callable(ctx.get("log")) else None
    return [_dash().LoraDashCallback(params["pre_launch_steps"], params["num_directions"], log=log)]


def optimizer_param_groups(model, params: dict, lr: float):
    """None (the loop's default AdamW) before the switch. For a model resumed from a checkpoint saved
    in the dash phase: one group holding the LoRA weights and then the dash coefficients, the layout
    the callback gave the optimizer at the switch, so the saved optimizer state loads into it."""
    if not _dash().has_dash(model):
        return None
    dash = _dash().dash_parameters(model)
    dash_ids = {id(p) for p in dash}
    lora = [p for p in model.parameters() if p.requires_grad and id(p) not in dash_ids]
    return [{"params": lora + dash, "lr": lr}]


def save(model, out_dir) -> None:
    settings = getattr(model, SETTINGS_ATTR, None) or {}
    _dash().save(model, out_dir, settings.get("pre_launch_steps"), settings.get("num_directions"))


def load(base_model, adapter_dir, is_trainable: bool = False):
    model = _dash().load(base_model, adapter_dir, is_trainable=is_trainable)
    meta = _dash().read_meta(adapter_dir)
    setattr(model, SETTINGS_ATTR, {"pre_launch_steps": meta.get("pre_launch_steps"),
                                   "num_directions": meta.get("num_directions")})
    return model


def merge(model):
    return _dash().merge(model)
