"""What every framework of the matrix is checked for, in one place.

A :class:`Probe` holds the installed tracker and the simulator: the rows recorded, the
requests received, a run without llmspend to compare with, and a refusal by a hard budget
(what the user sees, whether :class:`llmspend.BudgetExceeded` is reachable from it).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import llmspend
from llmspend.sim import SimServer
from llmspend.tracker import Tracker

__all__ = [
    "BUDGET", "SEEN", "Probe", "Refusal", "body_of", "chain", "gemini_usage", "openai_usage",
    "reachable", "run",
]  # fmt: skip

T = TypeVar("T")

#: The hard budget every refusal test sets: too small for any call.
BUDGET = ("org", "acme", "0.000001")

#: What each refusal showed, for the session's summary (the README's "refusal surfaced as").
SEEN: list[tuple[str, str, bool, bool]] = []


_loop: asyncio.AbstractEventLoop | None = None


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on one event loop kept for the session, as a notebook's kernel does
    (frameworks cache async clients bound to the loop they were first used on)."""
    global _loop
    if _loop is None or _loop.is_closed():
        _loop = asyncio.new_event_loop()
    return _loop.run_until_complete(coro)


def chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and every exception reachable from it through ``__cause__``, ``__context__``
    and the attributes frameworks keep the original in (each once)."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        e = todo.pop(0)
        if id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        more: list[Any] = [e.__cause__, e.__context__]
        more += [getattr(e, name, None) for name in ("original_exception", "last_exception")]
        more += list(getattr(e, "exceptions", ()) or ())  # ExceptionGroup
        todo += [m for m in more if isinstance(m, BaseException)]


def reachable(exc: BaseException) -> llmspend.BudgetExceeded | None:
    """The :class:`llmspend.BudgetExceeded` reachable from ``exc``, if any."""
    return next((e for e in chain(exc) if isinstance(e, llmspend.BudgetExceeded)), None)


@dataclass
class Refusal:
    """What a user saw when a hard budget refused a call made through a framework."""

    exc: BaseException

    @property
    def type_name(self) -> str:
        return f"{type(self.exc).__module__}.{type(self.exc).__qualname__}"

    @property
    def budget_exceeded(self) -> llmspend.BudgetExceeded | None:
        return reachable(self.exc)

    @property
    def names_the_budget(self) -> bool:
        return "budget 'acme'" in str(self.exc)


class Probe:
    """llmspend installed with the simulator declared (see the ``spend`` fixture)."""

    def __init__(self, tracker: Tracker, sim: SimServer) -> None:
        self.tracker = tracker
        self.sim = sim

    def rows(self) -> list[dict[str, Any]]:
        return list(self.tracker.recent)

    def billed_requests(self) -> list[Any]:
        """The requests the simulator received that cost money (not model lists, counts)."""
        return [r for r in self.sim.requests if r.method == "POST" and "countTokens" not in r.path]

    def without(self, fn: Callable[[], T]) -> T:
        """``fn()`` with llmspend uninstalled; installed again (same store) after, and the
        simulator's log cleared."""
        url = self.tracker.settings.database_url
        llmspend.uninstall()
        try:
            return fn()
        finally:
            self.tracker = llmspend.install(url, org="acme", user="ana")
            self.sim.reset()

    def check_recorded(self, usages: list[tuple[int, int]], *, streamed: list[bool]) -> None:
        """One priced row per request the simulator received, with the server's tokens."""
        recorded = self.rows()
        assert len(recorded) == len(self.billed_requests()) == len(usages), (
            recorded,
            self.sim.requests,
        )
        for row, usage, was_streamed in zip(recorded, usages, streamed, strict=True):
            assert row["status"] == "ok", row
            assert (row["input_tokens"], row["output_tokens"]) == usage, (row, usage)
            assert row["usage_estimated"] is False, row
            assert row["price_status"] == "priced" and row["cost_nanos"] > 0, row
            assert row["streamed"] is was_streamed, row

    def refuse(self, fn: Callable[[], Any]) -> Refusal:
        """Set a hard budget too small, run ``fn`` (which must raise): nothing reached the
        simulator and exactly one ``refused`` row was written."""
        llmspend.set_budget(*BUDGET)
        self.sim.reset()
        before = len(self.rows())
        try:
            fn()
        except Exception as exc:  # what the framework raises is the point
            seen = exc
        else:
            raise AssertionError("the call was not refused")
        assert self.sim.request_count == 0, self.sim.requests
        statuses = [r["status"] for r in self.rows()[before:]]
        assert statuses == ["refused"], statuses
        refusal = Refusal(seen)
        test = os.environ.get("PYTEST_CURRENT_TEST", "?").split(" ")[0]
        SEEN.append((test, refusal.type_name, refusal.budget_exceeded is not None,
                     refusal.names_the_budget))  # fmt: skip
        return refusal


def openai_usage(request_body: dict[str, Any], sim_reply: dict[str, Any]) -> tuple[int, int]:
    """(prompt, completion) tokens of an OpenAI chat reply (or a Responses one)."""
    del request_body
    u = sim_reply["usage"]
    if "prompt_tokens" in u:
        return u["prompt_tokens"], u["completion_tokens"]
    return u["input_tokens"], u["output_tokens"]


def gemini_usage(md: dict[str, Any]) -> tuple[int, int]:
    """(input, output) tokens of a Gemini ``usageMetadata``: thoughts are output."""
    return md["promptTokenCount"], md.get("candidatesTokenCount", 0) + md.get(
        "thoughtsTokenCount", 0
    )


def body_of(request: Any) -> dict[str, Any]:
    """The JSON body of a request the simulator logged."""
    body = request.body
    return body if isinstance(body, dict) else json.loads(body)
