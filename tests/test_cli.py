"""The ``llmspend`` command line, through its real entry point, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from decimal import Decimal

import pandas as pd
import pytest

import llmspend


def run(url: str | None, *argv: str, home: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMSPEND_")}
    env["LLMSPEND_USER"] = "cli-tester"
    if home:
        env["LLMSPEND_HOME"] = home
    cmd = [sys.executable, "-m", "llmspend", *argv]
    if url:
        cmd += ["--database-url", url]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)


def test_help_on_every_command() -> None:
    for argv in (
        [], ["budget"], ["budget", "set"], ["budget", "list"], ["budget", "status"],
        ["budget", "delete"], ["budget", "history"], ["db"], ["db", "upgrade"], ["export"],
        ["import"], ["prices"], ["sim"], ["sim", "serve"], ["report"],
    ):  # fmt: skip
        out = run(None, *argv, "--help")
        assert out.returncode == 0, (argv, out.stderr)
        assert "usage: llmspend" in out.stdout


def test_budget_commands(store_url: str) -> None:
    out = run(
        store_url,
        "budget",
        "set",
        "project",
        "acme/churn",
        "100/month",
        "--hard",
        "--alert",
        "50,80,100",
    )
    assert out.returncode == 0, out.stderr
    assert "acme/churn: $100 per month (hard), alerts at 50 %, 80 %, 100 %" in out.stdout
    assert (
        run(
            store_url,
            "budget",
            "set",
            "user",
            "acme/ana",
            "5/day",
            "--soft",
            "--tz",
            "Europe/Berlin",
        ).returncode
        == 0
    )
    out = run(store_url, "budget", "list", "--json")
    budgets = json.loads(out.stdout)
    assert [(b["name"], b["limit_usd"], b["period"], b["mode"]) for b in budgets] == [
        ("acme/churn", "100", "month", "hard"),
        ("acme/ana", "5", "day", "soft"),
    ]
    out = run(store_url, "budget", "status")
    assert out.returncode == 0
    lines = out.stdout.splitlines()
    assert lines[0].split()[:4] == ["budget", "scope", "mode", "period"]
    assert any(line.startswith("acme/churn") and "$100.00" in line for line in lines)
    status = json.loads(
        run(store_url, "budget", "status", "project", "acme/churn", "--json").stdout
    )
    assert status[0]["limit_usd"] == "100" and status[0]["state"] == "ok"
    hist = json.loads(run(store_url, "budget", "history", "project", "acme/churn", "--json").stdout)
    assert len(hist) == 1 and hist[0]["spent_usd"] == "0"
    assert run(store_url, "budget", "delete", "user", "acme/ana").returncode == 0
    assert [b["name"] for b in json.loads(run(store_url, "budget", "list", "--json").stdout)] == [
        "acme/churn"
    ]


@pytest.mark.parametrize(
    "argv, code, message",
    [
        (["budget", "set", "team", "x", "5"], 2, "invalid choice"),
        (["budget", "set", "org", "acme", "0"], 1, "greater than 0"),
        (["budget", "set", "org", "acme", "abc/month"], 1, "amount of USD"),
        (["budget", "set", "org", "acme", "5/fortnight"], 1, "unknown period"),
        (["budget", "set", "org", "acme", "5", "--alert", "50,200"], 1, r"\(0, 100\]"),
        (["budget", "set", "org", "acme", "5", "--tz", "Mars/Base"], 1, "unknown time zone"),
        (["budget", "set", "project", "acme", "5"], 1, "org/project"),
        (["budget", "delete", "org", "nobody"], 1, "no org nobody budget"),
        (["budget", "status", "org", "nobody"], 1, "no org budget"),
        (["export", "out.txt"], 1, "cannot tell the format"),
        (["import", "missing.csv"], 1, "no such file"),
        (["prices", "no-such-model-xyz"], 1, "no-such-model-xyz"),
        (["nonsense"], 2, "invalid choice"),
    ],
)
def test_bad_input_exit_codes(tmp_path, argv: list[str], code: int, message: str) -> None:  # type: ignore[no-untyped-def]
    import re

    url = f"sqlite:///{tmp_path / 's.sqlite'}"
    before = run(url, "budget", "list", "--json")
    out = subprocess.run(
        [sys.executable, "-m", "llmspend", "--database-url", url, *argv],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert out.returncode == code, out.stderr
    assert re.search(message, out.stderr), out.stderr
    assert "Traceback" not in out.stderr
    assert run(url, "budget", "list", "--json").stdout == before.stdout  # nothing changed


def test_bad_database_url_is_a_clear_error() -> None:
    out = run("nosuchdb://x", "budget", "list")
    assert (
        out.returncode == 1
        and "unsupported database URL" in out.stderr
        and "Traceback" not in out.stderr
    )


def test_db_upgrade_is_idempotent(store_url: str) -> None:
    first = json.loads(run(store_url, "db", "upgrade", "--json").stdout)
    second = json.loads(run(store_url, "db", "upgrade", "--json").stdout)
    assert first["revision"] == second["revision"] != []
    assert (
        json.loads(run(store_url, "db", "current", "--json").stdout)["revision"]
        == first["revision"]
    )


def _rows() -> list[dict]:
    base = dt.datetime(2026, 5, 1, 9, 30, 15, 250000, tzinfo=dt.UTC)
    return [
        {
            "ts": base + dt.timedelta(hours=i),
            "provider": "openai" if i % 2 else "google",
            "api": "chat.completions",
            "model": "gpt-4o-mini" if i % 2 else "gemini-2.5-flash",
            "org": "acme",
            "project": f"p{i % 3}",
            "user": f"u{i % 4}",
            "input_tokens": 1000 + i,
            "cached_input_tokens": i,
            "output_tokens": 200 + i,
            "reasoning_tokens": i % 5,
            "latency_ms": 12.5 + i,
            "streamed": bool(i % 2),
            "tags": {"exp": f"e{i % 2}"} if i % 3 else {},
            "request_id": f"r{i}",
            "error_type": None,
        }
        for i in range(40)
    ]


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_export_then_import_round_trips_exactly(store_url: str, tmp_path, fmt: str) -> None:  # type: ignore[no-untyped-def]
    t = llmspend.Tracker(store_url)
    t.ingest(_rows())
    t.ingest(
        [
            {
                "ts": "2026-05-09T00:00:00Z",
                "provider": "openai",
                "model": "mystery-model",
                "input_tokens": 5,
            }
        ]
    )
    path = tmp_path / f"out.{fmt}"
    out = run(store_url, "export", str(path))
    assert out.returncode == 0 and "exported 41 records" in out.stdout
    other = f"sqlite:///{tmp_path / 'other.sqlite'}"
    out = run(other, "import", str(path))
    assert out.returncode == 0, out.stderr
    a = t.records().drop(columns=["id"])
    b = llmspend.Tracker(other).records().drop(columns=["id"])
    pd.testing.assert_frame_equal(a, b)
    assert b.cost_usd.iloc[0] == a.cost_usd.iloc[0] and isinstance(b.cost_usd.iloc[0], Decimal)
    assert b.price_status.iloc[-1] == "unknown" and b.cost_usd.iloc[-1] is None


def test_export_filters(store_url: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    llmspend.Tracker(store_url).ingest(_rows())
    path = tmp_path / "f.csv"
    out = run(store_url, "export", str(path), "--user", "u1", "--since", "2026-05-01T12:00:00Z")
    assert out.returncode == 0
    frame = pd.read_csv(path)
    assert set(frame.user) == {"u1"} and len(frame) == 9


def test_import_is_all_or_nothing_and_maps_columns(tmp_path) -> None:  # type: ignore[no-untyped-def]
    url = f"sqlite:///{tmp_path / 's.sqlite'}"
    path = tmp_path / "usage.csv"
    path.write_text(
        "Date,Model,provider,input_tokens,output_tokens,cost_usd\n"
        "2026-04-01T10:00:00Z,gpt-4o,openai,100,20,0.0005\n"
        "2026-04-01T11:00:00Z,gpt-4o,openai,-3,20,0.0005\n"
    )
    out = run(url, "import", str(path), "--map", "Date=ts", "--map", "Model=model")
    assert out.returncode == 1 and "row 1, field 'input_tokens'" in out.stderr
    assert llmspend.Tracker(url).records().empty
    path.write_text(path.read_text().replace(",-3,", ",3,"))
    out = run(
        url, "import", str(path), "--map", "Date=ts", "--map", "Model=model", "--org", "imported"
    )
    assert out.returncode == 0, out.stderr
    rec = llmspend.Tracker(url).records()
    assert list(rec.org) == ["imported", "imported"] and rec.cost_usd.sum() == Decimal("0.001")
    assert set(rec.price_status) == {"imported"}


def test_prices_command() -> None:
    out = run(None, "prices", "gpt-4o-mini", "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert "gpt-4o-mini" in json.dumps(data)


def test_sim_serve_answers_the_real_sdk_and_stops_on_sigint() -> None:
    import signal
    import socket

    import openai

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "llmspend", "sim", "serve", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        text=True,
    )
    try:
        assert proc.stdout is not None  # the banner says it listens (however slow start-up is)
        assert f"listening on http://127.0.0.1:{port}" in proc.stdout.readline()
        client = openai.OpenAI(api_key="x", base_url=f"http://127.0.0.1:{port}/v1", max_retries=0)
        reply = client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], max_tokens=5
        )
        assert reply.usage is not None and reply.usage.completion_tokens == 5
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=120)
    assert proc.returncode in (0, 130)


def test_sim_serve_bad_port_is_a_clear_error() -> None:
    out = run(None, "sim", "serve", "--port", "99999")
    assert out.returncode != 0 and "Traceback" not in out.stderr
