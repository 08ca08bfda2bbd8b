"""Setting specs and the one value checker shared by plugins, recipes and forms.

Layer: bottom. Imports only studio.errors (no Qt, no torch). A plugin manifest's `parameters`,
the recipe's training settings and the GUI forms all describe a setting with a *spec*:

    {"type": "integer", "default": 16, "minimum": 1, "maximum": 512, "step": 1,
     "title": "Rank", "help": "one line for the tooltip", "advanced": false,
     "enum": [...], "fix": "what to tell the user when a value is refused"}

`type` is one of integer | number | boolean | string; `default` is required and must pass the
spec's own checks; every other key is optional; keys starting with "x-" are free extensions.

    check_spec(name, spec)                   SpecError if the spec itself is malformed
    coerce_value(spec, raw, field=name)      the typed value, or UserError(field=name, fix=...)
    allowed_text(spec)                       "a whole number from 1 to 512", "one of "a", "b"", ...
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, Callable

from studio.errors import UserError

TYPES = ("integer", "number", "boolean", "string")
SPEC_KEYS = frozenset({"type", "default", "minimum", "maximum", "enum", "title", "help",
                       "description", "advanced", "step", "fix"})
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_KIND_WORDS = {"integer": "a whole number", "number": "a number", "boolean": "true or false",
               "string": "text"}


class SpecError(ValueError):
    """A spec breaks the format above (a programming or manifest error, not a user value)."""


def is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return (is_integer(value) or isinstance(value, float)) and math.isfinite(value)


_TYPE_CHECKS: dict[str, Callable[[Any], bool]] = {
    "integer": is_integer, "number": is_number,
    "boolean": lambda v: isinstance(v, bool), "string": lambda v: isinstance(v, str)}


def check_spec(name: str, spec: Any) -> None:
    """Raise SpecError if one setting's spec is malformed (unknown key, bad default, range, enum)."""
    where = f"parameter '{name}'"
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise SpecError(f"{where}: name must be a Python identifier")
    if not isinstance(spec, dict):
        raise SpecError(f"{where}: spec must be an object, got {type(spec).__name__}")
    unknown = sorted(k for k in spec if k not in SPEC_KEYS and not k.startswith("x-"))
    if unknown:
        raise SpecError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(SPEC_KEYS)} "
                        "(or 'x-' prefixed extensions)")
    ptype = spec.get("type")
    if ptype not in TYPES:
        raise SpecError(f"{where}: type must be one of {list(TYPES)}, got {ptype!r}")
    if "default" not in spec:
        raise SpecError(f"{where}: has no default")
    default, ok = spec["default"], _TYPE_CHECKS[ptype]
    if not ok(default):
        raise SpecError(f"{where}: default {default!r} is not of type {ptype}")
    for bound in ("minimum", "maximum", "step"):
        if bound in spec:
            if ptype not in ("integer", "number"):
                raise SpecError(f"{where}: '{bound}' only applies to integer/number")
            if not ok(spec[bound]):
                raise SpecError(f"{where}: {bound} {spec[bound]!r} is not of type {ptype}")
    lo, hi = spec.get("minimum"), spec.get("maximum")
    if lo is not None and hi is not None and lo > hi:
        raise SpecError(f"{where}: minimum {lo} is greater than maximum {hi}")
    if (lo is not None and default < lo) or (hi is not None and default > hi):
        raise SpecError(f"{where}: default {default} is outside [{lo}, {hi}]")
    if "enum" in spec:
        enum = spec["enum"]
        if not isinstance(enum, list) or not enum or not all(ok(e) for e in enum):
            raise SpecError(f"{where}: enum must be a non-empty list of {ptype} values")
        if default not in enum:
            raise SpecError(f"{where}: default {default!r} is not in enum {enum}")
    if "advanced" in spec and not isinstance(spec["advanced"], bool):
        raise SpecError(f"{where}: 'advanced' must be true or false")
    for key in ("title", "help", "description", "fix"):
        if key in spec and not isinstance(spec[key], str):
            raise SpecError(f"{where}: '{key}' must be a string")


def allowed_text(spec: dict) -> str:
    """What the spec allows, in words: 'a whole number from 1 to 512', 'one of "a", "b"'."""
    if "enum" in spec:
        return "one of " + ", ".join(json.dumps(e) for e in spec["enum"])
    kind = _KIND_WORDS[spec["type"]]
    lo, hi = spec.get("minimum"), spec.get("maximum")
    if lo is not None and hi is not None:
        return f"{kind} from {lo} to {hi}"
    if lo is not None:
        return f"{kind} >= {lo}"
    if hi is not None:
        return f"{kind} <= {hi}"
    return kind


def _convert(value: Any, ptype: str) -> Any:
    """A form/TOML/CLI value as the declared type; ValueError if impossible."""
    if ptype == "boolean":
        if isinstance(value, bool):
            return value
        if is_integer(value) and value in (0, 1):
            return bool(value)
        if isinstance(value, str):
            word = value.strip().lower()
            if word in ("true", "yes", "on", "1"):
                return True
            if word in ("false", "no", "off", "0"):
                return False
        raise ValueError
    if ptype == "string":
        if isinstance(value, str):
            return value
        if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            return ",".join(value)       # TOML lists such as target_modules = ["q_proj", "v_proj"]
        raise ValueError
    if isinstance(value, bool):
        raise ValueError
    if isinstance(value, str):
        value = value.strip()
        number = float(value) if ptype == "number" else None
        if ptype == "integer":
            try:
                number = int(value)
            except ValueError:
                number = float(value)
    else:
        number = value
    if not isinstance(number, (int, float)) or not math.isfinite(number):
        raise ValueError
    if ptype == "integer":
        if isinstance(number, float):
            if not number.is_integer():
                raise ValueError
            number = int(number)
        return number
    return float(number)


def coerce_value(spec: dict, raw: Any, *, field: str | None = None, context: str = "") -> Any:
    """`raw` (from a form, a TOML/JSON file or the command line) as the spec's type, checked against
    its range and choices. UserError(field=field) saying what is wrong, with the spec's `fix` (or
    the allowed values) as the fix. `context` prefixes the message, e.g. "method 'lora'"."""
    allowed = allowed_text(spec)
    # the allowed values go in the fix; a spec with its own fix names them in the message instead
    fix, must = (spec["fix"], f" (must be {allowed})") if spec.get("fix") else (f"use {allowed}.", "")
    lead = f"{context}: " if context else ""
    try:
        value = _convert(raw, spec["type"])
    except (ValueError, TypeError, OverflowError):
        raise UserError(f"{lead}{raw!r} is not a valid {spec['type']}{must}.", field=field,
                        fix=fix) from None
    if "enum" in spec and value not in spec["enum"]:
        raise UserError(f"{lead}{value!r} is not one of the choices{must}.", field=field, fix=fix)
    lo, hi = spec.get("minimum"), spec.get("maximum")
    if spec["type"] in ("integer", "number") and (
            (lo is not None and value < lo) or (hi is not None and value > hi)):
        raise UserError(f"{lead}{value} is out of range{must}.", field=field, fix=fix)
    return value


def defaults(specs: dict[str, dict]) -> dict:
    """{name: default} for a dict of specs."""
    return {name: spec["default"] for name, spec in specs.items()}
