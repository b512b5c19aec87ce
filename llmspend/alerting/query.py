"""Reading and acknowledging alerts."""

from __future__ import annotations

import datetime as dt
import json
import numbers
import sys
from collections.abc import Iterable
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update

from ..config import default_attribution
from ..errors import ValidationError
from ..money import nanos_to_usd
from ..store.models import Alert, WebhookDelivery
from ..timeutil import parse_when, utcnow
from ..usage import build_filters

if TYPE_CHECKING:
    import pandas as pd

    from ..store.engine import Store

__all__ = ["ALERT_COLUMNS", "acknowledge", "fetch_alerts", "fetch_deliveries"]

ALERT_COLUMNS = (
    "id",
    "ts",
    "kind",
    "budget",
    "scope",
    "org",
    "project",
    "user",
    "threshold",
    "percent_used",
    "spent_usd",
    "limit_usd",
    "call_cost_usd",
    "period_start",
    "acknowledged",
    "metadata",
)

_ALERT_SELECT = (
    Alert.id,
    Alert.ts,
    Alert.kind,
    Alert.budget_name,
    Alert.scope,
    Alert.org_name,
    Alert.project_name,
    Alert.user_name,
    Alert.threshold_ppm,
    Alert.percent_used,
    Alert.spent_nanos,
    Alert.limit_nanos,
    Alert.call_cost_nanos,
    Alert.period_start,
    Alert.acknowledged,
    Alert.meta.label("meta"),
)

_FILTERS = {
    "org": Alert.org_name,
    "project": Alert.project_name,
    "user": Alert.user_name,
    "budget": Alert.budget_name,
    "scope": Alert.scope,
    "kind": Alert.kind,
}


def fetch_alerts(
    store: Store,
    since: Any = None,
    until: Any = None,
    *,
    acknowledged: bool | None = None,
    limit: int | None = None,
    **filters: Any,
) -> pd.DataFrame:
    """Alerts as a DataFrame (oldest first), with the columns of ``ALERT_COLUMNS``."""
    import pandas as pd

    lo, hi = parse_when(since, name="since"), parse_when(until, name="until")
    if acknowledged is not None and not isinstance(acknowledged, (bool, _np_bool())):
        raise ValidationError(f"acknowledged must be True, False or None, got {acknowledged!r}")
    if limit is not None and (_not_int(limit) or limit < 0):
        raise ValidationError(f"limit must be a whole number >= 0, got {limit!r}")
    stmt = select(*_ALERT_SELECT).where(*build_filters(filters, _FILTERS))
    if lo is not None:
        stmt = stmt.where(Alert.ts >= lo)
    if hi is not None:
        stmt = stmt.where(Alert.ts < hi)
    if acknowledged is not None:
        stmt = stmt.where(Alert.acknowledged.is_(bool(acknowledged)))
    if limit is not None:
        stmt = stmt.order_by(Alert.id.desc()).limit(limit)
    with store.begin() as conn:
        rows = sorted(conn.execute(stmt).all(), key=lambda r: r.id)
    utc = dt.UTC
    data = [
        {
            "id": r.id,
            "ts": r.ts.replace(tzinfo=utc),
            "kind": r.kind,
            "budget": r.budget_name,
            "scope": r.scope,
            "org": r.org_name,
            "project": r.project_name,
            "user": r.user_name,
            "threshold": Decimal(r.threshold_ppm) / 1_000_000,
            "percent_used": r.percent_used,
            "spent_usd": nanos_to_usd(r.spent_nanos),
            "limit_usd": nanos_to_usd(r.limit_nanos),
            "call_cost_usd": nanos_to_usd(r.call_cost_nanos),
            "period_start": r.period_start.replace(tzinfo=utc),
            "acknowledged": bool(r.acknowledged),
            "metadata": json.loads(r.meta) if r.meta else {},
        }
        for r in rows
    ]
    frame = pd.DataFrame(data, columns=list(ALERT_COLUMNS))
    for col in ("threshold", "spent_usd", "limit_usd", "call_cost_usd"):
        frame[col] = frame[col].astype(object)
    return frame


def acknowledge(
    store: Store, ids: int | Iterable[int] | None = None, *, by: str | None = None
) -> int:
    """Mark alerts acknowledged (all unacknowledged ones when ``ids`` is None)."""
    stmt = update(Alert).where(Alert.acknowledged.is_(False))
    if ids is not None:
        # one id, or any iterable of them (a list, ``alerts().id``: numpy integers too)
        many = not isinstance(ids, (numbers.Integral, str, bytes)) and isinstance(ids, Iterable)
        given: list[Any] = list(ids) if many else [ids]  # type: ignore[arg-type]
        if any(_not_int(i) for i in given):
            raise ValidationError(f"alert ids must be integers, got {ids!r}")
        wanted = [int(i) for i in given]
        if not wanted:  # e.g. alerts(acknowledged=False).id when there are none
            return 0
        with store.begin() as conn:
            known = {r[0] for r in conn.execute(select(Alert.id).where(Alert.id.in_(wanted)))}
        missing = sorted(set(wanted) - known)
        if missing:
            raise ValidationError(f"no alert with id {', '.join(map(str, missing))}")
        stmt = stmt.where(Alert.id.in_(wanted))
    with store.begin(write=True) as conn:
        res = conn.execute(
            stmt.values(
                acknowledged=True,
                acknowledged_at=utcnow(),
                acknowledged_by=(by or default_attribution()[2])[:200],
            )
        )
        return int(res.rowcount or 0)


def _not_int(value: Any) -> bool:
    return isinstance(value, bool) or not isinstance(value, numbers.Integral)


def _np_bool() -> type:
    """numpy's bool type when numpy is loaded (a DataFrame cell), else ``bool``."""
    np = sys.modules.get("numpy")
    return bool if np is None else np.bool_


def fetch_deliveries(store: Store) -> pd.DataFrame:
    """Webhook deliveries (target host only), oldest first."""
    import pandas as pd

    with store.begin() as conn:
        rows = conn.execute(
            select(
                WebhookDelivery.ts,
                WebhookDelivery.alert_id,
                WebhookDelivery.target,
                WebhookDelivery.status,
                WebhookDelivery.attempts,
                WebhookDelivery.http_status,
                WebhookDelivery.error,
            ).order_by(WebhookDelivery.id)
        ).all()
    return pd.DataFrame(
        [
            {
                "ts": r.ts.replace(tzinfo=dt.UTC),
                "alert_id": r.alert_id,
                "target": r.target,
                "status": r.status,
                "attempts": r.attempts,
                "http_status": r.http_status,
                "error": r.error,
            }
            for r in rows
        ],
        columns=["ts", "alert_id", "target", "status", "attempts", "http_status", "error"],
    )
