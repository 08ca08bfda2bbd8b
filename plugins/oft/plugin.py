"""OFT (Qiu et al. 2023) through peft: a learned block-diagonal orthogonal rotation per weight."""

from studio.errors import UserError
from studio.plugins import apply_peft_config, parse_target_modules


def apply(model, params: dict, ctx: dict):
    from peft import OFTConfig, TaskType
    config = OFTConfig(
        task_type=TaskType.CAUSAL_LM,
        r=0,                                   # peft takes either r (block count) or block size
        oft_block_size=params["oft_block_size"],
        target_modules=parse_target_modules(params["target_modules"]),
        module_dropout=params["module_dropout"],
        coft=params["coft"],
        eps=params["eps"],
        block_share=params["block_share"],
        use_cayley_neumann=params["use_cayley_neumann"],
    )
    try:
        return apply_peft_config(model, config)
    except ValueError as exc:
        if "divisible" in str(exc) or "block" in str(exc).lower():
            raise UserError(f"OFT block size {params['oft_block_size']} does not fit this model ({exc}).",
                            field="oft_block_size",
                            fix="pick a block size that divides the hidden sizes, e.g. 16, 32 or 64.") from None
        raise
