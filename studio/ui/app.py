"""The PEFT Studio window: a sidebar of pages (Model, Data, Train, Runs, Chat) and `main()`.

    python -m studio.ui.app [--model FOLDER] [--data FILE]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Callable

from PySide6.QtCore import QSize, Qt, QTimer, QUrl
from PySide6.QtGui import QAction, QDesktopServices, QIcon
from PySide6.QtWidgets import (
    QApplication, QButtonGroup, QFrame, QHBoxLayout, QLabel, QMainWindow, QPushButton, QStackedWidget,
    QVBoxLayout, QWidget,
)

from studio import __version__, paths
from studio.errors import UserError
from studio.ui import tasks, theme, widgets


# ---- Where pages and tools are registered ----------------------------------------------------
# A page is one entry in PAGES: (key, sidebar title, icon name in resources/icons, factory).
# The factory gets the MainWindow and returns the page widget; it runs after the pages listed
# before it, so it can use them (e.g. `window.pages["model"]`). Import the page module inside the
# factory (keeps `import studio.ui.app` light). To add a page, write studio/ui/<name>_page.py and
# add one line here.
# A tool is one entry in TOOLS: (title, icon name, callback(window)); it appears in the Tools menu
# and under the sidebar's page list. To add a dialog, write studio/ui/<name>_dialog.py and add
# one line here.


def _model_page(window):
    from studio.ui.model_page import ModelPage
    return ModelPage()


def _data_page(window):
    from studio.ui.data_page import DataPage
    return DataPage()


def _train_page(window):
    from studio.ui.train_page import TrainPage
    return TrainPage(window.pages["model"], window.pages["data"])


def _runs_page(window):
    from studio.ui.runs_page import RunsPage
    return RunsPage()


def _queue_page(window):
    from studio.ui.queue_page import QueuePage
    return QueuePage()


def _compare_page(window):
    from studio.ui.compare_page import ComparePage
    return ComparePage()


def _chat_page(window):
    from studio.ui.chat_page import ChatPage
    return ChatPage(window.pages["model"])


def _generate_page(window):
    from studio.ui.generate_page import GeneratePage
    return GeneratePage(window)


PAGES: list[tuple[str, str, str, Callable[["MainWindow"], QWidget]]] = [
    ("model", "Model", "model", _model_page),
    ("data", "Data", "data", _data_page),
    ("train", "Train", "train", _train_page),
    ("runs", "Runs", "runs", _runs_page),
    ("queue", "Queue", "queue", _queue_page),
    ("compare", "Compare", "compare", _compare_page),
    ("chat", "Chat", "chat", _chat_page),
    ("generate", "Generate", "generate", _generate_page),
]

TOOLS: list[tuple[str, str, Callable[["MainWindow"], None]]] = [
    ("Compare methods…", "compare", lambda w: __import__("studio.ui.compare_dialog", fromlist=["_"]).open_dialog(w)),
    ("Evaluate on task…", "evaluate", lambda w: __import__("studio.ui.eval_dialog", fromlist=["_"]).open_dialog(w)),
    ("Export adapter…", "save", lambda w: __import__("studio.ui.export_dialog", fromlist=["_"]).open_dialog(w)),
    ("Transfer adapter…", "transfer",
     lambda w: __import__("studio.ui.transfer_dialog", fromlist=["_"]).open_dialog(w)),
]


def shortcuts_text() -> str:
    rows = [(f"Ctrl+{i + 1}", f"Go to {title}") for i, (_k, title, _i, _f) in enumerate(PAGES[:9])]
    rows += [("Ctrl+Enter", "Send the prompt (Chat)"), ("Ctrl+Q", "Quit"), ("F1", "This list")]
    return "<table>" + "".join(f"<tr><td><b>{k}</b>&nbsp;&nbsp;</td><td>{v}</td></tr>" for k, v in rows) + "</table>"


def shipped_docs() -> list[tuple[str, Path]]:
    """The documentation that ships in the repository (README and docs/*.md), title and path."""
    root = paths.resources_dir().parent
    found = [("README", root / "README.md")] if (root / "README.md").is_file() else []
    for path in sorted((root / "docs").glob("*.md")):
        found.append((path.stem.replace("_", " ").capitalize() if path.stem.islower() else path.stem, path))
    return found


def about_text() -> str:
    import importlib.metadata as md

    versions = []
    for name in ("torch", "transformers", "peft", "PySide6"):
        try:
            versions.append(f"{name} {md.version(name)}")
        except md.PackageNotFoundError:
            versions.append(f"{name} (not installed)")
    return (f"<b>PEFT Studio {__version__}</b><br>Fine-tune a local LLM with adapter methods, or "
            f"make an adapter from one sentence.<br><br>{' · '.join(versions)}<br><br>"
            f"Your data (models, runs, plugins): {paths.data_dir()}<br>"
            f"Plugins: built-in {paths.builtin_plugins_dir()}, yours {paths.user_plugins_dir()}")


class Sidebar(QFrame):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("Sidebar")
        self.setFixedWidth(212)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(14, 18, 14, 16)
        layout.setSpacing(3)
        brand = QHBoxLayout()
        brand.setSpacing(10)
        logo = QLabel()
        logo.setPixmap(QIcon(str(paths.resources_dir() / "icons" / "logo.svg")).pixmap(30, 30))
        brand.addWidget(logo)
        names = QVBoxLayout()
        names.setSpacing(0)
        name = QLabel("PEFT Studio")
        name.setObjectName("AppName")
        version = QLabel(f"v{__version__} · adapters for LLMs")
        version.setObjectName("AppVersion")
        names.addWidget(name)
        names.addWidget(version)
        brand.addLayout(names)
        brand.addStretch(1)
        layout.addLayout(brand)
        layout.addSpacing(10)
        self.group = QButtonGroup(self)
        self.group.setExclusive(True)
        self.buttons: dict[str, QPushButton] = {}
        for key, text, icon_name, _factory in PAGES:
            btn = QPushButton(f"  {text}")
            btn.setObjectName("NavButton")
            btn.setCheckable(True)
            btn.setCursor(Qt.CursorShape.PointingHandCursor)
            btn.setIconSize(QSize(18, 18))
            btn.setProperty("icon_name", icon_name)
            btn.toggled.connect(lambda on, b=btn: self._tint(b, on))
            self._tint(btn, False)
            self.group.addButton(btn)
            self.buttons[key] = btn
            layout.addWidget(btn)
        self.tool_buttons: dict[str, QPushButton] = {}
        if TOOLS:
            layout.addSpacing(6)
            caption = QLabel("TOOLS")
            caption.setObjectName("SidebarCaption")
            layout.addWidget(caption)
            for text, icon_name, _callback in TOOLS:
                btn = QPushButton(f" {text.rstrip('…')}")   # the menu keeps the "…"; the sidebar is narrow
                btn.setToolTip(text)
                btn.setObjectName("NavButton")
                btn.setCursor(Qt.CursorShape.PointingHandCursor)
                btn.setIconSize(QSize(18, 18))
                btn.setProperty("icon_name", icon_name)
                self._tint(btn, False)
                self.tool_buttons[text] = btn
                layout.addWidget(btn)
        layout.addStretch(1)
        self.footer = QLabel("")
        self.footer.setObjectName("SidebarFooter")
        self.footer.setWordWrap(True)
        layout.addWidget(self.footer)

    @staticmethod
    def _tint(btn: QPushButton, on: bool) -> None:
        btn.setProperty("icon_role", "nav-on" if on else "nav")    # theme.retint_icons keeps it
        btn.setIcon(theme.icon(btn.property("icon_name"), theme.icon_color(role=btn.property("icon_role"))))


class MainWindow(QMainWindow):
    def __init__(self, model_path: str | Path | None = None, data_path: str | Path | None = None) -> None:
        super().__init__()
        self.setWindowTitle("PEFT Studio")
        self.setWindowIcon(QIcon(str(paths.resources_dir() / "icons" / "logo.svg")))
        self.resize(1380, 880)
        central = QWidget()
        row = QHBoxLayout(central)
        row.setContentsMargins(0, 0, 0, 0)
        row.setSpacing(0)
        self.sidebar = Sidebar()
        row.addWidget(self.sidebar)
        self.stack = QStackedWidget()
        row.addWidget(self.stack, 1)
        self.setCentralWidget(central)

        self.pages: dict[str, QWidget] = {}
        for key, _title, _icon, factory in PAGES:
            page = factory(self)
            self.pages[key] = page
            self.stack.addWidget(page)
            self.sidebar.buttons[key].clicked.connect(lambda _c=False, k=key: self.show_page(k))
        self.model_page = self.pages["model"]
        self.data_page = self.pages["data"]
        self.train_page = self.pages["train"]
        self.runs_page = self.pages["runs"]
        self.chat_page = self.pages["chat"]
        self.queue_page = self.pages["queue"]
        self._build_menus()

        self.model_page.model_changed.connect(self.data_page.set_model)
        self.model_page.model_changed.connect(self._update_footer)
        self.train_page.run_ended.connect(lambda _run_dir: self.runs_page.refresh())
        self.train_page.run_started.connect(lambda _run_dir: self.runs_page.refresh())
        self.train_page.queued.connect(lambda _job: self.queue_page.refresh())
        self.queue_page.run_started.connect(lambda _run_dir: self.runs_page.refresh())
        self.queue_page.run_ended.connect(lambda _run_dir: self.runs_page.refresh())
        self.runs_page.resume_requested.connect(self._resume_run)
        self.runs_page.chat_requested.connect(self._chat_with)
        self.runs_page.clone_requested.connect(self._clone_run)
        self.runs_page.compare_requested.connect(self._compare_runs)
        self.train_page.next_step.connect(self._next_step)
        self._build_status_bar()

        self.show_page("model")
        self.model_page.set_model_path(str(model_path or paths.default_model_dir()))
        self.data_page.set_data_path(str(data_path or paths.demo_data_path()))

    def _build_menus(self) -> None:
        file_menu = self.menuBar().addMenu("&File")
        load = QAction("Load recipe…", self)
        load.triggered.connect(lambda: (self.show_page("train"), self.train_page._load_recipe_dialog()))
        save = QAction("Save recipe…", self)
        save.triggered.connect(lambda: (self.show_page("train"), self.train_page._save_recipe_dialog()))
        quit_action = QAction("Quit", self)
        quit_action.setShortcut("Ctrl+Q")
        quit_action.triggered.connect(self.close)
        for action in (load, save):
            file_menu.addAction(action)
        file_menu.addSeparator()
        file_menu.addAction(quit_action)
        go_menu = self.menuBar().addMenu("&Go")
        for index, (key, title, _icon, _factory) in enumerate(PAGES):
            action = QAction(title, self)
            if index < 9:
                action.setShortcut(f"Ctrl+{index + 1}")
            action.triggered.connect(lambda _c=False, k=key: self.show_page(k))
            go_menu.addAction(action)
        self.tool_actions: dict[str, QAction] = {}
        if TOOLS:
            tools_menu = self.menuBar().addMenu("&Tools")
            for text, icon_name, callback in TOOLS:
                action = QAction(theme.icon(icon_name, theme.TEXT), text, self)
                action.triggered.connect(lambda _c=False, cb=callback: cb(self))
                tools_menu.addAction(action)
                self.tool_actions[text] = action
                self.sidebar.tool_buttons[text].clicked.connect(action.trigger)
        self._build_view_menu()
        self._build_help_menu()

    def _build_view_menu(self) -> None:
        """View → Theme: follow the desktop (system), or force light or dark; remembered."""
        from PySide6.QtGui import QActionGroup

        menu = self.menuBar().addMenu("&View").addMenu("Theme")
        group = QActionGroup(self)
        group.setExclusive(True)
        saved = theme.saved_mode()
        self.theme_actions: dict[str, QAction] = {}
        for mode, text in (("system", "Follow the desktop"), ("light", "Light"), ("dark", "Dark")):
            action = QAction(text, self, checkable=True)
            action.setChecked(mode == saved)
            action.triggered.connect(lambda _c=False, m=mode: self.set_theme(m))
            group.addAction(action)
            menu.addAction(action)
            self.theme_actions[mode] = action

    def set_theme(self, mode: str) -> str:
        """Apply and remember a theme choice (system, light, dark); returns the palette used."""
        self.theme_actions[mode].setChecked(True)
        return theme.set_mode(QApplication.instance(), mode)

    # ---- status bar: the model (and quantisation), the data file, the running job ------------------
    def _build_status_bar(self) -> None:
        bar = self.statusBar()
        self.status_model = QLabel("")
        self.status_data = QLabel("")
        self.status_job = QLabel("")
        for label in (self.status_model, self.status_data, self.status_job):
            label.setObjectName("StatusText")
            bar.addWidget(label)
        self.model_page.model_changed.connect(lambda _i: self._update_status())
        self.model_page.quantization_changed.connect(lambda _q: self._update_status())
        self.data_page.settings_changed.connect(self._update_status)
        self.train_page.run_started.connect(lambda _r: self._update_status())
        self.train_page.run_ended.connect(lambda _r: self._update_status())
        self._status_timer = QTimer(self, interval=1000)
        self._status_timer.timeout.connect(self._update_status)
        self._status_timer.start()
        self._update_status()

    def _update_status(self) -> None:
        info = self.model_page.info
        quant = self.model_page.quantization()
        model = Path(info.path).name if info is not None else "no model"
        self.status_model.setText(f"Model: {model}" + (f" ({quant})" if quant else ""))
        data = self.data_page.picker.path()
        self.status_data.setText(f"   Data: {Path(data).name if data else 'none'}")
        page = self.train_page
        if page.is_running() and page.run_dir is not None:
            total = page.total_steps or "?"
            self.status_job.setText(f"   Training {page.run_dir.name}: step {page.step}/{total} ({page.state})")
        elif self.queue_page.is_running():
            self.status_job.setText(f"   Queue: {self.queue_page.state_line.text()}")
        else:
            self.status_job.setText("")

    def _next_step(self, action: str, adapter_dir: str) -> None:
        """The buttons a finished run offers: chat with it, evaluate it, see it in Runs."""
        if action == "chat":
            self._chat_with(adapter_dir)
        elif action == "evaluate":
            from studio.ui import eval_dialog

            eval_dialog.open_dialog(self, adapter_dir=adapter_dir)
        elif action == "export" and self.train_page.run_dir is not None:
            from studio.ui.export_dialog import ExportDialog

            self.export_dialog = ExportDialog(self, source=str(self.train_page.run_dir))
            self.export_dialog.show()
        elif action == "runs":
            self.show_page("runs")
            if self.train_page.run_dir is not None:
                self.runs_page.select_run(self.train_page.run_dir)

    # ---- help --------------------------------------------------------------------------------
    def _build_help_menu(self) -> None:
        menu = self.menuBar().addMenu("&Help")
        shortcuts = QAction("Keyboard shortcuts", self)
        shortcuts.setShortcut("F1")
        shortcuts.triggered.connect(lambda: self._show_text("Keyboard shortcuts", shortcuts_text()))
        menu.addAction(shortcuts)
        docs = menu.addMenu("Documentation")
        for title, path in shipped_docs():
            action = QAction(title, self)
            action.triggered.connect(lambda _c=False, p=path: QDesktopServices.openUrl(QUrl.fromLocalFile(str(p))))
            docs.addAction(action)
        menu.addSeparator()
        about = QAction("About PEFT Studio", self)
        about.triggered.connect(lambda: self._show_text("About PEFT Studio", about_text()))
        menu.addAction(about)
        self.help_menu = menu

    def _show_text(self, title: str, text: str) -> None:
        from PySide6.QtWidgets import QMessageBox

        box = QMessageBox(QMessageBox.Icon.NoIcon, title, text, QMessageBox.StandardButton.Close, self)
        box.setTextFormat(Qt.TextFormat.RichText)
        box.setTextInteractionFlags(Qt.TextInteractionFlag.TextBrowserInteraction)
        self.last_help_box = box
        box.open()

    def show_page(self, key: str) -> None:
        page = self.pages[key]
        self.stack.setCurrentWidget(page)
        self.sidebar.buttons[key].setChecked(True)
        on_show = getattr(page, "on_show", None)     # a page may refresh itself when shown
        if callable(on_show):
            on_show()

    def _update_footer(self, info) -> None:
        if info is None:
            self.sidebar.footer.setText("No model selected")
        else:
            self.sidebar.footer.setText(f"Model: {Path(info.path).name}")

    def _resume_run(self, run_dir: str) -> None:
        self.show_page("train")
        self.train_page.resume_run(run_dir)

    def _compare_runs(self, run_dirs: list) -> None:
        self.show_page("compare")
        self.pages["compare"].add_paths(run_dirs)

    def _clone_run(self, run_dir: str) -> None:
        self.show_page("train")
        self.train_page.clone_run(run_dir)

    def _chat_with(self, adapter_dir: str) -> None:
        self.show_page("chat")
        self.chat_page.set_adapter(adapter_dir)

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt override
        if self.train_page.is_running() or self.queue_page.is_running():
            from PySide6.QtWidgets import QMessageBox

            answer = QMessageBox.question(
                self, "Training is running",
                "A training run is still going. Cancel it (a checkpoint is saved; a queued job "
                "is kept as interrupted, to resume later) and close?")
            if answer != QMessageBox.StandardButton.Yes:
                event.ignore()
                return
            self.train_page.shutdown()
        self.queue_page.shutdown()
        event.accept()


def create_app(argv: list[str] | None = None) -> QApplication:
    app = QApplication.instance() or QApplication(list(argv or sys.argv[:1]))
    app.setApplicationName("PEFT Studio")
    app.setOrganizationName("peft-studio")
    theme.apply(app)                    # the saved choice: system (follows the desktop), light, dark
    theme.follow_system(app)
    widgets.guard_wheel(app)            # spin/combo boxes take the wheel only when focused
    return app


def check_display(env=None, platform: str | None = None) -> None:
    """UserError when the window cannot open because there is no display at all (an SSH session,
    a server, a container). Qt's own message then blames a missing xcb library, which misleads."""
    env = os.environ if env is None else env
    platform = sys.platform if platform is None else platform
    if not platform.startswith("linux") or env.get("QT_QPA_PLATFORM"):
        return
    if env.get("DISPLAY") or env.get("WAYLAND_DISPLAY"):
        return
    raise UserError("no display: the PEFT Studio window needs a desktop session (DISPLAY and "
                    "WAYLAND_DISPLAY are both unset).",
                    fix="run it on your desktop; on a server use the CLI (`peft-studio --help`), "
                        "`xvfb-run peft-studio` for a virtual screen, or QT_QPA_PLATFORM=offscreen "
                        "to render without showing anything.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="peft-studio-gui", description="The PEFT Studio window.")
    parser.add_argument("--model", help="model folder (default: the bundled SmolLM2-135M-Instruct)")
    parser.add_argument("--data", help="training data file (default: the demo dates dataset)")
    args, qt_args = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    check_display()
    app = create_app([sys.argv[0], *qt_args])
    window = MainWindow(args.model, args.data)
    window.show()
    code = app.exec()
    tasks.wait_all(5000)
    return code


if __name__ == "__main__":
    sys.exit(main())
