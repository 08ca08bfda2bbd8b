"""Starting the window where there is no display says so, with what to do, instead of Qt's
misleading "xcb-cursor0 is needed"."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from studio.errors import UserError
from studio.ui.app import check_display


def test_check_display_rules():
    with pytest.raises(UserError, match="no display") as err:
        check_display({}, "linux")
    assert "xvfb-run" in str(err.value) and "offscreen" in str(err.value)
    check_display({"DISPLAY": ":0"}, "linux")
    check_display({"WAYLAND_DISPLAY": "wayland-0"}, "linux")
    check_display({"QT_QPA_PLATFORM": "offscreen"}, "linux")
    check_display({}, "darwin")                   # macOS and Windows always have a screen


def test_gui_without_display_exits_with_the_hint():
    env = {k: v for k, v in os.environ.items()
           if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    proc = subprocess.run([sys.executable, "-m", "studio.cli"], env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "no display" in proc.stderr and "Traceback" not in proc.stderr
