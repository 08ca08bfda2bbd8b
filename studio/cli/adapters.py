"""`peft-studio compare A B C`: put finished runs and adapter folders side by side;
`peft-studio blend A B --weights 0.7,0.3 --out DIR`: a weighted blend as a new adapter.

    peft-studio compare RUN_OR_ADAPTER... [--base-model DIR] [--eval TASK_OR_FILE] [--limit N]
                        [--seed S] [--prompt "..."] [--module 3.q_proj] [--report out.html]
                        [--json out.json]

Prints the settings that differ, the weight analysis (norms, similarity, one module's singular
values), and with --eval the scores of the base model and every adapter on the same examples
with paired 95% CIs; --prompt adds each model's greedy answer. The computation is studio.compare.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from studio.errors import UserError


def _f(value, spec=".4f") -> str:
    return "-" if value is None else format(value, spec)


def print_table(headers: list[str], rows: list[list]) -> None:
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [min(40, max(len(r[k]) for r in cells)) for k in range(len(headers))]
    for n, row in enumerate(cells):
        print("  ".join(c[:40].ljust(w) for c, w in zip(row, widths)).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))


def _parse_weights(text: str, n: int) -> list[float]:
    try:
        weights = [float(w) for w in text.split(",")]
    except ValueError:
        raise UserError(f"--weights {text!r} is not a comma list of numbers.", field="weights",
                        fix="e.g. --weights 0.7,0.3") from None
    if len(weights) != n:
        raise UserError(f"{len(weights)} weights for {n} adapters.", field="weights",
                        fix="Give one weight per adapter.")
    return weights


def cmd_compare(args) -> int:
    from studio.compare import report, weights
    from studio.compare.sources import load_sources, settings_diff

    if args.limit < 0:
        raise UserError("--limit cannot be negative.", field="limit", fix="e.g. --limit 50")
    sources = load_sources(args.adapters, args.base_model)
    task = None
    if args.eval:
        from studio.compare.evaluate import find_task
        task = find_task(args.eval)                  # fail before loading anything
    print_table(["#", "name", "kind", "method", "adapter"],
                [[i + 1, s.name, s.kind, s.method, s.adapter_dir] for i, s in enumerate(sources)])
    diff = settings_diff(sources)
    print("\nsettings that differ:" if diff else "\nall settings are the same")
    if diff:
        print_table(["setting", *[s.name for s in sources]], [[k, *v] for k, v in diff.items()])

    analysis = weights.analyse(sources, module=args.module)
    for item in analysis["skipped"]:
        print(f"\n{item['name']}: no weight analysis ({item['reason']})")
    if analysis["similarity"]:
        sim = analysis["similarity"]
        print("\nweight updates: ||ΔW||_F over all modules")
        print_table(["adapter", "||ΔW||_F"], [[t["name"], _f(t["total"])] for t in analysis["norms"]])
        print("\ncosine similarity of the updates (all modules)")
        print_table(["", *sim["names"]],
                    [[n, *[_f(v, ".3f") for v in row]] for n, row in zip(sim["names"], sim["overall"])])
        if analysis["spectra"]:
            print(f"\nsingular values of ΔW at {analysis['spectra'][0]['module']}")
            print_table(["adapter", "effective rank", "top singular values"],
                        [[s["name"], _f(s["effective_rank"], ".2f"),
                          ", ".join(f"{v:.3g}" for v in s["singular_values"][:6])]
                         for s in analysis["spectra"]])

    evaluation = answers = None
    if task is not None or args.prompt:
        from studio.compare.evaluate import evaluate_all
        from studio.compare.loaded import AdapterSet

        aset = AdapterSet(sources, args.base_model)
        if task is not None:
            progress = None
            if args.progress_json:
                from studio.core import events

                def progress(done, total):
                    print(events.progress_line({"done": done, "total": total}), flush=True)
            evaluation = evaluate_all(aset, task, limit=args.limit or None, seed=args.seed,
                                      progress=progress)
            print(f"\nevaluation on {evaluation['task']} ({evaluation['models'][0]['n']} examples, "
                  f"{evaluation['models'][0]['metric']})")
            print_table(["model", "score", "95% CI"],
                        [[m["name"], _f(m["score"], ".3f"),
                          f"{m['ci95'][0]:.3f} - {m['ci95'][1]:.3f}"] for m in evaluation["models"]])
            print("\npaired differences on the same examples")
            print_table(["a - b", "mean", "95% CI", "verdict"],
                        [[f"{p['a']} - {p['b']}", _f(p["mean"], "+.3f"),
                          f"{p['ci95'][0]:+.3f} - {p['ci95'][1]:+.3f}", p["verdict"]]
                         for p in evaluation["pairs"]])
            print(f"\nthey disagree on {evaluation['disagreements']} of "
                  f"{len(evaluation['rows'])} examples")
        if args.prompt:
            answers = aset.answers(args.prompt, max_new_tokens=args.max_new_tokens)
            print(f"\nprompt: {args.prompt}")
            for name, text in answers.items():
                print(f"[{name}] {text}")
    if args.report:
        html = report.build_report(sources, weights=analysis, evaluation=evaluation,
                                   answers=answers, prompt=args.prompt)
        print(f"\nreport: {report.write_report(args.report, html)}")
    if args.json:
        from studio.fileio import write_json_atomic

        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out, {"sources": [s.to_dict() for s in sources], "settings_diff": diff,
                                "weights": analysis, "evaluation": evaluation,
                                "prompt": args.prompt, "answers": answers}, default=str)
        print(f"results: {out}")
    return 0


def cmd_blend(args) -> int:
    from studio.compare.blend import blend
    from studio.compare.sources import load_sources

    sources = load_sources(args.adapters, args.base_model)
    weights = _parse_weights(args.weights, len(sources)) if args.weights else \
        [1.0 / len(sources)] * len(sources)
    out = blend(sources, weights, args.out, base_model=args.base_model,
                combination_type=args.combination, density=args.density,
                overwrite=args.overwrite)
    print(f"blend of {', '.join(s.name for s in sources)} (weights {weights}, "
          f"{args.combination}): {out}")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "compare", help="compare runs and adapter folders: settings, weights, scores, answers",
        description="Settings that differ, weight-update norms and similarity, and (with --eval) "
                    "scores on the same examples with paired 95%% CIs.")
    p.add_argument("adapters", nargs="+", metavar="RUN_OR_ADAPTER",
                   help="run folders, run names (see `peft-studio runs`) or PEFT adapter folders")
    p.add_argument("--base-model", help="base model folder (default: the one the adapters record)")
    p.add_argument("--eval", metavar="TASK", help="BIG-bench task.json (or folder), .jsonl/.csv "
                                                  "data file, or a sample task's name")
    p.add_argument("--limit", type=int, default=50, help="examples to score (default 50; 0 = all)")
    p.add_argument("--seed", type=int, default=0, help="choice order and bootstrap seed")
    p.add_argument("--prompt", help="also print the greedy answer of the base and each adapter")
    p.add_argument("--max-new-tokens", type=int, default=64, help="answer length for --prompt")
    p.add_argument("--module", help="module for the singular values, e.g. 3.q_proj "
                                    "(default: the first adapter's largest update)")
    p.add_argument("--report", metavar="OUT.html", help="write a self-contained HTML report")
    p.add_argument("--json", metavar="OUT.json", help="write every number as JSON")
    p.add_argument("--progress-json", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_compare)

    q = subparsers.add_parser(
        "blend", help="blend LoRA adapters with weights into a new adapter (peft's "
                      "add_weighted_adapter)")
    q.add_argument("adapters", nargs="+", metavar="RUN_OR_ADAPTER")
    q.add_argument("--out", required=True, help="the new adapter folder")
    q.add_argument("--weights", help="comma list, one per adapter (default: equal)")
    q.add_argument("--combination", default="linear",
                   help="linear (default), cat, svd, ties, dare_linear, dare_ties, magnitude_prune…")
    q.add_argument("--density", type=float, help="fraction kept, for ties/dare/magnitude_prune")
    q.add_argument("--base-model", help="base model folder (default: the one the adapters record)")
    q.add_argument("--overwrite", action="store_true", help="replace an earlier blend in --out")
    q.set_defaults(func=cmd_blend)
