"""Which model families the studio is checked on, and what works for each (issue 16).

SUPPORT is the supported-architecture table: one Row per family, one Claim per feature. Every
cell comes from tests/test_model_matrix.py, which runs the studio's own code on a tiny
real-shaped model of the family and asserts the claim (a "yes" must work, a "no" must fail the
way its `check` text says). docs/MODELS.md prints the same table (`markdown_table()`, checked by
the test), and the Model page shows the row of the model a user loads (`describe()`).

No torch, no Qt: cheap enough for the Model page.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Claim:
    value: str                # "yes" | "partly" | "no" | "untested"
    why: str = ""             # shown after the value; required for anything but a plain yes
    check: str = ""           # for "no": text of the UserError the studio raises

    @property
    def ok(self) -> bool:
        return self.value in ("yes", "partly")

    def text(self) -> str:
        return self.value + (f": {self.why}" if self.why else "")


YES = Claim("yes")

FEATURES = [
    ("marking", "Trained-token marking"),
    ("methods", "Method plugins"),
    ("merge", "Merge (parity)"),
    ("4bit", "4-bit (QLoRA)"),
    ("generation_stop", "Stops at end of turn"),
    ("merged_export", "Merged export (parity)"),
    ("gguf", "GGUF export"),
]

GGUF_UNTESTED = Claim("untested", "the llama.cpp converter (`setup --gguf`) was not installed "
                                  "where the matrix ran")


@dataclass(frozen=True)
class Row:
    key: str
    name: str
    model_types: tuple[str, ...]
    kind: str                                      # its chat template (a TEMPLATE_KINDS name)
    template: str                                  # the chat template's habits
    layout: str                                    # module names, embeddings
    cells: dict = field(default_factory=dict)      # feature -> Claim (missing: YES)
    methods: dict = field(default_factory=dict)    # method id -> Claim (missing: YES)

    def claim(self, feature: str, method: str | None = None) -> Claim:
        if feature == "methods" and method is not None:
            return self.methods.get(method, YES)
        if feature == "methods" and self.methods:
            bad = sorted(m for m, c in self.methods.items() if not c.ok)
            if bad:
                return Claim("partly", "all but " + ", ".join(bad))
        return self.cells.get(feature, YES)

    def problems(self) -> list[str]:
        """What will not work (or only partly), one sentence each, for the Model page."""
        out = []
        for feature, title in FEATURES:
            c = self.claim(feature)
            if c.value != "yes" and not (feature == "methods" and "methods" not in self.cells):
                out.append(f"{title}: {c.text()}")
        grouped: dict[str, list[str]] = {}          # methods with the same limit, on one line
        for method, c in sorted(self.methods.items()):
            if c.value != "yes":
                grouped.setdefault(c.text(), []).append(method)
        for text, methods in grouped.items():
            out.append(f"{', '.join(methods)}: {text}")
        return out


# Qwen3-MoE (transformers 5): the experts are fused 3-D tensors, not Linear layers. peft reaches
# them (and the router) through parameter targeting for plain LoRA, which has no dropout; the
# other methods adapt the Linear layers (attention) only.
MOE_REACH_EXPERTS = ("lora", "rslora", "loraplus", "lora_fa", "lora_dash", "lisa")
_ATTENTION_ONLY = Claim("partly", "attention only: the fused expert tensors are not Linear "
                                  "layers this method can wrap")
_MOE_METHODS = {m: _ATTENTION_ONLY for m in ("dora", "pissa", "olora", "eva", "loftq", "adalora",
                                              "vera", "oft", "boft", "loha", "lokr")}
_MOE_METHODS["ia3"] = Claim("partly", "keys and values only (no down_proj layer to scale)")

SUPPORT: dict[str, Row] = {r.key: r for r in [
    Row("llama3", "Llama 3.x (and other Llama-architecture models, e.g. SmolLM2)", ("llama",),
        "Llama 3 headers",
        "header tokens, <|eot_id|> ends a turn, a system block with dates is always written",
        "q/k/v/o_proj, gate/up/down_proj; untied (8B) or tied (1B/3B) embeddings"),
    Row("qwen2_5", "Qwen2.5", ("qwen2",),
        "ChatML",
        "ChatML (<|im_end|>); a default system prompt when the data has none",
        "q/k/v/o_proj with biases, gate/up/down_proj; tied embeddings (small sizes)"),
    Row("qwen3", "Qwen3", ("qwen3",),
        "ChatML with <think> (Qwen3)",
        "ChatML; the answer after the last user turn gets an empty <think></think> block "
        "(trained: it is what the model writes after the assistant header), earlier turns none",
        "q/k/v/o_proj with q/k norms, gate/up/down_proj; tied embeddings (small sizes)"),
    Row("mistral", "Mistral (v0.3 template)", ("mistral",),
        "Mistral [INST]",
        "[INST] ... [/INST], answers end with </s>; no system role: the studio folds the system "
        "message into the first user turn (the template itself drops it when the conversation "
        "ends with an answer)",
        "q/k/v/o_proj, gate/up/down_proj; untied embeddings"),
    Row("gemma2", "Gemma 2", ("gemma2",),
        "Gemma turns",
        "<start_of_turn>/<end_of_turn>, the assistant is 'model'; the template rejects a system "
        "role: the studio folds it into the first user turn",
        "q/k/v/o_proj, gate/up/down_proj; tied embeddings, soft-capped logits"),
    Row("gemma3", "Gemma 3 (text-only checkpoints)", ("gemma3_text",),
        "Gemma turns",
        "<start_of_turn>/<end_of_turn>; the template folds a system message into the first user "
        "turn",
        "q/k/v/o_proj with q/k norms, gate/up/down_proj; tied embeddings"),
    Row("phi3", "Phi-3 / Phi-3.5 mini", ("phi3",),
        "Phi-3 turns",
        "<|user|>/<|assistant|> turns ending with <|end|>; a rendering without a generation "
        "prompt ends with <|endoftext|>",
        "fused qkv_proj and gate_up_proj (no q_proj/v_proj); untied embeddings"),
    Row("qwen3_moe", "Qwen3-MoE (mixture of experts)", ("qwen3_moe",),
        "ChatML with <think> (Qwen3)",
        "ChatML; the answer after the last user turn gets an empty <think></think> block "
        "(trained), earlier turns none",
        "q/k/v/o_proj; a router and fused 3-D expert tensors per layer; untied embeddings",
        cells={"4bit": Claim("partly", "attention is 4-bit, the fused experts stay in full "
                                       "precision (bitsandbytes quantises Linear layers only)"),
               "methods": Claim("partly", "experts adapted by LoRA, rsLoRA, LoRA+, LoRA-FA, "
                                          "LoRA-Dash (with Dropout 0) and LISA; the other methods "
                                          "adapt attention only")},
        methods=_MOE_METHODS),
]}
for _row in SUPPORT.values():
    _row.cells.setdefault("gguf", GGUF_UNTESTED)

_BY_MODEL_TYPE = {t: row for row in SUPPORT.values() for t in row.model_types}


def claim(key: str, feature: str, method: str | None = None) -> Claim:
    return SUPPORT[key].claim(feature, method)


def row_for_model_type(model_type: str | None) -> Row | None:
    return _BY_MODEL_TYPE.get(model_type or "")


# ---- the chat template a folder carries ---------------------------------------------------------

TEMPLATE_KINDS = [   # (marker, kind): first match wins
    ("<|start_header_id|>", "Llama 3 headers"),
    ("<think>", "ChatML with <think> (Qwen3)"),
    ("<|im_start|>", "ChatML"),
    ("[INST]", "Mistral [INST]"),
    ("<start_of_turn>", "Gemma turns"),
    ("<|assistant|>", "Phi-3 turns"),
]


def template_text(folder) -> str | None:
    """The chat template of a model folder (chat_template.jinja, .json or tokenizer_config)."""
    folder = Path(folder)
    try:
        if (folder / "chat_template.jinja").is_file():
            return (folder / "chat_template.jinja").read_text(encoding="utf-8")
        for name, key in (("chat_template.json", "chat_template"),
                          ("tokenizer_config.json", "chat_template")):
            if (folder / name).is_file():
                value = json.loads((folder / name).read_text(encoding="utf-8")).get(key)
                if isinstance(value, list):      # several named templates
                    value = next((t.get("template") for t in value
                                  if isinstance(t, dict) and t.get("name") == "default"), None)
                if isinstance(value, str) and value:
                    return value
    except (OSError, UnicodeDecodeError, ValueError, AttributeError):
        return None
    return None


def template_kind(text: str | None) -> str:
    if not text:
        return "none (the studio uses plain User:/Assistant: turns)"
    for marker, kind in TEMPLATE_KINDS:
        if marker in text:
            return kind
    return "its own (not one of the checked templates: check the Data page's preview)"


def _template_sentence(kind: str, row: Row | None) -> str:
    if row is not None and kind == row.kind:
        return f"Chat template: {kind}, as checked for this family ({row.template})."
    checked = [r.name for r in SUPPORT.values() if r.kind == kind]
    if checked:
        return f"Chat template: {kind}, checked with {checked[0]}."
    return f"Chat template: {kind}."


def describe(model_type: str | None, folder=None) -> dict:
    """What the Model page shows: the row a model falls in, what will not work, its template."""
    row = row_for_model_type(model_type)
    kind = template_kind(template_text(folder)) if folder is not None else template_kind(None)
    if row is None:
        return {"row": None,
                "title": f"{model_type or 'this architecture'}: not in the checked matrix",
                "problems": ["Not checked by the studio's model matrix: adapters, merging and "
                             "4-bit may work (transformers loads it) but nothing here proves it. "
                             "Check the Data page's preview (only the answers should be "
                             "highlighted) and train a few steps first."],
                "template": kind, "template_text": _template_sentence(kind, None)}
    problems = row.problems()
    limited = [p for p in problems if not p.startswith("GGUF")]
    return {"row": row.key,
            "title": f"{row.name}: " + ("checked, with limits" if limited else
                                        "everything checked works"),
            "problems": problems, "template": kind, "template_text": _template_sentence(kind, row),
            "layout": row.layout}


def markdown_table() -> str:
    """The family x feature table of docs/MODELS.md."""
    head = "| family | model_type | " + " | ".join(t for _, t in FEATURES) + " |"
    lines = [head, "| " + " | ".join(["---"] * (len(FEATURES) + 2)) + " |"]
    for row in SUPPORT.values():
        cells = [row.claim(f).text() for f, _ in FEATURES]
        lines.append(f"| {row.name} | {', '.join(row.model_types)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
