"""Export (a feature room: imports core, plugins and errors only; no Qt).

    from studio.export import resolve_source, estimate, export
    src = resolve_source("RUN_OR_ADAPTER")
    result = export(src, "out/dir", "merged", dtype="bf16", progress=cb, cancel=flag)

Formats: adapter (plain PEFT folder + model card), merged (transformers folder), gguf
(llama.cpp), ollama (GGUF + Modelfile). Every export gets parity.json / parity.md with a verdict.
"""

from studio.export.api import DTYPES, FORMATS, estimate, export, phases_for  # noqa: F401
from studio.export.source import Source, resolve_source  # noqa: F401
from studio.export.staging import Cancelled  # noqa: F401
