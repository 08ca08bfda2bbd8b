"""`peft-studio models import FILE.gguf` (convert once into the data folder) and `models list`."""

from __future__ import annotations


def cmd_import(args) -> int:
    from studio.core.models import import_gguf

    path = import_gguf(args.file, name=args.name, log=lambda line: print(line, flush=True))
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


def register(sub) -> None:
    p = sub.add_parser("models", help="import GGUF models, list the models in the data folder")
    q = p.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    i = q.add_parser("import", help="convert a .gguf model once into a Hugging Face folder")
    i.add_argument("file", help="the .gguf file (llama, mistral, qwen2/3, gemma2/3, phi3, ...)")
    i.add_argument("--name", help="folder name under the data folder's models/ (default: the "
                                  "file's name)")
    i.set_defaults(func=cmd_import)
    lst = q.add_parser("list", help="the model folders in the data folder")
    lst.set_defaults(func=cmd_list)
