"""This process's id, without a system call each time it is asked for.

``os.getpid()`` asks the kernel on every call, and the per-call hot path asks several
times (whose SQLite connection, whose standing hold). The id is read once and again in
the child after every ``os.fork()`` (``multiprocessing`` included).
"""

from __future__ import annotations

import os

__all__ = ["pid"]

pid = os.getpid()


def _forked() -> None:
    global pid
    pid = os.getpid()


os.register_at_fork(after_in_child=_forked)
