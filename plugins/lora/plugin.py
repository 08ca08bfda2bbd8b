"""LoRA (Hu et al. 2021) through peft: LoraConfig + get_peft_model on a causal LM."""

from studio.plugins import apply_peft_config, parse_target_modules


def lora_config(params: dict):
    from peft import LoraConfig, TaskType
    return LoraConfig(
        task_type=TaskType.CAUSAL_LM,
        r=params["r"],
        lora_alpha=params["lora_alpha"],
        lora_dropout=params["lora_dropout"],
        target_modules=parse_target_modules(params["target_modules"]),
        bias=params["bias"],
        use_rslora=params["use_rslora"],
    )


def apply(model, params: dict, ctx: dict):
    return apply_peft_config(model, lora_config(params))
