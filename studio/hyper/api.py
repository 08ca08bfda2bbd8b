"""The hypernetwork API the GUI and the CLI call (contract: docs/HYPERNETWORKS.md).

    hn = load_hypernetwork()                      # the shipped default Text-to-LoRA
    generate(hn, "out/adapter", description="Decide whether a sports sentence is plausible.")
    train_hypernetwork(library, out_dir, kind="t2l", mode="recon", head="S", steps=300,
                       progress=print)            # studio.hyper.training

No Qt; torch is imported on first use of a hypernetwork, not at module import.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from studio.errors import UserError
from studio.hyper.saved import CONFIG_FILE, WEIGHTS_FILE, read_hyper_config  # noqa: F401 - API names
from studio.hyper.targets import check_adapter_target  # noqa: F401 - callers check --out early

KINDS = {"text_to_lora": "t2l", "dnd": "dnd"}
SHIPPED = {"t2l": "t2l-smollm2-135m", "dnd": "dnd-smollm2-135m"}


def shipped_dir() -> Path:
    from studio.paths import resources_dir

    return resources_dir() / "hypernetworks"


def shipped_hypernetworks() -> list[dict]:
    """The hypernetworks under resources/hypernetworks/, the default T2L first."""
    root = shipped_dir()
    found = []
    for folder in sorted(root.glob("*/")) if root.is_dir() else []:
        if not (folder / CONFIG_FILE).is_file():
            continue
        cfg = read_hyper_config(folder)
        card = folder / "MODEL_CARD.md"
        found.append({"name": folder.name, "kind": KINDS.get(cfg.get("kind"), cfg.get("kind")),
                      "path": str(folder), "base_model_type": cfg["spec"].get("model_type", ""),
                      "card": card.read_text(encoding="utf-8") if card.is_file() else ""})
    found.sort(key=lambda h: (h["name"] != SHIPPED["t2l"], h["kind"] != "t2l", h["name"]))
    return found


def default_hypernetwork_dir(kind: str = "t2l") -> Path:
    if kind not in SHIPPED:
        raise UserError(f"unknown hypernetwork kind '{kind}'.", field="kind", fix="Use t2l or dnd.")
    folder = shipped_dir() / SHIPPED[kind]
    if not (folder / CONFIG_FILE).is_file():
        raise UserError(f"no {kind} hypernetwork is shipped with this installation.", path=folder,
                        fix="Pass --hypernetwork DIR, or train one with `peft-studio hyper train`.")
    return folder


@dataclass
class Hypernetwork:
    kind: str                # "t2l" | "dnd"
    net: object              # TextToLoRA | DnDGenerator
    folder: Path

    @property
    def spec(self):
        return self.net.spec

    def info(self) -> dict:
        cfg = self.net.config
        weights = self.folder / WEIGHTS_FILE
        notes = dict(getattr(cfg, "notes", {}) or {})
        return {"kind": self.kind, "head": getattr(cfg, "head", None), "r": self.spec.r,
                "alpha": self.spec.alpha, "use_rslora": self.spec.use_rslora,
                "modules": list(self.spec.modules), "num_layers": self.spec.num_layers,
                "model_type": self.spec.model_type,
                "params": sum(p.numel() for p in self.net.parameters()),
                "size_mb": round(weights.stat().st_size / 2**20, 2) if weights.is_file() else None,
                "trained_on": notes.get("tasks", []), "steps": notes.get("steps"),
                "mode": notes.get("mode"), "folder": str(self.folder)}


def load_hypernetwork(folder: str | Path | None = None) -> Hypernetwork:
    """Load a saved hypernetwork (kind read from its hypernetwork.json); None: the shipped T2L."""
    folder = Path(folder) if folder else default_hypernetwork_dir("t2l")
    kind = read_hyper_config(folder).get("kind")
    if kind == "text_to_lora":
        from studio.hyper.text_to_lora import TextToLoRA

        return Hypernetwork("t2l", TextToLoRA.load(folder), folder)
    if kind == "dnd":
        from studio.hyper.dnd import DnDGenerator

        return Hypernetwork("dnd", DnDGenerator.load(folder), folder)
    raise UserError(f"unknown hypernetwork kind '{kind}'.", path=folder / CONFIG_FILE,
                    field="kind", fix="Use a folder saved by PEFT Studio (text_to_lora or dnd).")


def warm_up() -> None:
    """Load the sentence encoder now (its first load takes seconds)."""
    from studio.hyper.encoder import default_encoder

    default_encoder()


def _size_mb(folder: Path) -> float:
    return round(sum(p.stat().st_size for p in folder.iterdir() if p.is_file()) / 2**20, 3)


MAX_DESCRIPTION_CHARS = 8000     # far beyond what the encoder reads (256 tokens): a pasted file


def truncation_notice(encoder, description: str) -> str:
    """'description truncated to N tokens ...' when the encoder cuts it, else ''."""
    count = getattr(encoder, "token_count", None)
    if count is None:                      # a precomputed-embeddings encoder: no tokenizer
        return ""
    n, limit = count(description)
    if n <= limit:
        return ""
    return (f"description truncated to {limit} tokens (it has {n}): the generator did not read "
            "the rest; put what matters first.")


PROMPT_SUFFIXES = (".txt", ".jsonl", ".json", ".csv", "")


def read_prompts(path: str | Path) -> list[str]:
    """DnD's example prompts from a file: a text file with one prompt per line, or a data file
    (.jsonl / .json / .csv in the studio's formats: each example's first user message). UserError
    naming the file when it is missing, unreadable, not text, or holds no prompt; read before any
    model or encoder loads."""
    from studio.fileio import read_user_text

    p = Path(path).expanduser()
    fix = ("Give a text file with one example prompt per line (or a .jsonl of chat / alpaca "
           "examples).")
    if p.is_dir():
        raise UserError("the prompts file is a folder.", path=p, field="--prompts", fix=fix)
    if not p.is_file():
        raise UserError("the prompts file does not exist.", path=p, field="--prompts", fix=fix)
    if p.suffix.lower() in (".jsonl", ".json", ".csv"):
        from studio.core.data import load_examples

        prompts = [next((m["content"] for m in ex.messages if m["role"] == "user"), "")
                   for ex in load_examples(p) if ex.messages]
    else:
        text = read_user_text(p, "the prompts file", field="--prompts",
                              fix="Save it as UTF-8 text, one prompt per line.")
        if "\0" in text:
            raise UserError("the prompts file is not a text file (it holds NUL bytes).", path=p,
                            field="--prompts", fix=fix)
        prompts = text.splitlines()
    prompts = [line.strip() for line in prompts if line.strip()]
    if not prompts:
        raise UserError("the prompts file holds no prompt.", path=p, field="--prompts",
                        fix="Write a few example inputs of the task, one per line.")
    return prompts


def check_task_input(kind: str, description: str | None = None,
                     prompts: list[str] | None = None) -> tuple[str | None, list[str] | None]:
    """(description, prompts) cleaned for a generator of `kind`: T2L needs a description (its
    whitespace collapsed), DnD example prompts (blank ones dropped). UserError when missing."""
    if kind == "t2l":
        if not description or not description.strip():
            raise UserError("the task description is empty.", field="description",
                            fix="Describe the task in a sentence, e.g. 'Classify the sentiment "
                                "of a product review as positive or negative'.")
        description = " ".join(description.split())
        if len(description) > MAX_DESCRIPTION_CHARS:
            raise UserError(f"the task description is {len(description):,} characters; the "
                            f"sentence encoder reads only its first few hundred words.",
                            field="description",
                            fix=f"Describe the task in a few sentences (at most "
                                f"{MAX_DESCRIPTION_CHARS:,} characters).")
        return description, None
    prompts = [p for p in (prompts or []) if p and p.strip()]
    if not prompts:
        raise UserError("no example prompts given.", field="prompts",
                        fix="Give a few example inputs of the task, one per line.")
    return None, prompts


def generate(hn: Hypernetwork, out_dir: str | Path, description: str | None = None,
             prompts: list[str] | None = None, base_model=None, encoder=None) -> dict:
    """Write a standard PEFT LoRA adapter for a task into `out_dir`; the one adapter generator.

    T2L takes `description`, DnD takes `prompts`. `base_model`: the base model folder (or its
    config), checked against the hypernetwork's shapes; it sets the adapter's base path and dtype.
    `out_dir` may be new, empty or an earlier adapter (replaced once the new one is complete);
    a file or a folder with other files is refused before anything is computed.
    Returns adapter_dir, kind, seconds, encode_ms, emit_ms, write_ms, size_mb, dtype and the
    description (T2L) or prompts (DnD) used.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)      # tiny ops: one thread is faster (and far faster on a busy CPU)
    try:
        return _generate(hn, out_dir, description, prompts, base_model, encoder)
    finally:
        torch.set_num_threads(threads)


def _generate(hn, out_dir, description, prompts, base_model, encoder) -> dict:
    import torch

    from studio.hyper.encoder import default_encoder
    from studio.hyper.targets import check_base_model, write_adapter

    start = time.perf_counter()
    description, prompts = check_task_input(hn.kind, description, prompts)
    check_adapter_target(out_dir)
    base_path, dtype = check_base_model(hn.spec, base_model)
    encoder = encoder or default_encoder()
    was_training = hn.net.training
    hn.net.eval()
    try:
        t0 = time.perf_counter()
        if hn.kind == "t2l":
            emb = encoder.embed([description])
            t1 = time.perf_counter()
            with torch.inference_mode():
                lora = hn.net.emit(emb)[0]
            meta = {"generator": "text_to_lora", "head": hn.net.config.head,
                    "description": description}
        else:
            states = hn.net.prompt_states(prompts, encoder)
            t1 = time.perf_counter()
            with torch.inference_mode():
                lora = hn.net(states[None])[0]
            meta = {"generator": "dnd", "n_prompts": hn.net.config.n_prompts,
                    "prompts": prompts[: hn.net.config.n_prompts]}
    finally:
        hn.net.train(was_training)
    t2 = time.perf_counter()
    meta["hypernetwork"] = str(hn.folder)
    path = write_adapter(hn.spec, lora, out_dir, base_model=base_path, dtype=dtype, metadata=meta)
    t3 = time.perf_counter()
    result = {"adapter_dir": str(path), "kind": hn.kind, "seconds": t3 - start,
              "encode_ms": (t1 - t0) * 1e3, "emit_ms": (t2 - t1) * 1e3, "write_ms": (t3 - t2) * 1e3,
              "size_mb": _size_mb(path), "dtype": dtype}
    if hn.kind == "t2l":
        from studio.hyper.nearest import nearest_tasks

        result["description"] = description
        result["notice"] = truncation_notice(encoder, description)
        result["nearest"] = nearest_tasks(hn.folder, emb, encoder)
    else:
        result["prompts"] = prompts
    return result


def train_hypernetwork(library, out_dir, kind: str = "t2l", mode: str = "recon", head: str = "S",
                       steps: int = 300, lr: float | None = None, seed: int = 0,
                       model_path=None, progress=None, should_stop=None, **options) -> dict:
    """Train a T2L (recon | sft) or DnD hypernetwork on a library; see studio.hyper.training."""
    from studio.hyper.training import train_hypernetwork as _train

    return _train(library, out_dir, kind=kind, mode=mode, head=head, steps=steps, lr=lr,
                  seed=seed, model_path=model_path, progress=progress, should_stop=should_stop,
                  **options)
