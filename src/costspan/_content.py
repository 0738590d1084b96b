"""Opt-in message content in the GenAI JSON shapes (``gen_ai.input.messages`` and friends).

Only used when ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`` asks for span content. The
shapes follow the v1.41.0 JSON schemas: a message is ``{"role", "parts": [...]}`` and a part is
``{"type": "text", "content": ...}``, ``{"type": "tool_call", ...}`` or
``{"type": "tool_call_response", ...}``. Non-text parts keep only their type: costspan never
copies images or audio into telemetry.
"""

from __future__ import annotations

import json
from typing import Any

from costspan._usage import field, items

Part = dict[str, Any]
Message = dict[str, Any]


def _text_parts(content: object) -> list[Part]:
    if isinstance(content, str):
        return [{"type": "text", "content": content}]
    parts: list[Part] = []
    for part in items(content):
        text = field(part, "text")
        kind = field(part, "type")
        if isinstance(text, str):
            parts.append({"type": "text", "content": text})
        elif isinstance(kind, str):
            parts.append({"type": kind})
    return parts


def _tool_calls(calls: object) -> list[Part]:
    return [
        {
            "type": "tool_call",
            "id": field(call, "id"),
            "name": field(field(call, "function"), "name"),
            "arguments": field(field(call, "function"), "arguments"),
        }
        for call in items(calls)
    ]


def _tool_response(call_id: object, response: object) -> Message:
    return {
        "role": "tool",
        "parts": [{"type": "tool_call_response", "id": call_id, "response": response}],
    }


def chat_input(messages: object) -> list[Message]:
    """Chat Completions ``messages`` as GenAI input messages."""
    result: list[Message] = []
    for message in items(messages):
        role = field(message, "role")
        if role == "tool":
            result.append(_tool_response(field(message, "tool_call_id"), field(message, "content")))
        else:
            parts = _text_parts(field(message, "content")) + _tool_calls(
                field(message, "tool_calls")
            )
            result.append({"role": role, "parts": parts})
    return result


def responses_input(input_: object) -> list[Message]:
    """Responses ``input`` (a string or a list of items) as GenAI input messages."""
    if isinstance(input_, str):
        return [{"role": "user", "parts": _text_parts(input_)}]
    result: list[Message] = []
    for item in items(input_):
        role = field(item, "role")
        if role is not None:
            result.append({"role": role, "parts": _text_parts(field(item, "content"))})
        elif field(item, "type") == "function_call_output":
            result.append(_tool_response(field(item, "call_id"), field(item, "output")))
    return result


def prompt_input(prompt: object) -> list[Message]:
    """Legacy Completions ``prompt`` (a string or a list of strings) as GenAI input messages."""
    prompts = [prompt] if isinstance(prompt, str) else items(prompt)
    return [{"role": "user", "parts": _text_parts(p)} for p in prompts if isinstance(p, str)]


def output_message(text: object, finish_reason: object, tool_calls: object = None) -> Message:
    parts = _text_parts(text) + _tool_calls(tool_calls)
    return {"role": "assistant", "parts": parts, "finish_reason": finish_reason or ""}


def system_instructions(instructions: object) -> list[Part]:
    return _text_parts(instructions) if isinstance(instructions, str) else []


def to_json(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, default=str, separators=(",", ":"))
