"""Hand-written SQL for the per-call hot path.

Building SQLAlchemy expression objects costs tens of microseconds each; a call's pipeline
runs about ten statements, so the hot path (budget lookup, reservation, settlement,
alert decision) sends plain parameterized SQL through the DBAPI instead. Statements are
written once with ``:name`` placeholders and rendered per dialect (``%(name)s`` for
psycopg). Values are always bound parameters, never formatted into the text.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import namedtuple
from typing import Any

from sqlalchemy import Connection

__all__ = ["SQL", "db_time", "py_time", "run"]

_NAMED = re.compile(r"(?<!:):([A-Za-z_][A-Za-z0-9_]*)")


_ROW_CLASSES: dict[tuple[str, ...], Any] = {}


class SQL:
    """One statement, rendered once per dialect."""

    __slots__ = ("_rendered", "_row", "text")

    def __init__(self, text: str) -> None:
        self.text = " ".join(text.split())
        self._rendered: dict[str, str] = {}
        self._row: Any = None

    def row_class(self, description: Any) -> Any:
        fields = tuple(d[0] for d in description)
        if self._row is None or self._row._fields != fields:
            row = _ROW_CLASSES.get(fields)
            if row is None:  # one class per column list, shared by statements built per call
                row = _ROW_CLASSES[fields] = namedtuple("Row", fields)
            self._row = row
        return self._row

    def render(self, dialect: str) -> str:
        out = self._rendered.get(dialect)
        if out is None:
            out = self.text if dialect == "sqlite" else _NAMED.sub(r"%(\1)s", self.text)
            self._rendered[dialect] = out
        return out


class Result:
    """The rows of one statement, as named tuples (``row.column``)."""

    __slots__ = ("_cursor", "_sql", "rowcount")

    def __init__(self, cursor: Any, sql: SQL) -> None:
        self._cursor = cursor
        self._sql = sql
        self.rowcount: int = cursor.rowcount

    def all(self) -> list[Any]:
        rows = self._cursor.fetchall()
        if not rows:
            return []
        make = self._sql.row_class(self._cursor.description)._make
        return [make(r) for r in rows]

    def first(self) -> Any:
        row = self._cursor.fetchone()
        return None if row is None else self._sql.row_class(self._cursor.description)._make(row)

    def one(self) -> Any:
        row = self.first()
        if row is None:
            raise LookupError(f"no row for: {self._sql.text}")
        return row


def run(conn: Connection, sql: SQL, params: dict[str, Any] | None = None) -> Result:
    """Execute on the DBAPI connection of ``conn``'s open transaction (no SQLAlchemy layer)."""
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    cursor.execute(sql.render(conn.dialect.name), params or {})
    return Result(cursor, sql)


def db_time(conn: Connection, value: dt.datetime | None) -> Any:
    """A naive UTC datetime as the column stores it (SQLAlchemy's SQLite text form)."""
    if value is None or conn.dialect.name != "sqlite":
        return value
    return value.isoformat(sep=" ", timespec="microseconds")


def py_time(value: Any) -> dt.datetime | None:
    """A stored datetime back as a naive UTC datetime (SQLite returns text)."""
    if value is None or isinstance(value, dt.datetime):
        return value
    return dt.datetime.fromisoformat(str(value))
