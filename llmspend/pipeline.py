"""One pipeline per provider call, in one place.

    attribution → pre-call estimate → budget check → the call → usage → price → record
    (with budget settlement and alert decisions in the same transaction) → listeners

Provider taps only find calls: they call :func:`begin_call` with what the request says
(before anything is sent), make the call, and hand the usage their dialect read back to
:meth:`Call.finish`. Everything else — estimates, budgets, pricing, the row, alerts —
happens here, the same way for every provider.

A tap never breaks a user's call on a bug of llmspend's: :func:`begin_call` and
:func:`shielded` let llmspend's deliberate refusals through (any
:class:`~llmspend.errors.LLMSpendError`: ``BudgetExceeded``, ``StoreUnavailable`` when hard
budgets cannot be checked, a ``ConfigError``) and turn anything else into a log line (once
per place and kind of error) and an untracked call.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TypeVar

from .call import Call
from .errors import LLMSpendError
from .tracker import installed_tracker

__all__ = [
    "begin_call",
    "handled",
    "internal_error",
    "is_handled",
    "settle_interrupted",
    "shielded",
    "watch_stream",
]

log = logging.getLogger("llmspend")

T = TypeVar("T")

# Set while an SDK tap sends a request it is recording: the transport taps under it (httpx,
# httpx2, requests, aiohttp) then pass the request through, so a call is one row however
# many layers see it.
_handled: ContextVar[bool] = ContextVar("llmspend_handled", default=False)


@contextmanager
def handled() -> Iterator[None]:
    """Mark the HTTP requests sent inside as recorded by an SDK tap (see :func:`is_handled`).

    Never hold it across a ``yield`` of a generator that runs in its caller's context: set
    it around each step that may send instead.
    """
    token = _handled.set(True)
    try:
        yield
    finally:
        _handled.reset(token)


def is_handled() -> bool:
    """Whether an SDK tap records the request being sent now (a transport tap skips it)."""
    return _handled.get()


_reported: set[tuple[str, type[BaseException]]] = set()
_reported_lock = threading.Lock()


def internal_error(what: str, exc: BaseException) -> None:
    """Log an unexpected failure inside llmspend: an error with its traceback the first
    time ``what`` fails with this kind of exception, at debug level after that."""
    key = (what, type(exc))
    with _reported_lock:
        first = key not in _reported
        if first and len(_reported) < 1024:
            _reported.add(key)
    if first:
        log.error(
            "llmspend could not %s (%s: %s); the call goes on as if llmspend were not there",
            what, type(exc).__name__, exc, exc_info=exc,
        )  # fmt: skip
    else:
        log.debug("llmspend could not %s", what, exc_info=exc)


def shielded(fn: Callable[..., T], *args: Any, what: str, **kwargs: Any) -> T | None:
    """``fn(*args, **kwargs)``; on an unexpected failure :func:`internal_error` and ``None``.

    llmspend's own errors (:class:`~llmspend.errors.LLMSpendError`) propagate.
    """
    try:
        return fn(*args, **kwargs)
    except LLMSpendError:
        raise
    except Exception as exc:
        internal_error(what, exc)
        return None


def begin_call(
    provider: str,
    api: str,
    model: str,
    *,
    payload: Any = None,
    input_tokens: int | None = None,
    max_output_tokens: int | None = None,
    streamed: bool = False,
    repeat: bool = False,
    service_tier: str | None = None,
) -> Call | None:
    """Start a call: attribution, estimate and budget check, before anything is sent.

    Returns ``None`` when llmspend is not installed, or when it failed unexpectedly (the
    failure is logged; the tap then stays out of the way and the call goes untracked).
    Raises :class:`~llmspend.BudgetExceeded` when a hard budget refuses the call (the
    refusal is recorded, unless ``repeat`` says the same request was refused moments ago:
    a retry of one user action), and :class:`~llmspend.errors.StoreUnavailable` when the
    store is down and policy says hard budgets fail closed. ``service_tier``: the tier the
    request asks for (``"batch"`` for a batch job), whose price the estimate uses.
    """
    tracker = installed_tracker()
    if tracker is None:
        return None
    try:
        call = Call(
            tracker,
            provider,
            api,
            model,
            streamed=streamed,
            input_upper=input_tokens,
            output_cap=max_output_tokens,
            payload=payload,
            service_tier=service_tier,
        )
        call.repeat = repeat
        tracker.before_call(call)
    except LLMSpendError:
        raise
    except Exception as exc:
        internal_error(f"start a {provider} {api} call", exc)
        return None
    return call


# Streams handed to a caller and not settled yet, from every tap (held weakly): each has an
# ``interrupted(error) -> bool`` that settles it as ``partial`` if the caller had started
# reading it, and says whether it did.
_open_streams: weakref.WeakSet[Any] = weakref.WeakSet()


def watch_stream(stream: Any) -> None:
    """Let :func:`settle_interrupted` settle ``stream`` (see ``_open_streams``)."""
    _open_streams.add(stream)


def settle_interrupted(error: BaseException) -> int:
    """Settle, as ``partial``, every stream a caller had started reading and left
    unsettled: a notebook cell ended by ``error`` (Ctrl-C) is done with them, though its
    globals and ``sys.last_traceback`` keep them alive. Returns how many were settled."""
    n = 0
    for stream in list(_open_streams):
        try:
            n += bool(stream.interrupted(error))
        except Exception as exc:
            internal_error("settle an interrupted stream", exc)
    return n
