"""PiSSA (Meng et al. 2024) through peft: LoRA started from each weight's top-r singular triplets.

PiSSA moves the principal part of W into the adapter (A0, B0) and trains on the residual
W_res = W - s*B0A0, so the base weights of the training model are *changed*; studio.plugins.residual_init saves the
result as a standard LoRA for the original base (plain peft loads and merges it).
"""

from studio.plugins import apply_peft_config, lora_config
from studio.plugins.residual_init import remember_initial, save_for_original_base


def apply(model, params: dict, ctx: dict):
    import torch

    n_iter = params["svd_iterations"]
    config = lora_config(params, init_lora_weights="pissa" if n_iter == 0 else f"pissa_niter_{n_iter}")
    # the randomised SVD draws random numbers: seed it so a resumed run rebuilds the same start
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(ctx.get("seed", 0)))
        model = apply_peft_config(model, config)
    return remember_initial(model)


def save(model, out_dir) -> None:
    """Write a standard LoRA adapter (rank 2r) that applies to the original base weights."""
    save_for_original_base(model, out_dir)
