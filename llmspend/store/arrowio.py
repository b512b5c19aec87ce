"""Usage rows between the store and Arrow, without a Python object per value where it
can be helped: the fast read path of ``records()`` and the COPY path of ``ingest()``.

Reading: on PostgreSQL connectorx (Rust, the ``fast`` extra: the binary protocol straight
into Arrow, on its own connection to the same server) when installed and the connection
is a plain TCP one, else ``COPY (SELECT ...) TO STDOUT`` in CSV, parsed by Arrow's CSV
reader (C++, no Python object per value); on SQLite the raw ``sqlite3`` cursor's rows,
turned into one object matrix and then typed Arrow arrays column by column. Money stays
integer nanodollars until the end, where each column becomes ``decimal128(38, 9)`` with
the same unscaled integer: exact, and summed exactly by Arrow.

Writing (PostgreSQL): validated columns are written as CSV by Arrow and sent with
``COPY ... FROM STDIN``.

pyarrow is optional (the ``parquet`` extra): callers check :func:`have_pyarrow` first.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import re
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from ..errors import ValidationError
from .fastsql import SQL, Tx
from .models import UsageRecord

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

__all__ = [
    "AS_VALUES",
    "COLUMN_KINDS",
    "STORE_COLUMN",
    "array_of",
    "check_as",
    "copy_in",
    "have_connectorx",
    "have_pyarrow",
    "nanos_to_decimal",
    "read_records",
    "read_rows",
    "read_usage",
    "shaped",
    "sort_by_ts_id",
    "to_pandas",
    "where_clauses",
]

#: records() column → store column.
STORE_COLUMN: dict[str, str] = {
    "org": "org_name", "project": "project_name", "user": "user_name",
    "cost_usd": "cost_nanos", "estimate_usd": "estimate_nanos",
}  # fmt: skip

#: records() column → kind of value (how it is typed in Arrow and pandas).
COLUMN_KINDS: dict[str, str] = {
    "id": "int", "ts": "ts", "request_id": "text", "provider": "text", "api": "text",
    "model": "text", "requested_model": "text", "org": "text", "project": "text",
    "user": "text", "input_tokens": "int", "cached_input_tokens": "int",
    "cache_write_tokens": "int", "output_tokens": "int", "reasoning_tokens": "int",
    "cost_usd": "money", "estimate_usd": "money", "price_status": "text", "price_ref": "text",
    "status": "text", "error_type": "text", "latency_ms": "float", "streamed": "flag",
    "usage_estimated": "flag", "tags": "tags", "session_id": "text", "notebook_path": "text",
}  # fmt: skip

_TABLE = UsageRecord.__tablename__


def array_of(values: Any, type_: Any, *, from_pandas: bool = False) -> Any:
    """``pa.array(values, type_)``; a numpy object array is handed over as a list, which
    Arrow converts 10-25x as fast (its ndarray path checks every value pandas-style)."""
    import pyarrow as pa

    if getattr(getattr(values, "dtype", None), "kind", "") == "O":
        values = values.tolist()
    return pa.array(values, type=type_, from_pandas=from_pandas)


def have_pyarrow() -> bool:
    return importlib.util.find_spec("pyarrow") is not None


def _select(
    columns: Sequence[str], where: Sequence[str], order: str | None, limit: int | None
) -> SQL:
    # Only constant identifiers and the callers' constant clauses are formatted in; every
    # value is a bound parameter.
    cols = ", ".join(STORE_COLUMN.get(c, c) for c in columns)
    text = f"SELECT {cols} FROM {_TABLE}"  # noqa: S608
    if where:
        text += " WHERE " + " AND ".join(where)
    if order:
        text += f" ORDER BY {order}"
    if limit is not None:
        text += f" LIMIT {int(limit)}"
    return SQL(text)


def read_usage(
    conn: Any,
    columns: Sequence[str],
    where: Sequence[str] = (),
    params: Mapping[str, Any] | None = None,
    *,
    order: str | None = None,
    limit: int | None = None,
    own_snapshot: bool = False,
) -> pa.Table:
    """The usage rows matching ``where`` (``:name`` clauses over store columns) as an
    Arrow table with ``columns`` (records() names, typed per :data:`COLUMN_KINDS`).

    Rows come in the store's order unless ``order`` (store columns) is given.
    ``own_snapshot``: read on ``conn`` itself, in its transaction's snapshot (on
    PostgreSQL by COPY, not on connectorx's connection of its own).
    """
    tx = Tx.of(conn)
    sql = _select(columns, where, order, limit)
    if tx.sqlite:
        arrays = _read_sqlite(tx, sql, columns, params or {})
    else:
        # one array per column (never an empty list): None means read with COPY
        fast = None if own_snapshot else _read_connectorx(tx, sql, columns, params or {})
        arrays = fast or _read_copy(tx, sql, columns, params or {})
    import pyarrow as pa

    return pa.Table.from_arrays(arrays, names=list(columns))


def read_rows(
    conn: Any,
    columns: Sequence[str],
    where: Sequence[str],
    params: Mapping[str, Any],
    *,
    order: str | None = None,
    limit: int | None = None,
) -> list[Any]:
    """:func:`read_usage` without pyarrow: the rows as the driver returns them."""
    tx = Tx.of(conn)
    return tx.run(_select(columns, where, order, limit), dict(params)).all()


#: Rows per ``fetchmany`` on SQLite: the rows of one chunk are Python objects at once.
_SQLITE_CHUNK = 1 << 16


def _read_sqlite(tx: Tx, sql: SQL, columns: Sequence[str], params: Mapping[str, Any]) -> list[Any]:
    """SQLite: the ``sqlite3`` cursor's rows, a chunk at a time, each chunk turned into one
    Arrow struct array by Arrow in one pass over the row tuples (``ts`` as its stored text,
    flags as integers); then each column is parsed, typed and made UTC in Arrow, whole."""
    import pyarrow as pa
    import pyarrow.compute as pc

    kinds = [COLUMN_KINDS.get(name, "text") for name in columns]
    row_type = pa.struct(
        [pa.field(name, pa.string() if k == "ts" else pa.int64() if k == "flag" else _read_type(k))
         for name, k in zip(columns, kinds, strict=True)]
    )  # fmt: skip
    cursor = tx.dbapi.cursor()
    cursor.execute(sql.render("sqlite"), dict(params))
    chunks = []
    while rows := cursor.fetchmany(_SQLITE_CHUNK):
        chunks.append(pa.array(rows, type=row_type))
    del rows
    whole = pa.concat_arrays(chunks) if chunks else pa.array([], type=row_type)
    out = []
    for name, kind, col in zip(columns, kinds, whole.flatten(), strict=True):
        if name in ("id", "ts") and col.null_count:  # NOT NULL: only a damaged page says so
            import sqlite3

            raise sqlite3.DatabaseError(
                f"database disk image is malformed: a usage row read without its {name}"
            )
        if kind == "ts":  # stored as text, "YYYY-MM-DD HH:MM:SS.ffffff"
            out.append(_utc(pc.cast(col, pa.timestamp("us"))))
        elif kind == "flag":
            out.append(pc.not_equal(col, 0))
        else:
            out.append(_typed(kind, col))
    return out


def have_connectorx() -> bool:
    return importlib.util.find_spec("connectorx") is not None


#: Connection parameters a connectorx URL carries here, and others that may be set to
#: their defaults; with any other (sslmode=require, a service file, options...) the COPY
#: read is used instead.
_PLAIN = frozenset({"host", "hostaddr", "port", "user", "dbname", "password"})
_DEFAULTS = {"sslcertmode": "allow", "sslmode": "prefer"}


def _pg_url(dbapi: Any) -> str | None:
    """A ``postgresql://`` URL for the server and database of a psycopg connection, or
    ``None`` when it is not a plain TCP connection."""
    import urllib.parse

    info = dbapi.info
    extra = {k: v for k, v in info.get_parameters().items() if k not in _PLAIN}
    if any(_DEFAULTS.get(k) != v for k, v in extra.items()):
        return None
    if not info.host or info.host.startswith("/"):
        return None
    q = urllib.parse.quote
    auth = q(info.user, safe="") + (":" + q(info.password, safe="") if info.password else "")
    return f"postgresql://{auth}@{info.host}:{info.port}/{q(info.dbname, safe='')}"


def _literal(value: Any) -> str | None:
    """``value`` as a PostgreSQL literal, or ``None`` for a type not handled here
    (connectorx takes no bound parameters). ``E''`` text escapes backslashes itself, so it
    reads the same whatever ``standard_conforming_strings`` says."""
    if isinstance(value, str) and "\x00" not in value:
        return "E'" + value.replace("\\", "\\\\").replace("'", "''") + "'"
    if isinstance(value, dt.datetime) and value.tzinfo is None:
        return f"TIMESTAMP '{value.isoformat(sep=' ', timespec='microseconds')}'"
    return None


def _read_connectorx(
    tx: Tx, sql: SQL, columns: Sequence[str], params: Mapping[str, Any]
) -> list[Any] | None:
    """PostgreSQL: the rows read by connectorx, or ``None`` (not installed, not a plain
    TCP connection, or a parameter of another type).

    It reads on a connection of its own: what is committed, which is what a transaction
    that has read nothing yet sees too (records() reads in a fresh one).
    """
    if not have_connectorx():
        return None
    url = _pg_url(tx.dbapi)
    literals = {k: _literal(v) for k, v in params.items()}
    if url is None or any(v is None for v in literals.values()):
        return None
    import connectorx as cx

    # Only constant identifiers and clauses are in sql.text; each :name is from
    # where_clauses and becomes its literal.
    text = re.sub(r":(\w+)", lambda m: literals[m.group(1)] or "", sql.text)
    table: Any = cx.read_sql(url, text, return_type="arrow")
    # typed by the columns' types; cast in case a version types one otherwise
    return [
        _typed(COLUMN_KINDS.get(name, "text"),
               table.column(i).combine_chunks().cast(_read_type(COLUMN_KINDS.get(name, "text"))))
        for i, name in enumerate(columns)
    ]  # fmt: skip


def _read_type(kind: str) -> Any:
    """The Arrow type a column of ``kind`` is read as (money as int64 nanodollars)."""
    import pyarrow as pa

    if kind in ("int", "money"):
        return pa.int64()
    if kind in ("text", "tags"):
        return pa.string()
    if kind == "float":
        return pa.float64()
    if kind == "flag":
        return pa.bool_()
    return pa.timestamp("us")


def _utc(ts: Any) -> Any:
    import pyarrow as pa

    return ts.cast(pa.timestamp("us", tz="UTC"))  # stored naive UTC: same instants


def _typed(kind: str, arr: Any) -> Any:
    """An array as read (nanos as int64) → its records() Arrow type."""
    if kind == "money":
        return nanos_to_decimal(arr)
    if kind == "ts":
        return _utc(arr)
    return arr


def nanos_to_decimal(nanos: Any) -> Any:
    """int64 nanodollars → ``decimal128(38, 9)`` USD, exactly (same unscaled integer)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    dec_type = pa.decimal128(38, 9)
    values = np.ascontiguousarray(nanos.fill_null(0).to_numpy(zero_copy_only=False), np.int64)
    dec = _from_unscaled(values, dec_type)
    if nanos.null_count:
        dec = pc.if_else(nanos.is_valid(), dec, pa.scalar(None, dec_type))
    return dec


def _read_copy(tx: Tx, sql: SQL, columns: Sequence[str], params: Mapping[str, Any]) -> list[Any]:
    import pyarrow as pa
    import pyarrow.csv as pcsv

    query = sql.render(tx.dialect.name)
    cursor = tx.dbapi.cursor()
    with cursor.copy(f"COPY ({query}) TO STDOUT WITH (FORMAT csv)", dict(params)) as copy:
        data = b"".join(bytes(block) for block in copy)
    types = {name: _read_type(COLUMN_KINDS.get(name, "text")) for name in columns}
    if not data:  # no rows: empty columns, typed as the rows would be
        return [
            _typed(COLUMN_KINDS.get(name, "text"), pa.array([], type=t))
            for name, t in types.items()
        ]
    table = pcsv.read_csv(
        pa.py_buffer(data),
        read_options=pcsv.ReadOptions(column_names=list(columns), block_size=1 << 24),
        parse_options=pcsv.ParseOptions(newlines_in_values=True),
        convert_options=pcsv.ConvertOptions(
            column_types=types,
            null_values=[""],
            strings_can_be_null=True,
            quoted_strings_can_be_null=False,  # PostgreSQL quotes an empty string, not NULL
            true_values=["t"],
            false_values=["f"],
        ),
    )
    return [
        _typed(COLUMN_KINDS.get(name, "text"), table.column(name).combine_chunks())
        for name in columns
    ]


def read_records(
    conn: Any,
    columns: Sequence[str],
    where: Sequence[str],
    params: Mapping[str, Any],
    *,
    newest_first: bool = False,
    limit: int | None = None,
) -> pa.Table:
    """records() as an Arrow table, in (ts, id) order (id descending if ``newest_first``).

    Without a limit the rows are read in the store's order and sorted here: on SQLite an
    ``ORDER BY ts, id`` sorts the whole result in a temporary B-tree (about twice the read).
    """
    if newest_first:
        order: str | None = "id DESC"
    elif limit is not None:
        order = "ts, id"
    else:
        order = None
    need = columns if order else tuple(dict.fromkeys((*columns, "ts", "id")))
    table = read_usage(conn, need, where, params, order=order, limit=limit)
    if order is None:
        table = sort_by_ts_id(table)
    return table.select(list(columns))


def where_clauses(
    since: Any, until: Any, filters: Sequence[tuple[str, Sequence[Any]]]
) -> tuple[list[str], dict[str, Any]]:
    """WHERE clauses for :func:`read_usage` and their parameters: ``ts`` in
    ``[since, until)`` (as the store keeps times; ``None`` for open) and each store column
    in its values."""
    where: list[str] = []
    params: dict[str, Any] = {}
    for column, values in filters:
        marks = []
        for v in values:
            key = f"p{len(params)}"
            params[key] = v
            marks.append(f":{key}")
        if len(marks) == 1:
            where.append(f"{column} = {marks[0]}")
        else:
            where.append(f"{column} IN ({', '.join(marks)})")
    if since is not None:
        where.append("ts >= :since")
        params["since"] = since
    if until is not None:
        where.append("ts < :until")
        params["until"] = until
    return where, params


def sort_by_ts_id(table: pa.Table) -> pa.Table:
    """``table`` (with ``ts`` and ``id``) in (ts, id) order; itself when already so, as
    rows mostly are (they are inserted in time order)."""
    import numpy as np
    import pyarrow.compute as pc

    if table.num_rows < 2:
        return table
    ts = table.column("ts").combine_chunks().cast("int64").to_numpy()
    ids = table.column("id").combine_chunks().to_numpy()
    d_ts, d_id = np.diff(ts), np.diff(ids)
    if bool(np.all((d_ts > 0) | ((d_ts == 0) & (d_id > 0)))):
        return table
    order = pc.sort_indices(table, sort_keys=[("ts", "ascending"), ("id", "ascending")])
    return table.take(order)


# -- to pandas (the records() contract) ------------------------------------------------------


def _objects(arr: Any) -> Any:
    """A string array as an object ndarray with ``None`` for null; equal strings share
    one ``str`` (one Python object per distinct value, not per row)."""
    import numpy as np
    import pyarrow.compute as pc

    enc = arr.dictionary_encode()
    uniques = np.array([*enc.dictionary.to_pylist(), None], dtype=object)
    codes = pc.fill_null(enc.indices, len(uniques) - 1).to_numpy()
    return uniques[codes]


def _tags(arr: Any) -> list[dict[str, Any]]:
    """JSON tag text → a dict per row (its own, as ``json.loads`` would give)."""
    import numpy as np
    import pyarrow.compute as pc

    enc = arr.dictionary_encode()
    parsed = [json.loads(t) if t else {} for t in enc.dictionary.to_pylist()]
    parsed.append({})
    shared = np.empty(len(parsed), dtype=object)
    shared[:] = parsed
    codes = pc.fill_null(enc.indices, len(parsed) - 1).to_numpy()
    return list(map(dict, shared[codes]))  # copies: a row's dict is its own


def _decimals(arr: Any) -> Any:
    """decimal128 USD → object ndarray of ``Decimal`` (``None`` for null), each written as
    :func:`llmspend.money.nanos_to_usd` writes it: no trailing zeros (``0.0000015``, ``3``).

    One ``Decimal`` per distinct amount, shared by the rows that have it (a ``Decimal`` is
    immutable). A value whose nanodollars end in k zeros (k ≤ 9) is the same unscaled
    integer divided by 10**k at scale 9 - k: Arrow writes those as text, one scale at a
    time, and ``Decimal`` parses the text (the same digits and exponent either way).
    """
    import numpy as np
    import pyarrow as pa

    enc = pa.array(_unscaled(arr)).filter(arr.is_valid()).dictionary_encode()
    nanos = enc.dictionary.to_numpy()
    zeros = np.zeros(len(nanos), dtype=np.int64)
    for k in range(1, 10):
        zeros[nanos % 10**k == 0] = k
    uniques = np.full(len(nanos) + 1, None, dtype=object)  # the last one: null
    for k in np.unique(zeros).tolist():
        pick = np.flatnonzero(zeros == k)
        text = _from_unscaled(nanos[pick] // 10**k, pa.decimal128(38, 9 - k)).cast(pa.string())
        uniques[pick] = list(map(Decimal, text.to_pylist()))
    if not arr.null_count:
        return uniques[enc.indices.to_numpy()]
    codes = np.full(len(arr), len(nanos), dtype=np.int64)
    codes[arr.is_valid().to_numpy(zero_copy_only=False)] = enc.indices.to_numpy()
    return uniques[codes]


def _unscaled(dec: Any) -> Any:
    """The unscaled integers of a decimal128 array whose values fit in int64."""
    import numpy as np

    words = np.frombuffer(dec.buffers()[1], dtype=np.int64)
    return words[2 * dec.offset : 2 * (dec.offset + len(dec)) : 2]


def _from_unscaled(values: Any, dec_type: Any) -> Any:
    import numpy as np
    import pyarrow as pa

    words = np.empty((len(values), 2), dtype=np.int64)  # little-endian int128: low, high
    words[:, 0] = values
    words[:, 1] = values >> 63  # sign extension
    return pa.Array.from_buffers(dec_type, len(values), [None, pa.py_buffer(words)])


#: What ``records(as_=...)`` can return.
AS_VALUES = ("pandas", "arrow", "polars", "pandas-arrow")


def check_as(as_: object) -> None:
    """Raise :class:`ValidationError` unless ``as_`` is one of :data:`AS_VALUES`."""
    if as_ not in AS_VALUES:
        raise ValidationError(f"as_ must be one of {', '.join(map(repr, AS_VALUES))}, not {as_!r}")


def shaped(table: pa.Table, as_: str) -> Any:
    """A :func:`read_usage` table as ``records(as_=...)`` returns it: the table itself
    (``"arrow"``), a polars frame (``"polars"``, when polars is installed), a DataFrame of
    Arrow-backed columns (``"pandas-arrow"``: ``pd.ArrowDtype``, the table's own buffers,
    money ``decimal128(38, 9)`` whose elements are ``Decimal``) or the records() DataFrame
    (:func:`to_pandas`)."""
    if as_ == "arrow":
        return table
    if as_ == "pandas-arrow":
        import pandas as pd

        return table.to_pandas(types_mapper=pd.ArrowDtype)
    if as_ == "polars":
        try:
            import polars as pl
        except ImportError:
            raise ValidationError(
                "records(as_='polars') needs polars: pip install polars"
            ) from None
        return pl.from_arrow(table)
    return to_pandas(table)


def to_pandas(table: pa.Table) -> pd.DataFrame:
    """A :func:`read_usage` table as the records() frame: Decimal money (object),
    tags as dicts, text as object with ``None``, ``ts`` as UTC datetimes."""
    import pandas as pd

    data: dict[str, Any] = {}
    for name in table.column_names:
        arr = table.column(name).combine_chunks()
        kind = COLUMN_KINDS.get(name, "text")
        if kind == "money":
            data[name] = pd.Series(_decimals(arr), dtype=object)
        elif kind == "text":
            data[name] = pd.Series(_objects(arr), dtype=object)
        elif kind == "tags":
            data[name] = pd.Series(_tags(arr), dtype=object)
        elif kind == "ts":
            data[name] = pd.Series(
                arr.cast("int64").to_numpy(zero_copy_only=False).view("datetime64[us]")
            ).dt.tz_localize("UTC")
        elif kind == "int":
            data[name] = pd.Series(arr.to_numpy(zero_copy_only=False), dtype="int64")
        elif kind == "float":
            data[name] = pd.Series(arr.to_numpy(zero_copy_only=False), dtype="float64")
        else:  # flag
            data[name] = pd.Series(arr.to_numpy(zero_copy_only=False), dtype=bool)
    # copy=False: one block per column, not a copy of every object column into one block
    return pd.DataFrame(data, columns=table.column_names, copy=False)


# -- COPY in (PostgreSQL ingest) -------------------------------------------------------------


def copy_in(tx: Tx, table_name: str, columns: Sequence[str], table: pa.Table) -> None:
    """Append an Arrow table's rows (store column names) with ``COPY ... FROM STDIN``.

    Text is quoted where needed and a null is an empty unquoted field; ingest has already
    turned empty strings into null, so the two never meet.
    """
    import io

    import pyarrow.csv as pcsv

    buf = io.BytesIO()
    pcsv.write_csv(table, buf, write_options=pcsv.WriteOptions(include_header=False))
    statement = f"COPY {table_name} ({', '.join(columns)}) FROM STDIN WITH (FORMAT csv)"
    cursor = tx.dbapi.cursor()
    with cursor.copy(statement) as copy:
        view = buf.getbuffer()
        step = 1 << 20
        for start in range(0, len(view), step):
            copy.write(view[start : start + step])
