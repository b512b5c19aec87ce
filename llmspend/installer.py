"""``install()`` / ``uninstall()``: hook the SDKs and choose where calls are recorded."""

from __future__ import annotations

import threading

from .config import resolve_database_url
from .plugins import apply_patches, remove_patches
from .tracker import Tracker, current_tracker, installed_tracker, set_tracker

__all__ = ["install", "uninstall"]

_lock = threading.Lock()


def install(
    database_url: str | None = None,
    *,
    org: str | None = None,
    project: str | None = None,
    user: str | None = None,
) -> Tracker:
    """Hook the provider SDKs and record every call into the store at ``database_url``.

    Idempotent: a second call updates the attribution defaults, and switches stores only
    when given another ``database_url``. Covers clients created before and after, sync and
    async, and SDKs imported later. Provider plugins are found here (entry points of the
    ``llmspend.providers`` group), not at ``import llmspend``.
    """
    with _lock:
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
            set_tracker(tracker, installed=True)
        else:
            tracker = Tracker(database_url, org=org, project=project, user=user)
            set_tracker(tracker, installed=True)
            if current is not None:  # its calls are over: what it holds for them goes back
                current.guard.release_standing()
        apply_patches()
        return tracker


def uninstall() -> None:
    """Remove llmspend's hooks; the SDKs are restored exactly. The store stays readable."""
    with _lock:
        remove_patches()
        current = installed_tracker()
        set_tracker(current, installed=False)
        if current is not None:
            current.guard.release_standing()
