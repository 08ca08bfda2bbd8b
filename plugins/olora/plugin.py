"""OLoRA (Büyükakyüz 2024) through peft: LoRA started from a QR decomposition of each weight.

OLoRA sets B0 = Q[:, :r] and A0 = R[:r] (W = QR) and trains on the residual W_res = W - s*B0A0,
so the base weights of the training model are *changed*; studio.plugins.residual_init saves the
result as a standard LoRA for the original base (plain peft loads and merges it).
"""

from studio.plugins import apply_peft_config, lora_config
from studio.plugins.residual_init import remember_initial, save_for_original_base


def apply(model, params: dict, ctx: dict):
    # QR is deterministic: a resumed run gets the same start
    model = apply_peft_config(model, lora_config(params, init_lora_weights="olora"))
    return remember_initial(model)


def save(model, out_dir) -> None:
    """Write a standard LoRA adapter (rank 2r) that applies to the original base weights."""
    save_for_original_base(model, out_dir)
