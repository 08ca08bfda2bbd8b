"""`peft-studio model check FOLDER`: what a model folder is, and which row of the checked-families
table (docs/MODELS.md) it falls in: what works, what will not, its chat template."""

from __future__ import annotations

import json


def cmd_model_check(args) -> int:
    from studio.core.families import describe
    from studio.core.models import check_model_folder

    info = check_model_folder(args.folder)          # UserError: printed by main, exit 2
    support = describe(info.model_type, info.path)
    if args.json:
        print(json.dumps({"info": {k: str(v) if k == "path" else v
                                   for k, v in info.__dict__.items()},
                          "support": support}, indent=2))
        return 0
    params = f"{info.num_parameters:,}" if info.num_parameters else "?"
    print(f"{info.path}\n  {info.architecture} (model_type {info.model_type}), {info.num_layers} "
          f"layers, hidden {info.hidden_size}, {params} parameters")
    print(f"  {support['title']}")
    print(f"  {support['template_text']}")
    if support.get("layout"):
        print(f"  Layout: {support['layout']}")
    if support["problems"]:
        print("  What will not work, or only partly:")
        for problem in support["problems"]:
            print(f"    - {problem}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("model", help="check a model folder against the checked families")
    model_sub = p.add_subparsers(dest="model_command", required=True)
    check = model_sub.add_parser(
        "check", help="what a model folder is and what works with it (docs/MODELS.md)")
    check.add_argument("folder", help="a Hugging Face causal LM folder")
    check.add_argument("--json", action="store_true", help="print it as JSON")
    check.set_defaults(func=cmd_model_check)
