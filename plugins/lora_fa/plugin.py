"""LoRA-FA (Zhang et al. 2023): LoRA whose A matrices stay frozen at their random start.

peft builds the LoRA layers (A: Kaiming-uniform random, B: zeros); we then stop gradients to
every A so only B trains. The saved adapter is plain LoRA (A is saved too), so peft loads and
merges it like any LoRA adapter.
"""

from studio.errors import UserError
from studio.plugins import apply_peft_config, lora_config


def apply(model, params: dict, ctx: dict):
    model = apply_peft_config(model, lora_config(params))
    frozen = 0
    for name, param in model.named_parameters():
        if ".lora_A." in name or ".lora_embedding_A." in name:
            param.requires_grad_(False)
            frozen += 1
    if frozen == 0:
        raise UserError("LoRA-FA found no LoRA A matrices to freeze.", field="target_modules",
                        fix="target at least one linear layer, e.g. 'all-linear'.")
    return model
