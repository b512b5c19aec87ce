"""Bulk ``ingest()`` at column speed: validate whole columns, write in one statement.

:func:`ingest_rows` gives the same result as :func:`llmspend.usage.ingest_rows` — the
same rows stored, the same :class:`~llmspend.errors.IngestError` for the same first bad
row, nothing written on an error — by this invariant: a row is taken from the column
path only when every check the row validator makes passed for it there; every other row
(a value a column check could not vouch for, a row to price, a ``price_status`` given)
goes through :func:`llmspend.usage.validate_row` itself, in row order, so the first bad
row raises exactly as it would have. Low-cardinality text is checked once per distinct
value; numbers, times and money as arrays; the rest value by value with the row
validator's own helpers.

Writing: SQLite takes every row in one ``executemany`` on the raw connection, 64 rows a
statement (:func:`llmspend.store.rollup_batch.insert_values`); PostgreSQL
takes them through ``COPY ... FROM STDIN`` (CSV written by Arrow) and, for a large batch,
sums them into the rollups itself in the same transaction, past the queue trigger
(:func:`llmspend.store.rollup_batch.write_folded`): no id queued and read back per row.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from . import usage
from .attribution import validate_name
from .errors import IngestError, ValidationError
from .store import arrowio
from .store.fastsql import Tx
from .store.hierarchy import ensure_entities
from .store.models import UsageRecord
from .store.rollup_batch import insert_values, write_folded
from .timeutil import MAX_TIME, MIN_TIME

if TYPE_CHECKING:
    import numpy as np

    from .store.engine import Store

__all__ = ["ingest_rows"]

_TEXT = {k: usage._OPTIONAL_TEXT.get(k, k) for k in usage._STR_LIMITS}  # record → store
_NAMES = ("org", "project", "user")
_OTHER = frozenset(
    {"ts", "id", "cost_usd", "estimate_usd", "status", "price_status", "latency_ms",
     "streamed", "usage_estimated", "tags", *usage._TOKEN_FIELDS}
)  # fmt: skip
_MIN_FAST = 1000  # below this the row validator is as quick
_PLAIN_TAGS = frozenset({str, int, bool})


class _Columns:
    """Validated columns (store names) and the rows the column checks did not vouch for."""

    def __init__(self, n: int) -> None:
        import numpy as np

        self.n = n
        self.cols: dict[str, Any] = {}
        self.slow = np.zeros(n, dtype=bool)

    def mark(self, mask: Any) -> None:
        self.slow |= mask


def ingest_rows(
    store: Store,
    rows: Any,
    *,
    defaults: tuple[str, str, str],
    pricer: usage.Pricer,
    on_write: Any = None,
) -> int:
    """Validate all ``rows``, then write them in one transaction. Returns the count."""
    if not arrowio.have_pyarrow():
        return usage.ingest_rows(store, rows, defaults=defaults, pricer=pricer, on_write=on_write)
    source, columns = _columns_of(rows)
    if columns is None or len(source) < _MIN_FAST:
        return usage.ingest_rows(store, source, defaults=defaults, pricer=pricer, on_write=on_write)
    checked = _check(columns, len(source), defaults, pricer)
    if checked is None:
        return usage.ingest_rows(store, source, defaults=defaults, pricer=pricer, on_write=on_write)
    _settle_slow_rows(checked, source, defaults, pricer)
    _write(store, checked, on_write)
    return checked.n


# -- reading the input as columns --------------------------------------------------------------


def _columns_of(rows: Any) -> tuple[Any, dict[str, Any] | None]:
    """``(rows, columns)``: the input as a row sequence (what the row validator reads)
    and as columns by name, or None for columns when the rows do not share one set of keys."""
    if hasattr(rows, "to_dict") and hasattr(rows, "columns"):
        frame = rows.reset_index(drop=True)
        if not all(isinstance(c, str) for c in frame.columns) or frame.columns.has_duplicates:
            return usage._rows_of(rows), None
        return _FrameRows(frame), {c: frame[c] for c in frame.columns}
    source = usage._rows_of(rows)
    if not source or type(source[0]) is not dict:
        return source, None
    keys = list(source[0])
    width = len(keys)
    if set(map(type, source)) != {dict} or set(map(len, source)) != {width}:
        return source, None  # same count and every key present (below): the same keys
    try:
        return source, {k: [r[k] for r in source] for k in keys}
    except KeyError:
        return source, None


class _FrameRows(Sequence[Mapping[str, Any]]):
    """A DataFrame's rows as the row validator sees them (``to_dict("records")``)."""

    def __init__(self, frame: Any) -> None:
        self._frame = frame

    def __len__(self) -> int:
        return len(self._frame)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return self._frame.iloc[i].to_dict("records")
        return self._frame.iloc[i : i + 1].to_dict("records")[0]

    def __iter__(self) -> Iterator[Mapping[str, Any]]:
        return iter(self._frame.to_dict("records"))


# -- column checks --------------------------------------------------------------------------


def _check(
    columns: Mapping[str, Any], n: int, defaults: tuple[str, str, str], pricer: usage.Pricer
) -> _Columns | None:
    """Check every column; None when a column is one the row path alone handles."""
    import numpy as np

    if any(k not in _TEXT and k not in _OTHER for k in columns):
        return None  # unknown columns, cost_nanos: the row validator names or takes them
    if "ts" not in columns or "provider" not in columns or "model" not in columns:
        return None
    out = _Columns(n)
    # what validate_row gives a column that is absent (the store defaults)
    template = usage.validate_row(
        0, {"ts": MIN_TIME, "provider": "x", "model": "x", "cost_usd": 0}, defaults, pricer
    )
    out.cols["ts"] = _ts(columns["ts"], out)
    for key, store_key in _TEXT.items():
        if key in columns:
            out.cols[store_key] = _text(columns[key], key, template[store_key], out)
    for key in usage._TOKEN_FIELDS:
        if key in columns:
            out.cols[key] = _tokens(columns[key], key, out)
        else:
            out.cols[key] = np.zeros(n, dtype=np.int64)
    if "cost_usd" not in columns:
        return None  # every row is priced: the row path
    cost = _money(columns["cost_usd"], "cost_usd", out)
    out.mark(cost < 0)  # missing: priced by the row validator
    out.cols["cost_nanos"] = cost
    out.cols["price_status"] = np.full(n, "imported", dtype=object)
    if "estimate_usd" in columns:
        est = _money(columns["estimate_usd"], "estimate_usd", out)
        est_obj = est.astype(object)
        est_obj[est < 0] = None
        out.cols["estimate_nanos"] = est_obj
    if "price_status" in columns:
        out.mark(~_missing(columns["price_status"]))
    if "status" in columns:
        out.cols["status"] = _choice(columns["status"], usage.STATUSES, "ok", out)
    if "latency_ms" in columns:
        out.cols["latency_ms"] = _latency(columns["latency_ms"], out)
    for key in ("streamed", "usage_estimated"):
        if key in columns:
            out.cols[key] = _per_value(columns[key], functools.partial(_flag, key), out)
    if "tags" in columns:
        out.cols["tags"] = _per_value(columns["tags"], _tags_check(), out)
    for store_key, value in template.items():  # the columns not given: their defaults
        if store_key not in out.cols:
            out.cols[store_key] = np.full(n, value, dtype=object)
    c = out.cols
    out.mark(c["cached_input_tokens"] + c["cache_write_tokens"] > c["input_tokens"])
    out.mark(c["reasoning_tokens"] > c["output_tokens"])
    return out


def _tags_check() -> Callable[[Any, int], Any]:
    """The row validator's tags check, remembered per distinct dict: tags repeat (a few
    teams and experiments), and equal items of the same types give the same JSON. Values
    other than str, int and bool (floats: 0.0 equals -0.0) are checked each time."""
    memo: dict[Any, Any] = {}

    def check(v: Any, i: int) -> Any:
        if type(v) is not dict:
            return usage._tags(v, i)
        try:
            types = tuple(map(type, v.values()))
            if not _PLAIN_TAGS.issuperset(types):
                return usage._tags(v, i)
            key = (tuple(v.items()), types)
            return memo[key]
        except TypeError:  # an unhashable value: the validator names it
            return usage._tags(v, i)
        except KeyError:
            memo[key] = text = usage._tags(v, i)
            return text

    return check


def _flag(key: str, v: Any, i: int) -> bool:
    return usage._flag(v, i, key)


def _values(col: Any) -> Any:
    """A column as a numpy array (object unless the column has a typed dtype)."""
    import numpy as np

    if hasattr(col, "to_numpy"):
        return col.to_numpy()
    return np.asarray(col, dtype=object)


def _kind(col: Any) -> str:
    from pandas.api.types import infer_dtype

    return str(infer_dtype(col, skipna=True))


def _missing(col: Any) -> Any:
    import numpy as np

    return np.fromiter((usage._missing(v) for v in _values(col)), dtype=bool)


def _per_value(col: Any, check: Callable[[Any, int], Any], out: _Columns) -> Any:
    """The row validator's own check, value by value; a failing row is left to it."""
    import numpy as np

    values = _values(col)
    if values.dtype == object:  # None is checked once: its result is the same for every row
        nones = _nones(values)
        given = np.flatnonzero(~nones)
        try:
            result = np.full(out.n, check(None, 0), dtype=object)
        except IngestError:  # None is not allowed here: those rows are the row path's
            result = np.full(out.n, None, dtype=object)
            out.mark(nones)
    else:
        given = np.arange(out.n)
        result = np.empty(out.n, dtype=object)
    for i, v in zip(given.tolist(), values[given].tolist(), strict=True):
        try:
            result[i] = check(v, i)
        except IngestError:
            out.slow[i] = True
    return result


def _nones(values: Any) -> Any:
    """Where an object array holds None (elementwise)."""
    return values == None  # noqa: E711


def _latency(col: Any, out: _Columns) -> Any:
    """Durations in ms as floats, None where missing; the row helper for unusual input."""
    import numpy as np

    values = _values(col)
    if values.dtype.kind not in "fiu" and _kind(col) not in ("floating", "integer", "empty"):
        return _per_value(col, lambda v, i: usage._latency(v, i), out)
    try:
        arr = np.where(_nones(values), np.nan, values).astype(np.float64)
    except (TypeError, ValueError, OverflowError):
        return _per_value(col, lambda v, i: usage._latency(v, i), out)
    nan = np.isnan(arr)
    out.mark(~nan & ~((arr >= 0) & (arr < 1e12)))
    result = arr.astype(object)
    result[nan] = None
    return result


def _distinct(col: Any, check: Callable[[Any], Any], out: _Columns) -> Any:
    """``check`` once per distinct value of a text column (an exception marks its rows).

    Only for a column of ``str`` and missing values: there, equal values are the same
    value to the row validator.
    """
    import numpy as np
    import pandas as pd

    codes, uniques = pd.factorize(pd.Series(col, dtype=object), use_na_sentinel=True)
    mapped = np.empty(len(uniques) + 1, dtype=object)
    bad = np.zeros(len(uniques) + 1, dtype=bool)
    for j, v in enumerate([*uniques.tolist(), None]):
        try:
            mapped[j] = check(v)
        except (IngestError, ValidationError):
            bad[j] = True
    out.mark(bad[codes])  # code -1 picks the last entry: the missing value's
    return mapped[codes]


def _text(col: Any, key: str, default: Any, out: _Columns) -> Any:
    required = key in ("provider", "model")

    def check(v: Any) -> Any:
        text = usage._text(v, 0, key, required=required)
        if text is None:
            return default
        if key in _NAMES:
            validate_name(key, text)
        return text

    if _kind(col) not in ("string", "empty"):
        return _per_value(col, lambda v, i: check(v), out)
    return _distinct(col, check, out)  # a required value missing fails its check


def _choice(col: Any, allowed: frozenset[str], default: str, out: _Columns) -> Any:
    def check(v: Any) -> str:
        if usage._missing(v):
            return default
        if not isinstance(v, str) or v not in allowed:
            raise ValidationError("not allowed")
        return v

    if _kind(col) not in ("string", "empty"):
        return _per_value(col, lambda v, i: check(v), out)
    return _distinct(col, check, out)


def _tokens(col: Any, key: str, out: _Columns) -> np.ndarray:
    import numpy as np

    values = _values(col)
    kind = values.dtype.kind if values.dtype != object else _kind(col)
    if kind in ("i", "u", "integer"):
        try:
            arr = values.astype(np.int64)
        except (OverflowError, TypeError, ValueError):  # huge, or None among the ints
            arr = None
        if arr is not None:
            out.mark((arr < 0) | (arr >= usage._MAX_TOKENS))
            return np.clip(arr, 0, None)
    elif kind in ("f", "floating") and values.dtype != object:
        arr_f = values.astype(np.float64)
        nan = np.isnan(arr_f)
        ok = nan | ((arr_f == np.floor(arr_f)) & (arr_f >= 0) & (arr_f < usage._MAX_TOKENS))
        out.mark(~ok)
        return np.where(ok & ~nan, arr_f, 0).astype(np.int64)
    checked = _per_value(col, lambda v, i: usage._tokens(v, i, key), out)
    return np.where(out.slow, 0, checked).astype(np.int64)


def _ts(col: Any, out: _Columns) -> np.ndarray:
    """Times as naive UTC ``datetime64[us]``."""
    import numpy as np
    import pandas as pd
    import pyarrow as pa

    values = _values(col)
    if values.dtype.kind == "M":  # a naive datetime64 column
        arr = values.astype("datetime64[us]")
    elif isinstance(getattr(col, "dtype", None), pd.DatetimeTZDtype):
        arr = col.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy().astype("datetime64[us]")
    else:
        naive = np.fromiter(
            (type(v) is dt.datetime and v.tzinfo is None for v in values.tolist()), dtype=bool
        )
        if not naive.all():
            parsed = _per_value(col, lambda v, i: usage._ts(v, i), out)
            values = np.where(naive | out.slow, values, parsed)
            values[out.slow & ~naive] = MIN_TIME
        # every value a naive datetime now: Arrow converts them about 8x faster than numpy
        arr = arrowio.array_of(values, pa.timestamp("us")).to_numpy(zero_copy_only=False)
    nat = np.isnat(arr)
    lo, hi = np.datetime64(MIN_TIME, "us"), np.datetime64(MAX_TIME, "us")
    out.mark(nat | (arr < lo) | (arr >= hi))
    return np.where(nat, lo, arr)


def _money(col: Any, key: str, out: _Columns) -> np.ndarray:
    """USD as int64 nanodollars; -1 where missing (bad values are marked)."""
    import numpy as np
    import pyarrow as pa

    if _kind(col) == "decimal":  # Arrow converts exactly or refuses (too many places)
        values = _values(col)
        try:
            dec = pa.array(values, type=pa.decimal128(38, 9), from_pandas=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError, ValueError):
            dec = None
        if dec is not None:
            valid = dec.is_valid().to_numpy(zero_copy_only=False)
            words = np.frombuffer(dec.buffers()[1], dtype=np.int64).reshape(-1, 2)
            low, high = words[:, 0], words[:, 1]
            ok = (high == 0) & (low >= 0) & (low < usage._MAX_NANOS)
            out.mark(valid & ~ok)
            return np.where(valid & ok, low, -1)

    def check(v: Any, i: int) -> int:
        nanos = usage._money_nanos(v, i, key)
        return -1 if nanos is None else nanos

    checked = _per_value(col, check, out)
    return np.where(out.slow, 0, checked).astype(np.int64)


# -- the rows the columns did not vouch for ------------------------------------------------------


def _settle_slow_rows(
    out: _Columns, source: Sequence[Mapping[str, Any]], defaults: Any, pricer: usage.Pricer
) -> None:
    """Run the row validator on each row not vouched for, in order: the first bad one
    raises as it would have; a good one (priced, or only unusual) replaces its row."""
    import numpy as np

    for i in np.flatnonzero(out.slow).tolist():
        row = usage.validate_row(i, source[i], defaults, pricer)
        for key, value in row.items():
            column = out.cols[key]
            if key == "ts":
                column[i] = np.datetime64(value, "us")
            elif column.dtype != object and value is None:
                out.cols[key] = column = column.astype(object)
                column[i] = value
            else:
                column[i] = value
    for key in ("cost_nanos", "estimate_nanos"):
        column = out.cols[key]
        if column.dtype != object and (column < 0).any():
            obj = column.astype(object)
            obj[column < 0] = None
            out.cols[key] = obj


# -- writing -------------------------------------------------------------------------------


class _Rows(Sequence[dict[str, Any]]):
    """The written rows as dicts of store columns, for the ingest hooks; made on first use
    (``len()`` and :attr:`columns` cost nothing)."""

    def __init__(self, cols: Mapping[str, Any], n: int) -> None:
        self._cols = cols
        self._n = n
        self._rows: list[dict[str, Any]] | None = None

    def _all(self) -> list[dict[str, Any]]:
        if self._rows is None:
            keys = list(self._cols)
            values = [
                self._cols[k].astype(dt.datetime) if k == "ts" else self._cols[k] for k in keys
            ]
            lists = [v.tolist() for v in values]
            self._rows = [dict(zip(keys, row, strict=True)) for row in zip(*lists, strict=True)]
        return self._rows

    @property
    def columns(self) -> Mapping[str, Any]:
        """The written rows as arrays per store column (what set-based hooks read)."""
        return self._cols

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i: Any) -> Any:
        return self._all()[i]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self._all())


def _write(store: Store, out: _Columns, on_write: Any) -> None:
    cols = out.cols
    triples = set(
        zip(
            cols["org_name"].tolist(),
            cols["project_name"].tolist(),
            cols["user_name"].tolist(),
            strict=True,
        )
    )
    # a column with no value in the whole batch is left to its NULL: fewer values to bind
    names = [k for k in usage._INSERT_COLUMNS if not _all_none(cols[k])]
    with store.begin(write=True) as conn:
        tx = Tx.of(conn)
        ensure_entities(tx, triples)
        if tx.sqlite:
            _insert_sqlite(tx, cols, names)
        else:
            table = _arrow(cols, names)
            write_folded(
                tx, cols, lambda: arrowio.copy_in(tx, UsageRecord.__tablename__, names, table)
            )
        if on_write is not None:
            on_write(conn, _Rows(cols, out.n))


def _insert_sqlite(tx: Tx, cols: Mapping[str, Any], names: Sequence[str]) -> None:
    import pyarrow as pa

    # Arrow's cast writes SQLAlchemy's text ('YYYY-MM-DD HH:MM:SS.ffffff') ten times as fast
    # as its strftime
    ts = pa.array(cols["ts"], type=pa.timestamp("us")).cast(pa.string())
    lists = [ts.to_pylist() if k == "ts" else cols[k].tolist() for k in names]
    insert_values(
        tx.dbapi.cursor(),
        f"INSERT INTO {UsageRecord.__tablename__} ({', '.join(names)})",
        zip(*lists, strict=True),
        len(cols["ts"]),
        len(names),
    )


def _all_none(column: Any) -> bool:

    return column.dtype == object and bool(_nones(column).all())


def _arrow(cols: Mapping[str, Any], names: Sequence[str]) -> Any:
    import pyarrow as pa

    arrays = []
    for k in names:
        values = cols[k]
        if k == "ts":
            arrays.append(arrowio.array_of(values, pa.timestamp("us")))
        elif k in usage._TOKEN_FIELDS or k in ("cost_nanos", "estimate_nanos"):
            arrays.append(arrowio.array_of(values, pa.int64(), from_pandas=True))
        elif k == "latency_ms":
            arrays.append(arrowio.array_of(values, pa.float64(), from_pandas=True))
        elif k in ("streamed", "usage_estimated"):
            arrays.append(arrowio.array_of(values, pa.bool_()))
        else:
            arrays.append(arrowio.array_of(values, pa.string()))
    return pa.Table.from_arrays(arrays, names=list(names))
