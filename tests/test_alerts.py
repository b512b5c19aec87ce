"""Alerts: once per threshold per period, persisted, delivered to every listener."""

from __future__ import annotations

import datetime as dt
import http.server
import json
import logging
import subprocess
import sys
import threading
from decimal import Decimal
from typing import ClassVar

import pytest

import llmspend
from llmspend.alerting.listeners import remove_alert_callback, set_webhook
from llmspend.alerting.query import fetch_deliveries
from llmspend.alerting.webhooks import sender
from llmspend.call import Usage
from llmspend.errors import BudgetExceeded
from llmspend.pipeline import begin_call
from llmspend.timeutil import shift_clock
from tests.migrating import migrate


def spend(inp: int = 1000, out: int = 100, **attr) -> None:  # type: ignore[no-untyped-def]
    with llmspend.attribute(**attr):
        c = begin_call(
            "openai", "chat.completions", "gpt-4o-mini", input_tokens=inp, max_output_tokens=out
        )
    assert c is not None
    c.finish(Usage(input_tokens=inp, output_tokens=out))


ONE = Decimal("0.00021")  # gpt-4o-mini, 1000 in / 100 out


@pytest.fixture
def events():  # type: ignore[no-untyped-def]
    got: list = []
    llmspend.on_alert(got.append)
    yield got
    remove_alert_callback(got.append)


@pytest.fixture(autouse=True)
def _reset_clock_and_webhook():  # type: ignore[no-untyped-def]
    yield
    shift_clock(dt.timedelta(0))
    set_webhook(None)


def test_thresholds_fire_once_each_in_order_and_again_next_period(installed, events) -> None:  # type: ignore[no-untyped-def]
    llmspend.set_budget(
        "project", "acme/churn", ONE * 4, "day", mode="soft", thresholds=(0.5, 0.8, 1.0)
    )
    spend()  # 25 %
    assert events == []
    spend()  # 50 %
    assert [e.threshold for e in events] == [Decimal("0.5")]
    spend(inp=3000)  # 2.4 calls' worth in one call: crosses 80 % and 100 % at once
    assert [e.threshold for e in events] == [Decimal("0.5"), Decimal("0.8"), Decimal("1")]
    spend()  # stays above: nothing new
    assert len(events) == 3
    e = events[1]
    assert (e.budget, e.scope, e.org, e.project, e.user) == (
        "acme/churn",
        "project",
        "acme",
        "churn",
        "ana",
    )
    assert e.limit_usd == ONE * 4 and e.spent_usd == ONE * 2 + e.call_cost_usd
    assert (
        e.call_cost_usd
        == llmspend.price("gpt-4o-mini", input_tokens=3000, output_tokens=100).total_usd
    )
    assert e.percent_used == pytest.approx(float(e.spent_usd / e.limit_usd * 100))
    assert e.metadata["provider"] == "openai" and e.metadata["model"] == "gpt-4o-mini"
    frame = llmspend.alerts()
    assert list(frame.threshold) == [Decimal("0.5"), Decimal("0.8"), Decimal("1")]
    assert list(frame.id) == [ev.id for ev in events]
    assert not frame.acknowledged.any()
    # next day: a new period, the thresholds fire again
    shift_clock(dt.timedelta(days=1))
    spend()
    spend()
    assert [e.threshold for e in events][3:] == [Decimal("0.5")]
    assert events[3].period_start > events[0].period_start


def test_tags_reach_the_metadata(installed, events) -> None:  # type: ignore[no-untyped-def]
    llmspend.set_budget("user", "acme/ana", ONE, "day", mode="soft", thresholds=(1.0,))
    with llmspend.attribute(tags={"experiment": "a7"}):
        spend()
    assert events[0].metadata["tags"] == {"experiment": "a7"}


def test_hard_budget_alerts_when_it_refuses(installed, events) -> None:  # type: ignore[no-untyped-def]
    llmspend.set_budget("project", "acme/churn", ONE, "day", thresholds=(1.0,))
    spend()
    for _ in range(3):
        with pytest.raises(BudgetExceeded):
            spend()
    kinds = [(e.kind, e.threshold) for e in events]
    assert kinds == [("threshold", Decimal(1)), ("refused", Decimal(0))]  # refusal: once per period
    assert list(llmspend.alerts(kind="refused").budget) == ["acme/churn"]


def test_acknowledge(installed, events) -> None:  # type: ignore[no-untyped-def]
    llmspend.set_budget("project", "acme/churn", ONE * 2, "day", mode="soft")
    spend()
    spend()
    ids = [e.id for e in events]
    assert llmspend.acknowledge_alerts(ids[0]) == 1
    assert list(llmspend.alerts(acknowledged=False).id) == ids[1:]
    assert llmspend.acknowledge_alerts() == len(ids) - 1
    assert llmspend.alerts().acknowledged.all()
    with pytest.raises(llmspend.ValidationError, match="no alert with id 999"):
        llmspend.acknowledge_alerts([999])
    with pytest.raises(llmspend.ValidationError):
        llmspend.acknowledge_alerts(["x"])  # type: ignore[list-item]


def test_a_raising_listener_breaks_nothing(installed, events, caplog) -> None:  # type: ignore[no-untyped-def]
    def bad(_event):  # type: ignore[no-untyped-def]
        raise RuntimeError("listener bug")

    llmspend.on_alert(bad)
    try:
        llmspend.set_budget("project", "acme/churn", ONE, "day", mode="soft", thresholds=(1.0,))
        with caplog.at_level(logging.INFO, logger="llmspend.alerts"):
            spend()  # does not raise
        assert len(events) == 1  # the other listener still ran
        assert "listener bug" in caplog.text
        assert "reached 100 %" in caplog.text  # and the logging listener
        assert len(llmspend.records()) == 1
    finally:
        remove_alert_callback(bad)


def test_on_alert_needs_a_callable() -> None:
    with pytest.raises(llmspend.ValidationError):
        llmspend.on_alert("not callable")  # type: ignore[arg-type]
    with pytest.raises(llmspend.ValidationError):
        set_webhook("ftp://example")


class _Hook(http.server.BaseHTTPRequestHandler):
    mode = "ok"
    bodies: ClassVar[list] = []
    release = threading.Event()

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).bodies.append(json.loads(body))
        if self.mode == "hang":
            type(self).release.wait(10)
            return
        code = 200 if self.mode == "ok" else 500
        self.send_response(code)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args) -> None:  # type: ignore[no-untyped-def]
        pass


@pytest.fixture
def hook_server(monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("LLMSPEND_WEBHOOK_TIMEOUT", "0.5")
    monkeypatch.setenv("LLMSPEND_WEBHOOK_RETRIES", "2")
    monkeypatch.setenv("LLMSPEND_WEBHOOK_BACKOFF", "0.01")
    monkeypatch.setenv("LLMSPEND_WEBHOOK_ALLOW", "127.0.0.1")  # receivers on loopback
    _Hook.bodies = []
    _Hook.release = threading.Event()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    _Hook.release.set()
    server.shutdown()
    server.server_close()


def test_webhook_receives_json(installed, hook_server) -> None:  # type: ignore[no-untyped-def]
    _Hook.mode = "ok"
    url = f"http://127.0.0.1:{hook_server.server_port}/hooks/SECRET-TOKEN"
    llmspend.set_budget(
        "project", "acme/churn", ONE, "day", mode="soft", thresholds=(1.0,), webhook_url=url
    )
    spend()
    assert sender().wait(10)
    (body,) = _Hook.bodies
    assert body["event"] == "llmspend.budget.threshold"
    assert body["alert"]["budget"] == "acme/churn" and body["alert"]["threshold"] == "1"
    assert Decimal(body["alert"]["spent_usd"]) == ONE
    assert "reached 100 %" in body["text"]
    (d,) = fetch_deliveries(installed.store).to_dict("records")
    assert d["status"] == "delivered" and d["attempts"] == 1 and d["http_status"] == 200
    assert "SECRET" not in d["target"]  # only scheme://host is stored


def test_slack_format_and_global_webhook(installed, hook_server) -> None:  # type: ignore[no-untyped-def]
    _Hook.mode = "ok"
    set_webhook(f"http://127.0.0.1:{hook_server.server_port}/", format="slack")
    llmspend.set_budget("project", "acme/churn", ONE, "day", mode="soft", thresholds=(1.0,))
    spend()
    assert sender().wait(10)
    assert list(_Hook.bodies[0]) == ["text"]


@pytest.mark.parametrize("mode", ["error", "hang"])
def test_failing_webhook_is_retried_recorded_and_never_blocks_the_call(
    installed, hook_server, mode
) -> None:  # type: ignore[no-untyped-def]
    _Hook.mode = mode
    url = f"http://127.0.0.1:{hook_server.server_port}/"
    llmspend.set_budget(
        "project", "acme/churn", ONE, "day", mode="soft", thresholds=(1.0,), webhook_url=url
    )
    spend()  # returns although the webhook server has not answered (it cannot, in "hang")
    assert len(llmspend.records()) == 1
    assert sender().wait(15)
    (d,) = fetch_deliveries(installed.store).to_dict("records")
    assert d["status"] == "failed" and d["attempts"] == 3
    assert len(_Hook.bodies) == 3
    assert ("HTTP 500" in d["error"]) if mode == "error" else ("timed out" in d["error"].lower())


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("LLMSPEND_WEBHOOK_BACKOFF", "-1"),  # time.sleep raised: the delivery went unrecorded
        ("LLMSPEND_WEBHOOK_RETRIES", "-2"),  # never tried at all
        ("LLMSPEND_WEBHOOK_TIMEOUT", "nan"),  # every attempt failed before connecting
        ("LLMSPEND_WEBHOOK_TIMEOUT", "-5"),
        ("LLMSPEND_WEBHOOK_RETRIES", "many"),
    ],
)
def test_a_bad_webhook_setting_is_logged_and_the_default_used(
    installed, hook_server, monkeypatch, caplog, name, value
) -> None:  # type: ignore[no-untyped-def]
    _Hook.mode = "error"
    monkeypatch.setenv(name, value)
    url = f"http://127.0.0.1:{hook_server.server_port}/"
    llmspend.set_budget(
        "project", "acme/churn", ONE, "day", mode="soft", thresholds=(1.0,), webhook_url=url
    )
    with caplog.at_level(logging.WARNING, logger="llmspend.alerts"):
        spend()
        assert sender().wait(30)
    (d,) = fetch_deliveries(installed.store).to_dict("records")
    assert d["status"] == "failed" and d["http_status"] == 500 and d["error"] == "HTTP 500"
    assert d["attempts"] == (4 if name == "LLMSPEND_WEBHOOK_RETRIES" else 3)  # its default: 3
    assert any(name in r.getMessage() and "using" in r.getMessage() for r in caplog.records)


def test_the_global_webhook_from_the_environment(
    installed, hook_server, monkeypatch, caplog
) -> None:  # type: ignore[no-untyped-def]
    _Hook.mode = "ok"
    monkeypatch.setenv("LLMSPEND_WEBHOOK_URL", f"http://127.0.0.1:{hook_server.server_port}/")
    monkeypatch.setenv("LLMSPEND_WEBHOOK_FORMAT", "Slack ")  # as typed: Slack's payload
    llmspend.set_budget("project", "acme/churn", ONE, "day", mode="soft", thresholds=(0.5, 1.0))
    spend(500, 50)  # 50 %
    assert sender().wait(10)
    assert list(_Hook.bodies[-1]) == ["text"]

    monkeypatch.setenv("LLMSPEND_WEBHOOK_FORMAT", "teams")  # not a format: said, then JSON
    with caplog.at_level(logging.WARNING, logger="llmspend.alerts"):
        spend(500, 50)  # 100 %
        assert sender().wait(10)
    assert _Hook.bodies[-1]["event"] == "llmspend.budget.threshold"
    assert any("LLMSPEND_WEBHOOK_FORMAT" in r.getMessage() for r in caplog.records)

    monkeypatch.setenv("LLMSPEND_WEBHOOK_URL", "ftp://hooks.example/SECRET")  # not a webhook
    llmspend.set_budget("project", "acme/churn", ONE * 2, "day", mode="soft", thresholds=(1.0,))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="llmspend.alerts"):
        spend(1000, 100)  # 150 % of the new limit
        assert sender().wait(10)
    [warning] = [r.getMessage() for r in caplog.records if "LLMSPEND_WEBHOOK_URL" in r.getMessage()]
    assert "SECRET" not in warning
    assert len(fetch_deliveries(installed.store)) == 2  # nothing queued for it


WORKER = r"""
import sys, llmspend
from llmspend.call import Usage
from llmspend.pipeline import begin_call
url = sys.argv[1]
llmspend.install(url, org="acme", project="churn", user="ana")
fired = []
llmspend.on_alert(fired.append)
print("ready", flush=True)
sys.stdin.readline()  # every worker is ready: go
for _ in range(3):
    c = begin_call("openai", "chat.completions", "gpt-4o-mini",
                   input_tokens=1000, max_output_tokens=100)
    c.finish(Usage(input_tokens=1000, output_tokens=100))
print(len(fired))
"""


@pytest.mark.usefixtures("patient_locks")
def test_eight_processes_crossing_at_once_make_one_alert_row(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.sqlite'}"
    llmspend.install(url, org="acme", project="churn", user="ana")
    try:
        # 24 calls in all; 50 % is crossed around the 12th, 100 % at the 24th.
        llmspend.set_budget(
            "project", "acme/churn", ONE * 24, "day", mode="soft", thresholds=(0.5, 1.0)
        )
        # A rendezvous, not a start time: the workers cross the thresholds together
        # however slowly each one starts.
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", WORKER, url],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(8)
        ]
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        fired = 0
        for p in procs:
            out, err = p.communicate(timeout=300)
            assert p.returncode == 0, err
            fired += int(out.strip().splitlines()[-1])
        frame = llmspend.alerts()
        assert list(frame.threshold) == [Decimal("0.5"), Decimal("1")]
        assert fired == 2  # exactly one process fired each event
        (s,) = llmspend.budget_status("project", "acme/churn")
        assert s.spent_usd == ONE * 24 and s.calls == 24
    finally:
        llmspend.uninstall()


def test_real_sdk_calls_crossing_50_80_100_fire_three_events_in_order(
    installed, events, sim
) -> None:  # type: ignore[no-untyped-def]
    import openai

    client = openai.OpenAI(api_key="x", base_url=sim.openai_base_url, max_retries=0)

    def ask() -> None:
        client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "same words"}], max_tokens=20
        )

    ask()  # what one call costs
    one = llmspend.records().cost_usd.iloc[-1]
    assert one > 0
    llmspend.set_budget(
        "project", "acme/churn", one * 5, "day", mode="soft", thresholds=(0.5, 0.8, 1.0)
    )
    # the first call already counts: 20 %; then 40 %, 60 % (50 % crossed), 80 %, 100 %
    for _ in range(4):
        ask()
    assert [e.threshold for e in events] == [Decimal("0.5"), Decimal("0.8"), Decimal("1")]
    assert [e.spent_usd for e in events] == [one * 3, one * 4, one * 5]
    assert all(e.call_cost_usd == one and e.metadata["model"] == "gpt-4o-mini" for e in events)
    assert list(llmspend.alerts().threshold) == [Decimal("0.5"), Decimal("0.8"), Decimal("1")]


def test_a_raised_limit_rearms_the_thresholds_it_puts_ahead(installed_any, events) -> None:  # type: ignore[no-untyped-def]
    llmspend.set_budget("project", "acme/churn", ONE * 2, "day", mode="soft")
    spend()
    spend()  # 100 %: 50, 80 and 100 % fired
    assert [e.threshold for e in events] == [Decimal("0.5"), Decimal("0.8"), Decimal("1")]
    llmspend.update_budget("project", "acme/churn", limit=ONE * 4)  # now at 50 %
    spend()  # 75 %: 50 % of the new limit was passed at the raise, not by this call
    assert len(events) == 3
    spend()  # 100 %: passes 80 and 100 % of the new limit
    spend()  # 125 %
    assert [(e.threshold, e.limit_usd) for e in events[3:]] == [
        (Decimal("0.8"), ONE * 4),
        (Decimal("1"), ONE * 4),
    ]
    assert len(llmspend.alerts()) == 5


def test_a_lowered_limit_says_what_it_now_passes_once(installed_any, events) -> None:  # type: ignore[no-untyped-def]
    llmspend.set_budget("project", "acme/churn", ONE * 4, "day", mode="soft")
    spend()
    spend()  # 50 %
    assert [e.threshold for e in events] == [Decimal("0.5")]
    llmspend.update_budget("project", "acme/churn", limit=ONE * 2)  # now at 100 %
    spend()  # 150 %: 80 and 100 % of the new limit, never said in this period
    spend()
    assert [(e.threshold, e.limit_usd) for e in events[1:]] == [
        (Decimal("0.8"), ONE * 2),
        (Decimal("1"), ONE * 2),
    ]


def test_the_alerts_key_migration_keeps_the_webhook_links(store_url: str) -> None:

    from llmspend.store.engine import forget_store, open_store

    store = open_store(store_url)

    def rows(sql: str) -> list[tuple[object, ...]]:
        with store.begin() as conn:
            return sorted(map(tuple, conn.exec_driver_sql(sql)))

    alert = (
        "INSERT INTO llmspend_alerts (ts, kind, budget_id, budget_name, scope, period_start, "
        "threshold_ppm, percent_used, spent_nanos, limit_nanos, org_name, acknowledged) "
        "VALUES ('2026-12-05 10:00:00', 'threshold', NULL, 'acme', 'org', "
        "'2026-12-05 00:00:00', 500000, 50.0, 5, {limit}, 'acme', {false})"
    )
    false = "0" if store_url.startswith("sqlite") else "false"
    try:
        migrate(store, "0016", down=True)
        with store.begin(write=True) as conn:
            conn.exec_driver_sql(alert.format(limit=10, false=false))
            conn.exec_driver_sql(
                "INSERT INTO llmspend_webhook_deliveries (ts, alert_id, target, status, "
                "attempts) SELECT '2026-12-05 10:00:01', id, 'https://x.example/***', "
                "'delivered', 1 FROM llmspend_alerts"
            )
        linked = rows("SELECT alert_id FROM llmspend_webhook_deliveries")
        migrate(store, "head")
        assert rows("SELECT alert_id FROM llmspend_webhook_deliveries") == linked != [(None,)]
        with store.begin(write=True) as conn:  # the same threshold at another limit
            conn.exec_driver_sql(alert.format(limit=20, false=false))
        assert len(rows("SELECT id FROM llmspend_alerts")) == 2
        migrate(store, "0016", down=True)  # keeps the first of them
        assert rows("SELECT limit_nanos FROM llmspend_alerts") == [(10,)]
        assert rows("SELECT alert_id FROM llmspend_webhook_deliveries") == linked
        migrate(store, "head")
    finally:
        forget_store(store_url)
