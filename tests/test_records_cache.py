"""records() on SQLite reads complete id ranges from a columnar copy in the user's cache
(llmspend.store.segments): the answer is the same as reading every row through SQL, for
any window, filter, column choice and result kind; any change to the rows made with plain
SQL, a damaged copy, another store at the same path or a cache that cannot be written all
fall back to the rows themselves."""

from __future__ import annotations

import datetime as dt
import os
import random
import shutil
import sqlite3
import stat
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

import llmspend
from llmspend.store import segments
from llmspend.store.engine import forget_store
from llmspend.tracker import Tracker, set_tracker
from llmspend.usage import RECORD_COLUMNS

SEGMENT = 64  # rows per segment in these tests (LLMSPEND_RECORDS_SEGMENT_ROWS)
USERS = ["ana", "bo", "cy", "dee", "eve"]
MODELS = [("openai", "gpt-4o-mini"), ("google", "gemini-2.5-flash"), ("anthropic", "claude-x")]


def _rows(n: int, seed: int) -> list[dict]:
    rnd = random.Random(seed)
    start = dt.datetime(2026, 3, 1)
    rows = []
    for i in range(n):
        provider, model = rnd.choice(MODELS)
        row = {
            # out of time order, with ties: ids do not follow time
            "ts": start + dt.timedelta(seconds=rnd.randint(0, 86400 * 20), microseconds=i % 3),
            "provider": provider,
            "model": model,
            "org": rnd.choice(["acme", "umbrella"]),
            "project": rnd.choice(["churn", "search", "ads"]),
            "user": rnd.choice(USERS),
            "input_tokens": rnd.randint(1, 10**6),
            "output_tokens": rnd.randint(0, 5000),
            "cost_usd": rnd.choice(
                [Decimal(rnd.randint(0, 10**13)).scaleb(-9), Decimal("0.0000015"), Decimal(0)]
            ),
            "status": rnd.choice(["ok", "ok", "error"]),
            "latency_ms": rnd.choice([None, rnd.random() * 5000]),
        }
        if i % 5 == 0:
            row["tags"] = {"team": rnd.choice(["red", "blue"])}
        if i % 7 == 0:
            row["request_id"] = f"req-{seed}-{i}"
        if i % 11 == 0:
            row["cost_usd"] = None
            row["price_status"] = "unknown"
        rows.append(row)
    return rows


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("LLMSPEND_RECORDS_SEGMENT_ROWS", str(SEGMENT))
    monkeypatch.delenv("LLMSPEND_RECORDS_CACHE", raising=False)
    return tmp_path / "cache" / "llmspend" / "columns"


@pytest.fixture
def store(store_url: str, cache: Path):  # type: ignore[no-untyped-def]
    """A tracker on a fresh store: SQLite and PostgreSQL."""
    t = Tracker(store_url, org="acme", project="churn", user="ana")
    set_tracker(t)
    yield t
    set_tracker(None)


@pytest.fixture
def sqlite_store(tmp_path: Path, cache: Path):  # type: ignore[no-untyped-def]
    url = f"sqlite:///{tmp_path / 'store.sqlite'}"
    t = Tracker(url, org="acme", project="churn", user="ana")
    set_tracker(t)
    yield t
    set_tracker(None)
    forget_store(url)


def _sql(store: Tracker, *statements: str) -> None:
    with store.store.engine.begin() as conn:
        for statement in statements:
            conn.exec_driver_sql(statement)


def _files(cache: Path) -> list[Path]:
    return sorted(cache.glob("*/*.arrow"))


def _through_sql(monkeypatch: pytest.MonkeyPatch, **kw: object) -> object:
    with monkeypatch.context() as m:
        m.setenv("LLMSPEND_RECORDS_CACHE", "0")
        return llmspend.records(**kw)


def _same(a: object, b: object) -> None:
    if isinstance(a, pa.Table):
        assert isinstance(b, pa.Table)
        assert a.schema == b.schema
        assert a.equals(b)
    else:
        assert isinstance(a, pd.DataFrame) and isinstance(b, pd.DataFrame)
        pd.testing.assert_frame_equal(a, b)


def _db(store: Tracker) -> str:
    return str(store.store.engine.url.database)


def test_a_full_read_writes_the_copy_and_later_reads_agree_with_sql(
    store: Tracker, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    llmspend.ingest(_rows(1000, seed=1))
    first = llmspend.records()
    files = _files(cache)
    assert len(files) == 1000 // SEGMENT  # every complete id range, not the last partial one
    _same(first, _through_sql(monkeypatch))
    # private: a 0700 directory of 0600 files
    assert stat.S_IMODE(files[0].parent.stat().st_mode) == 0o700
    assert {stat.S_IMODE(f.stat().st_mode) for f in files} == {0o600}
    stamp = {f: f.stat().st_mtime_ns for f in files}
    again = llmspend.records()
    _same(again, first)
    assert {f: f.stat().st_mtime_ns for f in files} == stamp  # read, not rewritten


def test_random_windows_filters_columns_and_kinds_agree_with_sql(
    store: Tracker, monkeypatch: pytest.MonkeyPatch
) -> None:
    llmspend.ingest(_rows(700, seed=2))
    llmspend.records()  # the copy of every complete range
    llmspend.ingest(_rows(150, seed=3))  # two more complete ranges, uncopied, and a tail
    rnd = random.Random(7)
    start = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    for _ in range(60):
        kw: dict[str, object] = {"as_": rnd.choice(["pandas", "arrow", "pandas-arrow"])}
        if rnd.random() < 0.5:
            kw["since"] = start + dt.timedelta(seconds=rnd.randint(-86400, 86400 * 21))
        if rnd.random() < 0.5:
            kw["until"] = start + dt.timedelta(seconds=rnd.randint(0, 86400 * 22))
        if rnd.random() < 0.3:  # a time in another zone: the same instant
            zone = dt.timezone(dt.timedelta(hours=rnd.choice([-7, 5, 9])))
            kw["since"] = (start + dt.timedelta(days=rnd.randint(0, 19))).astimezone(zone)
        if rnd.random() < 0.4:
            kw["user"] = rnd.sample(USERS, rnd.randint(1, 3))
        if rnd.random() < 0.3:
            kw["model"] = rnd.choice(MODELS)[1]
        if rnd.random() < 0.2:
            kw["status"] = "error"
        if rnd.random() < 0.5:
            kw["columns"] = rnd.sample(RECORD_COLUMNS, rnd.randint(1, 6))
        _same(llmspend.records(**kw), _through_sql(monkeypatch, **kw))


def test_a_narrow_first_read_writes_nothing(store: Tracker, cache: Path) -> None:
    llmspend.ingest(_rows(300, seed=4))
    llmspend.records(user="ana")
    llmspend.records(columns=["ts", "cost_usd"])
    llmspend.records(since="2026-03-05")
    assert _files(cache) == []


def test_turned_off_nothing_is_read_or_written(
    store: Tracker, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    llmspend.ingest(_rows(300, seed=5))
    monkeypatch.setenv("LLMSPEND_RECORDS_CACHE", "off")
    frame = llmspend.records()
    assert _files(cache) == []
    monkeypatch.delenv("LLMSPEND_RECORDS_CACHE")
    _same(llmspend.records(), frame)
    assert _files(cache)


_INSERT_AT = (
    "INSERT INTO llmspend_usage (id, ts, provider, api, model, org_name, project_name, "
    "user_name, input_tokens, cached_input_tokens, cache_write_tokens, output_tokens, "
    "reasoning_tokens, cost_nanos, price_status, status, streamed, usage_estimated) "
    "SELECT {id}, ts, provider, api, model, org_name, project_name, user_name, 1, 0, 0, 1, 0, "
    "42, 'imported', 'ok', streamed, usage_estimated FROM llmspend_usage WHERE id = 4"
)


@pytest.mark.parametrize(
    "change",
    [
        "UPDATE llmspend_usage SET cost_nanos = cost_nanos + 7 WHERE id = 5",
        "UPDATE llmspend_usage SET user_name = 'mallory' WHERE id = 70",
        "DELETE FROM llmspend_usage WHERE id = 3",
    ],
)
def test_a_change_made_with_plain_sql_is_seen(
    store: Tracker, monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    llmspend.ingest(_rows(400, seed=6))
    before = llmspend.records()
    _sql(store, change)
    after = llmspend.records()
    assert not after.equals(before)
    _same(after, _through_sql(monkeypatch))


def test_a_row_committed_late_inside_a_complete_range_is_seen(
    store: Tracker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL gives ids out before commit, so a row can arrive in a range already
    copied (here: an explicit id inside a gap); SQLite's trigger sees it, PostgreSQL's
    count does."""
    llmspend.ingest(_rows(100, seed=17))  # ids 1-100: range 1 is ids 64-127
    if store.store.is_sqlite:
        _sql(store, _INSERT_AT.format(id=300))  # appended past a gap: new ids are max + 1
    else:
        _sql(store, "SELECT setval('llmspend_usage_id_seq', 300)")
    llmspend.ingest(_rows(200, seed=18))
    before = llmspend.records()  # copies ranges 0-7 (2 to 4 empty: ids 128-300 unused)
    _sql(store, _INSERT_AT.format(id=110))
    after = llmspend.records()
    assert len(after) == len(before) + 1 and 110 in set(after.id)
    _same(after, _through_sql(monkeypatch))


def test_empty_ranges_are_copied_and_a_row_put_there_later_is_seen(
    store: Tracker, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ids a rolled-back batch used up leave empty ranges: they are copied too (the copy
    keeps helping past them), and a row that lands there later is read."""
    llmspend.ingest(_rows(100, seed=20))
    if store.store.is_sqlite:
        _sql(store, _INSERT_AT.format(id=400))
    else:
        _sql(store, "SELECT setval('llmspend_usage_id_seq', 400)")
    llmspend.ingest(_rows(300, seed=21))  # ids up to ~700: ranges 0-9 complete
    llmspend.records()
    assert len(_files(cache)) == 700 // SEGMENT
    stamp = {f: f.stat().st_mtime_ns for f in _files(cache)}
    _same(llmspend.records(as_="arrow"), _through_sql(monkeypatch, as_="arrow"))
    assert {f: f.stat().st_mtime_ns for f in _files(cache)} == stamp  # used as they are
    _sql(store, _INSERT_AT.format(id=200))  # into the empty range 3
    after = llmspend.records()
    assert 200 in set(after.id)
    _same(after, _through_sql(monkeypatch))


def test_a_huge_gap_in_ids_stops_the_copy_there(
    store: Tracker, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    llmspend.ingest(_rows(200, seed=22))
    _sql(store, _INSERT_AT.format(id=1 << 40))  # an explicit id far past the others
    frame = llmspend.records()
    # the ranges with rows (the last one now complete too), none of the empty ones after
    assert len(_files(cache)) == 200 // SEGMENT + 1
    _same(frame, _through_sql(monkeypatch))


def test_the_generation_triggers_are_in_place(store: Tracker) -> None:
    """A future migration that rebuilds the usage table must bring these back."""
    with store.store.engine.connect() as conn:
        if store.store.is_sqlite:
            names = conn.exec_driver_sql(
                "SELECT name FROM sqlite_master WHERE type = 'trigger' "
                "AND tbl_name = 'llmspend_usage'"
            ).scalars()
            expected = {
                "llmspend_usage_updated",
                "llmspend_usage_deleted",
                "llmspend_usage_inserted_inside",
            }
        else:
            names = conn.exec_driver_sql(
                "SELECT tgname FROM pg_trigger WHERE tgrelid = 'llmspend_usage'::regclass "
                "AND NOT tgisinternal"
            ).scalars()
            expected = {"llmspend_usage_changed"}
        assert expected <= set(names)
    llmspend.ingest(_rows(1, seed=24))
    before = _generation(store)
    _sql(store, "UPDATE llmspend_usage SET model = model")  # the same values: still a change
    assert _generation(store) != before


def _generation(store: Tracker) -> int:
    with store.store.engine.connect() as conn:
        return int(
            conn.exec_driver_sql("SELECT generation FROM llmspend_usage_generation").scalar()
        )


def test_a_store_file_copied_over_is_another_store_file(
    sqlite_store: Tracker, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A backup restored by copying the file (a new inode) is not read from the old copy,
    even where every range's last row is the same."""
    path = _db(sqlite_store)
    llmspend.ingest(_rows(300, seed=23))
    llmspend.records()
    stamp = {f: f.stat().st_mtime_ns for f in _files(cache)}
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    shutil.copyfile(path, path + ".restored")
    os.replace(path + ".restored", path)
    _same(llmspend.records(), _through_sql(monkeypatch))
    assert all(f.stat().st_mtime_ns != stamp[f] for f in _files(cache))  # written again


def test_llmspend_s_own_writes_keep_the_copy(
    installed, sim, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    import openai

    def generation() -> tuple:
        with sqlite3.connect(_db(installed)) as db:
            return tuple(
                db.execute("SELECT store_uid, generation FROM llmspend_usage_generation").fetchone()
            )

    llmspend.ingest(_rows(200, seed=8))
    llmspend.records()
    stamp = {f: f.stat().st_mtime_ns for f in _files(cache)}
    before = generation()
    llmspend.ingest(_rows(200, seed=9))  # the column path
    installed.ingest(_rows(3, seed=10))  # the row path
    client = openai.OpenAI(api_key="x", base_url=sim.openai_base_url, max_retries=0)
    for _ in range(3):  # a live call's row, through the SDK tap
        client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], max_tokens=5
        )
    assert generation() == before
    frame = llmspend.records()
    assert {f: f.stat().st_mtime_ns for f in _files(cache) if f in stamp} == stamp
    assert len(frame) == 406 and (frame.model == "gpt-4o-mini").sum() >= 3
    _same(frame, _through_sql(monkeypatch))


def test_a_restored_backup_written_on_is_told_apart(
    sqlite_store: Tracker, cache: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = _db(sqlite_store)
    llmspend.ingest(_rows(100, seed=11))  # one complete range and a partial one
    backup = tmp_path / "backup.sqlite"
    with sqlite3.connect(path) as src, sqlite3.connect(backup) as dst:
        src.backup(dst)
    llmspend.ingest(_rows(100, seed=12))
    llmspend.records()  # copies ranges 0-2, range 1 and 2 with these rows
    assert len(_files(cache)) == 3
    with sqlite3.connect(backup) as src, sqlite3.connect(path) as dst:
        src.backup(dst)  # the backup restored over the store (sqlite3's .restore), written on
    llmspend.ingest(_rows(100, seed=13))  # other rows at the same ids
    _same(llmspend.records(), _through_sql(monkeypatch))
    _same(llmspend.records(as_="arrow"), _through_sql(monkeypatch, as_="arrow"))


def test_a_damaged_copy_falls_back_to_the_rows(
    store: Tracker, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    llmspend.ingest(_rows(300, seed=14))
    llmspend.records()
    files = _files(cache)
    files[1].write_bytes(files[1].read_bytes()[:200])  # cut short
    files[2].write_bytes(b"not arrow at all")
    _same(llmspend.records(as_="arrow"), _through_sql(monkeypatch, as_="arrow"))
    # an intact footer over a damaged body
    data = bytearray(files[0].read_bytes())
    data[600:900] = bytes(300)
    files[0].write_bytes(bytes(data))
    _same(llmspend.records(), _through_sql(monkeypatch))


def test_a_cache_that_cannot_be_written_is_no_copy(
    store: Tracker, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache directory would be")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    llmspend.ingest(_rows(300, seed=15))
    frame = llmspend.records()
    _same(frame, _through_sql(monkeypatch))
    assert blocker.read_text().startswith("a file")


def test_segment_size_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    from llmspend.errors import ConfigError

    monkeypatch.delenv("LLMSPEND_RECORDS_SEGMENT_ROWS", raising=False)
    assert segments.segment_rows() == segments.SEGMENT_ROWS
    monkeypatch.setenv("LLMSPEND_RECORDS_SEGMENT_ROWS", "128")
    assert segments.segment_rows() == 128
    for junk in ("nonsense", "0", "-5", "1.5"):
        monkeypatch.setenv("LLMSPEND_RECORDS_SEGMENT_ROWS", junk)
        with pytest.raises(ConfigError, match="LLMSPEND_RECORDS_SEGMENT_ROWS"):
            segments.segment_rows()


def test_an_empty_read_is_typed_as_rows_are(store: Tracker) -> None:
    """The tail read on PostgreSQL goes by COPY on the transaction's own connection; with
    no rows it still has records()' types (decimal money, UTC times)."""
    from llmspend.store import arrowio

    llmspend.ingest(_rows(10, seed=19))
    with store.store.begin() as conn:
        rows = arrowio.read_usage(conn, RECORD_COLUMNS, ["id > 0"], own_snapshot=True)
        none = arrowio.read_usage(conn, RECORD_COLUMNS, ["id < 0"], own_snapshot=True)
    assert rows.num_rows == 10 and none.num_rows == 0
    assert none.schema == rows.schema
    assert none.schema.field("cost_usd").type == pa.decimal128(38, 9)


def test_rows_at_negative_ids_are_read(store: Tracker, monkeypatch: pytest.MonkeyPatch) -> None:
    """An explicit id below 0 (an import that kept another system's ids) lies before every
    copied range: records() still has it."""
    llmspend.ingest(_rows(300, seed=20))
    llmspend.records()  # the copy of every complete range
    _sql(store, _INSERT_AT.format(id=-5))
    after = llmspend.records()
    assert len(after) == 301 and -5 in set(after.id)
    _same(after, _through_sql(monkeypatch))
    _same(llmspend.records(as_="arrow"), _through_sql(monkeypatch, as_="arrow"))


def _rewrite(path: Path, change: object) -> None:
    """Write ``path`` again with its table and metadata passed through ``change``."""
    import pyarrow.ipc as ipc

    with pa.memory_map(str(path)) as source:
        table = ipc.open_file(source).read_all()
    table = change(table, {k.decode(): v.decode() for k, v in table.schema.metadata.items()})
    with pa.OSFile(str(path), "wb") as sink, ipc.new_file(sink, table.schema) as w:
        w.write_table(table)


@pytest.mark.parametrize(
    "change",
    [
        lambda t, m: t.replace_schema_metadata({k: v for k, v in m.items() if k != "min_ts"}),
        lambda t, m: t.replace_schema_metadata({**m, "max_ts": "soon"}),
        lambda t, m: t.replace_schema_metadata({**m, "columns": "not json"}),
        lambda t, m: t.replace_schema_metadata({**m, "columns": "5"}),
        lambda t, m: t.replace_schema_metadata({k: v for k, v in m.items() if k != "last_id"}),
        lambda t, m: t.set_column(
            t.schema.get_field_index("input_tokens"),
            "input_tokens",
            t.column("input_tokens").cast(pa.int32()),
        ).replace_schema_metadata(m),
    ],
    ids=["no-min_ts", "bad-max_ts", "columns-not-json", "columns-not-a-list", "no-last_id",
         "another-type"],
)  # fmt: skip
def test_a_copy_with_other_metadata_or_types_falls_back_to_the_rows(
    store: Tracker, cache: Path, monkeypatch: pytest.MonkeyPatch, change: object
) -> None:
    """A file of the right format, generation and size whose metadata or column types are
    not what records() writes (damaged, or written by another version) is not an error."""
    llmspend.ingest(_rows(300, seed=21))
    llmspend.records()
    _rewrite(_files(cache)[1], change)
    for kw in ({"until": "2026-03-12"}, {"since": "2026-03-08"}, {"as_": "arrow"}, {}):
        _same(llmspend.records(**kw), _through_sql(monkeypatch, **kw))


def test_a_copy_replaced_after_it_was_checked_is_not_read(
    store: Tracker, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process reading in an older snapshot (before a change made with plain SQL)
    writes its copy over the file between this read's checks and its load: the file
    loaded is not the one checked, and is not used."""
    llmspend.ingest(_rows(300, seed=22))
    llmspend.records()
    old = {f: f.read_bytes() for f in _files(cache)}  # the copies before the change
    _sql(store, "UPDATE llmspend_usage SET cost_nanos = cost_nanos + 7 WHERE id = 70")
    llmspend.records()  # the copies after it
    real = segments._valid_prefix

    def checked_then_replaced(*args: object, **kw: object) -> object:
        found = real(*args, **kw)  # type: ignore[arg-type]
        for f, data in old.items():
            f.write_bytes(data)
        return found

    monkeypatch.setattr(segments, "_valid_prefix", checked_then_replaced)
    got = llmspend.records(until="2026-04-01")
    monkeypatch.setattr(segments, "_valid_prefix", real)
    _same(got, _through_sql(monkeypatch, until="2026-04-01"))


def test_a_copy_with_metadata_that_is_not_text_falls_back_to_the_rows(
    store: Tracker, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pyarrow.ipc as ipc

    llmspend.ingest(_rows(300, seed=23))
    llmspend.records()
    path = _files(cache)[1]
    with pa.memory_map(str(path)) as source:
        table = ipc.open_file(source).read_all()
    table = table.replace_schema_metadata({**table.schema.metadata, b"\xff": b"\xfe"})
    with pa.OSFile(str(path), "wb") as sink, ipc.new_file(sink, table.schema) as w:
        w.write_table(table)
    _same(llmspend.records(), _through_sql(monkeypatch))


def test_more_copies_than_a_statement_binds(
    sqlite_store: Tracker, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The copies' last rows are looked up a bounded number at a time: over 999 copies (65M
    rows in ranges of 65,536) on a SQLite that binds at most 999 values a statement."""
    from sqlalchemy import event

    def old_limit(dbapi_connection, record) -> None:  # type: ignore[no-untyped-def]
        dbapi_connection.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999)

    event.listen(sqlite_store.store.engine, "connect", old_limit)
    sqlite_store.store.engine.dispose()
    monkeypatch.setenv("LLMSPEND_RECORDS_SEGMENT_ROWS", "2")
    llmspend.ingest(_rows(2001, seed=24))
    llmspend.records()
    assert len(_files(cache)) == 1000
    _same(llmspend.records(), _through_sql(monkeypatch))


def test_a_restored_backup_given_corrected_rows_is_told_apart(
    sqlite_store: Tracker, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A backup restored and the same rows ingested again, corrected in a column the old
    signature left out (project): every column of a range's last row is compared."""
    path = _db(sqlite_store)
    llmspend.ingest(_rows(100, seed=25))
    backup = tmp_path / "backup.sqlite"
    with sqlite3.connect(path) as src, sqlite3.connect(backup) as dst:
        src.backup(dst)
    wrong = [{**row, "project": "wrong"} for row in _rows(200, seed=26)]
    llmspend.ingest(wrong)
    llmspend.records()  # copies of ranges 0-3, ranges 1-3 with the wrong projects
    with sqlite3.connect(backup) as src, sqlite3.connect(path) as dst:
        src.backup(dst)
    llmspend.ingest([{**row, "project": "right"} for row in _rows(200, seed=26)])
    got = llmspend.records()
    assert "wrong" not in set(got.project)
    _same(got, _through_sql(monkeypatch))
