"""Pre-call estimates that are real upper bounds for every request shape (issue 21).

Unit tests of :mod:`llmspend.dialects.media` over image headers written here, of each
dialect's bound, and acceptance tests through the real SDKs against the simulator: for each
shape, calls on a small hard budget until refused end with spent ≤ limit. The simulator is
told (``X-Sim-Directives: tokens=N``) to report the most a real provider could bill for the
request, computed here from the providers' published rules — not from llmspend's bound —
so a bound that is too low admits a call that overspends, and the test fails.
"""

from __future__ import annotations

import base64
import json
import math
import struct
import zlib
from decimal import Decimal
from typing import Any

import openai
import pytest
from google import genai
from google.genai import types

import llmspend
from llmspend.call import (
    DEFAULT_CONTEXT_WINDOW,
    Call,
    InputBound,
    estimate_input_tokens,
    output_cap_for,
)
from llmspend.dialects import Request, anthropic, gemini, media
from llmspend.dialects import openai as oai
from llmspend.sim import SimServer

# -- image headers, written by hand --------------------------------------------------------------


def png(w: int, h: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    body = struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))
    return b"\x89PNG\r\n\x1a\n" + body + b"\x00\x00\x00\x00IEND\xaeB`\x82"


def jpeg(w: int, h: int) -> bytes:
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    exif = b"\xff\xe1" + struct.pack(">H", 2 + 300) + b"x" * 300  # a segment to skip
    sof = b"\xff\xc2" + struct.pack(">HBHHB", 17, 8, h, w, 3) + b"\x01\x22\x00" * 3
    return b"\xff\xd8" + app0 + exif + b"\xff" + sof + b"\xff\xd9"


def gif(w: int, h: int) -> bytes:
    return b"GIF89a" + struct.pack("<HH", w, h) + b"\x00\x00\x00;"


def webp(w: int, h: int, kind: str) -> bytes:
    if kind == "VP8 ":
        data = b"\x00\x00\x00\x9d\x01\x2a" + struct.pack("<HH", w, h)
    elif kind == "VP8L":
        bits = (w - 1) | ((h - 1) << 14)
        data = b"\x2f" + struct.pack("<I", bits)
    else:
        data = b"\x00\x00\x00\x00" + (w - 1).to_bytes(3, "little") + (h - 1).to_bytes(3, "little")
    chunk = kind.encode() + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", 4 + len(chunk)) + b"WEBP" + chunk


def wav(seconds: int, rate: int = 16000) -> bytes:
    data = b"\x00\x00" * rate * seconds
    fmt = struct.pack("<HHIIHH", 1, 1, rate, rate * 2, 2, 16)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
    body += b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


def data_url(mime: str, data: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


# -- media.py ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make", [png, jpeg, gif, lambda w, h: webp(w, h, "VP8 "),
             lambda w, h: webp(w, h, "VP8L"), lambda w, h: webp(w, h, "VP8X")],
)  # fmt: skip
def test_image_sizes_are_read_from_the_bytes(make: Any) -> None:
    for w, h in [(1, 1), (300, 200), (4000, 3000), (1023, 16383)]:
        assert media.image_size(make(w, h)) == (w, h)


def test_what_is_not_an_image_has_no_size() -> None:
    for data in [None, b"", b"hello world, not an image", b"\xff\xd8\x00\x00", png(0, 5)]:
        assert media.image_size(data) is None
    assert media.split_data_url("https://x/y.png") is None
    assert media.split_data_url("data:image/png;base64,AAAA") == ("image/png", "AAAA")


def test_openai_images_by_the_published_rules() -> None:
    tok = media.openai_image_tokens
    assert tok("gpt-4o", (1024, 1024)) == 85 + 170 * 4  # OpenAI's own example: 765
    assert tok("gpt-4o-2024-08-06", (2048, 4096)) == 85 + 170 * 6  # 768×1536: 2×3 tiles
    assert tok("gpt-4o", (512, 512)) == 255
    assert tok("gpt-4o", (4000, 3000), "low") == 85
    assert tok("gpt-4o", None) == 85 + 170 * 8  # a remote URL: the worst size
    assert tok("gpt-4o-mini", None, "low") == 2833
    assert tok("gpt-4.1-mini", (1024, 1024)) == math.ceil(1024 * 1.62)
    assert tok("gpt-4.1-nano", None) == math.ceil(1536 * 2.46)
    unknown = tok("my-deployment", (1024, 1024))
    assert unknown == 2833 + 5667 * 4 and unknown >= tok("gpt-4.1-nano", (1024, 1024))


def test_gemini_and_anthropic_images() -> None:
    assert media.gemini_image_tokens("gemini-2.5-flash", (384, 200)) == 258
    assert media.gemini_image_tokens("gemini-2.5-flash", (1000, 1000)) == 258 * 4
    assert media.gemini_image_tokens("gemini-2.5-flash", (768, 768)) >= 258
    assert media.gemini_image_tokens("gemini-3-pro-preview", (100, 100)) == 2240
    assert media.gemini_image_tokens("gemini-2.5-flash", None) == media.OPEN
    assert media.anthropic_image_tokens((1000, 1000)) == math.ceil(1e6 / 750)
    assert media.anthropic_image_tokens((784, 1568)) == math.ceil(784 * 1568 / 750)
    assert media.anthropic_image_tokens((8000, 8000)) == media.anthropic_image_tokens(None)


def test_audio_video_and_files() -> None:
    clip = wav(3)
    assert media.wav_seconds(clip) == pytest.approx(3, abs=0.01)
    assert media.audio_tokens(clip, len(clip)) == 32 * 3 + 1  # the header's bytes: +1
    assert media.audio_tokens(b"ID3...", 8000) == math.ceil(8000 / 500 * 32)
    b64 = base64.b64encode(clip).decode()
    assert media.inline_tokens("audio/wav", b64, "") == media.audio_tokens(clip, len(clip))
    assert media.inline_tokens("video/mp4", b"x" * 10_000, "") == math.ceil(10_000 * 0.263)
    assert media.inline_tokens("text/plain", "hello", "") <= 5
    assert media.inline_tokens("text/plain", b"hello", "") == 5
    assert media.inline_tokens("application/pdf", b"%PDF-1.7", "") == media.OPEN
    assert media.inline_tokens("image/png", base64.b64encode(png(10, 10)).decode(), "") == 258


# -- the text walk -------------------------------------------------------------------------------


def test_text_at_any_depth_counts() -> None:
    deep: Any = "x" * 1000
    for _ in range(5000):
        deep = {"a": [deep]}
    assert estimate_input_tokens(deep) >= 1000 + 5000


def test_schema_keys_and_numbers_count() -> None:
    schema = {"type": "object", "properties": {"a_rather_long_property_name": {"enum": [12345]}}}
    assert estimate_input_tokens(schema) >= len(json.dumps(schema)) // 2


def test_output_caps_by_family() -> None:
    assert output_cap_for("gpt-5") == output_cap_for("openai/gpt-5-2025-08-07") == 128_000
    assert output_cap_for("gemini-2.0-flash-001") == 8_192
    assert output_cap_for("gpt-4o-64k-output-alpha") is None  # another model: not gpt-4o's
    assert output_cap_for("no-such-model") is None


# -- each dialect's bound ------------------------------------------------------------------------


def _openai_bound(body: dict[str, Any], path: str = "/chat/completions") -> InputBound:
    route = oai.route(Request("POST", path, body))
    assert route is not None
    return oai.input_upper(route.payload)


def test_openai_bound_counts_media_and_references() -> None:
    url = data_url("image/png", png(4000, 3000))
    msg = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}]
    b = _openai_bound({"model": "gpt-4o", "messages": msg})
    assert 765 <= b.tokens < 765 + 200 and not b.open_ended  # not the base64's length
    low = [{"role": "user", "content": [{"type": "image_url",
            "image_url": {"url": "https://x/y.png", "detail": "low"}}]}]  # fmt: skip
    assert _openai_bound({"model": "gpt-4o", "messages": low}).tokens < 85 + 100
    resp = {"model": "gpt-4o", "previous_response_id": "resp_1",
            "input": [{"type": "input_image", "image_url": "https://x/y.png"}]}  # fmt: skip
    b = _openai_bound(resp, "/responses")
    assert b.tokens >= 85 + 170 * 8 and b.prior_ids == ("resp_1",)
    assert _openai_bound({"model": "gpt-4o", "conversation": "conv_1", "input": "hi"},
                         "/responses").open_ended  # fmt: skip
    pdf = [{"type": "input_file", "file_data": data_url("application/pdf", b"%PDF-1.4")}]
    assert _openai_bound({"model": "gpt-4o", "input": pdf}, "/responses").open_ended
    audio = [{"role": "user", "content": [{"type": "input_audio", "input_audio": {
        "data": base64.b64encode(wav(2)).decode(), "format": "wav"}}]}]  # fmt: skip
    assert 64 <= _openai_bound({"model": "gpt-4o", "messages": audio}).tokens < 64 + 100


def test_anthropic_bound_counts_images_and_documents() -> None:
    img = {
        "type": "image",
        "source": {
            "type": "base64",
            "media_type": "image/jpeg",
            "data": base64.b64encode(jpeg(1000, 1000)).decode(),
        },
    }
    body = {"model": "claude-sonnet-4-5", "max_tokens": 10,
            "messages": [{"role": "user", "content": [img]}]}  # fmt: skip
    route = anthropic.route(Request("POST", "/v1/messages", body))
    assert route is not None and route.payload == [body["messages"]]
    b = anthropic.input_upper(route.payload)
    assert math.ceil(1e6 / 750) <= b.tokens < math.ceil(1e6 / 750) + 100
    doc = {"type": "document", "source": {"type": "url", "url": "https://x/a.pdf"}}
    body["messages"] = [{"role": "user", "content": [doc]}]
    route = anthropic.route(Request("POST", "/v1/messages", body))
    assert route is not None and anthropic.input_upper(route.payload).open_ended


def test_gemini_bound_counts_inline_media_and_files() -> None:
    inline = {"inlineData": {"mimeType": "image/png",
                             "data": base64.b64encode(png(1000, 1000)).decode()}}  # fmt: skip
    parts: list[Any] = [{"text": "what"}, inline]
    body = {"contents": [{"role": "user", "parts": parts}]}
    route = gemini.route(Request("POST", "/v1beta/models/gemini-2.5-flash:generateContent", body))
    assert route is not None and 1032 <= (route.input_upper or 0) < 1032 + 100
    assert route.payload is None
    parts.append({"fileData": {"fileUri": "gs://b/v.mp4"}})
    route = gemini.route(Request("POST", "/v1beta/models/gemini-2.5-flash:generateContent", body))
    assert route is not None and isinstance(route.payload, InputBound)
    assert route.payload.open_ended


def test_schemas_and_tool_configs_count() -> None:
    schema = {"type": "OBJECT", "description": "d" * 500}
    body = {"contents": [{"parts": [{"text": "hi"}]}],
            "toolConfig": {"functionCallingConfig": {"allowedFunctionNames": ["f" * 300]}},
            "generationConfig": {"responseSchema": schema}}  # fmt: skip
    route = gemini.route(Request("POST", "/v1beta/models/gemini-2.5-flash:generateContent", body))
    assert route is not None and (route.input_upper or 0) >= 800
    from llmspend.providers.gemini_usage import route as sdk_route

    config = types.GenerateContentConfig(response_schema=types.Schema(
        type=types.Type.OBJECT, description="d" * 500))  # fmt: skip
    r = sdk_route("generateContent", "gemini-2.5-flash",
                  {"contents": "hi", "generation_config": config})  # fmt: skip
    assert r is not None and (r.input_upper or 0) >= 500
    chat = {"model": "gpt-4o-search-preview", "web_search_options": {}, "messages": []}
    assert _openai_bound(chat).open_ended


def test_gemini_sdk_objects_keep_their_bound() -> None:
    from llmspend.providers.gemini_usage import request_upper_bound

    class Image:  # what the bound reads of a PIL image
        size, mode = (1000, 1000), "RGB"

    assert request_upper_bound([Image()]) == 258 * 4
    deep: Any = "x" * 1000
    for _ in range(60):
        deep = {"a": [deep]}
    assert request_upper_bound([deep]) >= 1000
    assert request_upper_bound([{"enum": list(range(100))}]) >= 100


# -- acceptance: through the SDKs, on a hard budget ----------------------------------------------


def _spent_within(tracker: Any, send: Any, *, calls: int = 12) -> tuple[int, Decimal, Decimal]:
    """Find the estimate with a refused probe, set a hard budget of 2.5 estimates, and call
    until refused; returns (admitted, spent, limit)."""
    llmspend.set_budget("project", "acme/churn", "0.000000001", "total")
    with pytest.raises(llmspend.BudgetExceeded) as probe:
        send()
    estimate = probe.value.estimate
    assert estimate is not None and estimate > 0
    limit = (estimate * Decimal("2.5")).quantize(Decimal("0.000000001"))
    llmspend.update_budget("project", "acme/churn", limit=limit)
    admitted = 0
    for _ in range(calls):
        try:
            send()
        except llmspend.BudgetExceeded:
            break
        admitted += 1
    else:
        pytest.fail("never refused")
    (status,) = llmspend.budget_status("project", "acme/churn")
    assert status.reserved_usd == 0
    return admitted, status.spent_usd, limit


def _oai(sim: SimServer, tokens: int | None = None, **directives: int) -> openai.OpenAI:
    if tokens is not None:
        directives["tokens"] = tokens
    head = " ".join(f"{k}={v}" for k, v in directives.items())
    return openai.OpenAI(api_key="x", base_url=sim.openai_base_url, max_retries=0,
                         default_headers={"X-Sim-Directives": head})  # fmt: skip


def _gem(sim: SimServer, tokens: int) -> genai.Client:
    return genai.Client(api_key="k", http_options=types.HttpOptions(
        base_url=sim.url, headers={"X-Sim-Directives": f"tokens={tokens}"}))  # fmt: skip


def _assert_held(tracker: Any, send: Any) -> None:
    admitted, spent, limit = _spent_within(tracker, send)
    assert admitted >= 1
    assert spent <= limit, f"spent {spent} of a {limit} hard budget"


TEXT = "describe it"


def _chat(c: openai.OpenAI, content: Any, **kw: Any) -> Any:
    kw.setdefault("max_tokens", 40)
    return c.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": content}], **kw
    )


def test_image_url(installed: Any, fresh_sim: SimServer) -> None:
    worst = 85 + 170 * 8 + len(TEXT)  # the largest image gpt-4o bills, and the text
    c = _oai(fresh_sim, worst)
    parts = [{"type": "text", "text": TEXT},
             {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]  # fmt: skip
    _assert_held(installed, lambda: _chat(c, parts))


def test_image_data_url(installed: Any, fresh_sim: SimServer) -> None:
    billed = 85 + 170 * 4 + len(TEXT)  # 4000×3000 → 2048×1536 → 1024×768: 2×2 tiles
    c = _oai(fresh_sim, billed)
    url = data_url("image/png", png(4000, 3000))
    parts = [{"type": "text", "text": TEXT}, {"type": "image_url", "image_url": {"url": url}}]
    _assert_held(installed, lambda: _chat(c, parts))


def test_gemini_inline_image(installed: Any, fresh_sim: SimServer) -> None:
    billed = 258 * 4 + len(TEXT)  # 1000×1000: 2×2 tiles of 768 (crop unit 666: also 2×2)
    c = _gem(fresh_sim, billed)
    part = types.Part.from_bytes(data=png(1000, 1000), mime_type="image/png")
    config = types.GenerateContentConfig(max_output_tokens=40)
    _assert_held(installed, lambda: c.models.generate_content(
        model="gemini-2.5-flash", contents=[TEXT, part], config=config))  # type: ignore[arg-type]  # fmt: skip


@pytest.mark.parametrize(("mime", "clip", "seconds"), [
    ("audio/wav", wav(3), 3),
    ("audio/mp3", b"\xff\xfb" + b"\x00" * 7998, 8),  # 8,000 bytes at MP3's lowest 8 kbit/s
])  # fmt: skip
def test_gemini_inline_audio(
    installed: Any, fresh_sim: SimServer, mime: str, clip: bytes, seconds: int
) -> None:
    c = _gem(fresh_sim, 32 * seconds + len(TEXT))
    part = types.Part.from_bytes(data=clip, mime_type=mime)
    config = types.GenerateContentConfig(max_output_tokens=40)
    _assert_held(installed, lambda: c.models.generate_content(
        model="gemini-2.5-flash", contents=[TEXT, part], config=config))  # type: ignore[arg-type]  # fmt: skip


def test_openai_input_audio(installed: Any, fresh_sim: SimServer) -> None:
    c = _oai(fresh_sim, 32 * 2 + len(TEXT))  # 2 s; OpenAI bills about 10 a second
    audio = {"data": base64.b64encode(wav(2)).decode(), "format": "wav"}
    parts = [{"type": "text", "text": TEXT}, {"type": "input_audio", "input_audio": audio}]
    _assert_held(installed, lambda: _chat(c, parts))


def test_a_file(installed: Any, fresh_sim: SimServer) -> None:
    c = _oai(fresh_sim, 100_000)  # a 100-page PDF, 1,000 tokens a page
    pdf = data_url("application/pdf", b"%PDF-1.7\n" + b"x" * 200)
    item: Any = [{"role": "user", "content": [
        {"type": "input_text", "text": TEXT},
        {"type": "input_file", "filename": "a.pdf", "file_data": pdf}]}]  # fmt: skip
    _assert_held(installed, lambda: c.responses.create(
        model="gpt-4o", input=item, max_output_tokens=40))  # fmt: skip


def test_tool_schemas(installed: Any, fresh_sim: SimServer) -> None:
    props: dict[str, Any] = {f"a_rather_long_and_descriptive_property_name_number_{i:04d}": {}
                             for i in range(300)}  # fmt: skip
    props["code"] = {"type": "integer", "enum": list(range(10_000, 11_000))}
    tools = [{"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": props}}}]  # fmt: skip
    billed = len(json.dumps(tools, separators=(",", ":"))) // 2 + len(TEXT)  # ≥ 2 bytes/token
    c = _oai(fresh_sim, billed)
    _assert_held(installed, lambda: _chat(c, TEXT, tools=tools, tool_choice="none"))


def test_deeply_nested_text(installed: Any, fresh_sim: SimServer) -> None:
    schema: dict[str, Any] = {"type": "string", "description": "lorem ipsum " * 700}
    for _ in range(100):
        schema = {"type": "object", "properties": {"inner": schema}}
    tools = [{"type": "function", "function": {"name": "f", "parameters": schema}}]
    billed = len(json.dumps(tools)) // 4 + len(TEXT)  # English and JSON: ≥ 4 bytes a token
    c = _oai(fresh_sim, billed)
    _assert_held(installed, lambda: _chat(c, TEXT, tools=tools, tool_choice="none"))


def test_previous_response_id(installed: Any, fresh_sim: SimServer) -> None:
    with llmspend.attribute(project="elsewhere"):  # not spent on the budget below
        first = _oai(fresh_sim, 60_000).responses.create(model="gpt-4o", input="a long talk")
    assert first.usage is not None
    prior = first.usage.input_tokens + first.usage.output_tokens
    c = _oai(fresh_sim, prior + len(TEXT))
    _assert_held(
        installed,
        lambda: c.responses.create(
            model="gpt-4o", input=TEXT, previous_response_id=first.id, max_output_tokens=40
        ),
    )


def test_previous_response_not_recorded_counts_the_context_window(installed: Any) -> None:
    llmspend.set_budget("project", "acme/churn", "1000", "day")
    call = Call(installed, "openai", "responses", "gpt-4o", streamed=False, input_upper=None,
                output_cap=10, payload=InputBound(5, ("resp_unknown",)))  # fmt: skip
    window = installed.pricebook.context_window("openai", "gpt-4o")
    assert window
    bare = Call(installed, "openai", "responses", "gpt-4o", streamed=False, input_upper=5,
                output_cap=10)  # fmt: skip
    per_token = installed.guard.estimate(call) - installed.guard.estimate(bare)
    assert per_token >= installed.pricebook.worst_case_nanos(
        "openai", "gpt-4o", window, 0, call.epoch) - installed.pricebook.worst_case_nanos(
        "openai", "gpt-4o", 0, 0, call.epoch)  # fmt: skip
    unknown = Call(installed, "openai-compatible", "chat.completions", "no-such-model",
                   streamed=False, input_upper=None, output_cap=1,
                   payload=InputBound(0, (), True))  # fmt: skip
    assert unknown.refs is not None and DEFAULT_CONTEXT_WINDOW > 1_000_000


def test_anthropic_image_url(installed: Any, fresh_sim: SimServer) -> None:
    import anthropic as sdk

    head = {"X-Sim-Directives": f"tokens={1639 + len(TEXT)}"}
    c = sdk.Anthropic(api_key="x", base_url=fresh_sim.url, max_retries=0, default_headers=head)
    image = {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}
    content: Any = [{"type": "text", "text": TEXT}, image]  # 784×1568 is billed 1,639 tokens
    _assert_held(
        installed,
        lambda: c.messages.create(
            model="claude-sonnet-4-5",
            max_tokens=40,
            messages=[{"role": "user", "content": content}],
        ),
    )


def test_no_max_tokens_on_a_large_output_cap(installed: Any, fresh_sim: SimServer) -> None:
    c = _oai(fresh_sim, None, completion=127_000, reasoning=1_000)  # gpt-5's 128,000 cap
    _assert_held(installed, lambda: c.chat.completions.create(
        model="gpt-5", messages=[{"role": "user", "content": TEXT}]), )  # fmt: skip


def test_a_prior_response_is_found_by_its_id_in_this_process_and_in_the_store(
    installed: Any, fresh_sim: SimServer
) -> None:
    """What the estimate adds for previous_response_id comes from what llmspend recorded:
    the response's row is named by the response's id."""
    from llmspend.tracker import Tracker

    first = _oai(fresh_sim).responses.create(model="gpt-4o", input="a long talk")
    assert first.usage is not None
    total = first.usage.input_tokens + first.usage.output_tokens
    assert installed.guard._prior_tokens([first.id, "resp_never"]) == {first.id: total}
    other = Tracker(installed.settings.database_url)  # another kernel: nothing recent
    assert not other.recent
    assert other.guard._prior_tokens([first.id]) == {first.id: total}
