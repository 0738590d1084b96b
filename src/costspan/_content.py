"""Opt-in message content in the GenAI JSON shapes (``gen_ai.input.messages`` and friends).

Only used when ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`` asks for span content. The
shapes follow the v1.41.0 JSON schemas: a message is ``{"role", "parts": [...]}`` and a part is
``{"type": "text", "content": ...}``, ``{"type": "tool_call", ...}`` or
``{"type": "tool_call_response", ...}``. Non-text parts keep only their type: costspan never
copies images or audio into telemetry.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from costspan._usage import field


def _text_parts(content: object) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "content": content}]
    parts: list[dict[str, Any]] = []
    if isinstance(content, Iterable):
        for part in content:  # pyright: ignore[reportUnknownVariableType]
            kind = field(part, "type")
            text = field(part, "text")
            if isinstance(text, str):
                parts.append({"type": "text", "content": text})
            elif isinstance(kind, str):
                parts.append({"type": kind})
    return parts


def _tool_calls(calls: object) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    if isinstance(calls, Iterable) and not isinstance(calls, str | bytes):
        for call in calls:  # pyright: ignore[reportUnknownVariableType]
            function = field(call, "function")
            parts.append(
                {
                    "type": "tool_call",
                    "id": field(call, "id"),
                    "name": field(function, "name"),
                    "arguments": field(function, "arguments"),
                }
            )
    return parts


def chat_input(messages: object) -> list[dict[str, Any]]:
    """Chat Completions ``messages`` as GenAI input messages."""
    result: list[dict[str, Any]] = []
    if not isinstance(messages, Iterable) or isinstance(messages, str | bytes | Mapping):
        return result
    for message in messages:  # pyright: ignore[reportUnknownVariableType]
        role = field(message, "role")
        if role == "tool":
            parts: list[dict[str, Any]] = [
                {
                    "type": "tool_call_response",
                    "id": field(message, "tool_call_id"),
                    "response": field(message, "content"),
                }
            ]
        else:
            parts = _text_parts(field(message, "content")) + _tool_calls(
                field(message, "tool_calls")
            )
        result.append({"role": role, "parts": parts})
    return result


def responses_input(input_: object) -> list[dict[str, Any]]:
    """Responses ``input`` (a string or a list of items) as GenAI input messages."""
    if isinstance(input_, str):
        return [{"role": "user", "parts": _text_parts(input_)}]
    result: list[dict[str, Any]] = []
    if isinstance(input_, Iterable) and not isinstance(input_, bytes | Mapping):
        for item in input_:  # pyright: ignore[reportUnknownVariableType]
            role = field(item, "role")
            if role is not None:
                result.append({"role": role, "parts": _text_parts(field(item, "content"))})
            elif field(item, "type") == "function_call_output":
                result.append(
                    {
                        "role": "tool",
                        "parts": [
                            {
                                "type": "tool_call_response",
                                "id": field(item, "call_id"),
                                "response": field(item, "output"),
                            }
                        ],
                    }
                )
    return result


def prompt_input(prompt: object) -> list[dict[str, Any]]:
    """Legacy Completions ``prompt`` as GenAI input messages."""
    if isinstance(prompt, str):
        return [{"role": "user", "parts": _text_parts(prompt)}]
    if isinstance(prompt, list) and all(isinstance(p, str) for p in prompt):  # pyright: ignore[reportUnknownVariableType]
        return [{"role": "user", "parts": _text_parts(p)} for p in prompt]  # pyright: ignore[reportUnknownVariableType]
    return []


def output_message(
    text: str | None, finish_reason: object, tool_calls: object = None
) -> dict[str, Any]:
    parts = _text_parts(text) + _tool_calls(tool_calls)
    return {"role": "assistant", "parts": parts, "finish_reason": finish_reason or ""}


def system_instructions(instructions: object) -> list[dict[str, Any]]:
    return _text_parts(instructions) if isinstance(instructions, str) else []


def to_json(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, default=str, separators=(",", ":"))
