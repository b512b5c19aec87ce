"""Found by using the data side as a demanding user would: hour buckets across a half-hour
DST change, numpy token counts in ``price()``, and ``ingest()``'s message for a time out of
range."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from zoneinfo import ZoneInfo

import pandas as pd
import pytest

import llmspend
from llmspend import analytics

UTC = dt.UTC
LORD_HOWE = ZoneInfo("Australia/Lord_Howe")  # DST moves its clocks by half an hour


@pytest.mark.parametrize(
    ("since", "until"),
    [
        (dt.datetime(2026, 4, 4, 12, 0), dt.datetime(2026, 4, 4, 20, 0)),  # 02:00 → 01:30
        (dt.datetime(2026, 10, 3, 12, 30), dt.datetime(2026, 10, 3, 20, 30)),  # 02:00 → 02:30
    ],
)
def test_hour_buckets_stay_on_whole_local_hours_across_a_half_hour_dst_change(
    tracker, since: dt.datetime, until: dt.datetime
) -> None:  # type: ignore[no-untyped-def]
    rows = [
        {
            "ts": since + dt.timedelta(minutes=7 * k),
            "provider": "openai",
            "model": "gpt-4o-mini",
            "input_tokens": 10,
            "output_tokens": k,
            "cost_usd": Decimal(k).scaleb(-6),
        }
        for k in range((until - since) // dt.timedelta(minutes=7))
    ]
    llmspend.ingest(rows)
    trend = analytics.spending_trends("hour", since=since, until=until, tz="Australia/Lord_Howe")
    starts = [p.to_pydatetime() for p in trend["period"]]
    assert all(s.minute == 0 and s.second == 0 for s in starts), starts  # whole local hours
    # every row is in exactly one bucket: [start, next start), the last up to until
    edges = [s.astimezone(UTC).replace(tzinfo=None) for s in starts] + [until]
    df = llmspend.records()
    ts = df["ts"].dt.tz_convert(None)
    for i, start in enumerate(starts):
        part = df[(ts >= edges[i]) & (ts < edges[i + 1])]
        row = trend.iloc[i]
        assert row["calls"] == len(part), start
        assert row["cost_usd"] == sum(part["cost_usd"], Decimal(0))
    assert trend["calls"].sum() == len(rows)
    # a local hour lasts an hour, except the one the clocks move in (90 or 30 minutes)
    lengths = {edges[i + 1] - edges[i] for i in range(len(starts) - 1)}
    assert lengths <= {dt.timedelta(minutes=m) for m in (30, 60, 90)}
    assert trend["period"].dt.tz is not None
    assert str(pd.Timestamp(starts[0]).tz) == "Australia/Lord_Howe"


def test_price_takes_numpy_integers_such_as_a_dataframes_sums() -> None:
    import numpy as np

    frame = pd.DataFrame({"input_tokens": [600, 400], "output_tokens": [70, 30]})
    got = llmspend.price(
        "gpt-4o-mini",
        input_tokens=frame["input_tokens"].sum(),  # numpy.int64
        cached_input_tokens=np.int32(100),
        output_tokens=np.uint16(100),
    )
    want = llmspend.price(
        "gpt-4o-mini", input_tokens=1000, cached_input_tokens=100, output_tokens=100
    )
    assert got == want and got.total_usd == want.total_usd
    assert type(got.total_usd) is Decimal
    with pytest.raises(llmspend.PricingError, match="must be an int"):
        llmspend.price("gpt-4o-mini", input_tokens=np.bool_(True))
    with pytest.raises(llmspend.PricingError, match="must not be negative"):
        llmspend.price("gpt-4o-mini", input_tokens=np.int64(-1))
    with pytest.raises(llmspend.PricingError, match="exceeds input_tokens"):
        llmspend.price("gpt-4o-mini", input_tokens=np.int64(5), cached_input_tokens=6)


@pytest.mark.parametrize("n", [3, 1200])  # the row path and the column path
def test_ingest_names_a_time_out_of_range_as_such(tracker, n: int) -> None:  # type: ignore[no-untyped-def]
    row = {"provider": "openai", "model": "gpt-4o-mini", "input_tokens": 1, "output_tokens": 1}
    rows = [dict(row, ts="2026-06-01T10:00:00Z") for _ in range(n - 1)]
    rows.append(dict(row, ts="1969-12-31"))
    with pytest.raises(llmspend.IngestError) as err:
        llmspend.ingest(pd.DataFrame(rows))
    message = str(err.value)
    assert f"row {n - 1}, field 'ts'" in message
    assert "'1969-12-31' is outside 1970-01-01 .. 9998-12-31" in message
    assert "cannot parse" not in message
    with pytest.raises(llmspend.IngestError, match="cannot parse 'soon' as a timestamp"):
        llmspend.ingest([dict(row, ts="soon")])
    assert llmspend.records().empty


def _gpt4o_calls() -> None:
    llmspend.ingest(
        [
            {
                "ts": dt.datetime.now(UTC) - dt.timedelta(days=2, minutes=k),
                "provider": "openai",
                "model": "gpt-4o",
                "input_tokens": 10_000,
                "output_tokens": 1_000,
            }
            for k in range(5)
        ]
    )


def test_recommendations_take_one_alternative_name_alone(tracker) -> None:  # type: ignore[no-untyped-def]
    _gpt4o_calls()
    listed = analytics.budget_recommendations(alternatives={"gpt-4o": ["gpt-4o-mini"]})
    alone = analytics.budget_recommendations(alternatives={"gpt-4o": "gpt-4o-mini"})
    rows = alone[alone["kind"] == "cheaper_model"]
    assert list(rows["alternative_model"]) == ["gpt-4o-mini"]  # not 'g', 'p', 't', ...
    assert list(rows["saving_usd"]) == list(listed[listed["kind"] == "cheaper_model"]["saving_usd"])


@pytest.mark.parametrize(
    ("alternatives", "message"),
    [
        (5, "expected a mapping of model name to cheaper models"),
        (["gpt-4o-mini"], "expected a mapping"),
        ({"gpt-4o": 5}, r"alternatives\['gpt-4o'\]: expected a list"),
        ({"gpt-4o": [("openai",)]}, "neither a model name nor a"),
        ({"gpt-4o": [None]}, "neither a model name nor a"),
        ({None: ["gpt-4o-mini"]}, "a model name must be text"),
    ],
)
def test_recommendations_refuse_malformed_alternatives(
    tracker, alternatives: object, message: str
) -> None:  # type: ignore[no-untyped-def]
    _gpt4o_calls()
    with pytest.raises(llmspend.ValidationError, match=message):
        analytics.budget_recommendations(alternatives=alternatives)
