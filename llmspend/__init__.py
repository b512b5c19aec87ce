"""llmspend: LLM spend made visible and bounded where it happens, in notebooks.

The public surface is listed in ``__all__``; everything else is private. Heavy libraries
(pandas, SQLAlchemy's dialects, provider SDKs) are imported on first use, so
``import llmspend`` stays light.
"""

from __future__ import annotations

import logging as _logging
import sys as _sys
from typing import TYPE_CHECKING, Any

from .errors import (
    BudgetError,
    BudgetExceeded,
    ConfigError,
    IngestError,
    LLMSpendError,
    LLMSpendWarning,
    MissingExtra,
    PermissionDenied,
    PriceFileError,
    PricingError,
    ReportError,
    SchemaTooNewError,
    StoreError,
    StoreUnavailable,
    UnknownModelWarning,
    ValidationError,
)

if TYPE_CHECKING:
    import datetime as dt
    from collections.abc import Callable, Sequence
    from decimal import Decimal

    import pandas as pd

    from .alerting.events import BudgetThresholdReached
    from .budgets.spec import Budget, BudgetStatus
    from .call import Call, Usage
    from .dialects.hosts import declare_endpoint
    from .pipeline import begin_call
    from .plugins import Patch, ProviderPlugin, register_provider
    from .pricing import Price, PriceBook
    from .teamclient import GatewayClient
    from .teammode import team_hint
    from .tracker import Tracker

__version__ = "0.1.0"

# A library never configures logging; this only keeps "no handler" fallbacks quiet.
_logging.getLogger("llmspend").addHandler(_logging.NullHandler())

__all__ = [
    "Budget",
    "BudgetError",
    "BudgetExceeded",
    "BudgetStatus",
    "BudgetThresholdReached",
    "Call",
    "ConfigError",
    "IngestError",
    "LLMSpendError",
    "LLMSpendWarning",
    "MissingExtra",
    "Patch",
    "PermissionDenied",
    "Price",
    "PriceFileError",
    "PricingError",
    "ProviderPlugin",
    "ReportError",
    "SchemaTooNewError",
    "StoreError",
    "StoreUnavailable",
    "Tracker",
    "UnknownModelWarning",
    "Usage",
    "ValidationError",
    "__version__",
    "acknowledge_alerts",
    "alerts",
    "attribute",
    "begin_call",
    "budget_history",
    "budget_status",
    "dashboard",
    "declare_endpoint",
    "delete_budget",
    "ingest",
    "install",
    "list_budgets",
    "load_ipython_extension",
    "on_alert",
    "price",
    "reconcile",
    "records",
    "register_provider",
    "set_budget",
    "set_webhook",
    "team_hint",
    "uninstall",
    "unload_ipython_extension",
    "update_budget",
]

from .attribution import attribute  # noqa: E402  (after the logging set-up above)


def install(
    database_url: str | None = None,
    *,
    org: str | None = None,
    project: str | None = None,
    user: str | None = None,
    children: bool | None = None,
    otel: bool | None = None,
    gateway_url: str | None = None,
) -> Tracker:
    """Hook the provider SDKs and record every call into the store at ``database_url``.

    Idempotent; covers clients created before and after, sync and async, streaming and
    not, and SDKs imported later. ``org``/``project``/``user`` set the process-wide
    attribution defaults (else ``LLMSPEND_ORG``/``LLMSPEND_PROJECT``/``LLMSPEND_USER``,
    ``JUPYTERHUB_USER`` or the OS user, and ``"default"``). Processes ``multiprocessing``
    starts (process pools and joblib too) are hooked alike unless ``children=False`` or
    ``LLMSPEND_CHILDREN=0`` (``None`` keeps the current choice). ``otel=True`` (or
    ``LLMSPEND_OTEL=1``) exports a span per call to OpenTelemetry's configured providers.
    ``gateway_url``: team mode (as ``LLMSPEND_GATEWAY_URL``): calls to the llmspend gateway
    there are the gateway's to budget and record (``None`` keeps the current choice).
    """
    from .installer import install as _install

    return _install(
        database_url, org=org, project=project, user=user, children=children, otel=otel,
        gateway_url=gateway_url,
    )  # fmt: skip


def uninstall() -> None:
    """Remove llmspend's hooks, restoring the SDKs exactly. The store stays readable."""
    from .installer import uninstall as _uninstall

    _uninstall()


def records(
    since: Any = None,
    until: Any = None,
    *,
    columns: Sequence[str] | None = None,
    as_: str = "pandas",
    **filters: Any,
) -> pd.DataFrame:
    """Usage records as a DataFrame, one row per call (money as exact ``Decimal``).

    ``since`` (inclusive) and ``until`` (exclusive) accept datetimes (naive means UTC),
    dates, ISO strings and spans such as ``"7d"``. Filters (``org``, ``project``, ``user``,
    ``provider``, ``model``, ``api``, ``status``, ``price_status``, ``session_id``,
    ``request_id``) take a name or a list of names. ``columns`` picks columns (read only
    those). ``as_="arrow"`` returns a ``pyarrow.Table`` instead (``cost_usd`` as
    ``decimal128(38, 9)``, tags as JSON text); ``as_="polars"`` a polars DataFrame;
    ``as_="pandas-arrow"`` a DataFrame of ``pd.ArrowDtype`` columns (no Python object per
    value; ``cost_usd`` elements are ``Decimal`` and its ``.sum()`` is exact).
    In team mode the gateway answers (scoped by role; see :mod:`llmspend.teamclient`).
    """
    if (team := _team()) is not None:
        return team.records(since, until, columns=columns, as_=as_, **filters)
    from .tracker import get_tracker

    return get_tracker().records(since, until, columns=columns, as_=as_, **filters)


def reconcile(source: Any, **options: Any) -> Any:
    """Compare a provider's cost export (OpenAI Costs API JSON or cost/usage CSV,
    Anthropic cost report, Google Cloud billing CSV) with the recorded calls, per UTC day ×
    provider × model: billed, recorded, the difference in $ and %, and what llmspend never
    saw. Returns a ``Reconciliation`` (``.frame``, ``.differences``, ``.write(path)``);
    options: see :func:`llmspend.reconciliation.reconcile`.
    """
    from .reconciliation import reconcile as _reconcile

    return _reconcile(source, **options)


def ingest(rows: Any) -> int:
    """Bulk-load usage rows (a DataFrame or an iterable of dicts with ``records()`` columns).

    Every row is validated first: one bad row rejects the whole call with an
    :class:`IngestError` naming the row and field, and nothing is written. Rows without
    ``cost_usd`` are priced as of their own ``ts``. Returns the number of rows written.
    """
    from .tracker import get_tracker

    return get_tracker().ingest(rows)


def price(
    model: str,
    *,
    provider: str | None = None,
    input_tokens: int = 0,
    cached_input_tokens: int = 0,
    cache_write_tokens: int = 0,
    output_tokens: int = 0,
    reasoning_tokens: int = 0,
    at: dt.datetime | str | None = None,
    cache_write_1h_tokens: int = 0,
    input_audio_tokens: int = 0,
    cache_audio_read_tokens: int = 0,
    output_audio_tokens: int = 0,
    input_image_tokens: int = 0,
    cache_image_read_tokens: int = 0,
    output_image_tokens: int = 0,
) -> Price:
    """Price a usage exactly (``Decimal`` USD), as of ``at`` (default: now).

    ``input_tokens`` includes cached and cache-write tokens; ``output_tokens`` includes
    reasoning tokens. The parts billed at their own rates where the price data has them:
    ``cache_write_1h_tokens`` of ``cache_write_tokens`` (Anthropic's 1-hour cache);
    ``input_audio_tokens`` / ``input_image_tokens`` of the input, of which
    ``cache_audio_read_tokens`` / ``cache_image_read_tokens`` are cached;
    ``output_audio_tokens`` / ``output_image_tokens`` of the output. An unknown model gives
    ``status="unknown"`` and no cost. Opens no store: the price book is the process-wide
    one the tracker shares.
    """
    extra = None
    if (
        cache_write_1h_tokens
        or input_audio_tokens
        or cache_audio_read_tokens
        or output_audio_tokens
        or input_image_tokens
        or cache_image_read_tokens
        or output_image_tokens
    ):  # fmt: skip  (no tuple made for the usual text call)
        extra = (cache_write_1h_tokens, input_audio_tokens, cache_audio_read_tokens,
                 output_audio_tokens, input_image_tokens, cache_image_read_tokens,
                 output_image_tokens)  # fmt: skip
    return _price_book().quote(model, provider, input_tokens, cached_input_tokens,
                               cache_write_tokens, output_tokens, reasoning_tokens, at,
                               None, None, extra)  # fmt: skip


def _price_book() -> PriceBook:
    """The current tracker's price book if there is a tracker, else the process-wide one."""
    # No tracker exists unless its module is loaded: looking in sys.modules imports nothing
    # (no SQLAlchemy for a price).
    tracker_module = _sys.modules.get("llmspend.tracker")
    tracker = tracker_module.current_tracker() if tracker_module is not None else None
    if tracker is not None:
        return tracker.pricebook
    return _default_pricebook()


def _default_pricebook() -> PriceBook:
    """``pricing.default_pricebook()``; the first call imports it and takes its place."""
    global _default_pricebook
    from .pricing.book import default_pricebook

    _default_pricebook = default_pricebook  # the import once, not on every call
    return default_pricebook()


def set_budget(
    scope: str,
    name: str,
    limit: str | Decimal | int,
    period: str = "month",
    *,
    mode: str = "hard",
    thresholds: Any = (0.5, 0.8, 1.0),
    timezone: str = "UTC",
    week_start: int = 0,
    unpriced: str = "refuse",
    webhook_url: str | None = None,
) -> Budget:
    """Create or replace a budget; every change is audited.

    ``scope`` is ``"org"``, ``"project"`` or ``"user"``; ``name`` is ``"acme"``,
    ``"acme/churn"``, ``"acme/ana"`` (the user across the org) or ``"acme/churn/ana"`` (the
    user within a project); a ``*`` in place of the last part sets a default for every
    child without its own budget (``"acme/*"``). ``limit`` is USD (> 0). ``period``:
    day, week, month, quarter, year or total, on calendar boundaries in ``timezone``
    (weeks start on ``week_start``, 0 = Monday). ``mode="hard"`` refuses calls that could
    exceed the limit before they are sent; ``"soft"`` lets them through and alerts.
    ``thresholds`` are fractions in (0, 1] at which alerts fire. ``unpriced``: what a
    hard budget does with a call whose model has no price (``"refuse"`` or ``"allow"``).
    """
    if (team := _team()) is not None:
        return team.set_budget(
            scope, name, limit, period, mode=mode, thresholds=thresholds, timezone=timezone,
            week_start=week_start, unpriced=unpriced, webhook_url=webhook_url,
        )  # fmt: skip
    from .budgets.manage import set_budget as _set
    from .tracker import get_tracker

    return _set(
        get_tracker().store,
        scope,
        name,
        limit,
        period,
        mode=mode,
        thresholds=thresholds,
        timezone=timezone,
        week_start=week_start,
        unpriced=unpriced,
        webhook_url=webhook_url,
    )


def update_budget(scope: str, name: str, **changes: Any) -> Budget:
    """Change some fields of an existing budget (``limit``, ``period``, ``mode``, ...)."""
    if (team := _team()) is not None:
        return team.update_budget(scope, name, **changes)
    from .budgets.manage import update_budget as _update
    from .tracker import get_tracker

    return _update(get_tracker().store, scope, name, **changes)


def delete_budget(scope: str, name: str) -> None:
    """Delete a budget (audited). Deleting a default removes the budgets made from it."""
    if (team := _team()) is not None:
        team.delete_budget(scope, name)
        return
    from .budgets.manage import delete_budget as _delete
    from .tracker import get_tracker

    _delete(get_tracker().store, scope, name)


def list_budgets(scope: str | None = None) -> list[Budget]:
    """Every budget set, defaults included."""
    if (team := _team()) is not None:
        return team.list_budgets(scope)
    from .budgets.manage import list_budgets as _list
    from .tracker import get_tracker

    return _list(get_tracker().store, scope)


def budget_status(scope: str | None = None, name: str | None = None) -> list[BudgetStatus]:
    """Spent, reserved, limit, remaining, % used, state and projection per budget."""
    if (team := _team()) is not None:
        return team.budget_status(scope, name)
    from .budgets.manage import budget_status as _status
    from .tracker import get_tracker

    tracker = get_tracker()
    tracker.guard.release_standing()  # holds kept for calls not yet made are not spending
    return _status(tracker.store, scope, name)


def budget_history(scope: str, name: str) -> pd.DataFrame:
    """Every period of one budget so far, newest first."""
    if (team := _team()) is not None:
        return team.budget_history(scope, name)
    from .budgets.manage import budget_history as _history
    from .tracker import get_tracker

    return _history(get_tracker().store, scope, name)


def alerts(since: Any = None, until: Any = None, **filters: Any) -> pd.DataFrame:
    """Budget alerts as a DataFrame (oldest first).

    Columns: ``id``, ``ts``, ``kind`` (``threshold`` or ``refused``), ``budget``, ``scope``,
    ``org``, ``project``, ``user``, ``threshold`` (fraction), ``percent_used``,
    ``spent_usd``, ``limit_usd``, ``call_cost_usd``, ``period_start``, ``acknowledged``,
    ``metadata``. Filters: ``org``, ``project``, ``user``, ``budget``, ``scope``, ``kind``,
    and ``acknowledged=True/False``.
    """
    if (team := _team()) is not None:
        return team.alerts(since, until, **filters)
    from .alerting.query import fetch_alerts
    from .tracker import get_tracker

    return fetch_alerts(get_tracker().store, since, until, **filters)


def acknowledge_alerts(ids: int | list[int] | None = None) -> int:
    """Acknowledge alerts by id (all unacknowledged ones when ``ids`` is None)."""
    if (team := _team()) is not None:
        return team.acknowledge_alerts(ids)
    from .alerting.query import acknowledge
    from .tracker import get_tracker

    return acknowledge(get_tracker().store, ids)


def _team() -> GatewayClient | None:
    """The gateway's data API in team mode with a credential (the kernel then opens no
    store for records, budgets and alerts), else ``None``."""
    from .teamclient import client

    return client()


def on_alert(callback: Callable[[BudgetThresholdReached], Any]) -> None:
    """Call ``callback(event)`` for every ``BudgetThresholdReached`` this process fires."""
    from .alerting.listeners import on_alert as _on_alert

    _on_alert(callback)


def dashboard(**options: Any) -> Any:
    """A live ipywidgets dashboard: budget gauges per level, spending trend, breakdowns
    by model/user/project, recent alerts and real-time metrics.

    Refreshes by itself (throttled) as calls are recorded in this kernel, and filters by
    org, project, user and period. Options: ``org``, ``project``, ``user``, ``period``
    (``"24h"``, ``"7d"``, ``"30d"``, ``"month"``), ``live`` (default ``True``) and
    ``min_interval`` (seconds between live refreshes, default 2). In team mode it reads
    through the gateway, scoped by role (see :mod:`llmspend.notebook.widgets`).
    """
    from .extras import DASHBOARD, require_extra

    require_extra("llmspend.dashboard()", *DASHBOARD)
    from .notebook.widgets import dashboard as _dashboard

    return _dashboard(**options)


def set_webhook(url: str | None, *, format: str = "auto") -> None:
    """POST every alert to ``url`` as JSON (``format="slack"``: Slack's ``{"text"}``)."""
    from .alerting.listeners import set_webhook as _set_webhook

    _set_webhook(url, format=format)


_LAZY = {
    "BudgetThresholdReached": ("alerting.events", "BudgetThresholdReached"),
    "Tracker": ("tracker", "Tracker"),
    "Budget": ("budgets.spec", "Budget"),
    "BudgetStatus": ("budgets.spec", "BudgetStatus"),
    "Price": ("pricing", "Price"),
    # The provider plugin API (docs/plugins.md).
    "Call": ("call", "Call"),
    "Usage": ("call", "Usage"),
    "begin_call": ("pipeline", "begin_call"),
    "Patch": ("plugins", "Patch"),
    "ProviderPlugin": ("plugins", "ProviderPlugin"),
    "register_provider": ("plugins", "register_provider"),
    # Where the transport taps look for provider calls besides the providers' own hosts.
    "declare_endpoint": ("dialects.hosts", "declare_endpoint"),
    # Team mode: how to point the SDKs at the gateway.
    "team_hint": ("teammode", "team_hint"),
}


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext llmspend``: install the hooks and register the magics."""
    from .notebook.extension import load

    load(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    """``%unload_ext llmspend``: uninstall the hooks (the SDKs are restored exactly)."""
    from .notebook.extension import unload

    unload(ipython)


def __getattr__(name: str) -> Any:  # lazy, so that `import llmspend` stays light
    if name == "analytics":
        import importlib

        return importlib.import_module(".analytics", __name__)
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(f".{module}", __name__), attr)
    raise AttributeError(f"module 'llmspend' has no attribute {name!r}")
