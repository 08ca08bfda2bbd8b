"""`peft-studio` / `peft-studio gui`: the desktop app; `peft-studio setup`: the default model."""

from __future__ import annotations


def cmd_gui(args) -> int:
    from studio.ui import app

    return int(app.main() or 0)


def cmd_setup(args) -> int:
    from studio.core.models import ensure_default_model

    if args.gguf:
        import subprocess

        from studio.export import gguf

        print(f"installing GGUF support: {gguf.INSTALL_COST}")
        try:
            print(f"GGUF tools ready: {gguf.install_tools(log=print)}")
        except subprocess.CalledProcessError as exc:
            print(f"error: the GGUF install step failed: {exc}")
            return 1

    path = ensure_default_model(log=print)
    print(f"default model: {path}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("gui", help="start the desktop app")
    p.set_defaults(func=cmd_gui)
    p = sub.add_parser("setup", help="install the default model (once)")
    p.add_argument("--gguf", action="store_true",
                   help="also install GGUF export support: builds llama-cpp-python from source "
                        "(~10 min on 2 cores) and copies llama.cpp's converter")
    p.set_defaults(func=cmd_setup)
