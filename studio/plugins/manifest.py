"""The plugin manifest: its checks, and turning form/TOML/CLI values into the declared types.

Used by studio.plugins (which re-exports the public names); see docs/PLUGINS.md for the format.
No Qt, no torch.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, Callable

PARAM_TYPES = ("integer", "number", "boolean", "string")
REQUIRED_KEYS = ("id", "name", "description", "parameters")
DEFAULT_CAPABILITIES = {"mergeable": False, "needs_quantized_base": False,
                        "optimizer_groups": False, "callbacks": False}
SPEC_KEYS = {"type", "default", "minimum", "maximum", "enum", "title", "help", "description",
             "advanced", "step"}
QUANTIZATIONS = (None, "4bit", "8bit")
_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_\-]*$")
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class ManifestError(Exception):
    """A plugin's manifest or module breaks the contract (reported by discover, never raised out)."""


# ---------------------------------------------------------------------------------------------
# Manifest checks
# ---------------------------------------------------------------------------------------------

def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return (_is_int(v) or isinstance(v, float)) and math.isfinite(v)


_TYPE_CHECKS: dict[str, Callable[[Any], bool]] = {
    "integer": _is_int, "number": _is_num,
    "boolean": lambda v: isinstance(v, bool), "string": lambda v: isinstance(v, str)}


def check_parameter_spec(name: str, spec: Any) -> None:
    """Raise ManifestError if one parameter's spec is malformed."""
    where = f"parameter '{name}'"
    if not _NAME_RE.match(name):
        raise ManifestError(f"{where}: name must be a Python identifier")
    if not isinstance(spec, dict):
        raise ManifestError(f"{where}: spec must be an object, got {type(spec).__name__}")
    unknown = sorted(k for k in spec if k not in SPEC_KEYS and not k.startswith("x-"))
    if unknown:
        raise ManifestError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(SPEC_KEYS)} "
                            "(or 'x-' prefixed extensions)")
    ptype = spec.get("type")
    if ptype not in PARAM_TYPES:
        raise ManifestError(f"{where}: type must be one of {list(PARAM_TYPES)}, got {ptype!r}")
    if "default" not in spec:
        raise ManifestError(f"{where}: has no default")
    default, ok = spec["default"], _TYPE_CHECKS[ptype]
    if not ok(default):
        raise ManifestError(f"{where}: default {default!r} is not of type {ptype}")
    for bound in ("minimum", "maximum", "step"):
        if bound in spec:
            if ptype not in ("integer", "number"):
                raise ManifestError(f"{where}: '{bound}' only applies to integer/number")
            if not _TYPE_CHECKS[ptype](spec[bound]):
                raise ManifestError(f"{where}: {bound} {spec[bound]!r} is not of type {ptype}")
    lo, hi = spec.get("minimum"), spec.get("maximum")
    if lo is not None and hi is not None and lo > hi:
        raise ManifestError(f"{where}: minimum {lo} is greater than maximum {hi}")
    if (lo is not None and default < lo) or (hi is not None and default > hi):
        raise ManifestError(f"{where}: default {default} is outside [{lo}, {hi}]")
    if "enum" in spec:
        enum = spec["enum"]
        if not isinstance(enum, list) or not enum or not all(ok(e) for e in enum):
            raise ManifestError(f"{where}: enum must be a non-empty list of {ptype} values")
        if default not in enum:
            raise ManifestError(f"{where}: default {default!r} is not in enum {enum}")
    if "advanced" in spec and not isinstance(spec["advanced"], bool):
        raise ManifestError(f"{where}: 'advanced' must be true or false")
    for key in ("title", "help", "description"):
        if key in spec and not isinstance(spec[key], str):
            raise ManifestError(f"{where}: '{key}' must be a string")


def check_manifest(manifest: Any) -> dict:
    """Check a manifest dict; return a normalised copy (capabilities filled in). ManifestError if bad."""
    if not isinstance(manifest, dict):
        raise ManifestError(f"manifest must be a JSON object, got {type(manifest).__name__}")
    missing = [k for k in REQUIRED_KEYS if k not in manifest]
    if missing:
        raise ManifestError(f"manifest is missing required key(s): {', '.join(missing)}")
    pid = manifest["id"]
    if not isinstance(pid, str) or not _ID_RE.match(pid):
        raise ManifestError(f"id {pid!r} must be lower-case letters, digits, '_' or '-'")
    for key in ("name", "description", "family", "paper"):
        if key in manifest and not isinstance(manifest[key], str):
            raise ManifestError(f"'{key}' must be a string")
    caps = manifest.get("capabilities", {})
    if not isinstance(caps, dict):
        raise ManifestError("'capabilities' must be an object")
    for key in DEFAULT_CAPABILITIES:
        if key in caps and not isinstance(caps[key], bool):
            raise ManifestError(f"capability '{key}' must be true or false")
    if "learning_rate" in manifest:     # the method's suggested learning rate (paper / peft docs)
        lr = manifest["learning_rate"]
        if not _is_num(lr) or not 0 < lr <= 1:
            raise ManifestError(f"learning_rate must be a number in (0, 1], got {lr!r}")
    quant = manifest.get("requires_quantization")
    if quant not in QUANTIZATIONS:
        raise ManifestError(f"requires_quantization must be \"4bit\", \"8bit\" or absent, got {quant!r}")
    params = manifest["parameters"]
    if not isinstance(params, dict):
        raise ManifestError("'parameters' must be an object of name -> spec")
    for name, spec in params.items():
        check_parameter_spec(name, spec)
    out = dict(manifest)
    out["capabilities"] = {**DEFAULT_CAPABILITIES, **caps}
    if quant and not out["capabilities"]["needs_quantized_base"]:
        out["capabilities"]["needs_quantized_base"] = True
    out.setdefault("family", "other")
    out.setdefault("paper", "")
    return out


# ---------------------------------------------------------------------------------------------
# Values
# ---------------------------------------------------------------------------------------------

def _allowed(spec: dict) -> str:
    if "enum" in spec:
        return "one of " + ", ".join(json.dumps(e) for e in spec["enum"])
    kind = {"integer": "a whole number", "number": "a number", "boolean": "true or false",
            "string": "text"}[spec["type"]]
    lo, hi = spec.get("minimum"), spec.get("maximum")
    if lo is not None and hi is not None:
        return f"{kind} from {lo} to {hi}"
    if lo is not None:
        return f"{kind} >= {lo}"
    if hi is not None:
        return f"{kind} <= {hi}"
    return kind


def _coerce(value: Any, ptype: str) -> Any:
    """Convert a value from a form/TOML/CLI to the declared type; ValueError if impossible."""
    if ptype == "boolean":
        if isinstance(value, bool):
            return value
        if _is_int(value) and value in (0, 1):
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
