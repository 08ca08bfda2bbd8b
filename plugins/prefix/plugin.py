"""Prefix tuning (Li & Liang 2021) through peft: learned key/value prefixes in every attention layer."""

from studio.plugins import apply_peft_config, peft_config


def apply(model, params: dict, ctx: dict):
    return apply_peft_config(model, peft_config(
        "PrefixTuningConfig", params, ("num_virtual_tokens", "prefix_projection",
                                       "encoder_hidden_size")))
