"""Datasets: read user files in the usual formats, turn examples into tokens and label masks.

Formats (detected per file from its first records, or named with ``fmt``):
  alpaca    {"instruction", "input"?, "output", "system"?}
  chat      {"messages" | "conversations": [{"role", "content"}, ...]}
  sharegpt  {"conversations": [{"from", "value"}, ...]}   (human/user, gpt/assistant/model, system)
  text      {"text"}                                         (train on every token)
Files: .jsonl (one object per line), .json (a list, or {"data": [...]}), .csv (a header row).

Label masking works from the tokenizer's own chat template: the conversation is rendered one message
at a time and each rendering is diffed against the previous one, so the text each message adds is
known without knowing the template's tags. Only what an assistant turn adds after its header (its
content and the end-of-turn marker) is trained.
"""

from __future__ import annotations

import random
import statistics
from pathlib import Path
from typing import Iterator

from studio.errors import UserError
from studio.core.data_files import (  # noqa: F401 - re-exported: the public data API
    ACCEPTED, FORMATS, ROLES, SHAREGPT_ROLES, Example, detect_format, examples_from_rows, read_rows)

IGNORE = -100

# Used when a tokenizer has no chat template (base models): plain "User:/Assistant:" turns.
FALLBACK_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m['role'] == 'system' %}{{ m['content'] }}\n\n"
    "{% elif m['role'] == 'user' %}User: {{ m['content'] }}\n"
    "{% else %}Assistant: {{ m['content'] }}{{ eos_token }}\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)


# ---------------------------------------------------------------------------------------------
# Reading files


def load_examples(path, fmt: str = "auto") -> list[Example]:
    """Read a .jsonl / .json / .csv file into examples. UserError names file and line when bad."""
    path = Path(path)
    if fmt not in ("auto",) + FORMATS:
        raise UserError(f"unknown data format '{fmt}'.", field="format",
                        fix=f"use one of: auto, {', '.join(FORMATS)}.")
    if not path.exists():
        raise UserError("file not found.", path=path, fix="check the path, or pick the file again.")
    if path.is_dir():
        raise UserError("is a folder, not a data file.", path=path,
                        fix="choose a .jsonl, .json or .csv file inside it.")
    rows = read_rows(path)
    examples = examples_from_rows(rows, path, fmt)
    answer_warnings(examples, path)          # UserError when no example has an answer
    return examples


def answer_warnings(examples, path=None) -> list[str]:
    """Warnings about examples with nothing to learn: an empty answer (alpaca 'output', the
    assistant turns) teaches the model to say nothing. UserError when every example is so."""
    convo = [ex for ex in examples if ex.messages is not None]
    empty = sum(1 for ex in convo if not any(
        m["role"] == "assistant" and str(m.get("content") or "").strip() for m in ex.messages))
    if not convo or not empty:
        return []
    if empty == len(convo):
        raise UserError(f"every one of the {empty} examples has an empty answer (alpaca "
                        "'output' / assistant reply), so there is nothing to learn.", path=path,
                        field="output", fix="fill in the answers the model should learn to give.")
    return [f"{empty} of {len(convo)} examples have an empty answer (alpaca 'output' / assistant "
            "reply): they teach the model to reply with nothing. Fill them in or remove them."]


def detect_file_format(path) -> str:
    """Which of the accepted formats (alpaca, chat, sharegpt, text) a data file is written in."""
    from studio.core.data_files import detect_rows_format

    return detect_rows_format(read_rows(Path(path)), path)


# ---------------------------------------------------------------------------------------------
# Templates and label masks


def adds_bos(tokenizer) -> bool:
    """Whether the tokenizer puts its BOS token in front of a text it encodes (an attribute for
    some tokenizers, only the post-processor for others, e.g. Gemma's from a GGUF)."""
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return False
    if getattr(tokenizer, "add_bos_token", False):
        return True
    try:
        ids = tokenizer("x")["input_ids"]
    except Exception:   # noqa: BLE001 - a tokenizer that cannot encode "x" adds nothing we know of
        return False
    return bool(ids) and ids[0] == bos


def chat_template_of(tokenizer) -> str:
    """The tokenizer's chat template, or the plain User:/Assistant: fallback (which starts with
    the BOS token when the tokenizer would add one: Gemma answers badly without it)."""
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):   # several named templates: take the default one
        template = template.get("default") or next(iter(template.values()), None)
    if template:
        return template
    return ("{{ bos_token }}" + FALLBACK_TEMPLATE) if adds_bos(tokenizer) else FALLBACK_TEMPLATE


def _apply_template(messages, tokenizer, add_generation_prompt) -> str:
    return tokenizer.apply_chat_template(list(messages), chat_template=chat_template_of(tokenizer),
                                         tokenize=False, add_generation_prompt=add_generation_prompt)


def fold_system(messages) -> list[dict] | None:
    """The conversation with its system message put in front of the first user message (the way
    Gemma 3's own template does it), or None when there is nothing to fold."""
    if (len(messages) < 2 or messages[0].get("role") != "system"
            or not str(messages[0].get("content") or "").strip()
            or messages[1].get("role") != "user"):
        return None
    first = dict(messages[1])
    first["content"] = f"{str(messages[0]['content']).strip()}\n\n{first.get('content') or ''}"
    return [first] + [dict(m) for m in messages[2:]]


def render(messages, tokenizer, add_generation_prompt=False) -> str:
    """The conversation as text, through the chat template (no tokenization).

    A system message the template cannot take is folded into the first user message instead of
    being lost: Gemma 2's template raises on a system role, and Mistral v0.3's writes the system
    prompt only in front of a *final* user message, so every training conversation (which ends
    with an answer) would silently lose it."""
    messages = list(messages)
    try:
        text = _apply_template(messages, tokenizer, add_generation_prompt)
    except Exception as err:  # the template rejects this conversation (e.g. roles must alternate)
        folded = fold_system(messages)
        if folded is not None:
            try:
                return _apply_template(folded, tokenizer, add_generation_prompt)
            except Exception:  # noqa: BLE001 - report the template's first complaint
                pass
        raise UserError(f"the model's chat template rejected a conversation: {err}",
                        fix="reorder the turns (usually system, then user/assistant alternating)."
                        ) from None
    folded = fold_system(messages)
    if folded is not None and str(messages[0]["content"]).strip() not in text:
        try:
            return _apply_template(folded, tokenizer, add_generation_prompt)
        except Exception:  # noqa: BLE001 - the template's own rendering, as it is
            return text
    return text


def prompt_text(messages, tokenizer) -> str:
    """Text to feed for generation: the conversation plus the assistant header."""
    return render(messages, tokenizer, add_generation_prompt=True)


def end_of_turn_token_ids(tokenizer) -> list[int]:
    """Token ids that end an assistant turn in this template (for generation stop criteria)."""
    ids = set()
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    probe = [{"role": "user", "content": "x"}, {"role": "assistant", "content": "Q"}]
    trained = "".join(text for text, on in segments(probe, tokenizer) if on)
    marker = trained.split("Q", 1)[-1].strip()
    if marker:
        marker_ids = tokenizer.encode(marker, add_special_tokens=False)
        if len(marker_ids) == 1:
            ids.add(marker_ids[0])
    return sorted(ids)


def segments(messages, tokenizer) -> list[tuple[str, bool]]:
    """The rendered conversation cut into (text, is_trained) pieces, adjacent pieces merged."""
    pieces = _prefix_pieces(messages, tokenizer)
    if pieces is None:
        pieces = _search_pieces(messages, tokenizer)
    merged: list[tuple[str, bool]] = []
    for text, trained in pieces:
        if not text:
            continue
        if merged and merged[-1][1] == trained:
            merged[-1] = (merged[-1][0] + text, trained)
        else:
            merged.append((text, trained))
    return merged


def _prefix_pieces(messages, tokenizer):
    """Render messages[:i] and messages[:i+1]; what the latter adds belongs to message i."""
    pieces, before = [], ""
    for i, message in enumerate(messages):
        try:
            after = render(messages[: i + 1], tokenizer)
            header = render(messages[:i], tokenizer, add_generation_prompt=True) if i else ""
        except UserError:
            return None
        if not after.startswith(before):
            return None
        added = after[len(before):]
        if message["role"] != "assistant":
            pieces.append((added, False))
        else:
            if i and header.startswith(before) and added.startswith(header[len(before):]):
                start = len(header) - len(before)
            else:   # header unknown: the content itself is where training starts
                found = added.find(message["content"].strip()) if message["content"].strip() else -1
                if found < 0:
                    return None
                start = found
            end = len(added.rstrip())
            pieces += [(added[:start], False), (added[start:end], True), (added[end:], False)]
        before = after
    return pieces


def _assistant_header(messages, i, tokenizer) -> str:
    """What the generation prompt adds before assistant turn i ("<|im_start|>assistant\\n",
    "<start_of_turn>model\\n", ...; "" for templates without one, such as Mistral's)."""
    try:
        with_prompt = render(messages[:i], tokenizer, add_generation_prompt=True)
        without = render(messages[:i], tokenizer)
    except UserError:
        return ""
    common = 0
    for a, b in zip(with_prompt, without):
        if a != b:
            break
        common += 1
    return with_prompt[common:]


def _search_pieces(messages, tokenizer):
    """Fallback for templates that are not prefix-stable (Qwen3 drops earlier turns' <think>
    blocks, Phi-3 ends a rendering with eos, Mistral moves the system prompt): find each assistant
    content in order in the whole rendering. Training starts right after that turn's assistant
    header, as in the prefix-stable case, so what the template writes between header and content
    (Qwen3's empty <think></think> on the final answer, Mistral's space) is what the model learns
    to write after the generation prompt; it ends after the end-of-turn token."""
    full = render(messages, tokenizer)
    specials = sorted({t for t in tokenizer.all_special_tokens if t} |
                      set(getattr(tokenizer, "get_added_vocab", dict)()), key=len, reverse=True)
    pieces, pos = [], 0
    for i, message in enumerate(messages):
        content = message["content"].strip()
        if message["role"] != "assistant" or not content:
            continue
        found = full.find(content, pos)
        if found < 0 and "</think>" in content:   # Qwen3 writes only the visible part
            content = content.split("</think>")[-1].strip()
            found = full.find(content, pos) if content else -1
        if found < 0:
            continue
        header = _assistant_header(messages, i, tokenizer) if i else ""
        at = full.rfind(header, pos, found) if header.strip() else -1
        if at >= 0 and not any(t in full[at + len(header):found] for t in specials
                               if t not in ("<think>", "</think>")):
            start = at + len(header)
        else:       # no generation prompt: the spaces the template puts before the answer
            start = found - (len(full[pos:found]) - len(full[pos:found].rstrip(" ")))
        end = found + len(content)
        rest = full[end:]
        marker = next((t for t in specials if rest.lstrip(" ").startswith(t)), None)
        if marker:
            end += rest.index(marker) + len(marker)
        pieces += [(full[pos:start], False), (full[start:end], True)]
        pos = end
    pieces.append((full[pos:], False))
    return pieces


def text_segments(ex: Example, tokenizer) -> list[tuple[str, bool]]:
    """(text, is_trained) pieces for any example."""
    if ex.messages:
        return segments(ex.messages, tokenizer)
    text = ex.text or ""
    eos = tokenizer.eos_token or ""
    return [(text + (eos if eos and not text.endswith(eos) else ""), True)]


def _encode_segments(pieces, tokenizer, add_bos) -> tuple[list[int], list[int]]:
    input_ids, labels = [], []
    bos = tokenizer.bos_token_id
    if add_bos and bos is not None and not (pieces and pieces[0][0].startswith(tokenizer.bos_token)):
        input_ids.append(bos)
        labels.append(IGNORE)
    for text, trained in pieces:
        ids = tokenizer.encode(text, add_special_tokens=False)
        input_ids += ids
        labels += ids if trained else [IGNORE] * len(ids)
    return input_ids, labels


# No token is anywhere near this many characters: text beyond max_tokens x this is cut before the
# template and the tokenizer see it (it would be truncated anyway), so a 50 MB one-line example
# costs what a max_length one costs instead of minutes and gigabytes.
CHARS_PER_TOKEN_CAP = 64
PREVIEW_CHARS = 20_000


def capped(ex: Example, max_tokens: int) -> Example:
    """`ex` with every message (or the text) cut to max_tokens x CHARS_PER_TOKEN_CAP characters."""
    limit = max(1, max_tokens) * CHARS_PER_TOKEN_CAP
    if ex.messages:
        if all(len(m["content"]) <= limit for m in ex.messages):
            return ex
        return Example([dict(m, content=m["content"][:limit]) for m in ex.messages], ex.text)
    if ex.text is not None and len(ex.text) > limit:
        return Example(ex.messages, ex.text[:limit])
    return ex


def tokenize_example(ex: Example, tokenizer, max_length: int) -> dict:
    """{"input_ids", "labels"}: labels are -100 except assistant turns (or everything for text)."""
    ex = capped(ex, max_length)
    pieces = text_segments(ex, tokenizer)
    # Templates carry their own BOS in the text; plain text gets the tokenizer's BOS if it uses one.
    add_bos = not ex.messages and adds_bos(tokenizer)
    input_ids, labels = _encode_segments(pieces, tokenizer, add_bos)
    return {"input_ids": input_ids[:max_length], "labels": labels[:max_length]}


def render_preview(ex: Example, tokenizer) -> list[tuple[str, bool]]:
    """(text piece, is_trained) for the GUI to colour; a huge piece is shown cut, with a note."""
    pieces = []
    for text, trained in text_segments(capped(ex, PREVIEW_CHARS // CHARS_PER_TOKEN_CAP * 2), tokenizer):
        if len(text) > PREVIEW_CHARS:
            text = text[:PREVIEW_CHARS] + " … [cut here: the rest is not shown]"
        pieces.append((text, trained))
    return pieces


def stats_cap(max_length: int) -> int:
    """Longest length the statistics measure exactly (longer examples are cut there first)."""
    return max(4 * max_length, 8192)


def length_stats(examples, tokenizer, max_length) -> dict:
    """Token lengths before truncation: count, min, mean, median, p95, max, truncated."""
    cap = stats_cap(max_length)       # lengths beyond it count as cap (still "truncated")
    lengths = sorted(len(_encode_segments(text_segments(capped(ex, cap), tokenizer), tokenizer,
                                          not ex.messages and bool(getattr(tokenizer, "add_bos_token", False)))[0])
                     for ex in examples)
    if not lengths:
        return {"count": 0, "min": 0, "mean": 0.0, "median": 0.0, "p95": 0, "max": 0, "truncated": 0}
    p95 = lengths[min(len(lengths) - 1, max(0, -(-95 * len(lengths) // 100) - 1))]
    return {"count": len(lengths), "min": lengths[0], "mean": statistics.fmean(lengths),
            "median": statistics.median(lengths), "p95": p95, "max": lengths[-1],
            "truncated": sum(n > max_length for n in lengths)}


# ---------------------------------------------------------------------------------------------
# Splits and batches


def split_examples(examples, eval_fraction, seed) -> tuple[list, list]:
    """Shuffle with `seed` and hold out `eval_fraction` (at least one example when > 0)."""
    if not 0 <= eval_fraction < 1:
        raise UserError(f"eval_fraction must be at least 0 and below 1, got {eval_fraction}.",
                        field="eval_fraction", fix="use e.g. 0.1 to hold out 10% for evaluation.")
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    n_eval = round(len(examples) * eval_fraction)
    if eval_fraction > 0 and len(examples) >= 2:
        n_eval = min(max(n_eval, 1), len(examples) - 1)
    held = sorted(order[:n_eval])
    kept = sorted(order[n_eval:])
    return [examples[i] for i in kept], [examples[i] for i in held]


GROUP_SPAN = 50          # batches per length-sorted group (as transformers' LengthGroupedSampler)


def iter_batches(tokenized, batch_size, seed, epoch, start=0,
                 group_by_length: bool = False) -> Iterator[list[dict]]:
    """Lists of tokenized examples, shuffled per (seed, epoch); `start` skips batches (resume).
    `group_by_length`: each span of GROUP_SPAN batches of the shuffled order is sorted by length
    and cut into batches of similar lengths (less padding in padded batches); the batches are
    shuffled, the longest first (a memory shortfall shows at step 1), a short last one last."""
    order = list(range(len(tokenized)))
    rng = random.Random(seed * 1_000_003 + epoch)
    rng.shuffle(order)
    if group_by_length:
        batches = length_grouped(order, [len(t["input_ids"]) for t in tokenized], batch_size, rng)
    else:
        batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    for batch in batches[start:]:
        yield [tokenized[i] for i in batch]


def length_grouped(order: list[int], lengths: list[int], batch_size: int,
                   rng: random.Random) -> list[list[int]]:
    """`order` cut into batches of similar lengths (see iter_batches)."""
    span = batch_size * GROUP_SPAN
    full, short = [], []
    for first in range(0, len(order), span):
        group = sorted(order[first:first + span], key=lambda i: -lengths[i])
        for b in range(0, len(group), batch_size):
            (full if len(group[b:b + batch_size]) == batch_size else short).append(
                group[b:b + batch_size])
    if not full:
        return short
    longest = max(range(len(full)), key=lambda b: max(lengths[i] for i in full[b]))
    first_batch = full.pop(longest)
    rng.shuffle(full)
    return [first_batch] + full + short


def collate(batch: list[dict], pad_id) -> dict:
    """Right-padded tensors: input_ids, attention_mask, labels (-100 on padding)."""
    import torch

    pad = 0 if pad_id is None else pad_id
    width = max(len(item["input_ids"]) for item in batch)
    input_ids, mask, labels = [], [], []
    for item in batch:
        n = len(item["input_ids"])
        input_ids.append(list(item["input_ids"]) + [pad] * (width - n))
        mask.append([1] * n + [0] * (width - n))
        labels.append(list(item.get("labels", item["input_ids"])) + [IGNORE] * (width - n))
    return {"input_ids": torch.tensor(input_ids, dtype=torch.long),
            "attention_mask": torch.tensor(mask, dtype=torch.long),
            "labels": torch.tensor(labels, dtype=torch.long)}
