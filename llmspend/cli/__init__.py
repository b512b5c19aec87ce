"""The ``llmspend`` command line.

Each subcommand lives in its own module exposing ``register(subparsers)``, which adds its
parser and sets ``func`` to a handler ``(args) -> int`` (the exit code). Exit codes:
0 success, 1 an operation failed (a ``LLMSpendError``), 2 bad usage (argparse).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from ..errors import LLMSpendError

__all__ = ["main"]

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


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
