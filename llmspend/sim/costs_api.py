"""The OpenAI organization Costs API, simulated: ``GET /v1/organization/costs``.

A test says what the organization was billed with :func:`set_costs` (day, line item,
amount, project); the endpoint serves it as the real API does: one bucket per UTC day
from ``start_time`` (inclusive) to ``end_time`` (exclusive, default now), ``limit``
buckets a page (default 7, at most 180) with ``has_more``/``next_page``, each result an
``organization.costs.result`` with ``amount`` in dollars, ``line_item`` and
``project_id``. It asks for an admin key (``Authorization: Bearer ...``) like the real one.
"""

from __future__ import annotations

import datetime as dt
import threading
import weakref
from collections.abc import Iterable, Mapping
from typing import Any

from .exchange import Exchange

__all__ = ["PATH", "clear_costs", "handle", "set_costs"]

PATH = "/organization/costs"
_DAY = 86_400

_lock = threading.Lock()
_billed: weakref.WeakKeyDictionary[Any, list[dict[str, Any]]] = weakref.WeakKeyDictionary()


def set_costs(sim: Any, lines: Iterable[Mapping[str, Any]]) -> None:
    """What ``sim`` bills: each line has ``day`` (a date or ISO date), ``line_item``
    (``"gpt-4o-mini-2024-07-18, input"``), ``amount`` (dollars) and optionally
    ``project_id``. Replaces what was set before."""
    clean = []
    for line in lines:
        day = line["day"]
        day = dt.date.fromisoformat(day) if isinstance(day, str) else day
        clean.append({
            "start": int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp()),
            "line_item": str(line["line_item"]),
            "amount": float(line["amount"]),
            "project_id": line.get("project_id"),
        })  # fmt: skip
    with _lock:
        _billed[sim] = clean


def clear_costs(sim: Any) -> None:
    with _lock:
        _billed.pop(sim, None)


def _int(ex: Exchange, name: str, default: int | None) -> int | None:
    raw = ex.query.get(name)
    if raw in (None, ""):
        return default
    return int(raw)


def handle(ex: Exchange) -> None:
    if ex.method != "GET":
        return ex.send_error(405, "llmspend.sim: the Costs API answers GET")
    if not ex.headers.get("authorization", "").startswith("Bearer "):
        return ex.send_error(401, "llmspend.sim: the Costs API needs an admin key")
    try:
        start = _int(ex, "start_time", None)
        end = _int(ex, "end_time", None) or int(dt.datetime.now(dt.UTC).timestamp())
        limit = min(max(_int(ex, "limit", 7) or 7, 1), 180)
        page = _int(ex, "page", None)
    except ValueError:
        return ex.send_error(400, "llmspend.sim: start_time, end_time, limit and page are numbers")
    if start is None:
        return ex.send_error(400, "llmspend.sim: start_time is required")
    start -= start % _DAY
    first = page if page is not None else start
    with _lock:
        billed = list(_billed.get(ex.sim, ()))
    buckets: list[dict[str, Any]] = []
    day = first
    while day < end and len(buckets) < limit:
        results = [
            {
                "object": "organization.costs.result",
                "amount": {"value": b["amount"], "currency": "usd"},
                "line_item": b["line_item"],
                "project_id": b["project_id"],
            }
            for b in billed
            if b["start"] == day
        ]
        buckets.append(
            {"object": "bucket", "start_time": day, "end_time": day + _DAY, "results": results}
        )
        day += _DAY
    more = day < end
    ex.send_json(
        {
            "object": "page",
            "data": buckets,
            "has_more": more,
            "next_page": str(day) if more else None,
        }
    )
