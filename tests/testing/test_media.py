"""The test server reads image sizes and audio lengths from real files, and prices them as the
providers' docs do (their worked examples)."""

from __future__ import annotations

import pytest

from costspan.testing import _media as media
from tests.testing.images import image_bytes, wav_bytes


@pytest.mark.parametrize(
    ("fmt", "options"),
    [
        ("PNG", {}),
        ("JPEG", {}),
        ("JPEG", {"progressive": True}),
        ("GIF", {}),
        ("WEBP", {"lossless": False}),
        ("WEBP", {"lossless": True}),
    ],
)
@pytest.mark.parametrize(("width", "height"), [(1, 1), (640, 480), (3000, 17)])
def test_image_size_is_read_from_the_header(
    fmt: str, options: dict[str, object], width: int, height: int
) -> None:
    """Pillow's PNG, baseline/progressive JPEG, GIF and lossy/lossless WebP all give their size."""
    assert media.image_size(image_bytes(width, height, fmt, **options)) == (width, height)


def test_extended_webp_size_is_read() -> None:
    """A WebP with an alpha channel (VP8X container) gives its size too."""
    from io import BytesIO

    from PIL import Image

    out = BytesIO()
    Image.new("RGBA", (321, 123), (1, 2, 3, 4)).save(out, "WEBP")
    assert out.getvalue()[12:16] == b"VP8X"
    assert media.image_size(out.getvalue()) == (321, 123)


@pytest.mark.parametrize(
    "data",
    [b"", b"not an image", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0\x00", b"RIFF\0\0\0\0WEBPVP8 "],
)
def test_what_is_not_an_image_is_refused(data: bytes) -> None:
    """Truncated or foreign bytes are a MediaError, never a crash or a made-up size."""
    with pytest.raises(media.MediaError):
        media.image_size(data)


def test_data_urls_must_be_base64() -> None:
    """A data URL must carry base64 that decodes."""
    assert media.decode_data_url("data:image/png;base64,aGk=") == b"hi"
    with pytest.raises(media.MediaError):
        media.decode_data_url("data:image/png,plain")
    with pytest.raises(media.MediaError):
        media.decode_data_url("data:image/png;base64,@@@")


@pytest.mark.parametrize(
    ("model", "width", "height", "detail", "tokens"),
    [
        # OpenAI's worked examples for gpt-4o: 1024x1024 high = 765, 2048x4096 high = 1105,
        # anything at low detail = 85.
        ("gpt-4o", 1024, 1024, "high", 765),
        ("gpt-4o", 2048, 4096, "high", 1105),
        ("gpt-4o", 4096, 8192, "low", 85),
        ("gpt-4o-2024-08-06", 2048, 4096, "auto", 1105),
        # gpt-4o-mini's own base (2833) and tile (5667) numbers: 2833 + 6 * 5667.
        ("gpt-4o-mini", 2048, 4096, "high", 2833 + 6 * 5667),
        ("gpt-4o-mini", 2048, 4096, "low", 2833),
        ("o3", 2048, 4096, "high", 75 + 6 * 150),
        ("gpt-5", 2048, 4096, "high", 70 + 6 * 140),
        # A small image is not scaled up: 100x100 is one tile.
        ("gpt-4o", 100, 100, "high", 85 + 170),
        # Patch-based: 1024x1024 = 1024 patches; gpt-5-mini x1.62 = 1659 (docs' example).
        ("gpt-5-mini", 1024, 1024, "high", 1659),
        ("gpt-4.1-mini", 1024, 1024, "low", 1659),  # detail does not change patches
        ("gpt-4.1-nano", 1024, 1024, "high", 2519),
        ("o4-mini", 1024, 1024, "high", 1761),
    ],
)
def test_openai_image_tokens(model: str, width: int, height: int, detail: str, tokens: int) -> None:
    """Tile- and patch-based models bill what OpenAI's formulas give."""
    assert media.openai_image_tokens(model, width, height, detail) == tokens


def test_patches_shrink_to_the_budget_like_the_docs_example() -> None:
    """1800x2400 has 4275 patches; the docs shrink it to 33x44 = 1452."""
    assert media.patches(1800, 2400) == 1452
    assert media.patches(2048, 4096) == 27 * 54
    assert media.patches(1, 100_000) <= media.PATCH_BUDGET


@pytest.mark.parametrize(
    ("width", "height", "tokens"),
    # 4000x4000 is scaled to 1568 on its long edge, then to the 1600-token area: 1095x1095.
    [(200, 200, 54), (1000, 1000, 1334), (1092, 1092, 1590), (4000, 4000, 1599)],
)
def test_anthropic_image_tokens(width: int, height: int, tokens: int) -> None:
    """Anthropic's (w*h)/750 after its downscale: the docs' table (200px = 54, 1092px = 1590)."""
    assert media.anthropic_image_tokens(width, height) == tokens


def test_wav_duration_bills_ten_tokens_a_second() -> None:
    """A 3 s WAV is 30 tokens; audio the server cannot measure is billed as 60 s."""
    assert media.wav_seconds(wav_bytes(3)) == pytest.approx(3.0)
    assert media.audio_tokens(wav_bytes(3), "wav") == 30
    assert media.audio_tokens(wav_bytes(0.25), "wav") == 3
    assert media.audio_tokens(b"ID3 mp3 bytes", "mp3") == media.UNREADABLE_AUDIO_SECONDS * 10
    assert media.audio_tokens(b"RIFF....WAVE", "wav") == media.UNREADABLE_AUDIO_SECONDS * 10
