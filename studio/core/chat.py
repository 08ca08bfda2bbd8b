"""Chatting with a model, with or without its adapter. No Qt."""

from __future__ import annotations

import json
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from studio.errors import UserError
from studio.core.models import load_model

ANOTHER_BASE_FIX = ("Pick the base model the adapter was trained on (see base_model_name_or_path "
                    "in its adapter_config.json), or pick an adapter trained on this model.")


def _model_device(model):
    try:
        return next(model.parameters()).device
    except StopIteration:
        return "cpu"


def build_prompt(tokenizer, messages_or_prompt) -> str:
    """The text the model sees: the conversation through the chat template plus the assistant
    header. A model without a template gets the same User:/Assistant: fallback that training
    used (studio.core.data), so an adapter is asked in the format it learnt."""
    from studio.core.data import prompt_text

    if isinstance(messages_or_prompt, str):
        messages = [{"role": "user", "content": messages_or_prompt}]
    else:
        messages = list(messages_or_prompt)
        if not messages or not all(isinstance(m, dict) and "content" in m for m in messages):
            raise UserError("a chat needs a list of {'role': ..., 'content': ...} messages.",
                            field="messages", fix="Type a prompt, or pass messages with content.")
        messages = [{"role": m.get("role", "user"), "content": m["content"]} for m in messages]
    return prompt_text(messages, tokenizer)


# How an answer is decoded: the one source of the ranges (the Chat page's fields, `peft-studio
# chat`'s options and Sampling.check() all read it). studio.schema specs.
SAMPLING_SCHEMA = {
    "max_new_tokens": {"type": "integer", "default": 128, "minimum": 1, "maximum": 4096,
                       "title": "Max tokens", "help": "Longest answer, in tokens.",
                       "fix": "use a length from 1 to 4096 tokens, e.g. 128"},
    "temperature": {"type": "number", "default": 0.0, "minimum": 0.0, "maximum": 2.0,
                    "title": "Temperature",
                    "help": "0 = greedy (the same answer every time); higher = more varied.",
                    "fix": "use 0 (greedy) up to 2; 0.7 is a usual sampling value"},
    "top_p": {"type": "number", "default": 1.0, "minimum": 0.01, "maximum": 1.0,
              "title": "Top-p",
              "help": "Sample only from the most likely tokens covering this probability (1 = all).",
              "fix": "use a probability above 0 and at most 1, e.g. 0.9 (1 = off)"},
    "top_k": {"type": "integer", "default": 0, "minimum": 0, "maximum": 1000, "title": "Top-k",
              "help": "Sample only from the k most likely tokens (0 = off).",
              "fix": "use 0 (off) or a count such as 40"},
    "repetition_penalty": {"type": "number", "default": 1.0, "minimum": 0.5, "maximum": 2.0,
                           "title": "Repetition",
                           "help": "Above 1 discourages repeating tokens already written (1 = off).",
                           "fix": "use 1 (off), or a little above it such as 1.1"},
}


@dataclass
class Sampling:
    """How an answer is decoded. temperature 0 = greedy (the same answer every time)."""
    max_new_tokens: int = SAMPLING_SCHEMA["max_new_tokens"]["default"]
    temperature: float = SAMPLING_SCHEMA["temperature"]["default"]
    top_p: float = SAMPLING_SCHEMA["top_p"]["default"]
    top_k: int = SAMPLING_SCHEMA["top_k"]["default"]                    # 0 = off
    repetition_penalty: float = SAMPLING_SCHEMA["repetition_penalty"]["default"]   # 1 = off

    def check(self, flags: bool = False) -> "Sampling":
        """UserError naming the setting (as a command-line flag, --top-p, when `flags`) and its
        allowed range when a value is outside SAMPLING_SCHEMA; run it before the model loads.
        Returns the values as their declared types."""
        from studio import schema

        values = {}
        for name, spec in SAMPLING_SCHEMA.items():
            field_name = "--" + name.replace("_", "-") if flags else name
            values[name] = schema.coerce_value(spec, getattr(self, name), field=field_name)
        return Sampling(**values)

    def options(self, tokenizer) -> dict:
        """The keyword arguments for transformers' generate()."""
        options = {"max_new_tokens": int(self.max_new_tokens), "use_cache": True,
                   "pad_token_id": tokenizer.pad_token_id if tokenizer.pad_token_id is not None
                   else tokenizer.eos_token_id}
        if self.temperature and self.temperature > 0:
            options.update(do_sample=True, temperature=float(self.temperature),
                           top_p=float(self.top_p), top_k=int(self.top_k) or None)
        else:
            options.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if self.repetition_penalty and self.repetition_penalty != 1.0:
            options["repetition_penalty"] = float(self.repetition_penalty)
        return options


def _text_streamer(tokenizer, on_text: Callable[[int, str], None], rows: int, stop: set[int],
                   start: float):
    """A transformers streamer for `rows` sequences generated together: on_text(row, new piece)
    as each row's tokens arrive (the prompt skipped, whole characters only, nothing after a
    row's end of sequence). `first_token_s[row]`: seconds from `start` to the row's first piece."""
    from transformers.generation.streamers import BaseStreamer

    class _Streamer(BaseStreamer):
        def __init__(self):
            self.ids: list[list[int]] = [[] for _ in range(rows)]
            self.shown = [""] * rows
            self.done = [False] * rows
            self.first_token_s: list[float | None] = [None] * rows
            self.prompt_seen = False

        def put(self, value):
            if not self.prompt_seen:          # the first call carries the prompt
                self.prompt_seen = True
                return
            for row, token in enumerate(value.reshape(rows, -1).tolist()):
                if self.done[row]:
                    continue
                for t in token:
                    if int(t) in stop:
                        self.done[row] = True
                        break
                    self.ids[row].append(int(t))
                self._show(row, final=False)

        def _show(self, row: int, final: bool) -> None:
            text = tokenizer.decode(self.ids[row], skip_special_tokens=True)
            if len(text) > len(self.shown[row]) and (final or not text.endswith("\ufffd")):
                if self.first_token_s[row] is None:
                    self.first_token_s[row] = time.perf_counter() - start
                on_text(row, text[len(self.shown[row]):])
                self.shown[row] = text

        def end(self):
            for row in range(rows):
                self._show(row, final=True)

    return _Streamer()


def stop_token_ids(model, tokenizer) -> list[int]:
    """Where an answer ends: the template's end-of-turn token (Gemma's <end_of_turn>, Phi-3's
    <|end|>, Llama 3's <|eot_id|>) as well as the eos ids of the model's generation config (else
    the tokenizer's), which often name only the tokenizer's eos (then the model talks past its
    turn)."""
    from studio.core.data import end_of_turn_token_ids

    ids = set(end_of_turn_token_ids(tokenizer))
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if configured is None:
        configured = tokenizer.eos_token_id
    if isinstance(configured, int):
        ids.add(configured)
    elif isinstance(configured, (list, tuple)):
        ids.update(int(i) for i in configured if i is not None)
    return sorted(ids)


def _generate_rows(model, tokenizer, messages_or_prompt, sampling: Sampling | None, rows: int,
                   on_text: Callable[[int, str], None] | None, **extra) -> list[dict]:
    """One prompt, `rows` sequences generated as one batch (extra: more generate() keywords, e.g.
    peft's adapter_names). Each row's answer ends at its first stop token (stop_token_ids)."""
    import torch

    sampling = (sampling or Sampling()).check()
    text = build_prompt(tokenizer, messages_or_prompt)
    # The template writes the special tokens it wants (e.g. <|im_start|>), as in training.
    inputs = tokenizer(text, return_tensors="pt", add_special_tokens=False)
    inputs = {k: v.to(_model_device(model)).repeat(rows, 1) for k, v in inputs.items()}
    options = sampling.options(tokenizer)
    stop = set(stop_token_ids(model, tokenizer))
    options["eos_token_id"] = sorted(stop)
    start = time.perf_counter()
    streamer = None
    if on_text is not None:
        streamer = options["streamer"] = _text_streamer(tokenizer, on_text, rows, stop, start)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            output = model.generate(**inputs, **options, **extra)
    finally:
        if was_training:
            model.train()
    seconds = time.perf_counter() - start
    out = []
    for row in range(rows):
        new_tokens = output[row, inputs["input_ids"].shape[1]:].tolist()
        end = next((k + 1 for k, t in enumerate(new_tokens) if t in stop), len(new_tokens))
        out.append({"text": tokenizer.decode(new_tokens[:end], skip_special_tokens=True).strip(),
                    "tokens": end, "seconds": seconds,
                    "tokens_per_s": end / seconds if seconds > 0 else None,
                    "first_token_s": streamer.first_token_s[row] if streamer else None})
    return out


def reply(model, tokenizer, messages_or_prompt, sampling: Sampling | None = None,
          on_text: Callable[[str], None] | None = None) -> dict:
    """Answer a prompt (str) or a whole conversation (list of messages, history included): the
    conversation goes through the chat template, as in training. on_text(piece) streams the
    answer as it is generated. Returns {"text", "tokens", "seconds", "tokens_per_s",
    "first_token_s" (seconds to the first streamed piece; None unless streamed)}."""
    stream = None if on_text is None else (lambda _row, piece: on_text(piece))
    return _generate_rows(model, tokenizer, messages_or_prompt, sampling, 1, stream)[0]


def reply_each(model, tokenizer, messages_or_prompt, adapter_names: list[str],
               sampling: Sampling | None = None,
               on_text: Callable[[int, str], None] | None = None) -> list[dict]:
    """The same prompt answered once per name in `adapter_names`, all in one batch: peft's
    mixed-adapter batch on a LoRA PeftModel (row i uses adapter adapter_names[i]; "__base__" is
    the base model with the adapters off). Same decoding settings for every row; on_text(row,
    piece) streams every row as it is generated. One result per row, as reply() returns."""
    return _generate_rows(model, tokenizer, messages_or_prompt, sampling, len(adapter_names),
                          on_text, adapter_names=list(adapter_names))


def generate(model, tokenizer, messages_or_prompt, max_new_tokens=128, temperature=0.0,
             top_p=1.0) -> str:
    """Answer a prompt (str) or a chat (list of messages); greedy unless temperature > 0.

    Returns only the newly generated text, without special tokens.
    """
    sampling = Sampling(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p)
    return reply(model, tokenizer, messages_or_prompt, sampling)["text"]


def conversation(history: list[dict], prompt: str, system: str = "") -> list[dict]:
    """The messages for the next turn: the system prompt (if any), the earlier turns, the prompt."""
    messages = [{"role": "system", "content": system}] if system.strip() else []
    return messages + [dict(m) for m in history] + [{"role": "user", "content": prompt}]


@contextmanager
def with_adapter_disabled(model):
    """Inside the block the model answers as its base model (the adapter is switched off).

    Works for peft PeftModels and for transformers models with adapters loaded through
    `load_adapter`; a plain model has no adapter, so it is used as is.
    """
    from peft import PeftModel

    if isinstance(model, PeftModel):
        with model.disable_adapter():
            yield model
    elif getattr(model, "_hf_peft_config_loaded", False):
        model.disable_adapters()
        try:
            yield model
        finally:
            model.enable_adapters()
    else:
        yield model


def compare_answers(model, tokenizer, prompt, max_new_tokens=128, temperature=0.0) -> dict:
    """The base model's answer and the adapted model's answer to the same prompt."""
    with with_adapter_disabled(model):
        base = generate(model, tokenizer, prompt, max_new_tokens, temperature)
    adapted = generate(model, tokenizer, prompt, max_new_tokens, temperature)
    return {"base": base, "adapter": adapted}


def _read_adapter_config(adapter_dir: Path) -> dict:
    if not adapter_dir.exists():
        raise UserError("this adapter folder does not exist.", path=adapter_dir,
                        fix="Pick a run's adapter/ folder or a checkpoints/step-N/ folder.")
    config_path = adapter_dir / "adapter_config.json"
    if not config_path.is_file():
        raise UserError("this folder is not a PEFT adapter (it has no adapter_config.json).",
                        path=adapter_dir,
                        fix="Pick a run's adapter/ folder or a checkpoints/step-N/ folder.")
    try:
        return json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"adapter_config.json could not be read ({exc}).", path=config_path,
                        fix="Re-export the adapter from its run.") from exc


def _is_mismatch(exc: Exception) -> bool:
    text = str(exc).lower()
    return any(key in text for key in ("size mismatch", "not found in the base model",
                                       "shape mismatch", "target modules", "cannot be reshaped",
                                       "must match"))


def attach_adapter(base_model, model_path, adapter_dir, plugin=None):
    """Put the adapter in `adapter_dir` on `base_model` (inference mode); UserError when it does
    not fit. `plugin` (a studio.plugins.Plugin) is used for methods with their own load()."""
    from peft import PeftModel

    adapter_dir = Path(adapter_dir).expanduser()
    config = {} if plugin is not None and not (adapter_dir / "adapter_config.json").is_file() \
        else _read_adapter_config(adapter_dir)
    made_for = config.get("base_model_name_or_path") or "an unrecorded base model"
    if config.get("base_model_name_or_path"):
        recorded = Path(str(config["base_model_name_or_path"])).name
        if recorded and recorded != Path(model_path).name:
            warnings.warn(f"{adapter_dir}: adapter was made for {config['base_model_name_or_path']}"
                          f", loading it on {model_path}", stacklevel=2)
    try:
        if plugin is not None:
            model = plugin.load(base_model, str(adapter_dir))
        else:
            model = PeftModel.from_pretrained(base_model, str(adapter_dir), is_trainable=False)
    except UserError:
        raise
    except (RuntimeError, ValueError, KeyError) as exc:
        if _is_mismatch(exc):
            raise UserError(f"adapter made for another base model ({made_for}); it does not fit "
                            f"{model_path}.", path=adapter_dir, fix=ANOTHER_BASE_FIX) from exc
        raise UserError(f"the adapter could not be loaded ({type(exc).__name__}: "
                        f"{str(exc).strip()[:300]}).", path=adapter_dir,
                        fix="Re-export the adapter from its run.") from exc
    except OSError as exc:
        raise UserError(f"the adapter files could not be read ({exc}).", path=adapter_dir,
                        fix="Re-export the adapter from its run.") from exc
    model.eval()
    return model


def load_for_chat(model_path, adapter_dir=None, quantization=None, *, dtype="float32",
                  device=None, plugin=None):
    """(model, tokenizer) ready to chat: the base model, plus the adapter when one is given."""
    if adapter_dir:
        # Fail on a bad adapter folder before spending time loading the model.
        if plugin is None or (Path(adapter_dir) / "adapter_config.json").is_file():
            _read_adapter_config(Path(adapter_dir).expanduser())
    model, tokenizer = load_model(model_path, quantization=quantization, dtype=dtype,
                                  device=device)
    if adapter_dir:
        model = attach_adapter(model, model_path, adapter_dir, plugin=plugin)
    return model, tokenizer
