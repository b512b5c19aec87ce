"""Webhook delivery, off the call's hot path, to checked destinations only.

Alerts are queued per destination (the webhook URL): each destination's deliveries are
made in order by one worker at a time, and different destinations proceed independently,
so a slow or dead receiver holds up only its own alerts. Workers are daemon threads
started on demand (at most ``MAX_WORKERS``; past that, destinations take turns, one
delivery each) and ended when no destination has work. A delivery POSTs JSON (or a
Slack-style ``{"text": ...}`` payload), retries with backoff on errors, 5xx and 429
(waiting as long as a 429's or 503's ``Retry-After`` asks, at most ``MAX_RETRY_AFTER``
seconds), and records its outcome in ``llmspend_webhook_deliveries``. A failing or hanging
webhook never fails or slows the caller's call; at exit the queues get a bounded moment
(``LLMSPEND_WEBHOOK_EXIT_WAIT``) to drain, and a retry that could not start within it is
given up and recorded as failed instead of lost.

Safety: the host is resolved once and refused unless public or allow-listed
(``destinations``), before any connection; the POST goes to the address that was checked
(the name is sent as ``Host`` and TLS SNI/certificate name); redirects are not followed
(a 3xx is a failure); each attempt has a total deadline, checked while reading, so a
receiver that drip-feeds bytes is cut off at it. Errors and logs name only
``scheme://host[:port]``: a webhook URL's path or query is a secret.

Settings: ``LLMSPEND_WEBHOOK_TIMEOUT`` (total seconds per attempt, default 5),
``LLMSPEND_WEBHOOK_RETRIES`` (attempts after the first, default 3),
``LLMSPEND_WEBHOOK_BACKOFF`` (first delay in seconds, doubled each retry, default 0.5),
``LLMSPEND_WEBHOOK_EXIT_WAIT`` (seconds the interpreter's exit waits, default 5),
``LLMSPEND_WEBHOOK_ALLOW`` (non-public hosts/CIDRs allowed, see ``destinations``). A
value that is not a number in range (a negative backoff, a NaN timeout) is logged and the
default used.
"""

from __future__ import annotations

import atexit
import base64
import datetime as dt
import email.utils
import json
import logging
import math
import os
import re
import socket
import ssl
import threading
import time
import weakref
from collections import deque
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import unquote, urlsplit

from sqlalchemy import insert

from ..budgets.spec import check_webhook_url
from ..errors import DeliveryError
from ..store.models import WebhookDelivery
from ..timeutil import utcnow
from .destinations import DestinationRefused, check_destination

if TYPE_CHECKING:
    from ..store.engine import Store
    from .events import BudgetThresholdReached

__all__ = [
    "MAX_RETRY_AFTER",
    "MAX_WORKERS",
    "Answer",
    "DeliveryError",
    "WebhookSender",
    "payload_for",
    "post",
    "retry_after",
    "send",
    "sender",
]

log = logging.getLogger("llmspend.alerts")


# Each setting's default and the range a value must be in (else: the default, with a warning).
_SETTINGS: dict[str, tuple[float, float, float]] = {
    "LLMSPEND_WEBHOOK_TIMEOUT": (5.0, 0.001, 600.0),
    "LLMSPEND_WEBHOOK_RETRIES": (3, 0, 20),
    "LLMSPEND_WEBHOOK_BACKOFF": (0.5, 0.0, 600.0),
    "LLMSPEND_WEBHOOK_EXIT_WAIT": (5.0, 0.0, 3600.0),
}
_warned: set[tuple[str, str]] = set()


def _env_float(name: str) -> float:
    """The setting ``name`` from the environment: a number in its range, else its default
    (a value that is not is logged once: a negative backoff or a NaN timeout would stop
    deliveries, or lose their record)."""
    fallback, low, high = _SETTINGS[name]
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return fallback
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not low <= value <= high:  # also NaN
        if (name, raw) not in _warned:
            _warned.add((name, raw))
            log.warning("llmspend: %s=%r is not a number from %g to %g; using %g",
                        name, raw[:40], low, high, fallback)  # fmt: skip
        return fallback
    return value


def target_of(url: str) -> str:
    """scheme://host[:port] only: the path of a webhook URL is often a secret."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}"[:300]


def payload_for(event: BudgetThresholdReached, fmt: str) -> dict[str, Any]:
    if fmt == "slack":
        return {"text": event.message}
    return {
        "event": f"llmspend.budget.{event.kind}",
        "text": event.message,
        "alert": event.to_json(),
    }


def detect_format(url: str, default: str = "json") -> str:
    host = urlsplit(url).hostname or ""
    return "slack" if host == "hooks.slack.com" or host.endswith(".slack.com") else default


_MAX_HEAD = 64 * 1024


def _scrub(message: str, url: str) -> str:
    """``message`` without any part of ``url`` beyond scheme://host (bounded to 500)."""
    try:
        parts = urlsplit(url)
        secrets = [url, parts.path, parts.query, parts.fragment, parts.netloc]
        host = parts.netloc.rsplit("@", 1)[-1]
    except ValueError:
        return message.split(":", 1)[0][:500]
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) > 1 and secret != host:
            message = message.replace(secret, "***")
    return message[:500]


def destination_of(url: str, allow: str | None = None) -> list[str]:
    """The checked addresses a delivery to ``url`` may use; ``DestinationRefused`` if none.

    ``allow``: the allow-list (``None``: ``LLMSPEND_WEBHOOK_ALLOW``)."""
    try:
        check_webhook_url(url)
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:  # BudgetError is one: a malformed URL never gets a connection
        raise DestinationRefused("refused: destination not allowed") from None
    return check_destination(parts.hostname or "", port, allow=allow)


def _left(deadline: float, timeout: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise DeliveryError(f"timed out: no complete answer within {timeout:g} s")
    return left


def _connect(addresses: list[str], port: int, deadline: float, timeout: float) -> socket.socket:
    error: Exception | None = None
    for addr in addresses:
        try:
            return socket.create_connection((addr, port), timeout=_left(deadline, timeout))
        except TimeoutError:
            raise DeliveryError(f"timed out: no connection within {timeout:g} s") from None
        except OSError as exc:
            error = exc
    raise DeliveryError(f"{type(error).__name__}: {getattr(error, 'strerror', None) or error}")


def _request(url: str, body: bytes) -> bytes:
    parts = urlsplit(url)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    host = parts.netloc.rsplit("@", 1)[-1]
    lines = [
        f"POST {target} HTTP/1.1",
        f"Host: {host}",
        "Content-Type: application/json",
        "User-Agent: llmspend-webhook",
        f"Content-Length: {len(body)}",
        "Connection: close",
    ]
    if parts.username is not None:
        cred = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        lines.append("Authorization: Basic " + base64.b64encode(cred.encode()).decode())
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class Answer(NamedTuple):
    """A receiver's final answer: its status code and its ``Retry-After`` value, if any."""

    status: int
    retry_after: str | None = None


def _header(head: bytes, name: bytes) -> str | None:
    """The value of header ``name`` (lower case) in a response head, bounded to 100."""
    for line in head.split(b"\r\n")[1:]:
        key, sep, value = line.partition(b":")
        if sep and key.strip().lower() == name:
            return value.strip().decode("latin-1")[:100]
    return None


def _answer(sock: socket.socket, deadline: float, timeout: float) -> Answer:
    """Read response heads up to the first final one; its status code and Retry-After."""
    buf = b""
    while True:
        while b"\r\n\r\n" not in buf:
            sock.settimeout(_left(deadline, timeout))
            try:
                chunk = sock.recv(4096)
            except TimeoutError:
                raise DeliveryError(f"timed out: no complete answer within {timeout:g} s") from None
            if not chunk:
                raise DeliveryError("the receiver closed the connection before answering")
            buf += chunk
            if len(buf) > _MAX_HEAD:
                raise DeliveryError("the receiver's answer has no end of headers")
        head, buf = buf.split(b"\r\n\r\n", 1)
        fields = head.split(b"\r\n", 1)[0].split()
        if len(fields) < 2 or not fields[0].startswith(b"HTTP/") or not fields[1].isdigit():
            raise DeliveryError("the receiver's answer is not HTTP")
        code = int(fields[1])
        if code >= 200 or code < 100:
            return Answer(code, _header(head, b"retry-after"))


def send(url: str, body: bytes, *, addresses: list[str], timeout: float) -> Answer:
    """POST ``body`` to ``url`` at one of ``addresses`` (already checked); the answer.

    ``timeout`` is the total for connecting, TLS, sending and reading the answer's headers:
    a monotonic deadline checked between reads, each socket timeout set to what is left.
    Redirects are returned as their status, never followed. Raises :class:`DeliveryError`.
    """
    parts = urlsplit(url)
    https = parts.scheme == "https"
    deadline = time.monotonic() + timeout
    sock = _connect(addresses, parts.port or (443 if https else 80), deadline, timeout)
    try:
        if https:
            sock.settimeout(_left(deadline, timeout))
            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=parts.hostname)
        sock.settimeout(_left(deadline, timeout))
        try:
            sock.sendall(_request(url, body))
        except TimeoutError:
            raise DeliveryError(f"timed out: could not send within {timeout:g} s") from None
        return _answer(sock, deadline, timeout)
    except ssl.SSLError as exc:
        raise DeliveryError(f"TLS: {exc.reason or type(exc).__name__}") from None
    finally:
        sock.close()


def post(url: str, body: bytes, *, addresses: list[str], timeout: float) -> int:
    """:func:`send`'s status code only."""
    return send(url, body, addresses=addresses, timeout=timeout).status


MAX_RETRY_AFTER = 60.0  # seconds: the longest a Retry-After is waited for
_SECONDS = re.compile(r"\d{1,12}(?:\.\d{1,9})?")


def retry_after(value: str | None, now: float | None = None) -> float | None:
    """The seconds a ``Retry-After`` value asks to wait, from 0 to :data:`MAX_RETRY_AFTER`.

    ``value`` is delay-seconds or an HTTP date (``now``: the wall clock, for tests);
    ``None`` when absent or not understood."""
    if value is None:
        return None
    value = value.strip()
    if _SECONDS.fullmatch(value):
        seconds = float(value)
    else:
        try:
            when = email.utils.parsedate_to_datetime(value)
            if when.tzinfo is None:  # "-0000": UTC, said without a zone
                when = when.replace(tzinfo=dt.UTC)
            seconds = when.timestamp() - (time.time() if now is None else now)
        except (TypeError, ValueError, OverflowError, IndexError):
            return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


class _Item(NamedTuple):
    store: Store
    event: BudgetThresholdReached
    url: str
    fmt: str
    allow: str | None


MAX_WORKERS = 8  # delivery threads at most; past that, destinations take turns
_senders: weakref.WeakSet[WebhookSender] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for each in list(_senders):
        each._forked()


os.register_at_fork(after_in_child=_after_fork_in_child)


class WebhookSender:
    """Per-destination queues, delivered in order with retries by on-demand worker threads.

    A destination (a webhook URL) is served by one worker at a time, one delivery per turn:
    its deliveries keep their order, and a hanging receiver holds up only its own queue.
    At most ``max_workers`` threads run; each ends when no destination is waiting.
    """

    def __init__(self, max_workers: int = MAX_WORKERS) -> None:
        self.max_workers = max(1, max_workers)
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._lanes: dict[str, deque[_Item]] = {}  # destination -> its queued deliveries
        self._ready: deque[str] = deque()  # destinations with work and no worker, in turn
        self._workers = 0
        self._pending = 0
        self._exiting = threading.Event()
        self._exit_deadline: float | None = None
        _senders.add(self)

    def _forked(self) -> None:
        """In a forked child: no worker, no queue. The parent's queued deliveries are the
        parent's to make (a child making them too would send them twice), and its workers,
        which the child has none of, must not count against the child's own alerts."""
        self._lock = threading.Lock()  # the parent's may have been held at the fork
        self._idle = threading.Condition(self._lock)
        self._lanes = {}
        self._ready = deque()
        self._workers = 0
        self._pending = 0
        self._exiting = threading.Event()
        self._exit_deadline = None

    def submit(
        self,
        store: Store,
        event: BudgetThresholdReached,
        url: str,
        fmt: str,
        *,
        allow: str | None = None,
    ) -> None:
        """Queue a delivery; ``allow`` is the allow-list (``None``: the environment's)."""
        with self._lock:
            self._pending += 1
            lane = self._lanes.get(url)
            if lane is None:  # not queued nor being served: its turn comes
                lane = self._lanes[url] = deque()
                self._ready.append(url)
            lane.append(_Item(store, event, url, fmt, allow))
            busy = len(self._lanes) - len(self._ready)  # destinations being served
            if self._workers >= min(self.max_workers, busy + len(self._ready)):
                return
            self._workers += 1
        try:
            name = f"llmspend-webhooks-{self._workers}"
            threading.Thread(target=self._run, name=name, daemon=True).start()
        except RuntimeError:  # no new threads (interpreter shutdown): others may serve it
            with self._lock:
                self._workers -= 1
            log.warning("llmspend could not start a webhook worker")

    def wait(self, timeout: float = 10.0) -> bool:
        """Block until every queue is drained (tests, exit). Returns False on timeout."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True

    def drain(self, timeout: float) -> bool:
        """:meth:`wait` at exit: a retry whose pause would end after ``timeout`` is given up
        (and recorded as failed) instead of lost with the process."""
        self._exit_deadline = time.monotonic() + timeout
        self._exiting.set()
        return self.wait(timeout)

    def _run(self) -> None:
        url: str | None = None
        while True:
            with self._idle:
                if url is not None:  # the last turn's delivery is done
                    self._pending -= 1
                    self._idle.notify_all()
                    if self._lanes[url]:
                        self._ready.append(url)  # its next delivery waits its turn
                    else:
                        del self._lanes[url]
                if not self._ready:
                    self._workers -= 1
                    return
                url = self._ready.popleft()
                item = self._lanes[url].popleft()
            try:
                self._deliver(*item)
            except Exception:  # never let the worker die
                log.exception("llmspend webhook worker error")

    def _pause(self, seconds: float) -> bool:
        """Sleep ``seconds``; False (at once) if they would end after the exit deadline."""
        end = time.monotonic() + seconds
        while True:
            exit_deadline = self._exit_deadline
            if exit_deadline is not None and end > exit_deadline:
                return False
            left = end - time.monotonic()
            if left <= 0:
                return True
            if self._exiting.is_set():
                time.sleep(left)
            else:
                self._exiting.wait(min(left, 3600.0))

    def _deliver(
        self,
        store: Store,
        event: BudgetThresholdReached,
        url: str,
        fmt: str,
        allow: str | None = None,
    ) -> None:
        timeout = _env_float("LLMSPEND_WEBHOOK_TIMEOUT")
        retries = int(_env_float("LLMSPEND_WEBHOOK_RETRIES"))
        delay = _env_float("LLMSPEND_WEBHOOK_BACKOFF")
        body = json.dumps(payload_for(event, fmt)).encode()
        attempts, status, error, outcome = 0, None, None, "failed"
        try:
            addresses = destination_of(url, allow)
        except DestinationRefused as exc:
            outcome, error = "refused", str(exc)
        else:
            for attempt in range(retries + 1):
                attempts = attempt + 1
                asked = None  # the wait a 429's or 503's Retry-After asks for
                try:
                    answer = send(url, body, addresses=addresses, timeout=timeout)
                    status = answer.status
                    error = None if 200 <= status < 300 else f"HTTP {status}"
                    if status in (429, 503):
                        asked = retry_after(answer.retry_after)
                except DeliveryError as exc:
                    status, error = None, str(exc)
                except Exception as exc:  # never echo the URL: only the kind of failure
                    status, error = None, _scrub(f"{type(exc).__name__}: {exc}", url)
                if status is not None:
                    if 200 <= status < 300:
                        break
                    if 300 <= status < 400:
                        error = f"HTTP {status} (redirects are not followed)"
                        break
                    if status < 500 and status != 429:
                        break  # a 4xx will not get better by retrying
                if attempt < retries:
                    pause = delay * (2**attempt)
                    if not self._pause(pause if asked is None else max(pause, asked)):
                        error = f"{error}; not retried: the process was exiting"
                        break
            if status is not None and 200 <= status < 300:
                outcome = "delivered"
        if outcome != "delivered":
            log.warning(
                "llmspend webhook to %s %s after %d attempts: %s",
                target_of(url),
                outcome,
                attempts,
                error,
            )
        try:
            with store.begin(write=True) as conn:
                conn.execute(
                    insert(WebhookDelivery).values(
                        ts=utcnow(),
                        alert_id=event.id,
                        target=target_of(url),
                        status=outcome,
                        attempts=attempts,
                        http_status=status,
                        error=None if outcome == "delivered" else (error or "failed")[:500],
                    )
                )
        except Exception:
            log.exception("llmspend could not record a webhook delivery")


_sender = WebhookSender()


def sender() -> WebhookSender:
    return _sender


@atexit.register
def _drain_at_exit() -> None:
    _sender.drain(_env_float("LLMSPEND_WEBHOOK_EXIT_WAIT"))
