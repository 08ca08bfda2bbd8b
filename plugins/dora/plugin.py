"""DoRA (Liu et al. 2024) through peft: LoRA with a learned per-output-channel magnitude."""

from studio.plugins import apply_peft_config, lora_config


def apply(model, params: dict, ctx: dict):
    return apply_peft_config(model, lora_config(params, use_dora=True))
