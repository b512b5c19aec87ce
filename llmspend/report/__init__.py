"""The scheduled spend report: run ``spend_report.ipynb`` with papermill, write HTML.

:func:`run_report` is what ``llmspend report`` calls: it resolves and checks every
parameter first (the period, the org/project/user names against the store), then executes
the report notebook with papermill in a ``python3`` kernel and renders the executed
notebook to one self-contained HTML file (code hidden, charts as inline SVG, styles
inlined, no script or font loaded from anywhere: the page works offline and in mail).

The notebook itself uses the small helpers below (:func:`resolve_window`, :func:`money`,
:func:`frame_table`, :func:`svg`, ...), so the CLI and the notebook agree on what a period
means and how money is written (``$1,234.56``).

Periods are UTC. A window is ``[since, until)``: ``since`` inclusive, ``until`` exclusive,
as everywhere in llmspend. The default is the current calendar month.

Modules:

``window``      report periods: :class:`Window`, :func:`resolve_window`
``filters``     org/project/user filters checked against the store: :func:`check_names`
``formatting``  money, percentages, tables, charts and headings for the notebook
``execute``     papermill and nbconvert: :func:`execute_notebook`, :func:`to_html`,
                :class:`ReportError`
``run``         :func:`run_report`, the whole report for ``llmspend report``
"""

from __future__ import annotations

from ..errors import ReportError
from .execute import (
    DEFAULT_NOTEBOOK,
    REMOVED_TAGS,
    execute_notebook,
    kernel_arguments,
    notebook_path,
    to_html,
)
from .filters import check_names, filter_names
from .formatting import (
    HTMLBlock,
    change_of,
    change_percent,
    frame_table,
    heading_html,
    integer,
    kpis_html,
    money,
    note,
    percent,
    signed_money,
    svg,
    trend_granularity,
    when,
    window_limit,
)
from .run import ReportResult, default_output, default_title, run_report
from .window import CALENDAR_PERIODS, Window, calendar_unit, resolve_window

__all__ = [
    "CALENDAR_PERIODS",
    "DEFAULT_NOTEBOOK",
    "REMOVED_TAGS",
    "HTMLBlock",
    "ReportError",
    "ReportResult",
    "Window",
    "calendar_unit",
    "change_of",
    "change_percent",
    "check_names",
    "default_output",
    "default_title",
    "execute_notebook",
    "filter_names",
    "frame_table",
    "heading_html",
    "integer",
    "kernel_arguments",
    "kpis_html",
    "money",
    "note",
    "notebook_path",
    "percent",
    "resolve_window",
    "run_report",
    "signed_money",
    "svg",
    "to_html",
    "trend_granularity",
    "when",
    "window_limit",
]
