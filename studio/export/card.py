"""The model card (README.md) written next to an exported adapter or merged model: what it is,
how it was trained (from the run's recipe, events and eval.json) and how to load it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from studio.core import runs


def sha256_of(path: Path) -> str | None:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    except OSError:
        return None
    return digest.hexdigest()


def _final_losses(run_dir: Path) -> dict:
    out = {}
    try:
        out.update(json.loads((run_dir / "eval.json").read_text(encoding="utf-8")))
    except (OSError, ValueError):
        pass
    logs = [e for e in runs.read_events(run_dir) if e.get("event") == "log"]
    if logs:
        out.setdefault("train_loss", logs[-1].get("loss"))
        out.setdefault("step", logs[-1].get("step"))
    return out


def _load_snippet(kind: str, base: str) -> str:
    if kind == "adapter":
        return ("```python\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\n"
                "from peft import PeftModel\n\n"
                f"base = AutoModelForCausalLM.from_pretrained({base!r})\n"
                f"tokenizer = AutoTokenizer.from_pretrained({base!r})\n"
                "model = PeftModel.from_pretrained(base, 'THIS_FOLDER')\n```")
    return ("```python\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
            "model = AutoModelForCausalLM.from_pretrained('THIS_FOLDER')\n"
            "tokenizer = AutoTokenizer.from_pretrained('THIS_FOLDER')\n```")


def model_card(source, kind: str, extra: dict | None = None) -> str:
    """Markdown for README.md. `kind`: adapter | merged | gguf | ollama."""
    extra = extra or {}
    title = {"adapter": "adapter", "merged": "merged model", "gguf": "GGUF model",
             "ollama": "Ollama model"}[kind]
    lines = [f"# {source.method} {title} for {source.base_model.name}", "",
             f"- Base model: `{source.base_model}`",
             f"- Method: {source.plugin.name} (`{source.method}`)"
             + (f", paper: {source.plugin.paper}" if source.plugin.paper else ""),
             f"- Trained adapter: `{source.adapter_dir}`"]
    for key, value in extra.items():
        lines.append(f"- {key}: {value}")
    recipe = source.recipe
    if recipe is not None:
        data_path = recipe.resolve_path(recipe.data.path)
        lines += [f"- Data: `{data_path.name}` (sha256 `{sha256_of(data_path) or 'file missing'}`)"]
        if recipe.data.eval_path:
            eval_path = recipe.resolve_path(recipe.data.eval_path)
            lines.append(f"- Eval data: `{eval_path.name}` (sha256 "
                         f"`{sha256_of(eval_path) or 'file missing'}`)")
        params = ", ".join(f"{k}={v}" for k, v in sorted(recipe.method.params.items()))
        t = recipe.training
        lines += [f"- Hyperparameters: {params}",
                  f"- Training: max_steps={t.max_steps}, batch_size={t.batch_size}, "
                  f"grad_accum={t.grad_accum}, learning_rate={t.learning_rate}, "
                  f"scheduler={t.lr_scheduler}, seed={t.seed}"
                  + (f", base quantization={recipe.model.quantization}"
                     if recipe.model.quantization else "")]
        final = _final_losses(source.run_dir)
        if final:
            lines.append(f"- Steps: {final.get('step', '?')}; final train loss "
                         f"{_num(final.get('train_loss'))}; final eval loss "
                         f"{_num(final.get('eval_loss'))}")
        evals = runs.list_evaluations(source.run_dir)
        if evals:
            lines += ["", "## Evaluations run on this adapter", ""]
            lines += [f"- {runs.format_evaluation(item)}" for item in evals]
    else:
        lines.append("- Training details: not available (exported from an adapter folder "
                     "without its run)")
    lines += ["", "## Load it", "", _load_snippet(kind if kind == "adapter" else "merged",
                                                  str(source.base_model))]
    if kind in ("gguf", "ollama"):
        lines[-1] = "Run the `.gguf` with llama.cpp (`llama-cli -m FILE.gguf`) or register the " \
                    "folder with Ollama (`ollama create NAME -f Modelfile`)."
    lines += ["", "See parity.md for how closely this export reproduces the adapter on its base."]
    if recipe is not None and source.run_dir is not None:
        try:
            toml = (source.run_dir / "recipe.toml").read_text(encoding="utf-8")
        except OSError:
            toml = ""
        if toml:
            lines += ["", "## The exact recipe", "", "```toml", toml.rstrip(), "```"]
    return "\n".join(lines) + "\n"


def _num(value) -> str:
    return "-" if value is None else f"{value:.4f}"
