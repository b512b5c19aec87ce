"""Safe webhooks: the destination check as a unit on addresses (never connecting), and
deliveries end to end to receivers on 127.0.0.1 only (allow-listed or refused, redirects not
followed, a drip-feeding receiver cut at the deadline), URLs checked and masked."""

from __future__ import annotations

import datetime as dt
import http.server
import socket
import threading
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

import llmspend
from llmspend.alerting import destinations
from llmspend.alerting.events import BudgetThresholdReached
from llmspend.alerting.query import fetch_deliveries
from llmspend.alerting.webhooks import WebhookSender
from llmspend.errors import ValidationError
from llmspend.tracker import Tracker

# -- the destination check, a unit on addresses -------------------------------------------------

REFUSED = [
    "127.0.0.1",
    "::1",
    "10.0.0.1",
    "172.16.5.4",
    "192.168.1.1",
    "169.254.169.254",
    "::ffff:127.0.0.1",
    "::ffff:169.254.169.254",
    "::ffff:10.0.0.1",
    "0.0.0.0",
    "::",
    "224.0.0.1",
    "ff02::1",
    "fe80::1",
    "fc00::1",
    "100.64.0.1",
    "240.0.0.1",
    "2002:7f00:0001::1",  # 6to4 around 127.0.0.1
    "64:ff9b::a9fe:a9fe",  # NAT64 around 169.254.169.254
    "::127.0.0.1",  # IPv4-compatible
]


@pytest.mark.parametrize("address", REFUSED)
def test_non_public_addresses_are_refused(address: str) -> None:
    assert not destinations.is_public(address)
    with pytest.raises(destinations.DestinationRefused, match="destination not allowed"):
        destinations.check_destination(address, 443, allow="")


@pytest.mark.parametrize("address", ["8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses_pass(address: str) -> None:
    assert destinations.is_public(address)
    assert destinations.check_destination(address, 443, allow="") == [
        str(destinations.ipaddress.ip_address(address))
    ]


def test_a_name_resolving_to_loopback_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(destinations, "resolve", lambda host, port: ["127.0.0.1"])
    with pytest.raises(destinations.DestinationRefused, match="destination not allowed"):
        destinations.check_destination("hooks.example.com", 443, allow="")
    # one private address among public ones is enough to refuse
    monkeypatch.setattr(destinations, "resolve", lambda host, port: ["8.8.8.8", "10.1.2.3"])
    with pytest.raises(destinations.DestinationRefused):
        destinations.check_destination("hooks.example.com", 443, allow="")
    monkeypatch.setattr(destinations, "resolve", lambda host, port: ["93.184.215.14"])
    assert destinations.check_destination("hooks.example.com", 443, allow="") == ["93.184.215.14"]


def test_the_allow_list_admits_hosts_and_networks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(destinations, "resolve", lambda host, port: ["10.20.3.4"])
    allow = "127.0.0.1, hooks.internal 10.20.0.0/16"
    assert destinations.check_destination("127.0.0.1", 9, allow=allow) == ["127.0.0.1"]
    assert destinations.check_destination("::ffff:127.0.0.1", 9, allow=allow)
    assert destinations.check_destination("hooks.internal", 9, allow=allow) == ["10.20.3.4"]
    assert destinations.check_destination("other.internal", 9, allow=allow) == ["10.20.3.4"]
    with pytest.raises(destinations.DestinationRefused):
        destinations.check_destination("10.30.0.1", 9, allow=allow)
    monkeypatch.setenv("LLMSPEND_WEBHOOK_ALLOW", "127.0.0.0/8")
    assert destinations.check_destination("127.0.0.2", 9) == ["127.0.0.2"]


@pytest.mark.parametrize(
    "url", ["http://x.example/a\nb", "http://x.example/\x00", "http://x.example/a b", "https://"]
)
def test_bad_urls_are_refused_up_front(tracker: Tracker, url: str) -> None:
    with pytest.raises(ValidationError) as info:
        llmspend.set_budget("org", "acme", "5", webhook_url=url)
    assert "/a" not in str(info.value)  # the path is never echoed
    assert llmspend.list_budgets() == []
    with pytest.raises(ValidationError):
        llmspend.set_webhook(url)


def test_listings_mask_the_url(tracker: Tracker) -> None:
    url = "https://user:pw@hooks.example.com:8443/T0/SECRET?token=SECRET2"
    b = llmspend.set_budget("org", "acme", "5", webhook_url=url)
    assert b.webhook_url == "https://hooks.example.com:8443/***"
    assert [x.webhook_url for x in llmspend.list_budgets()] == [b.webhook_url]
    # an update that does not touch the webhook keeps the real URL (not the masked one)
    llmspend.update_budget("org", "acme", limit="6")
    with tracker.store.engine.connect() as conn:
        from sqlalchemy import text

        assert conn.execute(text("SELECT webhook_url FROM llmspend_budgets")).scalar() == url


# -- end to end, receivers on 127.0.0.1 only ----------------------------------------------------


class _Receiver(http.server.BaseHTTPRequestHandler):
    hits: list[str]
    location: str = ""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.hits.append(self.path)
        if self.location:
            self.send_response(302)
            self.send_header("Location", self.location)
        else:
            self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST

    def log_message(self, *args: Any) -> None:
        pass


def _serve(location: str = "") -> tuple[http.server.ThreadingHTTPServer, list[str]]:
    hits: list[str] = []
    handler = type("R", (_Receiver,), {"hits": hits, "location": location})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, hits


@pytest.fixture
def servers() -> Iterator[list[http.server.ThreadingHTTPServer]]:
    running: list[http.server.ThreadingHTTPServer] = []
    yield running
    for s in running:
        s.shutdown()
        s.server_close()


def _event() -> BudgetThresholdReached:
    return BudgetThresholdReached(
        id=None,  # type: ignore[arg-type]
        ts=dt.datetime(2026, 12, 5),
        budget="acme",
        scope="org",
        org="acme",
        project=None,
        user=None,
        threshold=Decimal(1),
        percent_used=100.0,
        spent_usd=Decimal(5),
        limit_usd=Decimal(5),
        call_cost_usd=None,
        period_start=dt.datetime(2026, 12, 1, tzinfo=dt.UTC),
    )


def _deliver(tracker: Tracker, url: str) -> dict[str, Any]:
    sender = WebhookSender()
    sender.submit(tracker.store, _event(), url, "json")
    assert sender.wait(60)
    (d,) = fetch_deliveries(tracker.store).to_dict("records")
    return {str(k): v for k, v in d.items()}


@pytest.fixture
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMSPEND_WEBHOOK_RETRIES", "0")
    monkeypatch.setenv("LLMSPEND_WEBHOOK_TIMEOUT", "5")
    monkeypatch.delenv("LLMSPEND_WEBHOOK_ALLOW", raising=False)


def test_loopback_refused_unless_allow_listed(
    tracker: Tracker, servers: list[Any], quick: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, hits = _serve()
    servers.append(server)
    url = f"http://127.0.0.1:{server.server_port}/hook/SECRET-path"
    d = _deliver(tracker, url)
    assert (d["status"], d["attempts"], d["error"]) == (
        "refused",
        0,
        "refused: destination not allowed",
    )
    assert hits == []  # refused before any connection
    # a closed port is refused in exactly the same words: the table is no port scanner
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    tracker.store.engine.dispose()
    with tracker.store.engine.begin() as conn:
        from sqlalchemy import text

        conn.execute(text("DELETE FROM llmspend_webhook_deliveries"))
    d2 = _deliver(tracker, f"http://127.0.0.1:{closed}/x")
    assert (d2["status"], d2["error"]) == (d["status"], d["error"])
    with tracker.store.engine.begin() as conn:
        conn.execute(text("DELETE FROM llmspend_webhook_deliveries"))

    monkeypatch.setenv("LLMSPEND_WEBHOOK_ALLOW", "127.0.0.1")
    d = _deliver(tracker, url)
    assert (d["status"], d["http_status"]) == ("delivered", 200)
    assert hits == ["/hook/SECRET-path"]
    assert "SECRET" not in d["target"]


def test_a_redirect_is_not_followed(
    tracker: Tracker, servers: list[Any], quick: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLMSPEND_WEBHOOK_ALLOW", "127.0.0.1")
    elsewhere, elsewhere_hits = _serve()
    servers.append(elsewhere)
    redirector, hits = _serve(location=f"http://127.0.0.1:{elsewhere.server_port}/internal")
    servers.append(redirector)
    d = _deliver(tracker, f"http://127.0.0.1:{redirector.server_port}/hook?token=SECRET")
    assert d["status"] == "failed" and d["http_status"] == 302
    assert "redirects are not followed" in d["error"] and "SECRET" not in d["error"]
    assert hits == ["/hook?token=SECRET"] and elsewhere_hits == []


def test_a_drip_feeding_receiver_is_cut_at_the_deadline(
    tracker: Tracker, quick: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The receiver sends one header byte per short wait, for as long as it can write."""
    monkeypatch.setenv("LLMSPEND_WEBHOOK_ALLOW", "127.0.0.1")
    monkeypatch.setenv("LLMSPEND_WEBHOOK_TIMEOUT", "0.5")
    listener = socket.create_server(("127.0.0.1", 0))
    stop, closed = threading.Event(), threading.Event()

    def drip() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            try:
                conn.sendall(b"HTTP/1.1 200 OK\r\n")
                while not stop.is_set():
                    conn.sendall(b"X")  # never the blank line that ends the headers
                    stop.wait(0.02)  # pacing only: the outcome does not depend on it
            except OSError:
                closed.set()  # the client hung up on us

    worker = threading.Thread(target=drip, daemon=True)
    worker.start()
    try:
        d = _deliver(tracker, f"http://127.0.0.1:{listener.getsockname()[1]}/slow/SECRET")
        assert d["status"] == "failed" and d["http_status"] is None
        assert "timed out" in d["error"] and "SECRET" not in d["error"]
        assert closed.wait(60), "the receiver never saw the connection close"
    finally:
        stop.set()
        worker.join(10)
        listener.close()
