"""``%load_ext llmspend`` / ``%unload_ext llmspend``.

``load`` installs the SDK hooks (``llmspend.install()``: an already installed tracker and
its store are kept), registers ``%budget`` and ``%spend``, and wires the per-cell cost
line into IPython's ``pre_run_cell``/``post_run_cell`` events. Loading twice is harmless.
``unload`` removes the cell hooks and uninstalls the SDK hooks; the magics stay
registered (IPython cannot unregister magics) and keep reading the store, which stays
readable without ``install()``.

In team mode (``LLMSPEND_GATEWAY_URL``) ``load`` opens no store: the kernel's
gateway-bound calls are the gateway's, the magics read through it, and the local store
opens only when a call that does not go to the gateway is recorded.

A store found damaged as it opens is quarantined (see :mod:`llmspend.store.engine`):
``load`` still hooks the SDKs — their calls are journaled in the spool and counted once
the store is recovered — and says so in the cell's output (stderr), with the fix.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from typing import Any

from ..pipeline import settle_interrupted
from ..teammode import team_hint
from ..tracker import installed_tracker
from .cellcost import cell_cost
from .commands import ensure_tag_hook

__all__ = ["is_loaded", "load", "unload", "warn_if_degraded"]

log = logging.getLogger("llmspend")

_loaded: set[int] = set()  # id() of the shells we are loaded into
_magics_registered: set[int] = set()


def _ensure_hooks(info: Any = None) -> None:
    """Attach the cell counter and the context tags to the current installed tracker.

    Runs before every cell, so that ``llmspend.install(other_url)`` mid-session (a new
    tracker) keeps the per-cell line and tags working.
    """

    tracker = installed_tracker()
    if tracker is not None:
        cell_cost.attach(tracker)
        ensure_tag_hook(tracker)


def _pre_run_cell(info: Any = None) -> None:

    try:
        _ensure_hooks()
    except Exception:  # never break the user's cell
        log.exception("llmspend could not attach its notebook hooks")
    cell_cost.pre_run_cell(info)


def _post_run_cell(result: Any = None) -> None:

    error = getattr(result, "error_in_exec", None)
    if isinstance(error, KeyboardInterrupt):  # the streams the cell was reading are over
        try:
            settle_interrupted(error)
        except Exception:
            log.exception("llmspend could not settle interrupted streams")

    cell_cost.post_run_cell(result)


_quiet_handler = logging.NullHandler()


def _quiet_last_resort() -> None:
    """In a notebook, alerts already show as notices: without a handler of the user's, keep
    Python's last-resort handler from repeating them on stderr (red text under the cell)."""
    if not log.handlers:
        log.addHandler(_quiet_handler)


def warn_if_degraded(tracker: Any) -> bool:
    """Print a visible warning when the tracker's store is quarantined as damaged; True
    if it is. A store not opened yet (team mode opens it at first use) is not looked at."""
    store = tracker.opened_store()
    problem = getattr(store, "corruption", None)
    if problem is None:
        return False
    print(
        f"llmspend: WARNING: the store file {store.path} is corrupted ({problem}).\n"
        f"llmspend: calls are still tracked: they are journaled in {tracker.spool.dir} "
        "and counted once the store is recovered. Budgets cannot be checked meanwhile: "
        "by default (LLMSPEND_STORE_DOWN=auto) a call a hard budget may cover is refused; "
        "LLMSPEND_STORE_DOWN=open sends calls unchecked.\n"
        "llmspend: fix: run `llmspend db recover` in a terminal (it copies what is "
        "readable into a fresh store and keeps the old file).",
        file=sys.stderr,
    )
    return True


def is_loaded(ipython: Any) -> bool:
    """Is the extension loaded into ``ipython``?"""
    return id(ipython) in _loaded


def load(ipython: Any) -> None:
    """Install llmspend and wire it into ``ipython`` (idempotent)."""
    import llmspend

    tracker = llmspend.install()
    warn_if_degraded(tracker)
    hint = team_hint()
    if hint and id(ipython) not in _loaded:
        print(hint)
    cell_cost.attach(tracker)

    ensure_tag_hook(tracker)
    if id(ipython) not in _magics_registered:
        from .magics import LLMSpendMagics

        ipython.register_magics(LLMSpendMagics)
        _magics_registered.add(id(ipython))
    if id(ipython) not in _loaded:
        _quiet_last_resort()
        ipython.events.register("pre_run_cell", _pre_run_cell)
        ipython.events.register("post_run_cell", _post_run_cell)
        _loaded.add(id(ipython))


def unload(ipython: Any) -> None:
    """Remove the cell hooks and uninstall llmspend's SDK hooks (idempotent)."""
    import llmspend

    if id(ipython) in _loaded:
        for name, fn in (("pre_run_cell", _pre_run_cell), ("post_run_cell", _post_run_cell)):
            with contextlib.suppress(ValueError):
                ipython.events.unregister(name, fn)
        _loaded.discard(id(ipython))
        if not _loaded:
            log.removeHandler(_quiet_handler)
    tracker = installed_tracker()
    if tracker is not None:
        cell_cost.detach(tracker)
    llmspend.uninstall()
