"""What images and audio in a request are billed as, counted offline, as an upper bound.

Image dimensions come from the bytes of a ``data:`` URL, read by ``imagesize`` from the image's
header (PNG, JPEG, GIF, WebP...); only the first part of the base64 text is decoded when that is
enough. OpenAI's published formulas ("Images and vision" > "Calculating costs",
https://platform.openai.com/docs/guides/images-vision#calculating-costs):

- **tile-based models** (gpt-4o, gpt-4.1, gpt-4.5, gpt-5, gpt-4o-mini, o1, o3...): ``detail:
  low`` costs the model's base; ``high`` - and ``auto``, which costspan counts as high, its worst
  case - fits the image in 2048x2048, shrinks it so its short side is at most 768, and costs
  ``base + tile * tiles`` for 512px tiles;
- **patch-based models** (gpt-4.1-mini/nano, gpt-5-mini/nano, o4-mini): 32px patches, at most
  1536, times the model's multiplier.

An image whose size costspan cannot read (an ``http(s)`` URL, a file id, bytes ``imagesize`` does
not know) costs the model's worst case: 8 tiles (a 2048x768 image) or 1536 patches. For models
of other providers, whose formulas costspan does not ship, an image costs the larger of OpenAI's
default tile rule and Anthropic's (``w*h/750`` after scaling to at most 1568px and 1600 tokens).

Audio input costs 10 tokens a second (OpenAI bills user audio at one token per 100 ms): a WAV's
length comes from its header; any other format is bounded by its size at 8 kbit/s, the lowest
common bitrate (so ``bytes / 100`` tokens).
"""

from __future__ import annotations

import io
import math
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Final

WORST_TILES: Final = 8
"""The most 512px tiles a high-detail image can have after OpenAI's scaling (2048x768)."""
PATCH_BUDGET: Final = 1536
AUDIO_TOKENS_PER_SECOND: Final = 10
LOWEST_AUDIO_BYTES_PER_SECOND: Final = 1000  # 8 kbit/s


@dataclass(frozen=True, slots=True)
class Tiles:
    base: int
    tile: int


@dataclass(frozen=True, slots=True)
class Patches:
    multiplier: float


# The first pattern that matches a model id wins (dated ids match their family).
_RULES: Final[tuple[tuple[re.Pattern[str], Tiles | Patches], ...]] = (
    (re.compile(r"^gpt-4\.1-mini"), Patches(1.62)),
    (re.compile(r"^gpt-4\.1-nano"), Patches(2.46)),
    (re.compile(r"^gpt-5(\.\d+)?-mini"), Patches(1.62)),
    (re.compile(r"^gpt-5(\.\d+)?-nano"), Patches(2.46)),
    (re.compile(r"^o4-mini"), Patches(1.72)),
    (re.compile(r"^gpt-4o-mini"), Tiles(2833, 5667)),
    (re.compile(r"^gpt-5"), Tiles(70, 140)),
    (re.compile(r"^(o1|o3)"), Tiles(75, 150)),
    (re.compile(r"^computer-use"), Tiles(65, 129)),
    (re.compile(r"^(gpt-4o|gpt-4\.1|gpt-4\.5|chatgpt-4o|gpt-4-turbo)"), Tiles(85, 170)),
)
_OPENAI_DEFAULT: Final = Tiles(85, 170)


_rules: dict[str, Tiles | Patches | None] = {}


def _rule(model: str) -> Tiles | Patches | None:
    if model in _rules:  # memoised: every image of a resent history asks again
        return _rules[model]
    name = model.lower().rpartition("/")[2]  # "openai/gpt-4o" (gateways) is gpt-4o
    found = next((rule for pattern, rule in _RULES if pattern.match(name)), None)
    if len(_rules) >= 4096:  # a bound against model names that never repeat
        _rules.clear()
    _rules[model] = found
    return found


def _tiles(width: int, height: int) -> int:
    scale = min(1.0, 2048 / max(width, height))
    w, h = width * scale, height * scale
    shrink = min(1.0, 768 / min(w, h))
    w, h = w * shrink, h * shrink
    return math.ceil(w / 512) * math.ceil(h / 512)


def _patches(width: int, height: int) -> int:
    count = math.ceil(width / 32) * math.ceil(height / 32)
    return min(count, PATCH_BUDGET)


def _anthropic(width: int, height: int) -> int:
    scale = min(1.0, 1568 / max(width, height))
    w, h = width * scale, height * scale
    return min(math.ceil(w * h / 750), 1600)


def image_tokens(model: str, size: tuple[int, int] | None, detail: str | None) -> int:
    """Tokens of one image for ``model`` (``size`` None: unknown, the worst case)."""
    rule = _rule(model)
    if isinstance(rule, Patches):
        patches = PATCH_BUDGET if size is None else _patches(*size)
        return math.ceil(patches * rule.multiplier)
    tiles = rule or _OPENAI_DEFAULT
    if detail == "low" and rule is not None:
        return tiles.base
    count = WORST_TILES if size is None else _tiles(*size)
    tokens = tiles.base + tiles.tile * count
    if rule is None:  # another provider's model: its own formula is not known here
        return max(tokens, 1600 if size is None else _anthropic(*size))
    return tokens


_DATA_URL: Final = re.compile(r"^data:[^,;]*(?:;[^,]*)?,", re.ASCII)


def _decode(text: str) -> bytes:
    import base64  # (images and audio in a request are rare: imported when one comes)
    import binascii

    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=False)
    except (binascii.Error, ValueError):
        return b""


@lru_cache(maxsize=1024)
def data_url_size(url: str) -> tuple[int, int] | None:
    """The (width, height) of an image in a ``data:`` URL, from its header; None if unknown.
    Memoised on the URL text: history resent with the same image costs one lookup."""
    import imagesize  # pyright: ignore[reportMissingTypeStubs]

    read: Any = getattr(imagesize, "get")  # noqa: B009 - untyped: seen as Any
    match = _DATA_URL.match(url)
    if match is None:
        return None
    payload = url[match.end() :]
    # A header sits at the start (JPEG's size may follow large metadata): a little, then all.
    for chunk in (payload[:65536], payload):
        width, height = read(io.BytesIO(_decode(chunk[: len(chunk) // 4 * 4])))
        if width > 0 and height > 0:
            return width, height
        if len(chunk) == len(payload):
            break
    return None


def audio_tokens(data: str, fmt: str | None) -> int:
    """Tokens of base64 audio: a WAV's length from its header, else bounded by its size."""
    import wave

    raw = _decode(data)
    if fmt in (None, "wav"):
        try:
            with wave.open(io.BytesIO(raw)) as wav:
                seconds = wav.getnframes() / max(wav.getframerate(), 1)
            return math.ceil(seconds * AUDIO_TOKENS_PER_SECOND)
        except (wave.Error, EOFError, ValueError):
            pass
    return math.ceil(len(raw) / LOWEST_AUDIO_BYTES_PER_SECOND * AUDIO_TOKENS_PER_SECOND)
