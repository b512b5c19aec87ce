"""What every analytics function shares: argument checking, building the frames, and
:func:`served` (team mode: the call goes to the gateway)."""

from __future__ import annotations

import datetime as dt
import functools
import inspect
from collections.abc import Callable, Iterable, Sequence
from fractions import Fraction
from typing import TYPE_CHECKING, Any, TypeVar

from .. import teamclient
from ..errors import ValidationError
from ..money import nanos_to_usd
from ..store import rollups
from ..store.rollups import MEASURES
from ..timeutil import parse_when
from ..tracker import get_tracker
from .query import Acc, check_filters

if TYPE_CHECKING:
    import pandas as pd

    from ..store.engine import Store

__all__ = [
    "MEASURE_COLUMNS",
    "Filter",
    "empty_frame",
    "filters_of",
    "measures_frame",
    "resolve_store",
    "served",
    "window",
]

#: A filter value: a name or a list of names (``None``: no filter).
Filter = str | Sequence[str] | None

#: The measure columns of every usage frame, in order.
MEASURE_COLUMNS: tuple[str, ...] = (
    "cost_usd", "calls", "input_tokens", "output_tokens", "cached_input_tokens",
    "cache_write_tokens", "reasoning_tokens", "error_calls", "refused_calls", "unpriced_calls",
)  # fmt: skip
_SOURCE = {name: MEASURES.index("cost_nanos" if name == "cost_usd" else name)
           for name in MEASURE_COLUMNS}  # fmt: skip
COST = MEASURES.index("cost_nanos")
CALLS = MEASURES.index("calls")


F = TypeVar("F", bound=Callable[..., Any])


def served(function: F) -> F:
    """An analytics function that, called without ``store=`` in team mode, runs on the
    gateway (``GatewayClient.analytics``) with the arguments it was given: the same frame,
    over what the caller may read. Otherwise it runs here."""
    signature = inspect.signature(function)
    spread = {n for n, p in signature.parameters.items() if p.kind is p.VAR_KEYWORD}

    @functools.wraps(function)
    def run(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("store") is None and (gateway := teamclient.client()) is not None:
            arguments: dict[str, Any] = {}
            for name, value in signature.bind(*args, **kwargs).arguments.items():
                if name in spread:
                    arguments.update(value)
                elif name != "store":
                    arguments[name] = value
            return gateway.analytics(function.__name__, arguments)
        return function(*args, **kwargs)

    return run  # type: ignore[return-value]


def resolve_store(store: Store | None) -> Store:
    """``store``, else the current tracker's (:func:`served` has sent team-mode calls on)."""
    return store if store is not None else get_tracker().store


def rebuild_rollups(store: Store | None = None) -> dict[str, int]:
    """Recreate the rollups from the raw usage rows of ``store`` (default: the current
    tracker's), in one write transaction: ``{"hourly": rows, "daily": rows}``, identical to
    the tables the write path maintains. Run it after changing raw rows by hand."""
    if store is None and teamclient.active():  # the gateway's store is the gateway's to keep
        raise teamclient.not_served(
            "llmspend.analytics.rebuild_rollups()",
            "the gateway's administrator runs `llmspend db rebuild-rollups` on its database",
        )
    return rollups.rebuild_rollups(resolve_store(store))


def window(since: Any, until: Any) -> tuple[dt.datetime | None, dt.datetime | None]:
    """Parse since/until (inclusive/exclusive) to naive UTC; since after until is an error."""
    lo = parse_when(since, name="since")
    hi = parse_when(until, name="until")
    if lo is not None and hi is not None and lo > hi:
        raise ValidationError(f"since ({lo.isoformat()}Z) is after until ({hi.isoformat()}Z)")
    return lo, hi


def filters_of(
    org: Filter, project: Filter, user: Filter, provider: Filter, model: Filter, extra: dict
) -> dict[str, Any]:
    """The set filters, validated like ``records()`` filters (unknown names are errors)."""
    return check_filters(
        {"org": org, "project": project, "user": user, "provider": provider, "model": model} | extra
    )


def usd(nanos: int) -> Any:
    return nanos_to_usd(int(nanos))


def share(part: int, whole: int) -> float:
    """``part / whole`` as the nearest float (0.0 when whole is 0)."""
    return float(Fraction(part, whole)) if whole else 0.0


def measures_frame(
    rows: Iterable[tuple[tuple[Any, ...], list[int]]],
    key_names: Sequence[str],
    *,
    key_dtypes: dict[str, Any] | None = None,
) -> pd.DataFrame:
    """A frame of ``key_names`` columns then :data:`MEASURE_COLUMNS` from (key, sums) rows."""
    import pandas as pd

    rows = list(rows)
    data: dict[str, Any] = {}
    for i, name in enumerate(key_names):
        dtype = (key_dtypes or {}).get(name, object)
        data[name] = pd.Series([r[0][i] for r in rows], dtype=dtype)
    for name in MEASURE_COLUMNS:
        src = _SOURCE[name]
        if name == "cost_usd":
            data[name] = pd.Series([usd(r[1][src]) for r in rows], dtype=object)
        else:
            data[name] = pd.Series([int(r[1][src]) for r in rows], dtype="int64")
    return pd.DataFrame(data, columns=[*key_names, *MEASURE_COLUMNS])


def period_dtype(tz: dt.tzinfo) -> Any:
    import pandas as pd

    return pd.DatetimeTZDtype(unit="us", tz=tz)


def empty_frame(columns: dict[str, Any]) -> pd.DataFrame:
    """An empty frame with these columns and dtypes."""
    import pandas as pd

    return pd.DataFrame({c: pd.Series([], dtype=t) for c, t in columns.items()})


def acc_rows(acc: Acc) -> list[tuple[tuple[Any, ...], list[int]]]:
    """Accumulator entries of a single-period query as (key, sums)."""
    return [(key, sums) for (_, key), sums in acc.items()]


def sort_key(value: Any) -> tuple[int, Any]:
    """Sort None last and mixed types stably."""
    if value is None:
        return (2, "")
    if isinstance(value, str):
        return (0, value)
    return (1, str(value))
