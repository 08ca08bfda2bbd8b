"""Reading data files into examples: .jsonl / .json / .csv in the alpaca, chat, sharegpt and
plain-text formats. Every problem is a UserError naming the file, the line and the field.
(studio.core.data re-exports what is public here; import from there.)
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path

from studio.errors import UserError
from studio.fileio import parse_json, read_error

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


@dataclass
class Example:
    messages: list[dict] | None   # [{"role": "system"|"user"|"assistant", "content": str}, ...]
    text: str | None = None       # plain-text format (train on every token)


# ---------------------------------------------------------------------------------------------
# Reading files


SUFFIXES = (".jsonl", ".json", ".csv")
SUPPORTED = ".jsonl (one JSON object per line), .json (a list of objects) or .csv (a header row)"
# what people try instead, and how to turn it into a file the studio reads
_CONVERT = {
    ".parquet": "convert it, e.g. pandas.read_parquet(FILE).to_json(OUT, orient='records', "
                "lines=True) writes a .jsonl",
    ".arrow": "save the dataset with dataset.to_json(OUT) (a .jsonl)",
    ".tsv": "save it as .csv (comma-separated, with a header row)",
    ".xlsx": "save the sheet as .csv from the spreadsheet program",
    ".xls": "save the sheet as .csv from the spreadsheet program",
    ".txt": "put each example in a JSON object, e.g. {\"text\": \"...\"} one per line in a .jsonl",
}
_COMPRESSED = (".gz", ".zip", ".bz2", ".xz", ".zst", ".7z", ".tar", ".tgz")


def check_suffix(path) -> None:
    """UserError unless the file's name ends in a supported data format (.jsonl / .json / .csv),
    saying what to do with the usual others (parquet, compressed files, tsv, txt)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in SUFFIXES:
        return
    if suffix in _COMPRESSED:
        raise UserError(f"is a compressed file ('{suffix}'); the studio reads {SUPPORTED}.",
                        path=path, fix="unpack it first (e.g. gunzip / unzip) and choose the "
                                       "file inside.")
    how = _CONVERT.get(suffix, "save the data in one of those formats")
    raise UserError(f"unsupported file type '{suffix or '(none)'}': the studio reads {SUPPORTED}.",
                    path=path, fix=f"{how}.")


def read_rows(path: Path) -> list[tuple[int, object]]:
    """(line number, record) pairs from a file, before any format checks."""
    path = Path(path)
    suffix = path.suffix.lower()
    check_suffix(path)                    # before reading: a parquet is not "not UTF-8 text"
    try:
        raw = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        line = path.read_bytes()[: err.start].count(b"\n") + 1
        raise UserError("is not UTF-8 text.", path=path, line=line,
                        fix="save the file with UTF-8 encoding.") from None
    except OSError as err:
        raise read_error(err, path, "the data file") from None
    if not raw.strip():
        raise UserError("the file is empty.", path=path, fix="add at least one example record.")
    if suffix == ".jsonl":
        rows = _jsonl_rows(raw, path)
    elif suffix == ".json":
        rows = _json_rows(raw, path)
    else:
        rows = _csv_rows(raw, path)
    if not rows:
        raise UserError("the file has no records.", path=path, fix="add at least one example record.")
    return rows


def _jsonl_rows(raw: str, path: Path) -> list[tuple[int, object]]:
    rows = []
    for number, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append((number, parse_json(line, path, number)))
        except json.JSONDecodeError as err:
            raise UserError(f"not valid JSON ({err.msg} at column {err.colno}).", path=path,
                            line=number,
                            fix="each line must be one complete JSON object, "
                                'e.g. {"instruction": "...", "output": "..."}.') from None
    return rows


def _json_rows(raw: str, path: Path) -> list[tuple[int, object]]:
    try:
        data = parse_json(raw, path)
    except json.JSONDecodeError as err:
        raise UserError(f"not valid JSON ({err.msg} at column {err.colno}).", path=path,
                        line=err.lineno, fix="repair the JSON, or save one object per line as .jsonl.") from None
    except UserError as err:
        if err.field is None:             # not a duplicate key: nothing to place more exactly
            raise
        _raise_in_record(raw, path)       # the duplicate key, with the line of its record
        raise
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


def _raise_in_record(raw: str, path: Path) -> None:
    """Parse each record of a .json file on its own, so parse_json's error names its line."""
    data = json.loads(raw)
    start = (_value_offset(raw, "data") if isinstance(data, dict) else
             raw.index("[") if isinstance(data, list) else None)
    if start is None:
        return
    decoder = json.JSONDecoder()
    pos = _skip_ws(raw, start + 1)
    while pos < len(raw) and raw[pos] != "]":
        _, end = decoder.raw_decode(raw, pos)
        parse_json(raw[pos:end], path, raw.count("\n", 0, pos) + 1)
        pos = _skip_ws(raw, end)
        if raw[pos] == ",":
            pos = _skip_ws(raw, pos + 1)


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


def detect_rows_format(rows, path) -> str:
    """The format of a file's records, from its first few; UserError when none fits."""
    rows = [row if isinstance(row, tuple) else (None, row) for row in rows]
    if not rows:
        raise UserError("the file has no records.", path=path, fix="add at least one example record.")
    for line, record in rows[:5]:
        fmt = detect_format(record)
        if fmt:
            return fmt
        if not isinstance(record, dict):
            raise UserError(f"each record must be a JSON object, got {_kind(record)}.", path=path,
                            line=line, fix=f"write one object per record in an accepted format: {ACCEPTED}.")
    keys = sorted(rows[0][1]) if isinstance(rows[0][1], dict) else []
    raise UserError(f"cannot tell the data format from the fields {keys}.", path=path,
                    line=rows[0][0], fix=f"use one of the accepted formats: {ACCEPTED}.")


def examples_from_rows(rows, path, fmt: str = "auto") -> list[Example]:
    """Turn (line, record) pairs (or plain records) into examples of one format."""
    rows = [row if isinstance(row, tuple) else (None, row) for row in rows]
    if not rows:
        raise UserError("the file has no records.", path=path, fix="add at least one example record.")
    if fmt == "auto":
        fmt = detect_rows_format(rows, path)
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
    if isinstance(value, float) and not math.isfinite(value):     # 1e999 reads as inf
        raise where.error(f"'{key}' is a number too large for JSON ({value}).", field=key,
                          fix=f"write '{key}' as a string.")
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
