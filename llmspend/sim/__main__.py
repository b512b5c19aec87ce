"""``python -m llmspend.sim [--host 127.0.0.1] [--port 8765]``: run the simulator."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from .server import serve


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the options and serve until Ctrl-C."""
    parser = argparse.ArgumentParser(prog="python -m llmspend.sim", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="loopback address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8765, help="port (default 8765; 0 = any)")
    args = parser.parse_args(argv)
    serve(args.host, args.port)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
