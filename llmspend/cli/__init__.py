"""The ``llmspend`` command line.

Each subcommand lives in its own module exposing ``register(subparsers)``, which adds its
parser and sets ``func`` to a handler ``(args) -> int`` (the exit code). Exit codes:
0 success, 1 an operation failed (a ``LLMSpendError``), 2 bad usage (argparse).

**Team mode.** With a gateway (``--gateway URL`` or ``LLMSPEND_GATEWAY_URL``) and a
gateway credential (``LLMSPEND_GATEWAY_KEY``, else ``JUPYTERHUB_API_TOKEN``), and no
``--database-url``, the user's commands (``budget``, ``export``, ``report``) go through
the gateway's API with the public functions, scoped by the caller's role: no database
credentials needed. The admin commands (``db``, ``doctor``, ``audit``, ``gateway``,
``import``, ``reconcile``) always work on the database itself.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from ..errors import ConfigError, LLMSpendError

__all__ = ["ADMIN_NOTE", "main", "through_gateway"]

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
        return int(args.func(args) or 0)
    except LLMSpendError as exc:
        print(f"llmspend: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("llmspend: interrupted", file=sys.stderr)
        return 130


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
