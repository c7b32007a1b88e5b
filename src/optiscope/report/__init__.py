"""The self-contained HTML run report: summary table, captioned figures, the config.

A run directory holds its figures and a ``report.json`` manifest (:class:`RunReport`);
:func:`write_report` renders ``report.html`` with every image inline and the interactive
surface's plotly.js inline, so the page loads nothing from the network.
"""

from optiscope.report._html import REPORT_NAME, build_report, render_html, write_report
from optiscope.report._manifest import MANIFEST_NAME, ManifestError, ReportFigure, RunReport

__all__ = [
    "MANIFEST_NAME",
    "ManifestError",
    "REPORT_NAME",
    "ReportFigure",
    "RunReport",
    "build_report",
    "render_html",
    "write_report",
]
