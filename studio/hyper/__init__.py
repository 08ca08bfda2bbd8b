"""hyper: hypernetworks that make a LoRA without training it (Text-to-LoRA from a sentence, DnD from
example prompts), their training, and the task-LoRA libraries they learn from. api.py is what the
GUI and the CLI call; docs/HYPERNETWORKS.md is the contract.

Layer: rank 3 (a feature room). Imports core and plugins (and the base modules) only; never the
worker, ui, cli, or another feature room. No Qt. See docs/ARCHITECTURE.md.
"""
