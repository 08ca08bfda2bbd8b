"""The parity table of docs/EXPORT.md: export one run in every format and print the figures.

    python benchmarks/export_parity.py RUN OUT_DIR [--prompts 8]

Runs `peft-studio export` (the CLI, one process per export, as a user would) for adapter,
merged fp32/bf16/fp16 and, when the GGUF tools are installed, GGUF f16/q8_0/q4_k_m and Ollama
q8_0; then prints one markdown row per comparison from each export's parity.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

EXPORTS = [("adapter", []), ("merged", ["--dtype", "fp32"]), ("gguf", ["--quant", "q8_0"]),
           ("gguf", ["--quant", "q4_k_m"]), ("merged", ["--dtype", "bf16"]),
           ("gguf", ["--quant", "f16"]), ("merged", ["--dtype", "fp16"]),
           ("ollama", ["--quant", "q8_0"])]
GGUF = ("gguf", "ollama")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("run")
    parser.add_argument("out")
    parser.add_argument("--prompts", type=int, default=8)
    args = parser.parse_args()
    from studio.export import gguf

    todo = [e for e in EXPORTS if e[0] not in GGUF or not gguf.missing_tools()]
    rows = []
    for fmt, extra in todo:
        target = Path(args.out) / "-".join([fmt] + extra[1:])
        start, seconds = time.time(), 0.0
        if not (target / "export.json").is_file():   # else done by an earlier, interrupted call
            proc = subprocess.run([sys.executable, "-m", "studio.cli", "export", args.run,
                                   "--to", str(target), "--format", fmt, "--parity-prompts",
                                   str(args.prompts), *extra], capture_output=True, text=True)
            seconds = time.time() - start
            if proc.returncode != 0:
                print(f"{fmt} {extra}: failed\n{proc.stderr[-1500:]}", file=sys.stderr)
                continue
            (target / "seconds.txt").write_text(f"{seconds:.0f}")
        if (target / "seconds.txt").is_file():
            seconds = float((target / "seconds.txt").read_text())
        report = json.loads((target / "parity.json").read_text())
        size = sum(f.stat().st_size for f in target.rglob("*") if f.is_file()) / 2**20
        for c in report["comparisons"]:
            rows.append(f"| {fmt} {' '.join(extra[1:])} | {c['reference']} | {c['export']} | "
                        f"{c['max_abs_logit_diff']:.3g} | {c['top1_agreement']:.2%} | "
                        f"{c['identical_greedy_answers']}/{c['prompts']} | "
                        f"{c['perplexity_reference']:.4f} | {c['perplexity_export']:.4f} | "
                        f"{c['verdict']} | {size:,.0f} MB | {seconds:.0f} s |")
        print(rows[-1], flush=True)
    print("\n| export | reference | export | max abs logit diff | top-1 agreement | identical "
          "greedy answers | perplexity (reference) | perplexity (export) | verdict | size | "
          "time |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
