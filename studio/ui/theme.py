"""The look of PEFT Studio: one dark palette, one stylesheet, tinted SVG icons, pyqtgraph defaults."""

from __future__ import annotations

from functools import lru_cache

from PySide6.QtCore import QByteArray, QRectF, Qt
from PySide6.QtGui import QColor, QFont, QFontDatabase, QIcon, QPainter, QPalette, QPixmap
from PySide6.QtSvg import QSvgRenderer
from PySide6.QtWidgets import QApplication

from studio import paths

# Palette -------------------------------------------------------------------------------------
BG = "#0f1218"
SIDEBAR = "#0a0c11"
SURFACE = "#161a22"
SURFACE_2 = "#1c212b"
SURFACE_3 = "#242a36"
BORDER = "#272d39"
BORDER_STRONG = "#343b4a"
TEXT = "#e6e9ef"
MUTED = "#8e97a8"
FAINT = "#5d6677"
ACCENT = "#7c6cf2"
ACCENT_HOVER = "#8f81f6"
ACCENT_SOFT = "#2a2550"
SUCCESS = "#34d399"
WARNING = "#fbbf24"
DANGER = "#f87171"
INFO = "#60a5fa"

# One colour per curve, used by the Train and Runs pages alike.
SERIES = {
    "loss": "#60a5fa",
    "eval_loss": "#f59e0b",
    "lr": "#34d399",
    "grad_norm": "#f472b6",
    "tokens_per_s": "#22d3ee",
    "trained_tokens_per_s": "#fb923c",
    "memory_mb": "#a78bfa",
}

STATUS_COLORS = {
    "running": INFO,
    "starting": INFO,
    "paused": WARNING,
    "finished": SUCCESS,
    "cancelled": MUTED,
    "failed": DANGER,
    "idle": MUTED,
}

_FONT_CHOICES = ("Inter", "Segoe UI", "SF Pro Text", "Cantarell", "Noto Sans", "Ubuntu", "DejaVu Sans")
_MONO_CHOICES = ("JetBrains Mono", "Cascadia Mono", "SF Mono", "Consolas", "Noto Sans Mono",
                 "Ubuntu Mono", "DejaVu Sans Mono")


def _pick(choices: tuple[str, ...]) -> str:
    available = set(QFontDatabase.families())
    for name in choices:
        if name in available:
            return name
    return choices[-1]


def ui_font_family() -> str:
    return _pick(_FONT_CHOICES)


def mono_font_family() -> str:
    return _pick(_MONO_CHOICES)


def mono_font(point_size: float = 9.5) -> QFont:
    font = QFont(mono_font_family())
    font.setPointSizeF(point_size)
    font.setStyleHint(QFont.StyleHint.Monospace)
    return font


@lru_cache(maxsize=256)
def icon(name: str, color: str = MUTED, size: int = 40) -> QIcon:
    """An icon from resources/icons/<name>.svg, drawn in `color` (the SVGs use currentColor)."""
    path = paths.resources_dir() / "icons" / f"{name}.svg"
    if not path.is_file():
        return QIcon()              # a page or action without its own icon still shows its text
    svg = path.read_text(encoding="utf-8").replace("currentColor", color)
    renderer = QSvgRenderer(QByteArray(svg.encode("utf-8")))
    pixmap = QPixmap(size, size)
    pixmap.fill(Qt.GlobalColor.transparent)
    painter = QPainter(pixmap)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    renderer.render(painter, QRectF(0, 0, size, size))
    painter.end()
    return QIcon(pixmap)


def _theme_file(name: str) -> str:
    return (paths.resources_dir() / "theme" / name).as_posix()


def stylesheet() -> str:
    down, up = _theme_file("arrow-down.svg"), _theme_file("arrow-up.svg")
    down_off, up_off = _theme_file("arrow-down-disabled.svg"), _theme_file("arrow-up-disabled.svg")
    check, dot = _theme_file("check.svg"), _theme_file("radio-dot.svg")
    return f"""
* {{ outline: none; }}
QWidget {{ background: {BG}; color: {TEXT}; }}
QLabel, QCheckBox, QRadioButton {{ background: transparent; }}
QMainWindow, QDialog {{ background: {BG}; }}
QToolTip {{ background: {SURFACE_3}; color: {TEXT}; border: 1px solid {BORDER_STRONG};
            padding: 6px 8px; border-radius: 6px; }}

/* sidebar */
#Sidebar {{ background: {SIDEBAR}; border-right: 1px solid {BORDER}; }}
#Sidebar QLabel {{ background: transparent; }}
#AppName {{ font-size: 12.5pt; font-weight: 700; color: {TEXT}; }}
#AppVersion {{ color: {FAINT}; font-size: 8.5pt; }}
#NavButton {{ background: transparent; border: none; border-radius: 8px; color: {MUTED};
              text-align: left; padding: 9px 12px; font-size: 10.5pt; font-weight: 500; }}
#NavButton:hover {{ background: {SURFACE}; color: {TEXT}; }}
#NavButton:checked {{ background: {ACCENT_SOFT}; color: {TEXT}; font-weight: 600; }}
#SidebarFooter {{ color: {FAINT}; font-size: 8.5pt; }}
#SidebarCaption {{ color: {FAINT}; font-size: 8pt; font-weight: 600; letter-spacing: 1px; padding-left: 12px; }}

/* page header */
#PageTitle {{ font-size: 17pt; font-weight: 700; background: transparent; }}
#PageSubtitle {{ color: {MUTED}; font-size: 10pt; background: transparent; }}

/* cards */
#Card {{ background: {SURFACE}; border: 1px solid {BORDER}; border-radius: 12px; }}
#Card QWidget#CardBody {{ background: transparent; }}
#CardTitle {{ font-size: 11pt; font-weight: 650; background: transparent; }}
#CardHint {{ color: {MUTED}; background: transparent; }}
#Transparent {{ background: transparent; }}
QScrollArea#PageScroll, QScrollArea#PageScroll > QWidget > QWidget {{ background: transparent; border: none; }}

/* text roles */
QLabel[role="muted"] {{ color: {MUTED}; }}
QLabel[role="faint"] {{ color: {FAINT}; font-size: 9pt; }}
QLabel[role="key"] {{ color: {MUTED}; font-size: 9pt; }}
QLabel[role="value"] {{ font-size: 12pt; font-weight: 600; }}
QLabel[role="error"] {{ color: {DANGER}; background: #2a1618; border: 1px solid #5b2a2e;
                        border-radius: 8px; padding: 8px 10px; }}
QLabel[role="ok"] {{ color: {SUCCESS}; }}
QLabel[role="info"] {{ color: {MUTED}; background: {SURFACE_2}; border: 1px solid {BORDER};
                       border-radius: 8px; padding: 8px 10px; }}
QLabel[role="badge"] {{ background: {SURFACE_3}; color: {TEXT}; border-radius: 6px;
                        padding: 2px 8px; font-size: 8.5pt; font-weight: 600; }}
QLabel[role="badge-accent"] {{ background: {ACCENT_SOFT}; color: #c9c1ff; border-radius: 6px;
                               padding: 2px 8px; font-size: 8.5pt; font-weight: 600; }}
QLabel[role="badge-ok"] {{ background: #123326; color: {SUCCESS}; border-radius: 6px;
                           padding: 2px 8px; font-size: 8.5pt; font-weight: 600; }}
QLabel[role="badge-warn"] {{ background: #3a2e10; color: {WARNING}; border-radius: 6px;
                             padding: 2px 8px; font-size: 8.5pt; font-weight: 600; }}
QLabel a {{ color: {ACCENT_HOVER}; }}

/* inputs */
QLineEdit, QSpinBox, QDoubleSpinBox, QComboBox, QPlainTextEdit, QTextEdit, QTextBrowser {{
    background: {SURFACE_2}; border: 1px solid {BORDER_STRONG}; border-radius: 7px;
    padding: 4px 8px; selection-background-color: {ACCENT}; selection-color: white; }}
QLineEdit, QSpinBox, QDoubleSpinBox, QComboBox {{ min-height: 22px; }}
QLineEdit:focus, QSpinBox:focus, QDoubleSpinBox:focus, QComboBox:focus,
QPlainTextEdit:focus, QTextEdit:focus {{ border-color: {ACCENT}; }}
QLineEdit[invalid="true"], QSpinBox[invalid="true"], QDoubleSpinBox[invalid="true"],
QComboBox[invalid="true"] {{ border-color: {DANGER}; }}
QLineEdit:disabled, QSpinBox:disabled, QDoubleSpinBox:disabled, QComboBox:disabled {{
    color: {FAINT}; background: {SURFACE}; }}
QSpinBox, QDoubleSpinBox {{ padding-right: 22px; }}
QSpinBox::up-button, QDoubleSpinBox::up-button {{ subcontrol-origin: border;
    subcontrol-position: top right; width: 20px; border: none; border-left: 1px solid {BORDER_STRONG};
    border-top-right-radius: 7px; background: transparent; }}
QSpinBox::down-button, QDoubleSpinBox::down-button {{ subcontrol-origin: border;
    subcontrol-position: bottom right; width: 20px; border: none; border-left: 1px solid {BORDER_STRONG};
    border-bottom-right-radius: 7px; background: transparent; }}
QSpinBox::up-button:hover, QDoubleSpinBox::up-button:hover,
QSpinBox::down-button:hover, QDoubleSpinBox::down-button:hover {{ background: {SURFACE_3}; }}
QSpinBox::up-arrow, QDoubleSpinBox::up-arrow {{ image: url({up}); width: 10px; height: 10px; }}
QSpinBox::down-arrow, QDoubleSpinBox::down-arrow {{ image: url({down}); width: 10px; height: 10px; }}
QSpinBox::up-arrow:disabled, QDoubleSpinBox::up-arrow:disabled {{ image: url({up_off}); }}
QSpinBox::down-arrow:disabled, QDoubleSpinBox::down-arrow:disabled {{ image: url({down_off}); }}
QComboBox {{ padding-right: 26px; }}
QComboBox::drop-down {{ border: none; width: 26px; }}
QComboBox::down-arrow {{ image: url({down}); width: 12px; height: 12px; }}
QComboBox::down-arrow:disabled {{ image: url({down_off}); }}
QComboBox QAbstractItemView {{ background: {SURFACE_2}; border: 1px solid {BORDER_STRONG};
    selection-background-color: {ACCENT_SOFT}; selection-color: {TEXT}; padding: 4px; outline: none; }}

QCheckBox, QRadioButton {{ spacing: 8px; background: transparent; }}
QCheckBox::indicator, QRadioButton::indicator {{ width: 16px; height: 16px;
    border: 1px solid {BORDER_STRONG}; background: {SURFACE_2}; }}
QCheckBox::indicator {{ border-radius: 4px; }}
QRadioButton::indicator {{ border-radius: 9px; }}
QCheckBox::indicator:hover, QRadioButton::indicator:hover {{ border-color: {ACCENT}; }}
QCheckBox::indicator:checked {{ background: {ACCENT}; border-color: {ACCENT}; image: url({check}); }}
QRadioButton::indicator:checked {{ background: {ACCENT}; border-color: {ACCENT}; image: url({dot}); }}

/* buttons */
QPushButton, QToolButton {{ background: {SURFACE_3}; border: 1px solid {BORDER_STRONG};
    border-radius: 7px; padding: 6px 14px; color: {TEXT}; font-weight: 500; }}
QPushButton:hover, QToolButton:hover {{ background: #2c3341; border-color: #414a5c; }}
QPushButton:pressed {{ background: #222834; }}
QPushButton:disabled {{ color: {FAINT}; background: {SURFACE}; border-color: {BORDER}; }}
QPushButton[kind="primary"] {{ background: {ACCENT}; border-color: {ACCENT}; color: white; font-weight: 600; }}
QPushButton[kind="primary"]:hover {{ background: {ACCENT_HOVER}; border-color: {ACCENT_HOVER}; }}
QPushButton[kind="primary"]:disabled {{ background: #3a3566; border-color: #3a3566; color: #8d87b8; }}
QPushButton[kind="danger"] {{ color: {DANGER}; }}
QPushButton[kind="danger"]:hover {{ background: #3a1d20; border-color: #6b3035; }}
QPushButton[kind="ghost"] {{ background: transparent; border-color: transparent; color: {MUTED}; }}
QPushButton[kind="ghost"]:hover {{ color: {TEXT}; background: {SURFACE_2}; }}
QPushButton[kind="segment"] {{ background: {SURFACE_2}; border-radius: 7px; padding: 7px 12px; }}
QPushButton[kind="segment"]:checked {{ background: {ACCENT_SOFT}; border-color: {ACCENT}; color: {TEXT}; }}

/* progress */
QProgressBar {{ background: {SURFACE_2}; border: none; border-radius: 5px; height: 10px;
                text-align: center; color: transparent; }}
QProgressBar::chunk {{ background: qlineargradient(x1:0, y1:0, x2:1, y2:0, stop:0 {ACCENT}, stop:1 #3fb5f0);
                       border-radius: 5px; }}

/* tables */
QTableWidget, QTableView, QListWidget {{ background: {SURFACE}; border: none; border-radius: 10px;
    gridline-color: transparent; alternate-background-color: #181c25; selection-background-color: {ACCENT_SOFT};
    selection-color: {TEXT}; }}
QTableWidget::item, QTableView::item {{ padding: 6px 8px; border-bottom: 1px solid {BORDER}; }}
QListWidget::item {{ padding: 6px 8px; border-radius: 6px; }}
QListWidget::item:selected {{ background: {ACCENT_SOFT}; }}
QHeaderView {{ background: transparent; }}
QHeaderView::section {{ background: {SURFACE}; color: {MUTED}; border: none;
    border-bottom: 1px solid {BORDER_STRONG}; padding: 8px 8px; font-weight: 600; font-size: 9pt; }}
QTableCornerButton::section {{ background: {SURFACE}; border: none; }}

/* scrollbars */
QScrollBar:vertical {{ background: transparent; width: 10px; margin: 2px; }}
QScrollBar::handle:vertical {{ background: {SURFACE_3}; border-radius: 4px; min-height: 30px; }}
QScrollBar::handle:vertical:hover {{ background: #3a4252; }}
QScrollBar:horizontal {{ background: transparent; height: 10px; margin: 2px; }}
QScrollBar::handle:horizontal {{ background: {SURFACE_3}; border-radius: 4px; min-width: 30px; }}
QScrollBar::add-line, QScrollBar::sub-line {{ width: 0; height: 0; }}
QScrollBar::add-page, QScrollBar::sub-page {{ background: transparent; }}

QSplitter::handle {{ background: transparent; }}
QMessageBox {{ background: {SURFACE}; }}
QMessageBox QLabel {{ background: transparent; }}
QMenuBar {{ background: {SIDEBAR}; color: {MUTED}; border-bottom: 1px solid {BORDER}; padding: 2px 6px; }}
QMenuBar::item {{ background: transparent; padding: 4px 10px; border-radius: 5px; }}
QMenuBar::item:selected {{ background: {SURFACE_2}; color: {TEXT}; }}
QMenu {{ background: {SURFACE_2}; border: 1px solid {BORDER_STRONG}; padding: 4px; }}
QMenu::item {{ padding: 6px 18px; border-radius: 5px; }}
QMenu::item:selected {{ background: {ACCENT_SOFT}; }}
"""


def apply(app: QApplication) -> None:
    """Install font, palette and stylesheet on the application, and pyqtgraph defaults."""
    app.setStyle("Fusion")
    font = QFont(ui_font_family())
    font.setPointSizeF(10)
    app.setFont(font)
    palette = QPalette()
    for role, color in (
        (QPalette.ColorRole.Window, BG), (QPalette.ColorRole.Base, SURFACE_2),
        (QPalette.ColorRole.AlternateBase, SURFACE), (QPalette.ColorRole.Text, TEXT),
        (QPalette.ColorRole.WindowText, TEXT), (QPalette.ColorRole.Button, SURFACE_3),
        (QPalette.ColorRole.ButtonText, TEXT), (QPalette.ColorRole.Highlight, ACCENT),
        (QPalette.ColorRole.HighlightedText, "#ffffff"), (QPalette.ColorRole.ToolTipBase, SURFACE_3),
        (QPalette.ColorRole.ToolTipText, TEXT), (QPalette.ColorRole.PlaceholderText, FAINT),
        (QPalette.ColorRole.Link, ACCENT_HOVER),
    ):
        palette.setColor(role, QColor(color))
    app.setPalette(palette)
    app.setStyleSheet(stylesheet())
    configure_pyqtgraph()


def configure_pyqtgraph() -> None:
    import pyqtgraph as pg

    pg.setConfigOptions(antialias=True, background=SURFACE, foreground=MUTED)


def fix_spin(spin):
    """Stylesheet padding does not reach a spin box's inner line edit; give its text a margin."""
    spin.lineEdit().setTextMargins(5, 0, 0, 0)
    return spin


def repolish(widget) -> None:
    """Re-apply the stylesheet after a dynamic property (role, invalid, kind) changed."""
    style = widget.style()
    style.unpolish(widget)
    style.polish(widget)
    widget.updateGeometry()
    widget.update()
