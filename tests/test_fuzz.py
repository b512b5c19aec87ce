"""Property-based tests: every parser says no clearly, and saying no changes nothing.

For each way input reaches llmspend (budget definitions, times and spans, ``records()``
filters, ``ingest`` rows, price-override files, configuration, provider usage payloads,
``price()`` arguments, the ``%budget``/``%spend`` magics) hypothesis throws junk at it:
missing, null, negative, huge, NaN/inf, wrong types and random extra keys. The contract
(DESIGN §11): bad input gets an :class:`llmspend.LLMSpendError` (or one of its
subclasses) with a message, never another exception type, and leaves the store unchanged
— every row of every ``llmspend_*`` table is compared before and after. Provider usage
parsers never raise at all and return consistent, non-negative usage that the store can
hold.

Inputs that once broke a parser are pinned as ``@example``s, so they run first and every
time. Bounded: small ``max_examples`` and SQLite only (the validation under test runs
before any SQL), so the module stays well under a minute on two busy cores. For a deeper
search, ``LLMSPEND_FUZZ_SCALE=20 pytest tests/test_fuzz.py`` multiplies every example count.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import warnings
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import llmspend
from llmspend.call import Usage
from llmspend.errors import (
    ConfigError,
    IngestError,
    LLMSpendError,
    PriceFileError,
    PricingError,
    ValidationError,
)
from llmspend.store.engine import Store
from llmspend.tracker import Tracker, get_tracker, set_tracker
from tests.shells import plain_shell

# -- settings and shared helpers -------------------------------------------------------------


FUZZ_SCALE = float(os.environ.get("LLMSPEND_FUZZ_SCALE") or 1)


def fuzz(n: int) -> settings:
    """Bounded settings: ``n`` examples (times ``LLMSPEND_FUZZ_SCALE``), no deadline,
    fixtures shared across examples."""
    return settings(
        max_examples=max(1, int(n * FUZZ_SCALE)),
        deadline=None,
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.filter_too_much,
            HealthCheck.data_too_large,
        ],
    )


#: The token bound ``ingest`` documents (store columns are BIGINT).
MAX_TOKENS = 2**62


_TABLES: dict[str, list[Any]] = {}


def store_snapshot(store: Store) -> dict[str, list[tuple[str, ...]]]:
    """Every row of every ``llmspend_*`` table, as sorted reprs (a store's full state)."""
    from sqlalchemy import MetaData, select

    with store.engine.connect() as conn:
        tables = _TABLES.get(store.url)
        if tables is None:  # reflected once per store (its schema does not change here)
            meta = MetaData()
            meta.reflect(conn, only=lambda name, _meta: name.startswith("llmspend_"))
            tables = _TABLES[store.url] = sorted(meta.tables.values(), key=lambda t: t.name)
        return {
            t.name: sorted(tuple(repr(v) for v in row) for row in conn.execute(select(t)))
            for t in tables
        }


def rejects_cleanly(
    fn: Callable[[], Any],
    store: Store | None = None,
    kinds: tuple[type[BaseException], ...] = (LLMSpendError,),
) -> tuple[Any, BaseException | None]:
    """Run ``fn``: it returns, or raises one of ``kinds`` with a message (anything else
    fails the test), and an error leaves ``store`` exactly as it was."""
    before = store_snapshot(store) if store is not None else None
    try:
        return fn(), None
    except kinds as exc:
        assert str(exc).strip(), f"{type(exc).__name__} without a message"
        if store is not None:
            assert store_snapshot(store) == before, f"the store changed on error: {exc}"
        return None, exc


@pytest.fixture
def tracker(tmp_path: Path) -> Iterator[Tracker]:
    """A fresh SQLite store as the current tracker (not installed: no SDK hooks)."""
    from llmspend.store.engine import forget_store

    url = f"sqlite:///{tmp_path / 'fuzz.sqlite'}"
    t = Tracker(url, org="acme", project="churn", user="ana")
    set_tracker(t)
    yield t
    set_tracker(None)
    forget_store(url)


# Junk of every type, small so that failures print readably.
JUNK: st.SearchStrategy[Any] = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.binary(max_size=6),
    st.decimals(allow_nan=True, allow_infinity=True),
    st.lists(st.integers(min_value=-3, max_value=3), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.just(object()),
    st.datetimes(),
)
NUMBERISH_TEXT = st.text(alphabet="0123456789.-+eE$,_ naNIfty%/", max_size=14)
SPECIAL_AMOUNTS = st.sampled_from(
    ["NaN", "-inf", "sNaN", "Infinity", "1e400", "-0", "0", "1e-10", "1e10", "1e999999",
     "$5", " 5 ", "1,000", "1_000", "0x10", "½", "٣", "5e-9", "1e-9999999999", "-5"]
)  # fmt: skip


# -- budgets ----------------------------------------------------------------------------------

VALID_BUDGET: dict[str, Any] = {
    "scope": "project",
    "name": "acme/churn",
    "limit": "5",
    "period": "month",
    "mode": "hard",
    "thresholds": (0.5, 0.8, 1.0),
    "timezone": "UTC",
    "week_start": 0,
    "unpriced": "refuse",
    "webhook_url": None,
}
NAME_PART = st.one_of(
    st.sampled_from(["acme", "churn", "ana", "*", "", " ", "a b", "x'; DROP TABLE x;--"]),
    st.text(max_size=10),
)
TIMEZONES = st.one_of(
    st.sampled_from(
        ["UTC", "Europe/Berlin", "America", "Etc", "a" * 300, "../UTC", "", " UTC", "Europe/",
         "a\x00b", "America/New_York", "EST5EDT", "Factory", "posixrules", "zone.tab", "\udc80"]
    ),
    st.text(max_size=20),
    st.timezone_keys(),
)  # fmt: skip
BUDGET_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "scope": st.one_of(st.sampled_from(["org", "project", "user", "ORG", "org ", ""]), JUNK),
    "name": st.one_of(st.lists(NAME_PART, min_size=1, max_size=4).map("/".join), JUNK),
    "limit": st.one_of(
        SPECIAL_AMOUNTS,
        NUMBERISH_TEXT,
        st.decimals(allow_nan=True, allow_infinity=True),
        st.floats(),
        st.integers(min_value=-(2**80), max_value=2**80),
        JUNK,
    ),
    "period": st.one_of(
        st.sampled_from(["day", "week", "month", "quarter", "year", "total", "Month", "hour"]),
        JUNK,
    ),
    "mode": st.one_of(st.sampled_from(["hard", "soft", "HARD", ""]), JUNK),
    "thresholds": st.one_of(
        st.lists(
            st.one_of(
                st.floats(), st.decimals(allow_nan=True), st.integers(-2, 2), NUMBERISH_TEXT, JUNK
            ),
            max_size=4,
        ),
        JUNK,
    ),
    "timezone": st.one_of(TIMEZONES, JUNK),
    "week_start": st.one_of(st.integers(-3, 9), JUNK),
    "unpriced": st.one_of(st.sampled_from(["refuse", "allow", "deny"]), JUNK),
    "webhook_url": st.one_of(
        st.sampled_from(["http://127.0.0.1:9/x", "https://", "ftp://x", "javascript:x"]), JUNK
    ),
}


@st.composite
def budget_args(draw: st.DrawFn) -> dict[str, Any]:
    """A valid budget definition with one to three of its fields replaced by junk."""
    args = dict(VALID_BUDGET)
    for key in draw(st.lists(st.sampled_from(sorted(BUDGET_FIELDS)), min_size=1, max_size=3)):
        args[key] = draw(BUDGET_FIELDS[key])
    return args


def _set_budget(args: dict[str, Any]) -> Any:
    a = dict(args)
    return llmspend.set_budget(a.pop("scope"), a.pop("name"), a.pop("limit"), a.pop("period"), **a)


@fuzz(120)
@given(args=budget_args())
@example(args={**VALID_BUDGET, "timezone": "America"})  # a tzdata directory: IsADirectoryError
@example(args={**VALID_BUDGET, "timezone": "a" * 300})  # OSError: file name too long
@example(args={**VALID_BUDGET, "limit": "sNaN"})
@example(args={**VALID_BUDGET, "limit": Decimal("-sNaN")})
@example(args={**VALID_BUDGET, "limit": float("nan")})
@example(args={**VALID_BUDGET, "limit": "1e400"})
@example(args={**VALID_BUDGET, "thresholds": [Decimal("sNaN")]})
@example(args={**VALID_BUDGET, "name": "x'; DROP TABLE llmspend_usage;--"})
def test_set_budget_rejects_junk_and_changes_nothing(
    tracker: Tracker, args: dict[str, Any]
) -> None:
    budget, exc = rejects_cleanly(lambda: _set_budget(args), tracker.store)
    if exc is not None:
        assert isinstance(exc, ValidationError), exc  # BudgetError, or a bad name
        return
    assert budget.limit_usd > 0 and budget.period in ("day", "week", "month", "quarter",
                                                       "year", "total")  # fmt: skip
    assert all(0 < t <= 1 for t in budget.thresholds)
    # what was accepted must be usable: its status can be computed
    rejects_cleanly(lambda: llmspend.budget_status(budget.scope, budget.name))


UPDATE_KEYS = st.sampled_from(
    ["limit", "period", "mode", "thresholds", "timezone", "week_start", "unpriced",
     "webhook_url", "Limit", "limit_usd", "owner", ""]
)  # fmt: skip


@fuzz(60)
@given(
    changes=st.dictionaries(
        UPDATE_KEYS,
        st.one_of(*(BUDGET_FIELDS[k] for k in sorted(BUDGET_FIELDS))),
        min_size=1,
        max_size=3,
    ),
    target=st.one_of(
        st.just(("project", "acme/churn")), st.tuples(BUDGET_FIELDS["scope"], NAME_PART)
    ),
)
@example(changes={"timezone": "America"}, target=("project", "acme/churn"))
@example(changes={"limit": float("inf")}, target=("project", "acme/churn"))
@example(changes={"unknown": 1}, target=("project", "acme/churn"))
@example(changes={"limit": "5"}, target=("project", "acme/nope"))
def test_update_budget_rejects_junk_and_changes_nothing(
    tracker: Tracker, changes: dict[str, Any], target: tuple[Any, Any]
) -> None:
    if not any(b.name == "acme/churn" for b in llmspend.list_budgets("project")):
        llmspend.set_budget("project", "acme/churn", "5")
    scope, name = target
    _, exc = rejects_cleanly(lambda: llmspend.update_budget(scope, name, **changes), tracker.store)
    assert exc is None or isinstance(exc, ValidationError), exc


# -- times and spans --------------------------------------------------------------------------

SPAN_TEXT = st.from_regex(
    r"\A\s?\d{1,22}(\.\d{1,4})?\s?(s|sec|m|min|h|hr|d|day|days|w|wk|week|weeks)\s?\Z"
)


@st.composite
def iso_text(draw: st.DrawFn) -> str:
    """ISO timestamps, including offsets that push them past year 1 or 9999."""
    year = draw(st.integers(1, 9999))
    month, day = draw(st.integers(1, 12)), draw(st.integers(1, 28))
    hh, mm = draw(st.integers(0, 23)), draw(st.integers(0, 59))
    text = f"{year:04d}-{month:02d}-{day:02d}"
    if draw(st.booleans()):
        text += f"T{hh:02d}:{mm:02d}"
        tz = draw(st.one_of(st.none(), st.just("Z"), st.tuples(st.sampled_from("+-"),
                  st.integers(0, 23), st.integers(0, 59))))  # fmt: skip
        if isinstance(tz, tuple):
            text += f"{tz[0]}{tz[1]:02d}:{tz[2]:02d}"
        elif tz:
            text += tz
    return text


WHEN = st.one_of(
    SPAN_TEXT,
    iso_text(),
    st.text(max_size=25),
    st.datetimes(timezones=st.one_of(st.none(), st.timezones())),
    st.dates(),
    JUNK,
)


def _nat() -> Any:
    import pandas as pd

    return pd.NaT


@fuzz(150)
@given(value=WHEN)
@example(value="99999999999d")  # timedelta overflow: OverflowError
@example(value="999999d")  # now - span before year 1: OverflowError
@example(value="0001-01-01T00:00+01:00")  # to UTC before year 1: OverflowError
@example(value="9999-12-31T23:59-01:00")  # to UTC after year 9999: OverflowError
@example(value=dt.datetime(1, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=5))))
@example(value=_nat())  # pandas NaT: StatementError deep in SQLAlchemy
def test_since_until_parse_or_reject(tracker: Tracker, value: Any) -> None:
    from llmspend.timeutil import parse_when

    parsed, exc = rejects_cleanly(lambda: parse_when(value, name="since"))
    assert exc is None or isinstance(exc, ValidationError), exc
    if exc is None and parsed is not None:
        assert isinstance(parsed, dt.datetime) and parsed.tzinfo is None
    for kw in ("since", "until"):
        _, exc = rejects_cleanly(lambda kw=kw: llmspend.records(**{kw: value}))
        assert exc is None or isinstance(exc, ValidationError), exc


FILTER_NAMES = st.one_of(
    st.sampled_from(
        ["org", "project", "user", "provider", "model", "api", "status", "price_status",
         "session_id", "request_id", "limit", "tags", "cost_usd", "ORG", "", "since_"]
    ),
    st.text(max_size=8),
)  # fmt: skip
FILTER_VALUES = st.one_of(
    st.text(max_size=8),
    st.lists(st.one_of(st.text(max_size=5), JUNK), max_size=3),
    st.sampled_from([[], (), "", ["x'; DROP TABLE llmspend_usage;--"], {"a": 1}, -1, "x"]),
    JUNK,
)


@fuzz(100)
@given(filters=st.dictionaries(FILTER_NAMES, FILTER_VALUES, max_size=3))
@example(filters={"limit": "x"})  # passed through to .limit(): ValueError
@example(filters={"limit": 2**70})
@example(filters={"org": []})
@example(filters={"model": ["x'; DROP TABLE llmspend_usage;--"]})
def test_records_filters_reject_junk(tracker: Tracker, filters: dict[str, Any]) -> None:
    frame, exc = rejects_cleanly(lambda: llmspend.records(**filters), tracker.store)
    assert exc is None or isinstance(exc, ValidationError), exc
    if exc is None:
        assert list(frame.columns)[:3] == ["id", "ts", "request_id"]


# -- ingest -----------------------------------------------------------------------------------

GOOD_ROW: dict[str, Any] = {
    "ts": "2024-05-01T12:00:00",
    "provider": "openai",
    "model": "gpt-4o-mini",
    "input_tokens": 1000,
    "cached_input_tokens": 100,
    "output_tokens": 50,
    "reasoning_tokens": 10,
}
ROW_KEYS = st.sampled_from(
    ["ts", "provider", "model", "org", "project", "user", "api", "request_id", "input_tokens",
     "cached_input_tokens", "cache_write_tokens", "output_tokens", "reasoning_tokens",
     "cost_usd", "cost_nanos", "estimate_usd", "status", "price_status", "price_ref",
     "latency_ms", "streamed", "usage_estimated", "tags", "session_id", "notebook_path",
     "error_type", "requested_model", "id"]
)  # fmt: skip
ROW_VALUES = st.one_of(
    st.integers(min_value=-5, max_value=10**6),
    st.integers(min_value=2**53, max_value=2**80),
    st.integers(max_value=-1),
    SPECIAL_AMOUNTS,
    iso_text(),
    st.sampled_from(["ok", "error", "partial", "refused", "bogus", "priced", "imported"]),
    st.sampled_from([["ok"], {"ok": 1}, {"a": {"b": 1}}, '{"a": 1}', "{", {"": 1}]),
    JUNK,
)


@st.composite
def ingest_row(draw: st.DrawFn) -> dict[Any, Any]:
    """A valid row with some fields dropped or replaced by junk, and maybe extra keys."""
    row: dict[Any, Any] = dict(GOOD_ROW)
    for key in draw(st.lists(ROW_KEYS, max_size=4)):
        if draw(st.integers(0, 5)) == 0:
            row.pop(key, None)
        else:
            row[key] = draw(ROW_VALUES)
    row.update(draw(st.dictionaries(st.one_of(st.text(max_size=6), JUNK.filter(_hashable)),
                                    ROW_VALUES, max_size=2)))  # fmt: skip
    return row


def _hashable(v: Any) -> bool:
    try:
        hash(v)
    except TypeError:
        return False
    return True


@fuzz(150)
@given(row=ingest_row())
@example(row={**GOOD_ROW, "status": ["ok"]})  # unhashable: TypeError
@example(row={**GOOD_ROW, "price_status": {}})  # unhashable: TypeError
@example(row={**GOOD_ROW, "cost_usd": "1e30"})  # > BIGINT nanodollars: OverflowError
@example(row={**GOOD_ROW, "cost_usd": "1e999999"})  # decimal.Overflow converting to nanos
@example(row={**GOOD_ROW, "cost_nanos": 2**70})
@example(row={**GOOD_ROW, "estimate_usd": 10**20})
@example(row={**GOOD_ROW, "input_tokens": 2**61, "cached_input_tokens": 0})  # priced > BIGINT
@example(row={**GOOD_ROW, "ts": "0001-01-01T00:00+01:00"})  # OverflowError
@example(row={**GOOD_ROW, "latency_ms": 10**400})  # float(int) OverflowError
@example(row={**GOOD_ROW, "tags": {"a": float("nan")}})  # stored as invalid JSON
@example(row={**GOOD_ROW, "streamed": Decimal("sNaN")})  # InvalidOperation from `in (0, 1)`
@example(row={**GOOD_ROW, "ts": "0999-12-31T00:00"})  # SQLite text '999-12-31 ...' poisons reads
@example(row={k: v for k, v in GOOD_ROW.items() if k != "model"})
def test_ingest_rejects_bad_rows_and_writes_nothing(tracker: Tracker, row: dict[Any, Any]) -> None:
    n_before = len(llmspend.records())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # junk model and provider names have no price
        written, exc = rejects_cleanly(
            lambda: llmspend.ingest([dict(GOOD_ROW), row]), tracker.store
        )
    if exc is not None:
        assert isinstance(exc, IngestError), exc
        assert exc.row == 1, exc  # names the bad row; the good one was not written either
        return
    assert written == 2
    frame = llmspend.records()
    assert len(frame) == n_before + 2
    for _, rec in frame.iterrows():
        tokens = [int(rec[c]) for c in ("input_tokens", "cached_input_tokens",
                  "cache_write_tokens", "output_tokens", "reasoning_tokens")]  # fmt: skip
        assert all(0 <= t < MAX_TOKENS for t in tokens)
        assert tokens[1] + tokens[2] <= tokens[0] and tokens[4] <= tokens[3]
        assert rec["cost_usd"] is None or rec["cost_usd"] >= 0
        for value in rec["tags"].values():  # tags are stored as standard JSON
            assert not (isinstance(value, float) and not math.isfinite(value)), rec["tags"]


@pytest.mark.parametrize("ts", ["0999-12-31T23:59:59", "0001-01-01", "0100-06-01T12:00+00:00"])
def test_ingest_of_an_early_timestamp_keeps_the_store_readable(tracker: Tracker, ts: str) -> None:
    """Accepted is stored readably: on SQLite a year below 1000 was written without its
    leading zeros ('999-12-31 ...'), after which every ``records()`` raised ValueError."""
    try:
        llmspend.ingest([{**GOOD_ROW, "ts": ts}])
    except IngestError:
        return  # refusing such a timestamp is fine too
    frame = llmspend.records()
    assert len(frame) == 1 and frame.iloc[0]["ts"].year == int(ts[:4])
    breakdown = llmspend.analytics.cost_breakdown(since="0001-01-01")  # rollups, too
    assert int(breakdown["calls"].sum()) == 1


@pytest.mark.parametrize(
    "name", ["acme/churn", "x'; DROP TABLE llmspend_usage;--", " padded", "a\nb", "x" * 201]
)
def test_ingest_names_are_validated_like_attribution(tracker: Tracker, name: str) -> None:
    """``org``/``project``/``user`` columns hold bare names (DESIGN §3): ingest must refuse
    what ``attribute()`` and ``install()`` refuse, or the rows can never match a budget."""
    for column in ("org", "project", "user"):
        with pytest.raises(ValidationError), llmspend.attribute(**{column: name}):
            pass
        before = store_snapshot(tracker.store)
        with pytest.raises(IngestError) as info:
            llmspend.ingest([{**GOOD_ROW, column: name}])
        assert info.value.field == column
        assert store_snapshot(tracker.store) == before


# -- price-override files ---------------------------------------------------------------------

VALID_OVERRIDES = b"""
[[model]]
provider = "openai"
id = "my-finetune"
input_mtok = "0.30"
output_mtok = "1.20"
cached_input_mtok = "0.15"
effective = 2025-01-01
max_output_tokens = 16384

[[model.tiers]]
above_input_tokens = 200000
input_mtok = "0.60"

[[alias]]
name = "my-deployment"
model = "gpt-4o"

[[discount]]
provider = "openai"
model = "gpt-4o*"
percent = "12.5"
"""


def toml_value(v: Any) -> str:
    """A TOML rendering of a Python value (strings as JSON, which TOML mostly shares)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        return ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, (dt.date, dt.time)):
        return v.isoformat()
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(x)}" for k, x in v.items()) + "}"
    return json.dumps(str(v))


PRICE_TEXT = st.one_of(
    st.decimals(min_value=-5, max_value=10**6, places=4, allow_nan=False).map(str),
    st.builds(lambda m, e: f"{m}e{e}", st.integers(-9, 9), st.integers(-30, 30)),
    st.sampled_from(["nan", "inf", "-0", "", " ", "1,5", "0.3", "abc"]),
)
TOML_SCALARS = st.one_of(
    st.text(max_size=10),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True).filter(
        lambda f: abs(f) < 1e30 or not math.isfinite(f)
    ),
    st.booleans(),
    st.dates(),
    st.datetimes(),
    st.times(),
    PRICE_TEXT,
)
ENTRY_KEYS = {
    "model": ["provider", "id", "match", "input_mtok", "output_mtok", "cached_input_mtok",
              "cache_write_mtok", "reasoning_mtok", "effective", "max_output_tokens", "tiers",
              "bogus"],
    "alias": ["provider", "name", "model", "bogus"],
    "discount": ["provider", "model", "percent", "bogus"],
    "bogus": ["id"],
}  # fmt: skip


@st.composite
def override_doc(draw: st.DrawFn) -> tuple[str, list[str]]:
    """(TOML text of random entries, the model ids it names)."""
    lines: list[str] = []
    ids: list[str] = []
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(sorted(ENTRY_KEYS)))
        lines.append(f"[[{kind}]]")
        for key in draw(st.lists(st.sampled_from(ENTRY_KEYS[kind]), max_size=6, unique=True)):
            if key == "tiers":
                tier = st.dictionaries(
                    st.sampled_from(["above_input_tokens", "input_mtok", "output_mtok", "x"]),
                    st.one_of(st.integers(-1, 10**6), PRICE_TEXT),
                    max_size=3,
                )
                value: Any = draw(st.lists(tier, max_size=2))
            elif key.endswith("mtok") or key == "percent":
                value = draw(st.one_of(PRICE_TEXT, TOML_SCALARS))
            elif key in ("id", "match", "name", "model", "provider"):
                value = draw(st.one_of(st.sampled_from(["gpt-4o", "m-1", "m*", "[", ""]),
                                       st.text(max_size=8), TOML_SCALARS))  # fmt: skip
                if key == "id" and isinstance(value, str):
                    ids.append(value)
            else:
                value = draw(TOML_SCALARS)
            lines.append(f"{key} = {toml_value(value)}")
    return "\n".join(lines) + "\n", ids


def _load_book(path: Path | str) -> Any:
    from llmspend.pricing import PriceBook

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return PriceBook(path)


def _assert_book_loads_or_names_file(path: Path) -> Any:
    book, exc = rejects_cleanly(lambda: _load_book(path), kinds=(PriceFileError,))
    if exc is not None:
        assert str(path) in str(exc), exc  # the message names the file
    return book


@fuzz(120)
@given(doc=override_doc())
def test_override_entries_load_or_name_the_file(tmp_path: Path, doc: tuple[str, list[str]]) -> None:
    text, ids = doc
    path = tmp_path / "prices.toml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    book = _assert_book_loads_or_names_file(path)
    if book is None:
        return
    for model in [*ids, "gpt-4o", "gpt-4o-mini"]:  # what loaded also prices (or says why not)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            price, exc = rejects_cleanly(
                lambda m=model: book.price(m, input_tokens=250_000, output_tokens=10)
            )
        assert exc is None or isinstance(exc, PricingError), exc
        if price is not None and price.total_usd is not None:
            assert price.total_usd >= 0


@st.composite
def garbled(draw: st.DrawFn) -> bytes:
    """A valid override file with random bytes replaced, inserted or cut."""
    data = bytearray(VALID_OVERRIDES)
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        cut = draw(st.integers(0, 8))
        data[at : at + cut] = draw(st.binary(max_size=6))
    return bytes(data)


@fuzz(120)
@given(data=st.one_of(garbled(), st.binary(max_size=64)))
@example(data=b"\xff\xfe[[model]]\n")  # not UTF-8: UnicodeDecodeError
@example(data=b"a = " + b"[" * 5000 + b"]" * 5000)  # deep nesting: RecursionError
@example(data=b"a = " + b"{b=" * 3000 + b"1" + b"}" * 3000)
def test_garbled_override_files_load_or_name_the_file(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "prices.toml"
    path.write_bytes(data)
    _assert_book_loads_or_names_file(path)


@pytest.mark.parametrize("amount", ["1e999999999", "1e-999999999", "1e40", "1e-40"])
def test_absurd_prices_are_refused_when_the_file_is_read(tmp_path: Path, amount: str) -> None:
    """A price of 10^999999999 loads today and then hangs the first call it prices
    (``Fraction`` of a billion-digit integer): refuse absurd magnitudes at load time."""
    path = tmp_path / "prices.toml"
    path.write_bytes(VALID_OVERRIDES.replace(b'"0.30"', f'"{amount}"'.encode()))
    with pytest.raises(PriceFileError) as info:
        _load_book(path)
    assert str(path) in str(info.value) and "input_mtok" in str(info.value)


@pytest.mark.parametrize("name", ["a\x00b.toml", "dir"])
def test_unreadable_override_path_is_a_price_file_error(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    if name == "dir":
        path.mkdir()
    with pytest.raises(PriceFileError):  # "a\x00b": ValueError (embedded null byte)
        _load_book(path)


# -- configuration ----------------------------------------------------------------------------

PASSWORD = "PW-MARKER-31d9"
SAFE_NAME = st.text(alphabet="abcdefgh0123_-.%@:?=&[] \x00", max_size=10)


@st.composite
def database_url(draw: st.DrawFn, tmp: str) -> str:
    """Junk URLs that can only touch ``tmp`` (SQLite) or refused ports on 127.0.0.1."""
    kind = draw(st.integers(0, 2))
    if kind == 0:  # SQLite, files only under tmp
        scheme = draw(st.sampled_from(["sqlite", "sqlite+pysqlite", "sqlite+nodriver", "sqlite3"]))
        name = draw(SAFE_NAME)
        query = draw(
            st.sampled_from(
                [
                    "",
                    "?mode=ro",
                    "?timeout=x",
                    "?uri=true",
                    "?a=%ZZ",
                    "?check_same_thread=maybe",
                    "?cached_statements=x",
                ]
            )
        )
        return f"{scheme}:///{tmp}/{name}{query}"
    if kind == 1:  # server URLs: refused or malformed ports on loopback only
        scheme = draw(
            st.sampled_from(
                [
                    "postgresql",
                    "postgres",
                    "postgresql+psycopg",
                    "mysql",
                    "postgresql+asyncpg",
                    "mssql",
                    "http",
                    "oracle+cx",
                ]
            )
        )
        from urllib.parse import quote

        user = quote(draw(st.text(max_size=6)), safe="")
        db = quote(draw(st.text(max_size=6)), safe="")
        host = draw(
            st.sampled_from(
                [
                    "127.0.0.1:1",
                    "[::1:5",
                    "127.0.0.1:99999",
                    "127.0.0.1:abc",
                    "127.0.0.1:-1",
                    "[127.0.0.1]:1",
                ]
            )
        )
        return f"{scheme}://{user}:{PASSWORD}@{host}/{db}"
    text = draw(st.text(max_size=20).filter(lambda s: "://" not in s and "sqlite" not in s))
    return text


@fuzz(60)
@given(data=st.data())
def test_database_url_junk_is_a_config_or_store_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, data: st.DataObject
) -> None:
    from llmspend.store.engine import forget_store

    monkeypatch.chdir(tmp_path)  # relative SQLite paths land in the temporary directory
    url = data.draw(database_url(str(tmp_path)), label="url")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. SQLAlchemy ignoring an unknown query argument
        if "\x00" in url:  # the environment cannot hold it: the argument can
            tracker, exc = rejects_cleanly(lambda: Tracker(url))
        else:
            monkeypatch.setenv("LLMSPEND_DATABASE_URL", url)
            tracker, exc = rejects_cleanly(lambda: Tracker())
    if exc is not None:
        assert isinstance(exc, ConfigError | llmspend.StoreError), exc
        assert PASSWORD not in str(exc), f"the error shows the password: {exc}"
    else:
        assert PASSWORD not in repr(tracker)
        forget_store(tracker.settings.database_url)


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql+psycopg://u:{PASSWORD}@[::1:5/x",  # ValueError from the port
        f"postgresql://u:{PASSWORD}@127.0.0.1:abc/x",
        "sqlite:///{tmp}/a\x00b.sqlite",  # ValueError: embedded null byte
        "sqlite:///{tmp}/a.sqlite?timeout=x",  # ValueError from the driver's arguments
    ],
)
def test_malformed_urls_are_config_errors(tmp_path: Path, url: str) -> None:
    with pytest.raises(ConfigError) as info:
        Tracker(url.replace("{tmp}", str(tmp_path)))
    assert PASSWORD not in str(info.value)


LEASES = st.one_of(
    st.sampled_from(["inf", "1e308", "1e400", "nan", "-0", "0.0", "1e-320", "١٠", "1_0",
                     " 30 ", "30s", "", "0x10", "-inf", "9" * 400]),
    st.floats().map(repr),
    st.text(max_size=8).filter(lambda t: "\x00" not in t),  # an environment cannot hold NUL
)  # fmt: skip


@fuzz(60)
@given(raw=LEASES)
@example(raw="inf")  # accepted, then now + timedelta(inf): OverflowError at every call
@example(raw="1e308")
def test_lease_seconds_is_a_usable_duration_or_a_config_error(
    monkeypatch: pytest.MonkeyPatch, raw: str
) -> None:
    from llmspend.budgets.holds import lease_seconds
    from llmspend.timeutil import utcnow

    if raw:
        monkeypatch.setenv("LLMSPEND_LEASE_SECONDS", raw)
    else:
        monkeypatch.delenv("LLMSPEND_LEASE_SECONDS", raising=False)
    value, exc = rejects_cleanly(lease_seconds)
    if exc is not None:
        assert isinstance(exc, ConfigError), exc
        return
    assert math.isfinite(value) and value > 0
    utcnow() + dt.timedelta(seconds=value)  # the lease a reservation gets must exist


@pytest.mark.parametrize("raw", ["inf", "1e300"])
def test_absurd_lease_fails_closed_at_call_time(
    installed: Tracker, monkeypatch: pytest.MonkeyPatch, raw: str
) -> None:
    """A budgeted call under a bad ``LLMSPEND_LEASE_SECONDS`` is refused with an
    ``LLMSpendError`` (nothing sent), never an ``OverflowError`` from deep inside."""
    from llmspend.pipeline import begin_call

    llmspend.set_budget("project", "acme/churn", "5")
    before = store_snapshot(installed.store)
    monkeypatch.setenv("LLMSPEND_LEASE_SECONDS", raw)
    try:
        call = begin_call("openai", "chat.completions", "gpt-4o-mini", input_tokens=10,
                          max_output_tokens=10)  # fmt: skip
    except LLMSpendError:
        assert store_snapshot(installed.store) == before
        return
    assert call is not None  # or it is accepted, with a usable lease
    call.finish(Usage(10, 0, 0, 10, 0))
    (status,) = llmspend.budget_status("project", "acme/churn")
    assert status.reserved_usd == 0


# -- provider usage payloads ------------------------------------------------------------------

COUNT = st.one_of(
    st.integers(min_value=0, max_value=10**6),
    st.integers(min_value=2**53, max_value=2**80),
    st.integers(min_value=-(2**70), max_value=-1),
    st.none(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(alphabet="0123456789-.", max_size=5),
    st.booleans(),
    st.decimals(allow_nan=False, allow_infinity=False, places=0),
    st.lists(st.integers(0, 9), max_size=2),
)


def _details(*keys: str) -> st.SearchStrategy[Any]:
    return st.one_of(st.fixed_dictionaries({}, optional={k: COUNT for k in (*keys, "x")}), COUNT)


OPENAI_USAGE = st.fixed_dictionaries(
    {},
    optional={
        "prompt_tokens": COUNT,
        "completion_tokens": COUNT,
        "total_tokens": COUNT,
        "input_tokens": COUNT,
        "output_tokens": COUNT,
        "prompt_tokens_details": _details("cached_tokens", "cache_write_tokens"),
        "completion_tokens_details": _details("reasoning_tokens"),
        "input_tokens_details": _details("cached_tokens", "cache_write_tokens"),
        "input_token_details": _details("cached_tokens"),
        "output_tokens_details": _details("reasoning_tokens"),
        "type": st.sampled_from(["tokens", "duration", None]),
    },
)
GEMINI_KEYS = (
    "prompt_token_count", "candidates_token_count", "thoughts_token_count",
    "cached_content_token_count", "tool_use_prompt_token_count", "total_token_count",
)  # fmt: skip


def _camel(snake: str) -> str:
    head, *rest = snake.split("_")
    return head + "".join(w.title() for w in rest)


GEMINI_USAGE = st.fixed_dictionaries(
    {}, optional={**{k: COUNT for k in GEMINI_KEYS}, **{_camel(k): COUNT for k in GEMINI_KEYS}}
)


def assert_consistent(u: Usage | None) -> None:
    """None (then llmspend estimates), or counts a store can hold, subsets within totals."""
    if u is None:
        return
    values = (u.input_tokens, u.cached_input_tokens, u.cache_write_tokens, u.output_tokens,
              u.reasoning_tokens)  # fmt: skip
    assert all(type(v) is int and 0 <= v < MAX_TOKENS for v in values), u
    assert u.cached_input_tokens + u.cache_write_tokens <= u.input_tokens, u
    assert u.reasoning_tokens <= u.output_tokens, u


@fuzz(300)
@given(
    usage=st.one_of(OPENAI_USAGE, JUNK),
    extra=st.dictionaries(st.text(max_size=5), COUNT, max_size=2),
    api=st.sampled_from(["chat.completions", "responses", "embeddings", "", "audio.speech"]),
    as_model=st.booleans(),
)
@example(
    usage={
        "prompt_tokens": 5,
        "completion_tokens": 1,
        "prompt_tokens_details": {"cached_tokens": 10},
    },
    extra={},
    api="chat.completions",
    as_model=False,
)  # cached > input
@example(
    usage={
        "prompt_tokens": 5,
        "completion_tokens": 1,
        "completion_tokens_details": {"reasoning_tokens": 9},
    },
    extra={},
    api="chat.completions",
    as_model=False,
)  # reasoning > output
@example(
    usage={"prompt_tokens": 2**64, "completion_tokens": 1},
    extra={},
    api="chat.completions",
    as_model=False,
)  # does not fit the store
def test_openai_usage_never_raises_and_is_consistent(
    usage: Any, extra: dict[str, Any], api: str, as_model: bool
) -> None:  # fmt: skip
    from llmspend.dialects.openai import normalize_usage

    payload = {**usage, **extra} if isinstance(usage, dict) else usage
    if as_model and isinstance(payload, dict):
        from openai.types import CompletionUsage

        payload = CompletionUsage.model_construct(**payload)  # an SDK object, unvalidated
    assert_consistent(normalize_usage(payload, api))


@fuzz(300)
@given(usage=st.one_of(GEMINI_USAGE, JUNK), as_model=st.booleans())
@example(usage={"prompt_token_count": 5, "cached_content_token_count": 10}, as_model=False)
@example(usage={"promptTokenCount": 5, "candidatesTokenCount": 2**64}, as_model=False)
def test_gemini_usage_never_raises_and_is_consistent(usage: Any, as_model: bool) -> None:
    from llmspend.dialects.gemini import parse_usage, usage_of

    payload = usage
    if as_model and isinstance(usage, dict):
        from google.genai import types

        snake = {k: v for k, v in usage.items() if k in GEMINI_KEYS}
        payload = types.GenerateContentResponseUsageMetadata.model_construct(**snake)
    assert_consistent(parse_usage(payload))
    assert_consistent(usage_of({"usage_metadata": payload}))


class _Rewrite:
    """An httpx2 transport to the simulator that rewrites the response's ``usage``."""

    def __init__(self, sim: Any, usage: dict[str, Any]) -> None:
        import httpx2

        self._sim = sim
        self._inner = httpx2.HTTPTransport()
        self._usage = usage

    def handle_request(self, request: Any) -> Any:
        import httpx2

        request.url = request.url.copy_with(scheme="http", host="127.0.0.1", port=self._sim.port)
        response = self._inner.handle_request(request)
        body = json.loads(response.read())
        body["usage"].update(self._usage)
        headers = {k: v for k, v in response.headers.items() if k.lower() != "content-length"}
        return httpx2.Response(response.status_code, headers=headers, json=body)

    def close(self) -> None:
        self._inner.close()


@pytest.mark.parametrize(
    "usage",
    [{"prompt_tokens": 2**64}, {"prompt_tokens": 2**61, "completion_tokens": 2**61}],
    ids=["tokens-overflow-bigint", "cost-overflows-bigint"],
)
def test_absurd_wire_usage_is_still_recorded_once_and_releases_the_budget(
    installed: Tracker, fresh_sim: Any, usage: dict[str, Any]
) -> None:
    """A provider reporting more tokens than the store can hold: the call is still
    recorded (once, its usage treated as malformed), and the reservation is released."""
    import httpx2
    import openai

    llmspend.set_budget("project", "acme/churn", "100", mode="soft")
    client = openai.OpenAI(
        api_key="x", base_url="http://sim.invalid/v1", max_retries=0,
        http_client=httpx2.Client(transport=_Rewrite(fresh_sim, usage)),  # type: ignore[arg-type]
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
        )
    client.close()
    frame = llmspend.records()
    assert len(frame) == 1, "the call was not recorded"
    row = frame.iloc[0]
    assert row["status"] == "ok" and 0 <= int(row["input_tokens"]) < MAX_TOKENS
    (status,) = llmspend.budget_status("project", "acme/churn")
    assert status.reserved_usd == 0 and status.spent_usd == (row["cost_usd"] or 0)


# -- price() ----------------------------------------------------------------------------------

TOKENS = st.one_of(
    st.integers(min_value=0, max_value=10**7),
    st.integers(min_value=-(2**64), max_value=2**80),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
    st.text(max_size=4),
    st.decimals(allow_nan=True),
)
MODELS = st.one_of(
    st.sampled_from(["gpt-4o-mini", "gpt-4o", "o3", "gemini-2.5-pro", "grok-3",
                     "models/gemini-2.5-flash", "ft:gpt-4o-mini:acme::x", "", "[*"]),
    st.text(max_size=12),
    JUNK,
)  # fmt: skip
TOKEN_ARGS = (
    "input_tokens", "cached_input_tokens", "cache_write_tokens", "output_tokens",
    "reasoning_tokens",
)  # fmt: skip


@fuzz(200)
@given(
    model=MODELS,
    provider=st.one_of(st.none(), st.sampled_from(["openai", "google", "xai", "azure", ""]), JUNK),
    tokens=st.fixed_dictionaries({}, optional={k: TOKENS for k in TOKEN_ARGS}),
    at=st.one_of(st.none(), WHEN),
)
def test_price_rejects_bad_token_arguments(
    tracker: Tracker, model: Any, provider: Any, tokens: dict[str, Any], at: Any
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        price, exc = rejects_cleanly(
            lambda: llmspend.price(model, provider=provider, at=at, **tokens)
        )
    if exc is not None:
        assert isinstance(exc, PricingError), exc
        return
    got = {k: tokens.get(k, 0) for k in TOKEN_ARGS}
    assert all(type(v) is int and v >= 0 for v in got.values())
    # a subset larger than its total is an error (DESIGN §3), so this usage was consistent
    assert got["cached_input_tokens"] + got["cache_write_tokens"] <= got["input_tokens"]
    assert got["reasoning_tokens"] <= got["output_tokens"]
    assert price.status in ("priced", "unknown", "override")
    if price.total_usd is not None:
        assert price.total_usd >= 0 and price.input_usd >= 0 and price.output_usd >= 0


# -- %budget and %spend -----------------------------------------------------------------------

MAGIC_WORDS = st.sampled_from(
    ["org", "project", "user", "acme", "acme/churn", "acme/*", "acme/churn/ana", "5", "$5",
     "-5", "5/day", "5/fortnight", "NaN/month", "1e999", "--hard", "--soft", "--alert",
     "50,80,100", "none", "0,200", "--tz", "America", "Europe/Paris", "--week-start", "mon",
     "9", "--unpriced", "allow", "--webhook", "http://127.0.0.1:9/h", "--since", "7d",
     "99999999999d", "0001-01-01T00:00+01:00", "--all", "--until", "--by", "model,,user",
     "tag:x", "--org", "--project", "--user", "--tag", "k=v", "=v", "--clear-tags", "--min",
     "-1", "on", "off", "'quoted", '"x y"', "--", "-", "%", "99999999999999999999", "#3"]
)  # fmt: skip
ONE_LINE = st.text(  # what can be typed on a magic's line (no line or paragraph breaks)
    st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), max_size=6
)
MAGIC_ARGS = st.lists(st.one_of(MAGIC_WORDS, ONE_LINE), max_size=6).map(" ".join)
BUDGET_CMDS = st.sampled_from(
    ["set", "update", "status", "list", "history", "delete", "alerts", "ack", "sett", ""]
)
SPEND_CMDS = st.sampled_from(["context", "last", "cell", "report", "quiet", "lsat", ""])


@pytest.fixture
def shell(installed: Tracker) -> Iterator[Any]:
    """One IPython shell with llmspend loaded on the ``installed`` store; every setting a
    magic can change is put back afterwards."""
    from llmspend.notebook import commands
    from llmspend.notebook.cellcost import cell_cost

    ip = plain_shell()
    ip.run_cell("%load_ext llmspend", store_history=False)
    saved = (installed.defaults, cell_cost.enabled, cell_cost.min_usd, dict(commands.default_tags))
    yield ip
    org, project, user = saved[0]
    installed.set_defaults(org=org, project=project, user=user)
    cell_cost.enabled, cell_cost.min_usd = saved[1], saved[2]
    commands.default_tags.clear()
    commands.default_tags.update(saved[3])
    ip.run_cell("%unload_ext llmspend", store_history=False)


@fuzz(80)
@given(
    line=st.one_of(
        st.tuples(st.just("budget"), BUDGET_CMDS, MAGIC_ARGS),
        st.tuples(st.just("spend"), SPEND_CMDS, MAGIC_ARGS),
    )
)
@example(line=("budget", "set", "org acme 5 --tz America"))  # IsADirectoryError escapes
@example(line=("budget", "alerts", "--since 99999999999d"))  # OverflowError escapes
@example(line=("budget", "ack", "99999999999999999999"))
@example(line=("spend", "report", "--since 0001-01-01T00:00+01:00"))
@example(line=("spend", "last", "99999999999999999999"))
@example(line=("budget", "set", "project acme/churn 1e999/month"))
def test_magic_arguments_give_usage_errors_only(shell: Any, line: tuple[str, str, str]) -> None:
    from IPython.core.error import UsageError
    from IPython.utils.capture import capture_output

    magic, command, rest = line
    cell = f"%{magic} {command} {rest}".rstrip()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        before = store_snapshot(get_tracker().store)
        with capture_output():
            result = shell.run_cell(cell, store_history=False)
    assert result.error_before_exec is None, (cell, result.error_before_exec)
    err = result.error_in_exec
    if err is None:
        return
    assert isinstance(err, UsageError), f"{cell!r} raised {type(err).__name__}: {err}"
    assert str(err).strip() and "\n" not in str(err), cell
    assert store_snapshot(get_tracker().store) == before, cell
