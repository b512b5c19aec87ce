"""Rollups for an ingested batch on SQLite, summed with numpy from the batch's columns.

:func:`llmspend.store.rollups.catch_up` sums pending rows with one ``INSERT ... SELECT ...
GROUP BY`` per rollup table; over a large batch each of those statements re-reads and
re-sorts every row of the batch (about 2.5 µs a row a table). The bulk path
(:mod:`llmspend.bulkload`) still holds the rows it has just inserted as arrays, so here
they are grouped in memory instead — every key column factorized once, each table's
sums one pandas group-by over integer codes — and only the groups are upserted, with the
same ``ON CONFLICT ... DO UPDATE SET m = m + excluded.m`` as the catch-up.

Invariant (SQLite, as in :mod:`~llmspend.store.rollups`): one writer at a time, so the
batch just inserted holds the highest ids, ``(last - n, last]``; the rows pending before
it, ``(mark, last - n]``, are read back and summed with it, and the mark then moves to
``last``. Anything else — PostgreSQL (whose insert trigger queues the ids for the
catch-up's one statement), rows given as dicts, a batch too small to gain, or sums that
could overflow int64 — goes to :func:`~llmspend.store.rollups.ingest_hook`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .fastsql import Tx
from .rollups import KEY_COLUMNS, MEASURES, ROLLUPS, Rollup, ingest_hook

if TYPE_CHECKING:
    import numpy as np
    from sqlalchemy import Connection

__all__ = ["batch_ingest_hook", "fold_columns"]

#: Below this many rows the catch-up's SQL is as quick.
MIN_ROWS = 2000
_TOKENS = MEASURES[4:9]
_SOURCE = ("ts", *KEY_COLUMNS, "status", "cost_nanos", *_TOKENS)
_US = {"quarter": 900_000_000, "hour": 3_600_000_000, "day": 86_400_000_000}
_STATE = (
    "SELECT rolled_through, (SELECT max(id) FROM llmspend_usage) "
    "FROM llmspend_rollup_state WHERE id = 1"
)
_MOVE = "UPDATE llmspend_rollup_state SET rolled_through = ? WHERE id = 1"


def batch_ingest_hook(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """``ingest_hooks`` entry: the batch (and the rows pending before it) into every
    rollup table, on the ingest's transaction."""
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


def fold_columns(tx: Tx, cols: Mapping[str, Any]) -> bool:
    """Sum rows given as columns (store names; ``ts`` naive UTC) into every rollup table.
    False, writing nothing, when a column cannot be summed exactly as int64."""
    import numpy as np
    import pandas as pd

    ts = np.asarray(cols["ts"]).astype("datetime64[us]").view(np.int64)
    n = len(ts)
    measures = _measures(cols, n)
    if measures is None:
        return False
    codes: dict[str, np.ndarray] = {}
    uniques: dict[str, np.ndarray] = {}
    for k in KEY_COLUMNS:
        values = pd.Series(cols[k] if k in cols else [None] * n, dtype=object)
        if k == "service_tier":
            values = values.fillna("")
        c, u = pd.factorize(values, use_na_sentinel=False)
        codes[k], uniques[k] = c, np.asarray(u, dtype=object)
    frame = pd.DataFrame(measures, columns=list(MEASURES))
    for r in ROLLUPS:
        _upsert(tx, r, _group(frame, _bucket(ts, r.grain), r, codes, uniques))
    return True


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


def _bucket(ts: np.ndarray, grain: str) -> np.ndarray:
    """Bucket starts (int64 µs) of a grain; weeks start on Monday (1970-01-01 was a
    Thursday)."""
    if grain == "week":
        day = ts // _US["day"]
        return (day - (day + 3) % 7) * _US["day"]
    return ts - ts % _US[grain]


def _group(
    frame: Any,
    bucket: np.ndarray,
    r: Rollup,
    codes: Mapping[str, np.ndarray],
    uniques: Mapping[str, np.ndarray],
) -> list[tuple[Any, ...]]:
    """The table's rows: (bucket text, key values, sums), summed per key."""
    import numpy as np

    kept = [d for d in r.key if d in r.dims]
    sums = frame.groupby([bucket, *(codes[d] for d in kept)], sort=False).sum()
    levels = [sums.index.get_level_values(i).to_numpy() for i in range(len(kept) + 1)]
    starts, inverse = np.unique(levels[0], return_inverse=True)
    text = np.char.replace(np.datetime_as_string(starts.astype("datetime64[us]")), "T", " ")
    columns: list[list[Any]] = [text.astype(object)[inverse].tolist()]
    blank = [""] * len(sums)
    for d in r.key:
        columns.append(uniques[d][levels[kept.index(d) + 1]].tolist() if d in kept else blank)
    columns.extend(sums[m].to_numpy().tolist() for m in MEASURES)
    return list(zip(*columns, strict=True))


def _upsert(tx: Tx, r: Rollup, params: list[tuple[Any, ...]]) -> None:
    table = r.table.name
    key = ", ".join(("bucket", *r.key))
    sets = ", ".join(f"{m} = {table}.{m} + excluded.{m}" for m in MEASURES)
    marks = ", ".join("?" * len(r.columns))
    sql = (
        f"INSERT INTO {table} ({', '.join(r.columns)}) VALUES ({marks}) "  # noqa: S608
        f"ON CONFLICT ({key}) DO UPDATE SET {sets}"
    )
    tx.dbapi.cursor().executemany(sql, params)
