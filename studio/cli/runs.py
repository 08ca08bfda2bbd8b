"""`peft-studio runs`: every run, from the GUI or the CLI, with its status and losses."""

from __future__ import annotations

from pathlib import Path

from studio.cli.common import fmt_float


def cmd_runs(args) -> int:
    from studio.core import runs

    found = runs.list_runs(Path(args.runs_dir) if args.runs_dir else None)
    if not found:
        print("no runs yet (start one with `peft-studio train RECIPE.toml`)")
        return 0
    header = ("RUN", "STATUS", "STEP", "LOSS", "EVAL", "METHOD", "MODEL", "CREATED")
    rows = [header]
    for r in found:
        steps = f"{r.step}/{r.total_steps}" if r.total_steps else str(r.step)
        rows.append((r.path.name, r.status, steps, fmt_float(r.last_loss),
                     fmt_float(r.eval_loss), r.method, r.model, r.created.replace("T", " ")))
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(header))]
    for row in rows:
        print("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths)).rstrip())
    if args.verbose:
        for r in found:
            if r.cause:
                print(f"\n{r.path.name}: {r.cause}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("runs", help="list runs")
    p.add_argument("--runs-dir", help="runs folder to list (default: the data folder)")
    p.add_argument("-v", "--verbose", action="store_true", help="also print why runs failed")
    p.set_defaults(func=cmd_runs)
