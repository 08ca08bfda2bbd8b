"""PiSSA (Meng et al. 2024) through peft: LoRA started from each weight's top-r singular triplets.

PiSSA moves the principal part of W into the adapter (A0, B0) and trains on the residual
W_res = W - s*B0A0, so the base weights of the training model are *changed*. To keep the saved
adapter usable on the untouched base model, save() hands peft the initial adapter and peft
writes the difference s*(BA - B0A0) as a standard LoRA of rank 2r
(`save_pretrained(path_initial_model_for_weight_conversion=...)`). That folder loads with plain
`PeftModel.from_pretrained(original_base, folder)` and merges like LoRA.
"""

import tempfile
from pathlib import Path

from studio.plugins import apply_peft_config, parse_target_modules

INITIAL_ATTR = "studio_initial_adapter"   # the adapter tensors right after initialisation


def apply(model, params: dict, ctx: dict):
    import torch
    from peft import LoraConfig, TaskType, get_peft_model_state_dict

    n_iter = params["svd_iterations"]
    config = LoraConfig(
        task_type=TaskType.CAUSAL_LM,
        r=params["r"],
        lora_alpha=params["lora_alpha"],
        lora_dropout=params["lora_dropout"],
        target_modules=parse_target_modules(params["target_modules"]),
        init_lora_weights="pissa" if n_iter == 0 else f"pissa_niter_{n_iter}",
    )
    # the randomised SVD draws random numbers: seed it so a resumed run rebuilds the same start
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(ctx.get("seed", 0)))
        model = apply_peft_config(model, config)
    initial = {k: v.detach().clone().contiguous() for k, v in get_peft_model_state_dict(model).items()}
    setattr(model, INITIAL_ATTR, initial)
    return model


def save(model, out_dir) -> None:
    """Write a standard LoRA adapter (rank 2r) that applies to the original base weights."""
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    initial = getattr(model, INITIAL_ATTR, None)
    if initial is None:          # a converted adapter loaded by load(): already standard LoRA
        model.save_pretrained(str(out_dir), safe_serialization=True)
        return
    with tempfile.TemporaryDirectory(prefix="pissa-init-") as tmp:
        init_dir = Path(tmp) / "initial"
        init_dir.mkdir()
        save_file(initial, str(init_dir / "adapter_model.safetensors"), metadata={"format": "pt"})
        model.save_pretrained(str(out_dir), safe_serialization=True,
                              path_initial_model_for_weight_conversion=str(init_dir))
