"""The transfer's stages, run by the worker child (or the CLI) for a run folder that holds
transfer.json; then the ordinary training loop on the target model.

Each stage writes its result under RUN/transfer/ and its summary into RUN/transfer/state.json; a
resumed run skips what is done (the prompt writing continues from its last whole batch), so a kill
loses at most one batch of a stage or the steps since the last checkpoint.
"""

from __future__ import annotations

import gc
import json
import math
import time
from pathlib import Path

from studio.core import events
from studio.errors import UserError
from studio.fileio import write_json_atomic, write_text_atomic
from studio.transfer.plan import PLAN_FILE, SEEDS_MINIMUM_FOR_FILTER, WORK_DIR
from studio.transfer import synth

STAGES = {"seeds": "Reading real prompts", "generate": "Writing synthetic prompts",
          "filter": "Filtering with the discriminator", "teach": "The source adapter answers"}
BATCH = 16
# A probe that tells written from real too well would leave the new adapter a handful of
# examples (measured: 26 of 200 kept on 2-digit addition, and the student learned less than from
# 100 unfiltered): below this share of the prompts asked for, the most real-looking of the rest
# are kept as well.
KEEP_AT_LEAST = 0.5


class Cancelled(Exception):
    """The user cancelled during a stage (before training began)."""


def is_transfer_run(run_dir) -> bool:
    return (Path(run_dir) / PLAN_FILE).is_file()


def read_plan(run_dir) -> dict:
    return json.loads((Path(run_dir) / PLAN_FILE).read_text(encoding="utf-8"))


def read_state(run_dir) -> dict:
    try:
        data = json.loads((Path(run_dir) / WORK_DIR / "state.json").read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _read_jsonl(path: Path) -> list[dict]:
    rows = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return rows
    for line in lines:
        try:
            rows.append(json.loads(line))
        except ValueError:
            break                        # a torn last line: that batch is written again
    return rows


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    write_text_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


class _Stages:
    def __init__(self, run_dir: Path, emit, control):
        self.run_dir = Path(run_dir)
        self.work = self.run_dir / WORK_DIR
        self.work.mkdir(exist_ok=True)
        self.emit = emit
        self.control = control
        self.plan = read_plan(self.run_dir)
        self.settings = self.plan["settings"]
        self.state = read_state(self.run_dir)
        self.state.setdefault("stages", {})

    # ---- bookkeeping ------------------------------------------------------------------------
    def check(self) -> None:
        if self.control is None:
            return
        if self.control.paused and not self.control.cancelled:
            self.emit(events.paused(0))
            self.control.wait_while_paused()
            if not self.control.cancelled:
                self.emit(events.resumed(0))
        if self.control.cancelled:
            raise Cancelled()

    def progress(self, name: str, done: int, total: int) -> None:
        self.emit(events.stage(name, "running", done, total, title=STAGES[name]))
        self.check()

    def finish(self, name: str, summary: dict, message: str) -> None:
        self.state["stages"][name] = {"summary": summary, "message": message,
                                      "seconds": round(time.time() - self.started, 1)}
        write_json_atomic(self.work / "state.json", self.state)
        self.emit(events.stage(name, "done", title=STAGES[name], summary=summary,
                               message=message))

    def done(self, name: str) -> bool:
        return name in self.state["stages"]

    def begin(self, name: str) -> None:
        self.started = time.time()
        self.emit(events.stage(name, "running", title=STAGES[name]))
        self.check()

    # ---- stages -------------------------------------------------------------------------------
    def seeds(self) -> None:
        self.begin("seeds")
        seeds = self.plan["seeds"]
        _write_jsonl(self.work / "seeds.jsonl", seeds)
        where = self.plan["seeds_from"]
        message = (f"{len(seeds)} real prompt{'s' if len(seeds) != 1 else ''} from {where}" if seeds else
                   "no real prompts: the generator works from the task description alone")
        self.finish("seeds", {"count": len(seeds), "from": where}, message)

    def _load(self, which: str):
        from studio.core.models import load_model

        path = self.plan["target"] if which == "target" else self.plan["source"]["model"]
        return load_model(path)

    def generate(self) -> None:
        self.begin("generate")
        s = self.settings
        count = math.ceil(s["prompts"] * (s["candidates"] if s["filter"] else 1.0))
        seeds = [p["prompt"] for p in self.plan["seeds"]]
        model, tokenizer = self._load(s["generator"])
        limit = synth.token_budget(tokenizer, seeds, s["prompt_tokens"], 32, 128)
        path = self.work / "candidates.jsonl"
        rows = _read_jsonl(path)
        rows = rows[:len(rows) // BATCH * BATCH]     # whole batches only

        def on_batch(new, done, total):
            rows.extend(new)
            _write_jsonl(path, rows)
            self.progress("generate", done, total)

        self.progress("generate", len(rows), count)
        synth.write_prompts(model, tokenizer, seeds, self.plan.get("task", ""), count, s["shots"],
                            s["temperature"], limit, s["seed"], BATCH, done=list(rows),
                            on_batch=on_batch)
        usable = sum(r is None for r in synth.hygiene(rows, seeds))
        del model
        gc.collect()
        self.finish("generate", {"written": len(rows), "usable": usable,
                                 "token_limit": limit, "by": s["generator"]},
                    f"{len(rows)} prompts written by the {s['generator']} model "
                    f"({usable} usable; at most {limit} tokens each)")

    def filter(self) -> None:
        self.begin("filter")
        s = self.settings
        seeds = [p["prompt"] for p in self.plan["seeds"]]
        rows = _read_jsonl(self.work / "candidates.jsonl")
        reasons = synth.hygiene(rows, seeds)
        scores, probe = None, None
        use_probe = (s["filter"] and len(seeds) >= SEEDS_MINIMUM_FOR_FILTER
                     and any(r is None for r in reasons))
        if use_probe:
            model, tokenizer = self._load(s["generator"])
            usable = [i for i, r in enumerate(reasons) if r is None]
            texts = seeds + [rows[i]["text"] for i in usable]
            feats = synth.hidden_features(
                model, tokenizer, texts, BATCH,
                progress=lambda done, total: self.progress("filter", done, total))
            del model
            gc.collect()
            probe = synth.probe_scores(feats[:len(seeds)], feats[len(seeds):], seed=s["seed"])
            scores = [0.0] * len(rows)
            for i, value in zip(usable, probe["fake"]):
                scores[i] = value
        cut = synth.quantile(probe["real"], s["real_quantile"]) if probe is not None else 0.0
        minimum = max(8, math.ceil(s["prompts"] * KEEP_AT_LEAST))
        kept, final = synth.choose(rows, reasons, scores, s["prompts"], cut, minimum=minimum)
        topped = sum(1 for i in kept if scores is not None and scores[i] < cut)
        table = [{"index": r["index"], "text": r["text"], "kept": final[i] is None,
                  "reason": final[i], "p_real": None if scores is None else round(scores[i], 4)}
                 for i, r in enumerate(rows)]
        _write_jsonl(self.work / "filtered.jsonl", table)
        why: dict[str, int] = {}
        for reason in final:
            if reason is not None:
                key = reason.split(" (P(real)")[0]
                why[key] = why.get(key, 0) + 1
        summary = {"written": len(rows), "kept": len(kept), "below_cut_kept": topped,
                   "dropped": why, "filter": bool(use_probe)}
        if probe is not None:
            summary.update(probe_balanced_accuracy=round(probe["balanced_accuracy"], 3),
                           probe_auc=round(probe["auc"], 3),
                           real_p_real_mean=round(sum(probe["real"]) / len(probe["real"]), 3),
                           cut=round(cut, 4))
        dropped = ", ".join(f"{n} {k}" for k, n in sorted(why.items(), key=lambda kv: -kv[1]))
        message = f"kept {len(kept)} of {len(rows)}" + (f" (dropped: {dropped})" if dropped else "")
        if probe is not None:
            message += (f"; the discriminator told real from written with balanced accuracy "
                        f"{probe['balanced_accuracy']:.2f} (AUC {probe['auc']:.2f}, held out); "
                        f"cut at P(real) {cut:.2f}")
            if topped:
                message += (f"; {topped} below the cut kept too, so the new adapter learns from "
                            f"at least {len(kept)} prompts")
        elif s["filter"]:
            message += "; no discriminator: fewer than 4 real prompts"
        if not kept:
            raise UserError("no usable synthetic prompt was written.", path=self.work,
                            fix="Give more real examples (seeds), a clearer task description, or a "
                                "higher 'Longest prompt (tokens)'.")
        self.finish("filter", summary, message)

    def teach(self) -> None:
        from studio.core.chat import build_prompt, load_for_chat
        from studio.core.evaluate import generate_batch

        self.begin("teach")
        s = self.settings
        table = _read_jsonl(self.work / "filtered.jsonl")
        prompts = [r["text"] for r in table if r["kept"]]
        source = self.plan["source"]
        plugin = None
        try:
            from studio import plugins

            plugin = plugins.get_plugin(source["method"])
        except UserError:
            plugin = None
        model, tokenizer = load_for_chat(source["model"], source["adapter"], plugin=plugin)
        answers_seen = [p["answer"] for p in self.plan["seeds"] if p.get("answer")]
        limit = synth.token_budget(tokenizer, answers_seen, s["answer_tokens"], 16, 128)
        path = self.work / "teacher.partial.jsonl"
        rows = _read_jsonl(path)
        model.eval()
        for start in range(len(rows), len(prompts), BATCH):
            chunk = prompts[start:start + BATCH]
            rendered = [build_prompt(tokenizer, p) for p in chunk]
            outs = generate_batch(model, tokenizer, rendered, limit)
            rows += [{"prompt": p, "answer": a.strip()} for p, a in zip(chunk, outs)]
            _write_jsonl(path, rows)
            self.progress("teach", len(rows), len(prompts))
        del model
        gc.collect()
        data = [{"messages": [{"role": "user", "content": r["prompt"]},
                              {"role": "assistant", "content": r["answer"]}]}
                for r in rows if r["answer"]]
        if not data:
            raise UserError("the source adapter answered none of the prompts (every answer was "
                            "empty).", path=path,
                            fix="Check the adapter in Chat; raise 'Longest answer (tokens)'.")
        _write_jsonl(self.work / "teacher.jsonl", data)
        path.replace(self.work / "answers.jsonl")     # every answer, the empty ones too
        empty = len(rows) - len(data)
        self.finish("teach", {"answered": len(data), "empty": empty, "token_limit": limit},
                    f"{len(data)} answers from the source adapter"
                    + (f" ({empty} empty, left out)" if empty else "")
                    + f"; at most {limit} tokens each")


def run_stages(run_dir, emit, control=None) -> dict:
    """Every stage not yet done; returns the state (stage summaries)."""
    stages = _Stages(run_dir, emit, control)
    for name in STAGES:
        if not stages.done(name):
            getattr(stages, name)()
    return stages.state


def run_transfer(run_dir, emit, control=None, resume: bool = False) -> dict | None:
    """The worker child's body for a transfer run: the stages, then training on the target.
    Returns the training's final metrics (None when cancelled during a stage)."""
    from studio.core import checkpoints, runs
    from studio.core.training import run_training

    run_dir = Path(run_dir)
    try:
        run_stages(run_dir, emit, control)
    except Cancelled:
        emit(events.cancelled(0, None))
        return None
    recipe = runs.load_recipe(run_dir)
    has_checkpoint = checkpoints.latest_checkpoint(run_dir) is not None
    return run_training(recipe, run_dir, emit, control, resume=bool(resume and has_checkpoint))
