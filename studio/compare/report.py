"""One self-contained HTML file comparing adapters: the loss curves, the settings that differ, the
evaluation table with paired CIs and the examples where they disagree, the answers to a prompt,
the weight-norm heat map and the similarity matrix. Plots are inline SVG drawn here (no
matplotlib, no scripts, no external files), so the file opens anywhere and can be mailed.

    html = build_report(sources, weights=analyse(...), evaluation=evaluate_all(...), answers=...)
    write_report(path, html)        # refuses to replace a file the studio did not write

Layer: compare (rank 3). Pure Python.
"""

from __future__ import annotations

import math
from html import escape
from pathlib import Path

from studio.compare.sources import AXES, METRICS, MISSING, assign_colours, curve, settings_diff
from studio.errors import UserError
from studio.fileio import write_text_atomic

GENERATOR = '<meta name="generator" content="peft-studio compare">'
MAX_DISAGREEMENTS = 20


def _fmt(value, spec=".4g") -> str:
    if value is None:
        return MISSING
    if isinstance(value, float):
        return "nan" if math.isnan(value) else format(value, spec)
    return str(value)


def table(headers: list[str], rows: list[list], cls: str = "") -> str:
    head = "".join(f"<th>{escape(str(h))}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{escape(_fmt(c))}</td>" for c in row) + "</tr>"
                   for row in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


# ---- SVG plots -------------------------------------------------------------------------------

def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / n
    step = 10 ** math.floor(math.log10(raw))
    step *= next(m for m in (1, 2, 5, 10) if m * step >= raw)
    first = math.ceil(lo / step) * step
    return [first + k * step for k in range(int((hi - first) / step + 1e-9) + 1)]


def line_chart(series: list[tuple[str, str, list]], title: str, xlabel: str = "step",
               ylabel: str = "loss", width: int = 640, height: int = 300) -> str:
    """An SVG line chart: series = [(name, colour, [(x, y), ...]), ...], with a legend."""
    points = [p for _, _, pts in series for p in pts]
    if not points:
        return f"<p><em>{escape(title)}: no data.</em></p>"
    left, right, top, bottom = 56, 150, 28, 40
    x0, x1 = min(p[0] for p in points), max(p[0] for p in points)
    y0, y1 = min(p[1] for p in points), max(p[1] for p in points)
    x1, y1 = (x1 if x1 > x0 else x0 + 1), (y1 if y1 > y0 else y0 + 1)
    pw, ph = width - left - right, height - top - bottom

    def sx(x):
        return left + (x - x0) / (x1 - x0) * pw

    def sy(y):
        return top + ph - (y - y0) / (y1 - y0) * ph

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'role="img" aria-label="{escape(title)}">',
           f'<text x="{left}" y="18" font-weight="bold">{escape(title)}</text>',
           f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>']
    for t in _ticks(y0, y1):
        out.append(f'<line x1="{left}" x2="{left + pw}" y1="{sy(t):.1f}" y2="{sy(t):.1f}" '
                   f'stroke="#eee"/><text x="{left - 4}" y="{sy(t) + 4:.1f}" text-anchor="end" '
                   f'font-size="11">{t:.4g}</text>')
    for t in _ticks(x0, x1):
        out.append(f'<text x="{sx(t):.1f}" y="{top + ph + 14}" text-anchor="middle" '
                   f'font-size="11">{t:.4g}</text>')
    out.append(f'<text x="{left + pw / 2}" y="{height - 6}" text-anchor="middle" '
               f'font-size="12">{escape(xlabel)}</text>')
    out.append(f'<text x="14" y="{top + ph / 2}" font-size="12" text-anchor="middle" '
               f'transform="rotate(-90 14 {top + ph / 2})">{escape(ylabel)}</text>')
    for k, (name, col, pts) in enumerate(series):
        if pts:
            path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
            out.append(f'<polyline fill="none" stroke="{col}" stroke-width="1.6" points="{path}"/>')
        ly = top + 10 + 16 * k
        out.append(f'<line x1="{left + pw + 10}" x2="{left + pw + 28}" y1="{ly}" y2="{ly}" '
                   f'stroke="{col}" stroke-width="3"/><text x="{left + pw + 32}" y="{ly + 4}" '
                   f'font-size="11">{escape(name[:18])}</text>')
    out.append("</svg>")
    return "".join(out)


def _heat_colour(value, vmin: float, vmax: float, diverging: bool) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "#ffffff"
    if diverging:            # -1 blue .. 0 white .. 1 red
        t = max(-1.0, min(1.0, value / max(abs(vmin), abs(vmax), 1e-12)))
        if t >= 0:
            r, g, b = 255, int(255 * (1 - t)), int(255 * (1 - t))
        else:
            r, g, b = int(255 * (1 + t)), int(255 * (1 + t)), 255
        return f"#{r:02x}{g:02x}{b:02x}"
    t = 0.0 if vmax <= vmin else (value - vmin) / (vmax - vmin)
    # white -> dark blue
    r, g, b = int(255 - 247 * t), int(255 - 207 * t), int(255 - 148 * t)
    return f"#{r:02x}{g:02x}{b:02x}"


def heatmap(matrix: list[list], row_labels: list, col_labels: list, title: str,
            diverging: bool = False, cell: int = 28, annotate: bool = False) -> str:
    """An SVG heat map (white -> blue; or blue-white-red around 0 when diverging)."""
    values = [v for row in matrix for v in row
              if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not values:
        return f"<p><em>{escape(title)}: no data.</em></p>"
    vmin, vmax = (min(values), max(values)) if not diverging else (-1.0, 1.0)
    left = 12 + 7 * max(len(str(r)) for r in row_labels)
    top = 34 + 6 * max(len(str(c)) for c in col_labels)
    width = left + cell * len(col_labels) + 20
    height = top + cell * len(row_labels) + 24
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'role="img" aria-label="{escape(title)}">',
           f'<text x="4" y="16" font-weight="bold">{escape(title)}</text>']
    for j, label in enumerate(col_labels):
        x = left + cell * j + cell / 2
        out.append(f'<text x="{x}" y="{top - 4}" font-size="11" transform="rotate(-60 {x} '
                   f'{top - 4})">{escape(str(label))}</text>')
    for i, (label, row) in enumerate(zip(row_labels, matrix)):
        y = top + cell * i
        out.append(f'<text x="{left - 4}" y="{y + cell / 2 + 4}" font-size="11" '
                   f'text-anchor="end">{escape(str(label))}</text>')
        for j, v in enumerate(row):
            out.append(f'<rect x="{left + cell * j}" y="{y}" width="{cell}" height="{cell}" '
                       f'fill="{_heat_colour(v, vmin, vmax, diverging)}" stroke="#ddd">'
                       f'<title>{escape(str(label))} / {escape(str(col_labels[j]))}: '
                       f'{_fmt(v)}</title></rect>')
            if annotate and v is not None:
                out.append(f'<text x="{left + cell * j + cell / 2}" y="{y + cell / 2 + 4}" '
                           f'font-size="10" text-anchor="middle">{_fmt(v, ".2f")}</text>')
    out.append(f'<text x="{left}" y="{height - 6}" font-size="11">scale {_fmt(vmin)} … '
               f'{_fmt(vmax)}</text></svg>')
    return "".join(out)


# ---- the report ------------------------------------------------------------------------------

def _curves_section(sources) -> str:
    """Every metric the runs logged, by step; the training loss by tokens seen too."""
    parts = []
    plots = [(key, "step") for key in METRICS] + [("loss", "tokens")]
    for key, x in plots:
        title = METRICS[key][0] + ("" if x == "step" else f" by {AXES[x]}")
        series = [(s.name, s.colour, curve(s, key, x)) for s in sources]
        if any(pts for _, _, pts in series):
            parts.append(line_chart(series, title, xlabel=AXES[x], ylabel=METRICS[key][0]))
    return "".join(parts) or "<p><em>No training curves (none of these adapters is a run).</em></p>"


def _evaluation_section(evaluation: dict) -> str:
    models = evaluation["models"]
    out = [f"<p>Task <b>{escape(evaluation['task'])}</b>, the same {models[0]['n']} examples for "
           f"every model (seed {evaluation['seed']}); {escape(models[0]['metric'])}.</p>",
           table(["model", "score", "95% CI low", "95% CI high"],
                 [[m["name"], m["score"], m["ci95"][0], m["ci95"][1]] for m in models],
                 "evaluation"),
           "<h3>Paired differences (same examples)</h3>",
           table(["a", "b", "a − b", "95% CI low", "95% CI high", "verdict"],
                 [[p["a"], p["b"], p["mean"], p["ci95"][0], p["ci95"][1], p["verdict"]]
                  for p in evaluation["pairs"]], "pairs")]
    rows = [r for r in evaluation["rows"] if r["disagree"]]
    out.append(f"<h3>Where they disagree ({len(rows)} of {len(evaluation['rows'])} examples"
               f"{', first ' + str(MAX_DISAGREEMENTS) + ' shown' if len(rows) > MAX_DISAGREEMENTS else ''})</h3>")
    names = [m["name"] for m in models]
    out.append(table(["#", "prompt", "reference", *names],
                     [[r["index"], r["prompt"], r["reference"],
                       *[f"{r['answers'][n]} ({_fmt(r['scores'][n], '.2g')})" for n in names]]
                      for r in rows[:MAX_DISAGREEMENTS]], "disagreements"))
    return "".join(out)


def _weights_section(weights: dict, colours: dict) -> str:
    out = []
    for item in weights.get("skipped", []):
        out.append(f"<p><em>{escape(item['name'])}: {escape(item['reason'])}</em></p>")
    for norms in weights.get("norms", []):
        out.append(heatmap(norms["norms"], norms["layers"], norms["modules"],
                           f"‖ΔW‖_F per layer × module: {norms['name']} (total "
                           f"{norms['total']:.4g})"))
    sim = weights.get("similarity")
    if sim:
        out.append(heatmap(sim["overall"], sim["names"], sim["names"],
                           "Cosine similarity of the updates ΔW (all modules)", diverging=True,
                           cell=56, annotate=True))
        out.append(table(["", *sim["names"]], [[n, *row] for n, row in
                                               zip(sim["names"], sim["overall"])], "similarity"))
    spectra = weights.get("spectra") or []
    if spectra:
        out.append(f"<h3>Singular values of ΔW, {escape(spectra[0]['module'])}</h3>")
        out.append(line_chart([(s["name"], colours.get(s["name"], "#888888"),
                                [(k + 1, v) for k, v in enumerate(s["singular_values"])])
                               for s in spectra], f"Singular values of ΔW at {spectra[0]['module']}",
                              xlabel="index", ylabel="singular value"))
        out.append(table(["adapter", "rank", "effective rank", "numerical rank", "‖ΔW‖_F",
                          "singular values"],
                         [[s["name"], s["rank"], s["effective_rank"], s["numerical_rank"],
                           s["frobenius"], ", ".join(f"{v:.3g}" for v in s["singular_values"])]
                          for s in spectra], "spectra"))
    return "".join(out)


STYLE = """body{font-family:system-ui,sans-serif;margin:24px;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:8px 0 16px}td,th{border:1px solid #ccc;padding:3px 8px;
text-align:left;vertical-align:top;font-size:13px;max-width:320px;overflow-wrap:anywhere}
th{background:#f3f3f3}h2{border-bottom:1px solid #ddd;padding-bottom:4px}svg{margin:6px 12px 6px 0}
.swatch{display:inline-block;width:12px;height:12px;margin-right:6px;vertical-align:middle}"""


def build_report(sources, weights: dict | None = None, evaluation: dict | None = None,
                 answers: dict | None = None, prompt: str | None = None,
                 title: str = "Adapter comparison", sampling: dict | None = None) -> str:
    """The whole HTML document as a string. `answers`: {model name: answer} to `prompt`, with
    the decoding settings in `sampling` (a dict) when given."""
    assign_colours(sources)
    legend = "".join(f'<li><span class="swatch" style="background:{s.colour}"></span>'
                     f'<b>{escape(s.name)}</b> — {escape(s.kind)}, {escape(s.method)}, '
                     f'{escape(str(s.adapter_dir))}</li>' for s in sources)
    diff = settings_diff(sources)
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'>{GENERATOR}"
             f"<title>{escape(title)}</title><style>{STYLE}</style></head><body>",
             f"<h1>{escape(title)}</h1>",
             f"<p>Base model: {escape(sources[0].base_model or '(not recorded)')}</p>",
             f"<ul>{legend}</ul>",
             "<h2>Training curves</h2>", _curves_section(sources),
             "<h2>Settings that differ</h2>",
             table(["setting", *[s.name for s in sources]],
                   [[k, *[_fmt(v) for v in vals]] for k, vals in diff.items()], "settings")
             if diff else "<p>All settings are the same.</p>"]
    if evaluation:
        parts += ["<h2>Evaluation</h2>", _evaluation_section(evaluation)]
    if answers:
        decoding = "greedy"
        if sampling:
            decoding = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in sampling.items())
        parts += ["<h2>Answers to one prompt</h2>", f"<p><b>Prompt:</b> {escape(prompt or '')}</p>",
                  f"<p>The same decoding for every model: {escape(decoding)}.</p>",
                  table(["model", "answer"], [[k, v] for k, v in answers.items()], "answers")]
    if weights:
        parts += ["<h2>Weights</h2>", _weights_section(weights, {s.name: s.colour for s in sources})]
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(path, html: str) -> Path:
    """Write the report; an existing file is replaced only if it is an earlier report."""
    path = Path(path).expanduser()
    if path.exists():
        try:
            ours = path.is_file() and GENERATOR in path.read_text(encoding="utf-8", errors="replace")[:2000]
        except OSError:
            ours = False
        if not ours:
            raise UserError("exists and is not a comparison report the studio wrote; it was left "
                            "as it is.", path=path, fix="Choose a new file name for the report.")
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_text_atomic(path, html)
