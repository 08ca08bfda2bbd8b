"""Parameter fragments: specs that many manifests share, written once.

A manifest's `parameters` may hold `"$include": [...]`; check_manifest() replaces it, at its
position, by the named fragments' specs:

    "lora"                    r, lora_alpha, lora_dropout, target_modules
    "lora_options"            bias, use_rslora (advanced)
    "target_modules"          target_modules alone
    "<fragment>.<parameter>"  one parameter of a fragment, e.g. "lora.lora_alpha"

A manifest entry with the same name as an included parameter overrides single keys of it
(`"lora_alpha": {"default": 16}` keeps type, range, title and help). See docs/PLUGINS.md.
"""

from __future__ import annotations

TARGET_MODULES = {
    "type": "string", "default": "all-linear", "title": "Target modules",
    "help": "'all-linear', a comma list of layer names such as 'q_proj,v_proj', or 're:<regex>'."}

FRAGMENTS: dict[str, dict[str, dict]] = {
    "lora": {
        "r": {"type": "integer", "default": 16, "minimum": 1, "maximum": 512, "title": "Rank",
              "help": "Inner size of the adapter matrices; 8-64 covers most tasks, higher = more "
                      "capacity and memory."},
        "lora_alpha": {"type": "number", "default": 32, "minimum": 0.01, "maximum": 4096,
                       "title": "Alpha",
                       "help": "Scale of the update (alpha / r); 2x the rank is a common start."},
        "lora_dropout": {"type": "number", "default": 0.05, "minimum": 0.0, "maximum": 0.9,
                         "step": 0.01, "title": "Dropout",
                         "help": "Dropout on the adapter's input during training; 0-0.1 is typical."},
        "target_modules": TARGET_MODULES,
    },
    "lora_options": {
        "bias": {"type": "string", "default": "none", "enum": ["none", "all", "lora_only"],
                 "title": "Train biases", "advanced": True,
                 "help": "Also train bias vectors: none, all biases, or only those of adapted layers."},
        "use_rslora": {"type": "boolean", "default": False, "title": "rsLoRA scaling",
                       "advanced": True,
                       "help": "Scale by alpha/sqrt(r) instead of alpha/r; keeps high ranks stable."},
    },
    "target_modules": {"target_modules": TARGET_MODULES},
}
