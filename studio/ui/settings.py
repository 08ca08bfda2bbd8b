"""The window's remembered choices (last eval task, theme, ...): one INI file in the data folder."""

from __future__ import annotations

from PySide6.QtCore import QSettings

from studio import paths


def ui_settings() -> QSettings:
    """The studio's own settings file (inside PEFT_STUDIO_HOME, so tests never touch the user's)."""
    return QSettings(str(paths.data_dir() / "settings.ini"), QSettings.Format.IniFormat)
