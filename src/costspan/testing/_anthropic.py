"""Anthropic's Messages API on the local server: billing, prompt caching, bodies and stream events.

Point ``anthropic.Anthropic(base_url=server.anthropic_base_url)`` at the server; the client
posts to ``/v1/messages``.

**Tokens.** Claude's tokenizer counts more than o200k: text (system, message text, tool
definitions as JSON, ``tool_use`` input, ``tool_result`` content, thinking) is the raw tiktoken
count times the model family's scale (``_billing.TOKENIZER_SCALES``: 1.25 for ``claude-*``;
``x-costspan-test-input-scale`` overrides it), rounded up per block. Each message adds
:data:`MESSAGE_OVERHEAD` tokens and each request :data:`REQUEST_OVERHEAD`. Images cost
``_media.anthropic_image_tokens`` (a URL image is billed as 2048x2048, scaled down to Anthropic's
limits), documents :data:`_billing.FILE_TOKENS`. With ``tools``, Anthropic's hidden tool-use
system prompt is added (:func:`tool_system_tokens`, from its "Tool use pricing" table).

**Prompt caching.** A block carrying ``cache_control: {"type": "ephemeral"}`` is a breakpoint
(at most 4); the prefix up to it (tools, then system, then messages) is written to the cache when
it is at least the model's minimum (:func:`min_cacheable`). A later request whose prefix up to a
breakpoint, or up to any of the 20 blocks before one, is the same (same model) reads it. A
top-level ``cache_control`` (automatic caching) marks the last block. Usage
then splits the input three ways, as Anthropic reports it: ``cache_read_input_tokens`` (read),
``cache_creation_input_tokens`` (written now) and ``input_tokens``, which EXCLUDES both (unlike
OpenAI's ``prompt_tokens``, which includes its cached tokens).

**Output.** ``max_tokens`` is required (a 400 without it) and bounds the answer
(``stop_reason: max_tokens``). A ``tool_choice`` of type ``any`` or ``tool`` makes the answer a
``tool_use`` block whose input satisfies the tool's ``input_schema`` (``stop_reason: tool_use``).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from costspan.testing import _billing as B
from costspan.testing import _media as media
from costspan.testing import _replies as R
from costspan.testing._errors import anthropic_error
from costspan.testing._json import obj, objs, text_of

MESSAGE_OVERHEAD = 3
REQUEST_OVERHEAD = 4
MAX_BREAKPOINTS = 4
LOOKBACK_BLOCKS = 20

# (pattern, tokens with tool_choice auto/none, tokens with tool_choice any/tool): Anthropic's
# "Tool use system prompt token count" table; newer models than those listed use 346 / 313.
_TOOL_SYSTEM_PROMPTS: tuple[tuple[re.Pattern[str], int, int], ...] = (
    (re.compile(r"^claude-3-opus"), 530, 281),
    (re.compile(r"^claude-3-sonnet"), 159, 235),
    (re.compile(r"^claude-3(-5)?-haiku"), 264, 340),
)
_TOOL_SYSTEM_DEFAULT = (346, 313)

# The minimum cacheable prompt (Anthropic's prompt caching docs); 1024 for models not listed.
_MIN_CACHEABLE: tuple[tuple[re.Pattern[str], int], ...] = (
    (re.compile(r"^claude-(opus-4-[5-9]|haiku-4)"), 4096),
    (re.compile(r"^claude-sonnet-4-6"), 2048),
    (re.compile(r"^claude-3(-5)?-haiku"), 2048),
)


def tool_system_tokens(model: str, tool_choice: object) -> int:
    forced = obj(tool_choice).get("type") in ("any", "tool")
    auto, any_ = next(
        ((a, b) for pattern, a, b in _TOOL_SYSTEM_PROMPTS if pattern.match(model)),
        _TOOL_SYSTEM_DEFAULT,
    )
    return any_ if forced else auto


def min_cacheable(model: str) -> int:
    return next((n for pattern, n in _MIN_CACHEABLE if pattern.match(model)), 1024)


@dataclass
class Block:
    """One cacheable unit of the prompt, in the order Anthropic builds the prefix."""

    tokens: int
    content: object
    breakpoint: bool = False


@dataclass
class MessagesUsage:
    input_tokens: int
    cache_read: int
    cache_creation: int
    cache_ttl: str = "5m"
    blocks: list[Block] = field(default_factory=list[Block])


class PromptCache:
    """Prefixes written to Anthropic's cache (per model), for later requests to read."""

    def __init__(self) -> None:
        self._written: set[str] = set()
        self._lock = threading.Lock()

    def account(
        self, model: str, blocks: list[Block], extra_input: int, *, write: bool = True
    ) -> MessagesUsage:
        digests: list[str] = []
        running = hashlib.sha256(model.encode())
        for block in blocks:
            running.update(json.dumps(block.content, sort_keys=True, default=str).encode())
            digests.append(running.copy().hexdigest())
        totals: list[int] = []
        total = 0
        for block in blocks:
            total += block.tokens
            totals.append(total)
        points = [i for i, b in enumerate(blocks) if b.breakpoint]
        minimum = min_cacheable(model)
        with self._lock:
            read_at = -1
            for point in points:
                for j in range(point, max(-1, point - LOOKBACK_BLOCKS - 1), -1):
                    if digests[j] in self._written:
                        read_at = max(read_at, j)
                        break
            read = totals[read_at] if read_at >= 0 else 0
            writable = [p for p in points if p > read_at and totals[p] >= minimum]
            creation = totals[writable[-1]] - read if writable else 0
            if write:
                self._written.update(digests[p] for p in writable)
        return MessagesUsage(
            input_tokens=total - read - creation + extra_input,
            cache_read=read,
            cache_creation=creation,
            blocks=blocks,
        )


def _scaled_text(text: object, model: str, scale: Decimal) -> int:
    return B.scaled(B.count(text, model), scale)


def _image_block_tokens(block: Mapping[str, Any]) -> int:
    source = obj(block.get("source"))
    if source.get("type") == "base64":
        try:
            width, height = media.image_size(media.decode_base64(str(source.get("data", ""))))
        except media.MediaError as err:
            raise anthropic_error(400, f"messages: Could not process image: {err}") from err
        return media.anthropic_image_tokens(width, height)
    return media.anthropic_image_tokens(*media.LINKED_IMAGE_SIZE)


def content_block_tokens(block: Mapping[str, Any], model: str, scale: Decimal) -> int:
    """Tokens of one content block of a message (or of the system prompt)."""
    kind = block.get("type")
    if kind == "text":
        return _scaled_text(block.get("text"), model, scale)
    if kind == "image":
        return _image_block_tokens(block)
    if kind == "document":
        source = obj(block.get("source"))
        if source.get("type") == "text":
            return _scaled_text(source.get("data"), model, scale)
        return B.FILE_TOKENS
    if kind == "tool_use":
        text = f"{block.get('name', '')}{json.dumps(block.get('input', {}))}"
        return MESSAGE_OVERHEAD + _scaled_text(text, model, scale)
    if kind == "tool_result":
        inner = block.get("content")
        if isinstance(inner, str):
            return MESSAGE_OVERHEAD + _scaled_text(inner, model, scale)
        return MESSAGE_OVERHEAD + sum(content_block_tokens(b, model, scale) for b in objs(inner))
    if kind == "thinking":
        return _scaled_text(block.get("thinking"), model, scale)
    return _scaled_text(json.dumps(block), model, scale)


def _blocks_of(content: object) -> list[Mapping[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return objs(content)


def prompt_blocks(body: Mapping[str, Any], model: str, scale: Decimal) -> list[Block]:
    """The prompt as cacheable blocks: tools, then system, then each message's content."""
    blocks: list[Block] = []
    tools = objs(body.get("tools"))
    if tools:
        blocks.append(Block(tool_system_tokens(model, body.get("tool_choice")), "tool-system"))
    for tool in tools:
        definition = {k: v for k, v in tool.items() if k != "cache_control"}
        tokens = _scaled_text(json.dumps(definition), model, scale)
        blocks.append(Block(tokens, definition, "cache_control" in tool))
    for block in _blocks_of(body.get("system")):
        blocks.append(_block(block, model, scale, role="system"))
    for message in objs(body.get("messages")):
        role = str(message.get("role", "user"))
        content = _blocks_of(message.get("content"))
        if not content:
            blocks.append(Block(MESSAGE_OVERHEAD, {"role": role}))
        for index, block in enumerate(content):
            made = _block(block, model, scale, role=role)
            if index == 0:
                made.tokens += MESSAGE_OVERHEAD
            blocks.append(made)
    if blocks:
        blocks[0].tokens += REQUEST_OVERHEAD
        if obj(body.get("cache_control")):
            # Automatic caching: a top-level cache_control marks the last cacheable block.
            blocks[-1].breakpoint = True
    return blocks


def _block(block: Mapping[str, Any], model: str, scale: Decimal, *, role: str) -> Block:
    content = {k: v for k, v in block.items() if k != "cache_control"}
    return Block(
        content_block_tokens(block, model, scale),
        {"role": role, **content},
        "cache_control" in block,
    )


def validate(body: Mapping[str, Any]) -> str:
    """The model of a valid Messages request; Anthropic's 400 for an invalid one."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise anthropic_error(400, "model: Field required")
    if "max_tokens" not in body:
        raise anthropic_error(400, "max_tokens: Field required")
    cap = body.get("max_tokens")
    if not isinstance(cap, int) or isinstance(cap, bool) or cap < 1:
        raise anthropic_error(400, "max_tokens: Input should be greater than or equal to 1")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise anthropic_error(400, "messages: at least one message is required")
    return model


def breakpoints_checked(blocks: list[Block]) -> None:
    found = sum(1 for b in blocks if b.breakpoint)
    if found > MAX_BREAKPOINTS:
        raise anthropic_error(
            400, f"A maximum of {MAX_BREAKPOINTS} blocks with cache_control may be provided. "
            f"Found {found}."
        )  # fmt: skip


@dataclass
class ToolCall:
    id: str
    name: str
    input: object


@dataclass
class MessagesReply:
    """A Messages answer: its content blocks, stop reason and usage."""

    model: str
    message_id: str
    text: str | None
    tool_call: ToolCall | None
    stop_reason: str
    output_tokens: int
    usage: MessagesUsage
    reported_cost: float | None = None


def forced_tool(body: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The tool a ``tool_choice`` of type ``any``/``tool`` forces, if any."""
    choice = obj(body.get("tool_choice"))
    tools = objs(body.get("tools"))
    if choice.get("type") == "tool":
        return next((t for t in tools if t.get("name") == choice.get("name")), None)
    if choice.get("type") == "any" and tools:
        return tools[0]
    return None


def make_reply(
    model: str,
    body: Mapping[str, Any],
    usage: MessagesUsage,
    *,
    length: int | None,
    output_scale: Decimal,
) -> MessagesReply:
    cap = int(body["max_tokens"])
    tool = forced_tool(body)
    message_id = R.new_id("msg_")
    if tool is not None:
        arguments = json.loads(R.example_json(obj(tool.get("input_schema"))))
        name = str(tool.get("name", ""))
        tokens = B.scaled(B.count(name + json.dumps(arguments), model), output_scale)
        tokens += MESSAGE_OVERHEAD
        if tokens > cap:
            return MessagesReply(model, message_id, "", None, "max_tokens", cap, usage)
        call = ToolCall(R.new_id("toolu_"), name, arguments)
        return MessagesReply(model, message_id, None, call, "tool_use", tokens, usage)
    messages = objs(body.get("messages"))
    last = text_of(messages[-1].get("content")) if messages else ""
    generated = R.make_reply(
        model,
        prompt_text=last,
        prompt_tokens=usage.input_tokens,
        cached_tokens=0,
        cap=cap,
        length=length,
        reasoning=0,
        output_scale=output_scale,
    )
    stop = "end_turn" if generated.finish_reasons[0] == "stop" else "max_tokens"
    return MessagesReply(
        model, message_id, generated.texts[0], None, stop, generated.completion_tokens, usage
    )


def _usage(reply: MessagesReply) -> dict[str, Any]:
    usage = reply.usage
    one_hour = usage.cache_creation if usage.cache_ttl == "1h" else 0
    body: dict[str, Any] = {
        "input_tokens": usage.input_tokens,
        "cache_creation_input_tokens": usage.cache_creation,
        "cache_read_input_tokens": usage.cache_read,
        "cache_creation": {
            "ephemeral_5m_input_tokens": usage.cache_creation - one_hour,
            "ephemeral_1h_input_tokens": one_hour,
        },
        "output_tokens": reply.output_tokens,
        "service_tier": "standard",
    }
    if reply.reported_cost is not None:
        body["cost"] = reply.reported_cost
    return body


def _content(reply: MessagesReply) -> list[dict[str, Any]]:
    if reply.tool_call is not None:
        call = reply.tool_call
        return [{"type": "tool_use", "id": call.id, "name": call.name, "input": call.input}]
    if reply.text:
        return [{"type": "text", "text": reply.text}]
    return []


def message_body(reply: MessagesReply) -> dict[str, Any]:
    return {
        "id": reply.message_id,
        "type": "message",
        "role": "assistant",
        "model": reply.model,
        "content": _content(reply),
        "stop_reason": reply.stop_reason,
        "stop_sequence": None,
        "usage": _usage(reply),
    }


def message_events(reply: MessagesReply) -> Iterator[dict[str, Any]]:
    """The SSE events of a streamed Messages answer, in the order Anthropic sends them."""
    start: dict[str, Any] = {**message_body(reply), "content": [], "stop_reason": None}
    start["usage"] = {**_usage(reply), "output_tokens": 1}
    yield {"type": "message_start", "message": start}
    for index, block in enumerate(_content(reply)):
        if block["type"] == "tool_use":
            opening: dict[str, Any] = {**block, "input": {}}
            yield {"type": "content_block_start", "index": index, "content_block": opening}
            yield {"type": "ping"}
            arguments = json.dumps(block["input"])
            for at in range(0, len(arguments), 16):
                yield {"type": "content_block_delta", "index": index,
                       "delta": {"type": "input_json_delta",
                                 "partial_json": arguments[at : at + 16]}}  # fmt: skip
        else:
            yield {"type": "content_block_start", "index": index,
                   "content_block": {"type": "text", "text": ""}}  # fmt: skip
            yield {"type": "ping"}
            for piece in R.pieces(block["text"]):
                yield {"type": "content_block_delta", "index": index,
                       "delta": {"type": "text_delta", "text": piece}}  # fmt: skip
        yield {"type": "content_block_stop", "index": index}
    yield {
        "type": "message_delta",
        "delta": {"stop_reason": reply.stop_reason, "stop_sequence": None},
        "usage": _usage(reply),
    }
    yield {"type": "message_stop"}
