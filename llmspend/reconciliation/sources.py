"""Providers' own cost exports, read into one shape: billed lines per UTC day and model.

Readers (pure: data in, lines out; :func:`read_export` tells them apart):

* OpenAI organization **Costs API** JSON (``GET /v1/organization/costs``, grouped by
  ``line_item``: ``"gpt-4o-mini-2024-07-18, input"``), one page, a list of pages, or the
  openai SDK's ``admin.organization.usage.costs()`` result; amounts in dollars.
* OpenAI **cost CSV** (the dashboard's export: ``start_time``/``start_time_iso``,
  ``line_item``, ``amount_value``, ``project_id``) and its **usage CSV** (tokens per model,
  no money: priced here with llmspend's price book, ``source="openai-usage"``).
* Anthropic **cost report** JSON (``GET /v1/organizations/cost_report`` grouped by
  ``description``); amounts are decimal strings in cents.
* Google Cloud **billing export** CSV (BigQuery's standard export saved as CSV:
  ``service.description``, ``sku.description``, ``usage_start_time``, ``cost``,
  ``project.id``): Gemini SKUs, the model read from the SKU's name.

Model names are compared by :func:`model_key`: a dated snapshot
(``gpt-4o-mini-2024-07-18``, ``claude-sonnet-4-20250514``) bills as its family.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
import re
import warnings
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, NamedTuple

from ..errors import LLMSpendWarning, ValidationError

__all__ = [
    "BilledLine",
    "Export",
    "model_key",
    "read_export",
]

_DATED = re.compile(r"-(?:\d{4}-\d{2}-\d{2}|\d{8})$")
_GEMINI_SKU = re.compile(
    r"Gemini\s+(\d+(?:\.\d+)?)\s+(Flash[- ]Lite|Flash|Pro)(?:\s+(Image|Live|TTS))?", re.I
)


class BilledLine(NamedTuple):
    """One amount a provider billed: its UTC day, provider, model (:func:`model_key`),
    project (``None`` when the export has none) and USD."""

    day: dt.date
    provider: str
    model: str
    project: str | None
    usd: Decimal


class Export(NamedTuple):
    """What a cost export held: its ``source`` (which reader), billed lines and the UTC
    days it covers (``first_day``..``last_day``: an API's buckets, empty days included;
    ``None`` when the export does not say, then the days of its lines)."""

    source: str
    provider: str
    lines: list[BilledLine]
    first_day: dt.date | None = None
    last_day: dt.date | None = None


def model_key(model: str | None) -> str:
    """The name a model is compared by: no ``models/`` prefix, no date suffix, lowercase."""
    if not model:
        return "(none)"
    name = str(model).strip().lower().removeprefix("models/")
    return _DATED.sub("", name)


def _usd(value: Any, *, cents: bool = False, where: str) -> Decimal:
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        raise ValidationError(f"{where}: not an amount: {value!r}") from None
    if not amount.is_finite():
        raise ValidationError(f"{where}: not an amount: {value!r}")
    return amount / 100 if cents else amount


def _moment(value: Any, *, where: str) -> dt.datetime:
    """A naive UTC time from unix seconds, an ISO time or date, or BigQuery's ``... UTC``."""
    try:
        if isinstance(value, (int, float)) or (isinstance(value, str) and value.isdigit()):
            return dt.datetime.fromtimestamp(int(value), dt.UTC).replace(tzinfo=None)
        text = str(value).strip().replace(" UTC", "+00:00").replace("Z", "+00:00")
        when = dt.datetime.fromisoformat(text)
    except (ValueError, OverflowError, OSError):
        raise ValidationError(f"{where}: not a time: {value!r}") from None
    if when.tzinfo is not None:
        when = when.astimezone(dt.UTC).replace(tzinfo=None)
    return when


def _day(value: Any, *, where: str) -> dt.date:
    """The UTC day of :func:`_moment`."""
    return _moment(value, where=where).date()


def _pages(data: Any) -> list[Mapping[str, Any]]:
    """The pages of an export, each checked to be ``{data: [{results: [{...}]}]}``."""
    if hasattr(data, "model_dump"):  # an SDK response object
        data = data.model_dump()
    if isinstance(data, Mapping):
        data = [data]
    if not isinstance(data, list) or not all(
        isinstance(p, Mapping) or hasattr(p, "model_dump") for p in data
    ):
        raise ValidationError("a cost export must be a JSON object (one page) or a list of pages")
    pages = [p.model_dump() if hasattr(p, "model_dump") else p for p in data]
    for page in pages:
        buckets = page.get("data")
        if buckets is None:
            continue
        if not isinstance(buckets, list) or not all(isinstance(b, Mapping) for b in buckets):
            raise ValidationError("a cost export's 'data' must be a list of buckets (objects)")
        for bucket in buckets:
            results = bucket.get("results")
            if results is not None and (
                not isinstance(results, list) or not all(isinstance(r, Mapping) for r in results)
            ):
                raise ValidationError("a cost bucket's 'results' must be a list of objects")
    if pages and pages[-1].get("has_more") is True:
        warnings.warn(
            "the cost export's last page says has_more: the days after it are not compared "
            "(pass every page, following next_page, as a list)",
            LLMSpendWarning,
            stacklevel=4,
        )
    return pages


def _span(
    pages: list[Mapping[str, Any]], start: str, end: str, where: str
) -> tuple[dt.date | None, dt.date | None]:
    """The UTC days the pages' buckets cover, empty buckets included."""
    days = []
    for page in pages:
        for bucket in page.get("data") or ():
            days.append(_day(bucket.get(start), where=where))
            if bucket.get(end) not in (None, ""):
                last = _moment(bucket.get(end), where=where) - dt.timedelta(microseconds=1)
                days.append(max(last.date(), days[-1]))
    return (min(days), max(days)) if days else (None, None)


def openai_costs(data: Any) -> Export:
    """Billed lines from OpenAI Costs API pages (amounts in dollars)."""
    lines = []
    pages = _pages(data)
    for page in pages:
        for bucket in page.get("data") or ():
            day = _day(bucket.get("start_time"), where="OpenAI costs bucket")
            for r in bucket.get("results") or ():
                cost = r.get("amount") or {}
                if not isinstance(cost, Mapping):
                    raise ValidationError(
                        f"OpenAI costs: 'amount' must be {{value, currency}}, not {cost!r}"
                    )
                amount = cost.get("value")
                if amount is None:
                    continue
                currency = str(cost.get("currency") or "usd").lower()
                if currency != "usd":
                    raise ValidationError(f"OpenAI costs: currency {currency!r} is not USD")
                item = r.get("line_item")
                if not isinstance(item, str) or not item:
                    raise ValidationError(
                        "OpenAI costs: a result without a line_item: ask the Costs API with "
                        "group_by=line_item (it names each amount's model)"
                    )
                lines.append(BilledLine(day, "openai", model_key(item.split(",")[0]),
                                        r.get("project_id"),
                                        _usd(amount, where="OpenAI costs")))  # fmt: skip
    first, last = _span(pages, "start_time", "end_time", "OpenAI costs bucket")
    return Export("openai-costs", "openai", lines, first, last)


def anthropic_costs(data: Any) -> Export:
    """Billed lines from Anthropic cost report pages (amounts in cents)."""
    lines = []
    pages = _pages(data)
    for page in pages:
        for bucket in page.get("data") or ():
            day = _day(bucket.get("starting_at"), where="Anthropic cost report bucket")
            for r in bucket.get("results") or ():
                if str(r.get("currency") or "USD").upper() != "USD":
                    raise ValidationError(f"Anthropic cost report: currency {r['currency']!r}")
                model = r.get("model") or r.get("description") or r.get("cost_type")
                lines.append(BilledLine(day, "anthropic", model_key(model),
                                        r.get("workspace_id"),
                                        _usd(r.get("amount"), cents=True,
                                             where="Anthropic cost report")))  # fmt: skip
    first, last = _span(pages, "starting_at", "ending_at", "Anthropic cost report bucket")
    return Export("anthropic-cost-report", "anthropic", lines, first, last)


def _pick(row: Mapping[str, Any], *names: str) -> Any:
    for name in names:
        value = row.get(name)
        if value not in (None, ""):
            return value
    return None


def _credits(value: Any, *, where: str) -> Decimal:
    """A billing row's credits (negative): an amount, or BigQuery's JSON list of
    ``{name, amount, ...}`` as a CSV cell holds it."""
    if value is None:
        return Decimal(0)
    text = str(value).strip()
    if not text.startswith("["):
        return _usd(text, where=where)
    try:
        items = json.loads(text)
    except ValueError:
        raise ValidationError(f"{where}: credits are not a JSON list: {text[:80]!r}") from None
    amounts = [item.get("amount") for item in items if isinstance(item, dict)]
    return sum((_usd(a, where=where) for a in amounts if a is not None), Decimal(0))


def gcp_billing(rows: Iterable[Mapping[str, Any]]) -> Export:
    """Billed lines from a Google Cloud billing export: Gemini SKUs only, the model read
    from the SKU (``Gemini 2.5 Flash Input Text Tokens`` → ``gemini-2.5-flash``)."""
    lines = []
    for i, row in enumerate(rows, start=2):
        service = str(_pick(row, "service.description", "service_description", "service") or "")
        sku = str(_pick(row, "sku.description", "sku_description", "sku") or "")
        m = _GEMINI_SKU.search(sku)
        if m is None and "gemini" not in service.lower() and "generative" not in service.lower():
            continue
        model = "(other)"
        if m is not None:
            kind = m.group(2).lower().replace(" ", "-")
            model = f"gemini-{m.group(1)}-{kind}" + (f"-{m.group(3).lower()}" if m.group(3) else "")
        currency = str(_pick(row, "currency") or "USD").upper()
        if currency != "USD":
            raise ValidationError(f"billing export line {i}: currency {currency!r} is not USD")
        when = _pick(row, "usage_start_time", "usage_start", "date")
        cost = _usd(_pick(row, "cost") or 0, where=f"billing export line {i}")
        cost += _credits(_pick(row, "credits.amount", "credits"), where=f"billing export line {i}")
        project = _pick(row, "project.id", "project_id", "project.name")
        lines.append(BilledLine(_day(when, where=f"billing export line {i}"), "google", model,
                                project, cost))  # fmt: skip
    return Export("gcp-billing", "google", lines)


def openai_cost_csv(rows: Iterable[Mapping[str, Any]]) -> Export:
    """Billed lines from OpenAI's cost CSV (``line_item``, ``amount_value``)."""
    lines = []
    for i, row in enumerate(rows, start=2):
        when = _pick(row, "start_time_iso", "start_time", "date", "day")
        item = str(_pick(row, "line_item", "model") or "")
        amount = _pick(row, "amount_value", "amount", "cost")
        if amount is None:
            continue
        lines.append(BilledLine(_day(when, where=f"cost CSV line {i}"), "openai",
                                model_key(item.split(",")[0]),
                                _pick(row, "project_id", "project_name", "project"),
                                _usd(amount, where=f"cost CSV line {i}")))  # fmt: skip
    return Export("openai-cost-csv", "openai", lines)


#: ``(model, input, cached input, output, day) -> USD``: prices a usage CSV's tokens.
Pricer = Callable[[str, int, int, int, dt.date], Decimal | None]


def openai_usage_csv(rows: Iterable[Mapping[str, Any]], price: Pricer) -> Export:
    """Lines from OpenAI's usage CSV (tokens per day and model, no money), priced by
    ``price`` at list prices."""
    lines = []
    for i, row in enumerate(rows, start=2):
        when = _pick(row, "start_time_iso", "start_time", "date")
        model = str(_pick(row, "model") or "")

        def n(*names: str, _row: Mapping[str, Any] = row) -> int:
            return int(float(_pick(_row, *names) or 0))

        usd = price(model, n("input_tokens"), n("input_cached_tokens", "cached_input_tokens"),
                    n("output_tokens"), _day(when, where=f"usage CSV line {i}"))  # fmt: skip
        lines.append(BilledLine(_day(when, where=f"usage CSV line {i}"), "openai",
                                model_key(model), _pick(row, "project_id", "project"),
                                usd if usd is not None else Decimal(0)))  # fmt: skip
    return Export("openai-usage", "openai", lines)


def read_export(source: Any, *, price: Pricer | None = None) -> Export:
    """Read a cost export: a path (``.json`` or ``.csv``), JSON text, parsed JSON, or an
    SDK response; which provider's format it is comes from its shape."""
    data: Any = source
    name = ""
    if isinstance(source, (str, os.PathLike)) and not str(source).lstrip().startswith(("{", "[")):
        path = Path(source).expanduser()
        if not path.is_file():
            raise ValidationError(f"no such file: {str(path)!r}")
        name = path.name
        try:
            data = path.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError:
            raise ValidationError(
                f"{name}: not a cost export llmspend can read (not UTF-8 text)"
            ) from None
    if isinstance(data, str):
        text = data.lstrip()
        if text.startswith(("{", "[")):
            try:
                data = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ValidationError(f"{name or 'cost export'}: not JSON: {exc}") from None
        else:
            return _read_csv(text, name, price)
    pages = _pages(data)
    results = [r for p in pages for b in p.get("data") or () for r in b.get("results") or ()]
    first_bucket: Mapping[str, Any] = next((b for p in pages for b in p.get("data") or ()), {})
    if "starting_at" in first_bucket or any(isinstance(r.get("amount"), str) for r in results):
        return anthropic_costs(pages)
    if "start_time" in first_bucket or not results:
        return openai_costs(pages)
    raise ValidationError(f"{name or 'cost export'}: not a cost export llmspend can read")


def _read_csv(text: str, name: str, price: Pricer | None) -> Export:
    rows = list(csv.DictReader(io.StringIO(text)))
    header = set(rows[0]) if rows else set()
    if header & {"sku.description", "sku_description"}:
        return gcp_billing(rows)
    if header & {"amount_value", "line_item"}:
        return openai_cost_csv(rows)
    if "model" in header and "input_tokens" in header:
        if price is None:
            raise ValidationError("a usage CSV has tokens, not money: it needs a price book")
        return openai_usage_csv(rows, price)
    raise ValidationError(
        f"{name or 'CSV'}: not a cost export llmspend can read (expected OpenAI's cost or "
        "usage CSV or a Google Cloud billing export)"
    )
