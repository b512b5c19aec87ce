"""Usage records: the ``records()`` frame and bulk ``ingest()``.

``ingest`` validates every row before writing anything (an ``IngestError`` names the row and
field), prices rows without ``cost_usd`` as of their ``ts``, ``service_tier`` and ``api``, and
writes in batches inside one transaction, so a failure leaves the store unchanged.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import math
import numbers
import operator
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import Connection

from .attribution import validate_name
from .errors import IngestError, ValidationError
from .money import nanos_to_usd, usd_to_nanos
from .names import name_list
from .store import arrowio, segments
from .store.fastsql import SQL, Tx, db_time_for, py_time
from .store.hierarchy import ensure_entities
from .store.models import UsageRecord
from .timeutil import MAX_TIME as _MAX_TIME
from .timeutil import MIN_TIME as _MIN_TIME
from .timeutil import parse_when, utcnow

if TYPE_CHECKING:
    import pandas as pd

    from .store.engine import Store

__all__ = ["FILTERS", "RECORD_COLUMNS", "fetch_records", "ingest_rows", "recorded_tokens"]

#: Columns of ``records()``, in order.
RECORD_COLUMNS: tuple[str, ...] = (
    "id", "ts", "request_id", "provider", "api", "model", "requested_model",
    "org", "project", "user",
    "input_tokens", "cached_input_tokens", "cache_write_tokens", "output_tokens",
    "reasoning_tokens", "cost_usd", "estimate_usd", "price_status", "price_ref", "status",
    "error_type", "latency_ms", "streamed", "usage_estimated", "tags", "session_id",
    "notebook_path", "service_tier",
)  # fmt: skip

STATUSES = frozenset({"ok", "error", "refused", "partial"})
PRICE_STATUSES = frozenset({"priced", "override", "unknown", "imported"})

#: records() filter name → store column.
FILTERS: dict[str, Any] = {
    "org": UsageRecord.org_name,
    "project": UsageRecord.project_name,
    "user": UsageRecord.user_name,
    "provider": UsageRecord.provider,
    "model": UsageRecord.model,
    "api": UsageRecord.api,
    "status": UsageRecord.status,
    "price_status": UsageRecord.price_status,
    "session_id": UsageRecord.session_id,
    "request_id": UsageRecord.request_id,
}

_TOKEN_FIELDS = ("input_tokens", "cached_input_tokens", "cache_write_tokens",
                 "output_tokens", "reasoning_tokens")  # fmt: skip
_MAX_TOKENS = 2**40  # as in the pipeline: keeps every cost and sum inside a BIGINT
_MAX_USD = Decimal(10**9)  # one call costing $1B is a typo; keeps sums inside BIGINT
_MAX_NANOS = 10**18
_VALID_NAMES: set[str] = set()  # org/project/user names already checked
_STR_LIMITS = {
    "request_id": 200, "provider": 32, "api": 64, "model": 200, "requested_model": 200,
    "org": 200, "project": 200, "user": 200, "price_ref": 200, "error_type": 200,
    "session_id": 64, "notebook_path": 500, "service_tier": 32,
}  # fmt: skip
_BATCH = 5000


class Pricer(Protocol):
    def price_nanos(
        self,
        provider: str,
        model: str,
        input_tokens: int,
        cached_input_tokens: int,
        cache_write_tokens: int,
        output_tokens: int,
        reasoning_tokens: int,
        at_epoch: float,
        response_model: str | None = None,
        tier: str | None = None,  # the service tier (a row's ``service_tier``)
        api: str | None = None,
    ) -> tuple[int | None, str, str | None]: ...


def _missing(v: Any) -> bool:
    if v is None:
        return True
    if isinstance(v, float) and math.isnan(v):
        return True
    # pandas NA / NaT
    return type(v).__name__ in ("NAType", "NaTType")


def _tokens(v: Any, row: int, field: str) -> int:
    if type(v) is int:
        if 0 <= v < _MAX_TOKENS:
            return v
        raise IngestError(row, field, f"token counts must be between 0 and 2**40, got {v}")
    if _missing(v):
        return 0
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise IngestError(row, field, f"expected a whole number of tokens, got {v!r}")
    f = float(v)
    if not f.is_integer():
        raise IngestError(row, field, f"expected a whole number of tokens, got {v!r}")
    return _tokens(int(f), row, field)


def _text(v: Any, row: int, field: str, *, required: bool = False) -> str | None:
    if type(v) is str and v:
        if len(v) > _STR_LIMITS[field]:
            raise IngestError(row, field, f"longer than {_STR_LIMITS[field]} characters")
        return v
    if _missing(v) or v == "":
        if required:
            raise IngestError(row, field, "is required and missing")
        return None
    raise IngestError(row, field, f"expected text, got {type(v).__name__} {v!r}")


def _ts(v: Any, row: int) -> dt.datetime:
    if type(v) is dt.datetime and v.tzinfo is None and _MIN_TIME <= v < _MAX_TIME:
        return v  # the common case, fast
    if _missing(v):
        raise IngestError(row, "ts", "is required and missing")
    if isinstance(v, (dt.datetime, dt.date, str)) or hasattr(v, "to_pydatetime"):
        try:
            parsed = parse_when(v, name="ts")
        except ValidationError as e:
            why = str(e).removeprefix("ts: ")
            if not why.startswith(repr(v)):  # not "... is outside 1970-01-01 .. 9998-12-31"
                why = f"cannot parse {v!r} as a timestamp"
            raise IngestError(row, "ts", why) from None
        assert parsed is not None
        return parsed
    raise IngestError(row, "ts", f"expected a datetime or ISO string, got {type(v).__name__}")


def _money_nanos(v: Any, row: int, field: str) -> int | None:
    if _missing(v):
        return None
    if isinstance(v, bool):
        raise IngestError(row, field, f"expected an amount of USD, got {v!r}")
    try:
        if isinstance(v, float):  # e.g. from a CSV read by pandas: take the shortest repr
            if not math.isfinite(v):
                raise IngestError(row, field, f"must be finite, got {v!r}")
            dec = Decimal(repr(v))
        elif isinstance(v, (Decimal, int, str, numbers.Integral)):
            dec = (
                Decimal(v.strip())
                if isinstance(v, str)
                else Decimal(int(v) if not isinstance(v, Decimal) else v)
            )
        else:
            raise IngestError(row, field, f"expected an amount of USD, got {type(v).__name__}")
    except InvalidOperation:
        raise IngestError(row, field, f"not an amount of USD: {v!r}") from None
    if not dec.is_finite() or dec < 0 or dec >= _MAX_USD:
        raise IngestError(row, field, f"must be a finite amount >= 0 and < $1B, got {v!r}")
    return usd_to_nanos(dec)


def _flag(v: Any, row: int, field: str) -> bool:
    if _missing(v):
        return False
    if isinstance(v, bool) or type(v).__name__ == "bool_":
        return bool(v)
    if isinstance(v, int) and v in (0, 1):
        return bool(v)
    raise IngestError(row, field, f"expected true or false, got {v!r}")


def _tags(v: Any, row: int) -> str | None:
    if _missing(v):
        return None
    if isinstance(v, str):
        try:
            v = json.loads(v)
        except ValueError:
            raise IngestError(row, "tags", "a string must be a JSON object") from None
    if not isinstance(v, Mapping):
        raise IngestError(row, "tags", f"expected a mapping of tags, got {type(v).__name__}")
    if not v:
        return None
    out = {}
    for key, val in v.items():
        if not isinstance(key, str) or not isinstance(val, (str, int, float, bool)):
            raise IngestError(row, "tags", f"tag {key!r} must map text to a scalar")
        if isinstance(val, float) and not math.isfinite(val):
            raise IngestError(row, "tags", f"tag {key!r} must be finite, got {val!r}")
        out[key] = val
    return json.dumps(out, sort_keys=True, separators=(",", ":"))


def _latency(v: Any, row: int) -> float | None:
    if type(v) is float and 0 <= v < 1e12:  # the common case, fast
        return v
    if _missing(v):
        return None
    try:
        ok = not isinstance(v, bool) and isinstance(v, numbers.Real) and 0 <= float(v) < 1e12
    except OverflowError:
        ok = False
    if not ok:
        raise IngestError(row, "latency_ms", f"expected a duration >= 0 in ms, got {v!r}")
    return float(v)


def _rows_of(rows: Any) -> Sequence[Mapping[str, Any]]:
    if hasattr(rows, "to_dict") and hasattr(rows, "columns"):
        return rows.to_dict("records")
    if isinstance(rows, Mapping):
        raise ValidationError("ingest takes a DataFrame or an iterable of dicts, not one dict")
    if isinstance(rows, (str, bytes)):
        raise ValidationError("ingest takes a DataFrame or an iterable of dicts")
    try:
        return list(rows)
    except TypeError:
        raise ValidationError(
            f"ingest takes a DataFrame or an iterable of dicts, not {type(rows).__name__}"
        ) from None


_OPTIONAL_TEXT = {
    "request_id": "request_id", "api": "api", "requested_model": "requested_model",
    "org": "org_name", "project": "project_name", "user": "user_name",
    "error_type": "error_type", "session_id": "session_id", "notebook_path": "notebook_path",
}  # fmt: skip


def validate_row(
    i: int, r: Mapping[str, Any], defaults: tuple[str, str, str], pricer: Pricer
) -> dict[str, Any]:
    """Validate and normalize one ingest row into store columns (prices it if needed).

    Only the columns present are checked (absent ones take their defaults), which keeps
    bulk ingest fast for the common, narrow rows.
    """
    if not isinstance(r, Mapping):
        raise IngestError(i, None, f"expected a mapping of columns, got {type(r).__name__}")
    out: dict[str, Any] = {
        "ts": _ts(r.get("ts"), i),
        "request_id": None, "provider": _text(r.get("provider"), i, "provider", required=True),
        "api": "unknown", "model": _text(r.get("model"), i, "model", required=True),
        "requested_model": None, "org_name": defaults[0], "project_name": defaults[1],
        "user_name": defaults[2], "input_tokens": 0, "cached_input_tokens": 0,
        "cache_write_tokens": 0, "output_tokens": 0, "reasoning_tokens": 0,
        "cost_nanos": None, "estimate_nanos": None, "price_status": None, "price_ref": None,
        "status": "ok", "error_type": None, "latency_ms": None, "streamed": False,
        "usage_estimated": False, "tags": None, "session_id": None, "notebook_path": None,
        "record_uid": None, "service_tier": None,
    }  # fmt: skip
    cost: int | None = None
    pstatus: Any = None
    for key, value in r.items():
        if key in _OPTIONAL_TEXT:
            text = _text(value, i, key)
            if text is not None:
                if key in ("org", "project", "user") and text not in _VALID_NAMES:
                    try:
                        validate_name(key, text)
                    except ValidationError as exc:
                        raise IngestError(i, key, str(exc)) from None
                    if len(_VALID_NAMES) < 100_000:
                        _VALID_NAMES.add(text)
                out[_OPTIONAL_TEXT[key]] = text
        elif key in _TOKEN_FIELDS:
            out[key] = _tokens(value, i, key)
        elif key in ("ts", "provider", "model", "id"):
            continue
        elif key == "cost_usd":
            if cost is None:
                cost = _money_nanos(value, i, "cost_usd")
        elif key == "cost_nanos":
            if not _missing(value):
                if (
                    isinstance(value, bool)
                    or not isinstance(value, numbers.Integral)
                    or not 0 <= int(value) < _MAX_NANOS
                ):
                    raise IngestError(i, key, f"expected whole nanodollars >= 0, got {value!r}")
                cost = int(value)
        elif key == "estimate_usd":
            out["estimate_nanos"] = _money_nanos(value, i, key)
        elif key == "status":
            if not _missing(value):
                if not isinstance(value, str) or value not in STATUSES:
                    raise IngestError(i, key, f"must be one of {sorted(STATUSES)}, got {value!r}")
                out["status"] = value
        elif key == "price_status":
            if not _missing(value):
                if not isinstance(value, str) or value not in PRICE_STATUSES:
                    raise IngestError(
                        i, key, f"must be one of {sorted(PRICE_STATUSES)}, got {value!r}"
                    )
                pstatus = value
        elif key in ("price_ref", "service_tier"):
            out[key] = _text(value, i, key)
        elif key == "latency_ms":
            out["latency_ms"] = _latency(value, i)
        elif key in ("streamed", "usage_estimated"):
            out[key] = _flag(value, i, key)
        elif key == "tags":
            out["tags"] = _tags(value, i)
        else:
            raise IngestError(i, str(key), "unknown column")
    inp, cached, cwrite = out["input_tokens"], out["cached_input_tokens"], out["cache_write_tokens"]
    if cached + cwrite > inp:
        raise IngestError(
            i, "cached_input_tokens",
            f"cached ({cached}) + cache-write ({cwrite}) tokens exceed input tokens ({inp})",
        )  # fmt: skip
    if out["reasoning_tokens"] > out["output_tokens"]:
        raise IngestError(
            i,
            "reasoning_tokens",
            f"reasoning tokens ({out['reasoning_tokens']}) exceed output tokens "
            f"({out['output_tokens']})",
        )
    if cost is not None:
        out["cost_nanos"] = cost
        out["price_status"] = "imported" if pstatus in (None, "unknown") else pstatus
    elif pstatus == "unknown":
        out["price_status"] = "unknown"
    else:
        epoch = out["ts"].replace(tzinfo=dt.UTC).timestamp()
        out["cost_nanos"], out["price_status"], out["price_ref"] = pricer.price_nanos(
            out["provider"], out["model"], inp, cached, cwrite, out["output_tokens"],
            out["reasoning_tokens"], epoch, tier=out["service_tier"], api=out["api"],
        )  # fmt: skip
    return out


def ingest_rows(
    store: Store,
    rows: Any,
    *,
    defaults: tuple[str, str, str],
    pricer: Pricer,
    on_write: Any = None,
) -> int:
    """Validate all ``rows``, then write them in one transaction. Returns the count."""
    source = _rows_of(rows)
    clean = [validate_row(i, r, defaults, pricer) for i, r in enumerate(source)]
    if not clean:
        return 0
    write_usage(store, clean, on_write=on_write)
    return len(clean)


_INSERT_COLUMNS = (
    "ts", "request_id", "provider", "api", "model", "requested_model", "org_name",
    "project_name", "user_name", "input_tokens", "cached_input_tokens", "cache_write_tokens",
    "output_tokens", "reasoning_tokens", "cost_nanos", "estimate_nanos", "price_status",
    "price_ref", "status", "error_type", "latency_ms", "streamed", "usage_estimated", "tags",
    "session_id", "notebook_path", "record_uid", "service_tier",
)  # fmt: skip


_VALUES = operator.itemgetter(*_INSERT_COLUMNS)
_AFTER_TS = operator.itemgetter(*_INSERT_COLUMNS[1:])


def _params(sqlite: bool, row: Mapping[str, Any]) -> tuple[Any, ...]:
    """A row's values in column order (SQLite keeps ``ts`` as text). A row without
    ``service_tier`` (spooled by an older version) has none."""
    if "service_tier" not in row:
        row = {**row, "service_tier": None}
    if sqlite:
        return (db_time_for(True, row["ts"]), *_AFTER_TS(row))
    return _VALUES(row)


@functools.cache
def _insert_sql(dialect: str) -> str:
    mark = "?" if dialect == "sqlite" else "%s"
    # Only constant identifiers are formatted in; every value is a bound parameter.
    return (
        f"INSERT INTO {UsageRecord.__tablename__} ({', '.join(_INSERT_COLUMNS)}) "  # noqa: S608
        f"VALUES ({', '.join([mark] * len(_INSERT_COLUMNS))})"
    )


def insert_once(conn: Connection, row: dict[str, Any]) -> bool:
    """Insert one row unless it is already stored (its ``ts`` and ``record_uid``). True if
    inserted."""
    sql = _insert_sql(conn.dialect.name) + " ON CONFLICT (ts, record_uid) DO NOTHING"
    params = _params(conn.dialect.name == "sqlite", row)
    return conn.exec_driver_sql(sql, params).rowcount == 1


def insert_usage(conn: Connection | Tx, rows: list[dict[str, Any]]) -> None:
    """Insert validated usage rows on an open transaction, in batches.

    Goes through the DBAPI's executemany with positional parameters: the same statement
    SQLAlchemy would send, without per-value Python processing (≈2x faster at 1M rows).
    """
    tx = Tx.of(conn)
    sql = _insert_sql(tx.dialect.name)
    for start in range(0, len(rows), _BATCH):
        batch = rows[start : start + _BATCH]
        params = [_params(tx.sqlite, c) for c in batch]
        if len(params) == 1:  # a live call (the hot path)
            tx.execute(sql, params[0])
        else:
            tx.executemany(sql, params)


_RECORDED_TOKENS = SQL(
    f"SELECT request_id, MAX(input_tokens + output_tokens) AS tokens "  # noqa: S608
    f"FROM {UsageRecord.__tablename__} WHERE ts >= :since AND request_id = :id "
    "GROUP BY request_id"
)
#: How far back a prior response is looked for: providers keep a stored response for
#: 30 days (OpenAI), so one named later is at most that old.
PRIOR_RESPONSE_DAYS = 31


def recorded_tokens(
    conn: Connection | Tx, request_ids: Iterable[str], *, since: dt.datetime | None = None
) -> dict[str, int]:
    """Input plus output tokens of the recorded calls whose provider response id is one
    of ``request_ids`` (the largest row of each), recorded since ``since`` (default: the
    last :data:`PRIOR_RESPONSE_DAYS` days); ids not recorded are absent.

    ``request_id`` has no index (it would slow every insert): each id costs a range scan
    of the usage table's ``ts`` index over those days. The guard asks only for a request
    that names a prior response under a budget, and looks in its recent calls first.
    """
    tx = Tx.of(conn)
    if since is None:
        since = utcnow() - dt.timedelta(days=PRIOR_RESPONSE_DAYS)
    found: dict[str, int] = {}
    for rid in dict.fromkeys(request_ids):
        params = {"id": rid[:200], "since": db_time_for(tx.sqlite, since)}
        row = tx.run(_RECORDED_TOKENS, params).first()
        if row is not None and row.tokens is not None:
            found[rid] = int(row.tokens)
    return found


def write_usage(store: Store, clean: list[dict[str, Any]], *, on_write: Any = None) -> None:
    """Insert validated usage rows (and what depends on them) in one transaction."""
    with store.begin(write=True) as conn:
        ensure_entities(conn, {(c["org_name"], c["project_name"], c["user_name"]) for c in clean})
        insert_usage(conn, clean)
        if on_write is not None:
            on_write(conn, clean)


def build_filters(filters: Mapping[str, Any], columns: Mapping[str, Any] = FILTERS) -> list[Any]:
    """WHERE clauses for name filters; unknown names are a ``ValidationError``."""
    clauses = []
    for name, value in filters.items():
        if name not in columns:
            raise ValidationError(
                f"unknown filter {name!r}; use one of: {', '.join(sorted(columns))}"
            )
        values = name_list(value, name)
        if values is None:
            continue
        col = columns[name]
        clauses.append(col == values[0] if len(values) == 1 else col.in_(values))
    return clauses


def fetch_records(
    store: Store,
    since: Any = None,
    until: Any = None,
    *,
    limit: int | None = None,
    newest_first: bool = False,
    columns: Sequence[str] | None = None,
    as_: str = "pandas",
    **filters: Any,
) -> Any:
    """The ``records()`` frame: one row per call, money as exact ``Decimal``.

    ``columns`` picks columns (records() names, in that order) and ``as_`` the kind of
    result: ``"pandas"`` (a DataFrame), ``"arrow"`` (a ``pyarrow.Table``, money as
    ``decimal128(38, 9)``, tags as JSON text), ``"polars"`` or ``"pandas-arrow"`` (a
    DataFrame of ``pd.ArrowDtype`` columns: the Arrow table's data without a Python object
    per value; money sums exactly to a ``Decimal``). Filters and columns are pushed down
    into the SQL.
    """
    lo = parse_when(since, name="since")
    hi = parse_when(until, name="until")
    cols = _record_columns(columns)
    arrowio.check_as(as_)
    if not arrowio.have_pyarrow():
        if as_ != "pandas":
            raise ValidationError(f"records(as_={as_!r}) needs pyarrow: pip install pyarrow")
        with store.begin() as conn:
            sqlite = conn.dialect.name == "sqlite"
            where, params = arrowio.where_clauses(
                db_time_for(sqlite, lo), db_time_for(sqlite, hi), _filter_values(filters)
            )
            order = "id DESC" if newest_first else "ts, id"
            rows = arrowio.read_rows(conn, cols, where, params, order=order, limit=limit)
        return records_frame(rows, cols)
    table = _fetch_table(store, lo, hi, limit, newest_first, cols, filters)
    return arrowio.shaped(table, as_)


def _record_columns(columns: Sequence[str] | None) -> tuple[str, ...]:
    if columns is None:
        return RECORD_COLUMNS
    if isinstance(columns, str):
        columns = [columns]
    cols = tuple(columns)
    unknown = [c for c in cols if c not in RECORD_COLUMNS]
    if unknown or not cols or len(set(cols)) != len(cols):
        raise ValidationError(
            f"columns must be distinct records() columns, got {list(cols)!r}; "
            f"use some of: {', '.join(RECORD_COLUMNS)}"
        )
    return cols


def _fetch_table(
    store: Store,
    lo: dt.datetime | None,
    hi: dt.datetime | None,
    limit: int | None,
    newest_first: bool,
    cols: tuple[str, ...],
    filters: Mapping[str, Any],
) -> Any:
    chosen = _filter_values(filters)
    with store.begin() as conn:
        sqlite = conn.dialect.name == "sqlite"
        where, params = arrowio.where_clauses(
            db_time_for(sqlite, lo), db_time_for(sqlite, hi), chosen
        )
        if limit is None and not newest_first:
            whole = cols == RECORD_COLUMNS and not chosen and lo is None and hi is None
            table = segments.read_records(
                conn, cols, where, params, since=lo, until=hi, filters=chosen, build=whole
            )
            if table is not None:
                return table
        return arrowio.read_records(
            conn, cols, where, params, newest_first=newest_first, limit=limit
        )


def _filter_values(filters: Mapping[str, Any]) -> list[tuple[str, list[Any]]]:
    """(store column, values) for each name filter given; unknown names are an error."""
    out = []
    for name, value in filters.items():
        if name not in FILTERS:
            raise ValidationError(
                f"unknown filter {name!r}; use one of: {', '.join(sorted(FILTERS))}"
            )
        values = name_list(value, name)
        if values is not None:
            out.append((FILTERS[name].name, list(values)))
    return out


def records_frame(rows: Sequence[Sequence[Any]], cols: Sequence[str]) -> pd.DataFrame:
    """records() columns ``cols`` from rows of store values (without pyarrow)."""
    import pandas as pd

    values = list(zip(*rows, strict=True)) if rows else [()] * len(cols)
    data: dict[str, Any] = {}
    for name, col in zip(cols, values, strict=True):
        kind = arrowio.COLUMN_KINDS.get(name, "text")
        if kind == "ts":
            s = pd.Series([py_time(v) for v in col], dtype="datetime64[us]")
            data[name] = s.dt.tz_localize("UTC")
        elif kind == "money":
            data[name] = pd.Series([nanos_to_usd(v) for v in col], dtype=object)
        elif kind == "tags":
            data[name] = pd.Series([json.loads(t) if t else {} for t in col], dtype=object)
        elif kind == "flag":
            data[name] = pd.Series([bool(v) for v in col], dtype=bool)
        elif kind == "int":
            data[name] = pd.Series(col, dtype="int64")
        elif kind == "float":
            data[name] = pd.Series(col, dtype="float64")
        else:  # object dtype keeps None as None (pandas 3 would say NaN)
            data[name] = pd.Series(col, dtype=object)
    return pd.DataFrame(data, columns=list(cols))
