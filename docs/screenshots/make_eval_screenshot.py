"""Render the evaluation dialog offscreen into docs/screenshots/eval-dialog.png.

    QT_QPA_PLATFORM=offscreen python docs/screenshots/make_eval_screenshot.py --task TASK.json
        [--description "..."] [--limit 50]

Generates a LoRA from the description with the shipped Text-to-LoRA network (the way the Generate
page does), then scores it and the base model on the task in the dialog's real background
process, and grabs the window with the results. Writes to a temporary PEFT_STUDIO_HOME.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ["HF_HUB_OFFLINE"] = "1"
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from make_screenshots import grab, wait  # noqa: E402

from studio import paths  # noqa: E402

HERE = Path(__file__).resolve().parent


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", required=True, help="a BIG-bench task.json (or its folder)")
    ap.add_argument("--description", default="Convert a quantity between units of different "
                    "measurement systems.")
    ap.add_argument("--limit", type=int, default=50)
    ap.add_argument("--out", default=str(HERE))
    args = ap.parse_args(argv)
    real_models = paths.models_dir()
    home = Path(tempfile.mkdtemp(prefix="peft-studio-shots-"))
    os.environ["PEFT_STUDIO_HOME"] = str(home)
    (home / "models").symlink_to(real_models, target_is_directory=True)
    try:
        from studio.hyper import api
        from studio.ui import app as studio_app
        from studio.ui.eval_dialog import EvalDialog

        hn = api.load_hypernetwork(api.default_hypernetwork_dir("t2l"))
        adapter = home / "generated" / "different-systems"
        api.generate(hn, adapter, description=args.description,
                     base_model=str(paths.default_model_dir()))
        app = studio_app.create_app()
        dialog = EvalDialog(adapter_dir=str(adapter), model_path=str(paths.default_model_dir()))
        dialog.resize(1180, 780)
        dialog.task.set_path(args.task)
        dialog.limit.setValue(args.limit)
        dialog.show()
        dialog.start()
        wait(app, lambda: not dialog.is_running(), 900, "the evaluation")
        if dialog.result is None:
            print(dialog.message.text(), "\n".join(dialog._log), file=sys.stderr)
            return 1
        grab(app, dialog, "eval-dialog", Path(args.out))
        return 0
    finally:
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
