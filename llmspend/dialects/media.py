"""Offline token bounds for images, audio, video and files: pure functions over bytes.

Each bound follows the provider's published rule and never counts fewer tokens than the
provider bills; where the rule needs what the request does not say, the worst case is
assumed. Where each is loose, and by how much:

* **OpenAI images** (chat ``image_url``, Responses ``input_image``), per model family:
  tiles (fit in 2048×2048, shortest side down to 768, 512-px tiles: ``base + tile × n``;
  ``detail: "low"`` is ``base``) or 32-px patches (at most 1536, × a multiplier; detail is
  ignored). Exact when the size is read from the bytes. A remote URL assumes the worst
  size (8 tiles, 1536 patches): up to 8× a small image's count. A model not in
  :data:`OPENAI_TILES`/:data:`OPENAI_PATCHES` gets the largest count among all families
  (gpt-4o-mini's 2,833 + 5,667 per tile, which it prices at 1/33 of the rate): loose by up
  to ~33× for a model that counts like gpt-4o.
* **Gemini images**: 258 when both sides are ≤ 384 px, else 258 per tile, the larger of
  768-px tiles and the crop-unit tiles (``min(w, h) / 1.5``); at least
  :data:`GEMINI3_IMAGE_TOKENS` for Gemini 3 models (their ``ultra_high`` resolution: 2×
  the default ``high``).
* **Anthropic images**: ``w × h / 750``, at most :data:`ANTHROPIC_IMAGE_CAP` (images are
  scaled down to about 1,600 tokens; the cap is the largest size in Anthropic's table of
  unscaled sizes, 784×1568, plus a margin).
* **Audio**: WAV says its duration (exact at :data:`AUDIO_TOKENS_PER_SECOND`: Gemini's 32
  a second; OpenAI's audio input is about 10 a second, 3× loose); other formats are
  bounded by their bytes at :data:`MIN_AUDIO_BYTES_PER_SECOND` (4 kbit/s, below any codec
  the providers accept: a 64 kbit/s MP3 is counted 16× too high).
* **Video** (Gemini, 263 tokens a second): by bytes at :data:`MIN_VIDEO_BYTES_PER_SECOND`
  (8 kbit/s; a 500 kbit/s video is counted ~60× too high).
* **Files and PDFs**, and images of unknown size where no cap is published: the size of
  their content is unknown offline (a PDF's compressed streams bound neither its text nor
  its pages), so :data:`OPEN` asks for the model's whole context window. Text files count
  one token per byte.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
import struct
from typing import Any

__all__ = [
    "ANTHROPIC_IMAGE_CAP",
    "AUDIO_TOKENS_PER_SECOND",
    "GEMINI3_IMAGE_TOKENS",
    "GEMINI_IMAGE_TOKENS",
    "MIN_AUDIO_BYTES_PER_SECOND",
    "MIN_VIDEO_BYTES_PER_SECOND",
    "OPEN",
    "OPENAI_PATCHES",
    "OPENAI_TILES",
    "VIDEO_TOKENS_PER_SECOND",
    "anthropic_image_tokens",
    "audio_tokens",
    "b64_size",
    "decode_b64",
    "gemini_image_tokens",
    "image_size",
    "inline_tokens",
    "openai_image_tokens",
    "png_header",
    "split_data_url",
    "video_tokens",
    "wav_seconds",
]

#: A part whose size cannot be known offline: the caller adds the model's context window.
OPEN = -1

#: OpenAI tile-counted families: bare model name → (base tokens, tokens per 512-px tile).
OPENAI_TILES: dict[str, tuple[int, int]] = {
    "gpt-4o": (85, 170), "chatgpt-4o-latest": (85, 170), "gpt-4.1": (85, 170),
    "gpt-4.5-preview": (85, 170), "gpt-4-turbo": (85, 170), "gpt-4o-mini": (2833, 5667),
    "gpt-5": (70, 140), "gpt-5-chat-latest": (70, 140), "o1": (75, 150), "o1-pro": (75, 150),
    "o3": (75, 150), "o3-pro": (75, 150), "computer-use-preview": (65, 129),
}  # fmt: skip
#: OpenAI patch-counted families: bare model name → multiplier (at most 1536 patches).
OPENAI_PATCHES: dict[str, float] = {
    "gpt-4.1-mini": 1.62, "gpt-4.1-nano": 2.46, "o4-mini": 1.72, "gpt-5-mini": 1.62,
    "gpt-5-nano": 2.46,
}  # fmt: skip
_MAX_PATCHES = 1536
_WORST_TILES = 8  # 2048×768 after scaling: 4 × 2 tiles

GEMINI_IMAGE_TOKENS = 258
GEMINI3_IMAGE_TOKENS = 2240
ANTHROPIC_IMAGE_CAP = 1700
AUDIO_TOKENS_PER_SECOND = 32
VIDEO_TOKENS_PER_SECOND = 263
MIN_AUDIO_BYTES_PER_SECOND = 500
MIN_VIDEO_BYTES_PER_SECOND = 1000

_DATED = re.compile(r"-\d{4}-\d{2}-\d{2}$")
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


# -- bytes -----------------------------------------------------------------------------------


def split_data_url(url: Any) -> tuple[str, str] | None:
    """``data:<mime>;base64,<payload>`` → (mime, payload); ``None`` for anything else."""
    if type(url) is not str or not url.startswith("data:"):
        return None
    head, sep, payload = url.partition(",")
    if not sep:
        return None
    return head[5:].split(";")[0].lower(), payload


def b64_size(text: str) -> int:
    """The decoded size of base64 ``text`` (an upper bound when it holds whitespace)."""
    n = len(text) - text.count("=", max(0, len(text) - 2))
    return max(0, n * 3 // 4)


def decode_b64(text: Any) -> bytes | None:
    """Base64 (standard or URL-safe) → bytes; ``None`` when it is not base64."""
    if type(text) is not str:
        return None
    try:
        return base64.b64decode(text.translate(_URLSAFE) + "==", validate=False)
    except (binascii.Error, ValueError):
        return None


_URLSAFE = str.maketrans("-_", "+/")


def image_size(data: bytes | None) -> tuple[int, int] | None:
    """(width, height) from a PNG, JPEG, GIF, WebP or BMP header; ``None`` if unknown."""
    if not data or len(data) < 10:
        return None
    try:
        size = _size(data)
    except (struct.error, IndexError):
        return None
    if size is None or size[0] <= 0 or size[1] <= 0:
        return None
    return size


def _size(d: bytes) -> tuple[int, int] | None:
    if d.startswith(b"\x89PNG\r\n\x1a\n"):
        w, h = struct.unpack(">II", d[16:24])
        return int(w), int(h)
    if d[:6] in (b"GIF87a", b"GIF89a"):
        w, h = struct.unpack("<HH", d[6:10])
        return int(w), int(h)
    if d[:4] == b"RIFF" and d[8:12] == b"WEBP":
        return _webp(d)
    if d[:2] == b"BM":
        w, h = struct.unpack("<ii", d[18:26])
        return abs(int(w)), abs(int(h))
    if d[:2] == b"\xff\xd8":
        return _jpeg(d)
    return None


def _webp(d: bytes) -> tuple[int, int] | None:
    chunk = d[12:16]
    if chunk == b"VP8 ":
        w, h = struct.unpack("<HH", d[26:30])
        return int(w) & 0x3FFF, int(h) & 0x3FFF
    if chunk == b"VP8L":
        b0, b1, b2, b3 = d[21:25]
        return 1 + (((b1 & 0x3F) << 8) | b0), 1 + (((b3 & 0x0F) << 10) | (b2 << 2) | (b1 >> 6))
    if chunk == b"VP8X":
        return 1 + int.from_bytes(d[24:27], "little"), 1 + int.from_bytes(d[27:30], "little")
    return None


def _jpeg(d: bytes) -> tuple[int, int] | None:
    i, n = 2, len(d)
    while i + 4 <= n:
        if d[i] != 0xFF:
            return None
        marker = d[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in _JPEG_SOF:
            h, w = struct.unpack(">HH", d[i + 5 : i + 9])
            return int(w), int(h)
        if marker == 0x01 or 0xD0 <= marker <= 0xD9:  # no length
            i += 2
            continue
        (length,) = struct.unpack(">H", d[i + 2 : i + 4])
        i += 2 + int(length)
    return None


def png_header(width: int, height: int) -> bytes:
    """The head of a PNG of this size: an image known only by its size (a PIL image in a
    Gemini request) is bounded as its bytes would be."""
    ihdr = struct.pack(">IIBBBBB", int(width), int(height), 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr


def wav_seconds(data: bytes | None, nbytes: int | None = None) -> float | None:
    """The duration of a WAV file of ``nbytes`` (default: ``len(data)``; ``data`` may be just
    its head) from its ``fmt`` chunk's byte rate; ``None`` when it is not a WAV."""
    if not data or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return None
    i = 12
    while i + 8 <= len(data):
        chunk, size = data[i : i + 4], int.from_bytes(data[i + 4 : i + 8], "little")
        if chunk == b"fmt " and i + 20 <= len(data):
            rate = int.from_bytes(data[i + 16 : i + 20], "little")
            return (nbytes or len(data)) / rate if rate > 0 else None
        i += 8 + size + (size & 1)
    return None


# -- per-provider bounds ---------------------------------------------------------------------


def _bare(model: str) -> str:
    """``openai/gpt-4o-2024-08-06`` → ``gpt-4o``; ``ft:gpt-4o-mini:org::id`` → ``gpt-4o-mini``."""
    name = model.lower()
    if name.startswith("ft:"):
        name = name[3:].split(":")[0]
    return _DATED.sub("", name.rsplit("/", 1)[-1])


def _tiles(w: float, h: float) -> int:
    if max(w, h) > 2048:
        s = 2048 / max(w, h)
        w, h = w * s, h * s
    if min(w, h) > 768:
        s = 768 / min(w, h)
        w, h = w * s, h * s
    return math.ceil(w / 512 - 1e-9) * math.ceil(h / 512 - 1e-9)


def openai_image_tokens(model: str, size: tuple[int, int] | None, detail: Any = None) -> int:
    """Tokens OpenAI bills at most for one image on ``model`` (``size`` ``None``: unknown)."""
    name = _bare(model or "")
    rules: list[tuple[str, Any]]
    if name in OPENAI_TILES:
        rules = [("tiles", OPENAI_TILES[name])]
    elif name in OPENAI_PATCHES:
        rules = [("patches", OPENAI_PATCHES[name])]
    else:  # unknown family: the largest count among all of them
        rules = [("tiles", t) for t in OPENAI_TILES.values()]
        rules += [("patches", m) for m in OPENAI_PATCHES.values()]
    low = detail == "low"
    best = 0
    for kind, rule in rules:
        if kind == "tiles":
            base, per_tile = rule
            tiles = 0 if low else _WORST_TILES if size is None else _tiles(*size)
            best = max(best, base + per_tile * tiles)
        else:
            if size is None:
                patches = _MAX_PATCHES
            else:
                patches = min(math.ceil(size[0] / 32) * math.ceil(size[1] / 32), _MAX_PATCHES)
            best = max(best, math.ceil(patches * rule))
    return best


def gemini_image_tokens(model: str, size: tuple[int, int] | None) -> int:
    """Tokens Gemini bills at most for one image of ``size``; :data:`OPEN` when unknown."""
    if size is None:
        return OPEN
    w, h = size
    if w <= 384 and h <= 384:
        tiles = 1
    else:
        unit = max(1, int(min(w, h) / 1.5))
        tiles = max(math.ceil(w / 768) * math.ceil(h / 768),
                    math.ceil(w / unit) * math.ceil(h / unit))  # fmt: skip
    tokens = GEMINI_IMAGE_TOKENS * tiles
    if _bare(model or "").startswith("gemini-3"):
        tokens = max(tokens, GEMINI3_IMAGE_TOKENS)
    return tokens


def anthropic_image_tokens(size: tuple[int, int] | None) -> int:
    """Tokens Anthropic bills at most for one image (``size`` ``None``: the cap)."""
    if size is None:
        return ANTHROPIC_IMAGE_CAP
    return min(math.ceil(size[0] * size[1] / 750), ANTHROPIC_IMAGE_CAP)


def audio_tokens(data: bytes | None, nbytes: int) -> int:
    """Tokens at most for an audio clip: by a WAV's duration, else by its ``nbytes``."""
    seconds = wav_seconds(data, nbytes)
    if seconds is None:
        seconds = nbytes / MIN_AUDIO_BYTES_PER_SECOND
    return math.ceil(seconds * AUDIO_TOKENS_PER_SECOND)


def video_tokens(nbytes: int) -> int:
    """Tokens at most for a video of ``nbytes`` (see the module docstring)."""
    return math.ceil(nbytes * VIDEO_TOKENS_PER_SECOND / MIN_VIDEO_BYTES_PER_SECOND)


def inline_tokens(mime: Any, data: Any, model: str, image: Any = None) -> int:
    """Tokens at most for inline media: ``data`` as bytes or base64 text of type ``mime``.

    ``image(model, size)`` bounds an image (the provider's rule; default Gemini's). Text
    counts one token per byte; anything else (PDFs, unknown types) is :data:`OPEN`.
    """
    mime = mime.lower() if type(mime) is str else ""
    raw = data if isinstance(data, (bytes, bytearray)) else None
    nbytes = len(raw) if raw is not None else b64_size(data) if type(data) is str else 0
    if mime.startswith("image/"):
        if raw is None:
            raw = decode_b64(data)
        rule = image or gemini_image_tokens
        return int(rule(model, image_size(bytes(raw) if raw is not None else None)))
    if mime.startswith("audio/"):
        if raw is None and type(data) is str:
            raw = decode_b64(data[:64])
        return audio_tokens(bytes(raw) if raw is not None else None, nbytes)
    if mime.startswith("video/"):
        return video_tokens(nbytes)
    if mime.startswith("text/") or mime in ("application/json", "application/xml"):
        return nbytes
    return OPEN
