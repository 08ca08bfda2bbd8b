"""The look of PEFT Studio: a dark and a light palette, one stylesheet, tinted SVG icons, pyqtgraph
defaults. The theme follows the desktop's colour scheme (QStyleHints.colorScheme) at start and when
it changes, unless View → Theme forces light or dark (remembered in settings.ini). Widgets that
paint with palette colours themselves (charts, HTML views) define `on_theme_changed(palette)`,
which apply() calls on every widget when the palette changes."""

from __future__ import annotations

from functools import lru_cache

from PySide6.QtCore import QByteArray, QRectF, Qt
from PySide6.QtGui import QColor, QFont, QFontDatabase, QIcon, QPainter, QPalette, QPixmap
from PySide6.QtSvg import QSvgRenderer
from PySide6.QtWidgets import QApplication

from studio import paths

# Palettes ------------------------------------------------------------------------------------
# Two palettes with the same keys; the module-level names below (BG, TEXT, SERIES, ...) are the
# current one's, so pages read `theme.MUTED` and get the colour of the theme in force. Text colours
# keep a contrast ratio of at least 4.5 on the surfaces they sit on (tests/test_theme.py checks).
DARK = {
    "BG": "#0f1218", "SIDEBAR": "#0a0c11", "SURFACE": "#161a22", "SURFACE_2": "#1c212b",
    "SURFACE_3": "#242a36", "BORDER": "#272d39", "BORDER_STRONG": "#343b4a", "TEXT": "#e6e9ef",
    "MUTED": "#9aa3b4", "FAINT": "#8a93a5", "ACCENT": "#6a5ae8", "ACCENT_HOVER": "#8f81f6",
    "ACCENT_SOFT": "#2a2550", "ACCENT_TEXT": "#c9c1ff", "SUCCESS": "#34d399", "WARNING": "#fbbf24",
    "DANGER": "#f87171", "INFO": "#60a5fa",
    "HOVER": "#2c3341", "HOVER_BORDER": "#414a5c", "PRESSED": "#222834", "ALT_ROW": "#181c25",
    "SCROLL_HOVER": "#3a4252", "ERROR_BG": "#2a1618", "ERROR_BORDER": "#5b2a2e",
    "OK_BG": "#123326", "WARN_BG": "#3a2e10", "DANGER_HOVER": "#3a1d20",
    "DANGER_HOVER_BORDER": "#6b3035", "PRIMARY_OFF": "#3a3566", "PRIMARY_OFF_TEXT": "#8d87b8",
    "GRADIENT_END": "#3fb5f0", "TRAINED_BG": "#173b30", "TRAINED_TEXT": "#d1fae5",
    "LEGEND_BG": (22, 26, 34, 200),
    "SERIES": {"loss": "#60a5fa", "eval_loss": "#f59e0b", "lr": "#34d399", "grad_norm": "#f472b6",
               "tokens_per_s": "#22d3ee", "trained_tokens_per_s": "#fb923c", "memory_mb": "#a78bfa"},
}
LIGHT = {
    "BG": "#f4f5f8", "SIDEBAR": "#e9ebf0", "SURFACE": "#ffffff", "SURFACE_2": "#f6f7f9",
    "SURFACE_3": "#e8eaf0", "BORDER": "#dde1e8", "BORDER_STRONG": "#c3c9d4", "TEXT": "#161a22",
    "MUTED": "#4d5667", "FAINT": "#5f6879", "ACCENT": "#5b4bdb", "ACCENT_HOVER": "#4a3bc4",
    "ACCENT_SOFT": "#e7e3ff", "ACCENT_TEXT": "#3b2db0", "SUCCESS": "#047857", "WARNING": "#95560a",
    "DANGER": "#b42323", "INFO": "#1d5fc7",
    "HOVER": "#dde1e9", "HOVER_BORDER": "#aab2c0", "PRESSED": "#d3d8e1", "ALT_ROW": "#f7f8fa",
    "SCROLL_HOVER": "#b8bfcb", "ERROR_BG": "#fdeeee", "ERROR_BORDER": "#f1b9b9",
    "OK_BG": "#e3f6ee", "WARN_BG": "#fbf0dc", "DANGER_HOVER": "#fbe3e3",
    "DANGER_HOVER_BORDER": "#e9a5a5", "PRIMARY_OFF": "#c9c3f0", "PRIMARY_OFF_TEXT": "#4f4a78",
    "GRADIENT_END": "#1f8fcf", "TRAINED_BG": "#d5f5e6", "TRAINED_TEXT": "#064e3b",
    "LEGEND_BG": (255, 255, 255, 215),
    "SERIES": {"loss": "#1f67c8", "eval_loss": "#b45309", "lr": "#047857", "grad_norm": "#be185d",
               "tokens_per_s": "#0e7490", "trained_tokens_per_s": "#c2410c", "memory_mb": "#6d28d9"},
}
PALETTES = {"dark": DARK, "light": LIGHT}
MODES = ("system", "light", "dark")     # what the user picks (View → Theme); remembered
SETTINGS_KEY = "view/theme"

BG = SIDEBAR = SURFACE = SURFACE_2 = SURFACE_3 = BORDER = BORDER_STRONG = TEXT = MUTED = FAINT = ""
ACCENT = ACCENT_HOVER = ACCENT_SOFT = ACCENT_TEXT = SUCCESS = WARNING = DANGER = INFO = ""
HOVER = HOVER_BORDER = PRESSED = ALT_ROW = SCROLL_HOVER = ERROR_BG = ERROR_BORDER = OK_BG = ""
WARN_BG = DANGER_HOVER = DANGER_HOVER_BORDER = PRIMARY_OFF = PRIMARY_OFF_TEXT = GRADIENT_END = ""
TRAINED_BG = TRAINED_TEXT = ""
LEGEND_BG: tuple = ()
SERIES: dict[str, str] = {}              # one colour per curve, used by the Train and Runs pages
STATUS_COLORS: dict[str, str] = {}
current = "dark"                         # the palette in force: "dark" | "light"


def _use(palette_name: str) -> None:
    """Make `palette_name` the current palette: the module's colour names point at it."""
    global current
    palette = PALETTES[palette_name]
    for key, value in palette.items():
        if key not in ("SERIES",):
            globals()[key] = value
    SERIES.clear()
    SERIES.update(palette["SERIES"])
    STATUS_COLORS.clear()
    STATUS_COLORS.update({"running": palette["INFO"], "starting": palette["INFO"],
                          "paused": palette["WARNING"], "finished": palette["SUCCESS"],
                          "cancelled": palette["MUTED"], "failed": palette["DANGER"],
                          "idle": palette["MUTED"]})
    current = palette_name


_use("dark")

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


def icon(name: str, color: str | None = None, size: int = 40) -> QIcon:
    """An icon from resources/icons/<name>.svg, drawn in `color` (default: the theme's muted
    text colour; the SVGs use currentColor)."""
    return _icon(name, color or MUTED, size)


@lru_cache(maxsize=256)
def _icon(name: str, color: str, size: int) -> QIcon:
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
    """resources/theme/<name>, or its light-palette variant in resources/theme/light/."""
    folder = paths.resources_dir() / "theme"
    if current == "light" and (folder / "light" / name).is_file():
        return (folder / "light" / name).as_posix()
    return (folder / name).as_posix()


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
QLabel[role="error"] {{ color: {DANGER}; background: {ERROR_BG}; border: 1px solid {ERROR_BORDER};
                        border-radius: 8px; padding: 8px 10px; }}
QLabel[role="ok"] {{ color: {SUCCESS}; }}
QLabel[role="info"] {{ color: {MUTED}; background: {SURFACE_2}; border: 1px solid {BORDER};
                       border-radius: 8px; padding: 8px 10px; }}
QLabel[role="badge"] {{ background: {SURFACE_3}; color: {TEXT}; border-radius: 6px;
                        padding: 2px 8px; font-size: 8.5pt; font-weight: 600; }}
QLabel[role="badge-accent"] {{ background: {ACCENT_SOFT}; color: {ACCENT_TEXT}; border-radius: 6px;
                               padding: 2px 8px; font-size: 8.5pt; font-weight: 600; }}
QLabel[role="badge-ok"] {{ background: {OK_BG}; color: {SUCCESS}; border-radius: 6px;
                           padding: 2px 8px; font-size: 8.5pt; font-weight: 600; }}
QLabel[role="badge-warn"] {{ background: {WARN_BG}; color: {WARNING}; border-radius: 6px;
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
QPushButton:hover, QToolButton:hover {{ background: {HOVER}; border-color: {HOVER_BORDER}; }}
QPushButton:pressed {{ background: {PRESSED}; }}
QPushButton:disabled {{ color: {FAINT}; background: {SURFACE}; border-color: {BORDER}; }}
QPushButton[kind="primary"] {{ background: {ACCENT}; border-color: {ACCENT}; color: white; font-weight: 600; }}
QPushButton[kind="primary"]:hover {{ background: {ACCENT_HOVER}; border-color: {ACCENT_HOVER}; }}
QPushButton[kind="primary"]:disabled {{ background: {PRIMARY_OFF}; border-color: {PRIMARY_OFF}; color: {PRIMARY_OFF_TEXT}; }}
QPushButton[kind="danger"] {{ color: {DANGER}; }}
QPushButton[kind="danger"]:hover {{ background: {DANGER_HOVER}; border-color: {DANGER_HOVER_BORDER}; }}
QPushButton[kind="danger"]:disabled {{ color: {FAINT}; background: {SURFACE}; border-color: {BORDER}; }}
QPushButton[kind="ghost"] {{ background: transparent; border-color: transparent; color: {MUTED}; }}
QPushButton[kind="ghost"]:hover {{ color: {TEXT}; background: {SURFACE_2}; }}
QPushButton[kind="segment"] {{ background: {SURFACE_2}; border-radius: 7px; padding: 7px 12px; }}
QPushButton[kind="segment"]:checked {{ background: {ACCENT_SOFT}; border-color: {ACCENT}; color: {TEXT}; }}

/* progress */
QProgressBar {{ background: {SURFACE_2}; border: none; border-radius: 5px; height: 10px;
                text-align: center; color: transparent; }}
QProgressBar::chunk {{ background: qlineargradient(x1:0, y1:0, x2:1, y2:0, stop:0 {ACCENT}, stop:1 {GRADIENT_END});
                       border-radius: 5px; }}

/* tables */
QTableWidget, QTableView, QListWidget {{ background: {SURFACE}; border: none; border-radius: 10px;
    gridline-color: transparent; alternate-background-color: {ALT_ROW}; selection-background-color: {ACCENT_SOFT};
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
QScrollBar::handle:vertical:hover {{ background: {SCROLL_HOVER}; }}
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


_system_scheme = {"value": None}   # the desktop's last reported scheme (Qt.ColorScheme)


def saved_mode() -> str:
    """The user's choice (View → Theme): system (the default), light or dark."""
    from studio.ui.settings import ui_settings

    value = str(ui_settings().value(SETTINGS_KEY, "system") or "system")
    return value if value in MODES else "system"


def save_mode(mode: str) -> None:
    from studio.ui.settings import ui_settings

    if mode not in MODES:
        raise ValueError(f"unknown theme {mode!r} (expected one of {', '.join(MODES)})")
    ui_settings().setValue(SETTINGS_KEY, mode)


def system_scheme(app: QApplication | None = None):
    """The desktop's colour scheme as Qt reports it (or as its last change signal said)."""
    if _system_scheme["value"] is not None:
        return _system_scheme["value"]
    app = app or QApplication.instance()
    return app.styleHints().colorScheme() if app is not None else Qt.ColorScheme.Unknown


def palette_for(mode: str, scheme) -> str:
    """Which palette a mode gives: light/dark as chosen; system follows the desktop (a desktop that
    says nothing keeps the dark look the studio always had)."""
    if mode in ("light", "dark"):
        return mode
    return "light" if scheme == Qt.ColorScheme.Light else "dark"


def apply(app: QApplication, mode: str | None = None) -> str:
    """Install font, palette and stylesheet on the application, and pyqtgraph defaults, for `mode`
    (default: the saved choice). Returns the palette used; when it changed, icons are re-tinted and
    every widget's on_theme_changed(palette) is called."""
    mode = mode or saved_mode()
    wanted = palette_for(mode, system_scheme(app))
    before = current
    _use(wanted)
    if not app.property("studio_styled"):
        # once per application: setStyle with widgets alive replaces the style object under
        # the widgets' own style sheets (a crash later); the palette and sheet are enough after
        app.setStyle("Fusion")
        app.setProperty("studio_styled", True)
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
    if wanted != before:
        retint_icons(app)
        for widget in app.allWidgets():        # charts and HTML views paint with palette colours
            hook = getattr(widget, "on_theme_changed", None)
            if callable(hook):
                hook(wanted)
    return wanted


def follow_system(app: QApplication) -> None:
    """Re-apply the theme when the desktop switches between light and dark (while the choice is
    'system'). Connected once per application."""
    if getattr(app, "_studio_follows_scheme", False):
        return
    app._studio_follows_scheme = True

    def changed(scheme) -> None:
        _system_scheme["value"] = scheme
        if saved_mode() == "system":
            apply(app)

    app.styleHints().colorSchemeChanged.connect(changed)


def set_mode(app: QApplication, mode: str) -> str:
    """View → Theme: remember the choice and apply it now."""
    save_mode(mode)
    return apply(app, mode)


def retint_icons(app: QApplication) -> None:
    """Icons drawn in the old palette's colours, drawn again: every button made by
    widgets.button() (its `icon_name` and `kind` properties) and the sidebar's."""
    from PySide6.QtWidgets import QAbstractButton

    for widget in app.allWidgets():
        if not isinstance(widget, QAbstractButton):
            continue
        icon_name = widget.property("icon_name")
        if not icon_name:
            continue
        widget.setIcon(icon(icon_name, icon_color(widget.property("kind"), widget.property("icon_role"))))


def icon_color(kind: str | None = None, role: str | None = None) -> str:
    """The colour of a button's icon: white on a primary button, red on a danger one, the text
    colour otherwise; role "nav" (sidebar) is muted, "nav-on" the accent."""
    if role == "nav":
        return MUTED
    if role == "nav-on":
        return ACCENT_HOVER
    return "#ffffff" if kind == "primary" else (DANGER if kind == "danger" else TEXT)


def configure_pyqtgraph() -> None:
    import pyqtgraph as pg

    pg.setConfigOptions(antialias=True, background=SURFACE, foreground=MUTED)


def style_plot(plot, axis_label_color: str | None = None) -> None:
    """A pyqtgraph PlotWidget in the current palette: background, axes, tick text, legend. Pages
    call it when they build a plot and again in on_theme_changed."""
    import pyqtgraph as pg

    plot.setBackground(SURFACE)
    item = plot.getPlotItem()
    for side in ("left", "bottom"):
        axis = item.getAxis(side)
        axis.setPen(pg.mkPen(BORDER_STRONG))
        axis.setTextPen(pg.mkPen(FAINT))
        if axis.label is not None and axis.labelText:
            axis.setLabel(axis.labelText, units=axis.labelUnits or None,
                          color=axis_label_color or FAINT)
    legend = item.legend
    if legend is not None:
        legend.setLabelTextColor(MUTED)
        legend.setBrush(pg.mkBrush(*LEGEND_BG))
    if item.titleLabel is not None and item.titleLabel.text:
        item.titleLabel.setText(item.titleLabel.text, color=MUTED)


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
