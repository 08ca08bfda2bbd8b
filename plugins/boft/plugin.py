"""BOFT (Liu et al. 2024) through peft: an orthogonal rotation built from butterfly factors."""

from studio.errors import UserError
from studio.plugins import apply_peft_config, peft_config


def apply(model, params: dict, ctx: dict):
    config = peft_config("BOFTConfig", params, ("boft_block_size", "boft_n_butterfly_factor",
                                                "target_modules", "boft_dropout"),
                         boft_block_num=0)      # peft takes either the block size or the block count
    try:
        return apply_peft_config(model, config)
    except ValueError as exc:
        if "divisible" in str(exc) or "block" in str(exc).lower() or "butterfly" in str(exc).lower():
            raise UserError(f"BOFT block size {params['boft_block_size']} with "
                            f"{params['boft_n_butterfly_factor']} butterfly factor(s) does not fit this "
                            f"model ({exc}).", field="boft_block_size",
                            fix="use a power-of-two block size that divides the hidden sizes (e.g. 4, 8, "
                                "16) or fewer butterfly factors.") from None
        raise
