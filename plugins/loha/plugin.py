"""LoHa (FedPara, Hyeon-Woo et al. 2022) through peft: a Hadamard product of two low-rank updates."""

from studio.plugins import apply_peft_config, parse_target_modules


def apply(model, params: dict, ctx: dict):
    from peft import LoHaConfig, TaskType
    config = LoHaConfig(
        task_type=TaskType.CAUSAL_LM,
        r=params["r"],
        alpha=params["alpha"],
        target_modules=parse_target_modules(params["target_modules"]),
        rank_dropout=params["rank_dropout"],
        module_dropout=params["module_dropout"],
    )
    return apply_peft_config(model, config)
