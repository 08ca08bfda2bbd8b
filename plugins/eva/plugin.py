"""EVA (Paischer et al. 2024) through peft: LoRA A from an SVD of the layers' input activations.

Before training, batches from ctx["train_batches"] (collated dicts: input_ids, attention_mask,
labels) run through the model; peft's incremental SVD per layer keeps the directions that explain
the most variance of *your* data and moves rank to the layers that need it (up to rho x r). Only
tokens that are trained on (labels != -100) are used. B starts at zero, so the adapted model
starts equal to the base model. The result is a standard LoRA (ranks in rank_pattern).
"""

import itertools

from studio.errors import UserError
from studio.plugins import apply_peft_config, lora_config


class _PassLimit(Exception):
    pass


def _init_batches(ctx: dict, count: int, device) -> list[dict]:
    source = ctx.get("train_batches")
    if source is None:
        raise UserError("EVA initialises from the training data, but no training batches were given.",
                        field="method.id", fix="start EVA from a training run (recipe with a [data] path).")
    batches = []
    for batch in itertools.islice(iter(source), count):
        batches.append({k: v.to(device) for k, v in batch.items()
                        if k in ("input_ids", "attention_mask", "labels")})
    if not batches:
        raise UserError("EVA got an empty training set.", field="data.path",
                        fix="add training examples to the data file.")
    return batches


def apply(model, params: dict, ctx: dict):
    import torch
    from peft import EvaConfig, initialize_lora_eva_weights

    config = lora_config(
        params,
        init_lora_weights="eva",
        eva_config=EvaConfig(rho=params["rho"], tau=params["tau"], whiten=params["whiten"]),
    )
    batches = _init_batches(ctx, params["init_batches"], next(model.parameters()).device)
    needed = round(params["r"] * params["rho"])
    tokens = [int(((b["labels"] != -100) & b["attention_mask"].bool()).sum()) if "labels" in b
              else int(b["attention_mask"].sum()) for b in batches]
    if min(tokens) < needed:
        raise UserError(f"EVA needs at least r x rho = {needed} trained tokens per batch, but a batch "
                        f"has only {min(tokens)}.", field="r",
                        fix="lower r or rho, raise the batch size, or use longer examples.")
    model = apply_peft_config(model, config)
    passes = 0

    def forward(m, inputs):
        nonlocal passes
        passes += 1
        if passes > params["max_passes"]:
            raise _PassLimit
        with torch.no_grad():
            return m(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])

    try:
        initialize_lora_eva_weights(model, batches, forward_fn=forward, show_progress_bar=False)
    except _PassLimit:
        raise UserError(f"EVA's activation SVD did not converge within {params['max_passes']} forward "
                        "passes.", field="max_passes",
                        fix="raise max_passes, lower tau, or give more initialisation batches.") from None
    return model
