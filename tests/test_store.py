"""The store: migrations, settings, and clear errors instead of SQLAlchemy tracebacks."""

from __future__ import annotations

import sqlite3
import subprocess
import sys

import pytest
from sqlalchemy import create_engine, inspect, text

import llmspend
from llmspend.errors import ConfigError, LLMSpendError, SchemaTooNewError, StoreError
from llmspend.store.engine import current_revisions, forget_store, open_store, upgrade
from llmspend.store.models import Base
from tests.migrating import migrate

EXPECTED_TABLES = {
    "llmspend_usage", "llmspend_orgs", "llmspend_projects", "llmspend_users",
    "llmspend_budgets", "llmspend_budget_periods", "llmspend_reservations",
    "llmspend_alerts", "llmspend_audit", "llmspend_alembic_version",
}  # fmt: skip


def test_migrations_create_schema_from_empty(store_url: str) -> None:
    store = open_store(store_url)
    tables = set(inspect(store.engine).get_table_names())
    assert tables >= EXPECTED_TABLES
    assert current_revisions(store) != []


def test_models_match_migrated_schema(store_url: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    store = open_store(store_url)
    with store.engine.connect() as conn:
        ctx = MigrationContext.configure(
            conn, opts={"version_table": "llmspend_alembic_version", "compare_type": True}
        )
        diff = compare_metadata(ctx, Base.metadata)
    assert diff == []


def test_upgrade_twice_is_a_noop(store_url: str) -> None:
    store = open_store(store_url)
    before = current_revisions(store)
    with store.begin() as conn:
        n_tables = len(inspect(conn).get_table_names())
    assert upgrade(store) == before
    assert upgrade(store) == before
    with store.begin() as conn:
        assert len(inspect(conn).get_table_names()) == n_tables


def test_database_newer_than_code_is_a_clear_error(store_url: str) -> None:
    store = open_store(store_url)
    with store.begin(write=True) as conn:
        conn.execute(text("UPDATE llmspend_alembic_version SET version_num = 'zz_future'"))
    forget_store(store_url)
    with pytest.raises(SchemaTooNewError, match="newer llmspend"):
        open_store(store_url)
    with pytest.raises(SchemaTooNewError):
        llmspend.Tracker(store_url)


@pytest.mark.parametrize(
    "url, error, message",
    [
        ("not a url", ConfigError, "not a database URL"),
        ("nosuchdb://x/y", ConfigError, "unsupported database URL"),
        ("sqlite:////nonexistent-dir/sub/x.sqlite", StoreError, "does not exist"),
        ("postgresql+psycopg://u:secretpw@127.0.0.1:1/db", StoreError, "cannot"),
    ],
)
def test_bad_database_url_is_a_clear_error(url: str, error: type, message: str) -> None:
    with pytest.raises(error, match=message) as info:
        llmspend.Tracker(url)
    assert "secretpw" not in str(info.value)
    assert isinstance(info.value, LLMSpendError)


def test_env_database_url_is_used(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path / 'env.sqlite'}"
    monkeypatch.setenv("LLMSPEND_DATABASE_URL", url)
    assert llmspend.records().empty
    assert (tmp_path / "env.sqlite").exists()


def test_default_store_lives_in_llmspend_home(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMSPEND_HOME", str(tmp_path / "home"))
    assert llmspend.records().empty
    assert (tmp_path / "home" / "llmspend.sqlite").exists()


def test_unwritable_home_as_any_user(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A path below a regular file cannot be created, whoever we are (root included).
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setenv("LLMSPEND_HOME", str(blocker / "home"))
    with pytest.raises(StoreError, match="cannot create the llmspend data directory"):
        llmspend.records()


def test_sqlite_settings(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 's.sqlite'}"
    store = open_store(url)
    with store.begin() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 5000
    forget_store(url)


def test_ts_range_query_uses_the_ts_index(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 's.sqlite'}"
    open_store(url)
    con = sqlite3.connect(tmp_path / "s.sqlite")
    plan = " ".join(
        str(r)
        for r in con.execute(
            "EXPLAIN QUERY PLAN SELECT * FROM llmspend_usage WHERE ts >= ? AND ts < ? "
            "ORDER BY ts, id",
            ("2026-01-01", "2026-02-01"),
        )
    )
    con.close()
    assert "ix_llmspend_usage_ts" in plan
    forget_store(url)


@pytest.mark.postgres
def test_ts_range_query_uses_the_ts_index_on_postgres(pg_server) -> None:  # type: ignore[no-untyped-def]
    url = pg_server.create_database()
    store = open_store(url)
    with store.begin() as conn:
        conn.exec_driver_sql("SET enable_seqscan = off")
        plan = " ".join(
            r[0]
            for r in conn.exec_driver_sql(
                "EXPLAIN SELECT * FROM llmspend_usage "
                "WHERE ts >= '2026-01-01' AND ts < '2026-02-01'"
            )
        )
    assert "ix_llmspend_usage_ts" in plan
    forget_store(url)


@pytest.mark.usefixtures("patient_locks")
def test_concurrent_first_use_migrates_once(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'race.sqlite'}"
    code = "import sys, llmspend; t = llmspend.Tracker(sys.argv[1]); print(len(llmspend.records()))"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    for p in procs:
        _out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    eng = create_engine(url)
    with eng.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM llmspend_alembic_version").scalar() == 1
    eng.dispose()


def test_store_readable_without_install(tracker) -> None:  # type: ignore[no-untyped-def]
    df = llmspend.records()
    assert df.empty
    assert list(df.columns)[:4] == ["id", "ts", "request_id", "provider"]


def test_upgrade_from_the_oldest_schema_keeps_data(store_url: str) -> None:
    """A store made by the first release upgrades in place; its rows survive and count."""
    from alembic import command
    from alembic.config import Config

    from llmspend.store.engine import _create
    from llmspend.store.migrate import MIGRATIONS

    store = _create(store_url)
    with store.begin(write=True) as conn:
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0001")
        conn.exec_driver_sql(
            "INSERT INTO llmspend_usage (ts, provider, api, model, org_name, project_name, "
            "user_name, input_tokens, cached_input_tokens, cache_write_tokens, output_tokens, "
            "reasoning_tokens, cost_nanos, price_status, status, streamed, usage_estimated) "
            "VALUES ('2026-01-05 10:00:00.000000', 'openai', 'chat.completions', 'gpt-4o', "
            "'acme', 'churn', 'ana', 10, 0, 0, 5, 0, 1500, 'priced', 'ok', false, false)"
        )
    store.dispose()
    tracker = llmspend.Tracker(store_url)
    assert current_revisions(tracker.store) == upgrade(tracker.store)
    rows = llmspend.Tracker(store_url).records()
    assert list(rows.model) == ["gpt-4o"] and str(rows.cost_usd.iloc[0]) == "0.0000015"
    import llmspend.analytics as analytics
    from llmspend.tracker import set_tracker

    set_tracker(tracker)
    frame = analytics.cost_breakdown(by="model", since="2026-01-01", until="2026-02-01")
    assert str(frame.cost_usd.iloc[0]) == "0.0000015"  # the rollups were filled from history


def test_holds_in_flight_survive_the_reservation_table_migration(store_url: str) -> None:
    """0005 turns one hold row per period into one per call, and back, losing nothing held:
    a call held across the upgrade still settles, and an expired one is still reclaimed."""
    import datetime as dt

    from llmspend.call import Usage
    from llmspend.pipeline import begin_call
    from llmspend.timeutil import shift_clock
    from llmspend.tracker import get_tracker

    def holds(store: object) -> list[tuple[object, ...]]:
        with store.begin() as conn:  # type: ignore[attr-defined]
            return sorted(map(tuple, conn.exec_driver_sql("SELECT * FROM llmspend_reservations")))

    def reserved() -> list[object]:
        return [s.reserved_usd for s in llmspend.budget_status()]

    llmspend.install(store_url, org="acme", project="churn", user="ana")
    try:
        llmspend.set_budget("project", "acme/churn", "10", "month")
        llmspend.set_budget("user", "acme/ana", "10", "month")
        first = begin_call(
            "openai", "chat.completions", "gpt-4o-mini", payload="hi", max_output_tokens=10
        )
        second = begin_call(
            "openai", "chat.completions", "gpt-4o-mini", payload="hello", max_output_tokens=10
        )
        assert first is not None and second is not None
        one, two = first.estimate_nanos, second.estimate_nanos
        assert one and two and one != two
        before = reserved()
        assert [int(r * 10**9) for r in before] == [one + two, one + two]
        store = get_tracker().store
        (p1, p2) = sorted(first.reservation.periods)
        assert sorted((h[1], h[2]) for h in holds(store)) == sorted(
            [(f"{p1},{p2}", one), (f"{p1},{p2}", two)]
        )

        migrate(store, "0004", down=True)
        per_period = holds(store)
        assert sorted((h[2], h[3]) for h in per_period) == sorted(
            [(p1, one), (p2, one), (p1, two), (p2, two)]
        )
        migrate(store, "head")
        assert sorted((h[1], h[2]) for h in holds(store)) == sorted(
            [(f"{p1},{p2}", one), (f"{p1},{p2}", two)]
        )
        assert reserved() == before

        first.finish(Usage(input_tokens=1, output_tokens=1))  # settles what it still holds
        assert [int(r * 10**9) for r in reserved()] == [two, two]
        shift_clock(dt.timedelta(seconds=601))  # the second call's lease runs out
        assert reserved() == [0, 0]  # given back once, on both periods
        assert holds(store) == []
    finally:
        shift_clock(dt.timedelta(0))
        llmspend.uninstall()


def test_the_usage_index_migration_keeps_spooled_calls_replayed_once(store_url: str) -> None:
    """0007 folds the ts and record_uid indexes into one unique (ts, record_uid): down and
    up again with live rows in the table, a replayed call still meets its row."""
    import sqlalchemy as sa

    from llmspend.call import Usage
    from llmspend.pipeline import begin_call
    from llmspend.tracker import get_tracker
    from llmspend.usage import insert_once

    def indexes() -> set[tuple[str, tuple[str, ...], bool]]:
        insp = sa.inspect(store.engine)
        return {
            (i["name"], tuple(i["column_names"]), bool(i["unique"]))
            for i in insp.get_indexes("llmspend_usage")
        }

    llmspend.install(store_url, org="acme", project="churn", user="ana")
    try:
        store = get_tracker().store
        call = begin_call("openai", "chat.completions", "gpt-4o-mini", input_tokens=10)
        assert call is not None
        row = call.finish(Usage(input_tokens=10, output_tokens=5))
        assert row is not None
        assert indexes() == {("ix_llmspend_usage_ts_uid", ("ts", "record_uid"), True)}
        migrate(store, "0006", down=True)
        assert indexes() == {
            ("ix_llmspend_usage_ts", ("ts",), False),
            ("ix_llmspend_usage_record_uid", ("record_uid",), True),
        }
        migrate(store, "head")
        assert indexes() == {("ix_llmspend_usage_ts_uid", ("ts", "record_uid"), True)}
        with store.begin(write=True) as conn:
            assert not insert_once(conn, row)  # the spool replaying the same call
            assert insert_once(conn, {**row, "record_uid": "0" * 32})  # another call
        assert len(llmspend.records()) == 2
    finally:
        llmspend.uninstall()
