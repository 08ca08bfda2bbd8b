"""LoRA on the last N transformer layers only: a PEFT Studio method plugin shipped as a package.

The upper layers of a language model hold most task-specific behaviour, so adapting only them
trains fewer parameters (and, with a frozen lower stack, the backward pass stops early).
"""

MANIFEST = {
    "id": "lora_last_layers",
    "name": "LoRA (last layers)",
    "family": "low-rank",
    "description": "LoRA adapters on the last N transformer layers only; the rest stays untouched.",
    "paper": "https://arxiv.org/abs/2106.09685",
    "capabilities": {"mergeable": True, "needs_quantized_base": False,
                     "optimizer_groups": False, "callbacks": False},
    "parameters": {
        "num_layers": {"type": "integer", "default": 4, "minimum": 1, "maximum": 512,
                       "title": "Layers to adapt",
                       "help": "How many of the top transformer layers get adapters."},
        "r": {"type": "integer", "default": 16, "minimum": 1, "maximum": 512, "title": "Rank",
              "help": "Inner size of the adapter matrices."},
        "lora_alpha": {"type": "number", "default": 32, "minimum": 0.01, "maximum": 4096,
                       "title": "Alpha", "help": "Update scale (alpha / r)."},
        "lora_dropout": {"type": "number", "default": 0.05, "minimum": 0.0, "maximum": 0.9,
                         "title": "Dropout", "help": "Dropout on the adapter input."},
        "target_modules": {"type": "string", "default": "all-linear", "title": "Target modules",
                           "help": "'all-linear' or a comma list such as 'q_proj,v_proj'."},
    },
}


def _layer_count(model) -> int:
    config = getattr(model, "config", None)
    for key in ("num_hidden_layers", "n_layer", "num_layers"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    raise ValueError("cannot tell how many layers this model has (no num_hidden_layers in its config)")


def _linear_names(model) -> list[str]:
    """Short names of the Linear layers inside the transformer blocks (not the output head)."""
    import torch

    head = model.get_output_embeddings()
    return sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                   if isinstance(module, torch.nn.Linear) and module is not head})


def apply(model, params, ctx):
    from peft import LoraConfig, TaskType, get_peft_model

    from studio.errors import UserError

    total = _layer_count(model)
    n = params["num_layers"]
    if n > total:
        raise UserError(f"this model has only {total} layers.", field="num_layers",
                        fix=f"use a number from 1 to {total}.")
    target = params["target_modules"].strip()
    if target == "all-linear":      # peft refuses the "all-linear" shortcut with layers_to_transform
        target = _linear_names(model)
    else:
        target = [name.strip() for name in target.split(",") if name.strip()]
    config = LoraConfig(
        task_type=TaskType.CAUSAL_LM,
        r=params["r"],
        lora_alpha=params["lora_alpha"],
        lora_dropout=params["lora_dropout"],
        target_modules=target,
        layers_to_transform=list(range(total - n, total)),
    )
    return get_peft_model(model, config)
