"""The plain functions behind ``%budget`` and ``%spend`` (callable from Python too).

They take typed values (the magics parse strings into them), call the public API, and
return something that displays well: a :class:`~llmspend.notebook.render.Table`, a
:class:`~llmspend.notebook.render.Note`, or a DataFrame. They raise
:class:`~llmspend.LLMSpendError` for bad input; the magics turn it into a one-line
``UsageError``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..attribution import validate_name
from ..errors import ValidationError
from ..exchange import write_records
from ..extras import NOTEBOOK_CHARTS, require_extra
from ..teamclient import client as team_client
from ..tracker import get_tracker
from .cellcost import cell_cost
from .render import (
    Note,
    Table,
    _thresholds,
    alerts_table,
    budgets_table,
    calls_table,
    fmt_usd,
    history_table,
    status_table,
)

if TYPE_CHECKING:
    import pandas as pd

    from ..call import Call
    from ..tracker import Tracker

__all__ = [
    "budget_ack",
    "budget_alerts",
    "budget_delete",
    "budget_history",
    "budget_list",
    "budget_set",
    "budget_status",
    "budget_update",
    "default_tags",
    "describe_budget",
    "ensure_tag_hook",
    "spend_cell",
    "spend_context",
    "spend_export",
    "spend_last",
    "spend_quiet",
    "spend_report",
]

# -- budgets -------------------------------------------------------------------------------


def describe_budget(budget: Any) -> str:
    """``project acme/churn: $100.00/month, hard, alerts at 50,80,100 %, UTC``."""
    kind = " (default for each child)" if budget.is_default else ""
    return (
        f"{budget.scope} {budget.name}{kind}: {fmt_usd(budget.limit_usd)}/{budget.period}, "
        f"{budget.mode}, alerts at {_thresholds(budget.thresholds)}, {budget.timezone}"
    )


def budget_set(
    scope: str,
    name: str,
    limit: Decimal | str | int,
    period: str = "month",
    *,
    mode: str = "hard",
    thresholds: Sequence[Decimal] | None = None,
    timezone: str = "UTC",
    week_start: int = 0,
    unpriced: str = "refuse",
    webhook_url: str | None = None,
) -> Note:
    """Create or replace a budget (``llmspend.set_budget``) and say what was set."""
    import llmspend

    existed = any(b.scope == scope and b.name == name for b in llmspend.list_budgets(None))
    budget = llmspend.set_budget(
        scope,
        name,
        limit,
        period,
        mode=mode,
        thresholds=(Decimal("0.5"), Decimal("0.8"), Decimal("1.0"))
        if thresholds is None
        else tuple(thresholds),
        timezone=timezone,
        week_start=week_start,
        unpriced=unpriced,
        webhook_url=webhook_url,
    )
    return Note(f"budget {'updated' if existed else 'set'}: {describe_budget(budget)}")


def budget_update(scope: str, name: str, **changes: Any) -> Note:
    """Change some fields of an existing budget (``llmspend.update_budget``)."""
    import llmspend

    if not changes:
        raise ValidationError("nothing to change: give a new LIMIT[/PERIOD] or an option")
    budget = llmspend.update_budget(scope, name, **changes)
    return Note(f"budget updated: {describe_budget(budget)}")


def budget_status(scope: str | None = None, name: str | None = None) -> Table:
    """Where every budget (or one scope, or one budget) stands in its current period."""
    import llmspend

    return status_table(llmspend.budget_status(scope, name))


def budget_list(scope: str | None = None) -> Table:
    """Every budget set, defaults included."""
    import llmspend

    return budgets_table(llmspend.list_budgets(scope))


def budget_history(scope: str, name: str) -> Table:
    """Every period of one budget so far, newest first."""
    import llmspend

    return history_table(scope, name, llmspend.budget_history(scope, name))


def budget_delete(scope: str, name: str) -> Note:
    """Delete a budget (audited)."""
    import llmspend

    llmspend.delete_budget(scope, name)
    return Note(f"budget deleted: {scope} {name}")


def budget_alerts(
    since: Any = None,
    *,
    include_acknowledged: bool = False,
    scope: str | None = None,
    budget: str | None = None,
) -> Table:
    """Alerts (unacknowledged ones unless ``include_acknowledged``), newest first."""
    import llmspend

    filters: dict[str, Any] = {}
    if not include_acknowledged:
        filters["acknowledged"] = False
    if scope is not None:
        filters["scope"] = scope
    if budget is not None:
        filters["budget"] = budget
    frame = llmspend.alerts(since, **filters)
    title = "llmspend · alerts" if include_acknowledged else "llmspend · unacknowledged alerts"
    return alerts_table(frame, title=title)


def budget_ack(ids: Sequence[int] | None) -> Note:
    """Acknowledge alerts by id, or every unacknowledged one (``ids=None``)."""
    import llmspend

    if ids is not None:
        known = set(llmspend.alerts()["id"].astype(int))
        missing = [i for i in ids if i not in known]
        if missing:
            raise ValidationError(
                f"no alert with id {', '.join(map(str, missing))}; see %budget alerts --all"
            )
    n = llmspend.acknowledge_alerts(None if ids is None else list(ids))
    return Note(f"acknowledged {n} alert{'s' if n != 1 else ''}")


# -- attribution -----------------------------------------------------------------------------

_tags_lock = threading.Lock()
default_tags: dict[str, str] = {}
_tag_hooked: set[int] = set()


def _apply_default_tags(call: Call) -> None:
    """A ``before_call`` hook: process-wide tags, under anything ``attribute()`` set."""
    if default_tags:
        for key, value in list(default_tags.items()):
            call.tags.setdefault(key, value)


def ensure_tag_hook(tracker: Tracker) -> None:
    """Make sure ``tracker`` applies the ``%spend context --tag`` tags (once per tracker)."""
    if _apply_default_tags not in tracker.before_call_hooks:
        # first, so that refused calls carry the tags too
        tracker.before_call_hooks.insert(0, _apply_default_tags)


def spend_context(
    *,
    org: str | None = None,
    project: str | None = None,
    user: str | None = None,
    tags: Mapping[str, str] | None = None,
    clear_tags: bool = False,
) -> Note:
    """Set (or show) the process-wide attribution: who the next calls are charged to."""
    tracker = get_tracker()
    for kind, value in (("org", org), ("project", project), ("user", user)):
        if value is not None:
            validate_name(kind, value)
    if tags:
        for key in tags:
            if not key:
                raise ValidationError("tag names must be non-empty, as in --tag team=ml")
    tracker.set_defaults(org=org, project=project, user=user)
    with _tags_lock:
        if clear_tags:
            default_tags.clear()
        if tags:
            default_tags.update(tags)
    ensure_tag_hook(tracker)
    text = f"llmspend context: org={tracker.org} project={tracker.project} user={tracker.user}"
    if default_tags:
        text += " tags=" + ",".join(f"{k}={v}" for k, v in sorted(default_tags.items()))
    team = team_client()
    if team is not None:  # the gateway charges its calls to the credential, not the context
        me = team.whoami()
        text += (
            f"\nllmspend gateway: calls through it are charged to org={me['org']} "
            f"project={me['project']} user={me['user']} (your gateway credential)"
        )
    return Note(text)


# -- calls -----------------------------------------------------------------------------------


#: What ``%spend last`` reads from the gateway, and how far back it looks, widening.
_LAST_COLUMNS = ["ts", "provider", "model", "org", "project", "user", "input_tokens",
                 "output_tokens", "cost_usd", "price_status", "latency_ms", "status"]  # fmt: skip
_LAST_SPANS = ("1h", "1d", "30d", None)


def spend_last(n: int = 5) -> Table:
    """The last ``n`` calls recorded in this kernel: time, model, tokens, cost, latency.

    In team mode, the caller's last ``n`` calls as the gateway recorded them."""
    if n < 1:
        raise ValidationError(f"N must be at least 1, got {n}")
    team = team_client()
    if team is not None:
        import llmspend

        me = team.whoami()
        for since in _LAST_SPANS:
            frame = llmspend.records(since, columns=_LAST_COLUMNS, org=me["org"], user=me["user"])
            if len(frame) >= n:
                break
        last = frame.sort_values("ts", kind="stable").tail(n)
        rows: list[dict[str, Any]] = [dict(zip(last.columns, r, strict=True))
                                      for r in last.itertuples(index=False)]  # fmt: skip
        return calls_table(rows, title=f"llmspend · last {len(rows) or n} call(s) (gateway)")
    rows = list(get_tracker().recent)[-n:]
    return calls_table(rows, title=f"llmspend · last {len(rows) or n} call(s)")


def spend_cell() -> Note:
    """What the current cell (if it made calls yet) or the previous cell cost."""
    return Note(cell_cost.describe())


def spend_quiet(on: bool | None = None, *, min_usd: Decimal | None = None) -> Note:
    """Turn the per-cell cost line off (``on=True``) or on (``on=False``); ``min_usd``
    hides it for cells that cost less. Bad input changes nothing."""
    # adjusted() first: arithmetic on a huge exponent (1e999999999) overflows
    if min_usd is not None and (
        not min_usd.is_finite() or min_usd.adjusted() > 9 or not 0 <= min_usd <= 10**9
    ):
        raise ValidationError(
            f"--min must be an amount of USD from 0 to $1,000,000,000, got {min_usd}"
        )
    if on is not None:
        cell_cost.enabled = not on
    if min_usd is not None:
        cell_cost.min_usd = min_usd
    state = "off (quiet)" if not cell_cost.enabled else "on"
    text = f"llmspend per-cell cost line: {state}"
    if cell_cost.min_usd:
        text += f", hidden for cells under {fmt_usd(cell_cost.min_usd)}"
    return Note(text)


# -- reports and exports -----------------------------------------------------------------------


def _clean_filters(filters: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in filters.items() if v is not None}


def spend_report(
    by: str | list[str] = "model",
    since: Any = "7d",
    until: Any = None,
    *,
    show_chart: bool = True,
    **filters: Any,
) -> pd.DataFrame:
    """Spend grouped ``by`` a column since ``since``: a DataFrame, and a chart displayed."""
    from .. import analytics

    if show_chart:  # before the query, not after it
        require_extra("%spend report's chart", *NOTEBOOK_CHARTS)
    frame = analytics.cost_breakdown(by=by, since=since, until=until, **_clean_filters(filters))
    if show_chart:
        from IPython.display import display

        from . import charts

        group = by if isinstance(by, str) else by[0]
        when = f" since {since}" if since else ""
        if len(frame):
            title = f"Spend by {group}{when}"
            display(charts.offline(charts.breakdown(frame, by=group, title=title)))
        else:
            display(Note(f"llmspend: no calls{when} match"))
    return frame


def spend_export(
    path: str | os.PathLike[str], since: Any = None, until: Any = None, **filters: Any
) -> Note:
    """Write ``records()`` to ``path`` (``.csv`` or ``.parquet``); money stays exact."""
    import llmspend

    target = Path(path).expanduser()
    if target.suffix.lower() not in (".csv", ".parquet"):
        raise ValidationError(f"export to a .csv or .parquet file, got {str(path)!r}")
    frame = llmspend.records(since, until, **_clean_filters(filters))
    write_records(frame, target)
    total = sum((c for c in frame["cost_usd"] if c is not None), Decimal(0)) if len(frame) else 0
    return Note(f"exported {len(frame):,} calls ({fmt_usd(Decimal(total))}) to {target}")
