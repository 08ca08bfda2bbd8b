"""OFT (Qiu et al. 2023) through peft: a learned block-diagonal orthogonal rotation per weight."""

from studio.errors import UserError
from studio.plugins import apply_peft_config, peft_config


def apply(model, params: dict, ctx: dict):
    config = peft_config("OFTConfig", params, ("oft_block_size", "target_modules", "module_dropout",
                                               "coft", "eps", "block_share", "use_cayley_neumann"),
                         r=0)                   # peft takes either r (block count) or block size
    try:
        return apply_peft_config(model, config)
    except ValueError as exc:
        if "divisible" in str(exc) or "block" in str(exc).lower():
            raise UserError(f"OFT block size {params['oft_block_size']} does not fit this model ({exc}).",
                            field="oft_block_size",
                            fix="pick a block size that divides the hidden sizes, e.g. 16, 32 or 64.") from None
        raise
