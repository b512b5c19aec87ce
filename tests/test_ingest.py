"""``ingest`` and ``records``: exact round trips, exact sums, all-or-nothing validation."""

from __future__ import annotations

import datetime as dt
import random
from decimal import Decimal

import pandas as pd
import pytest

import llmspend
from llmspend.errors import IngestError

UTC = dt.UTC


def full_row(i: int) -> dict:
    return {
        "ts": dt.datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC) + dt.timedelta(minutes=i),
        "request_id": f"req-{i}",
        "provider": "openai",
        "api": "chat.completions",
        "model": "gpt-4o-mini",
        "requested_model": "my-deployment",
        "org": "acme",
        "project": "churn",
        "user": "ana",
        "input_tokens": 1200,
        "cached_input_tokens": 512,
        "cache_write_tokens": 8,
        "output_tokens": 350,
        "reasoning_tokens": 100,
        "cost_usd": Decimal("0.000123457"),
        "estimate_usd": Decimal("0.0002"),
        "price_status": "priced",
        "price_ref": "genai-prices:openai/gpt-4o-mini",
        "status": "ok",
        "error_type": None,
        "latency_ms": 123.5,
        "streamed": True,
        "usage_estimated": False,
        "tags": {"exp": "a", "n": 3},
        "session_id": "kernel-1",
        "notebook_path": "work/nb.ipynb",
    }


def test_round_trip_every_column(tracker) -> None:  # type: ignore[no-untyped-def]
    rows = [full_row(i) for i in range(3)]
    rows[1].update(status="error", error_type="RateLimitError", cost_usd=Decimal(0), streamed=False)
    assert llmspend.ingest(rows) == 3
    df = llmspend.records()
    assert len(df) == 3
    for got, want in zip(df.to_dict("records"), rows, strict=True):
        for key, value in want.items():
            assert got[key] == value, key
    # records() → ingest → records() is the identity (but for ids)
    tracker2_rows = df.drop(columns=["id"])
    assert llmspend.ingest(tracker2_rows) == 3
    after = llmspend.records()
    again = after[after.id > df.id.max()].drop(columns=["id"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(again, tracker2_rows.reset_index(drop=True))


def test_defaults_for_missing_columns(tracker) -> None:  # type: ignore[no-untyped-def]
    llmspend.ingest(
        [
            {
                "ts": "2026-03-01T10:00:00Z",
                "provider": "openai",
                "model": "x-model",
                "cost_usd": "0.5",
            }
        ]
    )
    row = llmspend.records().iloc[0]
    assert (row.org, row.project, row.user) == ("acme", "churn", "ana")
    assert row.status == "ok" and row.price_status == "imported"
    assert row.cost_usd == Decimal("0.5")
    assert row.ts == pd.Timestamp("2026-03-01T10:00:00Z")


def test_sum_of_100k_sub_cent_costs_is_exact(tracker) -> None:  # type: ignore[no-untyped-def]
    rnd = random.Random(7)
    base = dt.datetime(2026, 1, 1)
    costs = [Decimal(rnd.randint(1, 9_999_999)) / Decimal(10**9) for _ in range(100_000)]
    rows = (
        {"ts": base + dt.timedelta(seconds=i), "provider": "openai", "model": "m", "cost_usd": c}
        for i, c in enumerate(costs)
    )
    assert llmspend.ingest(rows) == 100_000
    assert sum(llmspend.records()["cost_usd"]) == sum(costs)
    with tracker.store.begin() as conn:
        total = conn.exec_driver_sql("SELECT sum(cost_nanos) FROM llmspend_usage").scalar()
    assert Decimal(int(total)) / Decimal(10**9) == sum(costs)


BAD = [
    ({"model": None}, "model", "required"),
    ({"model": ""}, "model", "required"),
    ({"input_tokens": -1}, "input_tokens", "between 0"),
    ({"output_tokens": 1.5}, "output_tokens", "whole number"),
    ({"output_tokens": "12"}, "output_tokens", "whole number"),
    ({"output_tokens": [1]}, "output_tokens", "whole number"),
    ({"ts": "yesterday-ish"}, "ts", "cannot parse"),
    ({"ts": None}, "ts", "required"),
    ({"ts": 12345}, "ts", "expected a datetime"),
    ({"cost_usd": "-1"}, "cost_usd", ">= 0"),
    ({"cost_usd": "abc"}, "cost_usd", "not an amount"),
    ({"cost_usd": float("inf")}, "cost_usd", "finite"),
    ({"status": "weird"}, "status", "one of"),
    ({"tags": ["a"]}, "tags", "mapping"),
    ({"colour": "blue"}, "colour", "unknown column"),
    ({"cached_input_tokens": 5, "input_tokens": 4}, "cached_input_tokens", "exceed"),
    ({"reasoning_tokens": 5, "output_tokens": 4}, "reasoning_tokens", "exceed"),
    ({"latency_ms": -3}, "latency_ms", ">= 0"),
    ({"org": 42}, "org", "expected text"),
    ({"streamed": "yes"}, "streamed", "true or false"),
]


@pytest.mark.parametrize("patch, field, message", BAD, ids=[b[1] + ":" + b[2] for b in BAD])
def test_bad_row_rejects_everything(tracker, patch: dict, field: str, message: str) -> None:  # type: ignore[no-untyped-def]
    llmspend.ingest([full_row(0)])
    rows = [full_row(i) for i in range(1, 5)]
    rows[2].update(patch)
    with pytest.raises(IngestError, match=message) as info:
        llmspend.ingest(rows)
    assert info.value.row == 2
    assert info.value.field == field
    assert f"row 2, field {field!r}" in str(info.value)
    assert len(llmspend.records()) == 1  # unchanged


def test_bad_container_types(tracker) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(llmspend.ValidationError):
        llmspend.ingest({"ts": "2026-01-01"})
    with pytest.raises(llmspend.ValidationError):
        llmspend.ingest(42)
    with pytest.raises(IngestError, match="row 0"):
        llmspend.ingest(["not a dict"])
    assert llmspend.ingest([]) == 0


def test_records_filters_and_time_window(tracker) -> None:  # type: ignore[no-untyped-def]
    rows = []
    for i, (user, model) in enumerate([("ana", "a"), ("bob", "b"), ("ana", "b"), ("cy", "a")]):
        rows.append(
            {
                "ts": dt.datetime(2026, 3, 1 + i),
                "provider": "openai",
                "model": model,
                "user": user,
                "cost_usd": "1",
            }
        )
    llmspend.ingest(rows)
    assert list(llmspend.records(user="ana").model) == ["a", "b"]
    assert list(llmspend.records(user=["bob", "cy"]).user) == ["bob", "cy"]
    assert list(llmspend.records(since="2026-03-02", until=dt.date(2026, 3, 4)).user) == [
        "bob",
        "ana",
    ]
    tz = dt.timezone(dt.timedelta(hours=5))
    assert len(llmspend.records(since=dt.datetime(2026, 3, 2, 5, tzinfo=tz))) == 3
    assert len(llmspend.records(model="a", user="cy")) == 1
    with pytest.raises(llmspend.ValidationError, match="unknown filter"):
        llmspend.records(colour="red")
    with pytest.raises(llmspend.ValidationError, match="cannot parse"):
        llmspend.records(since="last tuesday")
    with pytest.raises(llmspend.ValidationError):
        llmspend.records(user=[])


def test_numpy_and_nanosecond_times_work_as_since_until_and_ts(tracker) -> None:  # type: ignore[no-untyped-def]
    """A DataFrame's own times (numpy datetime64, pandas Timestamps with nanoseconds) are
    taken to the microsecond, without a warning; numpy NaT and out-of-range are errors."""
    import warnings

    import numpy as np

    frame = pd.DataFrame({
        "ts": pd.to_datetime(["2026-03-01T12:00:00.000000001", "2026-03-02T12:00:00.999999999"]),
        "provider": "openai", "model": "gpt-4o-mini", "cost_usd": ["1", "2"],
    })  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # pandas warns when nanoseconds are dropped
        assert llmspend.ingest(frame) == 2
        assert list(llmspend.records().ts.dt.microsecond) == [0, 999999]
        since = np.datetime64("2026-03-02T00:00:00")
        assert list(llmspend.records(since=since).cost_usd) == [Decimal("2")]
        aware = pd.Timestamp("2026-03-02T05:30:00.000000005", tz="Asia/Kolkata")
        assert list(llmspend.records(until=aware).cost_usd) == [Decimal("1")]
        assert len(llmspend.records(since=frame.ts.values[1])) == 1  # datetime64[ns]
    with pytest.raises(llmspend.ValidationError, match="NaT"):
        llmspend.records(since=np.datetime64("NaT"))
    with pytest.raises(llmspend.ValidationError, match="outside 1970-01-01"):
        llmspend.records(until=np.datetime64("1960-01-01"))


def test_hierarchy_rows_created(tracker) -> None:  # type: ignore[no-untyped-def]
    llmspend.ingest(
        [
            {
                "ts": "2026-01-01",
                "provider": "openai",
                "model": "m",
                "org": "o1",
                "project": "p1",
                "user": "u1",
                "cost_usd": 1,
            }
        ]
    )
    with tracker.store.begin() as conn:
        orgs = {r[0] for r in conn.exec_driver_sql("SELECT name FROM llmspend_orgs")}
        projects = {r[0] for r in conn.exec_driver_sql("SELECT name FROM llmspend_projects")}
        users = {r[0] for r in conn.exec_driver_sql("SELECT name FROM llmspend_users")}
    assert "o1" in orgs and "p1" in projects and "u1" in users


# -- the column path (llmspend.bulkload) gives what the row path gives ----------------------


def backfill_row(i: int) -> dict:
    """A row as a provider export gives it: cost given, most columns absent."""
    return {
        "ts": dt.datetime(2026, 4, 1) + dt.timedelta(seconds=37 * i),
        "provider": "openai" if i % 3 else "google",
        "api": "chat.completions",
        "model": "gpt-4o-mini" if i % 3 else "gemini-2.5-flash",
        "org": "acme",
        "project": f"p{i % 4}",
        "user": f"u{i % 9}",
        "input_tokens": 1000 + i,
        "cached_input_tokens": i % 500,
        "output_tokens": 200 + i % 50,
        "cost_usd": Decimal(i * 1237 + 1).scaleb(-9),
        "status": "ok",
        "latency_ms": 100.0 + i % 300,
    }


BIG = 3000


@pytest.mark.parametrize("patch, field, message", BAD, ids=[b[1] + ":" + b[2] for b in BAD])
def test_bad_row_in_a_big_batch_rejects_everything(
    tracker, patch: dict, field: str, message: str
) -> None:  # type: ignore[no-untyped-def]
    from llmspend.usage import ingest_rows

    rows = [backfill_row(i) for i in range(BIG)]
    rows[1700].update(patch)
    rows[2500]["model"] = None  # a later bad row is not the one named
    if "colour" not in patch:  # one set of keys, as a DataFrame's rows have: the column path
        keys = {k for r in rows for k in r}
        rows = [{k: r.get(k) for k in keys} for r in rows]
    with pytest.raises(IngestError, match=message) as info:
        llmspend.ingest(rows)
    assert (info.value.row, info.value.field) == (1700, field)
    with pytest.raises(IngestError) as old:
        ingest_rows(tracker.store, rows, defaults=tracker.defaults, pricer=tracker)
    assert str(info.value) == str(old.value)
    assert llmspend.records().empty and llmspend.records(as_="arrow").num_rows == 0


def test_bad_row_in_a_big_frame_rejects_everything(tracker) -> None:  # type: ignore[no-untyped-def]
    frame = pd.DataFrame([backfill_row(i) for i in range(BIG)])
    frame.loc[2222, "output_tokens"] = -5
    with pytest.raises(IngestError, match="row 2222, field 'output_tokens'"):
        llmspend.ingest(frame)
    assert llmspend.records().empty


def _mixed_rows(n: int) -> list[dict]:
    """Rows whose values take every shape the row validator accepts."""
    rnd = random.Random(3)
    rows = []
    for i in range(n):
        row = backfill_row(i)
        k = i % 10
        if k == 0:
            row["cost_usd"] = rnd.random() / 100  # a float: read by its shortest repr
        elif k == 1:
            row["cost_usd"] = None  # priced at its ts
        elif k == 2:
            row["ts"] = (row["ts"].replace(tzinfo=UTC) + dt.timedelta(hours=2)).astimezone(
                dt.timezone(dt.timedelta(hours=2))
            )
        elif k == 3:
            row["ts"] = row["ts"].isoformat() + "Z"
        elif k == 4:
            row["price_status"] = "priced"
            row["estimate_usd"] = "0.5"
        elif k == 5:
            row["tags"] = {"team": "red", "n": i % 3}
            row["org"] = ""  # the default org
        elif k == 6:
            row["status"] = "error"
            row["cost_usd"] = Decimal("1.0000000005")  # rounded half-even to the nanodollar
        elif k == 7:
            row["latency_ms"] = None
            row["user"] = None
        elif k == 8:  # what CSV (COPY) must quote: commas, quotes, newlines, backslashes
            row["notebook_path"] = 'dir,x/"nb"\n\\b\tc.ipynb'
            row["error_type"] = "ÉrrorÜ"
            row["tags"] = {"q": 'a"b,c', "nl": "x\ny"}
        rows.append(row)
    keys = {k for r in rows for k in r}
    return [{k: r.get(k) for k in sorted(keys)} for r in rows]


@pytest.mark.parametrize("as_frame", [False, True], ids=["dicts", "frame"])
def test_column_path_equals_row_path(tracker, as_frame: bool) -> None:  # type: ignore[no-untyped-def]
    from llmspend.usage import ingest_rows

    rows = _mixed_rows(2000)
    data = pd.DataFrame(rows) if as_frame else rows
    assert llmspend.ingest(data) == 2000  # the column path (COPY on PostgreSQL)
    assert ingest_rows(tracker.store, data, defaults=tracker.defaults, pricer=tracker) == 2000
    frame = llmspend.records().sort_values("id").reset_index(drop=True)
    fast, slow = frame.iloc[:2000], frame.iloc[2000:]
    pd.testing.assert_frame_equal(
        fast.drop(columns=["id"]).reset_index(drop=True),
        slow.drop(columns=["id"]).reset_index(drop=True),
    )
    # priced at ts when the cost is missing, or as the row says; imported otherwise
    assert fast["price_status"].value_counts().to_dict() == {"imported": 1600, "priced": 400}
    odd = fast[fast["error_type"] == "ÉrrorÜ"]  # read back as written (COPY both ways)
    assert len(odd) == 200 and set(odd["notebook_path"]) == {'dir,x/"nb"\n\\b\tc.ipynb'}
    assert all(t == {"q": 'a"b,c', "nl": "x\ny"} for t in odd["tags"])


def test_repeated_tags_are_stored_as_the_row_validator_stores_each() -> None:
    """The column path checks a tags dict once per distinct items and types; equal dicts
    of other types (1, True, 1.0; 0.0 and -0.0) still give their own JSON."""
    from llmspend.bulkload import _tags_check
    from llmspend.usage import _tags

    values = [
        {"team": "red", "n": 1}, {"n": 1, "team": "red"}, {"team": "red", "n": True},
        {"team": "red", "n": 1.0}, {"z": 0.0}, {"z": -0.0}, {"team": "red", "n": 1},
        {"a": [1]}, {}, "{\"x\": \"y\"}", None,
    ]  # fmt: skip
    check = _tags_check()
    for i, v in enumerate(values * 2):
        try:
            want = _tags(v, i)
        except IngestError as e:
            with pytest.raises(IngestError) as raised:
                check(v, i)
            assert str(raised.value) == str(e)
            continue
        assert check(v, i) == want, v


@pytest.mark.parametrize("as_frame", [False, True])
def test_ingested_rows_count_in_existing_budget_periods(tracker, as_frame: bool) -> None:  # type: ignore[no-untyped-def]
    """Periods that exist when a batch is ingested (row path or column path) count its
    rows as records() has them: refused rows left out, unknown costs as 0, by scope and
    period window."""
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    budgets = [
        ("org", "acme", "day"),
        ("org", "acme", "total"),
        ("project", "acme/churn", "month"),
        ("user", "acme/ana", "week"),
        ("user", "acme/search/bo", "total"),
        ("org", "umbrella", "day"),
    ]
    for scope, name, period in budgets:
        llmspend.set_budget(scope, name, 10**9, period=period, mode="soft")
    rnd = random.Random(3)
    rows = []
    for i in range(1500):
        rows.append(
            {
                "ts": now - dt.timedelta(minutes=rnd.randint(0, 60 * 24 * 40)),
                "provider": "openai",
                "model": "gpt-4o-mini",
                "org": rnd.choice(["acme", "acme", "umbrella"]),
                "project": rnd.choice(["churn", "search"]),
                "user": rnd.choice(["ana", "bo"]),
                "input_tokens": 10,
                "output_tokens": 5,
                "status": rnd.choice(["ok", "ok", "error", "refused"]),
                "cost_usd": None if i % 13 == 0 else Decimal(rnd.randint(0, 10**12)).scaleb(-9),
            }
        )
        if i % 13 == 0:
            rows[-1]["price_status"] = "unknown"
    for size in (1500, 7):  # the column path, then the row path
        batch, rows = rows[:size], rows[size:] + rows[:size]
        llmspend.ingest(pd.DataFrame(batch) if as_frame else batch)
    df = llmspend.records()
    df = df[df.status != "refused"]
    for st in llmspend.budget_status():
        want = df[df.org == st.budget.split("/")[0]]
        parts = st.budget.split("/")
        if st.scope == "project":
            want = want[want.project == parts[1]]
        if st.scope == "user":
            want = want[want.user == parts[-1]]
            if len(parts) == 3:
                want = want[want.project == parts[1]]
        want = want[want.ts >= pd.Timestamp(st.period_start).tz_convert("UTC")]
        if st.period_end is not None:
            want = want[want.ts < pd.Timestamp(st.period_end).tz_convert("UTC")]
        spent = sum((c for c in want.cost_usd if c is not None), Decimal(0))
        assert st.spent_usd == spent, st.budget


def _rollup_tables(tracker) -> dict[str, list[tuple]]:  # type: ignore[no-untyped-def]
    from llmspend.store.rollups import ROLLUPS

    with tracker.store.begin() as conn:
        return {
            r.table.name: sorted(
                tuple(str(v) for v in row)
                for row in conn.execute(r.table.select().with_only_columns(
                    *(r.table.c[c] for c in r.columns))).all()
            )
            for r in ROLLUPS
        }  # fmt: skip


def test_a_big_batch_is_folded_into_every_rollup_exactly(tracker, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The bulk path sums its batch into the rollups from its columns (SQLite), with the
    rows pending before it; every rollup table then equals a rebuild from the raw rows."""
    from llmspend.store import rollup_batch, rollups

    hooks = tracker.ingest_hooks
    tracker.ingest_hooks = []  # these rows stay past the mark (or queued)
    early = [backfill_row(i) for i in range(30)]
    llmspend.ingest(early)
    tracker.ingest_hooks = hooks
    folded = []
    real = rollup_batch.fold_columns
    monkeypatch.setattr(
        rollup_batch,
        "fold_columns",
        lambda tx, cols: folded.append(len(cols["ts"])) or real(tx, cols),
    )
    rnd = random.Random(9)
    rows = []
    for i in range(3000):
        row = backfill_row(i + 100)
        row["ts"] = row["ts"] + dt.timedelta(minutes=rnd.randint(-20000, 20000), microseconds=i)
        row["status"] = rnd.choice(["ok", "ok", "error", "refused"])
        row["service_tier"] = rnd.choice([None, "flex", "priority"])
        row["api"] = rnd.choice(["chat.completions", "responses"])
        row["cost_usd"] = None if i % 17 == 0 else Decimal(rnd.randint(0, 10**13)).scaleb(-9)
        if i % 17 == 0:
            row["price_status"] = "unknown"
        rows.append(row)
    llmspend.ingest(pd.DataFrame(rows))
    if tracker.store.is_sqlite:
        assert folded == [3030]  # the batch and the 30 rows pending before it
    got = _rollup_tables(tracker)
    rollups.rebuild_rollups(tracker.store)
    assert got == _rollup_tables(tracker)
    assert sum(len(v) for v in got.values()) > 0


@pytest.mark.postgres
def test_a_big_batch_on_postgres_is_folded_by_its_writer_not_queued(pg_server) -> None:  # type: ignore[no-untyped-def]
    """PostgreSQL: the bulk writer sums its COPY'd batch into the rollups in its own
    transaction and the queue trigger skips those rows — none queued, each counted once,
    even with no ingest hook; a smaller write after it (same pooled connection) is queued
    again."""
    from llmspend.store import rollups
    from llmspend.store.engine import forget_store
    from llmspend.tracker import Tracker, set_tracker

    url = pg_server.create_database()
    tracker = Tracker(url, org="acme", project="churn", user="ana")
    set_tracker(tracker)
    tracker.ingest_hooks = []  # only the writer folds

    def queued() -> int:
        with tracker.store.begin() as conn:
            sql = "SELECT count(*) FROM llmspend_rollup_pending"
            return int(conn.exec_driver_sql(sql).scalar_one())

    try:
        llmspend.ingest(pd.DataFrame([backfill_row(i) for i in range(2500)]))
        assert queued() == 0
        hourly = _rollup_tables(tracker)["llmspend_rollup_hourly"]
        assert sum(int(row[6]) for row in hourly) == 2500  # calls, once each
        llmspend.ingest([backfill_row(i) for i in range(3000, 3010)])  # the row path
        assert queued() == 10
        rollups.up_to_date(tracker.store)
        got = _rollup_tables(tracker)
        rollups.rebuild_rollups(tracker.store)
        assert got == _rollup_tables(tracker)
    finally:
        set_tracker(None)
        forget_store(url)


def test_a_sqlite_built_with_999_bound_variables_takes_a_big_batch(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """SQLite before 3.32 (and builds that keep its old default) binds at most 999
    variables a statement: the multi-row VALUES statements stay under the connection's
    limit (64 rows of 28 columns would be 1,792)."""
    import sqlite3

    from sqlalchemy import event

    from llmspend.store.engine import forget_store
    from llmspend.tracker import Tracker, set_tracker

    url = f"sqlite:///{tmp_path / 'store.sqlite'}"
    t = Tracker(url, org="acme", project="churn", user="ana")
    set_tracker(t)
    try:

        def old_limit(dbapi_connection, record) -> None:  # type: ignore[no-untyped-def]
            dbapi_connection.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999)

        event.listen(t.store.engine, "connect", old_limit)
        t.store.engine.dispose()  # every connection from here on has the old limit
        rows = [{**full_row(i), "request_id": f"big-{i}"} for i in range(BIG)]
        assert llmspend.ingest(rows) == BIG
        assert len(llmspend.records()) == BIG
        with t.store.begin() as conn:
            limit = conn.connection.driver_connection.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
        assert limit == 999
    finally:
        set_tracker(None)
        forget_store(url)


@pytest.mark.parametrize("n", [10, 1200])  # the row path, the column path
def test_costs_adding_up_past_the_stores_sums_are_a_clear_error(tracker, n: int) -> None:  # type: ignore[no-untyped-def]
    """Each row under $1B is fine; ten of them in one rollup row pass 2**63 nanodollars
    (≈ $9.2B): a ValidationError that writes nothing, not the driver's OverflowError."""
    row = {"ts": dt.datetime(2026, 3, 1, 12), "provider": "openai", "model": "gpt-4o-mini",
           "cost_usd": Decimal("999999999")}  # fmt: skip
    with pytest.raises(llmspend.ValidationError, match=r"add up past .* nothing was written"):
        llmspend.ingest([dict(row) for _ in range(n)])
    assert llmspend.records().empty
