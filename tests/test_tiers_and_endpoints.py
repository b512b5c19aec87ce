"""Issue 21, part C: service tiers, batches, free models and every billed endpoint, through
the real openai SDK against the simulator."""

from __future__ import annotations

import json
import warnings
from decimal import Decimal
from typing import Any

import openai
import pytest

import llmspend
from llmspend.dialects.openai import api_of
from llmspend.pricing import PriceBook, UnknownModelWarning
from llmspend.providers.openai_batches import BATCHES
from llmspend.sim import SimServer


def client(sim: SimServer, base: str | None = None) -> openai.OpenAI:
    return openai.OpenAI(api_key="x", base_url=base or sim.openai_base_url, max_retries=0)


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def rows(tracker: Any) -> list[dict[str, Any]]:
    return list(tracker.recent)


def nanos(model: str, row: dict[str, Any], tier: str | None) -> int | None:
    return PriceBook().price(
        model, provider="openai", input_tokens=row["input_tokens"],
        cached_input_tokens=row["cached_input_tokens"], output_tokens=row["output_tokens"],
        reasoning_tokens=row["reasoning_tokens"], tier=tier,
    ).total_nanos  # fmt: skip


# -- service tiers ------------------------------------------------------------------------


@pytest.mark.parametrize("tier", ["flex", "priority"])
def test_service_tier_priced_at_its_rates(installed: Any, fresh_sim: SimServer, tier: str) -> None:
    resp = client(fresh_sim).chat.completions.create(
        model="o3",
        messages=user("hi"),
        max_tokens=50,
        service_tier=tier,  # type: ignore[arg-type]
    )
    assert resp.service_tier == tier  # the simulator echoes the tier served
    row = rows(installed)[0]
    standard = nanos("o3", row, None)
    tiered = nanos("o3", row, tier)
    assert standard is not None and tiered is not None
    assert row["cost_nanos"] == tiered
    assert (tiered < standard) if tier == "flex" else (tiered > standard)
    assert f"tier={tier}" in row["price_ref"]


def test_responses_service_tier(installed: Any, fresh_sim: SimServer) -> None:
    client(fresh_sim).responses.create(model="gpt-5", input="hi", service_tier="flex")
    row = rows(installed)[0]
    assert row["cost_nanos"] == nanos("gpt-5", row, "flex") < nanos("gpt-5", row, None)  # type: ignore[operator]


def test_tier_table_cites_and_overrides(tmp_path: Any) -> None:
    from llmspend.pricing.tiers import package_tiers

    assert all(e.source for e in package_tiers())
    path = tmp_path / "prices.toml"
    path.write_text('[[tier]]\ntier = "priority"\nmatch = "gpt-4o-mini"\nmultiplier = "3"\n')
    book = PriceBook(path)
    std = book.price("gpt-4o-mini", provider="openai", input_tokens=1000, output_tokens=10)
    pri = book.price("gpt-4o-mini", provider="openai", input_tokens=1000, output_tokens=10,
                     tier="priority")  # fmt: skip
    assert pri.total_usd == std.total_usd * 3 and pri.status == "override"  # type: ignore[operator]


# -- free models ----------------------------------------------------------------------------


def test_free_models_are_zero_and_priced() -> None:
    p = llmspend.price("gemma-3-27b-it", provider="google", input_tokens=100)
    assert p.total_usd == Decimal("0") and p.status == "priced"
    m = llmspend.price("omni-moderation-latest", provider="openai", input_tokens=100)
    assert m.total_usd == Decimal("0") and m.status == "priced"


def test_openrouter_free_model_not_refused(installed: Any, fresh_sim: SimServer) -> None:
    llmspend.set_budget("project", "acme/churn", "0.000001", mode="hard")
    c = client(fresh_sim, fresh_sim.openrouter_base_url)
    c.chat.completions.create(model="meta-llama/llama-3.3-70b-instruct:free", messages=user("hi"))
    row = rows(installed)[0]
    assert row["status"] == "ok" and row["cost_nanos"] == 0 and row["price_status"] == "priced"


# -- paths ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["chat/completions", "/chat/completions/", "chat/completions?x=1",
             "/openai/deployments/d/chat/completions", "https://h/v1/chat/completions?a=b"],
)  # fmt: skip
def test_paths_normalized(path: str) -> None:
    assert api_of(path) == "chat.completions"


def test_unnormalized_paths_recorded(installed: Any, fresh_sim: SimServer) -> None:
    c = client(fresh_sim)
    body = {"model": "gpt-4o-mini", "messages": user("hi"), "max_tokens": 20}
    for path in ("chat/completions", "/chat/completions/", "chat/completions?trace=1"):
        c.post(path, cast_to=openai.types.chat.ChatCompletion, body=body)
    recorded = rows(installed)
    assert [r["api"] for r in recorded] == ["chat.completions"] * 3
    assert all(r["cost_nanos"] > 0 for r in recorded)


# -- batches --------------------------------------------------------------------------------


def _batch_file(n: int) -> bytes:
    lines = [
        {"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions",
         "body": {"model": "gpt-4o-mini", "messages": user(f"q{i}"), "max_tokens": 30}}
        for i in range(n)
    ]  # fmt: skip
    return "\n".join(json.dumps(x) for x in lines).encode()


@pytest.mark.parametrize("usage_on_batch", [False, True])
def test_batch_priced_at_batch_rates_once(
    installed: Any, fresh_sim: SimServer, usage_on_batch: bool
) -> None:
    llmspend.set_budget("project", "acme/churn", "1", mode="hard")
    c = client(fresh_sim)
    f = c.files.create(file=("in.jsonl", _batch_file(3)), purpose="batch")
    meta = {"sim_usage": "true"} if usage_on_batch else None
    batch = c.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions",
                             completion_window="24h", metadata=meta)  # fmt: skip
    assert rows(installed) == []  # reserved, not settled
    assert llmspend.budget_status()[0].reserved_usd > 0
    done = c.batches.retrieve(batch.id)
    assert done.status == "completed"
    for _ in range(2):  # results read and listed twice: counted once
        lines = c.files.content(done.output_file_id).content.splitlines()  # type: ignore[arg-type]
        c.batches.list()
    recorded = rows(installed)
    assert len(recorded) == 1, recorded
    row = recorded[0]
    assert row["api"] == "batches" and row["request_id"] == batch.id
    usages = [json.loads(x)["response"]["body"]["usage"] for x in lines]
    assert row["input_tokens"] == sum(u["prompt_tokens"] for u in usages)
    assert row["output_tokens"] == sum(u["completion_tokens"] for u in usages)
    assert row["cost_nanos"] == nanos("gpt-4o-mini", row, "batch")
    assert row["cost_nanos"] < nanos("gpt-4o-mini", row, None)  # type: ignore[operator]
    status = llmspend.budget_status()[0]
    assert status.reserved_usd == 0
    assert status.spent_usd == Decimal(row["cost_nanos"]) / 10**9
    assert batch.id not in BATCHES.parked


def test_batch_of_an_unknown_file_refused_under_hard_budget(
    installed: Any, fresh_sim: SimServer
) -> None:
    llmspend.set_budget("project", "acme/churn", "1", mode="hard")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnknownModelWarning)
        with pytest.raises(llmspend.BudgetExceeded):
            client(fresh_sim).batches.create(input_file_id="file-elsewhere",
                                             endpoint="/v1/chat/completions",
                                             completion_window="24h")  # fmt: skip


# -- every billed endpoint: priced, or refused as unpriceable -----------------------------------


def test_moderation_is_free(installed: Any, fresh_sim: SimServer) -> None:
    llmspend.set_budget("project", "acme/churn", "0.000001", mode="hard")
    client(fresh_sim).moderations.create(input="hello", model="omni-moderation-latest")
    row = rows(installed)[0]
    assert row["api"] == "moderations" and row["cost_nanos"] == 0
    assert row["price_status"] == "priced"


@pytest.mark.parametrize("endpoint", ["fine_tuning", "videos"])
def test_unpriceable_endpoints(installed: Any, fresh_sim: SimServer, endpoint: str) -> None:
    c = client(fresh_sim)

    def send() -> Any:
        if endpoint == "fine_tuning":
            return c.fine_tuning.jobs.create(model="gpt-4o-mini", training_file="file-x")
        return c.videos.create(model="sora-2", prompt="a cat")

    budget = llmspend.set_budget("project", "acme/churn", "100", mode="hard")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnknownModelWarning)
        warnings.simplefilter("ignore", DeprecationWarning)  # the SDK's note on Sora
        with pytest.raises(llmspend.BudgetExceeded):
            send()
        llmspend.set_budget("project", "acme/churn", "100", mode="soft")
        send()
    assert budget.name == "acme/churn"
    recorded = rows(installed)
    assert [r["status"] for r in recorded] == ["refused", "ok"]
    assert recorded[1]["price_status"] == "unknown" and recorded[1]["cost_nanos"] is None


def test_images_and_audio_priced_or_refused(installed: Any, fresh_sim: SimServer) -> None:
    llmspend.set_budget("project", "acme/churn", "100", mode="hard")
    c = client(fresh_sim)
    c.images.generate(model="gpt-image-1", prompt="a cat")  # token-priced: a priced row
    assert rows(installed)[0]["cost_nanos"] > 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnknownModelWarning)
        with pytest.raises(llmspend.BudgetExceeded):  # per character: unpriceable
            c.audio.speech.create(model="tts-1", voice="alloy", input="hello")
