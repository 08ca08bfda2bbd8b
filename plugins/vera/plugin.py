"""VeRA (Kopiczko et al. 2024) through peft: shared frozen random A/B, trained scaling vectors d, b."""

from studio.plugins import apply_peft_config, peft_config


def apply(model, params: dict, ctx: dict):
    config = peft_config("VeraConfig", params, ("r", "target_modules", "vera_dropout", "d_initial",
                                                "projection_prng_key"),
                         save_projection=True)  # the folder then loads without regenerating them
    return apply_peft_config(model, config)
