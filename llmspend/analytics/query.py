"""The query engine: exact sums over any periods, from rollups plus raw edges.

A query asks for the sums of :data:`~llmspend.store.rollups.MEASURES` per *period*
(consecutive ``[b[i], b[i+1])`` ranges of naive UTC boundaries ``b``) and per group key.
Rollup buckets cannot split an hour, so each level answers what it can exactly:

1. **days**: every boundary is snapped to the nearest UTC midnight; each daily rollup row
   counts for the period its bucket falls in under the snapped boundaries;
2. **hours**: boundaries snapped to the nearest hour; an hourly row whose period differs
   between the hour snapping and the day snapping is added to its hour-snapped period and
   subtracted from its day-snapped one (only the ≤ 12 hours next to each boundary qualify);
3. **raw rows** (through the ``ts`` index): the same correction between the true
   boundaries and the hour snapping (≤ 30 minutes next to each boundary).

All sums are integers, so the result equals a direct computation over the raw rows
exactly (a group whose rows all cancel has ``calls == 0`` and is dropped). A level is
skipped when the range is shorter than two of its units (or, for days, when periods are
shorter than a day), which keeps short windows on raw rows only.

Grouping by a column the rollups do not keep (``status``, ``tag:NAME``, ...) or filtering
on one, or by dimensions no one rollup family keeps together (``user`` with ``api``),
runs the whole query on raw rows instead (bounded by since/until). ``api`` and
``service_tier`` are kept by the model family only (a NULL tier stored as "", read back
as None).
"""

from __future__ import annotations

import datetime as dt
import json
from bisect import bisect_right
from collections.abc import Mapping, Sequence
from itertools import pairwise
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Connection,
    DateTime,
    Integer,
    String,
    and_,
    bindparam,
    case,
    cast,
    column,
    func,
    literal_column,
    select,
    type_coerce,
    union_all,
)
from sqlalchemy.dialects.postgresql import ARRAY

from ..errors import ValidationError
from ..store.fastsql import db_time_for
from ..store.models import UsageRecord
from ..store.rollups import MEASURES, up_to_date
from ..usage import build_filters
from .plan import HI_INF, LO_INF, Level, Segment, family_for, plan

if TYPE_CHECKING:
    from ..store.engine import Store

__all__ = [
    "DIMENSIONS",
    "HI_INF",
    "LO_INF",
    "RAW_KEYS",
    "Acc",
    "aggregate",
    "check_filters",
    "data_bounds",
    "parse_keys",
]


#: Group keys the rollups keep: ``records()`` column → store column.
DIMENSIONS: dict[str, str] = {
    "org": "org_name",
    "project": "project_name",
    "user": "user_name",
    "provider": "provider",
    "model": "model",
    "api": "api",
    "service_tier": "service_tier",
}
#: Further ``records()`` columns one can group by (read from raw rows), plus ``tag:NAME``.
RAW_KEYS: tuple[str, ...] = (
    "status", "price_status", "requested_model", "error_type", "session_id",
    "notebook_path", "streamed", "usage_estimated",
)  # fmt: skip
TAG_PREFIX = "tag:"
_BOOL_KEYS = ("streamed", "usage_estimated")
_CASE_LIMIT = 48  # above this many segments, rollup levels group by bucket instead of CASE
_UNION_LIMIT = 200  # SELECTs per UNION ALL statement (SQLite allows 500)
_VALUES_LIMIT = 5000  # (lo, hi, segment) rows per PostgreSQL statement
# PostgreSQL: above this many disjoint time ranges, join a VALUES list of them (below it,
# constant ranges give the planner real estimates; with few VALUES rows it seq-scans).
_JOIN_MIN = 16
_PG_NO_JIT = "SELECT set_config('jit', 'off', true)"
_PG_SETTINGS = (
    "SELECT set_config('jit', 'off', true), "
    "set_config('max_parallel_workers_per_gather', '0', true)"
)

#: (period index, group key) → sums in MEASURES order.
Acc = dict[tuple[int, tuple[Any, ...]], list[int]]


def parse_keys(by: Any, *, what: str = "by") -> tuple[str, ...]:
    """Validate group keys: a column name or a list of them (``None`` = no grouping)."""
    if by is None:
        return ()
    if isinstance(by, str):
        keys = [by]
    else:
        try:
            keys = list(by)
        except TypeError:
            raise ValidationError(f"{what}: expected a column name or a list of them") from None
    allowed = (*DIMENSIONS, *RAW_KEYS)
    for key in keys:
        if not isinstance(key, str):
            raise ValidationError(f"{what}: expected column names, got {key!r}")
        if key in allowed:
            continue
        if key.startswith(TAG_PREFIX) and len(key) > len(TAG_PREFIX):
            continue
        raise ValidationError(
            f"{what}: unknown column {key!r}; use one of {', '.join(allowed)}, or 'tag:NAME' "
            "for a tag's value"
        )
    if len(set(keys)) != len(keys):
        raise ValidationError(f"{what}: a column is named twice in {keys!r}")
    return tuple(keys)


def check_filters(filters: Mapping[str, Any]) -> dict[str, Any]:
    """Keep the filters that are set; unknown names or bad values are a ValidationError."""
    build_filters(filters)  # validates names and values the way records() does
    return {k: v for k, v in filters.items() if v is not None}


def data_bounds(conn: Connection) -> tuple[dt.datetime, dt.datetime] | None:
    """(oldest ts, newest ts) of the usage rows, through the ts index; None when empty."""
    ts = UsageRecord.ts
    lo = select(func.min(ts)).scalar_subquery()
    hi = select(func.max(ts)).scalar_subquery()
    first, last = conn.execute(select(lo, hi)).one()
    if first is None or last is None:
        return None
    if isinstance(first, str):  # a scalar subquery loses the DateTime type on SQLite
        first, last = dt.datetime.fromisoformat(first), dt.datetime.fromisoformat(last)
    return first, last


# -- SQL -------------------------------------------------------------------------------------


def _in_range(col: Any, lo: dt.datetime, hi: dt.datetime) -> ColumnElement[bool] | None:
    conds = []
    if lo != LO_INF:
        conds.append(col >= lo)
    if hi != HI_INF:
        conds.append(col < hi)
    if not conds:
        return None
    return and_(*conds) if len(conds) > 1 else conds[0]


def _ranges(segs: Sequence[Segment]) -> list[tuple[dt.datetime, dt.datetime, int, int]]:
    """Contiguous runs of segments: (lo, hi, first index, end index)."""
    out: list[tuple[dt.datetime, dt.datetime, int, int]] = []
    for i, s in enumerate(segs):
        if out and out[-1][1] == s.lo:
            out[-1] = (out[-1][0], s.hi, out[-1][2], i + 1)
        else:
            out.append((s.lo, s.hi, i, i + 1))
    return out


def _case(col: Any, segs: Sequence[Segment], lo: int, hi: int) -> Any:
    """A balanced CASE tree mapping a time to its segment index (log2 comparisons)."""
    if hi - lo == 1:
        return literal_column(str(lo))
    mid = (lo + hi) // 2
    return case((col < segs[mid].lo, _case(col, segs, lo, mid)), else_=_case(col, segs, mid, hi))


def _raw_measures() -> list[Any]:
    u = UsageRecord
    one: Any = literal_column("1")
    zero: Any = literal_column("0")
    return [
        func.count(),
        func.sum(case((u.status == "error", one), else_=zero)),
        func.sum(case((u.status == "refused", one), else_=zero)),
        func.sum(case((u.cost_nanos.is_(None), one), else_=zero)),
        *(func.sum(getattr(u, m)) for m in MEASURES[4:9]),
        func.coalesce(func.sum(u.cost_nanos), zero),
    ]


def _key_columns(level: Level, keys: Sequence[str]) -> tuple[list[Any], list[Any]]:
    """SQL columns to group by, and per output key an index into them or a transform."""
    cols: list[Any] = []
    where: dict[str, int] = {}
    getters: list[Any] = []
    for key in keys:
        name = "tags" if key.startswith(TAG_PREFIX) else DIMENSIONS.get(key, key)
        if name not in where:
            where[name] = len(cols)
            if level.table is not None:
                cols.append(level.table.c[name])
            else:
                cols.append(getattr(UsageRecord, name))
        idx = where[name]
        if key.startswith(TAG_PREFIX):
            getters.append((idx, key[len(TAG_PREFIX) :]))
        elif key in _BOOL_KEYS:
            getters.append((idx, bool))
        elif key == "service_tier":
            getters.append((idx, _NO_TIER))
        else:
            getters.append((idx, None))
    return cols, getters


_NO_TIER = object()
_tags_cache: dict[str, dict[str, Any]] = {}


def _tag(text: Any, name: str) -> Any:
    if not text:
        return None
    tags = _tags_cache.get(text)
    if tags is None:
        tags = json.loads(text)
        if len(_tags_cache) > 10_000:
            _tags_cache.clear()
        _tags_cache[text] = tags
    return tags.get(name)


def _filters_for(level: Level, filters: Mapping[str, Any]) -> list[Any]:
    if level.table is None:
        return build_filters(filters)
    columns = {k: level.table.c[v] for k, v in DIMENSIONS.items() if v in level.table.c}
    return build_filters(filters, columns)


def _run_level(
    conn: Connection,
    level: Level,
    segs: list[Segment],
    keys: Sequence[str],
    filters: Mapping[str, Any],
    acc: Acc,
) -> None:
    sqlite = conn.dialect.name == "sqlite"
    if level.table is None:
        tcol: Any = UsageRecord.ts
        measures = _raw_measures()
    else:
        tcol = level.table.c.bucket
        measures = [func.sum(level.table.c[m]) for m in MEASURES]
    if not sqlite:  # PostgreSQL's sum(bigint) is numeric: have it sent back as integers
        measures = [cast(m, BigInteger) for m in measures]
    key_cols, getters = _key_columns(level, keys)
    flt = _filters_for(level, filters)
    ranges = _ranges(segs)
    if not sqlite and len(ranges) > _JOIN_MIN:
        _run_joined(conn, level, segs, tcol, key_cols, measures, flt, getters, acc)
        return
    if sqlite and level.table is not None and len(ranges) > 1:
        _run_templated(conn, segs, ranges, tcol, key_cols, measures, flt, getters, acc)
        return
    # One SELECT per contiguous time range, glued with UNION ALL: each range is then an
    # index range scan (an OR of ranges makes SQLite scan a WITHOUT ROWID table). A range
    # of few segments names its segment in SQL (a constant or a CASE tree); a range of
    # many (hourly trends) groups by bucket and is mapped to segments here.
    by_segment: list[Any] = []
    by_bucket: list[Any] = []
    for lo, hi, first, end in ranges:
        lead: list[Any] = []
        grouped_lead = True
        bucket_mode = level.table is not None and end - first > _CASE_LIMIT
        if bucket_mode:
            lead = [type_coerce(tcol, String()) if sqlite else tcol]  # no datetime parsing
        elif end - first > 1:
            lead = [_case(tcol, segs, first, end)]
        elif len(segs) > 1:
            lead, grouped_lead = [literal_column(str(first))], False
        stmt = select(*lead, *key_cols, *measures)
        cond = _in_range(tcol, lo, hi)
        if cond is not None:
            stmt = stmt.where(cond)
        stmt = stmt.where(*flt)
        first_group = 1 if grouped_lead or not lead else 2
        last_group = len(lead) + len(key_cols)
        if last_group >= first_group:
            stmt = stmt.group_by(
                *(literal_column(str(i)) for i in range(first_group, last_group + 1))
            )
        (by_bucket if bucket_mode else by_segment).append(stmt)
    o = 1 if len(segs) > 1 else 0
    for selects, bucketed in ((by_segment, False), (by_bucket, True)):
        for i in range(0, len(selects), _UNION_LIMIT):
            chunk = selects[i : i + _UNION_LIMIT]
            compound: Any = union_all(*chunk) if len(chunk) > 1 else chunk[0]
            result = conn.execute(compound)
            # Plain DBAPI tuples: every column is already what we need (ints, text, and
            # datetimes on PostgreSQL), and skipping Row objects halves the Python time.
            rows = result.cursor.fetchall() if result.cursor is not None else []
            result.close()
            _combine(rows, segs, o, bucketed, sqlite, len(key_cols), getters, acc)


def _run_templated(
    conn: Connection,
    segs: list[Segment],
    ranges: list[tuple[dt.datetime, dt.datetime, int, int]],
    tcol: Any,
    key_cols: list[Any],
    measures: list[Any],
    flt: list[Any],
    getters: list[Any],
    acc: Acc,
) -> None:
    """SQLite, a rollup level over many time ranges: one SELECT (grouped by bucket)
    compiled once, repeated per range with its own bounds in a UNION ALL; each bucket is
    mapped to its segment here. Building a SQLAlchemy SELECT per range cost more than
    running the query."""
    # A range of one segment groups by the segment's index (a parameter), a range of
    # several by bucket (text), so a run of single-segment ranges sends back few rows.
    lead = case(
        (bindparam("one", 0, type_=Integer()) == 1, bindparam("seg", 0, type_=Integer())),
        else_=type_coerce(tcol, String()),
    )
    stmt = (
        select(lead, *key_cols, *measures)
        .where(tcol >= bindparam("lo", ""), tcol < bindparam("hi", ""), *flt)
        .group_by(*(literal_column(str(i)) for i in range(1, len(key_cols) + 2)))
    )
    compiled = stmt.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
    names = compiled.positiontup or []
    fixed = compiled.params
    one = compiled.string
    for i in range(0, len(ranges), _UNION_LIMIT):
        chunk = ranges[i : i + _UNION_LIMIT]
        params: list[Any] = []
        for lo, hi, first, end in chunk:
            bound = {
                "lo": db_time_for(True, lo),
                "hi": db_time_for(True, hi),
                "one": int(end - first == 1),
                "seg": first,
            }
            params.extend(bound[n] if n in bound else fixed[n] for n in names)
        sql = " UNION ALL ".join([one] * len(chunk))
        result = conn.exec_driver_sql(sql, tuple(params))
        rows = result.cursor.fetchall() if result.cursor is not None else []
        result.close()
        if any(isinstance(r[0], str) for r in rows):
            starts = [db_time_for(True, seg.lo) for seg in segs]
            rows = [
                r if not isinstance(r[0], str) else (bisect_right(starts, r[0]) - 1, *r[1:])
                for r in rows
            ]
        _combine(rows, segs, 1, False, True, len(key_cols), getters, acc)


def _run_joined(
    conn: Connection,
    level: Level,
    segs: list[Segment],
    tcol: Any,
    key_cols: list[Any],
    measures: list[Any],
    flt: list[Any],
    getters: list[Any],
    acc: Acc,
) -> None:
    """PostgreSQL, many segments: join the (lo, hi, segment) ranges, sent as three array
    parameters and unnested, to the table; each range becomes one index range scan (a
    nested loop). The statement text does not depend on the ranges, so SQLAlchemy compiles
    it once (a VALUES list of literals was compiled anew for every call)."""
    table = level.table if level.table is not None else UsageRecord.__table__
    ranges = (
        func.unnest(
            bindparam("r_lo", type_=ARRAY(DateTime())),
            bindparam("r_hi", type_=ARRAY(DateTime())),
            bindparam("r_seg", type_=ARRAY(Integer())),
        )
        .table_valued(column("lo", DateTime()), column("hi", DateTime()), column("seg", Integer()))
        .render_derived(name="r")
    )
    stmt = (
        select(ranges.c.seg, *key_cols, *measures)
        .select_from(ranges.join(table, and_(tcol >= ranges.c.lo, tcol < ranges.c.hi)))
        .where(*flt)
        .group_by(*(literal_column(str(i)) for i in range(1, len(key_cols) + 2)))
    )
    for start in range(0, len(segs), _VALUES_LIMIT):
        chunk = segs[start : start + _VALUES_LIMIT]
        params = {
            "r_lo": [s.lo for s in chunk],
            "r_hi": [s.hi for s in chunk],
            "r_seg": list(range(start, start + len(chunk))),
        }
        result = conn.execute(stmt, params)
        rows = result.cursor.fetchall() if result.cursor is not None else []
        result.close()
        _combine(rows, segs, 1, False, False, len(key_cols), getters, acc)


def _combine(
    rows: Sequence[Any],
    segs: list[Segment],
    o: int,
    bucketed: bool,
    sqlite: bool,
    n_keys: int,
    getters: list[Any],
    acc: Acc,
) -> None:
    """Add (or subtract) each row's sums to its periods."""
    starts: list[Any] = [db_time_for(sqlite, s.lo) for s in segs]
    m0 = o + n_keys
    simple = all(g[1] is None for g in getters)
    for row in rows:
        if not row[m0]:
            continue
        if bucketed:
            seg = segs[bisect_right(starts, row[0]) - 1]
        elif o:
            seg = segs[int(row[0])]
        else:
            seg = segs[0]
        if simple:
            key = tuple(row[o + g[0]] for g in getters)
        else:
            key = tuple(_key_value(row[o + idx], how) for idx, how in getters)
        values = list(row[m0:])
        if seg.plus is not None:
            slot = acc.get((seg.plus, key))
            if slot is None:
                acc[(seg.plus, key)] = list(values)
            else:
                for i, v in enumerate(values):
                    slot[i] += v
        if seg.minus is not None:
            slot = acc.get((seg.minus, key))
            if slot is None:
                acc[(seg.minus, key)] = [-v for v in values]
            else:
                for i, v in enumerate(values):
                    slot[i] -= v


def _key_value(value: Any, how: Any) -> Any:
    if how is None:
        return value
    if how is bool:
        return bool(value)
    if how is _NO_TIER:  # rollups store a NULL tier as ""
        return value or None
    return _tag(value, how)


def aggregate(
    store: Store | Connection,
    bounds: Sequence[dt.datetime],
    keys: Sequence[str] = (),
    filters: Mapping[str, Any] | None = None,
    *,
    use_days: bool = True,
) -> Acc:
    """Sums per (period index, group key) over ``[bounds[i], bounds[i+1])``.

    ``bounds`` are naive UTC datetimes, non-decreasing; :data:`LO_INF` / :data:`HI_INF`
    mean unbounded. ``keys`` are validated names (:func:`parse_keys`); ``filters`` are
    ``records()`` filters (:func:`check_filters`). Groups without calls are left out.

    Given a store, it first brings the rollups up to date (SQLite: the rows past the mark,
    see :func:`~llmspend.store.rollups.up_to_date`); given an open connection, that is
    the caller's to do.
    """
    filters = filters or {}
    if len(bounds) < 2 or any(b > c for b, c in pairwise(bounds)):
        raise ValueError(f"bounds must be non-decreasing, got {bounds!r}")
    raw_only = any(k not in DIMENSIONS for k in keys) or any(f not in DIMENSIONS for f in filters)
    acc: Acc = {}
    kept = None if raw_only else family_for({DIMENSIONS[k] for k in (*keys, *filters)})
    raw_only = kept is None
    family = kept or "full"
    steps = plan(bounds, raw_only=raw_only, use_days=use_days, family=family, use_weeks=True)
    if isinstance(store, Connection):
        for level, segs in steps:
            _run_level(store, level, segs, keys, filters, acc)
    else:
        with up_to_date(store).begin() as conn:
            if conn.dialect.name == "postgresql":
                if len(steps) > 1:
                    # One snapshot for every level: a concurrent write is seen by all or none.
                    conn.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                # These queries run in milliseconds; JIT compiling them costs more than that
                # (their row estimates, over parameterized ranges, look big to the planner),
                # and so does starting parallel workers for a few thousand rollup rows.
                conn.exec_driver_sql(_PG_SETTINGS if not raw_only else _PG_NO_JIT)
            for level, segs in steps:
                _run_level(conn, level, segs, keys, filters, acc)
    return {k: v for k, v in acc.items() if v[0] != 0}


def total(acc: Acc) -> list[int]:
    """Column sums over every entry of an accumulator."""
    out = [0] * len(MEASURES)
    for sums in acc.values():
        for i, v in enumerate(sums):
            out[i] += v
    return out
