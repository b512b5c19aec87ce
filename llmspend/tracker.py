"""The one swappable object behind the module-level API, and the composition root.

``llmspend.records()``, ``llmspend.ingest()``, ``llmspend.price()`` and friends delegate to
the current :class:`Tracker`, created on first use from the environment (the store stays
readable without ``install()``). ``install()`` replaces it and marks it installed, which
is what the taps look for; tests can replace it too.

A tracker composes the call pipeline's stages, in order, from the layers below it (none
of which knows another's place in it):

``before_call_hooks``   ``f(call)`` before a request is sent (may raise BudgetExceeded):
                        the budget guard
``in_record_hooks``     ``f(tx, call, row)`` inside the transaction that writes the row
                        (``tx`` is a :class:`~llmspend.store.fastsql.Tx`): the budgets'
                        settlement, then the alert decision over what it settled, then
                        the rollups
``after_record_hooks``  ``f(call, row)`` after commit, or after the row was journaled
                        (listeners; must not raise): alert delivery
``refusal_hooks``       ``f(call, exc)`` after a refusal was recorded: the refusal alert
``ingest_hooks``        ``f(conn, rows)`` inside the transaction that writes ingested or
                        replayed rows: budget periods, then rollups
"""

from __future__ import annotations

import collections
import contextlib
import logging
import threading
import warnings
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from . import _process
from .alerting import AlertHub
from .attribution import validate_name
from .budgets.guard import BudgetGuard
from .budgets.heartbeat import HEARTBEAT
from .budgets.ledger import count_ingested
from .budgets.settle import Settlement
from .bulkload import ingest_rows
from .config import Settings, default_attribution
from .dialects.hosts import gateway
from .errors import LLMSpendWarning, StoreError, ValidationError
from .pricing import PriceBook, shared_pricebook
from .spool import Replayer, Spool
from .store import rollups
from .store.engine import Store, open_store
from .store.hierarchy import ensure_entities
from .store.rollup_batch import batch_ingest_hook
from .store.urls import reason as driver_reason
from .usage import fetch_records, insert_usage

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from .call import Call
    from .store.fastsql import Tx

__all__ = ["Tracker", "current_tracker", "get_tracker", "installed_tracker", "set_tracker"]

log = logging.getLogger("llmspend")

RECENT_CALLS = 200


class Tracker:
    """A store, a price book and attribution defaults: everything a call needs."""

    def __init__(
        self,
        database_url: str | None = None,
        *,
        org: str | None = None,
        project: str | None = None,
        user: str | None = None,
        prices_path: str | None = None,
    ) -> None:
        self.settings = Settings.resolve(database_url, prices_path)
        if gateway() is None:  # solo mode: a bad URL or a damaged file is said at once
            self.store = open_store(self.settings.database_url)
        # In team mode the store opens at first use (:meth:`__getattr__`): the kernel's
        # gateway-bound calls and reads never need it.
        d_org, d_project, d_user = default_attribution()
        self.org = validate_name("org", org or d_org)
        self.project = validate_name("project", project or d_project)
        self.user = validate_name("user", user or d_user)
        self._pricebook: PriceBook | None = None
        self._lock = threading.Lock()
        self._known_entities: set[tuple[str, str, str]] = set()
        self.recent: collections.deque[dict[str, Any]] = collections.deque(maxlen=RECENT_CALLS)
        self.spool = Spool(self.settings.database_url)
        self._spool_pending = bool(self.spool.pending())
        self._spool_warned = False
        self._local = threading.local()  # .journal: record this thread's rows in the spool
        self._journaling = 0  # threads inside journal_only() (rare): only then look it up
        self._journaling_lock = threading.Lock()
        # Holds of calls whose row was journaled: given back when the store allows it.
        self._unreturned: list[Any] = []
        self._unreturned_pid = _process.pid
        self._unreturned_lock = threading.Lock()
        ref = weakref.ref(self)
        self.replayer = Replayer(lambda: _replay_in_background(ref))
        self.guard = BudgetGuard(self)
        self.settlement = Settlement(self.guard.standing)
        self.alerts = AlertHub(self)
        # The pipeline's stages, in the order they run (see the module docstring).
        self.before_call_hooks: list[Callable[[Call], None]] = [self.guard.before_call]
        self.in_record_hooks: list[Callable[[Tx, Call, dict[str, Any]], None]] = [
            self.settlement.settle,
            self.alerts.decide,
            rollups.record_hook,
        ]
        self.after_record_hooks: list[Callable[[Call, dict[str, Any]], None]] = [
            self.alerts.after_record
        ]
        self.refusal_hooks: list[Callable[[Call, Exception], None]] = [self.alerts.on_refusal]
        self.ingest_hooks: list[Callable[[Connection, list[dict[str, Any]]], None]] = [
            count_ingested,
            batch_ingest_hook,
        ]
        if self._spool_pending:  # calls journaled while the store was down
            self.replay_spool()

    store: Store

    def __getattr__(self, name: str) -> Any:
        """``store``, opened on first use when ``__init__`` left it closed (team mode)."""
        if name != "store":
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        with _open_lock:
            store = self.__dict__.get("store")
            if store is None:
                store = self.store = open_store(self.settings.database_url)
        return store

    def opened_store(self) -> Store | None:
        """The store if it is open (never opens it)."""
        store: Store | None = self.__dict__.get("store")
        return store

    def __repr__(self) -> str:
        store = self.opened_store() or "(not opened)"
        return (
            f"Tracker(store={store!r}, org={self.org!r}, project={self.project!r}, "
            f"user={self.user!r})"
        )

    @property
    def defaults(self) -> tuple[str, str, str]:
        return self.org, self.project, self.user

    def set_defaults(
        self, *, org: str | None = None, project: str | None = None, user: str | None = None
    ) -> None:
        org = validate_name("org", org) if org is not None else self.org
        project = validate_name("project", project) if project is not None else self.project
        user = validate_name("user", user) if user is not None else self.user
        self.org, self.project, self.user = org, project, user

    @property
    def pricebook(self) -> PriceBook:
        if self._pricebook is None:
            with self._lock:
                if self._pricebook is None:
                    # the process-wide book llmspend.price() uses too (one source of truth)
                    path = self.settings.prices_path
                    self._pricebook = shared_pricebook(path, fresh_warnings=True)
        return self._pricebook

    def price_nanos(self, *args: Any, **kwargs: Any) -> tuple[int | None, str, str | None]:
        """The pricing fast path (see ``PriceBook.price_nanos``)."""
        return self.pricebook.price_nanos(*args, **kwargs)

    # -- the call pipeline ----------------------------------------------------------------
    def before_call(self, call: Call) -> None:
        for hook in self.before_call_hooks:
            hook(call)

    def refused(self, call: Call, exc: Exception) -> None:
        """Record a call a budget refused (nothing was sent), and tell the listeners; a
        repeat of a request refused moments ago (a framework's retry) is not recorded."""
        if call.repeat:
            return
        call.finish(None, status="refused", error=exc)
        for hook in self.refusal_hooks:
            try:
                hook(call, exc)
            except Exception:
                log.exception("llmspend refusal listener failed")

    @contextlib.contextmanager
    def journal_only(self, why: Exception) -> Iterator[None]:
        """Rows this thread records inside go straight to the spool (the store was just
        found unavailable: the refusal of a call is not waited for again)."""
        self._local.journal = why
        with self._journaling_lock:
            self._journaling += 1
        try:
            yield
        finally:
            self._local.journal = None
            with self._journaling_lock:
                self._journaling -= 1

    def record_call(self, call: Call, row: dict[str, Any]) -> None:
        """Commit one call's row, with whatever must change in the same transaction.

        If the store cannot take it, the row is spooled locally and replayed later
        (exactly once); the caller's call is never failed for it. An interrupt (Ctrl-C,
        a cancelled task: any ``BaseException`` that is no ``Exception``) while it is
        recorded journals the row first, then goes on. A call's hold whose row was
        journaled is given back when the store allows it (:meth:`replay_spool`).
        """
        key = (row["org_name"], row["project_name"], row["user_name"])
        held = call.reservation
        journal = getattr(self._local, "journal", None) if self._journaling else None
        if journal is not None:
            self._not_recorded(call, row, held, journal)
            return
        try:
            with self.store.tx(write=True) as tx:
                if key not in self._known_entities:
                    ensure_entities(tx, [key])
                insert_usage(tx, [row])
                for hook in self.in_record_hooks:
                    hook(tx, call, row)
        except _TRANSIENT as exc:  # the store is unavailable: journal the row
            self._not_recorded(call, row, held, exc)
            return
        except BaseException as exc:
            if not isinstance(exc, Exception):  # interrupted: journal the row, then go on
                self._not_recorded(call, row, held, exc)
            raise
        self._known_entities.add(key)
        self.recent.append(row)
        self._tell_listeners(call, row)
        if self._spool_pending:
            self.replay_spool()

    def _tell_listeners(self, call: Call, row: dict[str, Any]) -> None:
        for after in self.after_record_hooks:
            try:
                after(call, row)
            except Exception:  # a listener must never break the caller's call
                log.exception("llmspend listener failed")

    def _not_recorded(self, call: Call, row: dict[str, Any], held: Any, exc: BaseException) -> None:
        """The row could not be committed: journal it, take its hold off the heartbeat to
        be given back, and have the replayer retry in the background. The listeners hear
        of it as of a recorded call (it is what the call cost: journaled, not lost); the
        alerts decided in the transaction that failed are dropped (a replayed row fires
        none)."""
        try:
            self._spool_row(row, exc)
        finally:
            call.events = []
            self.recent.append(row)
            if held is not None:
                self._unreturned_hold(call, held)
            self.replayer.wake(now=False)  # retried with back-off, off the calls' path
            self._tell_listeners(call, row)

    def _unreturned_hold(self, call: Call, held: Any) -> None:
        key = (call.org, call.project, call.user)
        standing = self.guard.standing.take(key)  # settlement may have kept it standing
        if standing is not None and standing is not held:
            self.guard.standing.keep(key, standing)
        call.reservation = None
        HEARTBEAT.forget([held])
        with self._unreturned_lock:
            if self._unreturned_pid != _process.pid:  # a forked child: not its holds
                self._unreturned, self._unreturned_pid = [], _process.pid
            self._unreturned.append(held)

    def _give_back_unreturned(self) -> None:
        with self._unreturned_lock:
            if self._unreturned_pid != _process.pid:
                self._unreturned, self._unreturned_pid = [], _process.pid
            holds, self._unreturned = self._unreturned, []
        if not holds:
            return
        try:
            self.guard.give_back(holds)
        except (StoreError, DBAPIError) as exc:
            log.debug("llmspend: holds of journaled calls not given back yet: %s", exc)
            with self._unreturned_lock:
                self._unreturned[:0] = holds

    def _spool_row(self, row: dict[str, Any], exc: BaseException) -> None:
        path = self.spool.write(row)
        self._spool_pending = True
        if not isinstance(exc, Exception):
            log.warning(
                "llmspend: recording a call was interrupted (%s); call spooled to %s",
                type(exc).__name__, path or "memory",
            )  # fmt: skip
            return
        reason = driver_reason(exc)[:200]
        log.warning("llmspend: store unavailable (%s); call spooled to %s", reason, path)
        if not self._spool_warned:
            self._spool_warned = True
            warnings.warn(
                f"llmspend: the store is unavailable ({reason}); calls are journaled in "
                f"{self.spool.dir} and will be written when it is back",
                LLMSpendWarning,
                stacklevel=4,
            )

    def replay_spool(self) -> int:
        """Write spooled calls into the store (each exactly once), then give back the
        holds of journaled calls. Returns rows inserted. Waits for a locked store no
        longer than a call does."""
        try:
            n = self.spool.replay(self, wait=self.store.lock_wait)
        except (StoreError, DBAPIError) as exc:
            log.warning("llmspend: spool replay postponed: %s", driver_reason(exc)[:200])
            self.spool.flush_memory()  # the disk may be back before the store
            return 0
        self._give_back_unreturned()
        self._spool_pending = self.spool.backlog() > 0 or bool(self._unreturned)
        if not self._spool_pending:
            self._spool_warned = False
        return n

    # -- records -------------------------------------------------------------------------
    def records(
        self,
        since: Any = None,
        until: Any = None,
        *,
        columns: Sequence[str] | None = None,
        as_: str = "pandas",
        **filters: Any,
    ) -> Any:
        for reserved in ("limit", "newest_first"):  # options, not filters: not public here
            if reserved in filters:
                raise ValidationError(f"unknown filter {reserved!r}")
        return fetch_records(self.store, since, until, columns=columns, as_=as_, **filters)

    def ingest(self, rows: Any) -> int:
        def on_write(conn: Connection, clean: list[dict[str, Any]]) -> None:
            for hook in self.ingest_hooks:
                hook(conn, clean)

        try:
            return ingest_rows(
                self.store, rows, defaults=self.defaults, pricer=self, on_write=on_write
            )
        except (OverflowError, DBAPIError) as exc:  # rolled back: nothing was written
            if isinstance(exc, DBAPIError) and not _out_of_range(exc):
                raise
            raise ValidationError(
                "ingest: these rows' costs or tokens add up past what the store keeps in one "
                "sum (2**63 - 1: about $9.2 billion in nanodollars); nothing was written"
            ) from None


def _out_of_range(exc: DBAPIError) -> bool:
    """A number past the column's type (PostgreSQL's bigint: SQLSTATE 22003)."""
    return getattr(exc.orig, "sqlstate", None) == "22003" or isinstance(exc.orig, OverflowError)


#: What a store that cannot take a row raises: the row is then spooled.
_TRANSIENT = (StoreError, OperationalError, InterfaceError)


def _replay_in_background(ref: weakref.ref[Tracker]) -> bool:
    """The replayer's attempt: whether anything is left to do."""
    tracker = ref()
    if tracker is None:
        return False
    tracker.replay_spool()
    return tracker._spool_pending


_open_lock = threading.Lock()  # a team-mode tracker's store opens once
_current: Tracker | None = None
_installed = False
_current_lock = threading.RLock()


def get_tracker() -> Tracker:
    """The current tracker, created from the environment on first use."""
    global _current
    tracker = _current
    if tracker is None:
        with _current_lock:
            if _current is None:
                _current = Tracker()
            tracker = _current
    return tracker


def current_tracker() -> Tracker | None:
    """The current tracker if one exists (never creates one)."""
    return _current


def installed_tracker() -> Tracker | None:
    """The tracker provider hooks record into, or ``None`` when not installed."""
    return _current if _installed else None


def set_tracker(tracker: Tracker | None, *, installed: bool | None = None) -> Tracker | None:
    """Replace the current tracker (``None`` resets to lazy creation); returns the old one."""
    global _current, _installed
    with _current_lock:
        old, _current = _current, tracker
        if installed is not None:
            _installed = installed
        elif tracker is None:
            _installed = False
        now_installed = _installed
    if old is not None and (old is not tracker or not now_installed):
        old.replayer.stop()  # replaced or uninstalled: no replay in the background
        old.spool.flush_memory()
    if tracker is not None and now_installed:
        tracker.replayer.restart()
        if tracker._spool_pending:
            tracker.replayer.wake()
    return old
