"""The wire-format dialects over plain data: no SDK, no server, no store."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from llmspend.call import Usage, estimate_input_tokens
from llmspend.dialects import (
    Reading,
    Request,
    Route,
    field,
    gemini,
    openai,
    text_bytes,
    tokens_from_bytes,
)

# -- the shared readers -----------------------------------------------------------------------


class _Model:
    """Like a pydantic model: fields in ``__dict__``, undeclared ones in the extras."""

    def __init__(self, extra: dict[str, Any] | None = None, **fields: Any) -> None:
        self.__dict__.update(fields)
        self.__pydantic_extra__ = extra


class _Proto:
    """Like a proto-plus message: attributes through ``__getattr__``, no extras."""

    def __getattr__(self, name: str) -> Any:
        if name == "prompt_token_count":
            return 5
        raise AttributeError(name)


class _Refuses:
    @property
    def usage(self) -> Any:
        raise RuntimeError("stream not finished")


class _Map(Mapping[str, Any]):
    def __init__(self, data: dict[str, Any]) -> None:
        self._data = data

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)


def test_field_reads_dicts_camel_case_models_protos_and_never_raises() -> None:
    assert field({"prompt_tokens": 3}, "prompt_tokens") == 3
    assert field({"promptTokenCount": 4}, "prompt_token_count") == 4
    assert field({"prompt_token_count": 0, "promptTokenCount": 9}, "prompt_token_count") == 0
    assert field(_Model(prompt_tokens=7), "prompt_tokens") == 7
    assert field(_Model({"cost": 0.5}), "cost") == 0.5
    assert field(_Model(None), "cost") is None  # a model without extras
    assert field(_Proto(), "prompt_token_count") == 5
    assert field(_Proto(), "other") is None
    assert field(_Refuses(), "usage") is None
    assert field(_Map({"usageMetadata": 1}), "usage_metadata") == 1
    assert field(None, "x") is None
    assert field(42, "x") is None


def test_one_bytes_to_tokens_estimate() -> None:
    assert [tokens_from_bytes(n) for n in (-5, 0, 1, 4, 5, 8)] == [0, 0, 1, 1, 2, 2]
    assert text_bytes("abcd") == 4
    assert text_bytes("é") == 2
    assert text_bytes("\ud800") == 3  # a lone surrogate does not raise
    assert text_bytes(None) == 0 and text_bytes(b"xx") == 0


def test_the_dialects_import_no_sdk_store_or_sqlalchemy() -> None:
    code = (
        "import sys; before = set(sys.modules)\n"  # (site may pre-import namespaces)
        "import llmspend.dialects.openai, llmspend.dialects.gemini\n"
        "new = set(sys.modules) - before\n"
        "bad = [m for m in new if m.split('.')[0] in "
        "('openai', 'google', 'sqlalchemy', 'httpx', 'httpx2', 'wrapt', 'pandas') "
        "or m.startswith(('llmspend.store', 'llmspend.budgets', 'llmspend.tracker', "
        "'llmspend.providers', 'llmspend.pricing', 'llmspend.pipeline'))]\n"
        "assert not bad, bad\n"
        "assert 'llmspend.dialects.gemini' in new"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# -- openai: requests -------------------------------------------------------------------------


def _post(path: str, body: dict[str, Any] | None = None, host: str = "") -> Request:
    return Request("POST", path, body or {}, {}, host)


def test_openai_routes() -> None:
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10,
            "n": 3, "stream": True}  # fmt: skip
    route = openai.route(_post("/chat/completions", body, "api.openai.com"))
    assert route == Route(
        "openai", "chat.completions", "gpt-4o", streamed=True,
        payload=[body["messages"]], output_cap=30,
    )  # fmt: skip
    assert openai.route(Request("GET", "/chat/completions")) is None
    assert openai.route(_post("/models")) is None
    assert openai.route(_post("/files")) is None
    full = openai.route(_post("https://example.com/v1/embeddings/", {"model": "e"}))
    assert full is not None and full.api == "embeddings" and full.output_cap is None
    for path, api in openai.ROUTES.items():
        r = openai.route(_post(path))
        assert r is not None and r.api == api and r.model == ""
    r = openai.route(_post("/responses", {"model": "o3", "max_output_tokens": 5, "input": "x"}))
    assert r is not None and r.output_cap == 5 and r.payload == ["x"]


@pytest.mark.parametrize(
    ("cap", "expected"), [(True, None), (0, None), (-3, None), ("10", None), (7, 7)]
)
def test_openai_output_cap_is_a_positive_int(cap: Any, expected: int | None) -> None:
    assert openai.max_output("chat.completions", {"max_completion_tokens": cap}) == expected


@pytest.mark.parametrize(
    ("host", "provider"),
    [
        ("api.openai.com", "openai"), ("API.OpenAI.com.", "openai"),
        ("eu.api.openai.com", "openai"),
        ("api.x.ai", "xai"), ("openrouter.ai", "openrouter"), ("r.openai.azure.com", "azure"),
        ("x.services.ai.azure.com", "azure"), ("127.0.0.1", "openai-compatible"),
        ("", "openai-compatible"),
    ],
)  # fmt: skip
def test_openai_provider_by_host(host: str, provider: str) -> None:
    assert openai.provider_for_host(host) == provider
    route = openai.route(_post("/chat/completions", host=host))
    assert route is not None and route.provider == provider
    overridden = openai.route(_post("/chat/completions", host=host), provider="azure")
    assert overridden is not None and overridden.provider == "azure"


def test_openai_input_estimate() -> None:
    body = {"messages": [{"role": "user", "content": "x" * 40}]}
    assert openai.input_estimate(body) == tokens_from_bytes(
        estimate_input_tokens([body["messages"]])
    )
    assert openai.input_estimate({"input": [1, 2, 3]}) == 3  # token ids count one each
    assert openai.input_estimate({"input": [[1, 2], [3]]}) == 3


# -- openai: usage and responses --------------------------------------------------------------


def test_openai_usage_normalization() -> None:
    chat = {"prompt_tokens": 100, "completion_tokens": 50,
            "prompt_tokens_details": {"cached_tokens": 40, "cache_write_tokens": 10},
            "completion_tokens_details": {"reasoning_tokens": 20}}  # fmt: skip
    assert openai.normalize_usage(chat) == Usage(100, 40, 10, 50, 20)
    xai = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 27}
    assert openai.normalize_usage(xai) == Usage(10, 0, 0, 17, 12)
    responses = {"input_tokens": 9, "output_tokens": 4,
                 "output_tokens_details": {"reasoning_tokens": 2}}  # fmt: skip
    assert openai.normalize_usage(responses, "responses") == Usage(9, 0, 0, 4, 2)
    assert openai.normalize_usage({"prompt_tokens": 5}, "embeddings") == Usage(5)
    too_many = {"prompt_tokens": 5, "completion_tokens": 1,
                "prompt_tokens_details": {"cached_tokens": 50}}  # fmt: skip
    assert openai.normalize_usage(too_many) == Usage(5, 5, 0, 1, 0)  # subsets clamped


@pytest.mark.parametrize(
    "usage",
    [
        None, {}, {"prompt_tokens": 5}, {"prompt_tokens": -1, "completion_tokens": 2},
        {"prompt_tokens": True, "completion_tokens": 2}, {"prompt_tokens": 1.5,
        "completion_tokens": 2}, {"prompt_tokens": "5", "completion_tokens": 2},
        {"input_tokens": 3}, {"type": "duration", "seconds": 3}, "junk", [1, 2],
        {"prompt_tokens": 5, "completion_tokens": None},
    ],
)  # fmt: skip
def test_openai_malformed_usage_reads_as_absent(usage: Any) -> None:
    assert openai.normalize_usage(usage, "chat.completions") is None


def test_openai_read_a_chat_completion() -> None:
    body = {"id": "chatcmpl-1", "model": "gpt-4o-2024", "service_tier": "flex",
            "choices": [{"message": {"content": "hello"}}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2}}  # fmt: skip
    assert openai.read("chat.completions", body) == Reading(
        Usage(3, 0, 0, 2, 0), "gpt-4o-2024", "chatcmpl-1", "flex", complete=True
    )
    no_usage = openai.read("chat.completions", {**body, "usage": {"prompt_tokens": -1}})
    assert no_usage.usage is None and no_usage.out_bytes == 5  # for the estimate
    assert openai.read("audio.transcriptions", "a transcript") == Reading(None, out_bytes=12)
    assert openai.read("chat.completions", {"model": "", "id": 7}).model is None


def test_openai_read_responses_status() -> None:
    failed = {"id": "resp_1", "status": "failed", "error": {"message": "boom"}, "usage": None,
              "output": [{"content": [{"text": "abc"}]}]}  # fmt: skip
    reading = openai.read("responses", failed)
    assert (reading.status, reading.error, reading.out_bytes) == ("failed", "boom", 3)
    queued = openai.read("responses", {"id": "resp_2", "status": "queued"})
    assert queued.status == "queued" and not queued.complete and queued.response_id == "resp_2"
    assert openai.read("responses", {"status": "failed"}).error == "response failed"


def test_openai_chat_stream_reader() -> None:
    head = {"id": "c1", "model": "gpt-4o", "service_tier": "default"}
    events = [
        {**head, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]},
        {**head, "choices": [{"index": 0, "delta": {"content": "abcd"}}]},
        {**head, "choices": [{"index": 0, "delta": {"tool_calls": [
            {"function": {"arguments": "{}"}}]}}]},
        {**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
        {**head, "choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 2}},
    ]  # fmt: skip
    reader = openai.reader("chat.completions")
    assert [reader.feed(e) for e in events] == [False, False, False, False, True]
    assert reader.result() == Reading(Usage(4, 0, 0, 2, 0), "gpt-4o", "c1", "default",
                                      complete=True, out_bytes=6)  # fmt: skip
    two = openai.reader("chat.completions", n=2)
    two.feed({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    assert not two.result().complete  # one of two choices finished
    two.feed({"choices": [{"index": 1, "delta": {}, "finish_reason": "length"}]})
    assert two.result().complete and two.result().usage is None


def test_openai_responses_stream_reader() -> None:
    reader = openai.reader("responses")
    reader.feed(
        {
            "type": "response.created",
            "response": {"id": "r1", "model": "o3", "status": "in_progress"},
        }
    )
    reader.feed({"type": "response.output_text.delta", "delta": "hello"})
    assert reader.result() == Reading(None, "o3", "r1", None, "in_progress", complete=False,
                                      out_bytes=5)  # fmt: skip
    reader.feed({"type": "response.completed", "response": {
        "id": "r1", "status": "completed", "service_tier": "priority",
        "usage": {"input_tokens": 3, "output_tokens": 2}}})  # fmt: skip
    done = reader.result()
    assert (done.usage, done.status, done.service_tier, done.complete) == (
        Usage(3, 0, 0, 2, 0), "completed", "priority", True)  # fmt: skip
    failed = openai.reader("responses")
    failed.feed({"type": "response.failed", "response": {"error": {"message": "no"}}})
    assert failed.result().error == "no"
    error = openai.reader("responses")
    error.feed({"type": "error", "message": 3})
    assert error.result().error == "error event" and not error.result().complete


def test_openai_other_streams_and_sse() -> None:
    reader = openai.reader("audio.transcriptions")
    reader.feed({"type": "transcript.text.delta", "delta": "hi"})
    reader.feed({"type": "transcript.text.done", "usage": {"input_tokens": 1, "output_tokens": 1}})
    assert reader.result() == Reading(Usage(1, 0, 0, 1, 0), complete=True, out_bytes=2)
    speech = openai.reader("audio.speech")
    speech.feed({"type": "speech.audio.delta", "delta": "AAAA"})  # audio, not text
    assert speech.result().out_bytes == 0
    data = (
        b'data: {"a": 1}\r\n\r\nevent: x\ndata: {"b":\ndata: 2}\n\ndata: nope\n\ndata: [DONE]\n\n'
    )
    assert openai.sse_events(data) == ([{"a": 1}, {"b": 2}], True)
    assert openai.sse_events(b'data: {"a": 1}\n\n') == ([{"a": 1}], False)


# -- gemini -----------------------------------------------------------------------------------


def test_gemini_paths_and_routes() -> None:
    assert gemini.parse_path("/v1beta/models/gemini-2.5-flash:generateContent") == (
        "gemini-2.5-flash", "generateContent")  # fmt: skip
    assert gemini.parse_path("/v2/models/x:generateContent") is None
    assert gemini.parse_path("/v1/models/x") is None
    body = {"contents": [{"role": "user", "parts": [{"text": "hello"}]}],
            "systemInstruction": {"parts": [{"text": "be brief"}]},
            "generationConfig": {"maxOutputTokens": 64}}  # fmt: skip
    upper = estimate_input_tokens([body["contents"], body["systemInstruction"], None])
    route = gemini.route(Request("POST", "/v1/models/gemini-2.5-pro:streamGenerateContent", body))
    assert route == Route("google", "generate_content", "gemini-2.5-pro", streamed=True,
                          input_upper=upper, output_cap=64)  # fmt: skip
    snake = {"contents": body["contents"], "system_instruction": body["systemInstruction"],
             "generation_config": {"max_output_tokens": 64}}  # fmt: skip
    assert gemini.route_for("streamGenerateContent", "gemini-2.5-pro", snake) == route
    count = gemini.route(Request("POST", "/v1beta/models/m:countTokens", body))
    assert count is not None and not count.billed and count.api == "count_tokens"
    embed = gemini.route(
        Request("POST", "/v1beta/models/e:embedContent", {"content": {"parts": [{"text": "x"}]}})
    )
    assert embed is not None and embed.api == "embed_content" and embed.output_cap is None
    batch = gemini.route(Request("POST", "/v1beta/models/e:batchEmbedContents",
                                 {"requests": [{"content": "ab"}, {"content": "cd"}]}))  # fmt: skip
    assert batch is not None and batch.input_upper == 4 and batch.api == "embed_content"
    assert gemini.route(Request("GET", "/v1beta/models/m:generateContent")) is None
    assert gemini.route(Request("POST", "/v1beta/models/m:predict")) is None


def test_gemini_usage_normalization() -> None:
    rest = {"promptTokenCount": 100, "candidatesTokenCount": 20, "thoughtsTokenCount": 30,
            "cachedContentTokenCount": 40, "toolUsePromptTokenCount": 5}  # fmt: skip
    assert gemini.parse_usage(rest) == Usage(105, 40, 0, 50, 30)
    legacy = {"prompt_token_count": 10, "candidates_token_count": 5, "total_token_count": 27}
    assert gemini.parse_usage(legacy) == Usage(10, 0, 0, 17, 12)  # thoughts: the remainder
    assert gemini.parse_usage({"prompt_token_count": 7}) == Usage(7)


@pytest.mark.parametrize(
    "usage",
    [
        None, {}, {"promptTokenCount": 0}, {"promptTokenCount": -1},
        {"promptTokenCount": True}, {"promptTokenCount": 5, "candidatesTokenCount": "3"},
        {"promptTokenCount": 5, "thoughtsTokenCount": -2}, {"candidatesTokenCount": 3},
    ],
)  # fmt: skip
def test_gemini_malformed_usage_reads_as_absent(usage: Any) -> None:
    assert gemini.parse_usage(usage) is None


def test_gemini_read_responses() -> None:
    body = {"candidates": [{"content": {"parts": [{"text": "abcd"}]}, "finishReason": "STOP"}],
            "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 1},
            "modelVersion": "gemini-2.5-flash-001", "responseId": "r1"}  # fmt: skip
    assert gemini.read("generate_content", body) == Reading(
        Usage(3, 0, 0, 1, 0), "gemini-2.5-flash-001", "r1"
    )
    no_usage = gemini.read("generate_content", {**body, "usageMetadata": None})
    assert no_usage.usage is None and no_usage.out_bytes == 4
    raw = {"sdk_http_response": {"body": '{"usageMetadata": {"promptTokenCount": 2}}'}}
    assert gemini.usage_of(raw) == Usage(2)
    stats = {"embeddings": [{"statistics": {"token_count": 3}}, {"statistics": {"tokenCount": 4}}]}
    assert gemini.read("embed_content", stats).usage == Usage(7)
    call = {"candidates": [{"content": {"parts": [{"functionCall": {"name": "f", "args": {}}}]}}]}
    assert gemini.output_bytes(call) == 1 + 2


def test_gemini_stream_reader() -> None:
    def chunk(text: str, out: int, finish: str | None = None) -> dict[str, Any]:
        cand: dict[str, Any] = {"content": {"parts": [{"text": text}]}}
        if finish:
            cand["finishReason"] = finish
        usage = {"promptTokenCount": 5, "candidatesTokenCount": out}
        return {
            "candidates": [cand],
            "usageMetadata": usage,
            "modelVersion": "m",
            "responseId": "r",
        }

    reader = gemini.reader()
    reader.feed(chunk("abcd", 1))
    assert not reader.result().complete
    reader.feed(chunk("efgh", 2, "STOP"))
    assert reader.result() == Reading(Usage(5, 0, 0, 2, 0), "m", "r", complete=True, out_bytes=8)
    assert reader.chunks == 2
    blocked = gemini.reader()
    blocked.feed({"promptFeedback": {"blockReason": "SAFETY"}})
    assert blocked.result().complete and blocked.result().usage is None
