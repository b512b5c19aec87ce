"""Reconciliation: what a provider billed against what llmspend recorded, per UTC day ×
provider × model (and project where the export has it).

``llmspend.reconcile(FILE)`` / ``llmspend reconcile FILE`` read a provider's own cost
export (see :mod:`llmspend.reconcile.sources`), sum the store's calls over the same days
and models, and give one line per day × provider × model: billed, recorded, the
difference in $ and %, and a ``state``: ``match`` (within ``tolerance_usd``),
``differs``, ``not recorded`` (billed calls llmspend never saw: a day or model missing
from the store) or ``not billed``.
"""

from __future__ import annotations

import datetime as dt
import os
from collections import defaultdict
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from ..errors import ValidationError
from ..exchange import detect_format
from ..tracker import get_tracker
from ..usage import fetch_records
from .sources import BilledLine, Export, model_key, read_export

if TYPE_CHECKING:
    import pandas as pd

    from ..tracker import Tracker

__all__ = [
    "COLUMNS",
    "DEFAULT_TOLERANCE_USD",
    "BilledLine",
    "Export",
    "Reconciliation",
    "model_key",
    "read_export",
    "reconcile",
]

#: Below this difference (USD) a line matches: providers round each line item.
DEFAULT_TOLERANCE_USD = Decimal("0.01")
#: The providers whose recorded calls a provider's export bills.
PROVIDERS = {"openai": ("openai",), "anthropic": ("anthropic",), "google": ("google",)}
COLUMNS = (
    "day", "provider", "model", "project", "billed_usd", "recorded_usd", "diff_usd",
    "diff_pct", "calls", "state",
)  # fmt: skip
_MONEY = ("billed_usd", "recorded_usd", "diff_usd")


class Reconciliation(NamedTuple):
    """The result: ``frame`` (one row per day × provider × model [× project], the
    :data:`COLUMNS`), the export's ``source``, and the days it covers."""

    frame: pd.DataFrame
    source: str
    first_day: dt.date | None
    last_day: dt.date | None

    @property
    def differences(self) -> pd.DataFrame:
        """Only the lines that do not match."""
        return self.frame[self.frame["state"] != "match"].reset_index(drop=True)

    @property
    def totals(self) -> dict[str, Decimal]:
        """Billed, recorded and their difference over the whole export."""
        billed = sum(self.frame["billed_usd"], Decimal(0))
        recorded = sum(self.frame["recorded_usd"], Decimal(0))
        return {"billed_usd": billed, "recorded_usd": recorded, "diff_usd": billed - recorded}

    def write(self, path: str | os.PathLike[str], fmt: str | None = None) -> int:
        """Write the lines to CSV or Parquet (money exact); returns how many."""
        return write_frame(self.frame, path, fmt)

    def __repr__(self) -> str:
        t = self.totals
        span = f"{self.first_day} to {self.last_day}" if self.first_day else "no days"
        return (
            f"<llmspend reconciliation ({self.source}, {span}): billed ${t['billed_usd']}, "
            f"recorded ${t['recorded_usd']}, {len(self.differences)} of {len(self.frame)} "
            "lines differ>"
        )


def _pricer(tracker: Tracker) -> Any:
    def price(model: str, i: int, c: int, o: int, day: dt.date) -> Decimal | None:
        p = tracker.pricebook.price(model, provider="openai", input_tokens=i,
                                    cached_input_tokens=c, output_tokens=o, at=day)  # fmt: skip
        return p.total_usd

    return price


def reconcile(
    source: Any,
    *,
    providers: Any = None,
    by_project: bool = False,
    tolerance_usd: Decimal | str | float = DEFAULT_TOLERANCE_USD,
    tracker: Tracker | None = None,
) -> Reconciliation:
    """Reconcile a provider's cost export against the store.

    ``source``: a path to the export (``.json``/``.csv``), its JSON text or data, or the
    openai SDK's ``admin.organization.usage.costs()`` result. ``providers``: the recorded
    provider names the export bills (default: the export's own provider; a proxy or the
    simulator records ``openai-compatible``). ``by_project``: split by the export's project
    (OpenAI project id, Anthropic workspace, Google Cloud project) too; the store's
    projects are llmspend names, so recorded amounts then stay on the project-less line.
    """
    tolerance = _tolerance(tolerance_usd)
    tracker = tracker or get_tracker()
    export = read_export(source, price=_pricer(tracker))
    if isinstance(providers, str):
        providers = [providers]
    recorded_as = list(providers or PROVIDERS.get(export.provider, (export.provider,)))
    billed: dict[tuple[dt.date, str, str | None], Decimal] = defaultdict(Decimal)
    for line in export.lines:
        billed[(line.day, line.model, line.project if by_project else None)] += line.usd
    # the days the export covers: its buckets' (a day billed nothing is still compared)
    days = sorted({k[0] for k in billed} | {d for d in (export.first_day, export.last_day) if d})
    recorded: dict[tuple[dt.date, str, str | None], Decimal] = defaultdict(Decimal)
    calls: dict[tuple[dt.date, str, str | None], int] = defaultdict(int)
    if days:
        until = days[-1] + dt.timedelta(days=1)
        frame = fetch_records(tracker.store, days[0], until, provider=recorded_as,
                              columns=["ts", "model", "cost_usd", "status"])  # fmt: skip
        for ts, model, cost, status in zip(frame["ts"], frame["model"], frame["cost_usd"],
                                           frame["status"], strict=True):  # fmt: skip
            if status == "refused":  # never sent: nothing the provider could bill
                continue
            day = ts.date() if ts.tzinfo is None else ts.astimezone(dt.UTC).date()
            key: tuple[dt.date, str, str | None] = (day, model_key(model), None)
            recorded[key] += cost if cost is not None and cost == cost else Decimal(0)
            calls[key] += 1
    rows = []
    for key in sorted(set(billed) | set(recorded), key=lambda k: (k[0], k[1], k[2] or "")):
        day, model, project = key
        b, r = billed.get(key, Decimal(0)), recorded.get(key, Decimal(0))
        diff = b - r
        if abs(diff) <= tolerance:
            state = "match"
        elif key in billed and calls.get(key, 0) == 0:
            state = "not recorded"
        elif key not in billed:
            state = "not billed"
        else:
            state = "differs"
        pct = float(diff / r * 100) if r else (None if not b else float("inf"))
        rows.append((day, export.provider, model, project, b, r, diff, pct, calls.get(key, 0),
                     state))  # fmt: skip
    import pandas as pd

    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    return Reconciliation(frame, export.source, days[0] if days else None,
                          days[-1] if days else None)  # fmt: skip


def _tolerance(value: Decimal | str | float) -> Decimal:
    """``tolerance_usd`` as a ``Decimal``: a finite amount, zero or more."""
    try:
        tolerance = Decimal(str(value).strip())
    except InvalidOperation:
        tolerance = Decimal("NaN")
    if not tolerance.is_finite() or tolerance < 0:
        raise ValidationError(f"tolerance_usd: expected an amount of 0 or more, got {value!r}")
    return tolerance


def write_frame(frame: pd.DataFrame, path: str | os.PathLike[str], fmt: str | None = None) -> int:
    """Write reconciliation lines to ``.csv`` or ``.parquet`` (money as exact decimals)."""
    fmt = detect_format(path, fmt)
    target = Path(path).expanduser()
    if not target.parent.is_dir():
        raise ValidationError(f"no such directory: {str(target.parent)!r}")
    out = frame.copy()
    out["day"] = [d.isoformat() for d in out["day"]]
    if fmt == "csv":
        for col in _MONEY:
            out[col] = [str(v) for v in out[col]]
        out.to_csv(target, index=False)
    else:
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise ValidationError(
                "Parquet needs pyarrow: pip install 'llmspend[parquet]'"
            ) from None
        table = pa.Table.from_pandas(out.drop(columns=list(_MONEY)), preserve_index=False)
        for col in _MONEY:
            table = table.append_column(col, pa.array(list(out[col]), type=pa.decimal128(38, 9)))
        pq.write_table(table.select(list(COLUMNS)), target)
    return len(out)
