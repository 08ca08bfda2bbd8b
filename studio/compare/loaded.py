"""One base model with several adapters on it, loaded once, switched by name.

    aset = AdapterSet(sources, base_model=None)       # loads the base model once
    with aset.use("lora-a"):                          # that adapter only (None: the base model)
        evaluate(aset.model, aset.tokenizer, ...)
    aset.chat(prompt, sampling, on_text=lambda name, piece: ...)   # all answer, streamed

LoRA-family adapters of one peft type share one PeftModel (peft's load_adapter / set_adapter);
an adapter of another type (prompt learning, IA3 after LoRA, ...) gets its own copy of the base
model, as peft cannot hold both kinds on one model. Layer: compare (rank 3).
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

from studio.compare.sources import AdapterSource, resolve_base_model
from studio.errors import UserError

BASE = "base model"     # how the base model is named in tables


class AdapterSet:
    def __init__(self, sources: list[AdapterSource], base_model=None):
        from studio.core.models import load_model

        self.sources = list(sources)
        self.base_path = resolve_base_model(self.sources, base_model)
        self._load_model = load_model
        base, self.tokenizer = load_model(self.base_path)
        self._base = base
        self._groups: list = []          # [(peft_type, PeftModel)]
        self._where: dict[str, tuple] = {}   # source name -> (PeftModel, peft adapter name)
        for i, src in enumerate(self.sources):
            self._attach(src, f"a{i}")
        self.model = self._groups[0][1] if self._groups else base

    def _attach(self, src: AdapterSource, adapter_name: str) -> None:
        from peft import PeftModel

        for peft_type, model in self._groups:
            if peft_type == src.peft_type and not src.is_prompt_learning:
                try:
                    model.load_adapter(str(src.adapter_dir), adapter_name=adapter_name,
                                       is_trainable=False)
                except (RuntimeError, ValueError, KeyError) as exc:
                    raise self._unfit(src, exc) from exc
                self._where[src.name] = (model, adapter_name)
                return
        base = self._base if not self._groups else self._load_model(self.base_path)[0]
        try:
            model = PeftModel.from_pretrained(base, str(src.adapter_dir), adapter_name=adapter_name,
                                              is_trainable=False)
        except (RuntimeError, ValueError, KeyError) as exc:
            raise self._unfit(src, exc) from exc
        model.eval()
        self._groups.append((src.peft_type, model))
        self._where[src.name] = (model, adapter_name)

    def _unfit(self, src, exc) -> UserError:
        return UserError(f"'{src.name}' could not be put on {self.base_path.name} "
                         f"({type(exc).__name__}: {str(exc).strip()[:300]}).", path=src.adapter_dir,
                         fix="Compare adapters made for this base model.")

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.sources]

    def peft_model(self, name: str):
        """(PeftModel, peft's adapter name) holding the source called `name`."""
        if name not in self._where:
            raise UserError(f"no adapter called '{name}' in this comparison.",
                            fix="Use one of: " + ", ".join(self.names))
        return self._where[name]

    @contextmanager
    def use(self, name: str | None):
        """The model answering with adapter `name` only (None: the base model, adapters off)."""
        if name is None:
            model = self.model
            if hasattr(model, "disable_adapter"):
                with model.disable_adapter():
                    yield model
            else:
                yield model
            return
        model, adapter_name = self.peft_model(name)
        model.set_adapter(adapter_name)
        yield model

    def chat(self, prompt, sampling=None, on_text=None) -> dict[str, dict]:
        """The base model and every adapter answer `prompt` (a str or chat messages) with the same
        decoding settings: {name (BASE for the base model): studio.core.chat.reply's result}, the
        base first. The LoRA adapters that share a PeftModel answer together in one
        mixed-adapter batch, so their answers stream side by side and cost about one answer's
        time; any others answer one after another. on_text(name, piece) streams."""
        from studio.core.chat import reply, reply_each

        groups = [(peft_type, model, [(n, a) for n, (m, a) in self._where.items() if m is model])
                  for peft_type, model in self._groups] or [("", self.model, [])]
        groups[0][2].insert(0, (BASE, "__base__"))          # the base rides on the first model
        results: dict[str, dict] = {}
        for peft_type, model, members in groups:
            if peft_type == "LORA" and len(members) > 1:
                stream = None if on_text is None else \
                    (lambda row, piece, m=members: on_text(m[row][0], piece))
                try:
                    rows = reply_each(model, self.tokenizer, prompt, [a for _, a in members],
                                      sampling, stream)
                except ValueError:          # a LoRA variant peft cannot mix in one batch
                    pass
                else:
                    results.update({name: row for (name, _), row in zip(members, rows)})
                    continue
            for name, _ in members:
                stream = None if on_text is None else (lambda piece, n=name: on_text(n, piece))
                with self.use(None if name == BASE else name) as model_:
                    results[name] = reply(model_, self.tokenizer, prompt, sampling, stream)
        return {name: results[name] for name in [BASE, *self.names]}

    def answers(self, prompt: str, max_new_tokens: int = 64) -> dict[str, str]:
        """The greedy answer of the base model and of each adapter to one prompt."""
        from studio.core.chat import Sampling

        sampling = Sampling(max_new_tokens=max_new_tokens, temperature=0.0)
        return {name: result["text"] for name, result in self.chat(prompt, sampling).items()}
