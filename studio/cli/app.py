"""`peft-studio` / `peft-studio gui`: the desktop app; `peft-studio setup`: the default model."""

from __future__ import annotations


def cmd_gui(args) -> int:
    from studio.ui import app

    return int(app.main() or 0)


def cmd_setup(args) -> int:
    from studio.core.models import ensure_default_model

    path = ensure_default_model(log=print)
    print(f"default model: {path}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("gui", help="start the desktop app")
    p.set_defaults(func=cmd_gui)
    p = sub.add_parser("setup", help="install the default model (once)")
    p.set_defaults(func=cmd_setup)
