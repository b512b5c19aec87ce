"""``llmspend prices MODEL``: the price in force for a model, its history, and a usage's cost."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import warnings
from decimal import Decimal
from typing import Any

from . import common_options

__all__ = ["register"]

_RATES = (
    ("input_mtok", "input"),
    ("cached_input_mtok", "cached input"),
    ("cache_write_mtok", "cache write"),
    ("output_mtok", "output"),
    ("reasoning_mtok", "reasoning"),
)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "prices",
        help="show a model's price (USD per million tokens) and its history",
        description="Show the price in force for MODEL (USD per million tokens), its "
        "effective-dated history, and optionally the cost of a usage.",
    )
    parser.add_argument("model", metavar="MODEL", help="model name, e.g. gpt-4o-mini")
    parser.add_argument(
        "--provider",
        default=None,
        help="openai, azure, xai, openrouter, google, openai-compatible... (default: inferred)",
    )
    parser.add_argument("--at", default=None, help="date or ISO time (default: now)")
    parser.add_argument(
        "--prices",
        default=None,
        metavar="FILE",
        help="price-override TOML (default: $LLMSPEND_PRICES)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")
    for flag in ("input", "cached-input", "cache-write", "output", "reasoning"):
        parser.add_argument(
            f"--{flag}", type=int, default=None, metavar="N", help=f"{flag} tokens to price"
        )
    common_options(parser)
    parser.set_defaults(func=_prices)


def _prices(args: argparse.Namespace) -> int:
    from ..errors import LLMSpendError
    from ..pricing import PriceBook, UnknownModelWarning, default_pricebook

    book = PriceBook(args.prices) if args.prices else default_pricebook()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnknownModelWarning)
        rows = book.history(args.model, args.provider, at=args.at)
        tokens = [args.input, args.cached_input, args.cache_write, args.output, args.reasoning]
        price = None
        if any(t is not None for t in tokens):
            i, c, w, o, r = (t or 0 for t in tokens)
            price = book.price(
                args.model,
                provider=args.provider,
                input_tokens=i,
                cached_input_tokens=c,
                cache_write_tokens=w,
                output_tokens=o,
                reasoning_tokens=r,
                at=args.at,
            )
    if not rows:
        raise LLMSpendError(
            f"no price for model {args.model!r}"
            + (f" (provider {args.provider!r})" if args.provider else "")
            + "; add it to a price-override file ($LLMSPEND_PRICES)"
        )
    current = next(row for row in rows if row["in_force"])
    if args.json:
        out: dict[str, Any] = {
            "model": args.model,
            "provider": args.provider,
            "at": args.at,
            "in_force": current,
            "history": rows,
        }
        if price is not None:
            out["cost"] = {
                "total_usd": price.total_usd,
                "input_usd": price.input_usd,
                "output_usd": price.output_usd,
                "total_nanos": price.total_nanos,
                "status": price.status,
                "ref": str(price.ref) if price.ref else None,
                "note": price.note,
            }
        print(json.dumps(out, default=_jsonable, indent=2))
        return 0
    print(f"{args.model}: {current['ref']} ({current['status']}), USD per million tokens")
    for key, label in _RATES:
        if current[key] is not None:
            print(f"  {label:<13}{_usd(current[key])}")
    if current["request_usd"] is not None:
        print(f"  {'per request':<13}{_usd(current['request_usd'])}")
    for tier in current["tiers"]:
        changes = ", ".join(
            f"{label} {_usd(tier[key])}" for key, label in _RATES if tier.get(key) is not None
        )
        print(f"  above {tier['above_input_tokens']:,} input tokens: {changes}")
    if current["discount_percent"] is not None:
        print(f"  (includes a {current['discount_percent']}% discount)")
    if price is not None:
        print(
            f"cost: ${price.total_usd} (input ${price.input_usd}, output ${price.output_usd}), "
            f"{price.status}" + (f"; {price.note}" if price.note else "")
        )
    print("\nhistory:")
    header = ("", "effective", "input", "cached", "cache wr.", "output", "tiers", "source")
    table = [header]
    for row in rows:
        when = row["effective"].isoformat() if row["effective"] else "-"
        if row["time_of_day"]:
            when += f" {row['time_of_day']}"
        table.append(
            (
                "*" if row["in_force"] else "",
                when,
                *(_usd(row[k]) for k in ("input_mtok", "cached_input_mtok", "cache_write_mtok")),
                _usd(row["output_mtok"]),
                str(len(row["tiers"])) if row["tiers"] else "-",
                row["source"],
            )
        )
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    for r in table:
        print("  " + "  ".join(cell.ljust(width) for cell, width in zip(r, widths, strict=True)))
    return 0


def _usd(value: Decimal | None) -> str:
    return "-" if value is None else f"${value:f}"


def _jsonable(value: object) -> object:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")
