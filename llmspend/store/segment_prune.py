"""Keeping the columnar copies' directory tidy: who each copy belongs to, when it was last
used, and removing the copies of stores that are gone.

Each store's copy (:mod:`llmspend.store.segments`) lives in ``columns/<store uid>/`` of
the user's cache. Beside its Arrow files, :data:`ORIGIN` (0600) names the store it was
made from — for SQLite the file's absolute path and its ``device:inode``, for PostgreSQL
host, port and database (never a password) — and its modification time is when the copy
was last used: written with the copy, refreshed by a read that uses it at most about once
a day (:func:`mark_used`).

:func:`prune` runs when a copy is written. It removes the other stores' directories that
are, either,

- of a SQLite store whose file no longer exists, or is now another file (another
  ``device:inode``: such a copy can never be used again), or
- not used for longer than :func:`cache_days` (30 days; ``LLMSPEND_RECORDS_CACHE_DAYS``),
  counted from the newest modification time of the directory and its files (a copy
  made by an older version has no :data:`ORIGIN`: only its age counts).

Only what looks like ours is touched: a directory (never a symlink) named like a store uid
(32 hex digits) holding nothing but regular files named as copies, their temporary files
and :data:`ORIGIN`; each file is unlinked and then the directory removed, so a file made
meanwhile by another process leaves it in place. A process writing or reading a copy that
is removed under it gets a file error, and reads those rows from the store instead. Both
functions are best effort: an error is logged at debug level, never raised.
"""

from __future__ import annotations

import json
import logging
import os
import re
import stat
import time
from collections.abc import Mapping
from pathlib import Path

from ..config import env_number, private_replacement

__all__ = ["CACHE_DAYS", "ORIGIN", "cache_days", "mark_used", "prune", "write_origin"]

#: The file in a store's copy directory that names its store (JSON, 0600).
ORIGIN = "origin.json"
#: Days a copy may go unused before :func:`prune` removes it.
CACHE_DAYS = 30

_DAY = 86400.0
_UID = re.compile(r"[0-9a-f]{32}")
_OURS = re.compile(r"\d+-\d+\.arrow(\.\d+\.\d+\.tmp)?|origin\.json(\.\d+\.\d+\.tmp)?")

log = logging.getLogger("llmspend")


def cache_days() -> float:
    """Days an unused copy is kept: :data:`CACHE_DAYS`, or ``LLMSPEND_RECORDS_CACHE_DAYS``
    (a number > 0, else :class:`~llmspend.errors.ConfigError`)."""
    return env_number("LLMSPEND_RECORDS_CACHE_DAYS", CACHE_DAYS, unit="days")


def write_origin(folder: Path, origin: Mapping[str, str]) -> None:
    """Write ``folder``'s :data:`ORIGIN` atomically (a private temporary file renamed into
    place); its modification time becomes now. Raises ``OSError``."""
    with private_replacement(folder / ORIGIN) as tmp, open(tmp, "w", encoding="utf-8") as out:
        json.dump(dict(origin), out, sort_keys=True)


def mark_used(folder: Path, origin: Mapping[str, str], days: float) -> None:
    """A read used ``folder``'s copy: refresh its :data:`ORIGIN` — rewritten if missing or
    not ``origin`` (a store file moved keeps its copy), else its modification time set to
    now if older than a day (a quarter of ``days`` if that is shorter). Never raises."""
    try:
        found, mtime = _read_origin(folder / ORIGIN)
        if found != dict(origin):
            write_origin(folder, origin)
        elif time.time() - mtime > min(_DAY, days * _DAY / 4):
            os.utime(folder / ORIGIN)
    except Exception as exc:  # housekeeping: the read has its rows already
        log.debug("llmspend: could not mark %s used: %s", folder, exc)


def prune(root: Path, keep: str, days: float) -> list[Path]:
    """Remove the store directories under ``root`` (``columns/``) other than ``keep`` that
    belong to a SQLite store that is gone or not used for more than ``days`` (see the
    module's docstring); the directories removed. Never raises."""
    removed: list[Path] = []
    try:
        entries = list(os.scandir(root))
    except OSError as exc:
        log.debug("llmspend: could not list %s: %s", root, exc)
        return removed
    now = time.time()
    for entry in entries:
        try:
            if entry.name == keep or not _UID.fullmatch(entry.name):
                continue
            if not entry.is_dir(follow_symlinks=False):
                continue  # a symlink or a file: not ours
            folder = Path(entry.path)
            if _stale(folder, now - days * _DAY) and _remove(folder):
                removed.append(folder)
        except Exception as exc:  # best effort: the next copy written tries again
            log.debug("llmspend: could not prune %s: %s", entry.path, exc)
    return removed


def _read_origin(path: Path) -> tuple[dict[str, str] | None, float]:
    """``path``'s origin (``None`` if missing, not a regular file, or not a JSON object of
    strings) and its modification time."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return None, 0.0
    with os.fdopen(fd, "rb") as source:
        st = os.fstat(source.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_size > 1 << 16:
            return None, st.st_mtime
        try:
            found = json.loads(source.read())
        except ValueError:
            return None, st.st_mtime
    if not isinstance(found, dict) or not all(type(v) is str for v in found.values()):
        return None, st.st_mtime
    return found, st.st_mtime


def _stale(folder: Path, before: float) -> bool:
    """Whether ``folder`` holds only our files and is of a SQLite store that is gone, or
    was last modified before ``before`` (seconds since the epoch)."""
    newest = os.lstat(folder).st_mtime
    for name in os.listdir(folder):
        if not _OURS.fullmatch(name):
            return False
        st = os.lstat(folder / name)
        if not stat.S_ISREG(st.st_mode):
            return False
        newest = max(newest, st.st_mtime)
    origin, _ = _read_origin(folder / ORIGIN)
    if origin is not None and origin.get("store") == "sqlite" and _gone(origin):
        return True
    return newest < before


def _gone(origin: Mapping[str, str]) -> bool:
    """Whether the SQLite file ``origin`` names no longer exists or is another file."""
    path, identity = origin.get("path", ""), origin.get("file", "")
    if not (path and identity and os.path.isabs(path)):
        return False
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return True
    except OSError:  # cannot tell (no permission, a disk not there): age decides
        return False
    return f"{st.st_dev}:{st.st_ino}" != identity


def _remove(folder: Path) -> bool:
    """Unlink ``folder``'s files (each still one of ours) and remove it; False if it holds
    something else now. Raises ``OSError`` (another process wrote into it meanwhile)."""
    for name in os.listdir(folder):
        if not _OURS.fullmatch(name) or not stat.S_ISREG(os.lstat(folder / name).st_mode):
            return False
        os.unlink(folder / name)
    os.rmdir(folder)
    return True
