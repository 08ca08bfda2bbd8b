"""Synthetic task prompts and the discriminator that filters them.

    generator_text(seeds, task, shots, rng)     the few-shot text a base model continues
    write_prompts(model, tokenizer, ...)        sampled prompts, cut at the separator (resumable)
    hidden_features(model, tokenizer, texts)    mean hidden state (middle + last layer) per text
    probe_scores(real, fake, folds, seed)       cross-fitted P(real) of every row, and how well
                                                the probe told them apart
    quantile(real scores, q)                    the cut: a written prompt less real-looking
                                                than that share of the real ones is dropped
                                                (relative, so a probe that finds even held-out
                                                real prompts unlike the rest does not drop all)
    choose(candidates, scores, ...)             which prompts to keep, and why each other went

The generator is asked as a plain language model (no chat template): a list of real requests
under '### Request' headers, ending in an open header. This works the same for base and chat
models and copies the real prompts' format (e.g. a multiple-choice list), which a chat
instruction to "write a new example" does not do reliably at this model size.
"""

from __future__ import annotations

import math
import random
from typing import Callable

SEPARATOR = "### Request"
PROBE_FOLDS = 5
PROBE_L2 = 1.0


def generator_text(seeds: list[str], task: str, shots: int, rng: random.Random) -> str:
    lines = []
    if task:
        lines.append(f"Task: {task.strip()}")
    if seeds:
        lines.append("Below are requests people sent for this task, one under each header.")
        chosen = rng.sample(seeds, min(shots, len(seeds)))
    else:
        lines.append("Below are requests a user could send for this task, one under each header.")
        chosen = []
    text = "\n".join(lines) + "\n\n"
    for seed in chosen:
        text += f"{SEPARATOR}\n{seed.strip()}\n\n"
    return text + f"{SEPARATOR}\n"


def cut(raw: str) -> tuple[str, bool]:
    """The written prompt before the next header; (text, finished: a header or the end came)."""
    for stop in (SEPARATOR, "###"):
        at = raw.find(stop)
        if at >= 0:
            return raw[:at].strip(), True
    return raw.strip(), False


def token_budget(tokenizer, texts: list[str], explicit: int, floor: int, fallback: int) -> int:
    """explicit when set; else 1.5 x the longest text's tokens (at least `floor`, at most 1024);
    `fallback` without texts."""
    if explicit:
        return int(explicit)
    if not texts:
        return fallback
    longest = max(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)
    return int(min(1024, max(floor, math.ceil(longest * 1.5) + 4)))


def sample_batch(model, tokenizer, texts: list[str], max_new_tokens: int, temperature: float,
                 seed: int, top_p: float = 0.95) -> list[str]:
    """Sampled continuations of raw texts (left-padded batch; each row stops at '###')."""
    import torch

    device = next(model.parameters()).device
    old_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=True).to(device)
    finally:
        tokenizer.padding_side = old_side
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    torch.manual_seed(seed)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            out = model.generate(**enc, do_sample=True, temperature=float(temperature),
                                 top_p=top_p, top_k=None, max_new_tokens=int(max_new_tokens),
                                 pad_token_id=pad, stop_strings=["###"], tokenizer=tokenizer)
    finally:
        model.train(was_training)
    return tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)


def write_prompts(model, tokenizer, seeds: list[str], task: str, count: int, shots: int,
                  temperature: float, max_new_tokens: int, seed: int, batch_size: int = 8,
                  done: list[dict] | None = None,
                  on_batch: Callable[[list[dict], int, int], None] | None = None) -> list[dict]:
    """`count` candidate prompts, each {"text", "finished", "index"}. Batch b uses the random
    state seed + b, so a stopped stage continues where it was (`done`: the rows already written)
    with the same result. on_batch(new_rows, done, total) after each batch (may raise to stop)."""
    rows = list(done or [])
    batches = math.ceil(count / batch_size)
    for b in range(len(rows) // batch_size, batches):
        rng = random.Random(seed * 100_003 + b)
        n = min(batch_size, count - b * batch_size)
        texts = [generator_text(seeds, task, shots, rng) for _ in range(n)]
        raws = sample_batch(model, tokenizer, texts, max_new_tokens, temperature, seed * 100_003 + b)
        new = []
        for i, raw in enumerate(raws):
            text, finished = cut(raw)
            new.append({"index": b * batch_size + i, "text": text, "finished": finished})
        rows += new
        if on_batch is not None:
            on_batch(new, len(rows), count)
    return rows[:count]


def hidden_features(model, tokenizer, texts: list[str], batch_size: int = 8,
                    max_tokens: int = 512, progress: Callable[[int, int], None] | None = None):
    """One vector per text: the mean over its tokens of the middle and the last hidden layer
    (concatenated), float32 on the CPU."""
    import torch

    device = next(model.parameters()).device
    out = []
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                chunk = texts[start:start + batch_size]
                enc = tokenizer(chunk, return_tensors="pt", padding=True, truncation=True,
                                max_length=max_tokens, add_special_tokens=True).to(device)
                hidden = model(**enc, output_hidden_states=True, use_cache=False).hidden_states
                mask = enc["attention_mask"].unsqueeze(-1).to(hidden[-1].dtype)
                pooled = [(h * mask).sum(1) / mask.sum(1).clamp(min=1)
                          for h in (hidden[len(hidden) // 2], hidden[-1])]
                out.append(torch.cat(pooled, dim=-1).float().cpu())
                if progress is not None:
                    progress(min(start + batch_size, len(texts)), len(texts))
    finally:
        model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0, 1)


def _fit_probe(x, y, weights):
    """L2-regularised logistic regression (full batch, L-BFGS) on standardised features."""
    import torch

    mean, std = x.mean(0), x.std(0).clamp(min=1e-6)
    xs = (x - mean) / std
    w = torch.zeros(x.shape[1], requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=0.5, max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        logits = xs @ w + b
        loss = (torch.nn.functional.binary_cross_entropy_with_logits(
            logits, y, reduction="none") * weights).sum() / weights.sum()
        loss = loss + PROBE_L2 * (w * w).sum() / x.shape[1]
        loss.backward()
        return loss

    opt.step(closure)
    return lambda z: torch.sigmoid(((z - mean) / std) @ w.detach() + b.detach())


def probe_scores(real, fake, folds: int = PROBE_FOLDS, seed: int = 0) -> dict:
    """P(real) for every real and every fake row, each from a probe trained without that row
    (k-fold cross-fitting; classes weighted equally). Also the probe's held-out balanced accuracy
    and AUC: near 0.5 = the written prompts look like the real ones."""
    import torch

    n_real, n_fake = real.shape[0], fake.shape[0]
    x = torch.cat([real, fake])
    y = torch.cat([torch.ones(n_real), torch.zeros(n_fake)])
    rng = random.Random(seed)
    fold_of = [i % folds for i in range(n_real)] + [i % folds for i in range(n_fake)]
    rng.shuffle(fold_of)
    fold_of = torch.tensor(fold_of)
    weights = torch.where(y > 0, 0.5 / max(1, n_real), 0.5 / max(1, n_fake))
    scores = torch.zeros(n_real + n_fake)
    for k in range(folds):
        held = fold_of == k
        if not held.any():
            continue
        train = ~held
        if y[train].sum() == 0 or (1 - y[train]).sum() == 0:
            scores[held] = 0.5
            continue
        probe = _fit_probe(x[train], y[train], weights[train])
        scores[held] = probe(x[held])
    real_scores, fake_scores = scores[:n_real], scores[n_real:]
    balanced = 0.5 * ((real_scores >= 0.5).float().mean() + (fake_scores < 0.5).float().mean())
    greater = (real_scores[:, None] > fake_scores[None, :]).float().mean()
    ties = (real_scores[:, None] == fake_scores[None, :]).float().mean()
    return {"real": real_scores.tolist(), "fake": fake_scores.tolist(),
            "balanced_accuracy": float(balanced), "auc": float(greater + 0.5 * ties)}


def quantile(values: list[float], q: float) -> float:
    """The q-quantile of `values` (linear between order statistics)."""
    ordered = sorted(values)
    if not ordered:
        return 0.0
    at = q * (len(ordered) - 1)
    low = int(math.floor(at))
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (at - low)


def normalise(text: str) -> str:
    return " ".join(text.lower().split())


def hygiene(candidates: list[dict], seeds: list[str]) -> list[str | None]:
    """Why each candidate cannot be used at all (None = usable): empty, unfinished (ran past the
    length limit), a copy of a real prompt, a repeat of an earlier candidate."""
    seen_seeds = {normalise(s) for s in seeds}
    seen: set[str] = set()
    reasons: list[str | None] = []
    for row in candidates:
        key = normalise(row["text"])
        if not key:
            reasons.append("empty")
        elif not row.get("finished", True):
            reasons.append("unfinished (longer than the limit)")
        elif key in seen_seeds:
            reasons.append("a copy of a real prompt")
        elif key in seen:
            reasons.append("a repeat")
        else:
            reasons.append(None)
        seen.add(key)
    return reasons


def choose(candidates: list[dict], reasons: list[str | None], scores: list[float] | None,
           wanted: int, threshold: float, minimum: int = 8) -> tuple[list[int], list[str | None]]:
    """Indices of the prompts to keep and the final reason for each candidate (None = kept).
    With scores: the usable ones with P(real) >= threshold, best first, up to `wanted`; when fewer
    pass, the `minimum` best-scoring (the pipeline asks for half of `wanted`). Without: the usable
    ones in the order written."""
    reasons = list(reasons)
    usable = [i for i, r in enumerate(reasons) if r is None]
    if scores is None:
        kept = usable[:wanted]
    else:
        ranked = sorted(usable, key=lambda i: -scores[i])
        passing = [i for i in ranked if scores[i] >= threshold]
        kept = passing[:wanted]
        if len(kept) < min(minimum, len(ranked)):
            kept = ranked[:min(minimum, len(ranked))]
        for i in ranked:
            if i not in kept and scores[i] < threshold:
                reasons[i] = (f"judged synthetic (P(real) {scores[i]:.2f}, real prompts' cut "
                              f"{threshold:.2f})")
    keep_set = set(kept)
    for i in usable:
        if i not in keep_set and reasons[i] is None:
            reasons[i] = "enough kept already"
    return kept, reasons
