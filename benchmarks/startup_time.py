"""How long the window takes to appear: from process start to the first paint of the main window,
and until every page has finished loading (model facts, data analysis, plugin discovery).

    QT_QPA_PLATFORM=offscreen python benchmarks/startup_time.py [--repeats 3]

Each repeat is a fresh process (imports are what start-up costs). Prints one line per repeat and
the median; not a test (timings depend on the machine and its load).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

CHILD = r"""
import sys, time, json
t0 = float(sys.argv[1])
from PySide6.QtCore import QObject, QEvent, QTimer
imported = time.time() - t0
from studio.ui import app as studio_app
qt_app = studio_app.create_app()
window = studio_app.MainWindow()
built = time.time() - t0
painted = {}

class Watch(QObject):
    def eventFilter(self, obj, event):
        if event.type() == QEvent.Type.Paint and "first" not in painted:
            painted["first"] = time.time() - t0
        return False

watch = Watch()
window.installEventFilter(watch)
window.resize(1280, 800)
window.show()

def check():
    ready = (window.model_page.info is not None and window.data_page.result is not None
             and bool(window.train_page.method_panel.plugins))
    if ready and "first" in painted:
        painted["ready"] = time.time() - t0
        print(json.dumps({"qt_imported_s": imported, "window_built_s": built,
                          "first_paint_s": painted["first"], "all_pages_ready_s": painted["ready"]}))
        qt_app.quit()

timer = QTimer(); timer.timeout.connect(check); timer.start(20)
QTimer.singleShot(120_000, qt_app.quit)
qt_app.exec()
"""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    env = {**os.environ, "QT_QPA_PLATFORM": os.environ.get("QT_QPA_PLATFORM", "offscreen")}
    rows = []
    for i in range(args.repeats):
        out = subprocess.run([sys.executable, "-c", CHILD, repr(time.time())], env=env,
                             capture_output=True, text=True, timeout=300)
        line = next((x for x in out.stdout.splitlines() if x.startswith("{")), None)
        if line is None:
            print(out.stderr[-2000:], file=sys.stderr)
            return 1
        row = json.loads(line)
        rows.append(row)
        print(f"run {i + 1}: " + "  ".join(f"{k} {v:.2f}" for k, v in row.items()))
    print("median: " + "  ".join(f"{k} {statistics.median(r[k] for r in rows):.2f}" for k in rows[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
