"""One pipeline per provider call, in one place.

    attribution → pre-call estimate → budget check → the call → usage → price → record
    (with budget settlement and alert decisions in the same transaction) → listeners

Provider taps only find calls: they call :func:`begin_call` with what the request says
(before anything is sent), make the call, and hand the usage their dialect read back to
:meth:`Call.finish`. Everything else — estimates, budgets, pricing, the row, alerts —
happens here, the same way for every provider.

**Retries of a refused request.** Frameworks (litellm, dspy, instructor) turn an exception
from the layer under them into a retryable error and send the same request again. Every
attempt is checked against the budgets again (nothing is sent while they refuse), but an
attempt that sends the same request, by the same caller, within the same call into the
framework (the same library entry frame: see :func:`_entry_frame`), within
:data:`REPEAT_WINDOW_SECONDS`, is not recorded again: one user action, one refused row. A
caller's own loop enters the library anew on every turn, so each of its refusals is
recorded. A tap names a request by passing ``request_key`` (bytes, asked for only when a
refusal is remembered or just happened).

A tap never breaks a user's call on a bug of llmspend's: :func:`begin_call` and
:func:`shielded` let llmspend's deliberate refusals through (any
:class:`~llmspend.errors.LLMSpendError`: ``BudgetExceeded``, ``StoreUnavailable`` when hard
budgets cannot be checked, a ``ConfigError``) and turn anything else into a log line (once
per place and kind of error) and an untracked call.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TypeVar

from .attribution import current_overrides
from .call import Call
from .errors import BudgetExceeded, LLMSpendError
from .tracker import Tracker, installed_tracker

__all__ = [
    "REPEAT_WINDOW_SECONDS",
    "asend_recorded",
    "begin_call",
    "handled",
    "internal_error",
    "is_handled",
    "json_key",
    "send_recorded",
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


def send_recorded(fail: Callable[[BaseException], object], send: Callable[[], T]) -> T:
    """``send()`` a request a tap records (marked :func:`handled`, so the layers under it
    pass it through); if it raises, ``fail(exc)`` records the error and it is re-raised
    unchanged. The one way every tap sends what it records."""
    token = _handled.set(True)
    try:
        return send()
    except BaseException as exc:
        fail(exc)
        raise
    finally:
        _handled.reset(token)


async def asend_recorded(
    fail: Callable[[BaseException], object], send: Callable[[], Awaitable[T]]
) -> T:
    """:func:`send_recorded` for a coroutine."""
    token = _handled.set(True)
    try:
        return await send()
    except BaseException as exc:
        fail(exc)
        raise
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


#: How long the same refused request, sent again, is taken for a retry of the same action.
REPEAT_WINDOW_SECONDS = 60.0

# A refused request → (when, the library frame the call entered through). Holding the frame
# keeps its identity unique while remembered (a frame freed and reallocated is never taken
# for it).
_refused: OrderedDict[bytes, tuple[float, Any]] = OrderedDict()
_refused_lock = threading.Lock()
_OURS = os.path.dirname(os.path.abspath(__file__)) + os.sep
_LIBRARY_DIRS = ("site-packages", "dist-packages")


def _entry_frame() -> Any:
    """The outermost frame of installed library code on the way to this call: the entry
    point of the framework or SDK the caller called (``litellm.completion``, ``httpx.post``).

    A framework that retries does so inside that frame: its attempts share it. A caller who
    sends the same request again — a loop, a cell run twice — enters the library anew."""
    frame: Any = sys._getframe(1)
    entry = None
    while frame is not None:
        name = frame.f_code.co_filename
        if name.startswith(_OURS):
            pass
        elif any(d in name for d in _LIBRARY_DIRS):
            entry = frame
        else:
            break  # the caller's own code
        frame = frame.f_back
    return entry


def _fingerprint(tracker: Tracker, request: bytes) -> bytes:
    """The same request, by the same caller (store, attribution)."""
    over = current_overrides()
    who = (id(tracker), tracker.defaults, over.org, over.project, over.user)
    h = hashlib.blake2b(repr(who).encode(), digest_size=16)
    h.update(request)
    return h.digest()


def _is_retry(key: bytes, entry: Any) -> bool:
    """Whether this request was refused moments ago within the same library call."""
    now = time.monotonic()
    with _refused_lock:
        while _refused and next(iter(_refused.values()))[0] < now - REPEAT_WINDOW_SECONDS:
            _refused.popitem(last=False)
        seen = _refused.get(key)
        return seen is not None and entry is not None and seen[1] is entry


def _remember_refusal(key: bytes, entry: Any) -> None:
    if entry is None:  # no library between the caller and us: nothing retries it
        return
    with _refused_lock:
        _refused[key] = (time.monotonic(), entry)
        _refused.move_to_end(key)
        while len(_refused) > 256:
            _refused.popitem(last=False)


def _forget_refusal(key: bytes) -> None:
    with _refused_lock:
        _refused.pop(key, None)


def json_key(method: str, url: Any, body: Any) -> Callable[[], bytes]:
    """A ``request_key`` for a request whose body is JSON data (an SDK tap's view)."""

    def key() -> bytes:
        text = json.dumps(body, sort_keys=True, default=repr, separators=(",", ":"))
        return f"{method} {url}\n{text}".encode("utf-8", "surrogatepass")

    return key


def begin_call(
    provider: str,
    api: str,
    model: str,
    *,
    payload: Any = None,
    input_tokens: int | None = None,
    max_output_tokens: int | None = None,
    streamed: bool = False,
    service_tier: str | None = None,
    request_key: Callable[[], bytes] | None = None,
) -> Call | None:
    """Start a call: attribution, estimate and budget check, before anything is sent.

    Returns ``None`` when llmspend is not installed, or when it failed unexpectedly (the
    failure is logged; the tap then stays out of the way and the call goes untracked).
    Raises :class:`~llmspend.BudgetExceeded` when a hard budget refuses the call (the
    refusal is recorded, unless the same request — ``request_key()`` — was refused moments
    ago: a retry of one user action), and :class:`~llmspend.errors.StoreUnavailable` when the
    store is down and policy says hard budgets fail closed. ``service_tier``: the tier the
    request asks for (``"batch"`` for a batch job), whose price the estimate uses.
    """
    tracker = installed_tracker()
    if tracker is None:
        return None
    key = entry = None
    try:
        # Making the key costs more than the rest: only while a refusal is remembered.
        if request_key is not None and _refused:
            key = _fingerprint(tracker, request_key())
            entry = _entry_frame()
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
        call.repeat = key is not None and _is_retry(key, entry)
        tracker.before_call(call)
    except BudgetExceeded:
        if request_key is not None:
            try:
                if key is None:
                    key, entry = _fingerprint(tracker, request_key()), _entry_frame()
                _remember_refusal(key, entry)
            except Exception as exc:  # the refusal stands all the same
                internal_error("remember a refused request", exc)
        raise
    except LLMSpendError:
        raise
    except Exception as exc:
        internal_error(f"start a {provider} {api} call", exc)
        return None
    if key is not None:
        _forget_refusal(key)
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
