"""BIG-bench-format tasks: load a task.json, turn examples into prompts, evaluate a model on it.

A task file holds a `description` and `examples`. Multiple-choice examples carry `target_scores`
(choice -> score); generative ones carry `target` (a string or a list of acceptable strings).
Prompt conventions follow BIG-bench's JSON tasks: `task_prefix`, `example_input_prefix`
(default "\\nQ: "), `example_output_prefix` (default "\\nA: "), `choice_prefix`
(default "\\n  choice: ") and `append_choices_to_input` (default true).

Scoring: multiple choice by the log-likelihood of each choice given the prompt (the highest sum
wins; `accuracy_norm` uses the per-token mean instead); generative by exact match and ROUGE-L
(LCS F-measure over whitespace tokens). Works with a plain model or a PeftModel, on CPU, no grad.
"""

from __future__ import annotations

import json
import math
import random
import re
from dataclasses import dataclass, field
from pathlib import Path

from studio.core.stats import bootstrap_ci  # noqa: F401 - re-exported
from studio.errors import UserError
from studio.fileio import parse_json, read_user_text

DEFAULT_INPUT_PREFIX = "\nQ: "
DEFAULT_OUTPUT_PREFIX = "\nA: "
DEFAULT_CHOICE_PREFIX = "\n  choice: "


@dataclass
class TaskExample:
    input: str
    target_scores: dict[str, float] | None = None   # multiple choice
    targets: list[str] = field(default_factory=list)  # generative references (or MC target text)


@dataclass
class BigBenchTask:
    name: str
    description: str
    path: Path | None
    examples: list[TaskExample]
    task_prefix: str = ""
    input_prefix: str = DEFAULT_INPUT_PREFIX
    output_prefix: str = DEFAULT_OUTPUT_PREFIX
    choice_prefix: str = DEFAULT_CHOICE_PREFIX
    append_choices: bool = True
    stop_string: str | None = None
    output_regex: str | None = None
    keywords: list[str] = field(default_factory=list)

    @property
    def is_multiple_choice(self) -> bool:
        return bool(self.examples) and self.examples[0].target_scores is not None


def _as_bool(value, key: str, where: str) -> bool:
    """true/false (or the words "true"/"false"); anything else is refused, not guessed."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "yes", "no"):
        return value.strip().lower() in ("true", "yes")
    raise UserError(f"'{key}' must be true or false, not {json.dumps(value)[:40]}.", path=where,
                    field=key, fix=f"Write \"{key}\": true (or false), or remove the field.")


def _optional_text(data: dict, key: str, where: str) -> str | None:
    """A free-text field (name, description): absent or null -> None, text -> itself."""
    value = data.get(key)
    if value is None or isinstance(value, str):
        return value
    raise UserError(f"'{key}' must be text, not {json.dumps(value)[:60]}.", path=where, field=key,
                    fix=f"Write it as one JSON string, e.g. \"{key}\": \"...\".")


def _keywords(data: dict, where: str) -> list[str]:
    value = data.get("keywords")
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(k, str) for k in value):
        raise UserError(f"'keywords' must be a list of strings, not {json.dumps(value)[:60]}.",
                        path=where, field="keywords",
                        fix='Write e.g. "keywords": ["arithmetic", "numerical response"].')
    return list(value)


def _is_score(value) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def _text_field(data: dict, key: str, default: str | None, where: str) -> str | None:
    """A text setting of the task: absent -> default; a string -> itself; else UserError (a null
    prefix would otherwise become the literal text "None", a number a crash while scoring)."""
    if key not in data:
        return default
    value = data[key]
    if isinstance(value, str):
        return value
    if value is None and default is None:
        return None
    shown = "null" if value is None else json.dumps(value)
    raise UserError(f"'{key}' must be text, not {shown}.", path=where, field=key,
                    fix=f"Write it as a JSON string (e.g. \"{key}\": \"...\"), or remove the "
                        "field to use the default.")


def parse_task(data: dict, path: str | Path | None = None) -> BigBenchTask:
    """Validate a task dict (the content of a task.json) and return a BigBenchTask."""
    where = str(path) if path is not None else "task"
    if not isinstance(data, dict):
        raise UserError("a BIG-bench task must be a JSON object.", path=where,
                        fix="Use the task.json layout: {\"description\": ..., \"examples\": [...]}.")
    raw = data.get("examples")
    if raw is not None and not isinstance(raw, list):
        raise UserError(f"'examples' must be a list, not {json.dumps(raw)[:40]}.", path=where,
                        field="examples",
                        fix="Write \"examples\": [{\"input\": ..., \"target\": ...}, ...].")
    if not isinstance(raw, list) or not raw:
        raise UserError("no examples found.", path=where, field="examples",
                        fix="Add a non-empty list of {\"input\": ..., \"target\"/\"target_scores\": ...}.")
    examples = []
    for i, ex in enumerate(raw):
        fld = f"examples[{i}]"
        if not isinstance(ex, dict) or not isinstance(ex.get("input"), str):
            raise UserError("each example needs a string 'input'.", path=where, field=fld,
                            fix="Write the example as {\"input\": \"...\", \"target\": \"...\"}.")
        scores = ex.get("target_scores")
        target = ex.get("target")
        targets = [target] if isinstance(target, str) else target if isinstance(target, list) else []
        if target is not None and (not targets or not all(isinstance(t, str) for t in targets)):
            raise UserError("'target' must be a string or a list of strings.", path=where,
                            field=fld + ".target", fix="Put the expected answer text in 'target'.")
        if scores is not None:
            if (not isinstance(scores, dict) or len(scores) < 2
                    or not all(_is_score(v) for v in scores.values())):
                raise UserError("'target_scores' must map at least two choices to numbers "
                                "(not true/false, NaN or Infinity).",
                                path=where, field=fld + ".target_scores",
                                fix="Write e.g. {\"yes\": 1, \"no\": 0}.")
            scores = {str(k): float(v) for k, v in scores.items()}
            if not any(v > 0 for v in scores.values()):
                raise UserError("every choice in 'target_scores' scores 0 (or less), so no answer "
                                "is right.", path=where, field=fld + ".target_scores",
                                fix="Give the correct choice a score of 1, e.g. {\"yes\": 1, "
                                    "\"no\": 0}.")
        elif not targets:
            raise UserError("example has neither 'target' nor 'target_scores'.", path=where,
                            field=fld, fix="Add the expected answer.")
        examples.append(TaskExample(ex["input"], scores, targets))
    if all(e.target_scores is None and not any(t.strip() for t in e.targets) for e in examples):
        # (a few blank targets occur in real BIG-bench tasks; all of them is a broken file)
        raise UserError(f"every one of the {len(examples)} examples has a blank 'target', so no "
                        "answer could ever be scored right.", path=where, field="examples",
                        fix="Write the expected answer text in each example's 'target'.")
    kinds = {e.target_scores is not None for e in examples}
    if len(kinds) > 1:
        raise UserError("mixes multiple-choice and generative examples.", path=where,
                        field="examples", fix="Split the task into two files.")
    name = _optional_text(data, "name", where) or (Path(path).parent.name if path else "task")
    description = _optional_text(data, "description", where) or ""
    keywords = _keywords(data, where)
    text = {key: _text_field(data, key, default, where) for key, default in (
        ("task_prefix", ""), ("example_input_prefix", DEFAULT_INPUT_PREFIX),
        ("example_output_prefix", DEFAULT_OUTPUT_PREFIX), ("choice_prefix", DEFAULT_CHOICE_PREFIX),
        ("stop_string", None), ("output_regex", None))}
    if text["output_regex"]:
        try:
            re.compile(text["output_regex"])
        except re.error as err:
            raise UserError(f"'output_regex' is not a valid regular expression ({err}).",
                            path=where, field="output_regex",
                            fix="Correct the pattern (Python `re` syntax), or remove the field.")
    return BigBenchTask(
        name=name,
        description=description.strip(),
        path=Path(path) if path is not None else None,
        examples=examples,
        task_prefix=text["task_prefix"],
        input_prefix=text["example_input_prefix"],
        output_prefix=text["example_output_prefix"],
        choice_prefix=text["choice_prefix"],
        append_choices=_as_bool(data.get("append_choices_to_input", True),
                                "append_choices_to_input", where),
        stop_string=text["stop_string"] or None,
        output_regex=text["output_regex"] or None,
        keywords=keywords,
    )


DATA_SUFFIXES = (".jsonl", ".csv")


def task_from_data(path: str | Path) -> BigBenchTask:
    """A generative task from a training-data file (a run's eval split, any .jsonl/.csv in the
    studio's formats): each example's prompt (the conversation before its last reply) against that
    reply, scored by exact match like any generative BIG-bench task."""
    from studio.core.data import load_examples
    from studio.core.evaluate import split_for_generation

    path = Path(path)
    examples = []
    for ex in load_examples(path):
        split = split_for_generation(ex)
        if split is None:
            continue
        messages, reply = split
        prompt = "\n".join(m["content"] for m in messages if m["role"] != "system")
        examples.append(TaskExample(prompt, None, [reply.strip()]))
    if not examples:
        raise UserError("this data file has no examples with a reply to score.", path=path,
                        fix="Use chat/alpaca data whose examples end with the assistant's answer.")
    return BigBenchTask(name=path.stem, description=f"examples of {path.name}", path=path,
                        examples=examples, input_prefix="", output_prefix="")


def load_task(path: str | Path) -> BigBenchTask:
    """Read a BIG-bench task.json (or a folder holding one), or make a generative task from a
    data file (.jsonl / .csv: see task_from_data)."""
    path = Path(path)
    if path.suffix.lower() in DATA_SUFFIXES and path.is_file():
        return task_from_data(path)
    if path.is_dir():
        path = path / "task.json"
    if path.is_file() and path.suffix.lower() != ".json":
        raise UserError(f"unsupported task file type '{path.suffix or '(none)'}'.", path=path,
                        fix="Give a BIG-bench task.json (or its folder), or a .jsonl / .csv data "
                            "file in the studio's formats.")
    if not path.is_file():
        raise UserError("task file not found.", path=path,
                        fix="Give the path of a BIG-bench task.json (or its folder).")
    text = read_user_text(path, "the task file", fix="Save the task.json with UTF-8 encoding.")
    try:
        data = parse_json(text, path)
    except json.JSONDecodeError as err:
        raise UserError(f"not valid JSON ({err.msg} at column {err.colno}).", path=path,
                        line=err.lineno, fix="Check the file is a BIG-bench task.json.") from None
    return parse_task(data, path)


def _choices(task: BigBenchTask, ex: TaskExample, rng: random.Random | None) -> list[str]:
    choices = sorted(ex.target_scores)
    if rng is not None:
        rng.shuffle(choices)
    return choices


def format_input(task: BigBenchTask, ex: TaskExample, rng: random.Random | None = None,
                 with_prefixes: bool = True) -> str:
    """The prompt text for an example (choices appended when the task asks for it)."""
    text = ex.input
    if ex.target_scores is not None and task.append_choices:
        text += task.choice_prefix + task.choice_prefix.join(_choices(task, ex, rng))
    if not with_prefixes:
        return (task.task_prefix.strip() + "\n" + text.strip()).strip()
    return task.task_prefix + task.input_prefix + text + task.output_prefix


def answer_text(ex: TaskExample) -> str:
    """The reference answer: the best-scoring choice, or the first target."""
    if ex.target_scores is not None:
        return max(ex.target_scores.items(), key=lambda kv: kv[1])[0]
    return ex.targets[0]


def task_to_examples(task: BigBenchTask | str | Path, n: int | None = None, seed: int = 0,
                     offset: int = 0):
    """Chat-format training examples (studio.core.data.Example): user = prompt, assistant = answer.

    The task description is *not* put into the prompt: a task LoRA must learn the task itself.
    `offset` skips the first examples (keep them for evaluation).
    """
    from studio.core.data import Example

    if not isinstance(task, BigBenchTask):
        task = load_task(task)
    rng = random.Random(seed)
    chosen = task.examples[offset:]
    chosen = chosen[:n] if n is not None else chosen
    return [Example(messages=[
        {"role": "user", "content": format_input(task, ex, rng, with_prefixes=False)},
        {"role": "assistant", "content": answer_text(ex)},
    ]) for ex in chosen]


# ---------------------------------------------------------------- metrics
def _rouge_tokens(text: str) -> list[str]:
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).split()


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F-measure (beta = 1) from the longest common subsequence of tokens.

    Tokens as in the rouge_score package BIG-bench uses: lower-cased runs of letters and digits
    (so "Paris." matches "paris")."""
    p, r = _rouge_tokens(prediction), _rouge_tokens(reference)
    if not p or not r:
        return float(p == r)
    prev = [0] * (len(r) + 1)
    for tok in p:
        cur = [0]
        for j, rt in enumerate(r):
            cur.append(prev[j] + 1 if tok == rt else max(prev[j + 1], cur[j]))
        prev = cur
    lcs = prev[-1]
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(p), lcs / len(r)
    return 2 * precision * recall / (precision + recall)


def _normalise(text: str) -> str:
    return " ".join(text.split())


def postprocess(task: BigBenchTask, text: str) -> str:
    if task.stop_string and task.stop_string in text:
        text = text[: text.index(task.stop_string)]
    if task.output_regex:
        try:
            match = re.search(task.output_regex, text)
        except re.error:
            match = None
        if match:
            text = match.group(0)
    return text.strip()


# ---------------------------------------------------------------- model scoring
def _device(model):
    return next(model.parameters()).device


def _render_prompt(tokenizer, prompt: str, chat: bool) -> str:
    if chat:        # as the studio trains and chats: the template, or its User:/Assistant: fallback
        from studio.core.data import prompt_text

        return prompt_text([{"role": "user", "content": prompt}], tokenizer)
    return prompt


def _is_prompt_learning(model) -> bool:
    """PEFT prefix/prompt/P-tuning models feed their own past_key_values: no prompt cache."""
    config = getattr(model, "active_peft_config", None)
    return bool(getattr(config, "is_prompt_learning", False))


def _pair_ids(tokenizer, pairs, max_length, add_special_tokens, pad_id):
    """(context ids, continuation ids) per pair, the context cut from the left to fit."""
    out = []
    for context, cont in pairs:
        if context.endswith(" ") and not cont.startswith(" "):   # keep the space with the answer
            context, cont = context[:-1], " " + cont
        ctx_ids = tokenizer(context, add_special_tokens=add_special_tokens)["input_ids"]
        cont_ids = tokenizer(cont, add_special_tokens=False)["input_ids"] or [pad_id]
        cont_ids = cont_ids[-(max_length - 1):]
        if not ctx_ids:                     # nothing to condition the first token on: unscored
            ctx_ids, cont_ids = cont_ids[:1], cont_ids[1:] or [pad_id]
        out.append((ctx_ids[len(ctx_ids) + len(cont_ids) - max_length:]
                    if len(ctx_ids) + len(cont_ids) > max_length else ctx_ids, cont_ids))
    return out


def _score_padded(model, seqs, batch_size, pad_id, device) -> list[tuple[float, int]]:
    """Every (context, continuation) as its own padded row: works for any model."""
    import torch

    out = []
    for start in range(0, len(seqs), batch_size):
        chunk = [(ctx + cont, len(cont)) for ctx, cont in seqs[start:start + batch_size]]
        width = max(len(ids) for ids, _ in chunk)
        input_ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for i, (ids, _) in enumerate(chunk):
            input_ids[i, :len(ids)] = torch.tensor(ids)
            mask[i, :len(ids)] = 1
        logits = model(input_ids=input_ids.to(device), attention_mask=mask.to(device)).logits
        logp = torch.log_softmax(logits.float(), dim=-1)
        for i, (ids, n_cont) in enumerate(chunk):
            pos = torch.arange(len(ids) - n_cont - 1, len(ids) - 1, device=device)
            tgt = input_ids[i, len(ids) - n_cont:len(ids)].to(device)
            out.append((float(logp[i, pos, tgt].sum()), n_cont))
    return out


def _score_shared(model, ctx, conts, batch_size, pad_id, device) -> list[tuple[float, int]]:
    """All continuations of one context: the context runs once, its KV cache is shared.

    A multiple-choice example with k choices costs one context pass instead of k; continuations
    of one token need no second pass at all.
    """
    import copy

    import torch

    first = model(input_ids=torch.tensor([ctx], device=device), use_cache=True)
    if not hasattr(first.past_key_values, "batch_repeat_interleave"):
        # a model whose cache cannot be shared across a batch: one padded row per choice
        return _score_padded(model, [(ctx, c) for c in conts], batch_size, pad_id, device)
    first_logp = torch.log_softmax(first.logits[0, -1].float(), dim=-1)
    scores = [float(first_logp[c[0]]) for c in conts]
    longer = [j for j, c in enumerate(conts) if len(c) > 1]
    for start in range(0, len(longer), batch_size):
        rows = longer[start:start + batch_size]
        width = max(len(conts[j]) for j in rows) - 1          # the last token is never an input
        input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        mask = torch.ones((len(rows), len(ctx) + width), dtype=torch.long)
        for i, j in enumerate(rows):
            ids = conts[j][:-1]
            input_ids[i, :len(ids)] = torch.tensor(ids)
            mask[i, len(ctx) + len(ids):] = 0
        cache = copy.deepcopy(first.past_key_values)
        cache.batch_repeat_interleave(len(rows))
        logits = model(input_ids=input_ids.to(device), attention_mask=mask.to(device),
                       past_key_values=cache, use_cache=True).logits
        logp = torch.log_softmax(logits.float(), dim=-1)
        for i, j in enumerate(rows):
            tgt = torch.tensor(conts[j][1:], device=device)
            scores[j] += float(logp[i, torch.arange(len(tgt), device=device), tgt].sum())
    return [(s, len(c)) for s, c in zip(scores, conts)]


def choice_logprobs(model, tokenizer, pairs: list[tuple[str, str]], batch_size: int = 8,
                    max_length: int = 512, add_special_tokens: bool = False,
                    share_context: bool | None = None, progress=None) -> list[tuple[float, int]]:
    """(sum log p(continuation | context), number of continuation tokens) for each pair.

    add_special_tokens: let the tokenizer add its BOS to the context (plain prompts; a rendered
    chat template already holds its special tokens).
    share_context: pairs with the same context (the choices of one multiple-choice example) run
    the context once and share its KV cache; None = whenever the model allows it (not for PEFT
    prompt-learning adapters, which bring their own cache). Same numbers either way, up to float
    rounding. progress: called with (pairs scored, all pairs) as scoring goes; it may raise to stop.
    """
    import torch

    device = _device(model)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    seqs = _pair_ids(tokenizer, pairs, max_length, add_special_tokens, pad_id)
    if share_context is None:
        share_context = not _is_prompt_learning(model)
    with torch.inference_mode():
        if not share_context:
            out = []
            for start in range(0, len(seqs), batch_size):
                out += _score_padded(model, seqs[start:start + batch_size], batch_size, pad_id,
                                     device)
                if progress is not None:
                    progress(len(out), len(seqs))
            return out
        groups: dict[tuple, list[int]] = {}
        for i, (ctx, _) in enumerate(seqs):
            groups.setdefault(tuple(ctx), []).append(i)
        out: list[tuple[float, int] | None] = [None] * len(seqs)
        for ctx, members in groups.items():
            scored = _score_shared(model, list(ctx), [seqs[i][1] for i in members],
                                   batch_size, pad_id, device)
            for i, result in zip(members, scored):
                out[i] = result
            if progress is not None:
                progress(sum(r is not None for r in out), len(seqs))
    return out


def _generate(model, tokenizer, prompts: list[str], max_new_tokens: int, batch_size: int,
              add_special_tokens: bool = False, progress=None) -> list[str]:
    import torch

    device = _device(model)
    old_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    texts = []
    try:
        with torch.inference_mode():
            for start in range(0, len(prompts), batch_size):
                enc = tokenizer(prompts[start:start + batch_size], return_tensors="pt",
                                padding=True, add_special_tokens=add_special_tokens).to(device)
                gen = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                     pad_token_id=tokenizer.pad_token_id)
                texts += tokenizer.batch_decode(gen[:, enc["input_ids"].shape[1]:],
                                                skip_special_tokens=True)
                if progress is not None:
                    progress(len(texts), len(prompts))
    finally:
        tokenizer.padding_side = old_side
    return texts


def evaluate_task(model, tokenizer, task: BigBenchTask, max_examples: int | None = 60,
                  seed: int = 0, chat: bool | None = None, batch_size: int = 8,
                  max_new_tokens: int = 48, offset: int = 0, progress=None) -> dict:
    """Score `model` on `task`. Returns per-example results, the score and a bootstrap 95% CI.

    chat=None uses the tokenizer's chat template when it has one (the prompt becomes the user
    turn; the answer follows the assistant header), else BIG-bench's plain prompt format.
    progress(done, total) is called as scoring goes (it may raise to stop the evaluation).
    """
    if chat is None:
        chat = bool(getattr(tokenizer, "chat_template", None))
    rng = random.Random(seed)
    examples = task.examples[offset:]
    examples = examples[:max_examples] if max_examples else examples
    was_training = model.training
    model.eval()
    results: list[dict] = []
    try:
        if task.is_multiple_choice:
            prompts, pairs, spans = [], [], []
            for ex in examples:
                text = format_input(task, ex, rng, with_prefixes=not chat)
                prompt = _render_prompt(tokenizer, text, chat)
                choices = sorted(ex.target_scores)
                spans.append((len(pairs), choices))
                pairs += [(prompt, c) for c in choices]
                prompts.append(text)
            scored = choice_logprobs(model, tokenizer, pairs, batch_size=batch_size,
                                     add_special_tokens=not chat, progress=progress)
            for ex, text, (first, choices) in zip(examples, prompts, spans):
                part = scored[first:first + len(choices)]
                best = max(range(len(choices)), key=lambda j: part[j][0])
                best_norm = max(range(len(choices)), key=lambda j: part[j][0] / part[j][1])
                results.append({
                    "input": ex.input, "prompt": text, "choices": choices,
                    "logprobs": [p[0] for p in part], "prediction": choices[best],
                    "prediction_norm": choices[best_norm], "answer": answer_text(ex),
                    "score": ex.target_scores[choices[best]],
                    "score_norm": ex.target_scores[choices[best_norm]],
                })
            values = [r["score"] for r in results]
            summary = {"metric": "multiple_choice_grade",
                       "accuracy": sum(values) / len(values),
                       "accuracy_norm": sum(r["score_norm"] for r in results) / len(results),
                       "chance": sum(1 / len(r["choices"]) for r in results) / len(results)}
        else:
            texts = [format_input(task, ex, rng, with_prefixes=not chat) for ex in examples]
            outs = _generate(model, tokenizer, [_render_prompt(tokenizer, t, chat) for t in texts],
                             max_new_tokens, batch_size, add_special_tokens=not chat,
                             progress=progress)
            for ex, text, out in zip(examples, texts, outs):
                pred = postprocess(task, out)
                em = float(any(_normalise(pred) == _normalise(t) for t in ex.targets))
                rl = max(rouge_l(pred, t) for t in ex.targets)
                results.append({"input": ex.input, "prompt": text, "prediction": pred,
                                "raw_output": out, "answer": ex.targets[0],
                                "exact_match": em, "rouge_l": rl, "score": em})
            values = [r["exact_match"] for r in results]
            summary = {"metric": "exact_match", "exact_match": sum(values) / len(values),
                       "rouge_l": sum(r["rouge_l"] for r in results) / len(results)}
    finally:
        model.train(was_training)
    lo, hi = bootstrap_ci(values, seed=seed)
    summary.update({"task": task.name, "n": len(results), "score": sum(values) / len(values),
                    "ci95": [lo, hi], "chat_format": chat, "results": results})
    return summary


def evaluate_task_file(model, tokenizer, path: str | Path, max_examples: int | None = 60,
                       seed: int = 0, **kwargs) -> dict:
    """Load a BIG-bench task.json and evaluate (the `peft-studio eval` entry point)."""
    return evaluate_task(model, tokenizer, load_task(path), max_examples=max_examples,
                         seed=seed, **kwargs)
