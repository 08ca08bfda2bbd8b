"""The plugin manifest: its checks and the expansion of shared parameter fragments.

Parameter specs are checked with studio.schema (the one value checker of plugins, recipes and
forms); `"$include"` entries are expanded from studio.plugins.fragments. See docs/PLUGINS.md for
the format. No Qt, no torch.
"""

from __future__ import annotations

import copy
import re
from typing import Any

from studio import schema
from studio.plugins.fragments import FRAGMENTS

PARAM_TYPES = schema.TYPES
SPEC_KEYS = schema.SPEC_KEYS
REQUIRED_KEYS = ("id", "name", "description", "parameters")
# Declared by the manifest (what the code cannot tell): missing ones are false.
DEFAULT_CAPABILITIES = {"mergeable": False, "needs_quantized_base": False}
# Derived from the hooks plugin.py defines (Plugin.capabilities); a manifest may still declare
# them (older manifests do), which is accepted and ignored: the hooks decide.
HOOK_CAPABILITIES = {"optimizer_groups": "optimizer_param_groups", "callbacks": "callbacks"}
# Accepted for old manifests, read by nothing, dropped.
OBSOLETE_CAPABILITIES = ("trains_embeddings",)
QUANTIZATIONS = (None, "4bit", "8bit")
INCLUDE_KEY = "$include"
_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_\-]*$")


class ManifestError(Exception):
    """A plugin's manifest or module breaks the contract (reported by discover, never raised out)."""


def check_parameter_spec(name: str, spec: Any) -> None:
    """Raise ManifestError if one parameter's spec is malformed."""
    try:
        schema.check_spec(name, spec)
    except schema.SpecError as exc:
        raise ManifestError(str(exc)) from None


def _fragment(ref: Any) -> dict[str, dict]:
    """The specs an "$include" entry names: "lora" (the whole fragment) or "lora.r" (one of them)."""
    known = ", ".join(sorted(FRAGMENTS))
    if not isinstance(ref, str):
        raise ManifestError(f"'{INCLUDE_KEY}' entries must be fragment names, got {ref!r}")
    group, _, single = ref.partition(".")
    if group not in FRAGMENTS:
        raise ManifestError(f"'{INCLUDE_KEY}': unknown fragment '{group}'; known: {known}")
    specs = FRAGMENTS[group]
    if single:
        if single not in specs:
            raise ManifestError(f"'{INCLUDE_KEY}': fragment '{group}' has no parameter '{single}'; "
                                f"it has: {', '.join(specs)}")
        return {single: specs[single]}
    return specs


def expand_parameters(params: dict) -> dict:
    """`parameters` with "$include" replaced, at its position, by the fragments' specs; an entry
    named like an included parameter overrides single keys of its spec. Unchanged without one."""
    refs = params.get(INCLUDE_KEY)
    if refs is None:
        return dict(params)
    if not isinstance(refs, list):
        raise ManifestError(f"'{INCLUDE_KEY}' must be a list of fragment names, got {refs!r}")
    included: dict[str, dict] = {}
    for ref in refs:
        for name, spec in _fragment(ref).items():
            if name in included:
                raise ManifestError(f"'{INCLUDE_KEY}': parameter '{name}' is included twice")
            included[name] = copy.deepcopy(spec)
    out: dict[str, Any] = {}
    for name, spec in params.items():
        if name == INCLUDE_KEY:
            for inc_name, inc_spec in included.items():
                override = params.get(inc_name, {})
                if not isinstance(override, dict):
                    raise ManifestError(f"parameter '{inc_name}': an override of an included "
                                        f"parameter must be an object, got {type(override).__name__}")
                out[inc_name] = {**inc_spec, **override}
        elif name not in included:
            out[name] = spec
    return out


def check_manifest(manifest: Any) -> dict:
    """Check a manifest dict; return a normalised copy (fragments expanded, capabilities filled
    in, hook-derived and obsolete capability keys removed). ManifestError if bad."""
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
    for key in (*DEFAULT_CAPABILITIES, *HOOK_CAPABILITIES, *OBSOLETE_CAPABILITIES):
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
    params = expand_parameters(params)
    for name, spec in params.items():
        check_parameter_spec(name, spec)
    out = dict(manifest)
    out["parameters"] = params
    out["capabilities"] = {**DEFAULT_CAPABILITIES,
                           **{k: v for k, v in caps.items()
                              if k not in HOOK_CAPABILITIES and k not in OBSOLETE_CAPABILITIES}}
    if quant and not out["capabilities"]["needs_quantized_base"]:
        out["capabilities"]["needs_quantized_base"] = True
    out.setdefault("family", "other")
    out.setdefault("paper", "")
    return out
