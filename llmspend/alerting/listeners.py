"""Where alert events go: the notebook, ``logging``, user callbacks and webhooks.

Every listener is isolated: one that raises is logged and the others still run; none of
them can fail the call that crossed the threshold.

A budget's own ``webhook_url`` is delivered by one process only: the gateway in team mode
(its :class:`WebhookPolicy` says so, with its configuration's allow-list), the kernel in
solo mode. A kernel in team mode (``LLMSPEND_GATEWAY_URL`` or ``install(gateway_url=...)``)
never posts a budget's webhook. The global webhook (``set_webhook()`` /
``LLMSPEND_WEBHOOK_URL``) is the process's own and is posted in either mode.
"""

from __future__ import annotations

import html
import logging
import os
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..budgets.spec import check_webhook_url
from ..dialects.hosts import gateway
from ..errors import ValidationError
from .webhooks import detect_format, sender

if TYPE_CHECKING:
    from ..tracker import Tracker
    from .events import BudgetThresholdReached

__all__ = [
    "AlertNotice",
    "WebhookPolicy",
    "dispatch",
    "on_alert",
    "remove_alert_callback",
    "set_webhook",
]

log = logging.getLogger("llmspend.alerts")

_callbacks: list[Callable[[BudgetThresholdReached], Any]] = []
_lock = threading.Lock()
_global_webhook: tuple[str, str] | None = None


@dataclass(frozen=True, slots=True)
class WebhookPolicy:
    """Which webhooks a tracker's alerts are posted to, and where they may go.

    ``budget_webhooks``: post a budget's own ``webhook_url`` (``None``: only in solo mode,
    i.e. not when a gateway is configured). ``allow``: the destinations allowed although not
    public (``None``: ``LLMSPEND_WEBHOOK_ALLOW``; the gateway passes its configuration's).
    """

    budget_webhooks: bool | None = None
    allow: str | None = None

    def posts_budget_webhooks(self) -> bool:
        if self.budget_webhooks is not None:
            return self.budget_webhooks
        return gateway() is None


def on_alert(callback: Callable[[BudgetThresholdReached], Any]) -> None:
    """Call ``callback(event)`` for every alert this process fires (once per callback)."""
    if not callable(callback):
        raise ValidationError(f"on_alert needs a callable, got {type(callback).__name__}")
    with _lock:
        if callback not in _callbacks:
            _callbacks.append(callback)


def remove_alert_callback(callback: Callable[[BudgetThresholdReached], Any]) -> None:
    with _lock:
        if callback in _callbacks:
            _callbacks.remove(callback)


def set_webhook(url: str | None, *, format: str = "auto") -> None:
    """Send every alert to ``url`` (JSON POST; ``format="slack"`` for Slack's payload).

    ``None`` turns the global webhook off. Budgets can also carry their own
    ``webhook_url``. ``LLMSPEND_WEBHOOK_URL`` / ``LLMSPEND_WEBHOOK_FORMAT`` set the same.
    """
    global _global_webhook
    if url is None:
        _global_webhook = None
        return
    check_webhook_url(url)
    if format not in _FORMATS:
        raise ValidationError(f"webhook format must be 'auto', 'json' or 'slack', got {format!r}")
    _global_webhook = (url, format)


_FORMATS = ("auto", "json", "slack")
_env_warned: set[tuple[str, str]] = set()


def _env_warning(key: tuple[str, str], message: str) -> None:
    if key not in _env_warned:
        _env_warned.add(key)
        log.warning(message)


def _global() -> tuple[str, str] | None:
    if _global_webhook is not None:
        return _global_webhook
    url = os.environ.get("LLMSPEND_WEBHOOK_URL", "").strip()
    if not url:
        return None
    try:
        check_webhook_url(url)
    except ValueError as exc:  # said once, in one line (never the URL: it is a secret)
        _env_warning(("url", url), f"llmspend: LLMSPEND_WEBHOOK_URL is not used: {exc}")
        return None
    raw = os.environ.get("LLMSPEND_WEBHOOK_FORMAT", "auto")
    fmt = raw.strip().lower() or "auto"
    if fmt not in _FORMATS:
        _env_warning(
            ("format", raw),
            f"llmspend: LLMSPEND_WEBHOOK_FORMAT must be 'auto', 'json' or 'slack', got "
            f"{raw[:40]!r}; using 'auto'",
        )
        fmt = "auto"
    return url, fmt


class AlertNotice:
    """A small, visible notice shown in the notebook when an alert fires."""

    def __init__(self, event: BudgetThresholdReached) -> None:
        self.event = event

    def __repr__(self) -> str:
        return f"⚠ {self.event.message}"

    def _repr_html_(self) -> str:
        colour = (
            "#b00020" if self.event.kind == "refused" or self.event.threshold >= 1 else "#8a6d00"
        )
        return (
            f'<div class="llmspend-alert mathjax_ignore tex2jax_ignore" '
            f'style="border-left:4px solid {colour};'
            f'padding:2px 8px;margin:2px 0;font-size:90%;color:{colour}">'
            # "&#36;" rather than "$": JupyterLab typesets $...$ in HTML output as LaTeX
            f"⚠ {html.escape(self.event.message).replace('$', '&#36;')}</div>"
        )


def _notebook(event: BudgetThresholdReached) -> None:
    if os.environ.get("LLMSPEND_NOTEBOOK_ALERTS", "1").lower() in ("0", "false", "off", "no"):
        return
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return
    shell = ipython.get_ipython()
    if shell is None:
        return
    from IPython.display import display

    display(AlertNotice(event))


def dispatch(tracker: Tracker, events: list[BudgetThresholdReached]) -> None:
    """Deliver events, in order, to every listener; never raises."""
    with _lock:
        callbacks = list(_callbacks)
    glob = _global()
    policy: WebhookPolicy = tracker.alerts.webhooks
    own = policy.posts_budget_webhooks()
    for event in events:
        if event.kind == "refused" or event.threshold >= 1:
            log.warning(event.message)
        else:
            log.info(event.message)
        for listener in (_notebook, *callbacks):
            try:
                listener(event)
            except Exception:
                log.exception("llmspend alert listener %r failed", listener)
        targets = []
        if event.webhook_url and own:
            targets.append((event.webhook_url, "auto"))
        if glob is not None and (glob[0] != event.webhook_url or not own):
            targets.append(glob)
        for url, fmt in targets:
            try:
                sender().submit(
                    tracker.store,
                    event,
                    url,
                    detect_format(url) if fmt == "auto" else fmt,
                    allow=policy.allow,
                )
            except Exception:
                log.exception("llmspend could not queue a webhook")
