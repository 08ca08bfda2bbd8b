"""IA3 (Liu et al. 2022) through peft: learned scaling vectors on keys, values and feed-forward."""

from studio.errors import UserError
from studio.plugins import (apply_peft_config, fused_equivalents, linear_module_names,
                            parse_target_modules)

DEFAULTS = ("k_proj,v_proj,down_proj", "down_proj")       # the manifest's defaults


def apply(model, params: dict, ctx: dict):
    from peft import IA3Config, TaskType
    targets = parse_target_modules(params["target_modules"])
    feedforward = [n.strip() for n in params["feedforward_modules"].split(",") if n.strip()]
    if (params["target_modules"], params["feedforward_modules"]) == DEFAULTS:
        # the paper's keys, values and feed-forward output, in the model's own layout: a family
        # that fuses q/k/v (Phi-3's qkv_proj) gets the fused layer for keys and values; a
        # mixture-of-experts model whose experts are fused tensors (no down_proj layer) gets
        # keys and values only
        targets = fused_equivalents(model, targets) or [
            t for t in targets if t in linear_module_names(model)] or targets
        feedforward = [f for f in feedforward if f in targets]
    if isinstance(targets, list) and not set(feedforward) <= set(targets):
        extra = ", ".join(sorted(set(feedforward) - set(targets)))
        raise UserError(f"feed-forward module(s) {extra} are not among the target modules.",
                        field="feedforward_modules",
                        fix=f"add them to target_modules or remove them here (targets: {', '.join(targets)}).")
    config = IA3Config(
        task_type=TaskType.CAUSAL_LM,
        target_modules=targets,
        feedforward_modules=feedforward,
    )
    return apply_peft_config(model, config)
