"""records()'s columnar copies name their store and when they were last used; writing a copy
removes those of SQLite stores that are gone or replaced and those unused too long, and
leaves alone whatever is not plainly one of ours (llmspend.store.segment_prune)."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import stat
import time
from pathlib import Path

import pytest

import llmspend
from llmspend.errors import ConfigError
from llmspend.store import segment_prune, segments
from llmspend.store.engine import forget_store
from llmspend.tracker import Tracker, set_tracker
from tests import test_records_cache as base
from tests.test_records_cache import SEGMENT, _db, _files, _rows, _same, _through_sql

# the fixtures of tests/test_records_cache.py: a temporary cache, a store (both kinds), SQLite
cache = base.cache
store = base.store
sqlite_store = base.sqlite_store

DAY = 86400


def _dirs(cache: Path) -> set[str]:
    return {p.name for p in cache.iterdir()} if cache.exists() else set()


def _only_dir(cache: Path) -> Path:
    (found,) = [p for p in cache.iterdir() if p.is_dir()]
    return found


def _age(folder: Path, days: float) -> None:
    """Make ``folder`` and everything in it look last modified ``days`` ago."""
    then = time.time() - days * DAY
    for p in [*folder.iterdir(), folder]:
        os.utime(p, (then, then), follow_symlinks=False)


def _other_store_writes_a_copy(tmp_path: Path, name: str = "other.sqlite") -> Path:
    """Another SQLite store makes its copy (the moment pruning runs); its directory."""
    url = f"sqlite:///{tmp_path / name}"
    t = Tracker(url, org="acme", project="churn", user="ana")
    try:
        set_tracker(t)
        llmspend.ingest(_rows(2 * SEGMENT + 5, seed=99))
        llmspend.records()
        return segments.cache_dir(_uid(tmp_path / name))
    finally:
        set_tracker(None)
        forget_store(url)


def _uid(path: Path) -> str:
    with sqlite3.connect(path) as db:
        return str(db.execute("SELECT store_uid FROM llmspend_usage_generation").fetchone()[0])


def _copy_of_a_store(tmp_path: Path, name: str) -> tuple[Path, Path]:
    """A SQLite store at ``name`` with its copy made, closed: (its file, its copy)."""
    url = f"sqlite:///{tmp_path / name}"
    t = Tracker(url, org="acme", project="churn", user="ana")
    try:
        set_tracker(t)
        llmspend.ingest(_rows(3 * SEGMENT, seed=7))
        llmspend.records()
    finally:
        set_tracker(None)
        forget_store(url)
    folder = segments.cache_dir(_uid(tmp_path / name))
    assert folder.is_dir() and list(folder.glob("*.arrow"))
    return tmp_path / name, folder


def test_a_copy_names_its_store_privately(store: Tracker, cache: Path) -> None:
    llmspend.ingest(_rows(300, seed=1))
    llmspend.records()
    origin = _only_dir(cache) / segment_prune.ORIGIN
    assert stat.S_IMODE(origin.stat().st_mode) == 0o600
    found = json.loads(origin.read_text())
    url = store.store.engine.url
    if url.get_backend_name() == "sqlite":
        st = os.stat(_db(store))
        assert found == {
            "store": "sqlite",
            "path": os.path.abspath(_db(store)),
            "file": f"{st.st_dev}:{st.st_ino}",
        }
    else:
        assert found["store"] == "postgresql"
        assert found.get("dbname") == url.database
        assert set(found) <= {"store", "host", "port", "dbname"}  # never a password


def test_a_deleted_store_s_copy_goes_at_the_next_copy_written(cache: Path, tmp_path: Path) -> None:
    path, folder = _copy_of_a_store(tmp_path, "gone.sqlite")
    _, kept = _copy_of_a_store(tmp_path, "kept.sqlite")
    for p in path.parent.glob(path.name + "*"):  # the file, and its -wal/-shm if any
        p.unlink()
    mine = _other_store_writes_a_copy(tmp_path)
    assert not folder.exists()
    assert kept.is_dir() and mine.is_dir()
    assert _dirs(cache) == {kept.name, mine.name}


def test_a_store_file_replaced_by_another_file_loses_its_copy(cache: Path, tmp_path: Path) -> None:
    path, folder = _copy_of_a_store(tmp_path, "replaced.sqlite")
    shutil.copyfile(path, tmp_path / "copy.sqlite")
    os.replace(tmp_path / "copy.sqlite", path)  # the same path, another file (inode)
    _other_store_writes_a_copy(tmp_path)
    assert not folder.exists()


def test_a_moved_store_file_keeps_its_copy(cache: Path, tmp_path: Path) -> None:
    path, folder = _copy_of_a_store(tmp_path, "before.sqlite")
    moved = tmp_path / "after.sqlite"
    os.rename(path, moved)  # the same file: its copy still serves it
    url = f"sqlite:///{moved}"
    t = Tracker(url, org="acme", project="churn", user="ana")
    set_tracker(t)
    try:
        stamp = {f: f.stat().st_mtime_ns for f in folder.glob("*.arrow")}
        llmspend.records(until="2027-01-01")  # read from the copy, which learns the new path
        assert {f: f.stat().st_mtime_ns for f in folder.glob("*.arrow")} == stamp
    finally:
        set_tracker(None)
        forget_store(url)
    assert json.loads((folder / segment_prune.ORIGIN).read_text())["path"] == str(moved)
    _other_store_writes_a_copy(tmp_path)
    assert folder.is_dir()


def test_an_unused_copy_goes_after_the_limit(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, old = _copy_of_a_store(tmp_path, "old.sqlite")
    _, recent = _copy_of_a_store(tmp_path, "recent.sqlite")
    _, legacy = _copy_of_a_store(tmp_path, "legacy.sqlite")
    (legacy / segment_prune.ORIGIN).unlink()  # made before copies named their store
    _age(old, 31)
    _age(recent, 29)
    _age(legacy, 31)
    _other_store_writes_a_copy(tmp_path, "a.sqlite")
    assert not old.exists() and not legacy.exists()
    assert recent.is_dir()
    monkeypatch.setenv("LLMSPEND_RECORDS_CACHE_DAYS", "7.5")
    _other_store_writes_a_copy(tmp_path, "b.sqlite")
    assert not recent.exists()


def test_a_copy_being_written_without_its_origin_yet_is_left(cache: Path, tmp_path: Path) -> None:
    """A directory whose store is gone but which has no origin file (another process is
    still writing it, or an older version wrote it) is judged by its age only."""
    path, folder = _copy_of_a_store(tmp_path, "busy.sqlite")
    (folder / segment_prune.ORIGIN).unlink()
    path.unlink()
    _other_store_writes_a_copy(tmp_path)
    assert folder.is_dir()


def test_a_used_copy_is_kept_and_marked_at_most_daily(
    sqlite_store: Tracker, cache: Path, tmp_path: Path
) -> None:
    llmspend.ingest(_rows(300, seed=2))
    llmspend.records()
    folder = _only_dir(cache)
    origin = folder / segment_prune.ORIGIN
    fresh = origin.stat().st_mtime_ns
    llmspend.records(until="2027-01-01")  # used the same day: nothing written
    assert origin.stat().st_mtime_ns == fresh
    _age(folder, 40)
    aged = origin.stat().st_mtime_ns
    stamp = {f: f.stat().st_mtime_ns for f in _files(cache)}
    llmspend.records(until="2027-01-01")  # used after 40 days: marked
    assert origin.stat().st_mtime_ns > aged
    assert {f: f.stat().st_mtime_ns for f in _files(cache)} == stamp  # only the mark
    marked = origin.stat().st_mtime_ns
    llmspend.records(columns=["ts", "cost_usd"])
    assert origin.stat().st_mtime_ns == marked
    _other_store_writes_a_copy(tmp_path)
    assert folder.is_dir()


def test_what_is_not_ours_is_left_alone(cache: Path, tmp_path: Path) -> None:
    cache.mkdir(parents=True)
    uid = "ab" * 16
    stray_dir = cache / "notes"
    stray_dir.mkdir()
    (stray_dir / "1-0.arrow").write_bytes(b"x")
    (cache / "README").write_text("mine")
    (cache / uid).write_text("a file with a store's name")
    mixed = cache / ("cd" * 16)  # a store's name, and someone else's file inside
    mixed.mkdir()
    (mixed / "64-0.arrow").write_bytes(b"x")
    (mixed / "keep.txt").write_text("mine")
    nested = cache / ("ef" * 16)  # a store's name, a directory inside
    (nested / "sub").mkdir(parents=True)
    for p in (stray_dir, mixed, nested, cache / "README", cache / uid):
        os.utime(p, (0, 0))
    _age(mixed, 400)
    _age(stray_dir, 400)
    _other_store_writes_a_copy(tmp_path)
    assert (stray_dir / "1-0.arrow").exists() and (cache / "README").exists()
    assert (cache / uid).read_text().startswith("a file")
    assert (mixed / "keep.txt").exists() and (mixed / "64-0.arrow").exists()
    assert (nested / "sub").is_dir()


def test_symlinks_are_not_followed(cache: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "64-0.arrow").write_bytes(b"someone's data")
    (outside / "origin.json").write_text('{"store": "sqlite", "path": "/gone", "file": "1:2"}')
    _age(outside, 400)
    cache.mkdir(parents=True)
    linked = cache / ("12" * 16)
    linked.symlink_to(outside, target_is_directory=True)  # a store's name, a link out
    holder = cache / ("34" * 16)
    holder.mkdir()
    (holder / "64-1.arrow").symlink_to(outside / "64-0.arrow")  # a copy's name, a link out
    (holder / "origin.json").write_text('{"store": "sqlite", "path": "/gone", "file": "1:2"}')
    _age(holder, 400)
    _other_store_writes_a_copy(tmp_path)
    assert linked.is_symlink() and holder.is_dir()
    assert (outside / "64-0.arrow").read_bytes() == b"someone's data"
    assert (outside / "origin.json").exists()


def test_the_days_setting(sqlite_store: Tracker, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LLMSPEND_RECORDS_CACHE_DAYS", raising=False)
    assert segment_prune.cache_days() == segment_prune.CACHE_DAYS == 30
    monkeypatch.setenv("LLMSPEND_RECORDS_CACHE_DAYS", "0.5")
    assert segment_prune.cache_days() == 0.5
    llmspend.ingest(_rows(200, seed=3))
    for junk in ("nonsense", "0", "-5", "nan"):
        monkeypatch.setenv("LLMSPEND_RECORDS_CACHE_DAYS", junk)
        with pytest.raises(ConfigError, match="LLMSPEND_RECORDS_CACHE_DAYS"):
            segment_prune.cache_days()
        with pytest.raises(ConfigError, match="LLMSPEND_RECORDS_CACHE_DAYS"):
            llmspend.records()


def test_pruning_that_fails_never_fails_records(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, folder = _copy_of_a_store(tmp_path, "gone.sqlite")
    path.unlink()

    def refused(_: Path) -> bool:
        raise PermissionError(13, "Permission denied")

    def broken(*_: object) -> bool:
        raise RuntimeError("a bug in the housekeeping")

    with monkeypatch.context() as m:
        m.setattr(segment_prune, "_remove", refused)
        mine = _other_store_writes_a_copy(tmp_path, "a.sqlite")
        assert folder.is_dir() and mine.is_dir()
        m.setattr(segment_prune, "_stale", broken)
        _other_store_writes_a_copy(tmp_path, "b.sqlite")
        assert folder.is_dir()
    # the origin file cannot be written (a directory in its place): the copy still serves
    url = f"sqlite:///{tmp_path / 'c.sqlite'}"
    t = Tracker(url, org="acme", project="churn", user="ana")
    set_tracker(t)
    try:
        llmspend.ingest(_rows(300, seed=4))
        first = llmspend.records(until="2027-01-01")  # no copy yet
        blocked = segments.cache_dir(_uid(tmp_path / "c.sqlite")) / segment_prune.ORIGIN
        blocked.mkdir(parents=True)
        _same(llmspend.records(), _through_sql(monkeypatch))
        _same(llmspend.records(until="2027-01-01"), first)
        assert blocked.is_dir() and list(blocked.parent.glob("*.arrow"))
    finally:
        set_tracker(None)
        forget_store(url)
    assert not folder.exists()  # pruned once removing works again


def test_a_copy_removed_while_it_is_written_falls_back_to_the_rows(
    sqlite_store: Tracker, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process prunes the directory while this one writes it: the files not
    written are read from the store, the answer is the same."""
    llmspend.ingest(_rows(400, seed=5))
    real = segments._write
    calls = []

    def pruned_meanwhile(path: Path, table: object) -> None:
        calls.append(path)
        if len(calls) == 3:
            assert segment_prune._remove(path.parent)  # what prune() does to it
        real(path, table)

    monkeypatch.setattr(segments, "_write", pruned_meanwhile)
    got = llmspend.records()
    monkeypatch.setattr(segments, "_write", real)
    _same(got, _through_sql(monkeypatch))
    assert len(calls) == 3 and not _files(cache)
    _same(llmspend.records(), _through_sql(monkeypatch))  # written again
    assert len(_files(cache)) == 400 // SEGMENT


def test_a_copy_removed_while_it_is_read_falls_back_to_the_rows(
    sqlite_store: Tracker, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    llmspend.ingest(_rows(400, seed=6))
    llmspend.records()
    real = segments._valid_prefix

    def checked_then_pruned(*args: object, **kw: object) -> object:
        found = real(*args, **kw)  # type: ignore[arg-type]
        assert segment_prune._remove(_only_dir(cache))
        return found

    monkeypatch.setattr(segments, "_valid_prefix", checked_then_pruned)
    got = llmspend.records(until="2027-01-01")
    monkeypatch.setattr(segments, "_valid_prefix", real)
    _same(got, _through_sql(monkeypatch, until="2027-01-01"))
