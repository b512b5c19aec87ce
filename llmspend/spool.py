"""A local journal for calls the store could not take, replayed exactly once.

When a call has happened but its row cannot be committed (the store is down, or SQLite
stayed locked past its busy timeout), the row is written to
``$LLMSPEND_HOME/spool/<store>/<record_uid>.json`` (atomically: a temporary file, then a
rename) instead of being lost; its directories are created 0700 and its files 0600,
whatever the umask (:func:`~llmspend.config.private_dir`). The next time this process
records a call successfully, and when a tracker opens the store, the spool is replayed:
each row is inserted with ``ON CONFLICT (ts, record_uid) DO NOTHING`` and only a row
actually inserted updates budget counters and rollups, so a row replayed twice (two
kernels, or a crash between insert and unlink) is still counted once. The file is removed
after its transaction commits.

Spooled rows hold exactly what the store would: token counts, costs, model names,
attribution — never API keys, prompts or completions.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import FILE_MODE, private_dir, resolve_home
from .store.hierarchy import ensure_entities
from .usage import insert_once

if TYPE_CHECKING:
    from .tracker import Tracker

__all__ = ["Spool"]

log = logging.getLogger("llmspend")


class Spool:
    """The journal of one store, in this user's data directory."""

    def __init__(self, database_url: str) -> None:
        key = hashlib.sha256(database_url.encode()).hexdigest()[:16]
        self.dir = resolve_home() / "spool" / key
        self._lock = threading.Lock()

    def write(self, row: dict[str, Any]) -> Path:
        private_dir(self.dir)
        data = dict(row)
        data["ts"] = row["ts"].isoformat()
        path = self.dir / f"{row['record_uid']}.json"
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
        with open(fd, "w", encoding="utf-8") as fh:
            if hasattr(os, "fchmod"):  # 0600 whatever the umask (and if tmp was left over)
                os.fchmod(fh.fileno(), FILE_MODE)
            json.dump(data, fh, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        return path

    def pending(self) -> list[Path]:
        try:
            return sorted(self.dir.glob("*.json"))
        except OSError:
            return []

    def replay(self, tracker: Tracker) -> int:
        """Insert every spooled row not yet stored; returns how many were inserted."""
        inserted = 0
        with self._lock:
            for path in self.pending():
                try:
                    data = json.loads(path.read_text(encoding="utf-8"))
                except FileNotFoundError:
                    continue  # another kernel replayed it
                except ValueError:
                    log.error("llmspend: unreadable spool file %s left in place", path)
                    continue
                data["ts"] = dt.datetime.fromisoformat(data["ts"])
                with tracker.store.begin(write=True) as conn:
                    ensure_entities(
                        conn, [(data["org_name"], data["project_name"], data["user_name"])]
                    )
                    if insert_once(conn, data):
                        inserted += 1
                        for hook in tracker.ingest_hooks:
                            hook(conn, [data])
                path.unlink(missing_ok=True)
        if inserted:
            log.warning("llmspend: replayed %d spooled call(s) into the store", inserted)
        return inserted
