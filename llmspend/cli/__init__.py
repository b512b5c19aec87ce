"""The ``llmspend`` command line.

Each subcommand lives in its own module exposing ``register(subparsers)``, which adds its
parser and sets ``func`` to a handler ``(args) -> int`` (the exit code). Exit codes:
0 success, 1 an operation failed (a ``LLMSpendError``, or the store refused it: locked,
read-only — one line, no traceback), 2 bad usage (argparse), 130 interrupted, 141 the
reader of stdout went away (``llmspend budget list | head``: quietly, like other tools).

**Team mode.** With a gateway (``--gateway URL`` or ``LLMSPEND_GATEWAY_URL``) and a
gateway credential (``LLMSPEND_GATEWAY_KEY``, else ``JUPYTERHUB_API_TOKEN``), and no
``--database-url``, the user's commands (``budget``, ``export``, ``report``) go through
the gateway's API with the public functions, scoped by the caller's role: no database
credentials needed. The admin commands (``db``, ``doctor``, ``audit``, ``gateway``,
``import``, ``reconcile``) always work on the database itself.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import select
import sys
from collections.abc import Sequence

from ..errors import ConfigError, LLMSpendError

__all__ = ["ADMIN_NOTE", "main", "store_refusal", "through_gateway"]

_SUBCOMMANDS = (
    "audit",
    "budget",
    "db",
    "export",
    "gateway",
    "import_",
    "prices",
    "reconcile",
    "report",
    "sim",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llmspend",
        description="LLM spend made visible and bounded: store, prices, budgets, reports.",
    )
    parser.add_argument(
        "--database-url",
        default=None,
        help="SQLAlchemy URL of the store (default: $LLMSPEND_DATABASE_URL or the per-user "
        "SQLite file)",
    )
    parser.add_argument(
        "--gateway",
        metavar="URL",
        default=None,
        help="team mode: the llmspend gateway's URL (default: $LLMSPEND_GATEWAY_URL); "
        "budget, export and report then go through it with $LLMSPEND_GATEWAY_KEY",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in _SUBCOMMANDS:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a full disk behind `> file` is said here, not at exit
        return code
    except LLMSpendError as exc:
        print(f"llmspend: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("llmspend: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        if not _stdout_gone():  # a connection's, not the reader of our output
            raise
        _quiet_stdout()
        return 141
    except OSError as exc:
        if exc.errno not in _DISK_FULL:
            raise
        _quiet_stdout()  # what could not be written is dropped, not retried at exit
        where = f" {exc.filename}" if exc.filename else ""
        print(f"llmspend: error: cannot write{where}: {exc.strerror}", file=sys.stderr)
        return 1
    except Exception as exc:
        said = store_refusal(exc, args)
        if said is None:
            raise
        print(f"llmspend: error: {said}", file=sys.stderr)
        return 1


#: Errors of a full disk or quota, said in one line wherever they come from (stdout too).
_DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


def _stdout_gone() -> bool:
    """Whether stdout is a pipe whose reader has closed it (or no file at all)."""
    try:
        poll = select.poll()
        poll.register(sys.stdout.fileno(), select.POLLOUT)
        return any(event & (select.POLLERR | select.POLLHUP) for _, event in poll.poll(0))
    except (OSError, ValueError, AttributeError):  # no fileno: a harness's stream
        return True


def _quiet_stdout() -> None:
    """The reader of stdout is gone: point stdout at /dev/null so that the interpreter's
    last flush does not raise again (the recipe in Python's ``signal`` docs)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout is no file (replaced by a test harness)
        pass
    finally:
        os.close(devnull)


def store_refusal(exc: BaseException, args: argparse.Namespace) -> str | None:
    """One line for a database error that reached the command line (a store locked by
    another process past the busy timeout, a read-only file, a server gone), else None."""
    sa_exc = sys.modules.get("sqlalchemy.exc")
    sqlite = sys.modules.get("sqlite3")
    if sa_exc is not None and isinstance(exc, sa_exc.DBAPIError):
        orig: BaseException = exc.orig if exc.orig is not None else exc
    elif sqlite is not None and isinstance(exc, sqlite.Error):  # sqlite3 used directly
        orig = exc
    else:
        return None
    from ..store.urls import redacted

    lines = str(orig).strip().splitlines()
    cause = redacted(lines[0]) if lines else type(exc).__name__
    where = _shown_url(args)
    if "database is locked" in cause or "database table is locked" in cause:
        return (
            f"the store {where} is locked by another process; try again when it is free "
            "(LLMSPEND_SQLITE_BUSY_TIMEOUT, in ms, sets how long to wait)"
        )
    if "readonly database" in cause or "read-only" in cause:
        return f"the store {where} is read-only: {cause}"
    return f"the store {where} failed: {cause}"


def _shown_url(args: argparse.Namespace) -> str:
    from ..config import resolve_database_url
    from ..store.urls import redacted

    try:
        return redacted(resolve_database_url(database_url(args)))
    except Exception:
        return "(unknown)"


def common_options(parser: argparse.ArgumentParser) -> None:
    """Options every subcommand accepts after its name, too."""
    parser.add_argument(
        "--database-url",
        dest="sub_database_url",
        default=None,
        help="SQLAlchemy URL of the store (overrides the global option)",
    )


def database_url(args: argparse.Namespace) -> str | None:
    return getattr(args, "sub_database_url", None) or args.database_url


def through_gateway(args: argparse.Namespace) -> bool:
    """Whether a user's command goes through the gateway (team mode): a gateway and its
    credential, and no ``--database-url`` (given, it names the database to work on)."""
    from ..dialects.hosts import set_gateway
    from ..teamclient import KEY_ENV, active

    url = getattr(args, "gateway", None)
    if database_url(args) is not None:
        if url:
            raise ConfigError("give --gateway or --database-url, not both")
        return False
    if url:
        set_gateway(url)
        if not active():
            raise ConfigError(f"--gateway needs a gateway credential: set {KEY_ENV}")
    return active()


#: The help's note on commands that work on the database itself, even in team mode.
ADMIN_NOTE = " (admin: works on the database itself, also in team mode)"


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
