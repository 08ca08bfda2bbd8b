"""Ollama: a Modelfile next to the GGUF (FROM, TEMPLATE, PARAMETER stop, SYSTEM).

The TEMPLATE is Ollama's Go-template language. It is written only when the model's chat template
is one whose translation is known and checked: ChatML (`<|im_start|>role\\ncontent<|im_end|>\\n`,
used by SmolLM2, Qwen and others). Whether a template is ChatML is decided by rendering probe
conversations through the Hugging Face template, not by its name; a default system prompt the
template inserts when a conversation has none becomes the Modelfile's SYSTEM. Any other template is
not guessed at: the Modelfile then has no TEMPLATE and the export says so.

`render_go_template` executes the subset of Go templates emitted here (text, {{- / -}} trimming,
range .Messages, if .System, .Role, .Content, .System), modelling how Ollama fills them (the SYSTEM
prompt is put first in .Messages when the conversation has no system message). The export renders
every parity conversation through it and compares with the Hugging Face rendering.
"""

from __future__ import annotations

import re
from pathlib import Path

CHATML_TEMPLATE = ("{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n"
                   "{{ end }}<|im_start|>assistant\n")
_PROBE = [[{"role": "user", "content": "U1"}],
          [{"role": "system", "content": "S1"}, {"role": "user", "content": "U1"}],
          [{"role": "system", "content": "S1"}, {"role": "user", "content": "U1"},
           {"role": "assistant", "content": "A1"}, {"role": "user", "content": "U2"}]]


def _chatml(messages) -> str:
    return "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages) + \
        "<|im_start|>assistant\n"


def _hf_render(messages, tokenizer) -> str:
    from studio.core import data

    return data.render(messages, tokenizer, add_generation_prompt=True)


def translate(tokenizer) -> dict:
    """{"template": Go template or None, "system": default system prompt or None, "why": ...}."""
    if not getattr(tokenizer, "chat_template", None):
        return {"template": None, "system": None,
                "why": "the model has no chat template, so there is nothing to translate"}
    try:
        rendered = [_hf_render(conv, tokenizer) for conv in _PROBE]
    except Exception as exc:  # noqa: BLE001 - the template refuses a probe conversation
        return {"template": None, "system": None,
                "why": f"the chat template could not render a probe conversation ({exc})"}
    system = None
    if rendered[0] != _chatml(_PROBE[0]):
        # A ChatML template that adds its own system turn when there is none?
        m = re.fullmatch(r"<\|im_start\|>system\n(.*?)<\|im_end\|>\n(.*)", rendered[0], re.S)
        if m and m.group(2) == _chatml(_PROBE[0]):
            system = m.group(1)
        else:
            return {"template": None, "system": None,
                    "why": "the chat template is not ChatML; its translation to Ollama's Go "
                           "template language is not known here, so no TEMPLATE was written "
                           "(Ollama will fall back to its own detection: check the answers)"}
    if rendered[1:] != [_chatml(c) for c in _PROBE[1:]]:
        return {"template": None, "system": None,
                "why": "the chat template looks like ChatML for one turn but renders longer "
                       "conversations differently; no TEMPLATE was written"}
    return {"template": CHATML_TEMPLATE, "system": system, "why": "ChatML"}


# ---- a renderer for the Go-template subset above ----------------------------------------------

_ACTION = re.compile(r"\{\{(-?)\s*(.*?)\s*(-?)\}\}", re.S)


def _parse(template: str) -> list:
    """Nodes: ("text", s), ("field", name), ("range", body), ("if", field, body)."""
    pieces, pos, trim_next = [], 0, False
    for m in _ACTION.finditer(template):
        text = template[pos:m.start()]
        if trim_next:
            text = text.lstrip()
        if m.group(1):
            text = text.rstrip()
        pieces.append(("text", text))
        pieces.append(("action", m.group(2)))
        trim_next, pos = bool(m.group(3)), m.end()
    tail = template[pos:]
    pieces.append(("text", tail.lstrip() if trim_next else tail))

    def block(items, i):
        nodes = []
        while i < len(items):
            kind, value = items[i]
            i += 1
            if kind == "text":
                if value:
                    nodes.append(("text", value))
            elif value == "end":
                return nodes, i
            elif value == "range .Messages":
                body, i = block(items, i)
                nodes.append(("range", body))
            elif value.startswith("if ."):
                body, i = block(items, i)
                nodes.append(("if", value[3:].strip()[1:], body))
            elif re.fullmatch(r"\.[A-Za-z]+", value):
                nodes.append(("field", value[1:]))
            else:
                raise ValueError(f"unsupported template action {{{{ {value} }}}}")
        return nodes, i

    nodes, _ = block(pieces, 0)
    return nodes


def render_go_template(template: str, messages: list[dict], system: str | None = None) -> str:
    """What Ollama would send the model for `messages` (a conversation awaiting an answer)."""
    msgs = [dict(m) for m in messages]
    if system and not any(m["role"] == "system" for m in msgs):
        msgs.insert(0, {"role": "system", "content": system})
    first_system = next((m["content"] for m in msgs if m["role"] == "system"), system or "")
    top = {"System": first_system, "Messages": msgs}

    def run(nodes, scope) -> str:
        out = []
        for node in nodes:
            if node[0] == "text":
                out.append(node[1])
            elif node[0] == "field":
                key = node[1]
                value = scope.get(key.lower(), scope.get(key, top.get(key, "")))
                out.append(str(value))
            elif node[0] == "range":
                out.extend(run(node[1], m) for m in top["Messages"])
            elif node[0] == "if":
                if scope.get(node[1].lower()) or top.get(node[1]):
                    out.append(run(node[2], scope))
        return "".join(out)

    return run(_parse(template), top)


# ---- the Modelfile ----------------------------------------------------------------------------

def _quote(text: str) -> str:
    return '"""' + text.replace('"""', '\\"\\"\\"') + '"""'


def stop_strings(tokenizer, chatml: bool) -> list[str]:
    from studio.core.data import end_of_turn_token_ids

    stops = [tokenizer.decode([i]) for i in end_of_turn_token_ids(tokenizer)]
    if chatml:
        stops += ["<|im_start|>", "<|im_end|>"]
    return list(dict.fromkeys(s for s in stops if s.strip()))


def modelfile_text(gguf_name: str, translation: dict, stops: list[str]) -> str:
    lines = [f"FROM ./{gguf_name}"]
    if translation["template"]:
        lines.append(f"TEMPLATE {_quote(translation['template'])}")
    else:
        lines.append(f"# No TEMPLATE: {translation['why']}.")
    if translation.get("system"):
        lines.append(f"SYSTEM {_quote(translation['system'])}")
    lines += [f'PARAMETER stop "{s}"' for s in stops]
    return "\n".join(lines) + "\n"


def model_name(folder: Path) -> str:
    name = re.sub(r"[^a-z0-9._-]+", "-", Path(folder).name.lower()).strip("-._")
    return name or "peft-studio-export"


def write_modelfile(folder: Path, gguf_name: str, tokenizer, conversations: list,
                    name: str | None = None) -> dict:
    """Write Modelfile; check its TEMPLATE against the HF rendering of every conversation."""
    translation = translate(tokenizer)
    stops = stop_strings(tokenizer, translation["template"] is not None)
    (Path(folder) / "Modelfile").write_text(modelfile_text(gguf_name, translation, stops),
                                            encoding="utf-8")
    command = f"ollama create {name or 'NAME'} -f Modelfile"
    if translation["template"] is None:
        return {"note": f"Ollama TEMPLATE not written: {translation['why']}", "command": command,
                "checked": 0, "identical": 0}
    prompts = [_prompt_part(c) for c in conversations if c]
    same = sum(render_go_template(translation["template"], p, translation["system"])
               == _hf_render(p, tokenizer) for p in prompts)
    ok = same == len(prompts)
    note = (f"Ollama TEMPLATE (ChatML) renders {same}/{len(prompts)} conversations exactly like "
            "the chat template" if ok else
            f"Ollama TEMPLATE MISMATCH: only {same}/{len(prompts)} conversations render like the "
            "chat template")
    return {"note": note, "command": command, "checked": len(prompts), "identical": same}


def _prompt_part(conversation: list[dict]) -> list[dict]:
    last = max((i for i, m in enumerate(conversation) if m["role"] == "assistant"), default=None)
    return conversation[:last] if last else conversation
