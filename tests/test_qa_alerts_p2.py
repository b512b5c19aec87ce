"""Webhook delivery that one bad receiver cannot hold up, and that honours Retry-After.

Receivers are small HTTP servers on 127.0.0.1; a blocked receiver waits on an Event that
the test releases at its end. Nothing races a sleep: tests wait on Events or on the
sender's own drain, and compare the receiver's recorded times with >= only.
"""

from __future__ import annotations

import dataclasses
import email.utils
import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import pytest

import llmspend
from llmspend.alerting import destinations
from llmspend.alerting.events import BudgetThresholdReached
from llmspend.alerting.listeners import set_webhook
from llmspend.alerting.query import fetch_deliveries
from llmspend.alerting.webhooks import MAX_RETRY_AFTER, WebhookSender, retry_after, sender
from llmspend.call import Usage
from llmspend.pipeline import begin_call
from llmspend.tracker import Tracker
from tests.test_webhook_safety import _event as safety_event

# An answer: (status, headers); a receiver's behaviour maps the request's index to one.
Behaviour = Callable[[int], tuple[int, dict[str, str]]]


class Receiver:
    """An HTTP receiver on 127.0.0.1 recording each POST's time and body, in order."""

    def __init__(self, behave: Behaviour | None = None, *, block: bool = False) -> None:
        self.behave = behave or (lambda i: (200, {}))
        self.block = block
        self.release = threading.Event()  # a blocking receiver answers once this is set
        self.got = threading.Event()  # set on each request
        self.times: list[float] = []
        self.bodies: list[dict[str, Any]] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.times.append(time.monotonic())
                outer.bodies.append(json.loads(body))
                index = len(outer.bodies) - 1
                outer.got.set()
                if outer.block:
                    outer.release.wait(120)
                code, headers = outer.behave(index)
                self.send_response(code)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path: str = "/hook/SECRET") -> str:
        return f"http://127.0.0.1:{self.server.server_port}{path}"

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receivers(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Receiver]]:
    monkeypatch.setenv("LLMSPEND_WEBHOOK_ALLOW", "127.0.0.1")  # receivers on loopback
    monkeypatch.setenv("LLMSPEND_WEBHOOK_TIMEOUT", "60")  # a blocked receiver is not cut
    monkeypatch.setenv("LLMSPEND_WEBHOOK_RETRIES", "2")
    monkeypatch.setenv("LLMSPEND_WEBHOOK_BACKOFF", "0.01")
    running: list[Receiver] = []
    yield running
    for r in running:
        r.close()


def _receiver(running: list[Receiver], behave: Behaviour | None = None, **kw: Any) -> Receiver:
    r = Receiver(behave, **kw)
    running.append(r)
    return r


def _event(n: int = 1) -> BudgetThresholdReached:
    """test_webhook_safety's event, for a budget of its own (``acme-n``)."""
    return dataclasses.replace(safety_event(), budget=f"acme-{n}")


def _deliveries(tracker: Tracker) -> dict[str, dict[str, Any]]:
    rows = fetch_deliveries(tracker.store).to_dict("records")
    return {str(d["target"]): {str(k): v for k, v in d.items()} for d in rows}


# -- independence -------------------------------------------------------------------------------


def test_a_blocked_receiver_does_not_hold_up_another_destinations_alert(
    installed: Tracker, receivers: list[Receiver]
) -> None:
    dead = _receiver(receivers, block=True)
    live = _receiver(receivers)
    one = Decimal("0.00021")  # gpt-4o-mini, 1000 in / 100 out
    llmspend.set_budget(  # the budget's own webhook is queued first, then the global one
        "project", "acme/churn", one, "day", mode="soft", thresholds=(1.0,),
        webhook_url=dead.url(),
    )  # fmt: skip
    set_webhook(live.url())
    try:
        with llmspend.attribute():
            c = begin_call("openai", "chat.completions", "gpt-4o-mini", input_tokens=1000,
                           max_output_tokens=100)  # fmt: skip
        assert c is not None
        c.finish(Usage(input_tokens=1000, output_tokens=100))
        assert dead.got.wait(30), "the blocked receiver never got its request"
        # Before: one worker for all, so this waited for the blocked receiver's 60 s.
        assert live.got.wait(30), "the second destination waited behind the blocked one"
        assert live.bodies[0]["alert"]["budget"] == "acme/churn"
    finally:
        dead.release.set()
        set_webhook(None)
    assert sender().wait(60)
    got = _deliveries(installed)
    assert {d["status"] for d in got.values()} == {"delivered"} and len(got) == 2
    assert all(d["attempts"] == 1 for d in got.values())


def test_one_destination_keeps_its_order_and_workers_are_capped(
    tracker: Tracker, receivers: list[Receiver]
) -> None:
    blocked = [_receiver(receivers, block=True) for _ in range(2)]
    ordered = _receiver(receivers)
    s = WebhookSender(max_workers=2)
    for r in blocked:
        s.submit(tracker.store, _event(0), r.url(), "json")
    for r in blocked:
        assert r.got.wait(30)
    for n in range(1, 6):  # both workers are busy: these wait for a turn
        s.submit(tracker.store, _event(n), ordered.url(), "json")
    assert s._workers == 2  # no third worker was started for them
    blocked[0].release.set()  # a worker is free: it takes the waiting destination's turns
    assert ordered.got.wait(30), "the waiting destination never got a turn"
    blocked[1].release.set()
    assert s.wait(60)
    assert [b["alert"]["budget"] for b in ordered.bodies] == [f"acme-{n}" for n in range(1, 6)]
    rows = fetch_deliveries(tracker.store).to_dict("records")
    assert len(rows) == 7 and {d["status"] for d in rows} == {"delivered"}
    assert s._workers == 0 and not s._lanes  # every worker ended once there was no work


# -- refusals -----------------------------------------------------------------------------------


def test_a_name_that_does_not_resolve_is_refused_in_the_same_words(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def nowhere(host: str, port: int) -> list[str]:
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.setattr(destinations, "resolve", nowhere)
    # Before: "the host did not resolve", telling which internal names exist (a DNS oracle).
    with pytest.raises(destinations.DestinationRefused) as refused:
        destinations.check_destination("db.internal", 443, allow="")
    assert str(refused.value) == "refused: destination not allowed"
    monkeypatch.setattr(destinations, "resolve", lambda host, port: [])
    with pytest.raises(destinations.DestinationRefused) as refused:
        destinations.check_destination("db.internal", 443, allow="")
    assert str(refused.value) == "refused: destination not allowed"
    # a name the admin listed is told plainly: they configured it
    with pytest.raises(destinations.DestinationRefused, match="did not resolve"):
        destinations.check_destination("hooks.internal", 443, allow="hooks.internal")


# -- Retry-After --------------------------------------------------------------------------------


def test_retry_after_values() -> None:
    now = 1_800_000_000.0
    assert retry_after(None) is None
    assert retry_after("1") == 1.0 and retry_after(" 2 ") == 2.0 and retry_after("0.5") == 0.5
    assert retry_after("0") == 0.0
    assert retry_after("86400") == MAX_RETRY_AFTER == 60.0  # capped
    for junk in ("-1", "soon", "1e3", "nan", "", "²"):
        assert retry_after(junk) is None, junk
    in_30 = email.utils.formatdate(now + 30, usegmt=True)
    assert retry_after(in_30, now=now) == 30.0
    assert retry_after(email.utils.formatdate(now - 30, usegmt=True), now=now) == 0.0
    assert retry_after(email.utils.formatdate(now + 3600, usegmt=True), now=now) == 60.0


@pytest.mark.parametrize("kind", ["429 seconds", "503 date"])
def test_retry_after_is_honoured(tracker: Tracker, receivers: list[Receiver], kind: str) -> None:
    if kind == "429 seconds":
        code, wait, value = 429, 1.0, lambda: "1"
    else:  # an HTTP date 3 s ahead (1 s resolution): more than 1 s from the answer
        code, wait, value = 503, 1.0, lambda: email.utils.formatdate(time.time() + 3, usegmt=True)
    r = _receiver(receivers, lambda i: (code, {"Retry-After": value()}) if i == 0 else (200, {}))
    s = WebhookSender()
    s.submit(tracker.store, _event(), r.url(), "json")
    assert s.wait(60)
    (d,) = fetch_deliveries(tracker.store).to_dict("records")
    assert (d["status"], d["attempts"], d["http_status"]) == ("delivered", 2, 200)
    # Before: the 0.01 s backoff, not the receiver's Retry-After, came between the two.
    assert r.times[1] - r.times[0] >= wait


def test_retry_after_on_other_codes_is_not_waited_for(
    tracker: Tracker, receivers: list[Receiver]
) -> None:
    r = _receiver(receivers, lambda i: (500, {"Retry-After": "3600"}) if i == 0 else (200, {}))
    s = WebhookSender()
    s.submit(tracker.store, _event(), r.url(), "json")
    assert s.wait(30)  # the 0.01 s backoff, not an hour
    (d,) = fetch_deliveries(tracker.store).to_dict("records")
    assert (d["status"], d["attempts"]) == ("delivered", 2)


# -- interpreter exit ---------------------------------------------------------------------------

EXITING = r"""
import datetime as dt, sys
from decimal import Decimal
from llmspend.alerting.events import BudgetThresholdReached
from llmspend.alerting.webhooks import sender
from llmspend.tracker import Tracker
from tests.test_webhook_safety import _event as safety_event

store = Tracker(sys.argv[1], org="acme", project="churn", user="ana").store
event = BudgetThresholdReached(
    id=None, ts=dt.datetime(2026, 12, 5), budget="acme", scope="org", org="acme",
    project=None, user=None, threshold=Decimal(1), percent_used=100.0,
    spent_usd=Decimal(5), limit_usd=Decimal(5), call_cost_usd=None,
    period_start=dt.datetime(2026, 12, 1, tzinfo=dt.UTC),
)
for url in sys.argv[2:]:
    sender().submit(store, event, url, "json")
print("queued", flush=True)
"""


def test_exit_flushes_every_destination_and_records_a_retry_it_cannot_wait_for(
    tmp_path: Any, receivers: list[Receiver], monkeypatch: pytest.MonkeyPatch
) -> None:
    hanging = _receiver(receivers, block=True)  # never answers while the process lives
    limited = _receiver(receivers, lambda i: (429, {"Retry-After": "30"}))
    fine = _receiver(receivers)
    monkeypatch.setenv("LLMSPEND_WEBHOOK_EXIT_WAIT", "3")
    monkeypatch.setenv("LLMSPEND_WEBHOOK_BACKOFF", "0.5")
    store_url = f"sqlite:///{tmp_path / 'exit.sqlite'}"
    urls = [hanging.url("/a"), limited.url("/b"), fine.url("/c")]
    done = subprocess.run(
        [sys.executable, "-c", EXITING, store_url, *urls],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    tracker = Tracker(store_url, org="acme", project="churn", user="ana")
    got = _deliveries(tracker)
    # Before: the queue was served in turn, so nothing after the hanging receiver was tried.
    assert got[fine.url("")]["status"] == "delivered"
    limit = got[limited.url("")]
    assert (limit["status"], limit["attempts"], limit["http_status"]) == ("failed", 1, 429)
    assert limit["error"] == "HTTP 429; not retried: the process was exiting"
    assert hanging.url("") not in got  # its attempt was still running when the process ended
    assert len(limited.bodies) == 1  # the 30 s it asked for were never cut short


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork")
def test_a_forked_child_delivers_its_own_alerts_once_and_not_its_parents() -> None:
    """A child forked while the parent's worker serves a destination: the child's alert to
    it is delivered (the inherited worker count and lane made it wait for a thread the child
    has not got), and the parent's queued one is not sent again from the child."""
    s = WebhookSender()
    parent = os.getpid()
    serving, release = threading.Event(), threading.Event()
    made: list[tuple[int, str]] = []

    def deliver(store: Any, event: Any, url: str, fmt: str, allow: str | None = None) -> None:
        if os.getpid() == parent and event == "parent-1":
            serving.set()
            release.wait(30)
        made.append((os.getpid(), event))

    s._deliver = deliver  # type: ignore[method-assign]
    s.submit(None, "parent-1", "http://a.example/", "json")  # type: ignore[arg-type]
    s.submit(None, "parent-2", "http://a.example/", "json")  # type: ignore[arg-type]
    assert serving.wait(10)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its own alert only, then report and leave at once
        code = 1
        try:
            s.submit(None, "child-1", "http://a.example/", "json")  # type: ignore[arg-type]
            drained = s.wait(10)
            os.write(write, json.dumps([drained, [e for p, e in made if p != parent]]).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read) as pipe:
        answer = pipe.read()
    os.waitpid(pid, 0)
    release.set()
    assert s.wait(10)
    assert json.loads(answer) == [True, ["child-1"]]
    assert [e for p, e in made if p == parent] == ["parent-1", "parent-2"]
