"""LoRA initialisations that move part of W into the adapter (PiSSA, OLoRA).

They train on a residual base W_res = W - s*B0A0, so the training model's base weights differ
from the user's model. `remember_initial` keeps the freshly initialised adapter tensors;
`save_for_original_base` then has peft write the difference s*(BA - B0A0) as a standard LoRA of
rank 2r (`save_pretrained(path_initial_model_for_weight_conversion=...)`), which loads with plain
`PeftModel.from_pretrained(original_base, folder)` and merges like LoRA.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

INITIAL_ATTR = "studio_initial_adapter"   # the adapter tensors right after initialisation


def remember_initial(model):
    from peft import get_peft_model_state_dict

    initial = {k: v.detach().clone().contiguous() for k, v in get_peft_model_state_dict(model).items()}
    setattr(model, INITIAL_ATTR, initial)
    return model


def save_for_original_base(model, out_dir) -> None:
    """Write a standard LoRA adapter (rank 2r) that applies to the original base weights."""
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    initial = getattr(model, INITIAL_ATTR, None)
    if initial is None:          # a converted adapter loaded by load(): already standard LoRA
        model.save_pretrained(str(out_dir), safe_serialization=True)
        return
    with tempfile.TemporaryDirectory(prefix="lora-init-") as tmp:
        init_dir = Path(tmp) / "initial"
        init_dir.mkdir()
        save_file(initial, str(init_dir / "adapter_model.safetensors"), metadata={"format": "pt"})
        model.save_pretrained(str(out_dir), safe_serialization=True,
                              path_initial_model_for_weight_conversion=str(init_dir))
