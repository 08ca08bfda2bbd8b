"""Parity: does the export behave like the adapter on its base model?

Both sides are run on the same examples (the run's eval split, else its data file, else the demo
data) and compared: max |logit difference|, top-1 token agreement per position, how many greedy
answers are identical, and the perplexity of each on the examples' trained (assistant) tokens.
A verdict follows from thresholds that depend on the export's precision:

    "matches"                      fp32 export: max |diff| <= 5e-3, every top-1 token and every
                                   greedy answer the same
    "matches within quantisation"  reduced precision (bf16/fp16/f16/q8_0): top-1 agreement >= 95%
                                   and perplexity within 5%; quantised (2-6 bit GGUF): >= 85% and
                                   within 15%; or an adapter trained on a 4/8-bit base whose
                                   export matches it on the de-quantised base (the merge uses
                                   the original weights, so the 4-bit rounding is gone)
    "differs"                      otherwise, with the first prompt and position where the top-1
                                   tokens part

plus a chat-template check (the export's template text and its rendering of each conversation
compared with the base model's). A measurement is a list of dicts per example: input_ids, labels,
logits (numpy [T, V] float32), prompt_ids, greedy (generated token ids) — produced here for
transformers models and in studio.export.gguf for llama.cpp.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from studio import paths
from studio.errors import UserError

EXACT, REDUCED, QUANTISED = "exact", "reduced", "quantised"
TOLERANCES = {EXACT: {"max_abs": 5e-3, "top1": 1.0, "ppl_rel": 1e-3},
              REDUCED: {"top1": 0.95, "ppl_rel": 0.05},
              QUANTISED: {"top1": 0.85, "ppl_rel": 0.15}}
MATCHES, WITHIN, DIFFERS = "matches", "matches within quantisation", "differs"
_RANK = {MATCHES: 0, WITHIN: 1, DIFFERS: 2}
MAX_TOKENS = 192
MAX_NEW_TOKENS = 32


def precision_class(dtype: str | None = None, quant: str | None = None,
                    reference_quantization: str | None = None) -> str:
    """How close the export can be expected to stay: exact, reduced or quantised."""
    if reference_quantization or (quant and quant not in ("f32", "f16", "bf16", "q8_0")):
        return QUANTISED
    if quant in ("f16", "bf16", "q8_0") or (dtype and dtype not in ("fp32", "float32")):
        return REDUCED
    return EXACT


# ---- which examples -----------------------------------------------------------------------

def parity_examples(recipe, n: int) -> tuple[list, str]:
    """Up to n examples and where they came from: the run's eval split (as training made it),
    else its data file, else the studio's demo eval data."""
    from studio.core import data

    if n <= 0:
        raise UserError("parity needs at least one prompt.", field="parity-prompts",
                        fix="use --parity-prompts 8 (the default)")
    if recipe is not None:
        try:
            examples = data.load_examples(recipe.resolve_path(recipe.data.path), recipe.data.format)
            if recipe.data.eval_path:
                path = recipe.resolve_path(recipe.data.eval_path)
                held = data.load_examples(path, recipe.data.format)
                where = f"the run's eval file {path.name}"
            elif recipe.data.eval_fraction > 0:
                _train, held = data.split_examples(examples, recipe.data.eval_fraction,
                                                   recipe.training.seed)
                where = "the run's held-out eval split"
            else:
                held, where = examples, f"the run's data file {Path(recipe.data.path).name}"
            if held:
                return held[:n], where
        except UserError:
            pass                          # data moved or deleted since training: use the demo
    path = paths.resources_dir() / "demo" / "dates_eval.jsonl"
    return data.load_examples(path)[:n], "the demo eval data (dates_eval.jsonl)"


def _prompt_messages(messages: list[dict]) -> list[dict]:
    """The conversation up to (not including) its last assistant turn."""
    last = max((i for i, m in enumerate(messages) if m.get("role") == "assistant"), default=None)
    return messages[:last] if last else messages


def prepared_examples(examples, tokenizer, max_tokens: int = MAX_TOKENS) -> list[dict]:
    """Token ids to score (training's tokenisation) and the prompt to answer greedily."""
    from studio.core import data

    out = []
    for ex in examples:
        item = data.tokenize_example(ex, tokenizer, max_tokens)
        if ex.messages:
            messages = _prompt_messages(ex.messages)
            prompt_ids = tokenizer(data.prompt_text(messages, tokenizer),
                                   add_special_tokens=False)["input_ids"][:max_tokens]
            conversation = list(ex.messages)
        else:
            prompt_ids, messages, conversation = item["input_ids"][:16], None, None
        out.append({"input_ids": item["input_ids"], "labels": item["labels"],
                    "prompt_ids": prompt_ids, "messages": messages, "conversation": conversation})
    return out


# ---- measuring a transformers model -----------------------------------------------------------

def measure_hf(model, tokenizer, prepared: list[dict], max_new_tokens: int = MAX_NEW_TOKENS,
               step=None) -> list[dict]:
    """Logits on each example and the greedy answer to its prompt (float32 numpy on the CPU)."""
    import torch

    from studio.core.data import end_of_turn_token_ids

    device = next(model.parameters()).device
    stop = end_of_turn_token_ids(tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop[0]
    model.eval()
    out = []
    for i, item in enumerate(prepared):
        with torch.no_grad():
            ids = torch.tensor([item["input_ids"]], device=device)
            logits = model(input_ids=ids).logits[0].float().cpu().numpy()
            prompt = torch.tensor([item["prompt_ids"]], device=device)
            gen = model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt),
                                 max_new_tokens=max_new_tokens, do_sample=False,
                                 eos_token_id=stop, pad_token_id=pad, temperature=None,
                                 top_p=None, top_k=None)
        greedy = [int(t) for t in gen[0, prompt.shape[1]:]]
        out.append({"input_ids": item["input_ids"], "labels": item["labels"], "logits": logits,
                    "greedy": strip_stop(greedy, stop)})
        if step is not None:
            step(i + 1, len(prepared))
    return out


def strip_stop(ids: list[int], stop) -> list[int]:
    """Generated ids up to (not including) the first stop token."""
    for k, t in enumerate(ids):
        if t in stop:
            return ids[:k]
    return ids


# ---- comparing ---------------------------------------------------------------------------

def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def perplexity(measurement: list[dict]) -> float:
    """exp(mean negative log-likelihood) of the trained tokens (all tokens when none are)."""
    nll, count = 0.0, 0
    for item in measurement:
        ids, labels = item["input_ids"], item["labels"]
        logp = _log_softmax(item["logits"])
        targets = [(t, labels[t + 1]) for t in range(len(ids) - 1) if labels[t + 1] != -100] or \
            [(t, ids[t + 1]) for t in range(len(ids) - 1)]
        for t, tok in targets:
            if tok < logp.shape[1]:
                nll -= float(logp[t, tok])
                count += 1
    return math.exp(nll / count) if count else float("nan")


def compare(reference: list[dict], export: list[dict], precision: str, decode=None,
            reference_name: str = "adapter on the base", export_name: str = "export") -> dict:
    """The figures and the verdict for one pair of measurements on the same examples."""
    decode = decode or (lambda ids: str(ids))
    max_abs, agree, positions, identical, first = 0.0, 0, 0, 0, None
    first_answer = None
    for i, (a, b) in enumerate(zip(reference, export)):
        if a["input_ids"] != b["input_ids"]:
            raise ValueError(f"example {i}: the two sides were scored on different tokens")
        v = min(a["logits"].shape[1], b["logits"].shape[1])
        la, lb = a["logits"][:, :v], b["logits"][:, :v]
        max_abs = max(max_abs, float(np.abs(la - lb).max()))
        ta, tb = la.argmax(-1), lb.argmax(-1)
        same = ta == tb
        agree += int(same.sum())
        positions += len(same)
        if first is None and not same.all():
            p = int(np.argmin(same))
            first = {"prompt": i, "position": p, "context": decode(a["input_ids"][max(0, p - 8):p + 1]),
                     "reference_top1": decode([int(ta[p])]), "export_top1": decode([int(tb[p])])}
        if a["greedy"] == b["greedy"]:
            identical += 1
        elif first_answer is None:
            first_answer = {"prompt": i, "reference": decode(a["greedy"]),
                            "export": decode(b["greedy"])}
    n = min(len(reference), len(export))
    ppl_ref, ppl_exp = perplexity(reference), perplexity(export)
    ppl_rel = abs(ppl_exp - ppl_ref) / ppl_ref if ppl_ref == ppl_ref and ppl_ref > 0 else float("nan")
    top1 = agree / positions if positions else float("nan")
    result = {"reference": reference_name, "export": export_name, "precision": precision,
              "prompts": n, "positions": positions, "max_abs_logit_diff": max_abs,
              "top1_agreement": top1, "identical_greedy_answers": identical,
              "perplexity_reference": ppl_ref, "perplexity_export": ppl_exp,
              "perplexity_relative_diff": ppl_rel, "first_top1_difference": first,
              "first_different_answer": first_answer}
    result["verdict"], result["why"] = verdict(result)
    return result


def verdict(r: dict) -> tuple[str, str]:
    tol = TOLERANCES[r["precision"]]
    exact_ok = (r["max_abs_logit_diff"] <= TOLERANCES[EXACT]["max_abs"] and r["top1_agreement"] == 1.0
                and r["identical_greedy_answers"] == r["prompts"])
    if exact_ok:
        return MATCHES, (f"max |logit diff| {r['max_abs_logit_diff']:.2e}, every top-1 token and "
                         "greedy answer identical")
    if r["precision"] != EXACT and r["top1_agreement"] >= tol["top1"] and \
            r["perplexity_relative_diff"] <= tol["ppl_rel"]:
        return WITHIN, (f"{r['precision']} precision: top-1 agreement {r['top1_agreement']:.1%} "
                        f"(>= {tol['top1']:.0%}), perplexity within "
                        f"{r['perplexity_relative_diff']:.1%} (<= {tol['ppl_rel']:.0%})")
    where = r.get("first_top1_difference")
    text = (f"top-1 agreement {r['top1_agreement']:.1%}, perplexity "
            f"{r['perplexity_reference']:.3f} -> {r['perplexity_export']:.3f}, max |logit diff| "
            f"{r['max_abs_logit_diff']:.3g}")
    if where:
        text += (f"; first differs at prompt {where['prompt'] + 1}, position {where['position']}"
                 f" (after {where['context']!r}): {where['reference_top1']!r} vs "
                 f"{where['export_top1']!r}")
    elif r.get("first_different_answer"):
        d = r["first_different_answer"]
        text += f"; greedy answers part at prompt {d['prompt'] + 1}"
    return DIFFERS, text


def worst(verdicts: list[str]) -> str:
    return max(verdicts, key=lambda v: _RANK.get(v, 2)) if verdicts else MATCHES


# ---- chat template ----------------------------------------------------------------------------

def template_check(reference_tokenizer, export_template: str | None, conversations: list,
                   render_export=None, where: str = "export") -> dict:
    """Does the export prompt the model the way the base model's chat template does? Compares
    the template text and the rendering of each conversation (with the generation prompt)."""
    from studio.core import data

    ref_template = getattr(reference_tokenizer, "chat_template", None)
    result = {"where": where, "reference_has_template": bool(ref_template),
              "export_has_template": bool(export_template),
              "same_text": (ref_template or "") == (export_template or ""),
              "conversations": 0, "identical_renderings": 0, "first_difference": None}
    if render_export is None or not ref_template:
        result["ok"] = result["same_text"]
        return result
    for i, conv in enumerate(c for c in conversations if c):
        ref = data.render(conv, reference_tokenizer, add_generation_prompt=False)
        try:
            got = render_export(conv)
        except Exception as exc:  # noqa: BLE001 - a template that fails to render differs
            got = f"<render failed: {exc}>"
        result["conversations"] += 1
        if ref == got:
            result["identical_renderings"] += 1
        elif result["first_difference"] is None:
            k = next((j for j, (x, y) in enumerate(zip(ref, got)) if x != y), min(len(ref), len(got)))
            result["first_difference"] = {"conversation": i, "offset": k,
                                          "reference": ref[max(0, k - 20):k + 40],
                                          "export": got[max(0, k - 20):k + 40]}
    result["ok"] = result["identical_renderings"] == result["conversations"]
    return result


def template_note(check: dict) -> str:
    if check["ok"]:
        return (f"{check['where']} chat template: same as the base model's "
                f"({check['identical_renderings']}/{check['conversations']} conversations render "
                "identically)" if check["conversations"] else
                f"{check['where']} chat template: same text as the base model's")
    if not check["export_has_template"] and check["reference_has_template"]:
        return f"chat template MISMATCH: the {check['where']} has no chat template"
    d = check.get("first_difference")
    if d:
        return (f"chat template MISMATCH in the {check['where']}: conversation {d['conversation'] + 1} "
                f"renders differently at character {d['offset']}: {d['reference']!r} vs "
                f"{d['export']!r}")
    return f"chat template MISMATCH: the {check['where']}'s template text differs from the base model's"


# ---- the report -------------------------------------------------------------------------------

def _fmt(value, spec):
    if value is None or (isinstance(value, float) and value != value):
        return "-"
    return format(value, spec)


def report_markdown(report: dict) -> str:
    lines = [f"# Parity report: {report['format']} export", "",
             f"**Verdict: {report['verdict']}**", "",
             f"Source: `{report['source']}` ({report['method']}) on `{report['base_model']}`.",
             f"Examples: {report['prompts']} from {report['examples_from']}; greedy answers up to "
             f"{report['max_new_tokens']} new tokens.", "",
             "| reference | export | precision | max abs logit diff | top-1 agreement | "
             "identical greedy answers | perplexity (reference) | perplexity (export) | verdict |",
             "|---|---|---|---|---|---|---|---|---|"]
    for c in report["comparisons"]:
        lines.append(f"| {c['reference']} | {c['export']} | {c['precision']} | "
                     f"{_fmt(c['max_abs_logit_diff'], '.3g')} | {_fmt(c['top1_agreement'], '.2%')} | "
                     f"{c['identical_greedy_answers']}/{c['prompts']} | "
                     f"{_fmt(c['perplexity_reference'], '.4f')} | {_fmt(c['perplexity_export'], '.4f')}"
                     f" | {c['verdict']} |")
    lines.append("")
    for c in report["comparisons"]:
        lines.append(f"- {c['reference']} vs {c['export']}: {c['verdict']} ({c['why']})")
    for note in report.get("notes", []):
        lines.append(f"- {note}")
    lines.append("")
    return "\n".join(lines)


def write_report(folder: Path, report: dict) -> None:
    (Path(folder) / "parity.json").write_text(json.dumps(_json_safe(report), indent=1),
                                              encoding="utf-8")
    (Path(folder) / "parity.md").write_text(report_markdown(report), encoding="utf-8")


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value
