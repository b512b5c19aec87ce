"""records()'s columnar copy of a store: complete id ranges kept as Arrow files.

A full-width ``records()`` is bounded by the driver (on SQLite the ``sqlite3`` module makes
a Python object for every value it returns: about 3.5 s of CPU for 1M rows × 28 columns).
Usage rows are only ever appended. The rows of an id range ``[k·S, (k+1)·S)`` (a
*segment*, ``S`` = :data:`SEGMENT_ROWS`) are read once, typed as records() types them
(:func:`llmspend.store.arrowio.read_usage`), and written to
``<user cache dir>/columns/<store uid>/<S>-<k>.arrow`` (Arrow IPC, zstd, 0600 in a 0700
directory). Later reads take them from there — decompressing costs about a hundredth of
the read — and read through SQL only the rows after the last copied segment. A segment
is copied once a row past it exists (it is *complete*). A store with rows at ids below 0
(before every segment) is read through SQL.

A copy is used only if every check below holds. Each runs in the same snapshot as the
rows read through SQL (PostgreSQL: the transaction is made REPEATABLE READ, and the rows
are read on its own connection):

- the store's ``llmspend_usage_generation`` row (migration 0015) has the ``store_uid`` and
  ``generation`` the file was written with. Triggers give ``generation`` a new random
  value whenever usage rows are updated or deleted (on SQLite also when a row is inserted
  anywhere but at the end), so a change made with plain SQL invalidates every copy;
- the segment's last row is still the row it was, in every column. A store restored from
  a backup, or a copied file written on both sides, holds other rows at the same ids (a
  difference only in rows before a range's last one is not seen);
- on PostgreSQL, the store holds as many rows in the segment's range as the file does.
  PostgreSQL gives ids out before commit, so a transaction can still commit a row into a
  complete range; SQLite's writers take turns and a new row's id is one above the highest;
- the file is whole, of this :data:`FORMAT` and segment size, with the columns asked for,
  of the types the rows through SQL have.

Otherwise, or on any error reading a file, that segment and every later one are read
through SQL as before. Copies are written only by a records() call that reads every row
and every column anyway (no filter, no time window): a narrow first query is never made
slower to fill the cache. ``LLMSPEND_RECORDS_CACHE=0`` turns the copy off (nothing read or
written); a cache directory that cannot be written just means no copy.

Each copy names its store and when it was last used, and writing one removes the copies of
stores that are gone or unused for ``LLMSPEND_RECORDS_CACHE_DAYS`` (30) days
(:mod:`llmspend.store.segment_prune`).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import env_number, private_dir, private_replacement, user_cache_dir
from ..timeutil import EPOCH
from .arrowio import COLUMN_KINDS, STORE_COLUMN, read_usage, sort_by_ts_id
from .fastsql import SQL, Tx
from .segment_prune import cache_days, mark_used, prune, write_origin

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["FORMAT", "SEGMENT_ROWS", "cache_dir", "enabled", "read_records", "segment_rows"]

#: Rows per segment (ids ``[k·S, (k+1)·S)``); ``LLMSPEND_RECORDS_SEGMENT_ROWS`` overrides it.
SEGMENT_ROWS = 1 << 16
#: The files' layout; a file of another format is ignored (and rewritten when read whole).
FORMAT = "1"

_STATE = SQL(
    "SELECT store_uid, generation, (SELECT max(id) FROM llmspend_usage) AS last_id, "
    "(SELECT min(id) FROM llmspend_usage) AS first_id FROM llmspend_usage_generation WHERE id = 1"
)
_NO_JIT = "SELECT set_config('jit', 'off', true) WHERE current_setting('jit', true) IS NOT NULL"
_DATABASES = SQL("PRAGMA database_list")
_NEXT = SQL("SELECT min(id) AS next_id FROM llmspend_usage WHERE id >= :hi")
#: Empty complete ranges (ids a rolled-back batch used up) are copied when rows follow
#: within this many ranges; a longer gap (an explicit huge id) stops the copy there.
_EMPTY_RUN = 64
_NEVER = 1 << 62  # an empty copy's time bounds: skipped by any window
_HAS_STATE_SQLITE = SQL(
    "SELECT 1 AS yes FROM sqlite_master WHERE type = 'table' AND name = 'llmspend_usage_generation'"
)
_HAS_STATE_PG = SQL("SELECT 1 AS yes WHERE to_regclass('llmspend_usage_generation') IS NOT NULL")
#: The columns that tell a segment's last row from another row at the same id: every one
#: (a restored backup given the same rows again, corrected in any column, is another store).
_SIGNATURE = ", ".join(
    dict.fromkeys(
        ("id", "record_uid", "service_tier", *(STORE_COLUMN.get(c, c) for c in COLUMN_KINDS))
    )
)
_LAST = SQL(
    f"SELECT {_SIGNATURE} FROM llmspend_usage WHERE id = "  # noqa: S608
    "(SELECT max(id) FROM llmspend_usage WHERE id >= :lo AND id < :hi)"
)
_TOTAL = SQL("SELECT count(*) AS n FROM llmspend_usage WHERE id < :end")
_COUNTS = SQL(
    "SELECT k, (SELECT count(*) FROM llmspend_usage WHERE id >= k * :size "
    "AND id < (k + 1) * :size) AS n FROM generate_series(CAST(0 AS BIGINT), :last) AS k"
)
_RECORDS_NAME = {store: name for name, store in STORE_COLUMN.items()}
#: Last rows looked up a statement (SQLite before 3.32 binds at most 999 values).
_IDS_A_STATEMENT = 500
_OFF = frozenset({"0", "false", "no", "off"})

log = logging.getLogger("llmspend")
_warned = threading.Event()


def enabled() -> bool:
    """Whether records() may use and write the copy (``LLMSPEND_RECORDS_CACHE``)."""
    return os.environ.get("LLMSPEND_RECORDS_CACHE", "").strip().lower() not in _OFF


def segment_rows() -> int:
    """Rows per segment: :data:`SEGMENT_ROWS`, or ``LLMSPEND_RECORDS_SEGMENT_ROWS`` (a
    whole number >= 1, else :class:`~llmspend.errors.ConfigError`)."""
    return int(
        env_number("LLMSPEND_RECORDS_SEGMENT_ROWS", SEGMENT_ROWS, unit="rows", whole=True, low=1)
    )


def cache_dir(store_uid: str) -> Path:
    """Where the copy of the store with ``store_uid`` is kept."""
    return user_cache_dir() / "columns" / store_uid


@dataclass(frozen=True)
class _Segment:
    index: int
    path: Path
    meta: Mapping[str, str]
    table: pa.Table | None = None  # just written: its rows, not read back

    @property
    def min_ts(self) -> int:
        return int(self.meta["min_ts"])

    @property
    def max_ts(self) -> int:
        return int(self.meta["max_ts"])


def read_records(
    conn: Any,
    columns: Sequence[str],
    where: Sequence[str],
    params: Mapping[str, Any],
    *,
    since: dt.datetime | None,
    until: dt.datetime | None,
    filters: Sequence[tuple[str, Sequence[Any]]],
    build: bool,
) -> pa.Table | None:
    """records() rows (``columns``, records() names) matching ``where``/``params`` — which
    say the same as ``since``/``until`` (naive UTC) and ``filters`` (store column, values) —
    in (ts, id) order, the complete segments taken from their copies; ``None`` when no copy
    applies (turned off, no complete segment, no valid copy and ``build`` false): the
    caller then reads through SQL. ``build``: write missing copies (the call reads every
    row and column anyway). Must be the transaction's first statement on PostgreSQL."""
    tx = Tx.of(conn)
    if not enabled():
        return None
    if not tx.sqlite:  # one snapshot for every statement below (the first of the transaction)
        tx.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        tx.execute(_NO_JIT)  # compiling costs more than these scans take
    if tx.run(_HAS_STATE_SQLITE if tx.sqlite else _HAS_STATE_PG).first() is None:
        return None  # a schema from before migration 0015 (a downgraded store)
    state = tx.run(_STATE).first()
    if state is None or state[2] is None or state[3] < 0:
        return None  # no rows, or rows at ids below 0: before every range, read through SQL
    uid, generation, last, _ = state
    size = segment_rows()
    days = cache_days()
    complete = last // size
    if complete == 0:
        return None
    folder = cache_dir(str(uid))
    key = {"format": FORMAT, "generation": str(generation), "rows": str(size)}
    origin = _origin(tx)
    if tx.sqlite:  # a file copied over the store (a restored backup) is another file
        key["file"] = origin.get("file", "")
        if not key["file"]:
            return None
    segments = _valid_prefix(tx, folder, key, complete, columns)
    if build and len(segments) < complete:
        more = _build(tx, folder, key, range(len(segments), complete), columns)
        if more:  # rare (a full read with ranges missing): the moment to tidy the cache
            _keep(folder, origin, days)
        segments += more
    if not segments:
        return None
    import pyarrow as pa

    need = list(dict.fromkeys((*columns, "ts", "id")))
    read = list(dict.fromkeys((*need, *(_RECORDS_NAME.get(c, c) for c, _ in filters))))
    lo = None if since is None else (since - EPOCH) // dt.timedelta(microseconds=1)
    hi = None if until is None else (until - EPOCH) // dt.timedelta(microseconds=1)
    parts = []
    for n, seg in enumerate(segments):
        if (lo is not None and seg.max_ts < lo) or (hi is not None and seg.min_ts >= hi):
            continue
        try:
            rows = _load(seg, read) if seg.table is None else seg.table
            parts.append(_filtered(rows, lo, hi, filters).select(need))
        except (OSError, ValueError, KeyError, pa.ArrowException):  # damaged or replaced
            segments = segments[:n]
            break
    if not segments:
        return None
    start = (segments[-1].index + 1) * size
    tail = read_usage(
        tx,
        need,
        [*where, "id >= :llmspend_from"],
        {**params, "llmspend_from": start},
        own_snapshot=True,
    )
    if any(part.schema != tail.schema for part in parts):  # another version's types
        return None
    table = pa.concat_tables([*parts, tail]) if parts else tail
    if parts:
        mark_used(folder, origin, days)  # one small file read; a write at most daily
    return sort_by_ts_id(table).select(list(columns))


def _valid_prefix(
    tx: Tx, folder: Path, key: Mapping[str, str], complete: int, columns: Sequence[str]
) -> list[_Segment]:
    """The copies of segments 0, 1, ... that are of ``key``, have ``columns`` and whose last
    row is still the store's row at that id (on PostgreSQL: and that hold as many rows as
    the store has in their range); up to the first that is not."""
    found: list[_Segment] = []
    for k in range(complete):
        path = folder / f"{key['rows']}-{k}.arrow"
        meta = _meta(path)
        if meta is None or not _usable(meta, key, columns):
            break
        found.append(_Segment(k, path, meta))
    if not found:
        return found
    now: dict[int, str] = {}
    for at in range(0, len(found), _IDS_A_STATEMENT):  # under any driver's bound-value limit
        chunk = found[at : at + _IDS_A_STATEMENT]
        ids = {f"i{n}": int(seg.meta["last_id"]) for n, seg in enumerate(chunk)}
        marks = ", ".join(f":{name}" for name in ids)
        rows = tx.run(
            SQL(f"SELECT {_SIGNATURE} FROM llmspend_usage WHERE id IN ({marks})"),  # noqa: S608
            ids,
        ).all()
        now.update((row[0], _signature(row)) for row in rows)
    counts: dict[int, int] = {}
    if not tx.sqlite:  # ids come out of commit order: a late row can land in any range
        counts = _counts(tx, found, int(key["rows"]))
    for n, seg in enumerate(found):
        empty = seg.meta["count"] == "0"  # a row put there later: the trigger or the count
        if not empty and now.get(int(seg.meta["last_id"])) != seg.meta["signature"]:
            return found[:n]
        if not tx.sqlite and counts.get(seg.index) != int(seg.meta["count"]):
            return found[:n]
    return found


def _origin(tx: Tx) -> dict[str, str]:
    """The store, as its copy's origin file names it. SQLite: the main database file's
    absolute ``path`` and ``file`` (its device and inode; both absent if unknown);
    PostgreSQL: host, port and database (never a password)."""
    if not tx.sqlite:
        info = getattr(tx.dbapi, "info", None)  # psycopg's connection details
        found = {name: getattr(info, name, None) for name in ("host", "port", "dbname")}
        return {"store": "postgresql", **{k: str(v) for k, v in found.items() if v}}
    for row in tx.run(_DATABASES).all():
        if row[1] == "main" and row[2]:
            try:
                st = os.stat(row[2])
            except OSError:
                break
            path = os.path.abspath(row[2])
            return {"store": "sqlite", "path": path, "file": f"{st.st_dev}:{st.st_ino}"}
    return {"store": "sqlite"}


def _keep(folder: Path, origin: Mapping[str, str], days: float) -> None:
    """A copy was just written in ``folder``: name its store, then remove the copies of
    stores that are gone or unused (:func:`~llmspend.store.segment_prune.prune`)."""
    try:
        write_origin(folder, origin)
    except OSError as exc:  # the copy stands; only age can remove it then
        log.debug("llmspend: could not write %s's origin: %s", folder, exc)
    prune(folder.parent, folder.name, days)


def _usable(meta: Mapping[str, str], key: Mapping[str, str], columns: Sequence[str]) -> bool:
    """Whether a copy's metadata is of ``key``, whole (every entry :func:`_build` writes,
    of its type) and names ``columns``."""
    if any(meta.get(name) != value for name, value in key.items()):
        return False
    try:
        names = json.loads(meta["columns"])
        for name in ("last_id", "count", "min_ts", "max_ts"):
            int(meta[name])
    except (KeyError, ValueError):
        return False
    if "signature" not in meta or not isinstance(names, list):
        return False
    return all(type(n) is str for n in names) and set(columns) <= set(names)


def _counts(tx: Tx, found: Sequence[_Segment], size: int) -> dict[int, int]:
    """PostgreSQL: the rows the store holds in each of ``found``'s ranges. One count over
    them all (an index-only scan once the table is vacuumed: ≈ 50 ms per 1M rows), then,
    only if it differs from the files', one per range: rows are never deleted while the
    generation stands, so an equal total means equal ranges."""
    end = (found[-1].index + 1) * size
    total = tx.run(_TOTAL, {"end": end}).one()[0]
    if total == sum(int(seg.meta["count"]) for seg in found):
        return {seg.index: int(seg.meta["count"]) for seg in found}
    return dict(tx.run(_COUNTS, {"size": size, "last": found[-1].index}).all())


def _signature(row: Sequence[Any]) -> str:
    return json.dumps(list(row), default=str)


def _meta(path: Path) -> dict[str, str] | None:
    """A copy's metadata, or ``None`` if it is missing or unreadable."""
    import pyarrow as pa
    import pyarrow.ipc as ipc

    try:
        with pa.memory_map(str(path)) as source:
            raw = ipc.open_file(source).schema.metadata or {}
        return {k.decode(): v.decode() for k, v in raw.items()}
    except (OSError, ValueError, pa.ArrowException):  # ValueError: not UTF-8
        return None


def _load(seg: _Segment, columns: Sequence[str]) -> pa.Table:
    """``columns`` of a copy (only those are read and decompressed); ``ValueError`` if the
    file is no longer the one checked (another process wrote its copy over it since)."""
    import pyarrow as pa
    import pyarrow.ipc as ipc

    names = json.loads(seg.meta["columns"])  # the file's columns, in its order
    fields = [names.index(c) for c in columns]
    with pa.memory_map(str(seg.path)) as source:
        reader = ipc.open_file(source, options=ipc.IpcReadOptions(included_fields=fields))
        raw = reader.schema.metadata or {}
        if {k.decode(): v.decode() for k, v in raw.items()} != seg.meta:
            raise ValueError(f"{seg.path} was replaced")
        table = reader.read_all()
    return table.replace_schema_metadata(None).select(list(columns))


def _filtered(
    table: pa.Table,
    lo: int | None,
    hi: int | None,
    filters: Sequence[tuple[str, Sequence[Any]]],
) -> pa.Table:
    """The rows of ``table`` in ``[lo, hi)`` (µs since the epoch) and each filter's values
    — what the SQL's ``ts >= :since``, ``ts < :until`` and ``col IN (...)`` keep."""
    import pyarrow as pa
    import pyarrow.compute as pc

    masks = []
    if lo is not None or hi is not None:
        us = table.column("ts").cast(pa.int64())
        if lo is not None:
            masks.append(pc.greater_equal(us, lo))
        if hi is not None:
            masks.append(pc.less(us, hi))
    for column, values in filters:
        name = _RECORDS_NAME.get(column, column)
        masks.append(pc.is_in(table.column(name), value_set=pa.array(values, pa.string())))
    if not masks:
        return table
    mask = masks[0]
    for more in masks[1:]:
        mask = pc.and_(mask, more)
    return table.filter(mask)


def _build(
    tx: Tx, folder: Path, key: Mapping[str, str], indexes: range, columns: Sequence[str]
) -> list[_Segment]:
    """Read segments ``indexes`` through SQL and write their copies; stops at one that
    cannot be written, or at an empty one followed by more than :data:`_EMPTY_RUN` empty
    ranges (the rest is then read through SQL)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    size = int(key["rows"])
    written: list[_Segment] = []
    try:
        private_dir(folder)
    except OSError as exc:
        _warn_once(folder, exc)
        return written
    for k in indexes:
        bounds = {"lo": k * size, "hi": (k + 1) * size}
        table = read_usage(tx, columns, ["id >= :lo", "id < :hi"], bounds, own_snapshot=True)
        meta = {**key, "columns": json.dumps(list(columns)), "count": str(table.num_rows)}
        if table.num_rows == 0:
            following = tx.run(_NEXT, bounds).one()[0]
            if following is None or following // size - k > _EMPTY_RUN:
                break
            meta.update(last_id="-1", signature="", min_ts=str(_NEVER), max_ts=str(-_NEVER))
        else:
            last = tx.run(_LAST, bounds).one()
            us = table.column("ts").cast(pa.int64())
            meta.update(
                last_id=str(last[0]),
                signature=_signature(last),
                min_ts=str(pc.min(us).as_py()),
                max_ts=str(pc.max(us).as_py()),
            )
        path = folder / f"{key['rows']}-{k}.arrow"
        try:
            _write(path, table.replace_schema_metadata(meta))
        except OSError as exc:
            _warn_once(folder, exc)
            break
        written.append(_Segment(k, path, meta, table))
    return written


def _write(path: Path, table: pa.Table) -> None:
    """Write ``table`` to ``path`` atomically (a private temporary file renamed into place)."""
    import pyarrow as pa
    import pyarrow.ipc as ipc

    options = ipc.IpcWriteOptions(compression="zstd")
    with (
        private_replacement(path) as tmp,
        pa.OSFile(str(tmp), "wb") as sink,
        ipc.new_file(sink, table.schema, options=options) as w,
    ):
        w.write_table(table)


def _warn_once(folder: Path, exc: OSError) -> None:
    if not _warned.is_set():
        _warned.set()
        log.info("llmspend: records() keeps no columnar copy in %s: %s", folder, exc)
