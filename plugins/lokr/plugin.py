"""LoKr (LyCORIS, Yeh et al. 2024) through peft: a Kronecker product of a small and a low-rank matrix."""

from studio.plugins import apply_peft_config, peft_config


def apply(model, params: dict, ctx: dict):
    return apply_peft_config(model, peft_config(
        "LoKrConfig", params, ("r", "alpha", "target_modules", "decompose_factor", "decompose_both",
                               "rank_dropout", "module_dropout")))
