"""P-tuning (Liu et al. 2021) through peft: soft prompts produced by a small MLP/LSTM encoder."""

from studio.plugins import apply_peft_config, peft_config


def apply(model, params: dict, ctx: dict):
    return apply_peft_config(model, peft_config(
        "PromptEncoderConfig", params, ("num_virtual_tokens", "encoder_reparameterization_type",
                                        "encoder_hidden_size", "encoder_num_layers",
                                        "encoder_dropout")))
