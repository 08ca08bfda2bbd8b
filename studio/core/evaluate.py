"""Evaluation: held-out loss, and exact match of greedy answers against the reference reply."""

from __future__ import annotations

from studio.core.data import Example, collate, end_of_turn_token_ids, prompt_text
from studio.errors import UserError


def _device(model):
    try:
        return next(model.parameters()).device
    except StopIteration:  # pragma: no cover - a model always has parameters
        import torch
        return torch.device("cpu")


def eval_loss(model, batches, progress=None) -> float:
    """Mean cross-entropy per trained token (labels != -100) over all batches.

    `batches`: collated dicts (input_ids, attention_mask, labels), or lists of tokenized examples
    (packed without padding where the model allows: studio/core/packing.py; same value).
    `progress(done, total)` is called after each batch (total: len(batches), or None).
    """
    import torch
    import torch.nn.functional as F

    from studio.core.packing import can_pack, pack, packed_loss

    device, was_training = _device(model), model.training
    model.eval()
    total, count = 0.0, 0
    n_batches = len(batches) if hasattr(batches, "__len__") else None
    packable = can_pack(model)
    try:
        with torch.no_grad():
            for done, batch in enumerate(batches, 1):
                if isinstance(batch, list) and packable:
                    packed = pack(batch)
                    total += float(packed_loss(model, packed, reduction="sum"))
                    count += int(packed["targets"].numel())
                    if progress is not None:
                        progress(done, n_batches)
                    continue
                if isinstance(batch, list):
                    batch = collate(batch, 0)
                input_ids = batch["input_ids"].to(device)
                mask = batch["attention_mask"].to(device)
                labels = batch["labels"].to(device)
                logits = model(input_ids=input_ids, attention_mask=mask).logits
                logits = logits[:, -labels.shape[1]:]   # prompt/P-tuning prepend virtual tokens
                shift_logits = logits[:, :-1].float()
                shift_labels = labels[:, 1:]
                total += F.cross_entropy(shift_logits.reshape(-1, shift_logits.size(-1)),
                                         shift_labels.reshape(-1), ignore_index=-100,
                                         reduction="sum").item()
                count += int((shift_labels != -100).sum())
                if progress is not None:
                    progress(done, n_batches)
    finally:
        model.train(was_training)
    if count == 0:
        raise UserError("the evaluation data has no trained tokens (every label is masked).",
                        fix="check that the evaluation examples have assistant replies, "
                            "and that max_length does not cut them off.")
    return total / count


def _normalise(text: str) -> str:
    return " ".join(text.split())


def split_for_generation(ex: Example) -> tuple[list[dict], str] | None:
    """(messages before the final assistant turn, that turn's content), or None for text examples."""
    if not ex.messages:
        return None
    last = max((i for i, m in enumerate(ex.messages) if m["role"] == "assistant"), default=None)
    if last is None:
        return None
    return ex.messages[:last], ex.messages[last]["content"]


def generate_batch(model, tokenizer, prompts: list[str], max_new_tokens: int) -> list[str]:
    """Greedy continuations of already rendered prompts, left-padded into one batch."""
    import torch

    device = _device(model)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    pad = 0 if pad is None else pad
    encoded = [tokenizer.encode(p, add_special_tokens=False) for p in prompts]
    width = max(len(ids) for ids in encoded)
    input_ids = torch.tensor([[pad] * (width - len(ids)) + ids for ids in encoded], device=device)
    mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in encoded], device=device)
    stop = end_of_turn_token_ids(tokenizer) or None
    with torch.no_grad():
        out = model.generate(input_ids=input_ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                             do_sample=False, pad_token_id=pad, eos_token_id=stop,
                             temperature=None, top_p=None, top_k=None)
    return [tokenizer.decode(row[width:], skip_special_tokens=True) for row in out]


def exact_match(model, tokenizer, examples: list[Example], max_new_tokens=32, batch_size=8) -> dict:
    """Greedy-generate each example's final assistant reply and compare (whitespace-normalised).

    Returns {"accuracy", "correct", "total", "skipped", "examples": [{"prompt", "reference",
    "prediction", "correct"}, ...]}. Text-only examples (no assistant turn) are skipped.
    """
    items = []
    skipped = 0
    for ex in examples:
        split = split_for_generation(ex)
        if split is None:
            skipped += 1
            continue
        items.append(split)
    if not items:
        raise UserError("no example has an assistant reply to compare against.",
                        fix="exact match needs chat/alpaca/sharegpt data, not plain text.")
    was_training = model.training
    model.eval()
    results = []
    try:
        for first in range(0, len(items), batch_size):
            chunk = items[first:first + batch_size]
            prompts = [prompt_text(history, tokenizer) for history, _ in chunk]
            for (history, reference), output in zip(chunk, generate_batch(model, tokenizer, prompts,
                                                                            max_new_tokens)):
                prediction = output.strip()
                user = next((m["content"] for m in reversed(history) if m["role"] == "user"), "")
                results.append({"prompt": user, "reference": reference, "prediction": prediction,
                                "correct": _normalise(prediction) == _normalise(reference)})
    finally:
        model.train(was_training)
    correct = sum(r["correct"] for r in results)
    return {"accuracy": correct / len(results), "correct": correct, "total": len(results),
            "skipped": skipped, "examples": results}
