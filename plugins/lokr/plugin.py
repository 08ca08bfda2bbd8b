"""LoKr (LyCORIS, Yeh et al. 2024) through peft: a Kronecker product of a small and a low-rank matrix."""

from studio.plugins import apply_peft_config, parse_target_modules


def apply(model, params: dict, ctx: dict):
    from peft import LoKrConfig, TaskType
    config = LoKrConfig(
        task_type=TaskType.CAUSAL_LM,
        r=params["r"],
        alpha=params["alpha"],
        target_modules=parse_target_modules(params["target_modules"]),
        decompose_factor=params["decompose_factor"],
        decompose_both=params["decompose_both"],
        rank_dropout=params["rank_dropout"],
        module_dropout=params["module_dropout"],
    )
    return apply_peft_config(model, config)
