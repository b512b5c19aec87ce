"""Webhook delivery, off the call's hot path, to checked destinations only.

Alerts are queued to one daemon thread per process, which POSTs JSON (or a Slack-style
``{"text": ...}`` payload), retries with backoff on errors, 5xx and 429, and records each
outcome in ``llmspend_webhook_deliveries``. A failing or hanging webhook never fails or
slows the caller's call; at exit the queue gets a bounded moment to drain.

Safety: the host is resolved once and refused unless public or allow-listed
(``destinations``), before any connection; the POST goes to the address that was checked
(the name is sent as ``Host`` and TLS SNI/certificate name); redirects are not followed
(a 3xx is a failure); each attempt has a total deadline, checked while reading, so a
receiver that drip-feeds bytes is cut off at it. Errors and logs name only
``scheme://host[:port]``: a webhook URL's path or query is a secret.

Settings: ``LLMSPEND_WEBHOOK_TIMEOUT`` (total seconds per attempt, default 5),
``LLMSPEND_WEBHOOK_RETRIES`` (attempts after the first, default 3),
``LLMSPEND_WEBHOOK_BACKOFF`` (first delay in seconds, doubled each retry, default 0.5),
``LLMSPEND_WEBHOOK_ALLOW`` (non-public hosts/CIDRs allowed, see ``destinations``). A
value that is not a number in range (a negative backoff, a NaN timeout) is logged and the
default used.
"""

from __future__ import annotations

import atexit
import base64
import json
import logging
import math
import os
import queue
import socket
import ssl
import threading
import time
from typing import TYPE_CHECKING, Any
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

__all__ = ["DeliveryError", "WebhookSender", "payload_for", "post", "sender"]

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


def _status(sock: socket.socket, deadline: float, timeout: float) -> int:
    """Read response heads up to the first final one; its status code."""
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
            return code


def post(url: str, body: bytes, *, addresses: list[str], timeout: float) -> int:
    """POST ``body`` to ``url`` at one of ``addresses`` (already checked); the status code.

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
        return _status(sock, deadline, timeout)
    except ssl.SSLError as exc:
        raise DeliveryError(f"TLS: {exc.reason or type(exc).__name__}") from None
    finally:
        sock.close()


class WebhookSender:
    """A queue and one worker thread that delivers webhooks with retries."""

    def __init__(self) -> None:
        self._queue: queue.Queue[
            tuple[Store, BudgetThresholdReached, str, str, str | None] | None
        ] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._pending = 0
        self._idle = threading.Condition(self._lock)

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
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="llmspend-webhooks", daemon=True
                )
                self._thread.start()
        self._queue.put((store, event, url, fmt, allow))

    def wait(self, timeout: float = 10.0) -> bool:
        """Block until the queue is drained (tests, exit). Returns False on timeout."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            try:
                self._deliver(*item)
            except Exception:  # never let the worker die
                log.exception("llmspend webhook worker error")
            finally:
                with self._idle:
                    self._pending -= 1
                    self._idle.notify_all()

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
                try:
                    status = post(url, body, addresses=addresses, timeout=timeout)
                    error = None if 200 <= status < 300 else f"HTTP {status}"
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
                    time.sleep(delay * (2**attempt))
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
    _sender.wait(timeout=_env_float("LLMSPEND_WEBHOOK_EXIT_WAIT"))
