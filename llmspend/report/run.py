"""``run_report``: what ``llmspend report`` calls.

It resolves and checks every parameter first (the period, the org/project/user names
against the store, the output paths), then executes the report notebook with papermill
in a ``python3`` kernel and renders the executed notebook to one HTML file.

In team mode (``LLMSPEND_GATEWAY_URL`` and a gateway credential, no ``database_url``
given) nothing opens a store: the names are checked against what the gateway lets the
caller see, and the notebook's kernel reads through the gateway too (it gets the gateway's
URL and no database URL), so the report shows what the caller's role may read.
"""

from __future__ import annotations

import datetime as dt
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..analytics import usage_report
from ..errors import ConfigError, ValidationError
from ..extras import REPORT, require_extra
from ..reconciliation import reconcile as reconcile_export
from ..store.engine import safe_url
from ..teamclient import client as team_client
from ..tracker import Tracker
from .execute import execute_notebook, notebook_path, to_html
from .filters import check_names
from .window import Window, resolve_window

__all__ = ["ReportResult", "default_output", "default_title", "run_report"]


def default_output(window: Window) -> Path:
    """``spend-report-<period>.html`` in the current directory."""
    return Path(f"spend-report-{window.slug}.html")


@dataclass
class ReportResult:
    """What :func:`run_report` made."""

    html: Path
    notebook: Path | None
    window: Window
    filters: dict[str, list[str]]
    title: str
    database_url: str
    seconds: float
    totals: dict[str, Any] = field(default_factory=dict)


def _check_output(path: Path, what: str) -> Path:
    path = Path(path).expanduser()
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise ValidationError(f"{what}: directory {str(parent)!r} does not exist")
    if not os.access(parent, os.W_OK):
        raise ValidationError(f"{what}: directory {str(parent)!r} is not writable")
    if path.is_dir():
        raise ValidationError(f"{what}: {str(path)!r} is a directory")
    return path


def default_title(window: Window) -> str:
    """``LLM spend report · March 2026``."""
    return f"LLM spend report · {window.label}"


def run_report(
    *,
    period: str | None = None,
    since: Any = None,
    until: Any = None,
    org: Any = None,
    project: Any = None,
    user: Any = None,
    database_url: str | None = None,
    output: str | os.PathLike[str] | None = None,
    notebook_output: str | os.PathLike[str] | None = None,
    title: str | None = None,
    decimals: int = 2,
    top: int = 10,
    notebook: str | os.PathLike[str] | None = None,
    kernel_name: str = "python3",
    progress_bar: bool = False,
    timeout: int | None = 600,
    now: dt.datetime | None = None,
    reconcile: str | os.PathLike[str] | None = None,
) -> ReportResult:
    """Make the spend report: check the parameters, run the notebook, write the HTML.

    Everything that can be checked before the (seconds-long) notebook run is: the period
    (:func:`resolve_window`), the store (it is opened), the org/project/user names
    (:func:`check_names`), the output directories, ``decimals`` and ``top``, and the cost
    export given as ``reconcile`` (read, then shown against the store in a section of its
    own: :func:`llmspend.reconcile`). Errors are
    :class:`~llmspend.LLMSpendError`\\ s with one-line messages; on any error no HTML is
    written. Returns a :class:`ReportResult` (paths, window, totals of the period).
    """
    require_extra("run_report()", *REPORT)
    started = time.monotonic()
    window = resolve_window(period, since, until, now=now)
    if isinstance(decimals, bool) or not isinstance(decimals, int) or not 0 <= decimals <= 9:
        raise ValidationError(f"decimals must be a whole number from 0 to 9, got {decimals!r}")
    if isinstance(top, bool) or not isinstance(top, int) or top < 1:
        raise ValidationError(f"top must be a whole number of at least 1, got {top!r}")
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, int) or timeout < 1
    ):
        raise ValidationError(
            "timeout must be a whole number of seconds of at least 1 (None: no limit), "
            f"got {timeout!r}"
        )
    html_path = _check_output(Path(output) if output else default_output(window), "output")
    nb_out = _check_output(Path(notebook_output), "notebook output") if notebook_output else None
    source = notebook_path(notebook)
    team = team_client() if database_url is None else None
    tracker = None if team is not None else Tracker(database_url)
    url = team.base if team is not None else tracker.settings.database_url  # type: ignore[union-attr]
    flt = check_names(team if team is not None else tracker.store, org, project, user)  # type: ignore[union-attr]
    export = ""
    if reconcile is not None:
        if tracker is None:
            raise ConfigError(
                "--reconcile reads the store's records and is not served through the "
                "gateway: run it where the database is (llmspend --database-url ... report)"
            )
        export = str(Path(reconcile).resolve())
        reconcile_export(export, tracker=tracker)  # an unreadable export fails here
    title = title or default_title(window)
    s, u = window.iso()
    parameters = {
        "period": "",
        "since": s,
        "until": u,
        "org": flt.get("org", []),
        "project": flt.get("project", []),
        "user": flt.get("user", []),
        "database_url": "",
        "decimals": decimals,
        "top": top,
        "title": title,
        "reconcile": export,
    }
    with tempfile.TemporaryDirectory(prefix="llmspend-report-") as tmp:
        executed = nb_out or Path(tmp) / "spend_report.ipynb"
        execute_notebook(
            source,
            executed,
            parameters,
            database_url=None if team is not None else url,
            gateway_url=url if team is not None else None,
            kernel_name=kernel_name,
            progress_bar=progress_bar,
            timeout=timeout,
        )
        to_html(executed, html_path, title=title)
    store = None if tracker is None else tracker.store  # team mode: through the gateway
    totals = usage_report("org", window.since, window.until, store=store, **flt).attrs["totals"]
    return ReportResult(
        html=html_path,
        notebook=nb_out,
        window=window,
        filters=flt,
        title=title,
        database_url=url if team is not None else safe_url(url),
        seconds=time.monotonic() - started,
        totals=dict(totals),
    )
