"""rsLoRA (Kalajdzievski 2023) through peft: LoRA scaled by alpha / sqrt(r)."""

from studio.plugins import apply_peft_config, lora_config


def apply(model, params: dict, ctx: dict):
    return apply_peft_config(model, lora_config(params, use_rslora=True))
