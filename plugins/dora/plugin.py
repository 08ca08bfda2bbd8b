"""DoRA (Liu et al. 2024) through peft: LoRA with a learned per-output-channel magnitude."""

from studio.plugins import apply_peft_config, parse_target_modules


def apply(model, params: dict, ctx: dict):
    from peft import LoraConfig, TaskType
    config = LoraConfig(
        task_type=TaskType.CAUSAL_LM,
        r=params["r"],
        lora_alpha=params["lora_alpha"],
        lora_dropout=params["lora_dropout"],
        target_modules=parse_target_modules(params["target_modules"]),
        use_dora=True,
    )
    return apply_peft_config(model, config)
