"""Rollups for an ingested batch, summed with numpy/pandas from the batch's columns.

:func:`llmspend.store.rollups.catch_up` sums pending rows with SQL over the raw table; over
a large batch each of its statements re-reads and re-sorts every row (about 2.5 µs a row
a table). The bulk path (:mod:`llmspend.bulkload`) still holds the rows it has just
inserted as arrays, so here they are grouped in memory instead: every key column
factorized once (sorted, so code order is key order), each family grouped once at its
finest grain over the raw rows, and each coarser table of the family grouped from the
finer aggregate (a quarter hour lies in one hour, an hour in one day, a day in one week).

Writing the groups (of each table, in key order):

* **SQLite**: one ``executemany`` per table of ``INSERT ... ON CONFLICT DO UPDATE SET m =
  m + excluded.m`` (as the catch-up), 64 groups a statement (:func:`insert_values`); in
  key order the B-tree is walked once (rows not in time order would take about 2.5 times
  as long at random).
* **PostgreSQL**: the groups go into a temporary table with ``COPY``, then one ``INSERT
  ... SELECT ... ON CONFLICT`` adds them to the table
  (:func:`~llmspend.store.rollups.fold_pg_batch`). The bulk writer tells the queue
  trigger to skip its rows, which are folded here in the same transaction
  (:func:`write_folded`): no id queued per row, no row read back by id, no grouping in
  the server — about half the server time of the queue's fold for the same batch.

Invariant (SQLite, as in :mod:`~llmspend.store.rollups`): one writer at a time, so the
batch just inserted holds the highest ids, ``(last - n, last]``; the rows pending before
it, ``(mark, last - n]``, are read back and summed with it, and the mark then moves to
``last``. Anything else — rows given as dicts, a batch too small to gain, or sums that
could overflow int64 — goes to :func:`~llmspend.store.rollups.ingest_hook`.
"""

from __future__ import annotations

import functools
import itertools
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from .fastsql import Tx
from .rollups import (
    FAMILIES,
    KEY_COLUMNS,
    MEASURES,
    PG_BATCH_COLUMNS,
    PG_BATCH_TABLE,
    ROLLUPS,
    Rollup,
    fold_pg_batch,
    ingest_hook,
)

if TYPE_CHECKING:
    import numpy as np
    from sqlalchemy import Connection

__all__ = [
    "VALUES_ROWS",
    "Groups",
    "batch_ingest_hook",
    "fold_columns",
    "group_columns",
    "insert_values",
    "write_folded",
]

#: Below this many rows the catch-up's SQL is as quick.
MIN_ROWS = 2000
#: Rows per statement of :func:`insert_values`, at most: fewer when rows × values would pass
#: the connection's bound-parameter limit (32,766 since SQLite 3.32, 999 before).
VALUES_ROWS = 64
_TOKENS = MEASURES[4:9]
_SOURCE = ("ts", *KEY_COLUMNS, "status", "cost_nanos", *_TOKENS)
_US = {"quarter": 900_000_000, "hour": 3_600_000_000, "day": 86_400_000_000}
_GRAINS = ("quarter", "hour", "day", "week")  # each bucket lies in one of the next grain
_STATE = (
    "SELECT rolled_through, (SELECT max(id) FROM llmspend_usage) "
    "FROM llmspend_rollup_state WHERE id = 1"
)
_MOVE = "UPDATE llmspend_rollup_state SET rolled_through = ? WHERE id = 1"


def batch_ingest_hook(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """``ingest_hooks`` entry: the batch (and the rows pending before it) into every
    rollup table, on the ingest's transaction. On PostgreSQL the bulk writer has folded
    its batch already (:func:`write_folded`); this folds what others queued."""
    tx = Tx.of(conn)
    cols = getattr(rows, "columns", None)
    if not tx.sqlite or cols is None or len(rows) < MIN_ROWS:
        ingest_hook(conn, rows)
        return
    cursor = tx.dbapi.cursor()
    mark, last = cursor.execute(_STATE).fetchone()
    first = last - len(rows)
    if first < mark or first - mark > len(rows):  # not ours, or mostly others' rows
        ingest_hook(conn, rows)
        return
    columns = {k: cols[k] for k in _SOURCE if k in cols}
    if first > mark:
        columns = _concat(_pending(tx, mark, first), columns)
    if not fold_columns(tx, columns):
        ingest_hook(conn, rows)
        return
    cursor.execute(_MOVE, (last,))


def _pending(tx: Tx, mark: int, first: int) -> dict[str, list[Any]]:
    """The rows in ``(mark, first]`` as lists per column (their ts as stored text)."""
    names = ", ".join(_SOURCE)
    cursor = tx.dbapi.cursor()
    cursor.execute(
        f"SELECT {names} FROM llmspend_usage WHERE id > ? AND id <= ?",  # noqa: S608
        (mark, first),
    )
    got = list(zip(*cursor.fetchall(), strict=True))
    return {k: list(got[i]) if got else [] for i, k in enumerate(_SOURCE)}


def _concat(before: Mapping[str, Any], batch: Mapping[str, Any]) -> dict[str, Any]:
    import numpy as np

    out: dict[str, Any] = {}
    for k in _SOURCE:
        b = np.asarray(batch[k]) if k in batch else np.full(len(batch["ts"]), None, object)
        if k == "ts":
            a = np.array(before[k], dtype="datetime64[us]")
        else:
            a = np.array(before[k], dtype=object if b.dtype == object else b.dtype)
        out[k] = np.concatenate([a, b.astype(object) if a.dtype == object else b])
    return out


class Groups:
    """Summed rows of one grain over some key columns, in key order.

    ``bucket``: int64 µs since the epoch (naive UTC); ``codes[d]``: codes into
    ``uniques[d]`` (sorted, so code order is text order); ``sums``: int64, one column per
    measure.
    """

    __slots__ = ("bucket", "codes", "sums", "uniques")

    def __init__(
        self,
        bucket: np.ndarray,
        codes: dict[str, np.ndarray],
        uniques: Mapping[str, np.ndarray],
        sums: np.ndarray,
    ) -> None:
        self.bucket, self.codes, self.uniques, self.sums = bucket, codes, uniques, sums

    def coarser(self, grain: str, dims: tuple[str, ...]) -> Groups:
        """These groups summed again per ``grain`` bucket and the kept ``dims``."""
        return _grouped(_bucket(self.bucket, grain), self.codes, dims, self.uniques, self.sums)

    def params(self, r: Rollup, sqlite: bool) -> list[tuple[Any, ...]]:
        """The table's rows: (bucket, key values — "" for a left-out one —, sums)."""
        return list(self.rows(r, sqlite))

    def rows(self, r: Rollup, sqlite: bool) -> Iterator[tuple[Any, ...]]:
        """:meth:`params` made one at a time (``executemany`` binds each and drops it, so
        ``zip`` reuses one tuple instead of allocating a tuple per row)."""
        import numpy as np

        starts, inverse = np.unique(self.bucket, return_inverse=True)
        stamps = starts.astype("datetime64[us]")
        # SQLite keeps DateTime as 'YYYY-MM-DD HH:MM:SS.ffffff' text; PostgreSQL takes datetimes
        firsts = _stamp_text(stamps) if sqlite else stamps.astype(object)
        columns: list[list[Any]] = [firsts[inverse].tolist()]
        blank = [""] * len(self.bucket)
        for d in r.key:
            columns.append(self.uniques[d][self.codes[d]].tolist() if d in r.dims else blank)
        columns.extend(self.sums.T.tolist())
        return zip(*columns, strict=True)


def _stamp_text(stamps: np.ndarray) -> np.ndarray:
    """``datetime64[us]`` as SQLAlchemy's SQLite text (an object array of str)."""
    import numpy as np
    import pyarrow as pa

    text = pa.array(stamps, type=pa.timestamp("us")).cast(pa.string())
    return np.array(text.to_pylist(), dtype=object)


def _grouped(
    bucket: np.ndarray,
    codes: Mapping[str, np.ndarray],
    dims: tuple[str, ...],
    uniques: Mapping[str, np.ndarray],
    sums: np.ndarray,
) -> Groups:
    """Sum ``sums`` per (bucket, kept dims), sorted by that key.

    The key is packed into one int64 (the bucket's rank, then each code, mixed radix), so
    one sort and one ``add.reduceat`` group it; pandas' multi-key groupby when it does
    not fit.
    """
    import numpy as np

    kept = [d for d in KEY_COLUMNS if d in dims]
    starts, rank = np.unique(bucket, return_inverse=True)
    radix = [max(len(uniques[d]), 1) for d in kept]
    if len(bucket) == 0 or len(starts) * functools.reduce(int.__mul__, radix, 1) >= 2**62:
        return _grouped_pandas(bucket, codes, kept, uniques, sums)
    key = rank.astype(np.int64).reshape(-1)
    for d, r in zip(kept, radix, strict=True):
        key = key * r + codes[d]
    order = np.argsort(key, kind="stable")
    key = key[order]
    first = np.flatnonzero(np.concatenate(([True], key[1:] != key[:-1])))
    summed = np.add.reduceat(sums[order], first, axis=0)
    packed = key[first]
    out: dict[str, np.ndarray] = {}
    for d, r in zip(reversed(kept), reversed(radix), strict=True):
        packed, out[d] = np.divmod(packed, r)
    return Groups(starts[packed].astype(np.int64), out, uniques, summed.astype(np.int64))


def _grouped_pandas(
    bucket: np.ndarray,
    codes: Mapping[str, np.ndarray],
    kept: list[str],
    uniques: Mapping[str, np.ndarray],
    sums: np.ndarray,
) -> Groups:
    import numpy as np
    import pandas as pd

    frame = pd.DataFrame(sums, copy=False)
    got = frame.groupby([bucket, *(codes[d] for d in kept)], sort=True).sum()
    index = got.index
    levels = [np.asarray(index.get_level_values(i)) for i in range(len(kept) + 1)]
    return Groups(
        levels[0].astype(np.int64),
        {d: levels[i + 1] for i, d in enumerate(kept)},
        uniques,
        got.to_numpy(dtype=np.int64),
    )


def group_columns(cols: Mapping[str, Any]) -> Groups | None:
    """Rows given as columns (store names; ``ts`` naive UTC) as ungrouped :class:`Groups`
    (bucket: the row's time) over every key column; None when a column cannot be summed
    exactly as int64."""
    import numpy as np
    import pandas as pd

    ts = np.asarray(cols["ts"]).astype("datetime64[us]").view(np.int64)
    n = len(ts)
    measures = _measures(cols, n)
    if measures is None:
        return None
    codes: dict[str, np.ndarray] = {}
    uniques: dict[str, np.ndarray] = {}
    for k in KEY_COLUMNS:
        values = pd.Series(cols[k] if k in cols else [None] * n, dtype=object)
        if k == "service_tier":
            values = values.fillna("")
        c, u = pd.factorize(values, sort=True, use_na_sentinel=False)
        codes[k], uniques[k] = c, np.asarray(u, dtype=object)
    return Groups(ts, codes, uniques, measures)


def fold_columns(tx: Tx, cols: Mapping[str, Any]) -> bool:
    """Sum rows given as columns (store names; ``ts`` naive UTC) into every rollup table.
    False, writing nothing, when a column cannot be summed exactly as int64."""
    rows = group_columns(cols)
    if rows is None:
        return False
    if tx.sqlite:
        for r, groups in _tables(rows):
            _upsert(tx, r, groups.rows(r, sqlite=True), len(groups.bucket))
    else:
        fold_pg_batch(tx, lambda: None, _fills(tx, rows))
    return True


def write_folded(tx: Tx, cols: Mapping[str, Any], insert: Callable[[], None]) -> None:
    """PostgreSQL: run ``insert`` (which writes the rows of ``cols``) and fold those rows
    into every rollup table on the same transaction, past the queue (the trigger skips
    them: :func:`~llmspend.store.rollups.fold_pg_batch`). A batch too small to gain, or
    whose sums cannot be made as int64, is left to the queue."""
    rows = group_columns(cols) if len(cols["ts"]) >= MIN_ROWS else None
    if rows is None:
        insert()
        return
    fold_pg_batch(tx, insert, _fills(tx, rows))


def _tables(rows: Groups) -> Iterator[tuple[Rollup, Groups]]:
    """Every rollup table with its groups of ``rows``, in :data:`ROLLUPS` order (the
    catch-up's): per family the finest grain from the rows, then each coarser one from
    the groups before it."""
    made: dict[Rollup, Groups] = {}
    for family, dims in FAMILIES.items():
        groups = rows
        for r in sorted((r for r in ROLLUPS if r.family == family), key=_finest):
            made[r] = groups = groups.coarser(r.grain, dims)
    for r in ROLLUPS:
        yield r, made[r]


def _fills(tx: Tx, rows: Groups) -> Iterator[tuple[Rollup, Callable[[], None]]]:
    for r, groups in _tables(rows):
        yield r, functools.partial(_copy_groups, tx, r, groups)


def _finest(r: Rollup) -> int:
    return _GRAINS.index(r.grain)


def _copy_groups(tx: Tx, r: Rollup, groups: Groups) -> None:
    """A table's groups (in key order) into the PostgreSQL batch table, by COPY."""
    import pyarrow as pa

    from . import arrowio

    n = len(groups.bucket)
    arrays = [pa.array(groups.bucket.astype("datetime64[us]"), type=pa.timestamp("us"))]
    for d in KEY_COLUMNS:
        if d in r.dims:
            names = arrowio.array_of(groups.uniques[d], pa.string())
            arrays.append(names.take(pa.array(groups.codes[d])))
        else:
            arrays.append(pa.repeat(pa.scalar("", pa.string()), n))
    arrays.extend(pa.array(groups.sums[:, j]) for j in range(len(MEASURES)))
    table = pa.Table.from_arrays(arrays, names=list(PG_BATCH_COLUMNS))
    arrowio.copy_in(tx, PG_BATCH_TABLE, PG_BATCH_COLUMNS, table)


def _bucket(ts: np.ndarray, grain: str) -> np.ndarray:
    """Bucket starts (int64 µs) of a grain; weeks start on Monday (1970-01-01 was a
    Thursday)."""
    if grain == "week":
        day = ts // _US["day"]
        return (day - (day + 3) % 7) * _US["day"]
    return ts - ts % _US[grain]


def _measures(cols: Mapping[str, Any], n: int) -> np.ndarray | None:
    """The rows' summed columns (:data:`MEASURES`) as int64, or None when one holds a
    value that is not an integer or whose sum could overflow int64."""
    import numpy as np
    import pandas as pd

    status = np.asarray(cols["status"], dtype=object)
    cost = pd.Series(cols["cost_nanos"], dtype=object)
    out = np.zeros((n, len(MEASURES)), dtype=np.int64)
    out[:, 0] = 1
    out[:, 1] = status == "error"
    out[:, 2] = status == "refused"
    out[:, 3] = cost.isna().to_numpy()
    sources = [np.asarray(cols[k]) for k in _TOKENS]
    sources.append(cost.fillna(0).to_numpy())
    for j, values in enumerate(sources, start=4):
        try:
            ints = values.astype(np.int64)
        except (TypeError, ValueError, OverflowError):  # None, text, beyond int64
            return None
        if values.dtype == object and not (ints == values).all():
            return None  # a float with a fraction: not summed here
        if n and int(np.abs(ints).max()) * n >= 2**63:  # a sum could overflow
            return None
        out[:, j] = ints
    return out


def _upsert(tx: Tx, r: Rollup, params: Iterable[tuple[Any, ...]], n: int) -> None:
    table = r.table.name
    key = ", ".join(("bucket", *r.key))
    sets = ", ".join(f"{m} = {table}.{m} + excluded.{m}" for m in MEASURES)
    insert_values(
        tx.dbapi.cursor(),
        f"INSERT INTO {table} ({', '.join(r.columns)})",
        params,
        n,
        len(r.columns),
        f"ON CONFLICT ({key}) DO UPDATE SET {sets}",
    )


def insert_values(
    cursor: Any, head: str, rows: Iterable[Iterable[Any]], n: int, width: int, tail: str = ""
) -> None:
    """``head VALUES (?, ...), ... tail`` on a DBAPI (``?`` style) cursor for the ``n`` rows
    of ``width`` values, :data:`VALUES_ROWS` rows a statement: SQLite's per-statement work
    (a reset and a step, the sqlite3 module's per-execution work) then comes once per 64
    rows, which takes about 40 % off a row-per-execution ``executemany``. ``head`` and
    ``tail`` hold only constant identifiers; every value is a bound parameter. Fewer rows
    a statement when 64 × ``width`` would pass the connection's limit of bound values."""
    one = "(" + ", ".join("?" * width) + ")"
    values = itertools.chain.from_iterable(rows)
    per = max(1, min(VALUES_ROWS, _max_variables(cursor) // max(width, 1)))
    full = n // per
    if full:
        sql = f"{head} VALUES {', '.join([one] * per)} {tail}"
        chunk = itertools.islice(values, full * per * width)
        cursor.executemany(sql, zip(*[chunk] * (per * width), strict=True))
    rest = tuple(values)
    if rest:
        cursor.execute(f"{head} VALUES {', '.join([one] * (len(rest) // width))} {tail}", rest)


def _max_variables(cursor: Any) -> int:
    """The bound values a statement may hold on ``cursor``'s SQLite connection (999, SQLite's
    old default, when the connection cannot say)."""
    try:
        return int(cursor.connection.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER))
    except (AttributeError, sqlite3.Error):
        return 999
