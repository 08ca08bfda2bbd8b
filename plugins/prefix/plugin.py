"""Prefix tuning (Li & Liang 2021) through peft: learned key/value prefixes in every attention layer."""

from studio.plugins import apply_peft_config


def apply(model, params: dict, ctx: dict):
    from peft import PrefixTuningConfig, TaskType
    config = PrefixTuningConfig(
        task_type=TaskType.CAUSAL_LM,
        num_virtual_tokens=params["num_virtual_tokens"],
        prefix_projection=params["prefix_projection"],
        encoder_hidden_size=params["encoder_hidden_size"],
    )
    return apply_peft_config(model, config)
