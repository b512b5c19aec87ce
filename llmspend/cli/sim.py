"""``llmspend sim serve``: run the local simulated LLM provider in the foreground."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    """Add ``sim`` and its ``serve`` subcommand."""
    parser = subparsers.add_parser(
        "sim", help="local simulated LLM provider (OpenAI, Azure, OpenRouter, xAI, Gemini)"
    )
    sub = parser.add_subparsers(dest="sim_command", metavar="SUBCOMMAND")
    sub.required = True
    serve = sub.add_parser("serve", help="serve until Ctrl-C")
    serve.add_argument("--host", default="127.0.0.1", help="loopback address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8765, help="port (default 8765; 0 = any free)")
    serve.set_defaults(func=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    """Handler of ``llmspend sim serve``."""
    from ..sim import serve

    try:
        serve(args.host, args.port)
    except ValueError as exc:  # a non-loopback host
        from ..errors import ConfigError

        raise ConfigError(str(exc)) from exc
    except (OSError, OverflowError) as exc:  # port in use, or no port at all
        from ..errors import ConfigError

        raise ConfigError(f"cannot listen on {args.host}:{args.port}: {exc}") from exc
    return 0
