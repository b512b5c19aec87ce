"""Team mode in the kernel: calls bound for the llmspend gateway are observed, not tracked.

With ``LLMSPEND_GATEWAY_URL`` set (or ``install(gateway_url=...)``), a request to the
gateway (:func:`llmspend.dialects.hosts.gateway_bound`) is the gateway's to budget and
record: the kernel neither reserves nor records it (no double counting). The taps still
see its answer and hand the gateway's response headers to :func:`answered`:

* ``x-llmspend-cost-usd`` / ``-price-status`` / ``-estimate-usd``: the call's cost, for the
  notebook's cell line (observers registered with :func:`add_observer`);
* ``x-llmspend-budget-state: warning`` with ``x-llmspend-budget-thresholds``: a budget
  crossed a threshold (a warning in the ``llmspend`` log and the cell line);
* a 403 with ``x-llmspend-budget-state: exceeded``: a hard budget refused the call at the
  gateway, nothing was sent upstream. The user's SDK call raises :class:`BudgetExceeded`,
  the same type and message as in solo mode, instead of the SDK's own 403 error
  (:func:`via_gateway` wraps an SDK tap's call; a bare HTTP client gets it from the
  transport tap). The gateway tells SDKs not to retry it, so nothing is sent twice.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import threading
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from decimal import Decimal, InvalidOperation
from typing import Any, NamedTuple, TypeVar

from .dialects.hosts import gateway, gateway_bound_url
from .errors import BudgetExceeded

__all__ = [
    "GatewayAnswer",
    "add_observer",
    "answered",
    "avia_gateway",
    "client_bound",
    "gateway_client_url_bound",
    "in_sdk_call",
    "refusal",
    "remove_observer",
    "team_hint",
    "via_gateway",
]

log = logging.getLogger("llmspend")

T = TypeVar("T")


class GatewayAnswer(NamedTuple):
    """What the gateway said about one call, from its response's status and headers."""

    status: int
    api: str  # the gateway route's first segment: ``openai``, ``gemini``, ``anthropic``
    cost_usd: Decimal | None  # ``None``: not said (a stream, or an error)
    price_status: str | None
    estimate_usd: Decimal | None
    budget_state: str | None  # ``ok``, ``warning``, ``exceeded`` or ``None``
    thresholds: tuple[str, ...]  # budgets this call brought past a threshold
    headers: Mapping[str, str]  # the llmspend headers, lower-case names

    @property
    def refused(self) -> bool:
        """A hard budget refused the call at the gateway (nothing was sent upstream)."""
        return self.status == 403 and self.budget_state == "exceeded"


def _decimal(value: str | None) -> Decimal | None:
    if not value:
        return None
    try:
        out = Decimal(value.strip())
    except InvalidOperation:
        return None
    return out if out.is_finite() else None


def read_answer(status: int, headers: Any, path: str = "") -> GatewayAnswer:
    """The gateway's answer from a response's ``status`` and ``headers`` (any mapping
    with ``items()``: httpx, requests and aiohttp headers)."""
    ours = {
        str(k).lower(): str(v) for k, v in headers.items() if str(k).lower().startswith("x-llm")
    }
    thresholds = tuple(t for t in ours.get("x-llmspend-budget-thresholds", "").split(",") if t)
    return GatewayAnswer(
        status=status,
        api=path.strip("/").split("/", 1)[0],
        cost_usd=_decimal(ours.get("x-llmspend-cost-usd")),
        price_status=ours.get("x-llmspend-price-status") or None,
        estimate_usd=_decimal(ours.get("x-llmspend-estimate-usd")),
        budget_state=ours.get("x-llmspend-budget-state") or None,
        thresholds=thresholds,
        headers=ours,
    )


# "hard project budget 'acme/capped' (day) would be exceeded: ..." (errors.BudgetExceeded)
_MESSAGE = re.compile(r"hard (\w+) budget '[^']*' \((\w+)\) would be exceeded.*?Nothing was sent\."
                      r"(?: \((.*)\))?", re.S)  # fmt: skip


def _scope_of(budget: str) -> str:
    return {1: "org", 2: "project"}.get(len(budget.split("/")), "user")


def refusal(answer: GatewayAnswer, message: str = "") -> BudgetExceeded:
    """The :class:`BudgetExceeded` a refused answer stands for, as solo mode raises it.

    The budget's limit, spent, reserved, the estimate and the reset time come from the
    headers; its scope and period from ``x-llmspend-budget-scope`` / ``-period`` when the
    gateway sends them, else from the refusal's ``message`` (the gateway's error text).
    """
    h = answer.headers
    budget = h.get("x-llmspend-budget", "")
    found = _MESSAGE.search(message) if message else None
    scope = h.get("x-llmspend-budget-scope") or (found.group(1) if found else _scope_of(budget))
    period = h.get("x-llmspend-budget-period") or (found.group(2) if found else "period")
    resets = h.get("x-llmspend-budget-resets-at")
    try:
        resets_at = dt.datetime.fromisoformat(resets) if resets else None
    except ValueError:
        resets_at = None
    zero = Decimal(0)
    return BudgetExceeded(
        budget=budget,
        scope=scope,
        period=period,
        limit=_decimal(h.get("x-llmspend-budget-limit-usd")) or zero,
        spent=_decimal(h.get("x-llmspend-budget-spent-usd")) or zero,
        reserved=_decimal(h.get("x-llmspend-budget-reserved-usd")) or zero,
        estimate=answer.estimate_usd,
        resets_at=resets_at,
        reason=found.group(3) if found and found.group(3) else None,
    )


# -- observers (the notebook's cell line) ----------------------------------------------------

_observers: list[Callable[[GatewayAnswer], None]] = []
_observers_lock = threading.Lock()


def add_observer(observer: Callable[[GatewayAnswer], None]) -> None:
    """Call ``observer(answer)`` for every gateway answer (idempotent)."""
    with _observers_lock:
        if observer not in _observers:
            _observers.append(observer)


def remove_observer(observer: Callable[[GatewayAnswer], None]) -> None:
    with _observers_lock:
        while observer in _observers:
            _observers.remove(observer)


# Set while an SDK tap sends a gateway-bound call (:func:`via_gateway`): the refused
# answers seen under it, turned into BudgetExceeded when the SDK raises its own error.
_pending: ContextVar[list[GatewayAnswer] | None] = ContextVar("llmspend_gateway", default=None)


def answered(status: int, headers: Any, path: str = "") -> GatewayAnswer:
    """Hand one gateway answer on: to the observers, to the log (a threshold crossed), and
    to the SDK call it belongs to (a refusal). Observers' failures are logged, not raised."""
    answer = read_answer(status, headers, path)
    with _observers_lock:
        observers = list(_observers)
    for observer in observers:
        try:
            observer(answer)
        except Exception:
            log.debug("llmspend: a gateway observer failed", exc_info=True)
    if answer.thresholds:
        log.warning("llmspend gateway: a budget threshold was reached: %s",
                    ", ".join(answer.thresholds))  # fmt: skip
    pending = _pending.get()
    if pending is not None and answer.refused:
        pending.append(answer)
    return answer


def in_sdk_call() -> bool:
    """Whether an SDK tap's :func:`via_gateway` is waiting for this answer (it raises the
    refusal; a transport tap on its own raises it itself)."""
    return _pending.get() is not None


def client_bound(client: Any) -> bool:
    """Whether an SDK ``client`` (its ``base_url``) sends to the gateway. Never raises."""
    if gateway() is None:
        return False
    try:
        return gateway_bound_url(client.base_url)
    except Exception:
        return False


def gateway_client_url_bound(base_url: Any) -> bool:
    """Whether an SDK client whose base URL is ``base_url`` sends to the gateway. Never
    raises."""
    if gateway() is None or not base_url:
        return False
    try:
        return gateway_bound_url(str(base_url))
    except Exception:
        return False


def _raise_refused(pending: list[GatewayAnswer], exc: BaseException) -> None:
    if pending and isinstance(exc, Exception):
        raise refusal(pending[-1], str(exc)) from None


def via_gateway(send: Callable[[], T]) -> T:
    """``send()`` a gateway-bound SDK call, untracked; if the gateway refused it, the SDK's
    error becomes :class:`BudgetExceeded` (any other outcome reaches the caller unchanged)."""
    pending: list[GatewayAnswer] = []
    token = _pending.set(pending)
    try:
        return send()
    except BaseException as exc:
        _raise_refused(pending, exc)
        raise
    finally:
        _pending.reset(token)


async def avia_gateway(send: Callable[[], Awaitable[T]]) -> T:
    """:func:`via_gateway` for a coroutine."""
    pending: list[GatewayAnswer] = []
    token = _pending.set(pending)
    try:
        return await send()
    except BaseException as exc:
        _raise_refused(pending, exc)
        raise
    finally:
        _pending.reset(token)


def team_hint() -> str:
    """One line: how to point the SDKs at the gateway (empty in solo mode)."""
    ep = gateway()
    if ep is None:
        return ""
    port = f":{ep.port}" if ep.port else ""
    url = f"{ep.scheme}://{ep.host}{port}{ep.prefix}"
    return (
        f"llmspend team mode: calls to {url} are budgeted and recorded by the gateway; set "
        f"OPENAI_BASE_URL={url}/openai/v1, ANTHROPIC_BASE_URL={url}/anthropic, "
        f"GOOGLE_GEMINI_BASE_URL={url}/gemini, and your gateway key (or JupyterHub token) as "
        "OPENAI_API_KEY, ANTHROPIC_API_KEY and GEMINI_API_KEY"
    )
