"""``%budget`` and ``%spend``: parsing only; the work is in :mod:`.commands`.

Every mistake in what was typed, and every :class:`~llmspend.LLMSpendError` the command
raises, becomes a one-line ``UsageError`` (IPython shows it without a traceback); bad
input never changes the store. ``%budget?`` and ``%spend?`` show the full grammar.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments
from IPython.utils.process import arg_split
from sqlalchemy.exc import InterfaceError, OperationalError

from ..budgets import spec
from ..errors import LLMSpendError
from ..store.urls import reason as driver_reason
from . import commands

__all__ = [
    "LLMSpendMagics",
    "parse_alerts",
    "parse_limit_period",
    "parse_tags",
    "parse_week_start",
]

T = TypeVar("T")

PERIOD_ALIASES = spec.PERIOD_ALIASES
SCOPES = ("org", "project", "user")
_NEGATIVE = re.compile(r"^-\$?\d")
_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

# The options each subcommand accepts (anything else given is a UsageError).
_BUDGET_OPTIONS: dict[str, set[str]] = {
    "set": {"hard", "soft", "alert", "tz", "week_start", "unpriced", "webhook"},
    "update": {"hard", "soft", "alert", "tz", "week_start", "unpriced", "webhook"},
    "status": set(),
    "list": set(),
    "history": set(),
    "delete": set(),
    "alerts": {"since", "all"},
    "ack": {"all"},
}
_SPEND_OPTIONS: dict[str, set[str]] = {
    "context": {"org", "project", "user", "tag", "clear_tags"},
    "last": set(),
    "cell": set(),
    "report": {"by", "since", "until", "org", "project", "user", "provider", "model"},
    "export": {"since", "until", "org", "project", "user", "provider", "model"},
    "quiet": {"min"},
}


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def run(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call ``fn``; an ``LLMSpendError``, or a store that cannot be used (locked by
    another process past the busy timeout, read-only, gone), becomes a one-line
    ``UsageError``. Either way the command's transaction was rolled back."""
    try:
        return fn(*args, **kwargs)
    except LLMSpendError as exc:
        raise UsageError(_one_line(exc)) from None
    except (OperationalError, InterfaceError, sqlite3.OperationalError) as exc:
        said = " ".join(driver_reason(exc).split())
        raise UsageError(
            f"the llmspend store cannot be used right now ({said}); nothing was changed: "
            "try again, or run `llmspend db check` in a terminal"
        ) from None


def parse_limit_period(text: str) -> tuple[str, str | None]:
    """``"100/month"`` → ``("100", "month")``; ``"$5"`` → ``("$5", None)``."""
    return run(spec.parse_limit_period, text)


def parse_alerts(text: str) -> tuple[Decimal, ...]:
    """``"50,80,100"`` (percent of the limit) → fractions; ``"none"`` → no alerts."""
    return run(spec.parse_alert_percents, text)


def parse_week_start(text: str) -> int:
    """``0``-``6`` or ``mon``..``sun`` → 0 (Monday) .. 6 (Sunday)."""
    t = text.strip().lower()
    if t.isdigit() and 0 <= int(t) <= 6:
        return int(t)
    if t[:3] in _DAYS:
        return _DAYS.index(t[:3])
    raise UsageError(f"--week-start takes a day (mon..sun or 0..6), got {text!r}")


def parse_tags(items: Sequence[str] | None) -> dict[str, str]:
    """``["team=ml", "exp=7"]`` → ``{"team": "ml", "exp": "7"}``."""
    tags: dict[str, str] = {}
    for item in items or ():
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise UsageError(f"--tag takes KEY=VALUE, got {item!r}")
        tags[key.strip()] = value.strip()
    return tags


def _wants_help(line: str) -> bool:
    """``-h`` / ``--help`` anywhere: the user asks for the grammar (as ``%budget?``)."""
    return any(t in ("-h", "--help") for t in arg_split(line, strict=False))


def _parse(magic: Any, line: str) -> Any:
    """Parse ``line``; a negative amount (``-5/day``) is an argument, not an option."""
    argv = arg_split(line, strict=False)
    # intermixed: positionals may follow options (%budget alerts --all project acme/churn)
    args, unknown = magic.parser.parse_known_intermixed_args(argv)
    stray = [u for u in unknown if not _NEGATIVE.match(u)]
    if stray:
        raise UsageError(f"unrecognized arguments: {' '.join(stray)}")
    args.rest = list(args.rest) + [u for u in unknown if _NEGATIVE.match(u)]
    for key, value in vars(args).items():  # IPython splits non-POSIX: quotes stay on
        if isinstance(value, str):
            setattr(args, key, _unquote(value))
        elif isinstance(value, list):
            setattr(args, key, [_unquote(v) if isinstance(v, str) else v for v in value])
    return args


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


def _check_options(kind: str, command: str, args: Any, allowed: dict[str, set[str]]) -> None:
    if command not in allowed:
        raise UsageError(
            f"unknown %{kind} command {command!r}; use one of: {', '.join(allowed)} (see %{kind}?)"
        )
    given = {k for k, v in vars(args).items() if k not in ("command", "rest") and v}
    extra = sorted(given - allowed[command])
    if extra:
        opts = ", ".join("--" + e.replace("_", "-") for e in extra)
        raise UsageError(f"%{kind} {command} does not take {opts} (see %{kind}?)")


def _positional(kind: str, rest: list[str], low: int, high: int, usage: str) -> list[str]:
    if not low <= len(rest) <= high:
        raise UsageError(f"usage: %{kind} {usage}")
    return rest + [""] * (high - len(rest))


def _scope(text: str) -> str:
    if text not in SCOPES:
        raise UsageError(f"unknown budget scope {text!r}; use one of: org, project, user")
    return text


def _definition_options(args: Any) -> dict[str, Any]:
    if args.hard and args.soft:
        raise UsageError("give --hard or --soft, not both")
    out: dict[str, Any] = {}
    if args.hard or args.soft:
        out["mode"] = "hard" if args.hard else "soft"
    if args.alert is not None:
        if not args.alert.strip():  # an empty --alert '' is no way to say "none"
            raise UsageError('--alert takes percentages such as 50,80,100, or "none"')
        out["thresholds"] = parse_alerts(args.alert)
    if args.tz is not None:
        out["timezone"] = args.tz
    if args.week_start is not None:
        out["week_start"] = parse_week_start(args.week_start)
    if args.unpriced is not None:
        out["unpriced"] = args.unpriced
    if args.webhook is not None:
        out["webhook_url"] = args.webhook
    return out


@magics_class
class LLMSpendMagics(Magics):
    """``%budget`` and ``%spend``."""

    @line_magic
    @magic_arguments()
    @argument("command", nargs="?", default="status", help="the subcommand (default: status)")
    @argument("rest", nargs="*", help="its arguments")
    @argument("--hard", action="store_true", help="set/update: refuse calls over the limit")
    @argument("--soft", action="store_true", help="set/update: allow, but alert")
    @argument("--alert", metavar="PCTS", help="set/update: alert at these %% (50,80,100 | none)")
    @argument("--tz", metavar="ZONE", help="set/update: the period's time zone (Europe/Paris)")
    @argument("--week-start", metavar="DAY", help="set/update: first day of a week (mon)")
    @argument("--unpriced", choices=("refuse", "allow"), help="set/update: unpriced models")
    @argument("--webhook", metavar="URL", help="set/update: POST this budget's alerts here")
    @argument("--since", metavar="WHEN", help="alerts: only since (7d, 24h, 2026-01-01)")
    @argument("--all", action="store_true", help="alerts: acknowledged too; ack: every alert")
    def budget(self, line: str) -> Any:
        """Set, inspect and delete budgets; list and acknowledge alerts.

        %budget set SCOPE NAME LIMIT[/PERIOD] [--hard|--soft] [--alert 50,80,100]
                    [--tz ZONE] [--week-start mon] [--unpriced refuse|allow] [--webhook URL]
        %budget update SCOPE NAME [LIMIT[/PERIOD]] [same options]   (others keep their value)
        %budget status [SCOPE [NAME]]      spent / reserved / limit / % / state / period end
        %budget list [SCOPE]               every budget, defaults included
        %budget history SCOPE NAME         every period so far, newest first
        %budget delete SCOPE NAME
        %budget alerts [--all] [--since 7d] [SCOPE [NAME]]   unacknowledged unless --all
        %budget ack ID [ID ...] | --all

        SCOPE is org, project or user. NAME: acme (org), acme/churn (project), acme/ana (a
        user across the org) or acme/churn/ana (a user within a project); a * as the last
        part sets a default for every child without its own budget (acme/*).
        LIMIT is USD (100, $1,000, 12.50); PERIOD is day, week, month (default), quarter,
        year or total. Budgets are hard by default; --alert takes percentages of the limit
        (default 50,80,100; "none" for no alerts).

        Examples:
            %budget set org acme 500/month
            %budget set project acme/churn 100/month --hard --alert 50,80,100
            %budget set user acme/ana 5/day --soft --tz Europe/Paris
            %budget set user acme/* 2/day          (every user of acme without a budget)
            %budget status project
        """
        if _wants_help(line):
            print(self.budget.__doc__)
            return None
        args = _parse(self.budget, line)
        cmd, rest = args.command, list(args.rest)
        _check_options("budget", cmd, args, _BUDGET_OPTIONS)
        if cmd == "set":
            scope, name, spec = _positional("budget", rest, 3, 3, "set SCOPE NAME LIMIT[/PERIOD]")
            amount, period = parse_limit_period(spec)
            opts = _definition_options(args)
            note = run(commands.budget_set, _scope(scope), name, amount, period or "month", **opts)
            print(note.text)
            return None
        if cmd == "update":
            scope, name, spec = _positional(
                "budget", rest, 2, 3, "update SCOPE NAME [LIMIT[/PERIOD]] [options]"
            )
            changes = _definition_options(args)
            if spec:
                amount, period = parse_limit_period(spec)
                changes["limit"] = amount
                if period:
                    changes["period"] = period
            note = run(commands.budget_update, _scope(scope), name, **changes)
            print(note.text)
            return None
        if cmd == "status":
            scope, name = _positional("budget", rest, 0, 2, "status [SCOPE [NAME]]")
            return run(commands.budget_status, _scope(scope) if scope else None, name or None)
        if cmd == "list":
            (scope,) = _positional("budget", rest, 0, 1, "list [SCOPE]")
            return run(commands.budget_list, _scope(scope) if scope else None)
        if cmd == "history":
            scope, name = _positional("budget", rest, 2, 2, "history SCOPE NAME")
            return run(commands.budget_history, _scope(scope), name)
        if cmd == "delete":
            scope, name = _positional("budget", rest, 2, 2, "delete SCOPE NAME")
            note = run(commands.budget_delete, _scope(scope), name)
            print(note.text)
            return None
        if cmd == "alerts":
            scope, name = _positional("budget", rest, 0, 2, "alerts [--all] [SCOPE [NAME]]")
            return run(
                commands.budget_alerts,
                args.since,
                include_acknowledged=args.all,
                scope=_scope(scope) if scope else None,
                budget=name or None,
            )
        # ack
        if args.all and rest:
            raise UsageError("give alert ids or --all, not both")
        if not args.all and not rest:
            raise UsageError("usage: %budget ack ID [ID ...] | --all (see %budget alerts)")
        ids = None
        if rest:
            try:
                ids = [int(i.strip("#,")) for i in rest]
            except ValueError:
                raise UsageError(f"alert ids are whole numbers, got {' '.join(rest)!r}") from None
        print(run(commands.budget_ack, ids).text)
        return None

    @line_magic
    @magic_arguments()
    @argument("command", nargs="?", default="context", help="the subcommand (default: context)")
    @argument("rest", nargs="*", help="its arguments")
    @argument("--org", help="context: charge calls to this org; report/export: filter")
    @argument("--project", help="context: charge calls to this project; report/export: filter")
    @argument("--user", help="context: charge calls to this user; report/export: filter")
    @argument("--tag", action="append", metavar="K=V", help="context: tag every call (repeat)")
    @argument("--clear-tags", action="store_true", help="context: drop the tags set before")
    @argument("--by", metavar="COLS", help="report: group by (model, provider, user, ...)")
    @argument("--since", metavar="WHEN", help="report/export: since (7d, 24h, 2026-01-01)")
    @argument("--until", metavar="WHEN", help="report/export: until (exclusive)")
    @argument("--provider", help="report/export: filter by provider")
    @argument("--model", help="report/export: filter by model")
    @argument("--min", metavar="USD", help="quiet: hide the cell line under this cost")
    def spend(self, line: str) -> Any:
        """Attribution, the last calls, per-cell cost, reports and exports.

        %spend context [--org O] [--project P] [--user U] [--tag K=V ...] [--clear-tags]
                                     who the next calls are charged to (no options: show it)
        %spend last [N]              the last N calls of this kernel (default 5): time,
                                     model, tokens, cost, latency, status
        %spend cell                  what the current (or previous) cell cost
        %spend report [--by model] [--since 7d] [--until WHEN] [--org ...] [--model ...]
                                     spend grouped by a column: a DataFrame and a chart
        %spend export FILE.csv|FILE.parquet [--since WHEN] [--until WHEN] [filters]
                                     the records, money exact
        %spend quiet [on|off] [--min USD]
                                     the line under each cell that made calls:
                                     "on" silences it, "off" brings it back

        The per-cell line can also be silenced with LLMSPEND_CELL_COST=off (and hidden
        below a cost with LLMSPEND_CELL_COST_MIN=0.01) in the environment.

        Examples:
            %spend context --org acme --project churn --user ana --tag exp=42
            %spend last 3
            df = %spend report --by model --since 7d
            %spend export ~/spend-october.csv --since 2026-10-01 --until 2026-11-01
        """
        if _wants_help(line):
            print(self.spend.__doc__)
            return None
        args = _parse(self.spend, line)
        cmd, rest = args.command, list(args.rest)
        _check_options("spend", cmd, args, _SPEND_OPTIONS)
        filters = {k: getattr(args, k) for k in ("org", "project", "user", "provider", "model")}
        if cmd == "context":
            _positional("spend", rest, 0, 0, "context [--org O] [--project P] [--user U]")
            note = run(
                commands.spend_context,
                org=args.org,
                project=args.project,
                user=args.user,
                tags=parse_tags(args.tag),
                clear_tags=args.clear_tags,
            )
            print(note.text)
            return None
        if cmd == "last":
            (n,) = _positional("spend", rest, 0, 1, "last [N]")
            if n and not n.isdigit():
                raise UsageError(f"usage: %spend last [N], N a whole number; got {n!r}")
            return run(commands.spend_last, int(n) if n else 5)
        if cmd == "cell":
            _positional("spend", rest, 0, 0, "cell")
            print(run(commands.spend_cell).text)
            return None
        if cmd == "report":
            _positional("spend", rest, 0, 0, "report [--by COLUMN] [--since WHEN]")
            by: str | list[str] = "model"
            if args.by:
                cols = [c.strip() for c in args.by.split(",") if c.strip()]
                if not cols:
                    raise UsageError("--by takes a column name such as model or user")
                by = cols[0] if len(cols) == 1 else cols
            return run(
                commands.spend_report,
                by,
                args.since or "7d",
                args.until,
                **filters,
            )
        if cmd == "export":
            (path,) = _positional("spend", rest, 1, 1, "export FILE.csv|FILE.parquet")
            print(run(commands.spend_export, path, args.since, args.until, **filters).text)
            return None
        # quiet
        (state,) = _positional("spend", rest, 0, 1, "quiet [on|off] [--min USD]")
        if state and state.lower() not in ("on", "off"):
            raise UsageError(f"usage: %spend quiet [on|off], got {state!r}")
        min_usd = None
        if args.min is not None:
            try:
                min_usd = Decimal(args.min.strip().removeprefix("$"))
            except InvalidOperation:
                raise UsageError(f"--min takes an amount of USD, got {args.min!r}") from None
            if not min_usd.is_finite():
                raise UsageError(f"--min takes an amount of USD, got {args.min!r}")
        on = None if not state else state.lower() == "on"
        print(run(commands.spend_quiet, on, min_usd=min_usd).text)
        return None
