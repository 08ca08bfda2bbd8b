"""P-tuning (Liu et al. 2021) through peft: soft prompts produced by a small MLP/LSTM encoder."""

from studio.plugins import apply_peft_config


def apply(model, params: dict, ctx: dict):
    from peft import PromptEncoderConfig, TaskType
    config = PromptEncoderConfig(
        task_type=TaskType.CAUSAL_LM,
        num_virtual_tokens=params["num_virtual_tokens"],
        encoder_reparameterization_type=params["encoder_reparameterization_type"],
        encoder_hidden_size=params["encoder_hidden_size"],
        encoder_num_layers=params["encoder_num_layers"],
        encoder_dropout=params["encoder_dropout"],
    )
    return apply_peft_config(model, config)
