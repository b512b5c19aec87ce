"""``llmspend doctor``: ``llmspend db check`` plus the settings llmspend runs with."""

from __future__ import annotations

import argparse
import json
import os

from . import ADMIN_NOTE
from .dbcheck import add_check_options, health_report, print_report

__all__ = ["register"]

SHOWN = (
    "LLMSPEND_DATABASE_URL",
    "LLMSPEND_HOME",
    "LLMSPEND_PRICES",
    "LLMSPEND_STORE_DOWN",
    "LLMSPEND_SQLITE_BUSY_TIMEOUT",
    "LLMSPEND_QUICK_CHECK_MAX_MB",
    "LLMSPEND_CHILDREN",
)


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "doctor",
        help="the store's health, the spool's backlog and llmspend's settings" + ADMIN_NOTE,
    )
    add_check_options(parser)
    parser.set_defaults(func=_doctor)


def _doctor(args: argparse.Namespace) -> int:
    from ..config import resolve_database_url
    from ..store.urls import redacted
    from . import database_url

    report = health_report(resolve_database_url(database_url(args)), full=args.full)
    settings = {k: redacted(os.environ[k]) for k in SHOWN if os.environ.get(k)}
    if args.json:
        print(json.dumps({**report, "settings": settings}))
    else:
        print_report(report)
        for k, v in settings.items():
            print(f"setting:      {k}={v}")
        if not settings:
            print("setting:      (no LLMSPEND_* variables set: the defaults)")
    return 0 if report["healthy"] else 1
