"""Is a SQLite store file damaged? ``PRAGMA quick_check`` on open and on error.

:func:`check_file` runs SQLite's ``quick_check`` on its own connection: every page and
record is read, O(size) — 0.9 s for a 1M-call, 186 MB store with a warm cache
(``quick_check(1)`` is no faster; ``integrity_check`` takes 2.2 s). On open
(:func:`check_on_open`) it runs only when the file changed since its last clean check (a
memo in the data directory keyed by the file's identity, size and mtime, so child
processes and CLI runs on an unchanged store do not pay it again), before the store is
used while the file is at most ``LLMSPEND_QUICK_CHECK_MAX_MB`` (default 32: ≈ 150 ms,
about 170,000 calls), and for a larger file in a child process after its header and
schema were read (:func:`check_in_child`; damage a read meets first is recognized then).

:func:`is_corruption` recognizes what SQLite says about a damaged file ("database disk
image is malformed", "file is not a database", "file is encrypted or is not a
database"), however it is wrapped (SQLAlchemy's ``DatabaseError``, a ``StoreError``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from ..config import env_number, private_dir, resolve_home

__all__ = [
    "CORRUPTION_MARKERS",
    "QUICK_CHECK_MAX_MB",
    "check_file",
    "check_in_child",
    "check_on_open",
    "check_whole",
    "describe",
    "file_identity",
    "is_corruption",
]

CORRUPTION_MARKERS = ("malformed", "not a database", "file is encrypted")
QUICK_CHECK_MAX_MB = 32  # ≈ 150 ms of quick_check (≈ 1 s per 190 MB, 1M calls)


def is_corruption(e: BaseException | None) -> bool:
    """Whether ``e`` (or the driver error it wraps) is SQLite saying the file is damaged."""
    try:
        import sqlite3
    except ImportError:  # pragma: no cover - a Python without sqlite3 has no SQLite store
        return False
    seen = 0
    while e is not None and seen < 6:
        seen += 1
        orig = getattr(e, "orig", None)
        for x in (e, orig):
            if isinstance(x, sqlite3.DatabaseError):
                said = str(x).lower()
                if any(m in said for m in CORRUPTION_MARKERS):
                    return True
        e = e.__cause__ or (orig if isinstance(orig, BaseException) else None)
    return False


def check_file(path: str, *, full: bool = False, limit: int = 10) -> list[str]:
    """Problems ``PRAGMA quick_check`` (``integrity_check`` with ``full``) finds in the
    SQLite file at ``path``, at most ``limit``; ``[]`` when it is sound (or empty)."""
    import sqlite3

    pragma = "integrity_check" if full else "quick_check"
    try:
        conn = sqlite3.connect(path, timeout=5, isolation_level=None)
    except sqlite3.Error as e:
        return [str(e)]
    try:
        rows = conn.execute(f"PRAGMA {pragma}({int(limit)})").fetchall()
    except sqlite3.DatabaseError as e:
        return [str(e)]
    finally:
        conn.close()
    said = [" ".join(str(r[0]).replace("*** in database main ***", "").split()) for r in rows]
    return [] if said == ["ok"] else said


def file_identity(path: str) -> tuple[int, ...] | None:
    """What identifies the file's content cheaply: device, inode, size and mtime of the
    file and of its ``-wal`` (``None`` if it does not exist)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    ident: tuple[int, ...] = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    with contextlib.suppress(OSError):
        wal = os.stat(path + "-wal")
        ident += (wal.st_size, wal.st_mtime_ns)
    return ident


def _memo_path(path: str) -> Path:
    key = hashlib.sha256(str(Path(path).resolve()).encode()).hexdigest()[:16]
    return resolve_home() / "health" / f"{key}.json"


def _was_clean(path: str, ident: tuple[int, ...]) -> bool:
    try:
        return tuple(json.loads(_memo_path(path).read_text(encoding="utf-8"))) == ident
    except (OSError, ValueError, TypeError):
        return False


def _remember_clean(path: str, ident: tuple[int, ...]) -> None:
    with contextlib.suppress(OSError):
        memo = _memo_path(path)
        private_dir(memo.parent)
        tmp = memo.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(list(ident)), encoding="utf-8")
        os.replace(tmp, memo)


def max_bytes() -> int:
    """The largest file :func:`check_on_open` reads whole before the store opens
    (``LLMSPEND_QUICK_CHECK_MAX_MB``)."""
    mb = env_number("LLMSPEND_QUICK_CHECK_MAX_MB", QUICK_CHECK_MAX_MB, unit="MB", whole=True)
    return int(mb) * 1024 * 1024


def check_on_open(path: str) -> tuple[str | None, bool]:
    """``(problem, later)`` for the store file at ``path`` as it is opened.

    ``problem`` is the first problem found, or ``None``. A new or empty file, or one
    unchanged since its last clean check, is sound. A file that changed is quick-checked
    whole if it is at most :func:`max_bytes`; a larger one has its header and schema read
    only, and ``later`` is true: :func:`check_whole` should run off the caller's path.
    """
    ident = file_identity(path)
    if ident is None or ident[2] == 0 or _was_clean(path, ident):
        return None, False
    if ident[2] > max_bytes():
        problems = _schema_problems(path)
        return (problems[0] if problems else None), not problems
    return check_whole(path, ident), False


def check_whole(path: str, ident: tuple[int, ...] | None = None) -> str | None:
    """``quick_check`` the whole file: its first problem, or ``None`` (remembered)."""
    ident = ident or file_identity(path)
    problems = check_file(path, limit=1)
    if problems:
        return problems[0]
    if ident is not None:
        _remember_clean(path, file_identity(path) or ident)
    return None


def check_in_child(path: str) -> str | None:
    """:func:`check_whole` in a child Python process (no SQLite work in this one)."""
    out = subprocess.run(
        [sys.executable, "-m", "llmspend.store.health", path],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"quick_check process failed: {out.stderr.strip()[-300:]}")
    problem: str | None = json.loads(out.stdout)
    return problem


def _schema_problems(path: str) -> list[str]:
    """Read the header and the schema only (what every statement needs first)."""
    import sqlite3

    try:
        conn = sqlite3.connect(path, timeout=5, isolation_level=None)
        try:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        finally:
            conn.close()
    except sqlite3.DatabaseError as e:
        if is_corruption(e):
            return [str(e)]
    return []


def describe(e: Any) -> str:
    """The driver's one line about a damaged file."""
    said = str(getattr(e, "orig", None) or e).strip()
    return said.splitlines()[0] if said else type(e).__name__


if __name__ == "__main__":  # :func:`check_in_child`
    print(json.dumps(check_whole(sys.argv[1])))
