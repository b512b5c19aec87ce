"""Rollups stay equal to the raw rows: after ingest, live calls, failures, migration, rebuild."""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections import defaultdict
from typing import Any

import pytest
from sqlalchemy import insert

import llmspend
from llmspend import analytics
from llmspend.call import Usage
from llmspend.pipeline import begin_call
from llmspend.store.rollups import MEASURES, rebuild_rollups, rollup_rows
from llmspend.timeutil import utcnow
from tests.migrating import migrate
from tests.test_analytics import expect, got, make_rows


def snapshot(tracker: Any) -> tuple[list, list]:
    with tracker.store.begin() as conn:
        return list(rollup_rows(conn, "hourly")), list(rollup_rows(conn, "daily"))


_COLUMNS = [
    "ts", "org", "project", "user", "provider", "model", "status", "cost_usd", "input_tokens",
    "cached_input_tokens", "cache_write_tokens", "output_tokens", "reasoning_tokens",
]  # fmt: skip


def from_records() -> tuple[list, list]:
    """The rollup tables computed independently from records() (only the columns every
    schema revision has: the test below reads them at revision 0005 too)."""
    df = llmspend.records(columns=_COLUMNS)
    tables: list[list] = []
    for unit in ("h", "D"):
        sums: dict[tuple, list[int]] = defaultdict(lambda: [0] * len(MEASURES))
        for r in df.to_dict("records"):
            bucket = r["ts"].floor(unit).tz_localize(None).to_pydatetime()
            key = (bucket, r["org"], r["project"], r["user"], r["provider"], r["model"])
            cost = r["cost_usd"]
            vals = (
                1,
                r["status"] == "error",
                r["status"] == "refused",
                cost is None,
                r["input_tokens"],
                r["cached_input_tokens"],
                r["cache_write_tokens"],
                r["output_tokens"],
                r["reasoning_tokens"],
                0 if cost is None else int(cost.scaleb(9)),
            )
            acc = sums[key]
            for i, v in enumerate(vals):
                acc[i] += int(v)
        tables.append(sorted(k + tuple(v) for k, v in sums.items()))
    return tables[0], tables[1]


def assert_consistent(tracker: Any) -> None:
    before = snapshot(tracker)
    assert before == from_records()
    counts = rebuild_rollups(tracker.store)
    assert snapshot(tracker) == before
    assert counts == {"hourly": len(before[0]), "daily": len(before[1])}


def test_ingest_keeps_rollups_exact_and_a_rebuild_is_identical(tracker) -> None:  # type: ignore[no-untyped-def]
    now = utcnow()
    with pytest.warns(llmspend.LLMSpendWarning):
        llmspend.ingest(make_rows(700, now, days=3, seed=1))
    llmspend.ingest(make_rows(300, now, days=3, seed=2))  # adds to existing buckets
    assert_consistent(tracker)


def test_live_calls_update_rollups(installed_any) -> None:  # type: ignore[no-untyped-def]
    tracker = installed_any
    usages = [Usage(1200, 512, 0, 350, 0), Usage(10, 0, 0, 0, 0), Usage(5000, 0, 100, 900, 300)]
    models = ["gpt-4o-mini", "gpt-4o", "house-model-y"]
    with pytest.warns(llmspend.LLMSpendWarning):
        for i in range(12):
            with llmspend.attribute(
                user=("ana", "bob")[i % 2], project=("churn", "web")[i % 3 % 2]
            ):
                call = begin_call(
                    "openai",
                    "chat.completions",
                    models[i % 3],
                    input_tokens=100,
                    max_output_tokens=100,
                )
                assert call is not None
                if i % 5 == 4:
                    call.finish(None, status="error", error=TimeoutError())
                else:
                    call.finish(usages[i % 3])
        llmspend.ingest(make_rows(50, utcnow(), days=1, seed=3))
    df = llmspend.records()
    assert len(df) == 12 + 50 + 6
    assert_consistent(tracker)
    for keys in (["model"], ["user", "project", "status"]):
        assert got(analytics.cost_breakdown(by=keys), keys) == expect(df, keys)
    since = df["ts"].min() + dt.timedelta(microseconds=1)
    rt = analytics.realtime_metrics(since=since)
    assert rt["calls"].iloc[0] == len(df[df["ts"] >= since])


def test_a_failed_record_transaction_leaves_rollups_unchanged(installed) -> None:  # type: ignore[no-untyped-def]
    tracker = installed
    call = begin_call("openai", "chat.completions", "gpt-4o-mini", input_tokens=10)
    assert call is not None
    call.finish(Usage(10, 0, 0, 5, 0))
    before = snapshot(tracker)

    def fail(conn: Any, call: Any, row: Any) -> None:
        raise RuntimeError("disk on fire")

    tracker.in_record_hooks.append(fail)
    try:
        call = begin_call("openai", "chat.completions", "gpt-4o-mini", input_tokens=10)
        assert call is not None
        with pytest.warns(RuntimeWarning, match="could not record"):
            call.finish(Usage(10, 0, 0, 5, 0))
    finally:
        tracker.in_record_hooks.remove(fail)
    assert len(llmspend.records()) == 1
    assert snapshot(tracker) == before


def _live_calls(n: int) -> None:
    for i in range(n):
        call = begin_call("openai", "chat.completions", "gpt-4o-mini", input_tokens=10)
        assert call is not None
        call.finish(Usage(100 + i, i, 0, 5 * i, 0))


def _mark(tracker: Any) -> tuple[int, int]:
    """(rolled_through, highest usage id)."""
    with tracker.store.begin() as conn:
        row = conn.exec_driver_sql(
            "SELECT rolled_through, (SELECT max(id) FROM llmspend_usage) FROM llmspend_rollup_state"
        ).one()
    return int(row[0]), int(row[1] or 0)


def test_sqlite_calls_reach_the_rollups_before_the_next_read(installed) -> None:  # type: ignore[no-untyped-def]
    """On SQLite a call only appends its row; every analytics read first sums the rows
    past the mark into the rollups, so what it answers is exact."""
    tracker = installed
    _live_calls(3)
    assert got(analytics.cost_breakdown(by="model"), ["model"]) == expect(
        llmspend.records(), ["model"]
    )
    caught_up = snapshot(tracker)
    assert caught_up == from_records()
    last = _mark(tracker)[1]
    assert _mark(tracker) == (last, last)

    _live_calls(4)
    assert snapshot(tracker) == caught_up  # the calls wrote no rollup row...
    assert _mark(tracker) == (last, last + 4)  # ...and are past the mark
    frame = analytics.spending_trends(granularity="hour")
    assert int(frame["calls"].sum()) == 7
    assert snapshot(tracker) == from_records()
    assert _mark(tracker) == (last + 4, last + 4)


def test_the_rollup_mark_migrates_both_ways_without_losing_a_row(installed_any) -> None:  # type: ignore[no-untyped-def]
    """Down from 0006 the rollups are complete again (the rows past the mark summed in);
    up again, the mark starts at the highest id."""
    from sqlalchemy import inspect

    tracker = installed_any
    _live_calls(2)
    analytics.cost_breakdown()  # caught up
    _live_calls(3)  # on SQLite: past the mark
    migrate(tracker.store, "0005", down=True)
    with tracker.store.begin() as conn:
        assert "llmspend_rollup_state" not in inspect(conn).get_table_names()
    assert snapshot(tracker) == from_records()
    migrate(tracker.store, "head")
    last = _mark(tracker)[1]
    assert _mark(tracker) == (last, last)
    _live_calls(1)
    analytics.cost_breakdown()
    assert snapshot(tracker) == from_records()


@pytest.mark.filterwarnings("ignore:llmspend has no price")
def test_ingest_that_fails_validation_writes_no_rollups(tracker) -> None:  # type: ignore[no-untyped-def]
    rows = make_rows(20, utcnow(), days=1, seed=4)
    rows[-1]["input_tokens"] = -1
    with pytest.raises(llmspend.IngestError):
        llmspend.ingest(rows)
    assert snapshot(tracker) == ([], [])


@pytest.mark.filterwarnings("ignore:llmspend has no price")
def test_rebuild_repairs_rollups_after_raw_rows_change(tracker) -> None:  # type: ignore[no-untyped-def]
    from sqlalchemy import delete

    from llmspend.store.models import UsageRecord

    llmspend.ingest(make_rows(200, utcnow(), days=2, seed=5))
    with tracker.store.begin(write=True) as conn:
        conn.execute(delete(UsageRecord).where(UsageRecord.model == "gpt-4o"))
    assert snapshot(tracker) != from_records()
    analytics.rebuild_rollups()  # the current tracker's store
    assert snapshot(tracker) == from_records()


def test_migration_backfills_existing_usage(store_url: str) -> None:
    """A store with history at revision 0002 gets filled rollups when upgraded to 0003."""
    from alembic import command
    from sqlalchemy import create_engine

    from llmspend.store.engine import open_store
    from llmspend.store.migrate import alembic_config
    from llmspend.store.models import UsageRecord
    from llmspend.tracker import Tracker, set_tracker

    engine = create_engine(store_url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), "0002")
        base = dt.datetime(2026, 5, 1, 10, 17, 3, 250_000)
        conn.execute(
            insert(UsageRecord.__table__),
            [
                {
                    "ts": base + dt.timedelta(minutes=47 * i),
                    "provider": "openai",
                    "api": "chat.completions",
                    "model": ("gpt-4o", "gpt-4o-mini")[i % 2],
                    "org_name": "acme",
                    "project_name": "churn",
                    "user_name": ("ana", "bob")[i % 3 % 2],
                    "input_tokens": 100 + i,
                    "cached_input_tokens": i,
                    "cache_write_tokens": 0,
                    "output_tokens": 7 * i,
                    "reasoning_tokens": 0,
                    "cost_nanos": None if i % 7 == 0 else 1000 * i,
                    "price_status": "priced",
                    "status": ("ok", "ok", "error", "refused")[i % 4],
                    "streamed": False,
                    "usage_estimated": False,
                }
                for i in range(60)
            ],
        )
    engine.dispose()
    store = open_store(store_url)  # migrates to head: creates and fills the rollups
    tracker = Tracker(store_url)
    set_tracker(tracker)
    try:
        filled = snapshot(tracker)
        assert len(filled[0]) > 10
        assert filled == from_records()
        rebuild_rollups(store)
        assert snapshot(tracker) == filled
    finally:
        set_tracker(None)


def test_cli_rebuild_rollups(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    import json

    from llmspend.cli import main
    from llmspend.store.engine import forget_store
    from llmspend.tracker import Tracker, set_tracker

    url = f"sqlite:///{tmp_path / 'cli.sqlite'}"
    set_tracker(Tracker(url))
    with pytest.warns(llmspend.LLMSpendWarning):
        llmspend.ingest(make_rows(100, utcnow(), days=2, seed=6))
    assert main(["db", "rebuild-rollups", "--database-url", url, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["hourly"] > 0 and out["daily"] > 0
    assert main(["--database-url", url, "db", "rebuild-rollups"]) == 0
    assert "rebuilt rollups" in capsys.readouterr().out
    forget_store(url)


def test_rollup_range_scans_use_the_primary_key(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Every statement the engine sends for a multi-range query searches the primary key
    (an OR of ranges would scan the whole WITHOUT ROWID table: hence UNION ALL)."""
    from sqlalchemy import event

    from llmspend.analytics.query import aggregate
    from llmspend.store.engine import forget_store
    from llmspend.tracker import Tracker

    url = f"sqlite:///{tmp_path / 'plan.sqlite'}"
    tracker = Tracker(url)
    seen: list[tuple[str, Any]] = []

    @event.listens_for(tracker.store.engine, "before_cursor_execute")
    def keep(conn, cursor, statement, params, context, executemany):  # type: ignore[no-untyped-def]
        if "llmspend_rollup" in statement:
            seen.append((statement, params))

    base = dt.datetime(2026, 3, 1)
    bounds = [base + dt.timedelta(days=d, hours=5) for d in range(30)]  # UTC-5 local days
    aggregate(tracker.store, bounds, ("model",), {"org": "acme"})
    assert {"llmspend_rollup_daily", "llmspend_rollup_hourly"} <= {
        t
        for stmt, _ in seen
        for t in ("llmspend_rollup_daily", "llmspend_rollup_hourly")
        if f"FROM {t}" in stmt
    }
    con = sqlite3.connect(tmp_path / "plan.sqlite")
    for statement, params in seen:
        plan = [str(r[3]) for r in con.execute("EXPLAIN QUERY PLAN " + statement, params)]
        scans = [p for p in plan if p.startswith(("SCAN", "SEARCH")) and "rollup" in p]
        assert scans and all("USING PRIMARY KEY (bucket>? AND bucket<?)" in p for p in scans), plan
    con.close()
    forget_store(url)


def test_api_and_service_tier_queries_read_the_model_family() -> None:
    from llmspend.analytics.plan import family_for

    assert family_for({"api"}) == "model"
    assert family_for({"provider", "model", "api", "service_tier"}) == "model"
    assert family_for({"org_name", "provider"}) == "team"
    assert family_for(set()) == "model"
    assert family_for({"user_name", "api"}) is None  # no family keeps both: raw rows


@pytest.mark.postgres
def test_postgres_calls_are_queued_and_folded_before_the_next_read(installed_pg) -> None:  # type: ignore[no-untyped-def]
    """On PostgreSQL a call only inserts its row (a trigger queues its id); the next
    analytics read folds the queue into every rollup table, exactly once (SQLite has the
    mark instead)."""
    tracker = installed_pg

    def queued() -> int:
        with tracker.store.begin() as conn:
            sql = "SELECT count(*) FROM llmspend_rollup_pending"
            return int(conn.exec_driver_sql(sql).scalar_one())

    _live_calls(3)
    assert queued() == 3
    assert snapshot(tracker) == ([], [])  # the calls wrote no rollup row
    assert got(analytics.cost_breakdown(by="model"), ["model"]) == expect(
        llmspend.records(), ["model"]
    )
    assert queued() == 0
    assert snapshot(tracker) == from_records()
    _live_calls(2)
    frame = analytics.spending_trends(granularity="hour")
    assert int(frame["calls"].sum()) == 5
    assert queued() == 0
    assert_consistent(tracker)


@pytest.mark.postgres
def test_postgres_catch_ups_take_turns_and_count_each_row_once(installed_pg) -> None:  # type: ignore[no-untyped-def]
    """Two catch-ups at once: the second waits for the first's lock on the queue (here it
    gives up at once), and after the first commits it finds nothing left to fold (SQLite's
    writers take turns already)."""
    from psycopg.errors import LockNotAvailable
    from sqlalchemy.exc import OperationalError

    from llmspend.store.rollups import catch_up

    tracker = installed_pg
    _live_calls(4)
    with tracker.store.begin(write=True) as first:
        assert catch_up(first) == 4
        # as SQLAlchemy's error, as transactions.py documents
        with pytest.raises(OperationalError) as waited, tracker.store.begin(write=True) as second:
            second.exec_driver_sql("SET LOCAL lock_timeout = '1ms'")
            catch_up(second)
        assert isinstance(waited.value.orig, LockNotAvailable)
    with tracker.store.begin(write=True) as again:
        assert catch_up(again) == 0
    assert snapshot(tracker) == from_records()


def test_a_batch_grouped_per_table_equals_its_rows_summed_directly_in_key_order() -> None:
    """The bulk fold's invariants (``llmspend.store.rollup_batch``): a coarser table's
    groups made from the finer table's groups equal the rows summed directly (each bucket
    lies in one bucket of the next grain: quarter, hour, day, Monday week), and every
    table's rows come in key order (codes sorted as the text is, "" for a left-out key)."""
    import random

    import numpy as np

    from llmspend.store.rollup_batch import _tables, group_columns
    from llmspend.store.rollups import KEY_COLUMNS, ROLLUPS, _bucket_of

    rnd = random.Random(5)
    n = 3000
    start = dt.datetime(2026, 2, 27, 21)  # a month's and a week's end inside
    cols: dict[str, Any] = {
        "ts": np.array(
            [start + dt.timedelta(seconds=rnd.randint(0, 9 * 86400)) for _ in range(n)],
            dtype="datetime64[us]",
        ),
        "org_name": [rnd.choice(["acme", "Acme", "émile"]) for _ in range(n)],
        "project_name": [rnd.choice(["p", "p2", "Ω"]) for _ in range(n)],
        "user_name": [rnd.choice(["ana", "bo", "zoë", "Zed"]) for _ in range(n)],
        "provider": [rnd.choice(["openai", "google"]) for _ in range(n)],
        "model": [rnd.choice(["m1", "m2", "gpt-4o"]) for _ in range(n)],
        "api": [rnd.choice(["responses", "chat.completions"]) for _ in range(n)],
        "service_tier": [rnd.choice([None, "flex", "priority"]) for _ in range(n)],
        "status": [rnd.choice(["ok", "ok", "error", "refused"]) for _ in range(n)],
        "cost_nanos": [None if i % 13 == 0 else rnd.randint(0, 10**12) for i in range(n)],
        **{m: np.array([rnd.randint(0, 10**6) for _ in range(n)]) for m in MEASURES[4:9]},
    }
    rows = group_columns(cols)
    assert rows is not None
    made = dict(_tables(rows))
    assert list(made) == list(ROLLUPS)
    for r, groups in made.items():
        direct = rows.coarser(r.grain, r.dims)  # from the raw rows, not the finer groups
        params = groups.params(r, sqlite=True)
        assert params == direct.params(r, sqlite=True), r.table.name
        assert params == sorted(params), r.table.name  # key order: bucket, then key text
        assert sum(p[len(r.key) + 1] for p in params) == n  # calls
        want = {_bucket_of(t, r.grain) for t in cols["ts"].astype(dt.datetime)}
        assert {p[0] for p in params} == {
            t.isoformat(sep=" ", timespec="microseconds") for t in want
        }  # as the row path buckets them (weeks from Monday)
    assert {d for r in ROLLUPS for d in r.key} == set(KEY_COLUMNS)


def test_packed_grouping_equals_the_multi_key_groupby() -> None:
    """The bulk fold packs (bucket, codes) into one int64 to group; it gives pandas'
    multi-key groupby's groups, in the same order, and falls back to it when the key
    would not fit."""
    import random

    import numpy as np

    from llmspend.store import rollup_batch
    from llmspend.store.rollups import KEY_COLUMNS, ROLLUPS

    rnd = random.Random(11)
    n = 2500
    uniques = {
        d: np.array([f"{d}{j}" for j in range(rnd.randint(1, 9))], object) for d in KEY_COLUMNS
    }
    codes = {d: np.array([rnd.randrange(len(uniques[d])) for _ in range(n)]) for d in KEY_COLUMNS}
    bucket = np.array([rnd.randrange(40) * 900_000_000 for _ in range(n)], dtype=np.int64)
    sums = np.array([[rnd.randint(0, 10**9) for _ in MEASURES] for _ in range(n)], np.int64)
    for r in ROLLUPS:
        kept = [d for d in KEY_COLUMNS if d in r.dims]
        packed = rollup_batch._grouped(bucket, codes, r.dims, uniques, sums)
        plain = rollup_batch._grouped_pandas(bucket, codes, kept, uniques, sums)
        assert packed.params(r, sqlite=True) == plain.params(r, sqlite=True), r.table.name
        empty = rollup_batch._grouped(
            bucket[:0], {d: c[:0] for d, c in codes.items()}, r.dims, uniques, sums[:0]
        )
        assert empty.params(r, sqlite=True) == []
    wide = {d: np.array([f"v{j}" for j in range(2**9)], object) for d in KEY_COLUMNS}
    huge = rollup_batch._grouped(bucket, codes, ROLLUPS[-1].dims, wide, sums)  # 2**72 keys
    plain = rollup_batch._grouped_pandas(
        bucket, codes, [d for d in KEY_COLUMNS if d in ROLLUPS[-1].dims], wide, sums
    )
    assert huge.params(ROLLUPS[-1], sqlite=True) == plain.params(ROLLUPS[-1], sqlite=True)


@pytest.mark.parametrize("n", [0, 1, 63, 64, 65, 64 * 3 + 7])
def test_insert_values_writes_every_row_64_a_statement(n: int) -> None:
    """``insert_values`` (the bulk writes' multi-row VALUES) writes each row once, in
    order, whatever ``n`` is next to the 64 rows a statement, and keeps the tail clause."""
    from llmspend.store.rollup_batch import VALUES_ROWS, insert_values

    assert VALUES_ROWS == 64
    con = sqlite3.connect(":memory:")
    con.execute("CREATE TABLE t (k TEXT PRIMARY KEY, a INTEGER, b TEXT)")
    rows = [(f"k{i:04d}", i, None if i % 3 else "x") for i in range(n)]
    insert_values(con.cursor(), "INSERT INTO t (k, a, b)", iter(rows), n, 3)
    assert con.execute("SELECT k, a, b FROM t ORDER BY rowid").fetchall() == rows
    again = [(k, 1, b) for k, _, b in rows]
    tail = "ON CONFLICT (k) DO UPDATE SET a = t.a + excluded.a"
    insert_values(con.cursor(), "INSERT INTO t (k, a, b)", iter(again), n, 3, tail)
    assert con.execute("SELECT k, a, b FROM t ORDER BY rowid").fetchall() == [
        (k, a + 1, b) for k, a, b in rows
    ]
