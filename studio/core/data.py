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

import csv
import json
import random
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from studio.errors import UserError

FORMATS = ("alpaca", "chat", "sharegpt", "text")
ACCEPTED = (
    "alpaca ({'instruction', 'output'} plus optional 'input', 'system'); "
    "chat ({'messages': [{'role', 'content'}, ...]}); "
    "sharegpt ({'conversations': [{'from', 'value'}, ...]}); "
    "text ({'text'})"
)
ROLES = ("system", "user", "assistant")
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "model": "assistant", "chatgpt": "assistant", "bing": "assistant",
                  "bard": "assistant", "system": "system"}
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


@dataclass
class Example:
    messages: list[dict] | None   # [{"role": "system"|"user"|"assistant", "content": str}, ...]
    text: str | None = None       # plain-text format (train on every token)


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
    return examples_from_rows(rows, path, fmt)


def read_rows(path: Path) -> list[tuple[int, object]]:
    """(line number, record) pairs from a file, before any format checks."""
    suffix = path.suffix.lower()
    try:
        raw = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        line = path.read_bytes()[: err.start].count(b"\n") + 1
        raise UserError("is not UTF-8 text.", path=path, line=line,
                        fix="save the file with UTF-8 encoding.") from None
    if not raw.strip():
        raise UserError("the file is empty.", path=path, fix="add at least one example record.")
    if suffix == ".jsonl":
        rows = _jsonl_rows(raw, path)
    elif suffix == ".json":
        rows = _json_rows(raw, path)
    elif suffix == ".csv":
        rows = _csv_rows(raw, path)
    else:
        raise UserError(f"unsupported file type '{suffix or '(none)'}'.", path=path,
                        fix="use .jsonl (one JSON object per line), .json or .csv.")
    if not rows:
        raise UserError("the file has no records.", path=path, fix="add at least one example record.")
    return rows


def _jsonl_rows(raw: str, path: Path) -> list[tuple[int, object]]:
    rows = []
    for number, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append((number, json.loads(line)))
        except json.JSONDecodeError as err:
            raise UserError(f"not valid JSON ({err.msg} at column {err.colno}).", path=path,
                            line=number,
                            fix="each line must be one complete JSON object, "
                                'e.g. {"instruction": "...", "output": "..."}.') from None
    return rows


def _json_rows(raw: str, path: Path) -> list[tuple[int, object]]:
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as err:
        raise UserError(f"not valid JSON ({err.msg} at column {err.colno}).", path=path,
                        line=err.lineno, fix="repair the JSON, or save one object per line as .jsonl.") from None
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        records, start = data["data"], _value_offset(raw, "data")
    elif isinstance(data, list):
        records, start = data, raw.index("[")
    else:
        raise UserError("a .json data file must hold a list of records or {\"data\": [...]}.", path=path,
                        fix="wrap the records in [ ... ], or save one object per line as .jsonl.")
    lines = _element_lines(raw, start) if start is not None else []
    if len(lines) != len(records):
        lines = [None] * len(records)
    return list(zip(lines, records))


def _value_offset(raw: str, key: str) -> int | None:
    """Character offset of the top-level value for `key` in a JSON object text."""
    decoder = json.JSONDecoder()
    pos = _skip_ws(raw, 0)
    if raw[pos] != "{":
        return None
    pos = _skip_ws(raw, pos + 1)
    while pos < len(raw) and raw[pos] != "}":
        name, pos = decoder.raw_decode(raw, pos)
        pos = _skip_ws(raw, _skip_ws(raw, pos) + 1)  # past ':'
        if name == key:
            return pos
        _, pos = decoder.raw_decode(raw, pos)
        pos = _skip_ws(raw, pos)
        if raw[pos] == ",":
            pos = _skip_ws(raw, pos + 1)
    return None


def _element_lines(raw: str, start: int) -> list[int]:
    """Line number where each element of the JSON array starting at `start` begins."""
    decoder = json.JSONDecoder()
    lines, pos = [], _skip_ws(raw, start + 1)
    while pos < len(raw) and raw[pos] != "]":
        lines.append(raw.count("\n", 0, pos) + 1)
        _, pos = decoder.raw_decode(raw, pos)
        pos = _skip_ws(raw, pos)
        if raw[pos] == ",":
            pos = _skip_ws(raw, pos + 1)
    return lines


def _skip_ws(raw: str, pos: int) -> int:
    while pos < len(raw) and raw[pos] in " \t\r\n":
        pos += 1
    return pos


def _csv_rows(raw: str, path: Path) -> list[tuple[int, object]]:
    reader = csv.reader(raw.splitlines(keepends=True))
    try:
        header = next(reader)
    except (StopIteration, csv.Error) as err:
        raise UserError(f"cannot read the CSV header ({err}).", path=path, line=1,
                        fix="the first row must name the columns, e.g. instruction,input,output.") from None
    header = [name.strip() for name in header]
    rows, last = [], reader.line_num
    try:
        for cells in reader:
            start, last = last + 1, reader.line_num
            if not any(cell.strip() for cell in cells):
                continue
            if len(cells) != len(header):
                raise UserError(f"has {len(cells)} cells but the header has {len(header)} columns.",
                                path=path, line=start,
                                fix="quote cells that contain commas or line breaks with \"...\".")
            record = dict(zip(header, cells))
            for key in ("messages", "conversations"):   # a JSON list inside a cell
                if key in record and record[key].strip().startswith("["):
                    try:
                        record[key] = json.loads(record[key])
                    except json.JSONDecodeError as err:
                        raise UserError(f"column '{key}' is not valid JSON ({err.msg}).", path=path,
                                        line=start, fix="write the turns as a JSON list.") from None
            rows.append((start, record))
    except csv.Error as err:
        raise UserError(f"broken CSV ({err}).", path=path, line=reader.line_num,
                        fix="check the quotes on this line.") from None
    return rows


# ---------------------------------------------------------------------------------------------
# Records -> examples


def detect_format(record: object) -> str | None:
    """The format a single record looks like, or None."""
    if not isinstance(record, dict):
        return None
    if "messages" in record:
        return "chat"
    turns = record.get("conversations")
    if isinstance(turns, list):
        first = next((t for t in turns if isinstance(t, dict)), None)
        if first is not None and ("from" in first or "value" in first):
            return "sharegpt"
        return "chat"
    if "instruction" in record or "output" in record:
        return "alpaca"
    if "text" in record:
        return "text"
    return None


def examples_from_rows(rows, path, fmt: str = "auto") -> list[Example]:
    """Turn (line, record) pairs (or plain records) into examples of one format."""
    rows = [row if isinstance(row, tuple) else (None, row) for row in rows]
    if not rows:
        raise UserError("the file has no records.", path=path, fix="add at least one example record.")
    if fmt == "auto":
        fmt = None
        for line, record in rows[:5]:
            fmt = detect_format(record)
            if fmt:
                break
            if not isinstance(record, dict):
                raise UserError(f"each record must be a JSON object, got {_kind(record)}.", path=path,
                                line=line, fix='write records like {"instruction": "...", "output": "..."}.')
        if fmt is None:
            keys = sorted(rows[0][1]) if isinstance(rows[0][1], dict) else []
            raise UserError(f"cannot tell the data format from the fields {keys}.", path=path,
                            line=rows[0][0], fix=f"use one of the accepted formats: {ACCEPTED}.")
    convert = {"alpaca": _from_alpaca, "chat": _from_chat, "sharegpt": _from_sharegpt,
               "text": _from_text}[fmt]
    examples = []
    for line, record in rows:
        if not isinstance(record, dict):
            raise UserError(f"each record must be a JSON object, got {_kind(record)}.", path=path,
                            line=line, fix=f"write every record in the {fmt} format: {ACCEPTED}.")
        examples.append(convert(record, _Where(path, line, fmt)))
    return examples


@dataclass
class _Where:
    path: object
    line: int | None
    fmt: str

    def error(self, message, field=None, fix=None):
        return UserError(message, path=self.path, line=self.line, field=field, fix=fix)


def _kind(value) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "true/false",
            type(None): "null", int: "a number", float: "a number"}.get(type(value), type(value).__name__)


def _text_field(record, key, where, required=True) -> str | None:
    if key not in record or (not required and record[key] is None):
        if required:
            raise where.error(f"{where.fmt} record has no '{key}' field (it has {sorted(record)}).",
                              field=key, fix=f"add '{key}', or check the format: {ACCEPTED}.")
        return None
    value = record[key]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise where.error(f"'{key}' must be text, got {_kind(value)}.", field=key,
                          fix=f"write '{key}' as a string.")
    return value


def _from_alpaca(record, where) -> Example:
    instruction = _text_field(record, "instruction", where)
    extra = _text_field(record, "input", where, required=False) or ""
    output = _text_field(record, "output", where)
    system = _text_field(record, "system", where, required=False)
    if not instruction.strip() and not extra.strip():
        raise where.error("'instruction' is empty.", field="instruction", fix="write the instruction.")
    user = f"{instruction}\n\n{extra}" if instruction.strip() and extra.strip() else (instruction + extra)
    messages = [{"role": "system", "content": system}] if system and system.strip() else []
    messages += [{"role": "user", "content": user}, {"role": "assistant", "content": output}]
    return Example(messages=messages)


def _turns(record, where, keys) -> tuple[str, list]:
    for key in keys:
        if key in record:
            turns = record[key]
            if not isinstance(turns, list):
                raise where.error(f"'{key}' must be a list of turns, got {_kind(turns)}.", field=key,
                                  fix=f"write '{key}' as [{{...}}, {{...}}].")
            if not turns:
                raise where.error(f"'{key}' is an empty list.", field=key, fix="add the conversation turns.")
            return key, turns
    raise where.error(f"{where.fmt} record has no '{keys[0]}' field (it has {sorted(record)}).",
                      field=keys[0], fix=f"add '{keys[0]}', or check the format: {ACCEPTED}.")


def _checked_messages(messages, where, key) -> list[dict]:
    if not any(m["role"] == "assistant" for m in messages):
        raise where.error("the conversation has no assistant turn, so there is nothing to learn.",
                          field=key, fix="add the reply the model should give as an assistant turn.")
    return messages


def _from_chat(record, where) -> Example:
    key, turns = _turns(record, where, ("messages", "conversations"))
    messages = []
    for i, turn in enumerate(turns):
        field = f"{key}[{i}]"
        if not isinstance(turn, dict):
            raise where.error(f"each turn must be an object, got {_kind(turn)}.", field=field,
                              fix='write turns like {"role": "user", "content": "..."}.')
        for name in ("role", "content"):
            if name not in turn:
                hint = " (this looks like sharegpt: use format 'sharegpt')" if "from" in turn else ""
                raise where.error(f"turn has no '{name}'{hint}.", field=field,
                                  fix='write turns like {"role": "user", "content": "..."}.')
        role = str(turn["role"]).strip().lower()
        role = {"human": "user", "gpt": "assistant", "model": "assistant"}.get(role, role)
        if role not in ROLES:
            raise where.error(f"unknown role '{turn['role']}'.", field=f"{field}.role",
                              fix=f"use one of: {', '.join(ROLES)}.")
        if not isinstance(turn["content"], str):
            raise where.error(f"'content' must be text, got {_kind(turn['content'])}.",
                              field=f"{field}.content", fix="write the content as a string.")
        messages.append({"role": role, "content": turn["content"]})
    return Example(messages=_checked_messages(messages, where, key))


def _from_sharegpt(record, where) -> Example:
    key, turns = _turns(record, where, ("conversations",))
    messages = []
    for i, turn in enumerate(turns):
        field = f"{key}[{i}]"
        if not isinstance(turn, dict) or "from" not in turn or "value" not in turn:
            raise where.error("each turn must be an object with 'from' and 'value'.", field=field,
                              fix='write turns like {"from": "human", "value": "..."}.')
        role = SHAREGPT_ROLES.get(str(turn["from"]).strip().lower())
        if role is None:
            raise where.error(f"unknown speaker '{turn['from']}'.", field=f"{field}.from",
                              fix="use human/user, gpt/assistant/model or system.")
        if not isinstance(turn["value"], str):
            raise where.error(f"'value' must be text, got {_kind(turn['value'])}.",
                              field=f"{field}.value", fix="write the value as a string.")
        messages.append({"role": role, "content": turn["value"]})
    return Example(messages=_checked_messages(messages, where, key))


def _from_text(record, where) -> Example:
    text = _text_field(record, "text", where)
    if not text.strip():
        raise where.error("'text' is empty.", field="text", fix="write the text, or remove the record.")
    return Example(messages=None, text=text)


# ---------------------------------------------------------------------------------------------
# Templates and label masks


def chat_template_of(tokenizer) -> str:
    """The tokenizer's chat template, or the plain User:/Assistant: fallback."""
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):   # several named templates: take the default one
        template = template.get("default") or next(iter(template.values()), None)
    return template or FALLBACK_TEMPLATE


def render(messages, tokenizer, add_generation_prompt=False) -> str:
    """The conversation as text, through the chat template (no tokenization)."""
    try:
        return tokenizer.apply_chat_template(list(messages), chat_template=chat_template_of(tokenizer),
                                             tokenize=False, add_generation_prompt=add_generation_prompt)
    except Exception as err:  # the template rejects this conversation (e.g. roles must alternate)
        raise UserError(f"the model's chat template rejected a conversation: {err}",
                        fix="reorder the turns (usually system, then user/assistant alternating).") from None


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


def _search_pieces(messages, tokenizer):
    """Fallback for templates that are not prefix-stable: find each assistant content in order."""
    full = render(messages, tokenizer)
    specials = sorted({t for t in tokenizer.all_special_tokens if t} |
                      set(getattr(tokenizer, "get_added_vocab", dict)()), key=len, reverse=True)
    pieces, pos = [], 0
    for message in messages:
        content = message["content"].strip()
        if message["role"] != "assistant" or not content:
            continue
        found = full.find(content, pos)
        if found < 0:
            continue
        end = found + len(content)
        rest = full[end:]
        marker = next((t for t in specials if rest.lstrip(" ").startswith(t)), None)
        if marker:
            end += rest.index(marker) + len(marker)
        pieces += [(full[pos:found], False), (full[found:end], True)]
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


def tokenize_example(ex: Example, tokenizer, max_length: int) -> dict:
    """{"input_ids", "labels"}: labels are -100 except assistant turns (or everything for text)."""
    pieces = text_segments(ex, tokenizer)
    # Templates carry their own BOS in the text; plain text gets the tokenizer's BOS if it uses one.
    add_bos = not ex.messages and bool(getattr(tokenizer, "add_bos_token", False))
    input_ids, labels = _encode_segments(pieces, tokenizer, add_bos)
    return {"input_ids": input_ids[:max_length], "labels": labels[:max_length]}


def render_preview(ex: Example, tokenizer) -> list[tuple[str, bool]]:
    """(text piece, is_trained) for the GUI to colour."""
    return text_segments(ex, tokenizer)


def length_stats(examples, tokenizer, max_length) -> dict:
    """Token lengths before truncation: count, min, mean, median, p95, max, truncated."""
    lengths = sorted(len(_encode_segments(text_segments(ex, tokenizer), tokenizer,
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


def iter_batches(tokenized, batch_size, seed, epoch, start=0) -> Iterator[list[dict]]:
    """Lists of tokenized examples, shuffled per (seed, epoch); `start` skips batches (resume)."""
    order = list(range(len(tokenized)))
    random.Random(seed * 1_000_003 + epoch).shuffle(order)
    for first in range(start * batch_size, len(order), batch_size):
        yield [tokenized[i] for i in order[first:first + batch_size]]


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
