"""Padding-free batches and a loss computed only where tokens are trained.

A padded batch spends compute on pad positions, and the usual causal-LM loss builds the full
vocabulary logits (fp32 over 49k+ entries) at every position, prompt included, although only
answer tokens are trained. Here a batch's examples are laid end to end in one row; position ids
restart at 0 for each example, which transformers turns into a block-diagonal attention mask (no
example sees another), and `logits_to_keep` asks the model for logits only at the positions whose
next token is trained. Same loss as the padded batch (the mean over trained tokens), fewer FLOPs
and far less memory. Works for every method that keeps the model's own forward (LoRA family,
IA3, OFT, ...); prompt-learning methods prepend virtual tokens and use the padded path.
"""

from __future__ import annotations

IGNORE = -100


def pack(items: list[dict]) -> dict:
    """One row: input_ids/position_ids [1, T]; `keep` = positions whose next token is trained
    (never across an example boundary); `targets` = those next tokens."""
    import torch

    ids, pos, keep, targets = [], [], [], []
    for item in items:
        x = list(item["input_ids"])
        y = list(item.get("labels", x))
        start = len(ids)
        for i in range(len(x) - 1):
            if y[i + 1] != IGNORE:
                keep.append(start + i)
                targets.append(y[i + 1])
        ids += x
        pos += range(len(x))
    return {"input_ids": torch.tensor([ids], dtype=torch.long),
            "position_ids": torch.tensor([pos], dtype=torch.long),
            "keep": torch.tensor(keep, dtype=torch.long),
            "targets": torch.tensor(targets, dtype=torch.long)}


def packed_loss(model, packed: dict, reduction: str = "mean", chunk: int | None = None):
    """Cross-entropy (fp32) over the trained tokens of a packed row; `reduction="sum"` for
    accumulating over several rows. A row without trained tokens gives a zero that still
    carries a graph (so backward() is harmless).

    With many trained positions (long answers, or training on every token) the output layer and
    the loss run in chunks of `chunk` positions (default: ~64 M logits per chunk), each chunk
    recomputed in the backward pass, so the logits of the whole row never exist at once."""
    import torch

    device = next(model.parameters()).device
    keep = packed["keep"].to(device)
    targets = packed["targets"].to(device)
    if keep.numel() == 0:
        return sum(p.sum() * 0.0 for p in model.parameters() if p.requires_grad)
    inputs = {"input_ids": packed["input_ids"].to(device),
              "position_ids": packed["position_ids"].to(device), "logits_to_keep": keep,
              "use_cache": False}
    head, base = _plain_head(model)
    size = chunk or (max(64, 2**26 // head.weight.shape[0]) if head is not None else 0)
    if head is None or keep.numel() <= size:
        logits = model(**inputs).logits[0].float()
        return torch.nn.functional.cross_entropy(logits, targets, reduction=reduction)
    base.set_output_embeddings(torch.nn.Identity())        # the model returns hidden states
    try:
        hidden = model(**inputs).logits[0]
    finally:
        base.set_output_embeddings(head)
    from torch.utils.checkpoint import checkpoint

    total = hidden.new_zeros((), dtype=torch.float32)
    for start in range(0, keep.numel(), size):
        total = total + checkpoint(_chunk_loss, hidden[start:start + size], head.weight,
                                   head.bias, targets[start:start + size], use_reentrant=False)
    return total / keep.numel() if reduction == "mean" else total


def _chunk_loss(hidden, weight, bias, targets):
    import torch

    logits = torch.nn.functional.linear(hidden, weight, bias).float()
    return torch.nn.functional.cross_entropy(logits, targets, reduction="sum")


def _plain_head(model):
    """(output layer, the causal LM holding it) when the output layer is a plain Linear whose
    logits the model uses as they are; (None, None) otherwise (logit soft-capping or scaling,
    an adapted or an FSDP-sharded output layer): then the loss takes the model's own logits."""
    import torch

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    getter = getattr(base, "get_output_embeddings", None)
    head = getter() if callable(getter) else None
    config = getattr(base, "config", None)
    text = getattr(config, "text_config", None) or config
    if type(head) is not torch.nn.Linear or not hasattr(base, "set_output_embeddings"):
        return None, None
    if hasattr(head.weight, "device_mesh"):     # FSDP-sharded: the head runs in its own unit
        return None, None
    if getattr(text, "final_logit_softcapping", None) or getattr(text, "logit_scale", None) \
            or getattr(text, "logits_scaling", None):
        return None, None
    return head, base


def can_pack(model) -> bool:
    """False where a packed row would change what is trained: prompt-learning adapters (virtual
    tokens change the positions) and AdaLoRA (peft adds its orthogonality penalty to the loss the
    model computes from labels, which a packed step does not pass)."""
    config = getattr(model, "peft_config", None)
    if not config:
        return True
    return not any(getattr(c, "is_prompt_learning", False) or str(getattr(c, "peft_type", "")).endswith("ADALORA")
                   for c in config.values())


def padding_waste(items: list[dict]) -> float:
    """The share of a right-padded batch of `items` that would be padding (0..1)."""
    if not items:
        return 0.0
    lengths = [len(i["input_ids"]) for i in items]
    return 1.0 - sum(lengths) / (max(lengths) * len(lengths))
