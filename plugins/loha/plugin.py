"""LoHa (FedPara, Hyeon-Woo et al. 2022) through peft: a Hadamard product of two low-rank updates."""

from studio.plugins import apply_peft_config, peft_config


def apply(model, params: dict, ctx: dict):
    return apply_peft_config(model, peft_config(
        "LoHaConfig", params, ("r", "alpha", "target_modules", "rank_dropout", "module_dropout")))
