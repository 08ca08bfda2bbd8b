"""LoRA+ (Hayou et al. 2024): plain LoRA, but B learns lr_ratio times faster than A.

The grouping follows peft.optimizers.create_loraplus_optimizer; we return the param groups
instead of an optimizer so the training loop keeps its own optimizer and scheduler (the
scheduler scales every group's lr by the same factor, so the ratio holds throughout).
"""

from studio.errors import UserError
from studio.plugins import apply_peft_config, lora_config


def apply(model, params: dict, ctx: dict):
    return apply_peft_config(model, lora_config(params))


def optimizer_param_groups(model, params: dict, lr: float) -> list[dict]:
    from peft.tuners.lora.layer import Embedding as LoraEmbedding

    modules = dict(model.named_modules())
    group_a, group_b, embedding = [], [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        # adapter tensors sit in a ModuleDict/ParameterDict two levels below their LoRA layer
        owner = modules.get(".".join(name.split(".")[:-2]))
        if isinstance(owner, LoraEmbedding):
            embedding.append(param)
        elif "lora_B" in name or param.ndim == 1:
            group_b.append(param)
        else:
            group_a.append(param)
    if not group_b:
        raise UserError("LoRA+ found no trainable LoRA B matrices.", field="target_modules",
                        fix="target at least one linear layer, e.g. 'all-linear'.")
    groups = [{"params": group_a, "lr": lr, "name": "lora_A"},
              {"params": group_b, "lr": lr * params["lr_ratio"], "name": "lora_B"}]
    if embedding:
        groups.append({"params": embedding, "lr": params["lr_embedding"], "name": "embedding"})
    return [g for g in groups if g["params"]]
