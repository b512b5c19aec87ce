"""Child processes: what ``multiprocessing`` starts is hooked like the process that started it.

A process started through ``multiprocessing`` (spawn, forkserver or fork; a ``Pool``;
``concurrent.futures.ProcessPoolExecutor``; joblib's loky workers) from a process where
llmspend is installed records into the same store, under the same attribution defaults,
``attribute()`` context and budgets, with no code in the child.

How: while installed, ``multiprocessing.process.BaseProcess.start`` (where every start
method, loky's included, begins) and ``BaseProcess._bootstrap`` (what a child runs) are
wrapped. ``start`` leaves a :class:`Carrier` on the process object holding
:class:`ChildSettings`: the store's URL, the price-override file, the defaults, the
starting thread's ``attribute()`` context, the declared endpoints and the team-mode
gateway, read at that moment. A spawn, forkserver or loky
child unpickles its process object before running it, and the carrier unpickles as a call
to the installer's ``arrive``, which installs llmspend in the child; ``_bootstrap`` then
runs the child inside that context. A fork child has its parent's memory: it is installed
already. Nothing is written to the environment or to site-packages, and a Python started
some other way (``subprocess``) is not hooked.

A pool's worker carries the context of the moment it was started (for a
``ProcessPoolExecutor``, the ``submit`` that started it; for joblib, the first
``Parallel`` call that created the reusable loky executor) and keeps it while it is reused:
an ``attribute()`` block around a later call does not reach it, one inside the task
function does.

Opting out: ``install(children=False)``, or ``LLMSPEND_CHILDREN=0`` in the parent's
environment when a child starts, or in the child's own (loky's ``env``). A fork child of
an opted-out start turns llmspend off before it runs its target.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing import process, spawn
from typing import Any

import wrapt

from .attribution import Attribution, attribute, current_overrides
from .dialects import hosts
from .tracker import Tracker, installed_tracker

__all__ = [
    "OPT_OUT_VARIABLE",
    "Carrier",
    "ChildSettings",
    "child_settings",
    "hook_children",
    "is_hooked",
    "opted_out",
    "set_enabled",
    "unhook_children",
]

log = logging.getLogger("llmspend")

#: ``LLMSPEND_CHILDREN=0`` (or ``false``, ``no``, ``off``): start children unhooked.
OPT_OUT_VARIABLE = "LLMSPEND_CHILDREN"

#: The process object's attribute that carries the settings to the child.
ATTRIBUTE = "_llmspend_child"

_OFF = frozenset({"0", "false", "no", "off"})


def opted_out(environ: Any = os.environ) -> bool:
    """Whether ``environ`` says children are not to be hooked (``LLMSPEND_CHILDREN=0``)."""
    return str(environ.get(OPT_OUT_VARIABLE, "")).strip().lower() in _OFF


@dataclass(frozen=True)
class ChildSettings:
    """What a child needs to record as its parent does (plain data: pickled to it)."""

    database_url: str
    prices_path: str | None
    defaults: tuple[str, str, str]  # the parent's (org, project, user) defaults
    context: Attribution  # the starting thread's attribute() context
    # declare_endpoint()'s (url, dialect, provider), and the team-mode gateway's URL
    endpoints: tuple[tuple[str, str, str | None], ...] = ()
    gateway_url: str | None = None


def child_settings(tracker: Tracker) -> ChildSettings | None:
    """The settings a child started now gets (``None`` for a store only this process can
    see: an in-memory SQLite database)."""
    url = tracker.settings.database_url
    if url.startswith("sqlite") and _in_memory(url):
        return None
    try:
        endpoints = tuple((_url(e), e.dialect, e.provider) for e in hosts.declared_endpoints())
        gateway = hosts.gateway()
    except Exception:  # a bad LLMSPEND_ENDPOINTS: the child reads its own environment
        log.warning("llmspend: a child gets no declared endpoints", exc_info=True)
        endpoints, gateway = (), None
    return ChildSettings(
        url,
        tracker.settings.prices_path,
        tracker.defaults,
        current_overrides(),
        endpoints,
        _url(gateway) if gateway is not None else None,
    )


def _url(endpoint: hosts.Endpoint) -> str:
    """The base URL an endpoint was declared with."""
    host = f"[{endpoint.host}]" if ":" in endpoint.host else endpoint.host
    port = f":{endpoint.port}" if endpoint.port is not None else ""
    return f"{endpoint.scheme}://{host}{port}{endpoint.prefix}"


def _declare(settings: ChildSettings) -> None:
    """In the child: the parent's declared endpoints and gateway (a spawned child starts
    with none; a fork child has them already, and declaring again changes nothing)."""
    for url, dialect, provider in settings.endpoints:
        hosts.declare_endpoint(url, dialect, provider)
    if settings.gateway_url is not None:
        hosts.set_gateway(settings.gateway_url)


def _in_memory(url: str) -> bool:
    rest = url.partition(":")[2].lstrip("/").partition("?")[0]
    return rest in ("", ":memory:") or "mode=memory" in url


#: ``arrive(settings)``, run in the child as its process object is unpickled: installs
#: llmspend there (``settings`` is ``None`` for an opted-out start) and returns the carrier
#: left on the child's process object. The installer provides it; it must never raise.
Arrive = Callable[[ChildSettings | None], "Carrier"]


class Carrier:
    """Left on a process object by ``start``; pickled to a spawn, forkserver or loky child
    as a call to ``arrive(settings)``."""

    __slots__ = ("arrive", "settings")

    def __init__(self, settings: ChildSettings | None, arrive: Arrive) -> None:
        self.settings = settings
        self.arrive = arrive

    def __reduce__(self) -> tuple[Any, ...]:
        return (self.arrive, (self.settings,))

    def __repr__(self) -> str:
        return f"Carrier({'hooked' if self.settings is not None else 'opted out'})"


_lock = threading.Lock()
_handles: list[tuple[str, Any]] = []  # (attribute of BaseProcess, wrapt handle)
_arrive: Arrive | None = None
_leave: Callable[[], None] | None = None
_enabled = True


def set_enabled(enabled: bool) -> None:
    """Hook the children started from now on (``install(children=...)``)."""
    global _enabled
    _enabled = bool(enabled)


def is_hooked() -> bool:
    """Whether ``BaseProcess`` is wrapped (between ``install()`` and ``uninstall()``)."""
    return bool(_handles)


def hook_children(arrive: Arrive, leave: Callable[[], None]) -> None:
    """Wrap ``BaseProcess.start`` and ``_bootstrap`` (idempotent). ``arrive`` installs
    llmspend in a child; ``leave`` uninstalls it in a fork child of an opted-out start."""
    global _arrive, _leave
    with _lock:
        _arrive, _leave = arrive, leave
        if _handles:
            return
        for name, wrapper in (("start", _start), ("_bootstrap", _bootstrap)):
            handle = wrapt.wrap_function_wrapper(process, f"BaseProcess.{name}", wrapper)
            _handles.append((name, handle))


def unhook_children() -> None:
    """Remove exactly the wrappers :func:`hook_children` added."""
    with _lock:
        while _handles:
            name, handle = _handles.pop()
            try:
                wrapt.unwrap_object(process, f"BaseProcess.{name}", handle)
            except Exception as exc:  # someone replaced it wholesale: nothing of ours left
                log.warning("llmspend: could not unwrap BaseProcess.%s: %s", name, exc)


def _foreign_interpreter(proc: Any) -> bool:
    """Whether the child runs another Python (``multiprocessing.set_executable``), which
    may not have llmspend to unpickle the carrier with. Loky always runs this one."""
    if getattr(proc, "_start_method", None) in ("fork", "loky", "loky_init_main"):
        return False
    return os.fsdecode(spawn.get_executable()) != sys.executable


def _carry(proc: Any) -> None:
    arrive = _arrive
    tracker = installed_tracker()
    if arrive is None or tracker is None or _foreign_interpreter(proc):
        return
    hooked = _enabled and not opted_out()
    vars(proc)[ATTRIBUTE] = Carrier(child_settings(tracker) if hooked else None, arrive)


def _start(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    """``BaseProcess.start``: leave the child's settings on the process object first."""
    try:
        _carry(instance)
    except Exception:  # never keep a process from starting
        log.warning("llmspend: a child process starts unhooked", exc_info=True)
    return wrapped(*args, **kwargs)


def _bootstrap(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    """``BaseProcess._bootstrap``, in the child: run it in the parent's context."""
    carrier = getattr(instance, "__dict__", {}).get(ATTRIBUTE)
    if not isinstance(carrier, Carrier):
        return wrapped(*args, **kwargs)
    settings = carrier.settings
    if settings is None:  # opted out: a fork child has its parent's hooks, turn them off
        if installed_tracker() is not None and _leave is not None:
            try:
                _leave()
            except Exception:
                log.warning("llmspend: could not turn itself off in a child", exc_info=True)
        return wrapped(*args, **kwargs)
    try:
        _declare(settings)
    except Exception:
        log.warning("llmspend: a child runs without its parent's endpoints", exc_info=True)
    try:
        ctx = settings.context
        scope = attribute(org=ctx.org, project=ctx.project, user=ctx.user, tags=ctx.tags)
        scope.__enter__()
    except Exception:
        log.warning("llmspend: a child runs without its parent's context", exc_info=True)
        return wrapped(*args, **kwargs)
    try:
        return wrapped(*args, **kwargs)
    finally:
        scope.__exit__(None, None, None)
        _give_back_standing()


def _give_back_standing() -> None:
    """Give back the holds this child keeps for its next call: a fork child leaves through
    ``os._exit``, which runs no exit handler, and would leave them to their lease."""
    tracker = installed_tracker()
    if tracker is not None:
        try:
            tracker.guard.release_standing()
        except Exception:
            log.warning("llmspend: a child could not give back its standing holds")
