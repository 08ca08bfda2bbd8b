"""`peft-studio export RUN_OR_ADAPTER --to DIR --format adapter|merged|gguf|ollama`: an adapter,
a merged transformers model, a GGUF file or an Ollama folder, each with a parity report.

    peft-studio export RUN --to out/my-model --format merged --dtype bf16
    peft-studio export RUN --to out/my-gguf --format gguf --quant q8_0
    peft-studio export path/to/adapter --model BASE_DIR --to out/a --format adapter

Prints the disk and memory it needs first, then one line per phase, then the parity verdict.
Cannot-merge (prompt-learning) methods and missing GGUF tools exit with code 2 and the fix.
"""

from __future__ import annotations

import signal

from studio.core import events
from studio.errors import UserError

FORMATS = ("adapter", "merged", "gguf", "ollama")
DTYPE_CHOICES = ("fp32", "bf16", "fp16")


def format_report(report: dict) -> str:
    lines = [f"parity ({report['prompts']} prompts from {report['examples_from']}):"]
    for c in report["comparisons"]:
        lines.append(f"  {c['reference']} -> {c['export']}: max |logit diff| "
                     f"{c['max_abs_logit_diff']:.3g}, top-1 agreement {c['top1_agreement']:.2%}, "
                     f"identical greedy answers {c['identical_greedy_answers']}/{c['prompts']}, "
                     f"perplexity {c['perplexity_reference']:.4f} -> {c['perplexity_export']:.4f}"
                     f": {c['verdict']}")
    for note in report.get("notes", [])[1:]:
        lines.append(f"  {note}")
    lines.append(f"verdict: {report['verdict']}")
    return "\n".join(lines)


def cmd_export(args) -> int:
    from studio.export import Cancelled, estimate, export, resolve_source

    if args.parity_prompts < 1:
        raise UserError("--parity-prompts must be at least 1.", field="parity-prompts",
                        fix="e.g. --parity-prompts 8")
    source = resolve_source(args.source, model=args.model)
    if args.format != "adapter":
        source.check_mergeable()
    plan = estimate(source.base_model, source.adapter_dir, args.format, args.dtype, args.quant)
    print(f"exporting {source.method} adapter {source.adapter_dir} as {args.format} -> {args.to}")
    print(plan["text"])
    json_progress = bool(args.progress_json)
    last = {"phase": None}

    def progress(phase, done, total):
        if json_progress:
            print(events.progress_line({"phase": phase, "done": done, "total": total}), flush=True)
        elif phase != last["phase"]:
            print(f"  {phase} …", flush=True)
        last["phase"] = phase

    if json_progress:
        print(events.progress_line({"phase": "plan", "done": 0, "total": 1, **plan}), flush=True)

    def terminated(_signum, _frame):
        raise Cancelled()      # unwinds through the staging folder's clean-up

    signal.signal(signal.SIGTERM, terminated)
    try:
        result = export(source, args.to, args.format, dtype=args.dtype, quant=args.quant,
                        parity_prompts=args.parity_prompts, gguf_lora=args.gguf_lora,
                        progress=progress)
    except Cancelled:
        print("cancelled; nothing was written at the target")
        return 130
    print(format_report(result["report"]))
    print(f"exported: {result['target']}  (parity report: parity.md, parity.json)")
    if result.get("ollama_command"):
        print(f"register with Ollama: {result['ollama_command']}")
    if json_progress:
        print(events.progress_line({"phase": "finished", "done": 1, "total": 1,
                                    "target": result["target"],
                                    "verdict": result["report"]["verdict"]}), flush=True)
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "export", help="export an adapter, a merged model, GGUF or an Ollama folder, with a "
                       "parity report",
        description="Export a run's adapter (or any adapter folder) and check the export "
                    "against the adapter on its base model (parity.md + parity.json beside it).")
    p.add_argument("source", help="a run (folder or name, see `peft-studio runs`) or an adapter "
                                  "folder (with adapter_config.json)")
    p.add_argument("--to", required=True, metavar="DIR",
                   help="the export folder to create (a previous export there is replaced; "
                        "anything else is refused)")
    p.add_argument("--format", choices=FORMATS, default="adapter")
    p.add_argument("--model", help="base model folder (default: the run's, or the adapter's "
                                   "base_model_name_or_path)")
    p.add_argument("--dtype", choices=DTYPE_CHOICES, default="fp32",
                   help="weights of a merged export (default fp32)")
    p.add_argument("--quant", default="f16",
                   help="GGUF type: f32, f16, bf16, q8_0 (llama.cpp's converter) or q6_k, "
                        "q5_k_m, q5_0, q4_k_m, q4_0, q3_k_m, q2_k (llama.cpp's quantizer); "
                        "default f16")
    p.add_argument("--parity-prompts", type=int, default=8,
                   help="examples the parity report compares on (default 8)")
    p.add_argument("--gguf-lora", action="store_true",
                   help="gguf/ollama: also write the adapter alone as a GGUF LoRA (llama.cpp's "
                        "convert_lora_to_gguf.py; plain LoRA only) with an f16 base GGUF to "
                        "apply it to, and check it in llama.cpp")
    p.add_argument("--progress-json", action="store_true",
                   help="print '@progress {json}' lines (for the GUI)")
    p.set_defaults(func=cmd_export)
