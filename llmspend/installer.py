"""``install()`` / ``uninstall()``: hook the SDKs and choose where calls are recorded."""

from __future__ import annotations

import logging
import threading

from .budgets.heartbeat import HEARTBEAT
from .children import Carrier, ChildSettings, hook_children, opted_out, set_enabled, unhook_children
from .config import resolve_database_url
from .dialects.hosts import set_gateway
from .otel import configure as configure_otel
from .plugins import apply_patches, remove_patches
from .tracker import Tracker, current_tracker, installed_tracker, set_tracker

__all__ = ["arrive", "install", "uninstall"]

log = logging.getLogger("llmspend")

_lock = threading.Lock()


def install(
    database_url: str | None = None,
    *,
    org: str | None = None,
    project: str | None = None,
    user: str | None = None,
    children: bool | None = None,
    prices_path: str | None = None,
    otel: bool | None = None,
    gateway_url: str | None = None,
) -> Tracker:
    """Hook the provider SDKs and record every call into the store at ``database_url``.

    Idempotent: a second call updates the attribution defaults, and switches stores only
    when given another ``database_url``. Covers clients created before and after, sync and
    async, and SDKs imported later. Provider plugins are found here (entry points of the
    ``llmspend.providers`` group), not at ``import llmspend``.

    ``children``: hook the processes ``multiprocessing`` starts (spawn, forkserver, fork,
    process pools, joblib/loky) with this store, the defaults and the ``attribute()``
    context (see :mod:`llmspend.children`); ``None`` keeps the current choice (on, unless
    turned off). ``prices_path`` is the price-override file of a new tracker. ``otel``:
    export a span per call to OpenTelemetry (see :mod:`llmspend.otel`); ``None`` keeps the
    current choice (off, unless ``LLMSPEND_OTEL=1``). ``gateway_url``: team mode — calls
    to the llmspend gateway there are the gateway's to budget and record (see
    :mod:`llmspend.teammode`); ``None`` keeps the current one (``LLMSPEND_GATEWAY_URL``).
    """
    with _lock:
        if gateway_url is not None:
            set_gateway(gateway_url)
        # Reuse the current tracker (installed or not) when it is on the same store: its
        # caches stay warm, and an uninstall/install cycle keeps the same defaults.
        current = current_tracker()
        same_store = current is not None and (
            database_url is None
            or resolve_database_url(database_url) == current.settings.database_url
        )
        if current is not None and same_store:
            current.set_defaults(org=org, project=project, user=user)
            tracker = current
        else:
            tracker = Tracker(
                database_url, org=org, project=project, user=user, prices_path=prices_path
            )
        # before the tracker counts as installed: a refused export (its extra missing)
        # leaves llmspend as it was, not installed with no SDK hooked
        configure_otel(tracker, otel)
        set_tracker(tracker, installed=True)
        if tracker is not current and current is not None:
            current.guard.release_standing()  # its calls are over: what it holds goes back
        apply_patches()
        if children is not None:
            set_enabled(children)
        hook_children(arrive, uninstall)
        return tracker


def uninstall() -> None:
    """Remove llmspend's hooks; the SDKs are restored exactly. The store stays readable."""
    with _lock:
        remove_patches()
        unhook_children()
        current = installed_tracker()
        set_tracker(current, installed=False)
        if current is not None:
            current.guard.release_standing()
        HEARTBEAT.stop()  # no lease renewed from here on: a call still out keeps its lease


def arrive(settings: ChildSettings | None) -> Carrier:
    """In a child process, as its process object is unpickled: install llmspend with the
    parent's settings (unless they are ``None`` or the child's ``LLMSPEND_CHILDREN`` says
    0). Never raises: a child must start whatever happens to llmspend."""
    if settings is not None and not opted_out():
        try:
            org, project, user = settings.defaults
            install(
                settings.database_url,
                org=org,
                project=project,
                user=user,
                prices_path=settings.prices_path,
            )
            return Carrier(settings, arrive)
        except Exception:
            log.warning("llmspend: this child process is not hooked", exc_info=True)
    return Carrier(None, arrive)
