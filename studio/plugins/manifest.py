"""The plugin manifest: its checks. Parameter specs are checked by studio.schema, the one value
checker of plugins, recipes and forms.

Used by studio.plugins (which re-exports the public names); see docs/PLUGINS.md for the format.
No Qt, no torch.
"""

from __future__ import annotations

import re
from typing import Any

from studio import schema

PARAM_TYPES = schema.TYPES
REQUIRED_KEYS = ("id", "name", "description", "parameters")
DEFAULT_CAPABILITIES = {"mergeable": False, "needs_quantized_base": False,
                        "optimizer_groups": False, "callbacks": False}
SPEC_KEYS = schema.SPEC_KEYS
QUANTIZATIONS = (None, "4bit", "8bit")
_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_\-]*$")


class ManifestError(Exception):
    """A plugin's manifest or module breaks the contract (reported by discover, never raised out)."""


def check_parameter_spec(name: str, spec: Any) -> None:
    """Raise ManifestError if one parameter's spec is malformed."""
    try:
        schema.check_spec(name, spec)
    except schema.SpecError as exc:
        raise ManifestError(str(exc)) from None


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
        if not schema.is_number(lr) or not 0 < lr <= 1:
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
