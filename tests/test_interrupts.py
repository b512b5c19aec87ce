"""Interrupted calls: Ctrl-C, timeouts, abandoned streams and cancelled tasks.

Every test goes through the real openai SDK against the simulator, under a hard budget,
and asserts what the contract promises (DESIGN §3 status, §5 reservations, §11 faults):
exactly one row per call, the right status (``partial`` for a stream cut short, settled
from an estimate; ``error`` costing 0 for a call that got no answer), and the budget's
reservation released (``reserved == 0``, ``spent`` equal to the rows' cost).

Deterministic: interrupts are raised at a chosen chunk (by the caller, or by a transport
that stalls or raises mid-body), timeouts are 0.25 s against a 5 s simulated delay, and
settlements that run on a helper thread (garbage collection) are awaited by joining it.
Nothing asserts on wall-clock time.
"""

from __future__ import annotations

import asyncio
import gc
import threading
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from typing import Any

import httpx2
import openai
import pytest

import llmspend
from llmspend.sim import SimServer
from tests.shells import plain_shell

MODEL = "gpt-4o-mini"


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


@pytest.fixture
def budgeted(installed_any: Any) -> Any:
    """llmspend installed (SQLite and PostgreSQL) under a hard project budget."""
    llmspend.set_budget("project", "acme/churn", "10", "total")
    return installed_any


def settle_threads() -> None:
    """Wait for settlements handed to a helper thread (streams collected unclosed)."""
    for _ in range(3):
        gc.collect()
        for thread in threading.enumerate():
            if thread.name == "llmspend-settle":
                thread.join(10)


def only_row() -> Any:
    settle_threads()
    frame = llmspend.records()
    assert len(frame) == 1, frame[["status", "error_type", "output_tokens"]]
    return frame.iloc[0]


def assert_released(*, rows: int = 1) -> None:
    """The reservation is gone and the budget was charged exactly what was recorded."""
    frame = llmspend.records()
    assert len(frame) == rows
    (status,) = llmspend.budget_status("project", "acme/churn")
    assert status.reserved_usd == 0, status
    assert status.spent_usd == sum((c for c in frame["cost_usd"] if c is not None), Decimal(0))


def assert_partial(row: Any, text: str, *, error_type: str | None = None) -> None:
    assert (row["status"], row["streamed"], row["usage_estimated"]) == ("partial", True, True)
    assert row["output_tokens"] == (len(text.encode()) + 3) // 4  # settled from what arrived
    assert row["input_tokens"] > 0 and row["cost_usd"] > 0
    if error_type is not None:
        assert row["error_type"] == error_type


def delta(chunk: Any) -> str:
    return "".join(c.delta.content or "" for c in chunk.choices)


def client(sim: SimServer, **kw: Any) -> openai.OpenAI:
    return openai.OpenAI(api_key="x", base_url=sim.openai_base_url, max_retries=0, **kw)


def aclient(sim: SimServer, **kw: Any) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(api_key="x", base_url=sim.openai_base_url, max_retries=0, **kw)


def stream_of(c: openai.OpenAI, **kw: Any) -> Any:
    return c.chat.completions.create(
        model=MODEL, messages=user("tell me a long story"), stream=True, **kw
    )


# -- KeyboardInterrupt raised by the caller inside the loop -------------------------------------


@pytest.mark.parametrize("usage", [False, True], ids=["no-usage-chunk", "include-usage"])
def test_ctrl_c_in_a_with_block_records_one_partial_row(
    budgeted: Any, fresh_sim: SimServer, usage: bool
) -> None:
    """The recommended form: ``with`` closes the stream as the interrupt leaves it."""
    c = client(fresh_sim)
    seen = ""
    opts = {"stream_options": {"include_usage": True}} if usage else {}
    with pytest.raises(KeyboardInterrupt), stream_of(c, **opts) as stream:
        for chunk in stream:
            seen += delta(chunk)
            if len(seen) >= 32:
                raise KeyboardInterrupt
    assert_partial(only_row(), seen)
    assert_released()


@pytest.mark.parametrize("then", ["closed", "collected"])
def test_ctrl_c_in_a_bare_loop_records_one_partial_row(
    budgeted: Any, fresh_sim: SimServer, then: str
) -> None:
    """No ``with``: the interrupt leaves the stream open; it is settled when the caller
    closes it or drops it (here, once the traceback that keeps it alive is gone)."""
    c = client(fresh_sim)
    seen: list[str] = []

    def read(stream: Any) -> None:
        for chunk in stream:
            seen.append(delta(chunk))
            if len(seen) == 3:
                raise KeyboardInterrupt

    stream = stream_of(c)
    try:
        read(stream)
    except KeyboardInterrupt as exc:
        exc.__traceback__ = None  # what a script's top level does when it exits
    if then == "closed":
        stream.close()
    else:
        del stream
    assert_partial(only_row(), "".join(seen))
    assert_released()


def test_ctrl_c_inside_the_sdks_read_records_one_partial_row(
    budgeted: Any, fresh_sim: SimServer
) -> None:
    """Ctrl-C lands while the SDK is blocked reading the socket (raised by the transport
    after three events): the stream fails, and is settled at once."""
    c = client(fresh_sim, http_client=httpx2.Client(transport=_Interrupting(fresh_sim, after=3)))
    seen = ""
    stream = stream_of(c)
    with pytest.raises(KeyboardInterrupt):
        for chunk in stream:
            seen += delta(chunk)
    assert_partial(only_row(), seen, error_type="KeyboardInterrupt")
    assert_released()
    stream.close()
    assert len(llmspend.records()) == 1  # closing after the failure adds nothing


def test_ctrl_c_while_waiting_for_an_answer_records_one_error_row(
    budgeted: Any, fresh_sim: SimServer
) -> None:
    c = client(fresh_sim, http_client=httpx2.Client(transport=_Interrupting(fresh_sim, after=0)))
    with pytest.raises(KeyboardInterrupt):
        c.chat.completions.create(model=MODEL, messages=user("hi"))
    row = only_row()
    assert (row["status"], row["error_type"], row["cost_usd"]) == ("error", "KeyboardInterrupt", 0)
    assert_released()


def test_ctrl_c_in_a_notebook_cell_records_the_stream_when_the_cell_ends(
    budgeted: Any, fresh_sim: SimServer
) -> None:
    """In a notebook the stream is a global and the traceback of the interrupted cell is
    kept (``sys.last_traceback``): nothing ever collects it. The cell ends interrupted, so
    the stream it was reading is over; the reservation must not stay held until the lease
    runs out (10 minutes) and the call must be recorded before the next cell."""
    from IPython.utils.capture import capture_output

    ip = plain_shell()
    ip.run_cell("%load_ext llmspend", store_history=False)
    ip.user_ns["client"] = client(fresh_sim)
    cell = (
        "stream = client.chat.completions.create(model='gpt-4o-mini', stream=True,\n"
        "    messages=[{'role': 'user', 'content': 'tell me a long story'}])\n"
        "seen = ''\n"
        "for chunk in stream:\n"
        "    seen += chunk.choices[0].delta.content or ''\n"
        "    if len(seen) >= 32:\n"
        "        raise KeyboardInterrupt\n"
    )
    try:
        with capture_output():
            result = ip.run_cell(cell, store_history=False)
        assert isinstance(result.error_in_exec, KeyboardInterrupt)
        frame = llmspend.records()
        assert len(frame) == 1, "the interrupted stream is not recorded after its cell"
        assert_partial(frame.iloc[0], ip.user_ns["seen"])
        assert_released()
    finally:
        for name in ("stream", "client", "chunk", "seen"):
            ip.user_ns.pop(name, None)
        ip.run_cell("%unload_ext llmspend", store_history=False)


# -- timeouts -----------------------------------------------------------------------------------


@pytest.mark.parametrize("streamed", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("retries", [0, 1])
def test_provider_timeout_records_one_error_row_costing_nothing(
    budgeted: Any, fresh_sim: SimServer, streamed: bool, retries: int
) -> None:
    """The provider does not answer within the client's timeout (retries included: one
    billed call is one row)."""
    c = openai.OpenAI(
        api_key="x", base_url=fresh_sim.openai_base_url, max_retries=retries, timeout=0.25
    )
    with pytest.raises(openai.APITimeoutError):
        c.chat.completions.create(model=MODEL, messages=user("slow #sim:delay=5"), stream=streamed)  # type: ignore[call-overload]
    row = only_row()
    assert (row["status"], row["error_type"], row["cost_usd"]) == ("error", "APITimeoutError", 0)
    assert_released()
    assert fresh_sim.request_count == retries + 1


# -- abandoned streams --------------------------------------------------------------------------


@pytest.mark.parametrize("read", [0, 2], ids=["never-read", "read-two-chunks"])
def test_abandoned_stream_is_recorded_once(budgeted: Any, fresh_sim: SimServer, read: int) -> None:
    c = client(fresh_sim)
    stream = stream_of(c)
    seen = "".join(delta(next(stream)) for _ in range(read))
    del stream
    row = only_row()
    if read:
        assert_partial(row, seen)
    else:
        assert (row["status"], row["output_tokens"]) == ("partial", 0)
    assert_released()
    settle_threads()  # a second collection, a second finalizer pass: still one row
    assert len(llmspend.records()) == 1


def test_abandoned_async_stream_is_recorded_once(budgeted: Any, fresh_sim: SimServer) -> None:
    async def go() -> str:
        c = aclient(fresh_sim)
        stream = await c.chat.completions.create(
            model=MODEL, messages=user("tell me a long story"), stream=True
        )
        first = await stream.__anext__()
        del stream
        gc.collect()
        await asyncio.sleep(0)  # let the loop run the async generator's finalizer
        return delta(first)

    seen = asyncio.run(go())
    assert_partial(only_row(), seen)
    assert_released()


# -- cancelled asyncio tasks --------------------------------------------------------------------


@pytest.mark.parametrize("managed", [False, True], ids=["bare-loop", "async-with"])
def test_task_cancelled_between_chunks_records_once(
    budgeted: Any, fresh_sim: SimServer, managed: bool
) -> None:
    """The task is cancelled while its loop body awaits something else (the stream is
    suspended between chunks)."""
    seen: list[str] = []

    async def consume(started: asyncio.Event) -> None:
        stream = await aclient(fresh_sim).chat.completions.create(
            model=MODEL, messages=user("tell me a long story"), stream=True
        )
        if managed:
            async with stream:
                await _read_until_parked(stream, seen, started)
        else:
            await _read_until_parked(stream, seen, started)

    asyncio.run(_cancel_when(consume))
    assert_partial(only_row(), "".join(seen))
    assert_released()


def test_task_cancelled_while_awaiting_the_next_chunk_records_once(
    budgeted: Any, fresh_sim: SimServer
) -> None:
    """The task is cancelled inside ``__anext__``: the provider sent three events and then
    went quiet (a transport that stalls mid-body)."""
    seen: list[str] = []

    async def consume(started: asyncio.Event) -> None:
        transport = _Stalling(fresh_sim, after=3, reached=started)
        c = aclient(fresh_sim, http_client=httpx2.AsyncClient(transport=transport))
        stream = await c.chat.completions.create(
            model=MODEL, messages=user("tell me a long story"), stream=True
        )
        async for chunk in stream:
            seen.append(delta(chunk))

    asyncio.run(_cancel_when(consume))
    assert_partial(only_row(), "".join(seen), error_type="CancelledError")
    assert_released()


def test_task_cancelled_before_the_answer_records_one_error_row(
    budgeted: Any, fresh_sim: SimServer
) -> None:
    async def consume(started: asyncio.Event) -> None:
        started.set()
        await aclient(fresh_sim).chat.completions.create(
            model=MODEL, messages=user("slow #sim:delay=5"), stream=True
        )

    async def main() -> None:
        started = asyncio.Event()
        task = asyncio.create_task(consume(started))
        await started.wait()
        while fresh_sim.request_count == 0:  # the request is in flight
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    row = only_row()
    assert (row["status"], row["error_type"], row["cost_usd"]) == ("error", "CancelledError", 0)
    assert_released()


# -- helpers ------------------------------------------------------------------------------------


async def _read_until_parked(stream: Any, seen: list[str], started: asyncio.Event) -> None:
    async for chunk in stream:
        seen.append(delta(chunk))
        if len(seen) == 3:
            started.set()
            await asyncio.Event().wait()  # parked mid-stream until cancelled


async def _cancel_when(consume: Any) -> None:
    """Run ``consume(started)`` as a task and cancel it once it sets ``started``."""
    started = asyncio.Event()
    task = asyncio.create_task(consume(started))
    waiter = asyncio.create_task(started.wait())
    done, _ = await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    assert waiter in done, task.result()  # the task must not have finished by itself
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    del task
    gc.collect()
    await asyncio.sleep(0)  # async generators dropped by the task are finalized here


def _events(body: bytes) -> list[bytes]:
    return [e + b"\n\n" for e in body.replace(b"\r\n", b"\n").split(b"\n\n") if e.strip()]


def _headers(response: httpx2.Response) -> dict[str, str]:
    drop = {"content-length", "transfer-encoding"}
    return {k: v for k, v in response.headers.items() if k.lower() not in drop}


class _InterruptingBody(httpx2.SyncByteStream):
    def __init__(self, events: list[bytes], after: int) -> None:
        self._events, self._after = events, after

    def __iter__(self) -> Iterator[bytes]:
        for i, event in enumerate(self._events):
            if i == self._after:
                raise KeyboardInterrupt  # Ctrl-C while the SDK waits for bytes
            yield event


class _Interrupting(httpx2.BaseTransport):
    """To the simulator; Ctrl-C arrives after ``after`` SSE events (0: before the answer)."""

    def __init__(self, sim: SimServer, after: int) -> None:
        self._sim, self._after = sim, after
        self._inner = httpx2.HTTPTransport()

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        request.url = request.url.copy_with(scheme="http", host="127.0.0.1", port=self._sim.port)
        response = self._inner.handle_request(request)
        body = response.read()
        response.close()
        if self._after == 0:
            raise KeyboardInterrupt
        return httpx2.Response(
            response.status_code,
            headers=_headers(response),
            stream=_InterruptingBody(_events(body), self._after),
        )


class _StallingBody(httpx2.AsyncByteStream):
    def __init__(self, events: list[bytes], after: int, reached: asyncio.Event) -> None:
        self._events, self._after, self._reached = events, after, reached

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for i, event in enumerate(self._events):
            if i == self._after:
                self._reached.set()
                await asyncio.Event().wait()  # the provider goes quiet: until cancelled
            yield event


class _Stalling(httpx2.AsyncBaseTransport):
    """To the simulator; the body stalls after ``after`` SSE events."""

    def __init__(self, sim: SimServer, after: int, reached: asyncio.Event) -> None:
        self._sim, self._after, self._reached = sim, after, reached
        self._inner = httpx2.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        request.url = request.url.copy_with(scheme="http", host="127.0.0.1", port=self._sim.port)
        response = await self._inner.handle_async_request(request)
        body = await response.aread()
        await response.aclose()
        return httpx2.Response(
            response.status_code,
            headers=_headers(response),
            stream=_StallingBody(_events(body), self._after, self._reached),
        )
