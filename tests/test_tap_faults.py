"""Taps never break a user's call on a bug of llmspend's.

For every tap — openai (sync, async, streamed), google-genai (generate, stream, embed,
async) and google-generativeai (generate, stream, embed) — a fault is injected into
llmspend's own code (the dialect's request router or usage reader, a before-call hook,
the price book, ``Tracker.record_call``) and the user's call, made with the real SDK
against the simulator on 127.0.0.1, returns exactly what it returns without llmspend.
What can still be recorded is recorded; the failure is logged once per kind; and
llmspend's deliberate refusals (``BudgetExceeded``, ``StoreUnavailable``) still propagate.
"""

from __future__ import annotations

import asyncio
import logging
import warnings
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

import llmspend
import llmspend.dialects.anthropic as anthropic_dialect
import llmspend.dialects.gemini as gemini_dialect
import llmspend.dialects.openai as openai_dialect
from llmspend import pipeline
from llmspend.errors import StoreUnavailable
from llmspend.tracker import Tracker

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import google.generativeai as legacy
    from google import genai
    from google.genai import types

FLASH = "gemini-2.5-flash"


class InjectedFault(Exception):
    """A bug planted in llmspend's own code."""


def _boom(*args: Any, **kwargs: Any) -> Any:
    raise InjectedFault("planted")


@pytest.fixture(autouse=True)
def _fresh_reports() -> Iterator[None]:
    """Each test sees the first report of its fault (reports are once per kind)."""
    pipeline._reported.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", RuntimeWarning)  # "could not record a call"
        warnings.simplefilter("ignore", FutureWarning)
        yield
    pipeline._reported.clear()


# -- the calls, as a user makes them (each returns what the user would look at) -----------------


def _openai(sim: Any) -> openai.OpenAI:
    return openai.OpenAI(api_key="x", base_url=sim.openai_base_url, max_retries=0)


def openai_sync(sim: Any) -> Any:
    r = _openai(sim).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hello"}], max_tokens=50
    )
    return r.model, r.choices[0].message.content, r.usage.model_dump()


def openai_async(sim: Any) -> Any:
    async def run() -> Any:
        c = openai.AsyncOpenAI(api_key="x", base_url=sim.openai_base_url, max_retries=0)
        r = await c.responses.create(model="gpt-4o-mini", input="hello async")
        await c.close()
        return r.model, r.output_text, r.usage.model_dump()

    return asyncio.run(run())


def openai_stream(sim: Any) -> Any:
    stream = _openai(sim).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "a story"}], stream=True
    )
    return [(c.model, [ch.delta.content for ch in c.choices]) for c in stream]


def openai_async_stream(sim: Any) -> Any:
    async def run() -> Any:
        c = openai.AsyncOpenAI(api_key="x", base_url=sim.openai_base_url, max_retries=0)
        stream = await c.responses.create(model="gpt-4o-mini", input="a story", stream=True)
        kinds = [(e.type, getattr(e, "delta", None)) async for e in stream]
        await c.close()
        return kinds

    return asyncio.run(run())


def _genai(sim: Any) -> genai.Client:
    return genai.Client(api_key="k", http_options=types.HttpOptions(base_url=sim.url))


def genai_generate(sim: Any) -> Any:
    client = _genai(sim)  # (held: a collected client closes its connections)
    r = client.models.generate_content(model=FLASH, contents="hello gemini")
    return r.text, r.usage_metadata.model_dump()


def genai_stream(sim: Any) -> Any:
    client = _genai(sim)
    return [c.text for c in client.models.generate_content_stream(model=FLASH, contents="s")]


def genai_embed(sim: Any) -> Any:
    client = _genai(sim)
    r = client.models.embed_content(model="gemini-embedding-001", contents="embed me")
    return [e.values[:4] for e in r.embeddings or ()]


def genai_async(sim: Any) -> Any:
    async def run() -> Any:
        client = _genai(sim)
        r = await client.aio.models.generate_content(model=FLASH, contents="async gemini")
        return r.text

    return asyncio.run(run())


def _legacy(sim: Any) -> None:
    legacy.configure(api_key="k", transport="rest", client_options={"api_endpoint": sim.url})


def legacy_generate(sim: Any) -> Any:
    _legacy(sim)
    r = legacy.GenerativeModel(FLASH).generate_content("hello legacy")
    return r.text, type(r.usage_metadata).to_dict(r.usage_metadata)


def legacy_stream(sim: Any) -> Any:
    _legacy(sim)
    return [c.text for c in legacy.GenerativeModel(FLASH).generate_content("s", stream=True)]


def legacy_embed(sim: Any) -> Any:
    _legacy(sim)
    return legacy.embed_content(model="models/gemini-embedding-001", content="x")["embedding"][:4]


def _anthropic_args(text: str) -> dict[str, Any]:
    return dict(
        model="claude-sonnet-4-5", max_tokens=50, messages=[{"role": "user", "content": text}]
    )


def anthropic_sync(sim: Any) -> Any:
    c = anthropic.Anthropic(api_key="x", base_url=sim.url, max_retries=0)
    r = c.messages.create(**_anthropic_args("hello claude #sim:cached=2"))
    return r.model, r.content[0].model_dump(), r.usage.model_dump()


def anthropic_async(sim: Any) -> Any:
    async def run() -> Any:
        c = anthropic.AsyncAnthropic(api_key="x", base_url=sim.url, max_retries=0)
        r = await c.messages.create(**_anthropic_args("hello async claude"))
        await c.close()
        return r.model, r.content[0].model_dump(), r.usage.model_dump()

    return asyncio.run(run())


def anthropic_stream(sim: Any) -> Any:
    c = anthropic.Anthropic(api_key="x", base_url=sim.url, max_retries=0)
    with c.messages.stream(**_anthropic_args("a story")) as stream:
        return [(e.type, getattr(e, "delta", None)) for e in stream]


TAPS: dict[str, tuple[Callable[[Any], Any], str]] = {
    "openai-sync": (openai_sync, "openai"),
    "openai-async": (openai_async, "openai"),
    "openai-stream": (openai_stream, "openai"),
    "openai-async-stream": (openai_async_stream, "openai"),
    "genai-generate": (genai_generate, "gemini"),
    "genai-stream": (genai_stream, "gemini"),
    "genai-embed": (genai_embed, "gemini"),
    "genai-async": (genai_async, "gemini"),
    "legacy-generate": (legacy_generate, "gemini"),
    "legacy-stream": (legacy_stream, "gemini"),
    "legacy-embed": (legacy_embed, "gemini"),
    "anthropic-sync": (anthropic_sync, "anthropic"),
    "anthropic-async": (anthropic_async, "anthropic"),
    "anthropic-stream": (anthropic_stream, "anthropic"),
}


# -- the faults -------------------------------------------------------------------------------


def plant(fault: str, dialect: str, mp: pytest.MonkeyPatch, tracker: Tracker) -> None:
    """Make one of llmspend's own functions raise :class:`InjectedFault`."""
    if fault == "route":
        if dialect == "anthropic":
            mp.setattr(anthropic_dialect, "route", _boom)
        elif dialect == "openai":
            mp.setattr(openai_dialect, "route", _boom)
        else:
            mp.setattr(gemini_dialect, "route_for", _boom)
    elif fault == "usage":
        if dialect == "anthropic":
            mp.setattr(anthropic_dialect, "normalize_usage", _boom)
        elif dialect == "openai":
            mp.setattr(openai_dialect, "normalize_usage", _boom)
        else:
            mp.setattr(gemini_dialect, "parse_usage", _boom)
    elif fault == "before_call":
        tracker.before_call_hooks.append(_boom)
    elif fault == "pricebook":
        mp.setattr(tracker.pricebook, "price_nanos", _boom)
    elif fault == "record_call":
        mp.setattr(Tracker, "record_call", _boom)
    else:  # pragma: no cover
        raise AssertionError(fault)


FAULTS = ["route", "usage", "before_call", "pricebook", "record_call"]


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("tap", list(TAPS))
def test_a_fault_inside_llmspend_leaves_the_call_unchanged(
    tap: str,
    fault: str,
    fresh_sim: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    call, dialect = TAPS[tap]
    without = call(fresh_sim)  # llmspend not installed
    tracker = llmspend.install(f"sqlite:///{tmp_path / 'f.sqlite'}", org="acme")
    try:
        plant(fault, dialect, monkeypatch, tracker)
        with caplog.at_level(logging.DEBUG, logger="llmspend"):
            first = call(fresh_sim)
            second = call(fresh_sim)
        assert first == without
        assert second == without
        recorded = list(tracker.recent)
    finally:
        monkeypatch.undo()
        llmspend.uninstall()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR and r.exc_info]
    planted = [r for r in errors if r.exc_info and isinstance(r.exc_info[1], InjectedFault)]
    if fault in ("route", "before_call", "usage"):  # reported once, not once per call
        assert len(planted) == 1, [r.getMessage() for r in errors]
    if fault in ("route", "before_call"):  # the call went untracked
        assert recorded == []
    if fault == "usage":  # recorded from an estimate
        assert recorded
        assert all(r["usage_estimated"] for r in recorded)


def _refuse(call: Any) -> None:
    raise llmspend.BudgetExceeded(
        budget="cap", scope="project", period="day", limit=Decimal(1), spent=Decimal(1),
        reserved=Decimal(0), estimate=Decimal("0.01"), resets_at=None,
    )  # fmt: skip


def _store_down(call: Any) -> None:
    raise StoreUnavailable("the llmspend store is unavailable (planted)")


@pytest.mark.parametrize("refusal", [_refuse, _store_down], ids=["budget", "store-down"])
@pytest.mark.parametrize("tap", list(TAPS))
def test_refusals_still_propagate_and_send_nothing(
    tap: str, refusal: Callable[[Any], None], fresh_sim: Any, tmp_path: Path
) -> None:
    call, _ = TAPS[tap]
    tracker = llmspend.install(f"sqlite:///{tmp_path / 'r.sqlite'}", org="acme")
    try:
        tracker.before_call_hooks.append(refusal)
        expected = llmspend.BudgetExceeded if refusal is _refuse else StoreUnavailable
        with pytest.raises(expected):
            call(fresh_sim)
    finally:
        llmspend.uninstall()
    assert fresh_sim.request_count == 0
