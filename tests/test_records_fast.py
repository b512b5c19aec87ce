"""records(): the Arrow read path is exact to the nanodollar, filters and ``columns=`` are
pushed down and give what pandas filtering gives, ``as_="arrow"`` is the same data."""

from __future__ import annotations

import datetime as dt
import importlib.util
import random
from decimal import Decimal

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest

import llmspend
from llmspend.errors import ValidationError
from llmspend.money import nanos_to_usd
from llmspend.usage import RECORD_COLUMNS

MODELS = [("openai", "gpt-4o-mini"), ("google", "gemini-2.5-flash"), ("anthropic", "claude-x")]


def _rows(n: int, seed: int = 5) -> list[dict]:
    rnd = random.Random(seed)
    start = dt.datetime(2026, 5, 1)
    rows = []
    for i in range(n):
        provider, model = rnd.choice(MODELS)
        inp = rnd.randint(1, 10**6)
        row = {
            # out of time order, with ties, so the read path must sort by (ts, id)
            "ts": start + dt.timedelta(minutes=rnd.randint(0, 60 * 24 * 40)),
            "provider": provider,
            "model": model,
            "org": rnd.choice(["acme", "umbrella"]),
            "project": rnd.choice(["churn", "search", "ads"]),
            "user": rnd.choice(["ana", "bo", "cy", "dee"]),
            "input_tokens": inp,
            "cached_input_tokens": rnd.randint(0, inp),
            "output_tokens": rnd.randint(0, 5000),
            "cost_usd": rnd.choice(
                [
                    Decimal(rnd.randint(0, 10**13)).scaleb(-9),
                    Decimal(rnd.randint(0, 1000)),
                    Decimal("0.0000015"),
                    Decimal(0),
                ]
            ),
            "status": rnd.choice(["ok", "ok", "error"]),
            "latency_ms": rnd.choice([None, rnd.random() * 5000]),
        }
        if i % 5 == 0:
            row["tags"] = {"team": rnd.choice(["red", "blue"]), "n": rnd.randint(1, 3)}
        if i % 7 == 0:
            row["request_id"] = f"req-{i}"
        if i % 11 == 0:  # unknown price: no cost
            row["cost_usd"] = None
            row["price_status"] = "unknown"
        rows.append(row)
    return rows


@pytest.fixture
def loaded(tracker):  # type: ignore[no-untyped-def]
    llmspend.ingest(_rows(2500))
    return tracker


def _stored(tracker) -> dict[int, int | None]:  # type: ignore[no-untyped-def]
    with tracker.store.begin() as conn:
        rows = conn.exec_driver_sql("SELECT id, cost_nanos FROM llmspend_usage").all()
    return {int(i): (None if c is None else int(c)) for i, c in rows}


def test_costs_equal_the_stored_nanodollars(loaded) -> None:  # type: ignore[no-untyped-def]
    frame = llmspend.records()
    stored = _stored(loaded)
    assert len(frame) == len(stored) == 2500
    assert frame["cost_usd"].dtype == object
    for i, cost in zip(frame["id"], frame["cost_usd"], strict=True):
        want = nanos_to_usd(stored[i])
        if want is None:
            assert cost is None
        else:  # the same value, written the same way (no trailing zeros)
            assert isinstance(cost, Decimal) and cost.as_tuple() == want.as_tuple()
    total = sum((c for c in frame["cost_usd"] if c is not None), Decimal(0))
    assert total == nanos_to_usd(sum(c for c in stored.values() if c is not None))


def test_order_is_ts_then_id(loaded) -> None:  # type: ignore[no-untyped-def]
    frame = llmspend.records()
    keys = list(zip(frame["ts"], frame["id"], strict=True))
    assert keys == sorted(keys)
    assert str(frame["ts"].dtype) == "datetime64[us, UTC]"


def test_filters_and_columns_equal_pandas_filtering(loaded) -> None:  # type: ignore[no-untyped-def]
    full = llmspend.records()
    rnd = random.Random(11)
    for _ in range(12):
        since = dt.datetime(2026, 5, 1) + dt.timedelta(days=rnd.randint(0, 30))
        until = since + dt.timedelta(days=rnd.randint(1, 15))
        flt: dict = {}
        if rnd.random() < 0.6:
            flt["org"] = rnd.choice(["acme", ["acme", "umbrella"]])
        if rnd.random() < 0.6:
            flt["model"] = rnd.choice([m for _, m in MODELS])
        if rnd.random() < 0.4:
            flt["user"] = ["ana", "cy"]
        cols = rnd.sample(list(RECORD_COLUMNS), rnd.randint(1, 8))
        got = llmspend.records(since, until, columns=cols, **flt)
        want = full[
            (full["ts"] >= pd.Timestamp(since, tz="UTC"))
            & (full["ts"] < pd.Timestamp(until, tz="UTC"))
        ]
        for name, value in flt.items():
            want = want[want[name].isin(value if isinstance(value, list) else [value])]
        assert list(got.columns) == cols
        pd.testing.assert_frame_equal(got.reset_index(drop=True), want[cols].reset_index(drop=True))


def test_arrow_is_the_same_data_with_exact_decimal_money(loaded) -> None:  # type: ignore[no-untyped-def]
    table = llmspend.records(as_="arrow")
    frame = llmspend.records()
    assert isinstance(table, pa.Table)
    assert table.column_names == list(RECORD_COLUMNS)
    assert table.schema.field("cost_usd").type == pa.decimal128(38, 9)
    assert table.schema.field("ts").type == pa.timestamp("us", tz="UTC")
    assert table.column("id").to_pylist() == frame["id"].tolist()
    costs = table.column("cost_usd").to_pylist()
    assert costs == frame["cost_usd"].tolist()  # equal values (Arrow keeps scale 9)
    total = pc.sum(table.column("cost_usd")).as_py()
    assert total == sum((c for c in frame["cost_usd"] if c is not None), Decimal(0))
    tags = [{} if t is None else t for t in table.column("tags").to_pylist()]
    assert [llmspend_json(t) for t in tags] == frame["tags"].tolist()
    narrow = llmspend.records(as_="arrow", columns=["model", "cost_usd"], org="acme")
    assert narrow.column_names == ["model", "cost_usd"]
    assert narrow.num_rows == int((frame["org"] == "acme").sum())


def llmspend_json(text: object) -> dict:
    import json

    return text if isinstance(text, dict) else json.loads(str(text))


def test_empty_and_bad_arguments(tracker) -> None:  # type: ignore[no-untyped-def]
    empty = llmspend.records()
    assert empty.empty and list(empty.columns) == list(RECORD_COLUMNS)
    assert llmspend.records(as_="arrow").num_rows == 0
    none = llmspend.records(as_="pandas-arrow")
    assert none.empty and list(none.columns) == list(RECORD_COLUMNS)
    with pytest.raises(ValidationError, match="columns"):
        llmspend.records(columns=["nope"])
    with pytest.raises(ValidationError, match="as_"):
        llmspend.records(as_="excel")
    with pytest.raises(ValidationError, match="unknown filter"):
        llmspend.records(colour="red")


@pytest.mark.skipif(importlib.util.find_spec("polars") is not None, reason="polars installed")
def test_polars_without_polars_says_what_to_install(tracker) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValidationError, match="pip install polars"):
        llmspend.records(as_="polars")


@pytest.fixture
def loaded_pg(pg_server):  # type: ignore[no-untyped-def]
    from llmspend.store.engine import forget_store
    from llmspend.tracker import Tracker, set_tracker

    url = pg_server.create_database()
    tracker = Tracker(url, org="acme", project="churn", user="ana")
    set_tracker(tracker)
    llmspend.ingest(_rows(2500))
    yield tracker
    set_tracker(None)
    forget_store(url)


@pytest.mark.postgres
@pytest.mark.skipif(importlib.util.find_spec("connectorx") is None, reason="needs connectorx")
def test_connectorx_read_equals_the_copy_read(loaded_pg, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """PostgreSQL (connectorx serves only PostgreSQL): connectorx reads what COPY reads,
    filters given as literals included (quotes and backslashes in a filter value stay
    text)."""
    from llmspend.store import arrowio

    cases: list[dict] = [
        {},
        {"org": ["acme", "o'b\\\\'; --"], "model": "gpt-4o-mini"},
        {"since": "2026-05-03", "until": dt.datetime(2026, 5, 20), "user": ["ana", "cy"]},
        {"columns": ["ts", "org", "cost_usd", "tags"], "project": "ads"},
        {"as_": "arrow"},
    ]
    used = []
    real = arrowio._read_connectorx

    def spy(*args, **kwargs):  # type: ignore[no-untyped-def]
        out = real(*args, **kwargs)
        used.append(out is not None)
        return out

    monkeypatch.setattr(arrowio, "_read_connectorx", spy)
    fast = [llmspend.records(**kw) for kw in cases]
    assert used == [True] * len(cases)
    monkeypatch.setattr(arrowio, "have_connectorx", lambda: False)
    slow = [llmspend.records(**kw) for kw in cases]
    assert 0 < len(fast[1]) < len(fast[0])
    for got, want in zip(fast[:-1], slow[:-1], strict=True):
        pd.testing.assert_frame_equal(got, want)
        for a, b in zip(got.get("cost_usd", []), want.get("cost_usd", []), strict=True):
            assert (a is None and b is None) or a.as_tuple() == b.as_tuple()
    assert fast[-1].equals(slow[-1])


def _awkward_rows() -> list[dict]:
    """Text that is hard to carry (quotes, backslashes, newlines, commas, non-ASCII),
    floats that need 17 digits, amounts from a nanodollar to a billion dollars."""
    rows = _rows(300, seed=9)
    texts = ["it's", 'say "hi"', "a\\b", "two\nlines", "x,y", "café ☕", "NULL", "'"]
    for i, row in enumerate(rows):
        text = texts[i % len(texts)]
        row["request_id"] = f"{text}-{i}"
        row["notebook_path"] = text
        row["error_type"] = None if i % 3 else text
        row["latency_ms"] = [0.1 + 0.2, 1 / 3, 1e-7, None, 123.456][i % 5]
        if i % 4 == 0:
            row["tags"] = {"note": text, "n": i}
        row["cost_usd"] = [
            Decimal("0.000000001"), Decimal("999999999.999999999"), Decimal("0.0000015"),
            Decimal(3), Decimal(0), None, Decimal("100"), Decimal("12.34"),
        ][i % 8]  # fmt: skip
        if row["cost_usd"] is None:
            row["price_status"] = "unknown"
    return rows


def test_the_arrow_read_equals_the_plain_row_read(tracker, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """records() through Arrow (SQLite: in chunks, here of 7 rows) gives the frame the
    plain row path gives (pyarrow absent): the same values, dtypes and Decimal digits;
    equal amounts share one Decimal, and each row's tags are its own dict."""
    from llmspend.store import arrowio

    llmspend.ingest(_awkward_rows())
    monkeypatch.setattr(arrowio, "_SQLITE_CHUNK", 7)
    cases: list[dict] = [{}, {"columns": ["cost_usd", "tags", "notebook_path"], "org": "acme"}]
    fast = [llmspend.records(**kw) for kw in cases]
    monkeypatch.setattr(arrowio, "have_pyarrow", lambda: False)
    slow = [llmspend.records(**kw) for kw in cases]
    for got, want in zip(fast, slow, strict=True):
        assert len(got) > 0
        pd.testing.assert_frame_equal(got, want, check_exact=True)  # floats bit for bit
        for a, b in zip(got["cost_usd"], want["cost_usd"], strict=True):
            assert (a is None and b is None) or a.as_tuple() == b.as_tuple()
    frame = fast[0]
    threes = [c for c in frame["cost_usd"] if c == 3]
    assert len(threes) > 1 and all(c is threes[0] for c in threes)
    tags = frame["tags"].tolist()
    assert len({id(t) for t in tags}) == len(tags)
    tags[0]["mutated"] = True
    assert all("mutated" not in t for t in tags[1:])


def test_pandas_arrow_is_the_arrow_table_as_a_frame_with_exact_money(loaded) -> None:  # type: ignore[no-untyped-def]
    """as_="pandas-arrow": a DataFrame of Arrow-backed columns holding the Arrow read's
    data; money's elements are Decimal and its sums (whole and grouped) are exact."""
    table = llmspend.records(as_="arrow")
    frame = llmspend.records(as_="pandas-arrow")
    ref = llmspend.records()
    assert isinstance(frame, pd.DataFrame) and list(frame.columns) == list(RECORD_COLUMNS)
    assert frame["cost_usd"].dtype == pd.ArrowDtype(pa.decimal128(38, 9))
    assert pa.Table.from_pandas(frame, preserve_index=False).equals(table)
    costs = [c for c in ref["cost_usd"] if c is not None]
    total = frame["cost_usd"].sum()
    assert isinstance(total, Decimal) and total == sum(costs, Decimal(0))
    first = frame["cost_usd"].dropna().iloc[0]
    assert isinstance(first, Decimal) and first == costs[0]
    by_model = frame.groupby("model")["cost_usd"].sum()
    want = ref.dropna(subset=["cost_usd"]).groupby("model")["cost_usd"].sum()
    assert {m: Decimal(v) for m, v in by_model.items()} == dict(want.items())
    narrow = llmspend.records(as_="pandas-arrow", columns=["org", "cost_usd"], org="acme")
    assert list(narrow.columns) == ["org", "cost_usd"]
    assert len(narrow) == int((ref["org"] == "acme").sum())
