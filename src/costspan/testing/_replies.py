"""Answers of the local OpenAI-compatible server, and their bodies, shaped like OpenAI's own.

What a prompt costs is ``_billing``'s business; this module generates the answer (its length
bounded by the request's cap, reasoning included) and writes the Chat, legacy Completions,
Responses and Embeddings bodies and stream events. Models of the o-series and gpt-5 family
"reason" (64 reasoning tokens inside the output count, spent before any visible text), a repeated
prompt of 1024 or more tokens reads from the cache in 128-token steps as OpenAI's prompt caching
does, and response model ids are dated the way OpenAI dates them.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
import struct
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, cast

from costspan import _tokens
from costspan.testing import _billing
from costspan.testing._json import obj

DATED_MODELS: dict[str, str] = {
    "gpt-4o": "gpt-4o-2024-08-06",
    "gpt-4o-mini": "gpt-4o-mini-2024-07-18",
    "gpt-4.1": "gpt-4.1-2025-04-14",
    "gpt-4.1-mini": "gpt-4.1-mini-2025-04-14",
    "gpt-4.1-nano": "gpt-4.1-nano-2025-04-14",
    "o1": "o1-2024-12-17",
    "o3": "o3-2025-04-16",
    "o3-mini": "o3-mini-2025-01-31",
    "o4-mini": "o4-mini-2025-04-16",
    "gpt-5": "gpt-5-2025-08-07",
    "gpt-5-mini": "gpt-5-mini-2025-08-07",
    "gpt-5-nano": "gpt-5-nano-2025-08-07",
    "gpt-3.5-turbo-instruct": "gpt-3.5-turbo-instruct",
}

REASONING_TOKENS = 64
CACHE_MIN_TOKENS = 1024
CACHE_STEP = 128
DEFAULT_EMBEDDING_DIMENSIONS = 1536


def count_tokens(text: str, model: str) -> int:
    """Tokens of ``text`` with ``model``'s tokenizer."""
    return _tokens.count_text(text, model)


def chat_prompt_tokens(messages: object, model: str) -> int:
    """Input tokens of chat ``messages`` as the server bills them (for benchmarks/overhead.py)."""
    prompt = _billing.chat_prompt({"messages": messages}, model)
    return _billing.billed(prompt, model, {})


def is_reasoning_model(model: str) -> bool:
    return bool(re.match(r"^(o\d|gpt-5)", model))


def dated(model: str) -> str:
    return DATED_MODELS.get(model, model)


def _example_for(schema: Mapping[str, Any], defs: Mapping[str, Any], depth: int = 0) -> Any:
    """A value that satisfies a (pydantic-generated) JSON schema: what `.parse()` will accept."""
    if depth > 8:
        return None
    if "$ref" in schema:
        return _example_for(obj(defs.get(str(schema["$ref"]).rsplit("/", 1)[-1])), defs, depth + 1)
    for key in ("anyOf", "oneOf", "allOf"):
        if schema.get(key):
            return _example_for(obj(schema[key][0]), defs, depth + 1)
    if schema.get("enum"):
        return schema["enum"][0]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in cast("list[object]", kind) if k != "null"), "null")
    if kind == "object":
        props = obj(schema.get("properties"))
        return {name: _example_for(obj(sub), defs, depth + 1) for name, sub in props.items()}
    if kind == "array":
        return [_example_for(obj(schema.get("items")), defs, depth + 1)]
    return {"string": "example", "integer": 1, "number": 1.5, "boolean": True}.get(str(kind))


def structured_reply(schema_holder: Mapping[str, Any]) -> str:
    schema = obj(schema_holder.get("schema", schema_holder))
    return example_json(schema)


def example_json(schema: Mapping[str, Any]) -> str:
    """JSON text that satisfies ``schema`` (tool arguments, structured output)."""
    return json.dumps(_example_for(schema, obj(schema.get("$defs") or schema.get("definitions"))))


@dataclass
class Generation:
    """What the model "generated" for a call: its texts, and its usage in OpenAI's terms."""

    texts: list[str]
    finish_reasons: list[str]
    prompt_tokens: int
    completion_tokens: int
    reasoning_tokens: int
    cached_tokens: int
    audio_tokens: int = 0
    reported_cost: float | None = None


class PromptCache:
    """Remembers prompts so that a repeated long prompt reports cached tokens."""

    def __init__(self) -> None:
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def cached_tokens(self, key: object, prompt_tokens: int) -> int:
        digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()
        with self._lock:
            seen = digest in self._seen
            self._seen.add(digest)
        if not seen or prompt_tokens < CACHE_MIN_TOKENS:
            return 0
        return (prompt_tokens // CACHE_STEP) * CACHE_STEP


def make_reply(
    model: str,
    *,
    prompt_text: str,
    prompt_tokens: int,
    cached_tokens: int,
    cap: int | None,
    choices: int = 1,
    structured: str | None = None,
    length: int | None = None,
    reasoning: int | None = None,
    output_scale: Decimal = Decimal(1),
    generated: int | None = None,
) -> Generation:
    """The answer to a call, its length bounded by ``cap`` (output tokens, reasoning included).

    Each of ``choices`` answers is generated and billed on its own; ``generated`` (legacy
    ``best_of``) bills more completions than are returned. Reasoning tokens (``reasoning``, by
    default 64 for reasoning models) are spent first: when they fill the cap, the visible text is
    empty and the finish reason is ``length``. Visible text is measured with the model's
    tokenizer times ``output_scale`` (rounded up), the way a provider with another tokenizer
    would count the same text.
    """
    words = prompt_text.split()
    topic = " ".join(words[-8:]) if words else "nothing in particular"
    base = (
        structured
        or f"Here is a short answer about {topic}. It comes from the costspan test server."
    )
    enc = _tokens.encoder(_tokens.encoding_name(model))
    if length is not None and structured is None:
        # A reply of about `length` billed tokens (then cut by the cap like any other reply).
        target = max(0, int(Decimal(length) / output_scale))
        sentence = " The test server keeps talking to make a long answer."
        repeats = target // max(len(enc.encode_ordinary(sentence)), 1) + 1
        base = enc.decode(enc.encode_ordinary(base + sentence * repeats)[:target])
    per_choice = (
        (REASONING_TOKENS if is_reasoning_model(model) else 0) if reasoning is None else reasoning
    )
    ids = enc.encode_ordinary(base)
    returned = max(1, choices)
    texts: list[str] = []
    reasons: list[str] = []
    completion = 0
    reasoning_total = 0
    for index in range(max(returned, generated or 0)):
        text, reason = base, "stop"
        thought = per_choice if cap is None else min(per_choice, cap)
        tokens = thought + math.ceil(Decimal(len(ids)) * output_scale)
        if cap is not None and tokens > cap:
            # Out of room: reasoning is spent first, then the visible text is cut.
            visible = int(Decimal(cap - thought) / output_scale)
            text = enc.decode(ids[:visible])
            reason, tokens = "length", cap
        completion += tokens
        reasoning_total += thought
        if index < returned:
            texts.append(text)
            reasons.append(reason)
    return Generation(
        texts=texts,
        finish_reasons=reasons,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion,
        reasoning_tokens=reasoning_total,
        cached_tokens=cached_tokens,
    )


def _chat_usage(reply: Generation) -> dict[str, Any]:
    return _cost(reply) | {
        "prompt_tokens": reply.prompt_tokens,
        "completion_tokens": reply.completion_tokens,
        "total_tokens": reply.prompt_tokens + reply.completion_tokens,
        "prompt_tokens_details": {
            "cached_tokens": reply.cached_tokens,
            "audio_tokens": reply.audio_tokens,
        },
        "completion_tokens_details": {
            "reasoning_tokens": reply.reasoning_tokens,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _cost(reply: Generation) -> dict[str, Any]:
    return {} if reply.reported_cost is None else {"cost": reply.reported_cost}


def _responses_usage(reply: Generation) -> dict[str, Any]:
    return _cost(reply) | {
        "input_tokens": reply.prompt_tokens,
        "input_tokens_details": {"cached_tokens": reply.cached_tokens, "cache_write_tokens": 0},
        "output_tokens": reply.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": reply.reasoning_tokens},
        "total_tokens": reply.prompt_tokens + reply.completion_tokens,
    }


def _fingerprint(model: str) -> str:
    return "fp_" + hashlib.sha1(model.encode()).hexdigest()[:10]


def new_id(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:24]}"


# -- Chat Completions ---------------------------------------------------------------------------
def chat_completion(model: str, reply: Generation, service_tier: str) -> dict[str, Any]:
    return {
        "id": new_id("chatcmpl-"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": dated(model),
        "choices": [
            {
                "index": i,
                "message": {
                    "role": "assistant",
                    "content": text,
                    "refusal": None,
                    "annotations": [],
                },
                "logprobs": None,
                "finish_reason": reason,
            }
            for i, (text, reason) in enumerate(zip(reply.texts, reply.finish_reasons, strict=True))
        ],
        "usage": _chat_usage(reply),
        "service_tier": service_tier,
        "system_fingerprint": _fingerprint(model),
    }


def chat_chunks(
    model: str, reply: Generation, service_tier: str, include_usage: bool
) -> Iterator[dict[str, Any]]:
    common = {
        "id": new_id("chatcmpl-"),
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": dated(model),
        "service_tier": service_tier,
        "system_fingerprint": _fingerprint(model),
    }
    extra = {"usage": None} if include_usage else {}
    for i in range(len(reply.texts)):
        yield {
            **common,
            "choices": [
                {
                    "index": i,
                    "delta": {"role": "assistant", "content": "", "refusal": None},
                    "logprobs": None,
                    "finish_reason": None,
                }
            ],
            **extra,
        }
    for i, text in enumerate(reply.texts):
        for piece in pieces(text):
            yield {
                **common,
                "choices": [
                    {
                        "index": i,
                        "delta": {"content": piece},
                        "logprobs": None,
                        "finish_reason": None,
                    }
                ],
                **extra,
            }
    for i, reason in enumerate(reply.finish_reasons):
        yield {
            **common,
            "choices": [{"index": i, "delta": {}, "logprobs": None, "finish_reason": reason}],
            **extra,
        }
    if include_usage:
        yield {**common, "choices": [], "usage": _chat_usage(reply)}


def pieces(text: str) -> list[str]:
    # Stream word by word, keeping the spaces, as providers stream token by token.
    return re.findall(r"\S+\s*|\s+", text)


# -- legacy Completions -------------------------------------------------------------------------
def text_completion(model: str, reply: Generation) -> dict[str, Any]:
    usage = _chat_usage(reply)
    del usage["prompt_tokens_details"], usage["completion_tokens_details"]
    return {
        "id": new_id("cmpl-"),
        "object": "text_completion",
        "created": int(time.time()),
        "model": dated(model),
        "choices": [
            {"text": text, "index": i, "logprobs": None, "finish_reason": reason}
            for i, (text, reason) in enumerate(zip(reply.texts, reply.finish_reasons, strict=True))
        ],
        "usage": usage,
    }


def text_completion_chunks(
    model: str, reply: Generation, include_usage: bool
) -> Iterator[dict[str, Any]]:
    full = text_completion(model, reply)
    common = {k: full[k] for k in ("id", "object", "created", "model")}
    for i, text in enumerate(reply.texts):
        for piece in pieces(text):
            yield {
                **common,
                "choices": [{"text": piece, "index": i, "logprobs": None, "finish_reason": None}],
            }
    for i, reason in enumerate(reply.finish_reasons):
        yield {
            **common,
            "choices": [{"text": "", "index": i, "logprobs": None, "finish_reason": reason}],
        }
    if include_usage:
        yield {**common, "choices": [], "usage": full["usage"]}


# -- Responses ----------------------------------------------------------------------------------
def response_object(
    model: str,
    reply: Generation | None,
    *,
    response_id: str,
    service_tier: str,
    request: Mapping[str, Any],
    message_id: str | None = None,
    reasoning_id: str | None = None,
) -> dict[str, Any]:
    """A Responses API ``response``; ``reply=None`` gives the in-progress shape.

    A response cut by ``max_output_tokens`` is ``incomplete``; when reasoning used the whole cap
    it has no message at all, as OpenAI's has not.
    """
    output: list[dict[str, Any]] = []
    status = "in_progress"
    incomplete = None
    if reply is not None:
        cut = reply.finish_reasons[0] != "stop"
        if reply.reasoning_tokens:
            output.append({"type": "reasoning", "id": reasoning_id or new_id("rs_"),
                           "summary": []})  # fmt: skip
        if reply.texts[0] or not cut:
            output.append(
                message_item(reply.texts[0], "incomplete" if cut else "completed", message_id)
            )
        status = "incomplete" if cut else "completed"
        if cut:
            incomplete = {"reason": "max_output_tokens"}
    conversation = request.get("conversation")
    return {
        "id": response_id,
        "object": "response",
        "created_at": int(time.time()),
        "status": status,
        "background": False,
        "error": None,
        "incomplete_details": incomplete,
        "instructions": request.get("instructions"),
        "max_output_tokens": request.get("max_output_tokens"),
        "model": dated(model),
        "output": output,
        "parallel_tool_calls": True,
        "previous_response_id": request.get("previous_response_id"),
        "conversation": {"id": conversation} if isinstance(conversation, str) else conversation,
        "reasoning": {"effort": "medium", "summary": None} if is_reasoning_model(model) else None,
        "service_tier": service_tier,
        "store": True,
        "temperature": request.get("temperature", 1.0),
        "text": request.get("text") or {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": request.get("top_p", 1.0),
        "truncation": "disabled",
        "usage": _responses_usage(reply) if reply is not None else None,
        "metadata": {},
    }


def message_item(text: str, status: str, item_id: str | None = None) -> dict[str, Any]:
    return {
        "type": "message",
        "id": item_id or new_id("msg_"),
        "status": status,
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]
        if text or status == "completed"
        else [],
    }


def response_events(
    model: str,
    reply: Generation,
    *,
    response_id: str,
    service_tier: str,
    request: Mapping[str, Any],
    message_id: str | None = None,
) -> Iterator[dict[str, Any]]:
    seq = iter(range(1_000_000))
    start = response_object(
        model, None, response_id=response_id, service_tier=service_tier, request=request
    )
    ids = {"message_id": message_id or new_id("msg_"), "reasoning_id": new_id("rs_")}
    yield {"type": "response.created", "sequence_number": next(seq), "response": start}
    yield {"type": "response.in_progress", "sequence_number": next(seq), "response": start}
    final = response_object(
        model, reply, response_id=response_id, service_tier=service_tier, request=request, **ids
    )
    for index, item in enumerate(final["output"]):
        if item["type"] != "message":
            yield {"type": "response.output_item.added", "sequence_number": next(seq),
                   "output_index": index, "item": item}  # fmt: skip
            yield {"type": "response.output_item.done", "sequence_number": next(seq),
                   "output_index": index, "item": item}  # fmt: skip
            continue
        text = reply.texts[0]
        empty_part: dict[str, Any] = {
            "type": "output_text",
            "text": "",
            "annotations": [],
            "logprobs": [],
        }
        in_progress = message_item("", "in_progress", item["id"])
        yield {"type": "response.output_item.added", "sequence_number": next(seq),
               "output_index": index, "item": in_progress}  # fmt: skip
        yield {"type": "response.content_part.added", "sequence_number": next(seq),
               "item_id": item["id"], "output_index": index, "content_index": 0,
               "part": empty_part}  # fmt: skip
        for piece in pieces(text):
            yield {"type": "response.output_text.delta", "sequence_number": next(seq),
                   "item_id": item["id"], "output_index": index, "content_index": 0,
                   "delta": piece, "logprobs": []}  # fmt: skip
        yield {"type": "response.output_text.done", "sequence_number": next(seq),
               "item_id": item["id"], "output_index": index, "content_index": 0,
               "text": text, "logprobs": []}  # fmt: skip
        yield {"type": "response.content_part.done", "sequence_number": next(seq),
               "item_id": item["id"], "output_index": index, "content_index": 0,
               "part": item["content"][0]}  # fmt: skip
        yield {"type": "response.output_item.done", "sequence_number": next(seq),
               "output_index": index, "item": item}  # fmt: skip
    kind = "response.completed" if final["status"] == "completed" else "response.incomplete"
    yield {"type": kind, "sequence_number": next(seq), "response": final}


# -- Embeddings ---------------------------------------------------------------------------------
def embedding_vector(text: str, dimensions: int) -> list[float]:
    """A deterministic unit-ish vector derived from the text."""
    seed = hashlib.sha256(text.encode()).digest()
    values: list[float] = []
    counter = 0
    while len(values) < dimensions:
        block = hashlib.sha256(seed + counter.to_bytes(4, "little")).digest()
        values.extend((b - 127.5) / 127.5 for b in block)
        counter += 1
    return values[:dimensions]


def token_array_length(value: object) -> int | None:
    """The tokens of an input given as token ids (a list of ints, or a list of such lists):
    one per id; None for text."""
    if not isinstance(value, list) or not value:
        return None
    values = cast("list[object]", value)
    if all(isinstance(v, int) for v in values):
        return len(values)
    if all(isinstance(v, list) for v in values):
        rows = cast("list[list[object]]", values)
        if all(isinstance(v, int) for row in rows for v in row):
            return sum(len(row) for row in rows)
    return None


def embeddings(
    model: str,
    inputs: list[str],
    dimensions: int,
    encoding_format: str,
    tokens: int | None = None,
) -> dict[str, Any]:
    """``tokens``: the input's count when it came as token ids (else counted from the text)."""
    data: list[dict[str, Any]] = []
    for i, text in enumerate(inputs):
        vector = embedding_vector(text, dimensions)
        encoded: object = vector
        if encoding_format == "base64":
            encoded = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
        data.append({"object": "embedding", "index": i, "embedding": encoded})
    if tokens is None:
        tokens = sum(count_tokens(t, model) for t in inputs)
    return {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
