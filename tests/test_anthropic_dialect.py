"""The Anthropic Messages dialect over plain data: no SDK, no server, no store."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from llmspend.call import Usage, estimate_input_tokens
from llmspend.dialects import Request
from llmspend.dialects import anthropic as dialect


def _post(path: str, body: dict[str, Any] | None = None) -> Request:
    return Request("POST", path, body if body is not None else {}, {}, "api.anthropic.com")


BODY = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 512,
    "system": "be brief",
    "messages": [{"role": "user", "content": "hello"}],
    "tools": [{"name": "get", "input_schema": {"type": "object"}}],
    "metadata": {"user_id": "not input text"},
}


def test_the_dialect_imports_no_sdk_store_or_http_client() -> None:
    code = (
        "import sys; before = set(sys.modules)\n"
        "import llmspend.dialects.anthropic\n"
        "new = set(sys.modules) - before\n"
        "bad = [m for m in new if m.split('.')[0] in "
        "('anthropic', 'openai', 'google', 'sqlalchemy', 'httpx', 'httpx2', 'wrapt', 'pandas') "
        "or m.startswith(('llmspend.store', 'llmspend.budgets', 'llmspend.tracker', "
        "'llmspend.providers', 'llmspend.pricing', 'llmspend.pipeline'))]\n"
        "assert not bad, bad\n"
        "assert 'llmspend.dialects.anthropic' in new"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# -- requests ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "api", "billed"),
    [
        ("/v1/messages", "messages", True),
        ("/v1/messages?beta=true", "messages", True),
        ("/v1/messages/", "messages", True),
        ("/anthropic/v1/messages", "messages", True),  # a base URL with a path
        ("https://proxy.example/llm/v1/messages?beta=true", "messages", True),
        ("/v1/messages/count_tokens", "count_tokens", False),
        ("/v1/messages/count_tokens?beta=true", "count_tokens", False),
        ("/v1/complete", "completions", True),
    ],
)
def test_routes(path: str, api: str, billed: bool) -> None:
    route = dialect.route(_post(path, BODY))
    assert route is not None
    assert (route.provider, route.api, route.model, route.billed) == (
        "anthropic", api, "claude-sonnet-4-5", billed,
    )  # fmt: skip


@pytest.mark.parametrize(
    "path",
    [
        "/v1/messages/batches",  # priced by a later issue: not routed here
        "/v1/messages/batches/msgbatch_1",
        "/v1/messages/batches/msgbatch_1/results",
        "/v1/messages/batches/msgbatch_1/cancel",
        "/v1/models",
        "/v1/files",
        "/v1/chat/completions",
    ],
)
def test_unrouted_paths(path: str) -> None:
    assert dialect.api_of(path) is None
    assert dialect.route(_post(path, BODY)) is None


def test_only_posts_are_calls() -> None:
    assert dialect.route(Request("GET", "/v1/messages", None)) is None
    assert dialect.route(Request("post", "/v1/messages", None)) is not None


def test_worst_case_from_system_messages_tools_and_max_tokens() -> None:
    route = dialect.route(_post("/v1/messages", {**BODY, "stream": True}))
    assert route is not None
    assert route.streamed is True
    assert route.output_cap == 512
    assert route.payload == [BODY["system"], BODY["messages"], BODY["tools"]]
    bound = estimate_input_tokens(route.payload)
    assert bound >= estimate_input_tokens(["be brief", "hello"])
    assert bound < estimate_input_tokens([BODY])  # metadata is not input text


def test_legacy_completions_and_count_tokens_requests() -> None:
    legacy = {"model": "claude-2.1", "prompt": "\n\nHuman: hi\n\nAssistant:",
              "max_tokens_to_sample": 300}  # fmt: skip
    route = dialect.route(_post("/v1/complete", legacy))
    assert route is not None
    assert (route.api, route.output_cap, route.payload) == (
        "completions", 300, [legacy["prompt"]],
    )  # fmt: skip
    free = dialect.route(_post("/v1/messages/count_tokens", BODY))
    assert free is not None and free.billed is False and free.output_cap is None


@pytest.mark.parametrize(
    ("cap", "expected"),
    [(100, 100), (0, None), (-5, None), (True, None), ("9", None), (None, None)],
)
def test_output_cap_is_a_positive_int(cap: Any, expected: int | None) -> None:
    assert dialect.max_output("messages", {"max_tokens": cap}) == expected


def test_a_body_that_is_not_a_mapping_has_no_model() -> None:
    route = dialect.route(Request("POST", "/v1/messages", ["odd"]))  # type: ignore[arg-type]
    assert route is not None
    assert (route.model, route.output_cap, route.payload) == ("", None, [])


# -- usage ------------------------------------------------------------------------------------


def test_input_includes_cache_reads_and_writes() -> None:
    # a real response (LiteLLM #9812): input_tokens 3 beside a 12,304-token cache write
    usage = {"input_tokens": 3, "cache_creation_input_tokens": 12304,
             "cache_read_input_tokens": 0, "output_tokens": 550}  # fmt: skip
    assert dialect.normalize_usage(usage) == Usage(12307, 0, 12304, 550, 0)
    usage = {"input_tokens": 10, "cache_read_input_tokens": 90, "output_tokens": 5}
    assert dialect.normalize_usage(usage) == Usage(100, 90, 0, 5, 0)


def test_five_minute_and_one_hour_cache_writes() -> None:
    usage = {
        "input_tokens": 4, "cache_read_input_tokens": 6, "cache_creation_input_tokens": 30,
        "cache_creation": {"ephemeral_5m_input_tokens": 10, "ephemeral_1h_input_tokens": 20},
        "output_tokens": 7,
    }  # fmt: skip
    # the 1-hour part is kept apart: it is billed at 2x input, the 5-minute part at 1.25x
    assert dialect.normalize_usage(usage) == Usage(40, 6, 30, 7, 0, 20)
    # the breakdown is the truth when the total disagrees (or is absent)
    usage = {**usage, "cache_creation_input_tokens": None}
    assert dialect.normalize_usage(usage) == Usage(40, 6, 30, 7, 0, 20)
    only_hour = {"input_tokens": 1, "output_tokens": 1,
                 "cache_creation": {"ephemeral_1h_input_tokens": 8}}  # fmt: skip
    assert dialect.normalize_usage(only_hour) == Usage(9, 0, 8, 1, 0, 8)


def test_thinking_is_inside_output_and_reported_as_reasoning_when_given() -> None:
    usage = {"input_tokens": 5, "output_tokens": 300}
    assert dialect.normalize_usage(usage) == Usage(5, 0, 0, 300, 0)
    usage["output_tokens_details"] = {"thinking_tokens": 250}  # type: ignore[assignment]
    assert dialect.normalize_usage(usage) == Usage(5, 0, 0, 300, 250)


@pytest.mark.parametrize(
    "usage",
    [
        None,
        {},
        {"input_tokens": 5},
        {"output_tokens": 5},
        {"input_tokens": -1, "output_tokens": 5},
        {"input_tokens": True, "output_tokens": 5},
        {"input_tokens": "5", "output_tokens": 5},
        {"input_tokens": 5, "output_tokens": 5.0},
        {"input_tokens": 5, "output_tokens": 5, "cache_read_input_tokens": -2},
        {"input_tokens": 5, "output_tokens": 5, "cache_creation_input_tokens": False},
        {
            "input_tokens": 5,
            "output_tokens": 5,
            "cache_creation": {"ephemeral_5m_input_tokens": "x"},
        },
    ],
)
def test_malformed_usage_reads_as_absent(usage: Any) -> None:
    assert dialect.normalize_usage(usage) is None


MESSAGE = {
    "id": "msg_01", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5-20250929",
    "content": [{"type": "thinking", "thinking": "hmm", "signature": "s"},
                {"type": "text", "text": "hello"},
                {"type": "tool_use", "id": "toolu_1", "name": "get", "input": {"a": 1}}],
    "stop_reason": "tool_use",
    "usage": {"input_tokens": 10, "cache_read_input_tokens": 2, "output_tokens": 20,
              "service_tier": "priority"},
}  # fmt: skip


def test_read_a_message() -> None:
    reading = dialect.read("messages", MESSAGE)
    assert reading.usage == Usage(12, 2, 0, 20, 0)
    assert (reading.model, reading.response_id, reading.service_tier) == (
        "claude-sonnet-4-5-20250929", "msg_01", "priority",
    )  # fmt: skip
    assert reading.error is None and reading.complete and reading.out_bytes == 0


def test_read_without_usage_counts_the_output_for_an_estimate() -> None:
    reading = dialect.read("messages", {**MESSAGE, "usage": None})
    assert reading.usage is None
    assert reading.out_bytes == len("hmm") + len("hello") + len('{"a": 1}')
    legacy = dialect.read("completions", {"completion": " Hi there", "model": "claude-2.1"})
    assert legacy.usage is None and legacy.out_bytes == 9 and legacy.model == "claude-2.1"


def test_read_an_error_body_and_count_tokens() -> None:
    err = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    assert dialect.read("messages", err).error == "Overloaded"
    assert dialect.read("count_tokens", {"input_tokens": 12}).usage is None
    assert dialect.read("messages", "not a message").usage is None  # never raises


# -- streams ----------------------------------------------------------------------------------


def _events(delta_usage: dict[str, Any]) -> list[dict[str, Any]]:
    start_usage = {"input_tokens": 8, "cache_read_input_tokens": 4,
                   "cache_creation_input_tokens": 2, "output_tokens": 1,
                   "service_tier": "standard"}  # fmt: skip
    message = {"id": "msg_s", "type": "message", "role": "assistant", "model": "claude-haiku-4-5",
               "content": [], "stop_reason": None, "usage": start_usage}  # fmt: skip
    return [
        {"type": "message_start", "message": message},
        {"type": "content_block_start", "index": 0,
         "content_block": {"type": "thinking", "thinking": "", "signature": ""}},
        {"type": "ping"},
        {"type": "content_block_delta", "index": 0,
         "delta": {"type": "thinking_delta", "thinking": "abcd"}},
        {"type": "content_block_stop", "index": 0},
        {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 1,
         "delta": {"type": "text_delta", "text": "hi!!"}},
        {"type": "content_block_delta", "index": 1,
         "delta": {"type": "input_json_delta", "partial_json": "{}"}},
        {"type": "content_block_stop", "index": 1},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": delta_usage},
        {"type": "message_stop"},
    ]  # fmt: skip


def _read(events: list[dict[str, Any]]) -> Any:
    reader = dialect.reader("messages")
    assert not any(reader.feed(e) for e in events)  # nothing to hide in this dialect
    return reader.result()


def test_stream_usage_from_message_start_and_cumulative_delta() -> None:
    reading = _read(_events({"output_tokens": 42}))
    assert reading.usage == Usage(14, 4, 2, 42, 0)
    assert (reading.model, reading.response_id, reading.service_tier) == (
        "claude-haiku-4-5", "msg_s", "standard",
    )  # fmt: skip
    assert reading.complete and reading.error is None
    assert reading.out_bytes == 4 + 4 + 2


def test_stream_delta_repeating_input_counts_wins_over_nulls() -> None:
    delta = {
        "output_tokens": 42,
        "input_tokens": 9,
        "cache_read_input_tokens": None,
        "cache_creation_input_tokens": 3,
        "output_tokens_details": {"thinking_tokens": 30},
    }
    assert _read(_events(delta)).usage == Usage(16, 4, 3, 42, 30)


def test_stream_cut_before_the_end() -> None:
    events = _events({"output_tokens": 42})
    partial = _read(events[:7])
    assert not partial.complete
    assert partial.usage == Usage(14, 4, 2, 1, 0)  # what message_start said; output so far
    assert partial.out_bytes == 8
    assert _read([]).usage is None and not _read([]).complete


def test_stream_error_event() -> None:
    events = _events({"output_tokens": 42})[:4]
    events.append({"type": "error", "error": {"type": "overloaded_error", "message": "Busy"}})
    reading = _read(events)
    assert reading.error == "Busy" and not reading.complete


def test_stream_odd_events_never_raise() -> None:
    reading = _read([None, {}, {"type": "message_start", "message": None},  # type: ignore[list-item]
                     {"type": "message_delta", "usage": {"output_tokens": -1}},
                     {"type": "content_block_delta", "delta": {"text": 5}}])  # fmt: skip
    assert reading.usage is None and reading.out_bytes == 0


def test_sse_events() -> None:
    data = (
        b'event: message_start\ndata: {"type":"message_start","message":{"id":"m"}}\n\n'
        b'event: ping\r\ndata: {"type": "ping"}\r\n\r\n'
        b"event: odd\ndata: not json\n\n"
        b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
    )
    kinds = [e["type"] for e in dialect.sse_events(data)]
    assert kinds == ["message_start", "ping", "message_stop"]
