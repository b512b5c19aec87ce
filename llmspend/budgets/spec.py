"""Budget definitions: validating what users type, and the result objects they get back.

Names (the slash form is only for budgets):

=========  =====================  ==========================================
scope      name                   meaning
=========  =====================  ==========================================
org        ``acme``               the organization
project    ``acme/churn``         one project of the org
project    ``acme/*``             default for each project of the org
user       ``acme/ana``           the user across the whole org
user       ``acme/churn/ana``     the user within one project
user       ``acme/*``             default for each user of the org
user       ``acme/churn/*``       default for each user within the project
=========  =====================  ==========================================

A default applies to every child that has no explicit budget of its own; an explicit
budget wins.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlsplit

from ..attribution import validate_name
from ..errors import BudgetError, ValidationError
from ..money import usd_to_nanos, without_thousands
from .periods import PERIODS, zone

__all__ = [
    "Budget",
    "BudgetKey",
    "BudgetStatus",
    "check_webhook_url",
    "mask_url",
    "parse_key",
    "parse_limit",
    "parse_thresholds",
]

SCOPES = ("org", "project", "user")
MODES = ("hard", "soft")
UNPRICED_POLICIES = ("refuse", "allow")
MAX_LIMIT_USD = Decimal("1000000000")  # $1B: anything larger is a typo


@dataclass(frozen=True)
class BudgetKey:
    scope: str
    name: str
    org: str
    project: str | None
    user: str | None
    default_for: str  # "" for explicit budgets, else the child scope it is a default for

    @property
    def label(self) -> str:
        return f"{self.scope} {self.name}"


def parse_key(scope: Any, name: Any) -> BudgetKey:
    """Validate a (scope, name) pair into its parts; ``BudgetError`` says what is wrong."""
    if scope not in SCOPES:
        raise BudgetError(f"unknown budget scope {scope!r}; use one of: org, project, user")
    if not isinstance(name, str) or not name.strip():
        raise BudgetError(f"budget name must be a non-empty string, got {name!r}")
    name = name.strip()  # " acme " names the budget "acme", not a second one on its org
    parts = name.split("/")
    try:
        if scope == "org":
            if len(parts) != 1:
                raise BudgetError(f"an org budget is named like 'acme', got {name!r}")
            return BudgetKey(scope, name, validate_name("org", parts[0]), None, None, "")
        if scope == "project":
            if len(parts) != 2:
                raise BudgetError(
                    f"a project budget is named 'org/project' (or 'org/*'), got {name!r}"
                )
            org = validate_name("org", parts[0])
            if parts[1] == "*":
                return BudgetKey(scope, name, org, "*", None, "project")
            return BudgetKey(scope, name, org, validate_name("project", parts[1]), None, "")
        if len(parts) == 2:
            org = validate_name("org", parts[0])
            if parts[1] == "*":
                return BudgetKey(scope, name, org, None, "*", "user")
            return BudgetKey(scope, name, org, None, validate_name("user", parts[1]), "")
        if len(parts) == 3:
            org = validate_name("org", parts[0])
            project = validate_name("project", parts[1])
            if parts[2] == "*":
                return BudgetKey(scope, name, org, project, "*", "user")
            return BudgetKey(scope, name, org, project, validate_name("user", parts[2]), "")
        raise BudgetError(
            f"a user budget is named 'org/user' or 'org/project/user' (or with '*'), got {name!r}"
        )
    except BudgetError:
        raise
    except Exception as exc:  # ValidationError from validate_name
        raise BudgetError(f"bad budget name {name!r}: {exc}") from None


def parse_limit(limit: Any) -> int:
    """A limit in USD (str, Decimal or int; > 0, finite) → nanodollars."""
    if isinstance(limit, bool) or limit is None:
        raise BudgetError(f"limit must be an amount of USD, got {limit!r}")
    if isinstance(limit, float):  # numpy's float64 too: its repr is not a number
        if not math.isfinite(limit):
            raise BudgetError(f"limit must be a finite amount of USD, got {limit!r}")
        limit = repr(float(limit))
    if isinstance(limit, str):
        try:
            value = Decimal(without_thousands(limit.strip().removeprefix("$"), limit))
        except ValidationError as e:
            raise BudgetError(f"limit: {e}") from None
        except InvalidOperation:
            raise BudgetError(
                f"limit must be an amount of USD such as '100' or '12.50', got {limit!r}"
            ) from None
    elif isinstance(limit, (int, Decimal)):
        value = Decimal(limit)
    else:
        raise BudgetError(f"limit must be an amount of USD, got {type(limit).__name__}")
    if not value.is_finite():
        raise BudgetError(f"limit must be a finite amount of USD, got {limit!r}")
    if value <= 0:
        raise BudgetError(f"limit must be greater than 0, got {limit!r}")
    if value > MAX_LIMIT_USD:
        raise BudgetError(f"limit {limit!r} is larger than ${MAX_LIMIT_USD:,}; is it a typo?")
    nanos = usd_to_nanos(value)
    if nanos <= 0:
        raise BudgetError(f"limit must be at least $0.000000001, got {limit!r}")
    return nanos


def parse_thresholds(thresholds: Any) -> tuple[Decimal, ...]:
    """Fractions in (0, 1], strictly increasing (e.g. ``(0.5, 0.8, 1.0)``)."""
    if thresholds is None:
        return ()
    if isinstance(thresholds, (str, bytes)) or not isinstance(thresholds, Iterable):
        raise BudgetError(f"thresholds must be a sequence of fractions, got {thresholds!r}")
    out: list[Decimal] = []
    for t in thresholds:
        if isinstance(t, bool):
            raise BudgetError(f"threshold must be a fraction in (0, 1], got {t!r}")
        try:
            value = Decimal(repr(float(t))) if isinstance(t, float) else Decimal(t)
        except (InvalidOperation, TypeError, ValueError):
            raise BudgetError(f"threshold must be a fraction in (0, 1], got {t!r}") from None
        if not value.is_finite() or not (0 < value <= 1):
            raise BudgetError(
                f"threshold must be a fraction in (0, 1] (e.g. 0.8 for 80 %), got {t!r}"
            )
        if value < Decimal("0.000001"):  # kept in millionths: less would be 0, any spend
            raise BudgetError(f"threshold must be at least 0.000001 (0.0001 %), got {t!r}")
        if out and value <= out[-1]:
            raise BudgetError(f"thresholds must be strictly increasing, got {list(thresholds)!r}")
        out.append(value)
    return tuple(out)


def check_choice(kind: str, value: Any, choices: Iterable[str]) -> str:
    choices = tuple(choices)
    if value not in choices:
        raise BudgetError(f"unknown {kind} {value!r}; use one of: {', '.join(choices)}")
    return str(value)


def check_period(period: Any) -> str:
    return check_choice("period", period, PERIODS)


def check_timezone(name: Any) -> str:
    zone(name)
    return str(name)


def thresholds_json(values: tuple[Decimal, ...]) -> str:
    return json.dumps([str(v) for v in values])


def thresholds_from_json(text: str | None) -> tuple[Decimal, ...]:
    return tuple(Decimal(v) for v in json.loads(text or "[]"))


@dataclass(frozen=True)
class Budget:
    """A budget as stored."""

    id: int
    scope: str
    name: str
    limit_usd: Decimal
    period: str
    mode: str
    thresholds: tuple[Decimal, ...]
    timezone: str
    week_start: int
    is_default: bool
    inherited: bool
    unpriced_policy: str
    webhook_url: str | None  # masked, scheme://host/***: the full URL is never read back
    created_at: dt.datetime
    updated_at: dt.datetime


@dataclass(frozen=True)
class BudgetStatus:
    """Where a budget stands in its current period. Money is exact ``Decimal`` USD."""

    budget: str
    scope: str
    mode: str
    period: str
    period_start: dt.datetime
    period_end: dt.datetime | None
    limit_usd: Decimal
    spent_usd: Decimal
    reserved_usd: Decimal
    remaining_usd: Decimal
    percent_used: float
    state: str
    projected_usd: Decimal | None
    calls: int = 0
    inherited: bool = False
    timezone: str = "UTC"


#: Period names people type, in magics and on the command line.
PERIOD_ALIASES = {
    "day": "day", "daily": "day", "d": "day",
    "week": "week", "weekly": "week", "w": "week", "wk": "week",
    "month": "month", "monthly": "month", "mo": "month", "m": "month",
    "quarter": "quarter", "quarterly": "quarter", "q": "quarter",
    "year": "year", "yearly": "year", "annual": "year", "y": "year", "yr": "year",
    "total": "total", "ever": "total",
}  # fmt: skip


def parse_limit_period(text: str) -> tuple[str, str | None]:
    """The compact ``"100/month"`` form → ("100", "month"); ``"$5"`` → ("$5", None).

    Period aliases (``daily``, ``mo``, ...) are accepted; the limit itself is validated.
    """
    if not isinstance(text, str) or not text.strip():
        raise BudgetError(f"expected LIMIT[/PERIOD] such as 100/month, got {text!r}")
    limit, sep, period = text.strip().partition("/")
    if not limit.strip():
        raise BudgetError(f"expected LIMIT[/PERIOD] such as 100/month, got {text!r}")
    parse_limit(limit.strip())
    if not sep:
        return limit.strip(), None
    key = period.strip().lower()
    if key not in PERIOD_ALIASES:
        raise BudgetError(
            f"unknown period {period!r} in {text!r}; use day, week, month, quarter, year or total"
        )
    return limit.strip(), PERIOD_ALIASES[key]


def parse_alert_percents(text: str) -> tuple[Decimal, ...]:
    """``"50,80,100"`` (percent of the limit) → fractions (0.5, 0.8, 1); ``"none"`` → ()."""
    if not isinstance(text, str):
        raise BudgetError(f"expected percentages such as '50,80,100', got {text!r}")
    if text.strip().lower() in ("", "none", "off", "no"):
        return ()
    out = []
    for part in text.split(","):
        try:
            value = Decimal(part.strip().removesuffix("%").strip())
        except InvalidOperation:
            raise BudgetError(
                f"alert thresholds are percentages of the limit such as 50,80,100, got {text!r}"
            ) from None
        if not value.is_finite() or not 0 < value <= 100:
            raise BudgetError(f"alert percentages must be in (0, 100], got {part.strip()!r}")
        out.append(value / 100)
    return tuple(sorted(set(out)))


def check_webhook_url(url: Any) -> str:
    """An http(s) URL with a host and no control characters or spaces, else ``BudgetError``.

    Only the form is checked here; where it may be delivered is decided at delivery time
    (``llmspend.alerting.destinations``). The message never repeats the URL's path.
    """
    if not isinstance(url, str) or not url[:8].lower().startswith(("http://", "https://")):
        # not echoed: a pasted secret must not reach a log through the error
        scheme = urlsplit(url).scheme if isinstance(url, str) else ""
        got = (
            f"a value of type {type(url).__name__}" if not isinstance(url, str)
            else f"a URL of scheme {scheme!r}" if scheme.isascii() and scheme.isalpha()
            else "text that is not a URL"
        )  # fmt: skip
        raise BudgetError(f"webhook url must be an http(s) URL (https://host/path), got {got}")
    if any(ord(c) < 0x21 or 0x7F <= ord(c) <= 0x9F for c in url):
        raise BudgetError(
            "webhook url must not contain spaces or control characters (tab, newline, NUL...)"
        )
    if len(url) > 2000:
        raise BudgetError("webhook url is longer than 2000 characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise BudgetError(f"webhook url is malformed: {exc}") from None
    if not parts.hostname:
        raise BudgetError("webhook url has no host")
    return url


def mask_url(url: str | None) -> str | None:
    """``scheme://host[:port]`` with any userinfo, path, query or fragment shown as ``***``.

    Webhook URLs carry their secret there (Slack's path, ``?token=``), so listings, API
    answers and audit entries show this form and the full URL is never read back.
    """
    if url is None:
        return None
    try:
        parts = urlsplit(url)
        host = parts.netloc.rsplit("@", 1)[-1]
    except ValueError:
        return "***"
    secret = "@" in parts.netloc or parts.path not in ("", "/") or parts.query or parts.fragment
    return f"{parts.scheme}://{host}{'/***' if secret else parts.path}"[:300]
