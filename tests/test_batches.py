"""Issue 21: Anthropic Message Batches and Gemini Batch Mode through the real SDKs against the
simulator — reserved at creation, settled once at batch rates, refused when unbounded."""

from __future__ import annotations

import asyncio
import json
import warnings
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import anthropic
import pytest

import llmspend
from llmspend.pricing import PriceBook, UnknownModelWarning
from llmspend.providers.anthropic_batches import BATCHES as ANTHROPIC_BATCHES
from llmspend.providers.genai_batches import BATCHES as GENAI_BATCHES
from llmspend.sim import SimServer


@pytest.fixture(autouse=True)
def _quiet_sdk() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


def rows(tracker: Any) -> list[dict[str, Any]]:
    return list(tracker.recent)


def nanos(provider: str, model: str, row: dict[str, Any], tier: str | None) -> int | None:
    return PriceBook().price(
        model, provider=provider, input_tokens=row["input_tokens"],
        cached_input_tokens=row["cached_input_tokens"],
        cache_write_tokens=row["cache_write_tokens"], output_tokens=row["output_tokens"],
        reasoning_tokens=row["reasoning_tokens"], tier=tier,
    ).total_nanos  # fmt: skip


def settled_once(tracker: Any, provider: str, model: str, batch_id: str) -> dict[str, Any]:
    recorded = rows(tracker)
    assert len(recorded) == 1, recorded
    row = recorded[0]
    assert row["api"] == "batches" and row["request_id"] == batch_id
    assert row["provider"] == provider and row["status"] == "ok"
    assert row["cost_nanos"] == nanos(provider, model, row, "batch")
    assert row["cost_nanos"] < nanos(provider, model, row, None)
    assert "tier=batch" in row["price_ref"]
    status = llmspend.budget_status()[0]
    assert status.reserved_usd == 0
    assert status.spent_usd == Decimal(row["cost_nanos"]) / 10**9
    return row


# -- Anthropic ----------------------------------------------------------------------------------


def claude(sim: SimServer) -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key="x", base_url=sim.url, max_retries=0)


def _requests(n: int, **params: Any) -> list[dict[str, Any]]:
    return [
        {"custom_id": f"r{i}", "params": {"model": "claude-sonnet-4-5", "max_tokens": 40,
                                          "messages": [{"role": "user", "content": f"q{i}"}],
                                          **params}}
        for i in range(n)
    ]  # fmt: skip


def test_anthropic_batch_priced_at_batch_rates_once(installed: Any, fresh_sim: SimServer) -> None:
    llmspend.set_budget("project", "acme/churn", "1", mode="hard")
    c = claude(fresh_sim)
    batch = c.messages.batches.create(requests=_requests(3))  # type: ignore[arg-type]
    assert batch.processing_status == "in_progress"
    assert rows(installed) == []  # reserved, not settled
    assert llmspend.budget_status()[0].reserved_usd > 0
    assert c.messages.batches.retrieve(batch.id).processing_status == "ended"
    lines = []
    for _ in range(2):  # results read and the batches listed twice: counted once
        lines = list(c.messages.batches.results(batch.id))
        list(c.messages.batches.list())
    assert len(lines) == 3
    row = settled_once(installed, "anthropic", "claude-sonnet-4-5", batch.id)
    usages = [x.result.message.usage for x in lines]  # type: ignore[union-attr]
    assert row["input_tokens"] == sum(u.input_tokens for u in usages)
    assert row["output_tokens"] == sum(u.output_tokens for u in usages)
    assert batch.id not in ANTHROPIC_BATCHES.parked


def test_anthropic_batch_async(installed: Any, fresh_sim: SimServer) -> None:
    async def run() -> str:
        c = anthropic.AsyncAnthropic(api_key="x", base_url=fresh_sim.url, max_retries=0)
        batch = await c.messages.batches.create(requests=_requests(2))  # type: ignore[arg-type]
        async for _ in await c.messages.batches.results(batch.id):
            pass
        return batch.id

    llmspend.set_budget("project", "acme/churn", "1", mode="hard")
    bid = asyncio.run(run())
    settled_once(installed, "anthropic", "claude-sonnet-4-5", bid)


def test_anthropic_batch_refused_when_over_budget_or_unbounded(
    installed: Any, fresh_sim: SimServer
) -> None:
    llmspend.set_budget("project", "acme/churn", "0.0001", mode="hard")
    c = claude(fresh_sim)
    with pytest.raises(llmspend.BudgetExceeded):  # 3 x 40_000 output tokens at batch rates
        c.messages.batches.create(requests=_requests(3, max_tokens=40_000))  # type: ignore[arg-type]
    llmspend.set_budget("project", "acme/churn", "100", mode="hard")
    pdf = [{"type": "document", "source": {"type": "url", "url": "https://x.test/a.pdf"}}]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnknownModelWarning)
        with pytest.raises(llmspend.BudgetExceeded):  # a PDF by URL: no offline bound
            c.messages.batches.create(
                requests=_requests(1, messages=[{"role": "user", "content": pdf}])  # type: ignore[arg-type]
            )
    assert not any("batches" in r.path for r in fresh_sim.requests)


# -- Gemini (google-genai) -------------------------------------------------------------------


def gemini(sim: SimServer) -> Any:
    from google import genai
    from google.genai import types

    return genai.Client(api_key="k", http_options=types.HttpOptions(base_url=sim.url))


def _inline(n: int, **config: Any) -> list[dict[str, Any]]:
    return [
        {"contents": [{"parts": [{"text": f"q{i}"}], "role": "user"}],
         "config": {"max_output_tokens": 40, **config}}
        for i in range(n)
    ]  # fmt: skip


def test_gemini_batch_priced_at_batch_rates_once(installed: Any, fresh_sim: SimServer) -> None:
    llmspend.set_budget("project", "acme/churn", "1", mode="hard")
    c = gemini(fresh_sim)
    job = c.batches.create(model="gemini-2.5-flash", src=_inline(3))
    assert job.state is not None and job.state.value == "JOB_STATE_PENDING"
    assert rows(installed) == []  # reserved, not settled
    assert llmspend.budget_status()[0].reserved_usd > 0
    done = None
    for _ in range(2):  # got and listed twice: counted once
        done = c.batches.get(name=job.name)
        list(c.batches.list())
    assert done is not None and done.dest is not None and done.dest.inlined_responses
    row = settled_once(installed, "google", "gemini-2.5-flash", str(job.name))
    usages = [r.response.usage_metadata for r in done.dest.inlined_responses]
    assert row["input_tokens"] == sum(u.prompt_token_count for u in usages)
    assert row["output_tokens"] == sum(u.candidates_token_count for u in usages)
    assert job.name not in GENAI_BATCHES.parked


def test_gemini_batch_async_settled_by_list(installed: Any, fresh_sim: SimServer) -> None:
    async def run() -> str:
        c = gemini(fresh_sim).aio
        job = await c.batches.create(model="gemini-2.5-flash", src=_inline(2))
        async for _ in await c.batches.list():
            pass
        return str(job.name)

    llmspend.set_budget("project", "acme/churn", "1", mode="hard")
    name = asyncio.run(run())
    settled_once(installed, "google", "gemini-2.5-flash", name)


def test_gemini_batch_refused_when_over_budget_or_unbounded(
    installed: Any, fresh_sim: SimServer
) -> None:
    c = gemini(fresh_sim)
    llmspend.set_budget("project", "acme/churn", "0.0001", mode="hard")
    with pytest.raises(llmspend.BudgetExceeded):
        c.batches.create(model="gemini-2.5-flash", src=_inline(3, max_output_tokens=60_000))
    llmspend.set_budget("project", "acme/churn", "100", mode="hard")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnknownModelWarning)
        with pytest.raises(llmspend.BudgetExceeded):  # a file this process never saw
            c.batches.create(model="gemini-2.5-flash", src="files/elsewhere")
    assert not any("batch" in r.path.lower() for r in fresh_sim.requests)
    assert [r["status"] for r in rows(installed)] == ["refused", "refused"]


def test_openai_batch_of_several_models_is_unbounded(installed: Any, fresh_sim: SimServer) -> None:
    """One reservation holds one model's prices: a file naming two is refused by default."""
    import json

    import openai

    c = openai.OpenAI(api_key="x", base_url=fresh_sim.openai_base_url, max_retries=0)
    lines = [
        {"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions",
         "body": {"model": model, "max_tokens": 10,
                  "messages": [{"role": "user", "content": "q"}]}}
        for i, model in enumerate(["gpt-4o-mini", "gpt-4o"])
    ]  # fmt: skip
    f = c.files.create(file=("in.jsonl", "\n".join(map(json.dumps, lines)).encode()),
                       purpose="batch")  # fmt: skip
    llmspend.set_budget("project", "acme/churn", "100", mode="hard")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnknownModelWarning)
        with pytest.raises(llmspend.BudgetExceeded):
            c.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions",
                             completion_window="24h")  # fmt: skip


def test_gemini_file_job_let_through_is_settled_from_its_results_file(
    installed: Any, fresh_sim: SimServer
) -> None:
    """A file source is unbounded: with ``unpriced="allow"`` it goes out, and its row is
    settled once from the results file when that is downloaded."""
    llmspend.set_budget("project", "acme/churn", "100", mode="hard", unpriced="allow")
    c = gemini(fresh_sim)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnknownModelWarning)
        job = c.batches.create(model="gemini-2.5-flash", src="files/input-elsewhere")
        done = c.batches.get(name=str(job.name))
    assert done.dest is not None and done.dest.file_name
    assert rows(installed) == []  # results in a file: settled when it is read
    for _ in range(2):
        data = c.files.download(file=done.dest.file_name)
    row = settled_once(installed, "google", "gemini-2.5-flash", str(job.name))
    lines = [json.loads(x)["response"]["usageMetadata"] for x in data.splitlines()]
    assert row["input_tokens"] == sum(u["promptTokenCount"] for u in lines)
    assert row["model"] == "gemini-2.5-flash" and row["service_tier"] == "batch"


@pytest.mark.parametrize(
    "ended",
    [{"status": "failed"}, {"status": "cancelled"}, {"status": "expired"},
     {"status": "completed", "error_file_id": "file-errors"}],
)  # fmt: skip
def test_openai_batch_ended_without_results_costs_nothing(
    installed: Any, fresh_sim: SimServer, ended: dict[str, str]
) -> None:
    """A batch that failed, or ended with no output file (every request failed, or none
    done before it was cancelled or expired), is billed nothing: recorded once, at no cost,
    its reservation released (not settled from its bound at exit)."""
    import openai

    from llmspend.providers.openai_batches import BATCHES as OPENAI_BATCHES

    c = openai.OpenAI(api_key="x", base_url=fresh_sim.openai_base_url, max_retries=0)
    line = {"custom_id": "r0", "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": "gpt-4o-mini", "max_tokens": 10,
                     "messages": [{"role": "user", "content": "q"}]}}  # fmt: skip
    f = c.files.create(file=("in.jsonl", json.dumps(line).encode()), purpose="batch")
    llmspend.set_budget("project", "acme/churn", "1", mode="hard")
    batch = c.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions",
                             completion_window="24h")  # fmt: skip
    assert llmspend.budget_status()[0].reserved_usd > 0
    fresh_sim.store[batch.id].update(ended, output_file_id=None)  # how the provider ended it
    for _ in range(2):
        assert c.batches.retrieve(batch.id).status == ended["status"]
        c.batches.list()
    assert batch.id not in OPENAI_BATCHES.parked
    OPENAI_BATCHES.flush()  # what exit does: nothing left to settle from a bound
    (row,) = rows(installed)
    assert row["request_id"] == batch.id and row["status"] == "error"
    assert row["cost_nanos"] == 0 and row["service_tier"] == "batch"
    status = llmspend.budget_status()[0]
    assert status.reserved_usd == 0 and status.spent_usd == 0


def _openai_batch(c: Any, **create: Any) -> Any:
    line = {"custom_id": "r0", "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": "gpt-4o-mini", "max_tokens": 10,
                     "messages": [{"role": "user", "content": "q"}]}}  # fmt: skip
    f = c.files.create(file=("in.jsonl", json.dumps(line).encode()), purpose="batch")
    return c.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions",
                            completion_window="24h", **create)  # fmt: skip


@pytest.mark.parametrize("how", ["raw", "streamed", "async streamed", "raw retrieve"])
def test_openai_batch_results_read_raw_or_streamed_settle_it(
    installed: Any, fresh_sim: SimServer, how: str
) -> None:
    """The output file read through ``with_raw_response`` or ``with_streaming_response``
    (the SDK's way to save a large file), or the batch retrieved raw, settles it from its
    results, as a plain read does: not from its bound at exit."""
    import openai

    from llmspend.providers.openai_batches import BATCHES as OPENAI_BATCHES

    llmspend.set_budget("project", "acme/churn", "1", mode="hard")
    c = openai.OpenAI(api_key="x", base_url=fresh_sim.openai_base_url, max_retries=0)
    meta = {"sim_usage": "true"} if how == "raw retrieve" else None
    batch = _openai_batch(c, metadata=meta)
    if how == "raw retrieve":
        done = c.batches.with_raw_response.retrieve(batch.id).parse()
        assert done.usage is not None
        data = b""
    else:
        out = str(c.batches.retrieve(batch.id).output_file_id)
        if how == "raw":
            data = c.files.with_raw_response.content(out).content
        elif how == "streamed":
            with c.files.with_streaming_response.content(out) as response:
                data = b"".join(response.iter_bytes())
        else:

            async def read() -> bytes:
                a = openai.AsyncOpenAI(api_key="x", base_url=fresh_sim.openai_base_url)
                async with a.files.with_streaming_response.content(out) as response:
                    return b"".join([chunk async for chunk in response.iter_bytes()])

            data = asyncio.run(read())
        assert b'"usage"' in data
    assert batch.id not in OPENAI_BATCHES.parked
    (row,) = rows(installed)
    assert row["request_id"] == batch.id and row["status"] == "ok"
    assert row["input_tokens"] > 0 and row["cost_nanos"] == nanos(
        "openai", "gpt-4o-mini", row, "batch"
    )
    assert llmspend.budget_status()[0].reserved_usd == 0


@pytest.mark.parametrize("seen_by", ["retrieve", "list", "async retrieve"])
def test_anthropic_batch_ended_with_nothing_succeeded_costs_nothing(
    installed: Any, fresh_sim: SimServer, seen_by: str
) -> None:
    """A batch cancelled (or every request errored or expired) before any succeeded is billed
    nothing: retrieved or listed ended, it is recorded at no cost, its reservation released,
    though its results were never read (not settled from its bound at exit)."""
    llmspend.set_budget("project", "acme/churn", "1", mode="hard")
    c = claude(fresh_sim)
    batch = c.messages.batches.create(requests=_requests(2))  # type: ignore[arg-type]
    assert llmspend.budget_status()[0].reserved_usd > 0
    stored = fresh_sim.store[batch.id]
    counts = dict(processing=0, succeeded=0, errored=1, canceled=1, expired=0)
    stored.update(request_counts=counts, cancel_initiated_at=stored["created_at"])
    if seen_by == "retrieve":
        assert c.messages.batches.retrieve(batch.id).request_counts.canceled == 1
    elif seen_by == "list":
        list(c.messages.batches.list())
    else:

        async def retrieve() -> None:
            a = anthropic.AsyncAnthropic(api_key="x", base_url=fresh_sim.url, max_retries=0)
            await a.messages.batches.retrieve(batch.id)

        asyncio.run(retrieve())
    assert batch.id not in ANTHROPIC_BATCHES.parked
    ANTHROPIC_BATCHES.flush()  # what exit does: nothing left to settle from a bound
    (row,) = rows(installed)
    assert row["request_id"] == batch.id and row["status"] == "error"
    assert row["cost_nanos"] == 0
    status = llmspend.budget_status()[0]
    assert status.reserved_usd == 0 and status.spent_usd == 0


def test_anthropic_batch_retrieved_before_its_results_is_still_settled_from_them(
    installed: Any, fresh_sim: SimServer
) -> None:
    llmspend.set_budget("project", "acme/churn", "1", mode="hard")
    c = claude(fresh_sim)
    batch = c.messages.batches.create(requests=_requests(2))  # type: ignore[arg-type]
    assert c.messages.batches.retrieve(batch.id).request_counts.succeeded == 2
    list(c.messages.batches.list())
    assert batch.id in ANTHROPIC_BATCHES.parked  # succeeded requests: settled from results
    list(c.messages.batches.results(batch.id))
    settled_once(installed, "anthropic", "claude-sonnet-4-5", batch.id)


def test_gemini_embeddings_batch_is_reserved_refused_and_settled(
    installed: Any, fresh_sim: SimServer
) -> None:
    """``client.batches.create_embeddings`` (an embeddings job) went out unbudgeted and
    unrecorded: it is reserved (its contents' bound, at batch rates), refused over a hard
    budget or from a file, and settled from each embedding's ``token_count``."""
    from google.genai import types

    from llmspend.providers.batch_jobs import BatchInput, begin_batch
    from llmspend.providers.genai_batches import seen

    c = gemini(fresh_sim)
    long = {"inlined_requests": {"contents": ["word " * 4000] * 20}}
    llmspend.set_budget("project", "acme/churn", "0.001", mode="hard")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the SDK calls the method experimental
        with pytest.raises(llmspend.BudgetExceeded):  # 20 x 4000 words at batch rates
            c.batches.create_embeddings(model="gemini-embedding-001", src=long)
        with pytest.raises(llmspend.BudgetExceeded):  # a file this process never saw
            c.batches.create_embeddings(
                model="gemini-embedding-001", src={"file_name": "files/elsewhere"}
            )
        assert not any("embed" in r.path.lower() for r in fresh_sim.requests)
        with pytest.raises(Exception, match="404"):  # let through: the simulator has no route
            c.batches.create_embeddings(
                model="gemini-embedding-001",
                src={"inlined_requests": {"contents": ["hello", "world"]}},
            )
    assert [r["status"] for r in rows(installed)] == ["refused", "refused", "error"]
    assert llmspend.budget_status()[0].reserved_usd == 0
    # a finished job's embeddings, as get() returns them
    call = begin_batch("google", BatchInput("gemini-embedding-001", 100, 0, 2))
    assert call is not None and llmspend.budget_status()[0].reserved_usd > 0
    GENAI_BATCHES.park("batches/emb-1", call)
    embedded = [
        types.InlinedEmbedContentResponse(response=types.SingleEmbedContentResponse(token_count=n))
        for n in (7, 5)
    ]
    job = types.BatchJob(
        name="batches/emb-1",
        state=types.JobState.JOB_STATE_SUCCEEDED,
        dest=types.BatchJobDestination(inlined_embed_content_responses=embedded),
    )
    seen(job)
    seen(job)
    (row,) = [r for r in rows(installed) if r["request_id"] == "batches/emb-1"]
    assert row["status"] == "ok" and row["model"] == "gemini-embedding-001"
    assert row["input_tokens"] == 12 and row["output_tokens"] == 0
    assert row["cost_nanos"] == nanos("google", "gemini-embedding-001", row, "batch")
    assert llmspend.budget_status()[0].reserved_usd == 0


def test_openai_embeddings_batch_settled_from_its_results(
    installed: Any, fresh_sim: SimServer
) -> None:
    """An embeddings batch's result lines carry ``prompt_tokens`` and no
    ``completion_tokens``: they are its usage (the batch was recorded at $0)."""
    import openai

    c = openai.OpenAI(api_key="x", base_url=fresh_sim.openai_base_url, max_retries=0)
    lines = [{"custom_id": f"e{i}", "method": "POST", "url": "/v1/embeddings",
              "body": {"model": "text-embedding-3-small", "input": f"text {i}"}}
             for i in range(2)]  # fmt: skip
    f = c.files.create(file=("in.jsonl", "\n".join(map(json.dumps, lines)).encode()),
                       purpose="batch")  # fmt: skip
    llmspend.set_budget("project", "acme/churn", "1", mode="hard")
    batch = c.batches.create(input_file_id=f.id, endpoint="/v1/embeddings",
                             completion_window="24h")  # fmt: skip
    results = [
        {"id": f"batch_req_{i}", "custom_id": f"e{i}", "error": None,
         "response": {"status_code": 200, "request_id": f"req_{i}",
                      "body": {"object": "list", "model": "text-embedding-3-small",
                               "data": [{"object": "embedding", "index": 0,
                                         "embedding": [0.1, 0.2]}],
                               "usage": {"prompt_tokens": 1000, "total_tokens": 1000}}}}
        for i in range(2)
    ]  # fmt: skip
    out = c.files.create(file=("out.jsonl", "\n".join(map(json.dumps, results)).encode()),
                         purpose="assistants")  # fmt: skip
    fresh_sim.store[batch.id]["output_file_id"] = out.id  # the provider's answer
    assert c.batches.retrieve(batch.id).output_file_id == out.id
    c.files.content(out.id).read()
    (row,) = rows(installed)
    assert row["request_id"] == batch.id and row["status"] == "ok"
    assert row["input_tokens"] == 2000 and row["output_tokens"] == 0
    assert row["model"] == "text-embedding-3-small"
    assert row["cost_nanos"] == nanos("openai", "text-embedding-3-small", row, "batch")
    assert row["cost_nanos"] > 0


def test_an_unbounded_batch_refusal_says_why(installed: Any, fresh_sim: SimServer) -> None:
    """A batch refused for want of a bound names the cause and the way through, not only
    "unpriced model" (the user priced every model they use)."""
    import openai

    llmspend.set_budget("project", "acme/churn", "100", mode="hard")
    c = openai.OpenAI(api_key="x", base_url=fresh_sim.openai_base_url, max_retries=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnknownModelWarning)  # no "no price for model ''"
        with pytest.raises(llmspend.BudgetExceeded, match="uploaded elsewhere") as refused:
            c.batches.create(input_file_id="file-elsewhere", endpoint="/v1/chat/completions",
                             completion_window="24h")  # fmt: skip
        assert "unpriced='allow'" in str(refused.value) and refused.value.limit == 100
        with pytest.raises(llmspend.BudgetExceeded, match="cannot bound"):
            gemini(fresh_sim).batches.create(model="gemini-2.5-flash", src="files/elsewhere")


def test_a_batchs_total_usage_keeps_every_part_of_its_results() -> None:
    from llmspend.call import Usage
    from llmspend.providers.batch_jobs import total_usage

    a = Usage(100, 0, 40, 10, cache_write_1h_tokens=40, input_audio_tokens=20)
    b = Usage(50, 10, 0, 5, 2, output_image_tokens=5)
    assert total_usage([a, b]) == Usage(
        150, 10, 40, 15, 2, cache_write_1h_tokens=40, input_audio_tokens=20,
        output_image_tokens=5,
    )  # fmt: skip
