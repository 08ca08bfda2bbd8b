"""Adapter-method plugins: the contract, manifests, discovery and the helpers plugin code shares.

Layer: below studio.core. This package imports only studio.paths, studio.errors and studio.schema
(never studio.core, studio.worker, studio.hyper, studio.ui or studio.cli); torch and peft are
imported lazily inside functions. studio.core imports it, not the other way round.

    contract.py       Plugin (manifest + plugin.py functions), HOOKS
    manifest.py       manifest checks, "$include" expansion, ManifestError
    fragments.py      parameter specs many manifests share (the LoRA family's r, alpha, ...)
    discovery.py      discover(), get_plugin(), load_plugin_folder()
    helpers.py        parse_target_modules, apply_peft_config, peft_config, lora_config,
                      count_parameters, fused_equivalents (Phi-3's qkv_proj for q/k/v_proj)
    tensor_subset.py  save/load/merge for methods that train a subset of the base tensors (BitFit, LISA)
    residual_init.py  saving PiSSA/OLoRA (which change the base weights) as a LoRA for the original base
    lora_dash.py      the LoRA-Dash algorithm, saving, loading and merging

The method folders themselves live in the repository's plugins/<id>/. See docs/PLUGINS.md.
"""

from studio.plugins.contract import HOOKS, Plugin
from studio.plugins.discovery import ENTRY_POINT_GROUP, discover, get_plugin, load_plugin_folder
from studio.plugins.helpers import (apply_peft_config, count_parameters, fused_equivalents,
                                    linear_module_names, lora_config, parse_target_modules,
                                    peft_config)
from studio.plugins.manifest import (DEFAULT_CAPABILITIES, PARAM_TYPES, QUANTIZATIONS,
                                     REQUIRED_KEYS, SPEC_KEYS, ManifestError, check_manifest,
                                     check_parameter_spec)

__all__ = [
    "DEFAULT_CAPABILITIES", "ENTRY_POINT_GROUP", "HOOKS", "PARAM_TYPES", "QUANTIZATIONS",
    "REQUIRED_KEYS", "SPEC_KEYS", "ManifestError", "Plugin", "apply_peft_config", "check_manifest",
    "check_parameter_spec", "count_parameters", "discover", "fused_equivalents", "get_plugin",
    "linear_module_names", "load_plugin_folder", "lora_config", "parse_target_modules", "peft_config",
]
