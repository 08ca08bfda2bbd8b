"""PEFT Studio: fine-tune a local LLM with any adapter method, from a window or a recipe file."""

__version__ = "0.1.0"
