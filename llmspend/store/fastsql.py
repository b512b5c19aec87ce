"""Hand-written SQL for the per-call hot path.

Building SQLAlchemy expression objects costs tens of microseconds each; a call's pipeline
runs about ten statements, so the hot path (budget lookup, reservation, settlement,
alert decision) sends plain parameterized SQL through the DBAPI instead. Statements are
written once with ``:name`` placeholders and rendered per dialect (``%(name)s`` for
psycopg). Values are always bound parameters, never formatted into the text.

Driver errors come out as SQLAlchemy's (``sqlalchemy.exc.OperationalError`` and friends)
on both kinds of :class:`Tx`: one on an SQLAlchemy ``Connection`` (:meth:`Tx.of`) raises
them as that Connection's own statements would, and the per-call path's
(:class:`~llmspend.store.transactions.TxScope`) when its transaction ends.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import namedtuple
from typing import Any

from sqlalchemy import Connection, exc

__all__ = ["SQL", "Tx", "data_version", "db_time", "db_time_for", "py_time", "run"]

_NAMED = re.compile(r"(?<!:):([A-Za-z_][A-Za-z0-9_]*)")


_ROW_CLASSES: dict[tuple[str, ...], Any] = {}


class SQL:
    """One statement, rendered once per dialect."""

    __slots__ = ("_rendered", "_rows", "text")

    def __init__(self, text: str) -> None:
        self.text = " ".join(text.split())
        self._rendered: dict[str, str] = {}
        self._rows: dict[str, Any] = {}  # per dialect: the named tuple of its rows

    def row_class(self, cursor: Any, dialect: str, width: int) -> Any:
        """The named tuple for this statement's rows of ``width`` columns on ``dialect``.

        Invariant: a statement's text fixes its result columns on a dialect, so the class
        is made once from the cursor's description and then kept (psycopg builds a
        description, a column object per column, each time it is asked for); a row of
        another width (a table changed under ``SELECT *``) makes it again."""
        row = self._rows.get(dialect)
        if row is None or len(row._fields) != width:
            fields = tuple(d[0] for d in cursor.description)
            row = _ROW_CLASSES.get(fields)
            if row is None:  # one class per column list, shared by statements built per call
                row = _ROW_CLASSES[fields] = namedtuple("Row", fields)
            self._rows[dialect] = row
        return row

    def render(self, dialect: str) -> str:
        out = self._rendered.get(dialect)
        if out is None:
            out = self.text if dialect == "sqlite" else _NAMED.sub(r"%(\1)s", self.text)
            self._rendered[dialect] = out
        return out


class Result:
    """The rows of one statement, as named tuples (``row.column``)."""

    __slots__ = ("_cursor", "_dialect", "_sql", "rowcount")

    def __init__(self, cursor: Any, sql: SQL, dialect: str = "") -> None:
        self._cursor = cursor
        self._sql = sql
        self._dialect = dialect
        self.rowcount: int = cursor.rowcount

    def all(self) -> list[Any]:
        rows = self._cursor.fetchall()
        if not rows:
            return []
        make = self._sql.row_class(self._cursor, self._dialect, len(rows[0]))._make
        return [make(r) for r in rows]

    def first(self) -> Any:
        row = self._cursor.fetchone()
        if row is None:
            return None
        return self._sql.row_class(self._cursor, self._dialect, len(row))._make(row)

    def one(self) -> Any:
        row = self.first()
        if row is None:
            raise LookupError(f"no row for: {self._sql.text}")
        return row


class Tx:
    """One open transaction on a DBAPI connection: all the per-call hot path needs.

    :meth:`Store.tx <llmspend.store.transactions.Transactions.tx>` opens one without
    SQLAlchemy's Connection machinery (whose checkout, events and bookkeeping cost more
    than the statements themselves); :meth:`of` wraps the transaction of an open SQLAlchemy
    Connection, so that the same functions serve the hot path and everything else.
    ``dialect`` is the SQLAlchemy dialect (``tx.dialect.name`` is ``sqlite`` or
    ``postgresql``).
    """

    __slots__ = ("dbapi", "dialect", "follows", "memo", "serial", "sqlite")

    def __init__(
        self,
        dbapi: Any,
        dialect: Any,
        memo: dict[Any, Any] | None = None,
        serial: int | None = None,
        follows: int | None = None,
    ) -> None:
        self.dbapi = dbapi
        self.dialect = dialect
        self.sqlite: bool = dialect.name == "sqlite"
        # Kept with a thread's own SQLite connection, for results that stay true while
        # data_version() does not change; None where there is no such connection.
        self.memo = memo
        # On a thread's own SQLite connection: this transaction's number on it, and the
        # number of the one before if that one committed a write (else None). With
        # data_version() unchanged too, nothing was written since that one committed.
        self.serial = serial
        self.follows = follows

    def data_version(self) -> int:
        """SQLite's ``PRAGMA data_version``: changes when another connection commits."""
        return data_version(self.dbapi)

    @classmethod
    def of(cls, conn: Connection | Tx) -> Tx:
        """``conn`` itself, or a ``Tx`` on the DBAPI connection of an SQLAlchemy
        ``Connection``'s open transaction (raising driver errors as SQLAlchemy's)."""
        if isinstance(conn, Tx):
            return conn
        return _ConnectionTx(conn.connection.dbapi_connection, conn.dialect)

    def run(self, sql: SQL, params: Any = None) -> Result:
        name = self.dialect.name
        cursor = self.dbapi.cursor()
        cursor.execute(sql.render(name), params or {})
        return Result(cursor, sql, name)

    def execute(self, statement: str, params: Any = ()) -> Any:
        """A statement already in the driver's own paramstyle; returns the cursor."""
        cursor = self.dbapi.cursor()
        cursor.execute(statement, params)
        return cursor

    def executemany(self, statement: SQL | str, seq: Any) -> None:
        if isinstance(statement, SQL):
            statement = statement.render(self.dialect.name)
        self.dbapi.cursor().executemany(statement, seq)

    def rollback(self) -> None:
        """End the transaction, undoing it; later statements run in a new one."""
        self.serial = None  # what was read in it may not be what the store keeps
        self.dbapi.rollback()


class _ConnectionTx(Tx):
    """A :class:`Tx` on an SQLAlchemy ``Connection``'s transaction: a driver error comes
    out as SQLAlchemy's (``DBAPIError.instance``, as the Connection's own statements
    raise it), so ``except OperationalError`` works whichever way a statement was sent.
    (The per-call path's ``Tx`` has no such wrapper: its scope translates as it ends.)"""

    __slots__ = ()

    def run(self, sql: SQL, params: Any = None) -> Result:
        try:
            return Tx.run(self, sql, params)
        except self.dialect.loaded_dbapi.Error as e:
            raise _translated(self.dialect, e, sql.render(self.dialect.name), params) from e

    def execute(self, statement: str, params: Any = ()) -> Any:
        try:
            return Tx.execute(self, statement, params)
        except self.dialect.loaded_dbapi.Error as e:
            raise _translated(self.dialect, e, statement, params) from e

    def executemany(self, statement: SQL | str, seq: Any) -> None:
        try:
            Tx.executemany(self, statement, seq)
        except self.dialect.loaded_dbapi.Error as e:
            text = statement.render(self.dialect.name) if isinstance(statement, SQL) else statement
            raise _translated(self.dialect, e, text, seq, many=True) from e


def _translated(
    dialect: Any, e: Exception, statement: str, params: Any, *, many: bool = False
) -> BaseException:
    """The SQLAlchemy error for the driver error ``e`` (``OperationalError`` for the
    driver's, and so on through ``DBAPIError``)."""
    return exc.DBAPIError.instance(
        statement,
        None if many else params,  # (SQLAlchemy shows at most a few of many rows)
        e,
        dialect.loaded_dbapi.Error,
        dialect=dialect,
        ismulti=many,
    )


def data_version(dbapi: Any) -> int:
    """``PRAGMA data_version`` on a sqlite3 connection (see :meth:`Tx.data_version`)."""
    return int(dbapi.execute("PRAGMA data_version").fetchone()[0])


def run(conn: Connection | Tx, sql: SQL, params: dict[str, Any] | None = None) -> Result:
    """Execute on the DBAPI connection of ``conn``'s open transaction (no SQLAlchemy layer)."""
    return Tx.of(conn).run(sql, params)


def db_time(conn: Connection | Tx, value: dt.datetime | None) -> Any:
    """A naive UTC datetime as the column stores it (SQLAlchemy's SQLite text form)."""
    return db_time_for(conn.dialect.name == "sqlite", value)


def db_time_for(sqlite: bool, value: dt.datetime | None) -> Any:
    """:func:`db_time` for a store known to be SQLite or not."""
    if value is None or not sqlite:
        return value
    if value.microsecond and value.tzinfo is None:  # (all but one in a million: the hot path)
        return str(value)  # the same text; isoformat's keyword arguments cost twice as much
    return value.isoformat(sep=" ", timespec="microseconds")


def py_time(value: Any) -> dt.datetime | None:
    """A stored datetime back as a naive UTC datetime (SQLite returns text)."""
    if value is None or isinstance(value, dt.datetime):
        return value
    return dt.datetime.fromisoformat(str(value))
