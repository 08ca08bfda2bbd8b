"""VeRA (Kopiczko et al. 2024) through peft: shared frozen random A/B, trained scaling vectors d, b."""

from studio.plugins import apply_peft_config, parse_target_modules


def apply(model, params: dict, ctx: dict):
    from peft import TaskType, VeraConfig
    config = VeraConfig(
        task_type=TaskType.CAUSAL_LM,
        r=params["r"],
        target_modules=parse_target_modules(params["target_modules"]),
        vera_dropout=params["vera_dropout"],
        d_initial=params["d_initial"],
        projection_prng_key=params["projection_prng_key"],
        save_projection=True,     # the adapter folder then loads without regenerating the projections
    )
    return apply_peft_config(model, config)
