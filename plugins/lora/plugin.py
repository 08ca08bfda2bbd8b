"""LoRA (Hu et al. 2021) through peft: LoraConfig + get_peft_model on a causal LM."""

from studio.plugins import apply_peft_config, lora_config


def apply(model, params: dict, ctx: dict):
    return apply_peft_config(model, lora_config(params))     # with bias and use_rslora
