"""Issue 21: the usage table's ``service_tier`` column (migration 0010) — filled from the
tier a call was served at, through the SDKs against the simulator; ingest with and without
it; the upgrade from the previous head on a store with rows."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest

import llmspend
from llmspend.sim import SimServer
from tests.migrating import migrate


def client(sim: SimServer) -> openai.OpenAI:
    return openai.OpenAI(api_key="x", base_url=sim.openai_base_url, max_retries=0)


def test_the_column_is_filled_for_flex_priority_and_batch(
    installed: Any, fresh_sim: SimServer
) -> None:
    c = client(fresh_sim)
    for tier in ("flex", "priority"):
        c.chat.completions.create(model="o3", max_tokens=20, service_tier=tier,
                                  messages=[{"role": "user", "content": "hi"}])  # fmt: skip
    c.chat.completions.create(model="gpt-4o-mini", max_tokens=20,
                              messages=[{"role": "user", "content": "hi"}])  # fmt: skip
    line = {"custom_id": "r", "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": "gpt-4o-mini", "max_tokens": 20,
                     "messages": [{"role": "user", "content": "q"}]}}  # fmt: skip
    f = c.files.create(file=("in.jsonl", json.dumps(line).encode()), purpose="batch")
    batch = c.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions",
                             completion_window="24h")  # fmt: skip
    done = c.batches.retrieve(batch.id)
    c.files.content(str(done.output_file_id))
    frame = llmspend.records()
    tiers = dict(zip(frame["api"] + ":" + frame["model"], frame["service_tier"], strict=True))
    assert list(frame["service_tier"][:2]) == ["flex", "priority"]
    assert tiers["batches:gpt-4o-mini"] == "batch"
    standard = frame[(frame["api"] == "chat.completions") & (frame["model"] == "gpt-4o-mini")]
    assert list(standard["service_tier"]) == ["default"]  # as the simulator reports it
    for row, tier in zip(installed.recent, ["flex", "priority"], strict=False):
        assert f"tier={tier}" in row["price_ref"]


def test_ingest_with_and_without_the_column(installed: Any) -> None:
    base = {"ts": "2026-12-01T00:00:00", "provider": "openai", "model": "gpt-4o-mini",
            "input_tokens": 10, "output_tokens": 5}  # fmt: skip
    assert llmspend.ingest([base, {**base, "service_tier": "flex"}]) == 2
    assert list(llmspend.records()["service_tier"]) == [None, "flex"]


def test_upgrade_from_the_previous_head_keeps_rows(store_url: str) -> None:

    from llmspend.call import Usage
    from llmspend.pipeline import begin_call
    from llmspend.tracker import get_tracker

    llmspend.install(store_url, org="acme", project="churn", user="ana")
    try:
        store = get_tracker().store
        call = begin_call("openai", "chat.completions", "o3", input_tokens=10,
                          service_tier="flex")  # fmt: skip
        assert call is not None
        call.finish(Usage(input_tokens=10, output_tokens=5))
        migrate(store, "0009", down=True)
        migrate(store, "head")
        frame = llmspend.records()
        assert len(frame) == 1 and frame["service_tier"][0] is None  # not known for old rows
        call = begin_call("openai", "chat.completions", "o3", input_tokens=10)
        assert call is not None
        call.finish(Usage(input_tokens=10, output_tokens=5), service_tier="priority")
        assert list(llmspend.records()["service_tier"]) == [None, "priority"]
    finally:
        llmspend.uninstall()


def test_gemini_tier_served_is_recorded(installed: Any, fresh_sim: SimServer) -> None:
    """google-genai's ``config.service_tier`` goes out as ``serviceTier``; the tier the
    response's usage metadata reports is recorded. No Gemini flex/priority price is cited in
    tiers.toml, so the price stays the standard one."""
    from google import genai
    from google.genai import types

    c = genai.Client(api_key="k", http_options=types.HttpOptions(base_url=fresh_sim.url))
    for tier in ("flex", "priority"):
        config = types.GenerateContentConfig(max_output_tokens=20, service_tier=tier)  # type: ignore[arg-type]
        c.models.generate_content(model="gemini-2.5-flash", contents="hi", config=config)
    config = types.GenerateContentConfig(max_output_tokens=20, service_tier="flex")  # type: ignore[arg-type]
    for _ in c.models.generate_content_stream(model="gemini-2.5-flash", contents="hi",
                                              config=config):  # fmt: skip
        pass
    frame = llmspend.records()
    assert list(frame["service_tier"]) == ["flex", "priority", "flex"]
    assert all("tier=" not in ref for ref in frame["price_ref"])


def test_gemini_usage_tier_readings() -> None:
    from llmspend.dialects.gemini import served_tier

    assert served_tier({"serviceTier": "FLEX"}) == "flex"
    assert served_tier({"service_tier": "unspecified", "traffic_type": "ON_DEMAND_PRIORITY"}) == (
        "priority"
    )
    assert served_tier({"trafficType": "ON_DEMAND"}) == "standard"
    assert served_tier({"promptTokenCount": 3}) is None


def test_a_request_leaving_the_tier_to_the_project_reserves_priority(
    installed: Any, fresh_sim: SimServer
) -> None:
    """No ``service_tier`` (or ``auto``) may be served at the project's default, which may
    be priority: reserved at priority, settled at the tier the response reports."""
    c = client(fresh_sim)

    def ask(tier: str | None) -> None:
        kw: dict[str, Any] = {"service_tier": tier} if tier else {}
        kw |= {"model": "gpt-4o-mini", "max_tokens": 20,
               "messages": [{"role": "user", "content": "same words"}]}  # fmt: skip
        c.chat.completions.create(**kw)

    llmspend.set_budget("project", "acme/churn", "100", mode="hard")
    for tier in (None, "auto", "default"):
        ask(tier)
    loose, auto, pinned = installed.recent
    assert loose["estimate_nanos"] == auto["estimate_nanos"] > pinned["estimate_nanos"]
    assert loose["cost_nanos"] == pinned["cost_nanos"]  # served (and priced) at default
    middle = (loose["estimate_nanos"] + pinned["estimate_nanos"]) // 2
    llmspend.set_budget("project", "acme/tight", f"{middle / 10**9:.9f}", mode="hard")
    with llmspend.attribute(project="tight"):
        with pytest.raises(llmspend.BudgetExceeded):
            ask(None)
        ask("default")


def test_records_round_trip_through_ingest_keeps_the_tier(installed: Any) -> None:
    """records() → ingest() (a frame with costs: the column path) keeps ``service_tier``."""
    base = {"ts": "2026-12-01T00:00:00", "provider": "openai", "model": "gpt-4o-mini",
            "input_tokens": 10, "output_tokens": 5}  # fmt: skip
    llmspend.ingest([{**base, "service_tier": "batch"}, base])
    frame = llmspend.records()
    again = frame.drop(columns=["id"])
    assert llmspend.ingest(again) == 2
    assert list(llmspend.records()["service_tier"]) == ["batch", None, "batch", None]


def test_plain_http_requests_reserve_the_same_tier_as_the_sdk(
    installed: Any, fresh_sim: SimServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The transport taps read the requested tier as the SDK tap does: none (or ``auto``)
    is reserved at priority, a pinned ``default`` at standard."""
    import httpx

    from llmspend.dialects import hosts

    monkeypatch.setattr(hosts, "_declared", [])
    monkeypatch.delenv("LLMSPEND_ENDPOINTS", raising=False)
    llmspend.declare_endpoint(fresh_sim.openai_base_url, "openai")

    body: dict[str, Any] = {"model": "gpt-4o-mini", "max_tokens": 20,
                            "messages": [{"role": "user", "content": "same words"}]}  # fmt: skip
    url = fresh_sim.openai_base_url.rstrip("/") + "/chat/completions"
    llmspend.set_budget("project", "acme/churn", "100", mode="hard")
    for tier in (None, "default"):
        sent = body | ({"service_tier": tier} if tier else {})
        httpx.post(url, json=sent, headers={"authorization": "Bearer x"}).raise_for_status()
    client(fresh_sim).chat.completions.create(**body)
    loose, pinned, sdk = installed.recent
    assert loose["provider"] == pinned["provider"] == sdk["provider"]
    assert loose["estimate_nanos"] == sdk["estimate_nanos"] > pinned["estimate_nanos"]
    assert loose["cost_nanos"] == pinned["cost_nanos"]  # served (and priced) at default
