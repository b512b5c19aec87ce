"""``llmspend budget {set,update,list,status,delete,history}``.

In team mode (see :func:`llmspend.cli.through_gateway`) each action calls the public
function (``llmspend.set_budget`` ...), which goes through the gateway, scoped by role;
otherwise it works on the store given by ``--database-url`` (or the default one)."""

from __future__ import annotations

import argparse
import dataclasses
import re
from typing import Any

from . import common_options, database_url, through_gateway
from .output import print_json, print_table

__all__ = ["register"]

STATUS_COLUMNS = (
    "budget",
    "scope",
    "mode",
    "period",
    "spent_usd",
    "reserved_usd",
    "limit_usd",
    "percent_used",
    "state",
    "period_end",
)
LIST_COLUMNS = (
    "scope",
    "name",
    "limit_usd",
    "period",
    "mode",
    "thresholds",
    "timezone",
    "is_default",
    "inherited",
)

#: What argparse takes for a negative number rather than an option: besides its own
#: ``-5`` and ``-.5``, a limit such as ``-5/month`` or ``-1,000`` (which set_budget then
#: refuses with "limit must be greater than 0" instead of argparse's "limit required").
NEGATIVE_LIMIT = re.compile(r"^-\.?\d")


def _limits_may_be_negative(parser: argparse.ArgumentParser) -> None:
    parser._negative_number_matcher = NEGATIVE_LIMIT


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("budget", help="set, list, show and delete budgets")
    bsub = parser.add_subparsers(dest="budget_command", metavar="ACTION")
    bsub.required = True

    p = bsub.add_parser(
        "set",
        help="create or replace a budget",
        description="Create or replace a budget, e.g. "
        "`llmspend budget set project acme/churn 100/month --hard --alert 50,80,100`.",
    )
    p.add_argument("scope", choices=("org", "project", "user"))
    p.add_argument("name", help="acme | acme/churn | acme/ana | acme/churn/ana | acme/* ...")
    p.add_argument("limit", help="USD, optionally with its period: 100 or 100/month")
    p.add_argument("--period", help="day, week, month, quarter, year or total (default month)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--hard", dest="mode", action="store_const", const="hard", help="refuse calls (default)"
    )
    mode.add_argument(
        "--soft", dest="mode", action="store_const", const="soft", help="allow and alert"
    )
    p.add_argument(
        "--alert", default="50,80,100", help="alert thresholds in percent (default 50,80,100)"
    )
    p.add_argument("--tz", default="UTC", help="IANA time zone of the period boundaries")
    p.add_argument("--week-start", type=int, default=0, help="0 = Monday ... 6 = Sunday")
    p.add_argument("--unpriced", choices=("refuse", "allow"), default="refuse")
    p.add_argument("--webhook", default=None, help="URL to POST this budget's alerts to")
    p.add_argument("--json", action="store_true", help="print JSON for scripts")
    common_options(p)
    _limits_may_be_negative(p)
    p.set_defaults(func=_set, mode="hard")

    p = bsub.add_parser(
        "update",
        help="change some fields of a budget",
        description="Change some fields of an existing budget, e.g. "
        "`llmspend budget update project acme/churn --limit 150 --soft`.",
    )
    p.add_argument("scope", choices=("org", "project", "user"))
    p.add_argument("name")
    p.add_argument("--limit", help="USD, optionally with its period: 150 or 150/month")
    p.add_argument("--period", help="day, week, month, quarter, year or total")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--hard", dest="mode", action="store_const", const="hard")
    mode.add_argument("--soft", dest="mode", action="store_const", const="soft")
    p.add_argument("--alert", help="alert thresholds in percent, e.g. 50,80,100")
    p.add_argument("--tz", help="IANA time zone of the period boundaries")
    p.add_argument("--json", action="store_true", help="print JSON for scripts")
    common_options(p)
    _limits_may_be_negative(p)
    p.set_defaults(func=_update, mode=None)

    p = bsub.add_parser("list", help="list budgets (defaults included)")
    p.add_argument("--scope", choices=("org", "project", "user"))
    p.add_argument("--json", action="store_true", help="print JSON for scripts")
    common_options(p)
    p.set_defaults(func=_list)

    p = bsub.add_parser("status", help="spent / reserved / limit per budget, this period")
    p.add_argument("scope", nargs="?", choices=("org", "project", "user"))
    p.add_argument("name", nargs="?")
    p.add_argument("--json", action="store_true", help="print JSON for scripts")
    common_options(p)
    p.set_defaults(func=_status)

    p = bsub.add_parser("delete", help="delete a budget (audited)")
    p.add_argument("scope", choices=("org", "project", "user"))
    p.add_argument("name")
    p.add_argument("--json", action="store_true", help="print JSON for scripts")
    common_options(p)
    p.set_defaults(func=_delete)

    p = bsub.add_parser("history", help="past periods of one budget")
    p.add_argument("scope", choices=("org", "project", "user"))
    p.add_argument("name")
    p.add_argument("--json", action="store_true", help="print JSON for scripts")
    common_options(p)
    p.set_defaults(func=_history)


def _store(args: argparse.Namespace):
    from ..tracker import Tracker

    return Tracker(database_url(args)).store


def _manage(args: argparse.Namespace, action: str) -> Any:
    """``action`` (``set_budget``, ``list_budgets``, ...) on the gateway in team mode (the
    public function), else on the store: a function taking the remaining arguments."""
    if through_gateway(args):
        import llmspend

        return getattr(llmspend, action)
    import functools

    from ..budgets import manage

    return functools.partial(getattr(manage, action), _store(args))


def _print_budget(args: argparse.Namespace, budget: Any, verb: str) -> None:
    if args.json:
        print_json(budget)
    else:
        alerts = ", ".join(f"{(t * 100).normalize():f} %" for t in budget.thresholds) or "none"
        print(
            f"{verb} {budget.scope} budget {budget.name}: ${budget.limit_usd:,} per "
            f"{budget.period} ({budget.mode}), alerts at {alerts}"
        )


def _set(args: argparse.Namespace) -> int:
    from ..budgets.spec import parse_alert_percents, parse_limit_period

    limit, period = parse_limit_period(args.limit)
    if period and args.period and period != args.period:
        from ..errors import BudgetError

        raise BudgetError(
            f"two periods given: {period!r} in {args.limit!r} and --period {args.period!r}"
        )
    budget = _manage(args, "set_budget")(
        args.scope,
        args.name,
        limit,
        period or ("month" if args.period is None else args.period),
        mode=args.mode,
        thresholds=parse_alert_percents(args.alert),
        timezone=args.tz,
        week_start=args.week_start,
        unpriced=args.unpriced,
        webhook_url=args.webhook,
    )
    _print_budget(args, budget, "set")
    return 0


def _update(args: argparse.Namespace) -> int:
    from ..budgets.spec import parse_alert_percents, parse_limit_period
    from ..errors import BudgetError

    changes: dict[str, Any] = {}
    if args.limit is not None:  # given empty, it is a mistake to name, not to skip
        limit, period = parse_limit_period(args.limit)
        changes["limit"] = limit
        if period:
            changes["period"] = period
    if args.period is not None:
        if changes.get("period", args.period) != args.period:
            raise BudgetError(f"two periods given: in {args.limit!r} and --period {args.period!r}")
        changes["period"] = args.period
    if args.mode:
        changes["mode"] = args.mode
    if args.alert is not None:  # --alert '' turns the alerts off, as in `budget set`
        changes["thresholds"] = parse_alert_percents(args.alert)
    if args.tz is not None:
        changes["timezone"] = args.tz
    if not changes:
        raise BudgetError("nothing to change: give --limit, --period, --hard/--soft, ...")
    _print_budget(args, _manage(args, "update_budget")(args.scope, args.name, **changes), "updated")
    return 0


def _list(args: argparse.Namespace) -> int:
    budgets = _manage(args, "list_budgets")(args.scope)
    if args.json:
        print_json(budgets)
    else:
        rows = []
        for b in budgets:
            row = dataclasses.asdict(b)
            row["thresholds"] = ",".join(f"{(t * 100).normalize():f}" for t in b.thresholds)
            rows.append(row)
        print_table(rows, LIST_COLUMNS)
    return 0


def _status(args: argparse.Namespace) -> int:
    statuses = _manage(args, "budget_status")(args.scope, args.name)
    if args.json:
        print_json(statuses)
    else:
        print_table([dataclasses.asdict(s) for s in statuses], STATUS_COLUMNS)
    return 0


def _delete(args: argparse.Namespace) -> int:
    _manage(args, "delete_budget")(args.scope, args.name)
    if args.json:
        print_json({"deleted": {"scope": args.scope, "name": args.name}})
    else:
        print(f"deleted {args.scope} budget {args.name}")
    return 0


def _history(args: argparse.Namespace) -> int:
    frame = _manage(args, "budget_history")(args.scope, args.name)
    rows: list[dict[str, Any]] = [
        {str(k): v for k, v in r.items()} for r in frame.to_dict("records")
    ]
    if args.json:
        print_json(rows)
    else:
        print_table(rows, ("period_start", "period_end", "limit_usd", "spent_usd", "calls"))
    return 0
