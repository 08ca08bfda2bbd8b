"""PEFT Studio: fine-tune a local LLM with any adapter method, from a window or a recipe file.

The loose modules here (paths, errors, schema, fileio) are the base layer: every other package
imports them and they import nothing else from studio. The layers above, lowest first: plugins,
core, the feature rooms (hyper, ...), worker, ui, cli. docs/ARCHITECTURE.md has the rules.
"""

__version__ = "0.1.0"
