"""Images and audio in prompts: their size read from the bytes, and what providers bill for them.

The server reads dimensions from ``data:`` URLs itself (PNG, JPEG, GIF and WebP headers, parsed
with :mod:`struct`; no imaging library) and the duration of WAV audio from its RIFF header. It
cannot fetch ``http(s)`` URLs, so a linked image is billed as if it were
:data:`LINKED_IMAGE_SIZE` (2048x2048) at the detail the request asked for.

OpenAI's formulas come from its platform docs, "Images and vision" > "Calculating costs"
(https://platform.openai.com/docs/guides/images-vision#calculating-costs), as copied in
openai/openai-python#2851 and community calculators:

- Tile-based models (gpt-4o, gpt-4.1, gpt-4.5, gpt-5, gpt-4o-mini, o1, o3, computer-use):
  ``detail: low`` costs the base tokens. ``high`` (and ``auto``, which this server treats as
  high) scales the image to fit 2048x2048, then down so its shortest side is at most 768, and
  costs ``base + tile * ceil(w/512) * ceil(h/512)``.
- Patch-based models (gpt-4.1-mini/nano, gpt-5-mini/nano, o4-mini): 32px patches,
  ``ceil(w/32) * ceil(h/32)``; above 1536 patches the image is shrunk (the docs' algorithm,
  below) and the count capped at 1536; the result times the model's multiplier, rounded. The
  ``detail`` parameter does not change their count here.

Anthropic's formula (https://docs.anthropic.com/en/docs/build-with-claude/vision, "Evaluate
image size"): an image whose long edge exceeds 1568px, or that would cost more than 1600
tokens, is first scaled down (aspect kept); it then costs ``ceil(w * h / 750)`` tokens.

Audio input is 10 tokens per second (OpenAI bills user audio at 1 token per 100 ms); audio whose
length the server cannot read (anything but a readable WAV) is billed as
:data:`UNREADABLE_AUDIO_SECONDS` seconds.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
import struct
from dataclasses import dataclass

LINKED_IMAGE_SIZE = (2048, 2048)
UNREADABLE_AUDIO_SECONDS = 60
AUDIO_TOKENS_PER_SECOND = 10


class MediaError(ValueError):
    """Bytes that do not hold an image (or audio) the provider would accept."""


@dataclass(frozen=True)
class TileRule:
    base: int
    tile: int


@dataclass(frozen=True)
class PatchRule:
    multiplier: float


# Order matters: the first pattern that matches the model id wins.
_IMAGE_RULES: tuple[tuple[re.Pattern[str], TileRule | PatchRule], ...] = (
    (re.compile(r"^gpt-4\.1-mini"), PatchRule(1.62)),
    (re.compile(r"^gpt-4\.1-nano"), PatchRule(2.46)),
    (re.compile(r"^gpt-5(\.\d+)?-mini"), PatchRule(1.62)),
    (re.compile(r"^gpt-5(\.\d+)?-nano"), PatchRule(2.46)),
    (re.compile(r"^o4-mini"), PatchRule(1.72)),
    (re.compile(r"^gpt-4o-mini"), TileRule(2833, 5667)),
    (re.compile(r"^gpt-5"), TileRule(70, 140)),
    (re.compile(r"^(o1|o3)"), TileRule(75, 150)),
    (re.compile(r"^computer-use"), TileRule(65, 129)),
)
_DEFAULT_IMAGE_RULE = TileRule(85, 170)  # gpt-4o, gpt-4.1, gpt-4.5 and models not listed

PATCH_SIZE = 32
PATCH_BUDGET = 1536


def image_rule(model: str) -> TileRule | PatchRule:
    """How ``model`` bills images."""
    name = model.lower()
    for pattern, rule in _IMAGE_RULES:
        if pattern.match(name):
            return rule
    return _DEFAULT_IMAGE_RULE


def openai_image_tokens(model: str, width: int, height: int, detail: str) -> int:
    """What OpenAI bills for one image of ``width`` x ``height`` at ``detail``."""
    rule = image_rule(model)
    if isinstance(rule, PatchRule):
        return round(patches(width, height) * rule.multiplier)
    if detail == "low":
        return rule.base
    w, h = float(width), float(height)
    if max(w, h) > 2048:  # fit in 2048x2048
        scale = 2048 / max(w, h)
        w, h = w * scale, h * scale
    if min(w, h) > 768:  # shortest side down to 768 (images are never scaled up)
        scale = 768 / min(w, h)
        w, h = w * scale, h * scale
    tiles = math.ceil(w / 512) * math.ceil(h / 512)
    return rule.base + rule.tile * tiles


def patches(width: int, height: int) -> int:
    """32px patches of an image for patch-based models, after the docs' shrink to 1536."""
    raw = math.ceil(width / PATCH_SIZE) * math.ceil(height / PATCH_SIZE)
    if raw <= PATCH_BUDGET:
        return raw
    shrink = math.sqrt(PATCH_SIZE**2 * PATCH_BUDGET / (width * height))
    # Shrink a little more so that a whole number of patches fits along the tighter side.
    along_w = width * shrink / PATCH_SIZE
    along_h = height * shrink / PATCH_SIZE
    ratios = [math.floor(n) / n for n in (along_w, along_h) if n >= 1]
    adjusted = shrink * min(ratios, default=1.0)
    resized_w = max(1, int(width * adjusted))
    resized_h = max(1, int(height * adjusted))
    count = math.ceil(resized_w / PATCH_SIZE) * math.ceil(resized_h / PATCH_SIZE)
    return min(PATCH_BUDGET, count)


ANTHROPIC_MAX_EDGE = 1568
ANTHROPIC_MAX_IMAGE_TOKENS = 1600
ANTHROPIC_PIXELS_PER_TOKEN = 750


def anthropic_image_tokens(width: int, height: int) -> int:
    """What Anthropic bills for one image (after its own downscaling)."""
    w, h = float(width), float(height)
    if max(w, h) > ANTHROPIC_MAX_EDGE:
        scale = ANTHROPIC_MAX_EDGE / max(w, h)
        w, h = w * scale, h * scale
    if w * h / ANTHROPIC_PIXELS_PER_TOKEN > ANTHROPIC_MAX_IMAGE_TOKENS:
        scale = math.sqrt(ANTHROPIC_MAX_IMAGE_TOKENS * ANTHROPIC_PIXELS_PER_TOKEN / (w * h))
        w, h = w * scale, h * scale
    return math.ceil(int(w) * int(h) / ANTHROPIC_PIXELS_PER_TOKEN)


# -- reading the bytes --------------------------------------------------------------------------
_DATA_URL = re.compile(
    r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[^,;]*)*?),(?P<data>.*)$", re.S
)


def decode_data_url(url: str) -> bytes:
    """The bytes of a base64 ``data:`` URL."""
    match = _DATA_URL.match(url)
    if match is None or ";base64" not in match["params"]:
        raise MediaError("the data URL is not base64-encoded")
    return decode_base64(match["data"])


def decode_base64(data: str) -> bytes:
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as err:
        raise MediaError("the image data is not valid base64") from err


def image_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a PNG, JPEG, GIF or WebP header."""
    if data.startswith(b"\x89PNG\r\n\x1a\n") and data[12:16] == b"IHDR" and len(data) >= 24:
        width, height = struct.unpack(">II", data[16:24])
        return _checked(int(width), int(height))
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        width, height = struct.unpack("<HH", data[6:10])
        return _checked(int(width), int(height))
    if data.startswith(b"\xff\xd8"):
        return _jpeg_size(data)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return _webp_size(data)
    raise MediaError("the image is not a PNG, JPEG, GIF or WebP")


def _checked(width: int, height: int) -> tuple[int, int]:
    if width <= 0 or height <= 0:
        raise MediaError("the image has no pixels")
    return width, height


# JPEG start-of-frame markers carry the size; C4 (DHT), C8 (JPG) and CC (DAC) do not.
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _jpeg_size(data: bytes) -> tuple[int, int]:
    at = 2
    while at + 4 <= len(data):
        if data[at] != 0xFF:
            raise MediaError("the JPEG is corrupt")
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # markers without a length
            at += 2
            continue
        (length,) = struct.unpack(">H", data[at + 2 : at + 4])
        if marker in _SOF_MARKERS:
            if at + 9 > len(data):
                break
            height, width = struct.unpack(">HH", data[at + 5 : at + 9])
            return _checked(int(width), int(height))
        at += 2 + int(length)
    raise MediaError("the JPEG has no frame header")


def _webp_size(data: bytes) -> tuple[int, int]:
    chunk = data[12:16]
    if chunk == b"VP8 " and len(data) >= 30:
        width, height = struct.unpack("<HH", data[26:30])
        return _checked(int(width) & 0x3FFF, int(height) & 0x3FFF)
    if chunk == b"VP8L" and len(data) >= 25:
        (bits,) = struct.unpack("<I", data[21:25])
        return _checked((int(bits) & 0x3FFF) + 1, ((int(bits) >> 14) & 0x3FFF) + 1)
    if chunk == b"VP8X" and len(data) >= 30:
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
        return _checked(width, height)
    raise MediaError("the WebP is corrupt")


def wav_seconds(data: bytes) -> float | None:
    """The duration of a WAV file from its RIFF chunks, or None if it cannot be read."""
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return None
    at, byte_rate, size = 12, 0, None
    while at + 8 <= len(data):
        name = data[at : at + 4]
        (length,) = struct.unpack("<I", data[at + 4 : at + 8])
        if name == b"fmt " and at + 16 <= len(data):
            (byte_rate,) = struct.unpack("<I", data[at + 16 : at + 20])
        elif name == b"data":
            # A streamed WAV may leave the length unset (0 or 0xFFFFFFFF): use what is there.
            size = min(int(length), len(data) - at - 8)
            break
        at += 8 + int(length) + (int(length) & 1)
    if not byte_rate or size is None:
        return None
    return size / int(byte_rate)


def audio_tokens(data: bytes, audio_format: str) -> int:
    """Tokens of an ``input_audio`` part (10 per second; unreadable audio as 60 s)."""
    seconds = wav_seconds(data) if audio_format == "wav" else None
    if seconds is None:
        seconds = UNREADABLE_AUDIO_SECONDS
    return math.ceil(seconds * AUDIO_TOKENS_PER_SECOND)
