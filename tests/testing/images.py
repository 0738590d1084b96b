"""Real images and audio for the test server's tests, made by real encoders (Pillow, wave)."""

from __future__ import annotations

import base64
import io
import wave

from PIL import Image


def image_bytes(width: int, height: int, fmt: str = "PNG", **options: object) -> bytes:
    """A ``width`` x ``height`` image encoded by Pillow (one colour: small however large)."""
    out = io.BytesIO()
    Image.new("L" if fmt != "WEBP" else "RGB", (width, height), 200).save(out, fmt, **options)
    return out.getvalue()


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def png_url(width: int, height: int) -> str:
    return data_url(image_bytes(width, height))


def wav_bytes(seconds: float, rate: int = 16000) -> bytes:
    """Silence of ``seconds``, 16-bit mono WAV written by the standard library."""
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(b"\0\0" * int(seconds * rate))
    return out.getvalue()
