"""The command line used the way a demanding user would: negative limits, ``| head``, a
locked or read-only store, ``export -`` and targets that are not regular files."""

from __future__ import annotations

import io
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import llmspend
from llmspend.budgets import manage


def _budgets(url: str) -> list[manage.Budget]:
    return manage.list_budgets(llmspend.Tracker(url).store)


def _set(url: str, limit: int) -> None:
    manage.set_budget(llmspend.Tracker(url).store, "org", "acme", limit)


def cli(url: str | None, *argv: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``llmspend ARGV --database-url URL`` as a user runs it, with ``env`` added."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("LLMSPEND_")}
    base |= {"LLMSPEND_USER": "cli-tester", **env}
    cmd = [sys.executable, "-m", "llmspend", *argv]
    if url:
        cmd += ["--database-url", url]
    return subprocess.run(cmd, capture_output=True, text=True, env=base, timeout=120)


def _rows(n: int) -> list[dict[str, object]]:
    return [
        {
            "ts": f"2026-05-01T{i % 24:02d}:00:00Z",
            "provider": "openai",
            "model": "gpt-4o-mini",
            "org": "acme",
            "project": "churn",
            "user": f"u{i % 3}",
            "input_tokens": 100 + i,
            "output_tokens": 10,
            "cost_usd": "0.000123",
        }
        for i in range(n)
    ]


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'store.sqlite'}"


@pytest.mark.parametrize(
    "argv",
    [
        ("budget", "set", "project", "acme/churn", "-5/month"),
        ("budget", "set", "project", "acme/churn", "-0.5/day", "--soft"),
        ("budget", "set", "project", "acme/churn", "-1,000"),
        ("budget", "update", "project", "acme/churn", "--limit", "-5/month"),
    ],
)
def test_a_negative_limit_is_named_as_such(sqlite_url: str, argv: tuple[str, ...]) -> None:
    assert cli(sqlite_url, "budget", "set", "project", "acme/churn", "10/month").returncode == 0
    out = cli(sqlite_url, *argv)
    assert out.returncode == 1, out.stderr
    assert out.stderr.strip().startswith("llmspend: error: limit must be greater than 0")
    assert "required" not in out.stderr and "expected one argument" not in out.stderr
    (budget,) = _budgets(sqlite_url)
    assert (budget.limit_usd, budget.period) == (10, "month")  # unchanged


def test_head_closing_the_pipe_is_quiet(sqlite_url: str) -> None:
    """``llmspend export - | head -1``: no BrokenPipeError traceback, exit 141 (SIGPIPE)."""
    llmspend.Tracker(sqlite_url).ingest(_rows(5000))  # far more than a pipe's buffer holds
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMSPEND_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "llmspend", "export", "-", "--database-url", sqlite_url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline().startswith(b"id,ts,")
    proc.stdout.close()  # what `head -1` does
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141
    assert "Traceback" not in err and "BrokenPipe" not in err, err


def test_broken_pipe_while_printing_a_table(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from llmspend.cli import main

    class GoneReader(io.StringIO):
        def write(self, s: str) -> int:
            raise BrokenPipeError(32, "Broken pipe")

    _set(sqlite_url, 5)
    monkeypatch.setattr(sys, "stdout", GoneReader())
    assert main(["budget", "list", "--database-url", sqlite_url]) == 141
    assert capsys.readouterr().err == ""


def test_a_locked_store_is_one_line(tmp_path: Path, sqlite_url: str) -> None:
    _set(sqlite_url, 5)
    holder = sqlite3.connect(tmp_path / "store.sqlite", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        out = cli(
            sqlite_url, "budget", "set", "org", "acme", "7", LLMSPEND_SQLITE_BUSY_TIMEOUT="100"
        )
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert out.returncode == 1
    assert "Traceback" not in out.stderr, out.stderr
    assert out.stderr.strip().splitlines() == [
        f"llmspend: error: the store {sqlite_url} is locked by another process; try again when "
        "it is free (LLMSPEND_SQLITE_BUSY_TIMEOUT, in ms, sets how long to wait)"
    ]
    (budget,) = _budgets(sqlite_url)
    assert budget.limit_usd == 5


def test_a_read_only_store_is_one_line(tmp_path: Path, sqlite_url: str) -> None:
    _set(sqlite_url, 5)
    read_only = f"sqlite:///file:{tmp_path / 'store.sqlite'}?mode=ro&uri=true"
    out = cli(read_only, "budget", "status")
    assert out.returncode == 0 and "$5.00" in out.stdout, out.stderr  # reading works
    out = cli(read_only, "budget", "set", "org", "acme", "7")
    assert out.returncode == 1
    assert "Traceback" not in out.stderr, out.stderr
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith(f"llmspend: error: the store {read_only} is read-only:")


def test_export_dash_writes_csv_to_stdout(sqlite_url: str) -> None:
    llmspend.Tracker(sqlite_url).ingest(_rows(3))
    out = cli(sqlite_url, "export", "-", "--user", "u1")
    assert out.returncode == 0, out.stderr
    frame = pd.read_csv(io.StringIO(out.stdout))
    assert list(frame.user) == ["u1"] and str(frame.cost_usd.iloc[0]) == "0.000123"
    assert out.stderr.strip() == "exported 1 records to stdout"
    assert not Path("-").exists()


def test_export_to_a_named_pipe_writes_into_it(tmp_path: Path, sqlite_url: str) -> None:
    """A target that is not a regular file (a FIFO, ``/dev/stdout``) is written in place,
    not replaced by a renamed temporary file (as root, that replaced ``/dev/stdout``)."""
    llmspend.Tracker(sqlite_url).ingest(_rows(2))
    fifo = tmp_path / "rows.csv"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    keep_open = os.open(fifo, os.O_WRONLY)  # no EOF before the export has written
    with os.fdopen(reader, "rb") as f:
        try:
            out = cli(sqlite_url, "export", str(fifo))
        finally:
            os.close(keep_open)
        os.set_blocking(reader, True)
        data = f.read()
    assert out.returncode == 0, out.stderr
    assert Path(fifo).is_fifo()
    assert len(pd.read_csv(io.BytesIO(data))) == 2
    assert out.stdout.strip() == f"exported 2 records to {fifo}"


def test_export_names_a_window_that_ends_before_it_begins(sqlite_url: str, tmp_path: Path) -> None:
    target = tmp_path / "e.csv"
    out = cli(sqlite_url, "export", str(target), "--since", "7d", "--until", "30d")
    assert out.returncode == 1
    assert "must be before until" in out.stderr and "Traceback" not in out.stderr
    assert not target.exists()


def test_budget_update_with_empty_values(sqlite_url: str) -> None:
    """``--alert ''`` turns the alerts off, as in ``budget set`` (update ignored it and kept
    the old thresholds); an empty ``--limit``, ``--period`` or ``--tz`` is an error, not
    skipped while the other changes are made."""
    assert cli(sqlite_url, "budget", "set", "org", "acme", "10/month").returncode == 0
    for flag in ("--limit", "--period", "--tz"):
        out = cli(sqlite_url, "budget", "update", "org", "acme", flag, "", "--soft")
        assert out.returncode == 1 and out.stderr.startswith("llmspend: error:"), flag
    out = cli(sqlite_url, "budget", "set", "org", "acme", "10", "--period", "")
    assert out.returncode == 1 and "unknown period ''" in out.stderr
    (budget,) = _budgets(sqlite_url)
    assert (budget.mode, budget.period, budget.timezone) == ("hard", "month", "UTC")
    out = cli(sqlite_url, "budget", "update", "org", "acme", "--alert", "")
    assert out.returncode == 0, out.stderr
    assert "alerts at none" in out.stdout
    (budget,) = _budgets(sqlite_url)
    assert budget.thresholds == ()


def test_export_dash_pipes_into_import_dash(sqlite_url: str, tmp_path: Path) -> None:
    """``llmspend export - ... | llmspend import - --database-url OTHER``, exactly."""
    llmspend.Tracker(sqlite_url).ingest(_rows(4))
    exported = cli(sqlite_url, "export", "-", "--user", "u0")
    assert exported.returncode == 0, exported.stderr
    other = f"sqlite:///{tmp_path / 'other.sqlite'}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMSPEND_")}
    out = subprocess.run(
        [sys.executable, "-m", "llmspend", "import", "-", "--database-url", other],
        input=exported.stdout,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "imported 2 records from stdin"
    a = llmspend.Tracker(sqlite_url).records(user="u0").drop(columns=["id"])
    b = llmspend.Tracker(other).records().drop(columns=["id"])
    pd.testing.assert_frame_equal(a, b)
    out = subprocess.run(
        [sys.executable, "-m", "llmspend", "import", "-", "--database-url", other],
        input="",
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert out.returncode == 1
    assert out.stderr.startswith("llmspend: error: cannot read stdin as csv")


def test_db_recover_refuses_a_directory(tmp_path: Path) -> None:
    """``db recover`` pointed at a directory: one line, and no fresh copy left behind (it
    was a sqlite3 traceback and a stray ``<dir>.recovering-<time>`` file)."""
    (tmp_path / "stores" / "sub").mkdir(parents=True)
    out = cli(f"sqlite:///{tmp_path / 'stores'}", "db", "recover")
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [
        f"llmspend: error: {tmp_path / 'stores'} is not a file (a directory?): give the "
        "store file's path"
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stores"]
    assert (tmp_path / "stores" / "sub").is_dir()


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
@pytest.mark.parametrize("argv", [("budget", "status"), ("export", "-"), ("prices", "gpt-4o")])
def test_a_full_disk_behind_stdout_is_one_line(sqlite_url: str, argv: tuple[str, ...]) -> None:
    """``llmspend ... > file`` on a full disk: one line and exit 1 (was a traceback, or the
    interpreter's "Exception ignored" and exit 120)."""
    _set(sqlite_url, 5)
    llmspend.Tracker(sqlite_url).ingest(_rows(2))
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMSPEND_")}
    with open("/dev/full", "w") as full:
        out = subprocess.run(
            [sys.executable, "-m", "llmspend", *argv, "--database-url", sqlite_url],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            timeout=120,
        )
    assert out.returncode == 1
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith("llmspend: error: cannot write") and "No space left" in line


def test_export_writes_through_a_symlink(sqlite_url: str, tmp_path: Path) -> None:
    """``latest.csv -> reports/2026-12.csv``: the target gets the rows, the link stays (the
    renamed temporary file replaced the link)."""
    llmspend.Tracker(sqlite_url).ingest(_rows(2))
    (tmp_path / "reports").mkdir()
    link = tmp_path / "latest.csv"
    link.symlink_to(tmp_path / "reports" / "2026-12.data")
    out = cli(sqlite_url, "export", str(link))
    assert out.returncode == 0, out.stderr
    assert link.is_symlink()
    assert len(pd.read_csv(tmp_path / "reports" / "2026-12.data")) == 2


def test_a_decimal_comma_is_refused_not_read_as_thousands(sqlite_url: str) -> None:
    assert cli(sqlite_url, "budget", "set", "project", "acme/churn", "10/month").returncode == 0
    out = cli(sqlite_url, "budget", "set", "project", "acme/churn", "5,5/month")
    assert out.returncode == 1, out.stderr
    assert "use '.' for decimals" in out.stderr
    (budget,) = _budgets(sqlite_url)
    assert budget.limit_usd == 10  # was set to $55


@pytest.mark.skipif(not os.path.exists("/dev/fd/1"), reason="needs /dev/stdout")
@pytest.mark.parametrize("target", ["/dev/stdout", "/dev/fd/1"])
def test_export_to_dev_stdout_appended_to_a_file_keeps_the_file(
    sqlite_url: str, tmp_path: Path, target: str
) -> None:
    """``export /dev/stdout >> log.txt``: the rows are added to log.txt as by ``export -``
    (/dev/stdout was followed to log.txt, which a renamed file replaced: its lines lost)."""
    llmspend.Tracker(sqlite_url).ingest(_rows(2))
    log = tmp_path / "log.txt"
    log.write_text("kept\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMSPEND_")}
    argv = ["export", target, "--format", "csv", "--database-url", sqlite_url]
    with open(log, "a") as out_file:
        out = subprocess.run(
            [sys.executable, "-m", "llmspend", *argv],
            stdout=out_file,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            timeout=120,
        )
    assert out.returncode == 0, out.stderr
    text = log.read_text()
    assert text.startswith("kept\n")
    assert len(pd.read_csv(io.StringIO(text.removeprefix("kept\n")))) == 2
    assert out.stderr.strip() == f"exported 2 records to {target}"
