"""Output for the CLI: aligned tables for people, JSON for scripts."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any, TextIO

from ..money import format_usd

__all__ = ["jsonable", "print_json", "print_table"]


def jsonable(value: Any) -> Any:
    """Decimals as exact strings, datetimes as ISO 8601, dataclasses as dicts."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: jsonable(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return value


def print_json(value: Any, file: TextIO | None = None) -> None:
    print(json.dumps(jsonable(value), indent=2, sort_keys=False), file=file)


def _cell(value: Any, money: bool) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if money and isinstance(value, Decimal):
        return format_usd(value)
    if isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%d %H:%M %Z").strip()
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def print_table(rows: Iterable[Mapping[str, Any]], columns: Sequence[str]) -> None:
    rows = list(rows)
    if not rows:
        print("(none)")
        return
    cells = [[_cell(r.get(c), c.endswith("_usd")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
