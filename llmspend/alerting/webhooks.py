"""Webhook delivery, off the call's hot path.

Alerts are queued to one daemon thread per process, which POSTs JSON (or a Slack-style
``{"text": ...}`` payload) with a timeout, retries with backoff on errors, 5xx and 429,
and records each outcome in ``llmspend_webhook_deliveries``. A failing or hanging
webhook never fails or slows the caller's call; at exit the queue gets a bounded moment
to drain.

Settings: ``LLMSPEND_WEBHOOK_TIMEOUT`` (seconds per attempt, default 5),
``LLMSPEND_WEBHOOK_RETRIES`` (attempts after the first, default 3),
``LLMSPEND_WEBHOOK_BACKOFF`` (first delay in seconds, doubled each retry, default 0.5).
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import queue
import threading
import time
import urllib.error
import urllib.request
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from sqlalchemy import insert

from ..store.models import WebhookDelivery
from ..timeutil import utcnow

if TYPE_CHECKING:
    from ..store.engine import Store
    from .events import BudgetThresholdReached

__all__ = ["WebhookSender", "payload_for", "sender"]

log = logging.getLogger("llmspend.alerts")


def _env_float(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return default


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


class WebhookSender:
    """A queue and one worker thread that delivers webhooks with retries."""

    def __init__(self) -> None:
        self._queue: queue.Queue[tuple[Store, BudgetThresholdReached, str, str] | None] = (
            queue.Queue()
        )
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._pending = 0
        self._idle = threading.Condition(self._lock)

    def submit(self, store: Store, event: BudgetThresholdReached, url: str, fmt: str) -> None:
        with self._lock:
            self._pending += 1
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="llmspend-webhooks", daemon=True
                )
                self._thread.start()
        self._queue.put((store, event, url, fmt))

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

    def _deliver(self, store: Store, event: BudgetThresholdReached, url: str, fmt: str) -> None:
        timeout = _env_float("LLMSPEND_WEBHOOK_TIMEOUT", 5.0)
        retries = int(_env_float("LLMSPEND_WEBHOOK_RETRIES", 3))
        delay = _env_float("LLMSPEND_WEBHOOK_BACKOFF", 0.5)
        body = json.dumps(payload_for(event, fmt)).encode()
        attempts, status, error = 0, None, None
        for attempt in range(retries + 1):
            attempts = attempt + 1
            req = urllib.request.Request(
                url,
                data=body,
                method="POST",
                headers={"Content-Type": "application/json", "User-Agent": "llmspend-webhook"},
            )
            try:
                with urllib.request.urlopen(req, timeout=timeout) as resp:
                    status, error = resp.status, None
                    if 200 <= resp.status < 300:
                        break
            except urllib.error.HTTPError as exc:
                status, error = exc.code, f"HTTP {exc.code}"
                if exc.code < 500 and exc.code != 429:
                    break  # a 4xx will not get better by retrying
            except Exception as exc:
                status, error = None, f"{type(exc).__name__}: {exc}"[:500]
            if attempt < retries:
                time.sleep(delay * (2**attempt))
        delivered = status is not None and 200 <= status < 300 and error is None
        if not delivered:
            log.warning(
                "llmspend webhook to %s failed after %d attempts: %s",
                target_of(url),
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
                        status="delivered" if delivered else "failed",
                        attempts=attempts,
                        http_status=status,
                        error=None if delivered else (error or f"HTTP {status}")[:500],
                    )
                )
        except Exception:
            log.exception("llmspend could not record a webhook delivery")


_sender = WebhookSender()


def sender() -> WebhookSender:
    return _sender


@atexit.register
def _drain_at_exit() -> None:
    _sender.wait(timeout=_env_float("LLMSPEND_WEBHOOK_EXIT_WAIT", 5.0))
