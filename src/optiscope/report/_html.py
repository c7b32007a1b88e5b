"""Render a :class:`RunReport` as one self-contained HTML file.

Images are inlined as base64 PNG data URIs and plotly figures carry plotly.js inline, so
the page opens offline, can be mailed as one file, and loads nothing from the network.
Every piece of user-supplied text (run name, summary values, captions, the config) goes
through :func:`html.escape`.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import os
import re
import warnings
from pathlib import Path

from optiscope._internal.atomic import atomic_write
from optiscope.report._manifest import ReportFigure, RunReport

__all__ = ["render_html", "write_report", "build_report", "REPORT_NAME"]

REPORT_NAME = "report.html"

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;
color:#1d2330;background:#fafbfc;line-height:1.45}
main{max-width:1100px;margin:0 auto;padding:1.5rem 2rem 4rem}
h1{margin:.2rem 0 0;font-size:1.7rem}h2{margin-top:2.2rem;border-bottom:1px solid #dde;
padding-bottom:.3rem}.sub{color:#667;margin:.2rem 0 1.2rem}
table.summary{border-collapse:collapse;min-width:60%}
table.summary th{text-align:left;padding:.3rem 1.2rem .3rem 0;color:#445;font-weight:600;
white-space:nowrap;vertical-align:top}
table.summary td{padding:.3rem 0;font-family:ui-monospace,Menlo,Consolas,monospace}
table.summary tr{border-bottom:1px solid #eef}
nav ol{columns:2;padding-left:1.2rem}
figure{margin:1.2rem 0 2rem;background:#fff;border:1px solid #e3e6ee;border-radius:6px;
padding:1rem}figure img{max-width:100%;height:auto;display:block;margin:0 auto}
figcaption{color:#445;margin-top:.6rem}figure h3{margin:0 0 .6rem;font-size:1.1rem}
.plotly-box{height:640px}.missing{color:#a33}
pre.config{background:#f2f4f8;border:1px solid #e3e6ee;padding:1rem;overflow-x:auto;
border-radius:6px;font-size:.9rem}
ul.notes{color:#556}
"""


def _slug(text: str, index: int) -> str:
    base = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40]
    return f"fig-{index}-{base}" if base else f"fig-{index}"


def _resolve(run_dir: Path, file: str) -> Path:
    p = Path(file)
    return p if p.is_absolute() else run_dir / p


def _image_html(path: Path, title: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(title)}">'


def _plotly_html(path: Path, div_id: str) -> str:
    try:
        import plotly.io as pio
    except ImportError:
        return (
            '<p class="missing">The interactive figure needs plotly '
            "(pip install 'optiscope[plotly]').</p>"
        )
    fig = pio.from_json(path.read_text(encoding="utf-8"))
    # include_plotlyjs=True inlines the whole library: the page must work offline.
    return pio.to_html(
        fig,
        full_html=False,
        include_plotlyjs=True,
        include_mathjax=False,
        default_height="100%",
        # A fixed id (plotly's default is a random UUID) keeps the page reproducible.
        div_id=div_id,
        config={"displaylogo": False},
    )


def _figure_html(run_dir: Path, fig: ReportFigure, index: int, plotly_done: bool) -> str:
    path = _resolve(run_dir, fig.file)
    title = html.escape(fig.title)
    caption = html.escape(fig.caption)
    if not path.is_file():
        warnings.warn(f"report figure missing: {path}", stacklevel=3)
        body = f'<p class="missing">Figure file not found: {html.escape(str(fig.file))}</p>'
    elif fig.kind == "plotly":
        body = (
            f'<div class="plotly-box">{_plotly_html(path, _slug(fig.title, index) + "-plot")}</div>'
        )
        if plotly_done:
            # plotly.js is already on the page; a second inline copy would double the size.
            body = _strip_second_plotlyjs(body)
    else:
        body = _image_html(path, fig.title)
    return (
        f'<figure id="{_slug(fig.title, index)}"><h3>{title}</h3>{body}'
        f"<figcaption>{caption}</figcaption></figure>"
    )


def _strip_second_plotlyjs(body: str) -> str:
    # The library script is the one that starts with the plotly.js licence banner.
    return re.sub(r"<script[^>]*>\s*/\*\*\s*\n\* plotly\.js.*?</script>", "", body, flags=re.S)


def render_html(report: RunReport, run_dir: str | os.PathLike) -> str:
    """The report page as a string.

    Args:
        report: What to show.
        run_dir: Directory that relative figure paths are resolved against.

    Returns:
        A complete HTML document with every figure inlined.

    Example:
        >>> import tempfile
        >>> page = render_html(RunReport("<b>x</b>", {"epochs": "3"}), tempfile.gettempdir())
        >>> "&lt;b&gt;x&lt;/b&gt;" in page and "<b>x</b>" not in page
        True
    """
    run_dir = Path(run_dir)
    name = html.escape(report.name)
    stamp = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    rows = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>"
        for k, v in report.summary.items()
    )
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in report.notes)
    toc = "".join(
        f'<li><a href="#{_slug(f.title, i)}">{html.escape(f.title)}</a></li>'
        for i, f in enumerate(report.figures)
    )
    parts: list[str] = []
    plotly_done = False
    for i, fig in enumerate(report.figures):
        parts.append(_figure_html(run_dir, fig, i, plotly_done))
        if fig.kind == "plotly" and _resolve(run_dir, fig.file).is_file():
            plotly_done = True
    config = (
        f'<h2 id="config">Config</h2><pre class="config">{html.escape(report.config_text)}</pre>'
        if report.config_text
        else ""
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>optiscope run: {name}</title><style>{_CSS}</style></head><body><main>"
        f"<h1>optiscope run: {name}</h1>"
        f'<p class="sub">Generated {stamp} from {html.escape(str(run_dir))}</p>'
        f'<h2 id="summary">Summary</h2><table class="summary">{rows}</table>'
        + (f'<ul class="notes">{notes}</ul>' if notes else "")
        + (f'<h2 id="figures">Figures</h2><nav><ol>{toc}</ol></nav>' if toc else "")
        + "".join(parts)
        + config
        + "</main></body></html>\n"
    )


def write_report(
    report: RunReport, run_dir: str | os.PathLike, path: str | os.PathLike | None = None
) -> Path:
    """Save the manifest and write the HTML page (atomically).

    Args:
        report: What to show.
        run_dir: The run directory; ``report.json`` is written there.
        path: Where to write the page (default ``run_dir/report.html``).

    Returns:
        The path of the HTML file.

    Example:
        >>> import tempfile
        >>> d = tempfile.mkdtemp()
        >>> write_report(RunReport("demo"), d).name
        'report.html'
    """
    run_dir = Path(run_dir)
    report.save(run_dir)
    out = Path(path) if path is not None else run_dir / REPORT_NAME
    atomic_write(out, render_html(report, run_dir))
    return out


def build_report(run_dir: str | os.PathLike, path: str | os.PathLike | None = None) -> Path:
    """Rebuild ``report.html`` from the ``report.json`` a run left in ``run_dir``.

    Args:
        run_dir: A run directory written by ``optiscope train`` or ``optiscope demo``.
        path: Where to write the page (default ``run_dir/report.html``).

    Returns:
        The path of the HTML file.

    Raises:
        InputFileNotFoundError: ``run_dir`` or its ``report.json`` does not exist.
        ManifestError: The manifest is malformed (a ValueError).

    Example:
        >>> import tempfile
        >>> d = tempfile.mkdtemp()
        >>> _ = RunReport("demo").save(d)
        >>> build_report(d).name
        'report.html'
    """
    run_dir = Path(run_dir)
    report = RunReport.load(run_dir)
    out = Path(path) if path is not None else run_dir / REPORT_NAME
    atomic_write(out, render_html(report, run_dir))
    return out
