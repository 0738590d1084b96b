"""Everything a request is billed as input, counted offline: an upper bound, part by part.

Providers bill more than the text of the messages. This module counts, with the model's
tokenizer (:mod:`costspan._tokens`):

- messages: per message 3 tokens plus role, name (+1) and every text part (the OpenAI cookbook's
  chat formula), plus 3 to prime the reply;
- tool and function definitions: their JSON text plus a per-definition and a per-request
  overhead (OpenAI renders them into a hidden prompt whose tokens stay under their JSON's);
  ``tool_choice`` naming a function; assistant ``tool_calls`` and legacy ``function_call`` in the
  history (name, arguments and overhead) and tool results;
- structured-output schemas (``response_format``, Responses ``text.format``): their JSON text
  plus overhead;
- images (:mod:`costspan._media`: OpenAI's tile and patch formulas, real sizes from ``data:``
  URLs, the model's worst case when the size is unknown) and audio (by its length);
- Responses input items of every type (messages, function calls and outputs, reasoning items by
  the length of their encrypted content, others by their JSON), and ``instructions``;
- legacy-completion prompts and embedding inputs, as text or as token arrays.

Some input cannot be counted offline: a file (a PDF, a ``file_id``), an ``item_reference``, a
``previous_response_id`` or ``conversation`` (the provider adds the stored history). Such a
request is marked ``unknown``; admission then bounds its input by the model's context window
(see :mod:`costspan._estimate`), never by zero.
"""

from __future__ import annotations

import contextlib
import json
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from costspan._coerce import given
from costspan._media import audio_tokens, data_url_size, image_tokens
from costspan._tokens import counter
from costspan._usage import field, items

TOKENS_PER_MESSAGE: Final = 3
TOKENS_PER_NAME: Final = 1
REPLY_PRIMING_TOKENS: Final = 3
TOOLS_OVERHEAD: Final = 16
"""Per request with tools: the hidden prompt's frame ("namespace functions", separators)."""
TOOL_OVERHEAD: Final = 12
"""Per tool definition, on top of its JSON text."""
SCHEMA_OVERHEAD: Final = 24
"""Per structured-output schema, on top of its JSON text ("# Response Formats", its name)."""
CALL_OVERHEAD: Final = 8
"""Per tool call or tool result in the history, on top of its name, arguments or output."""


@dataclass(frozen=True, slots=True)
class Counted:
    """The input tokens of a request, and what in it could not be counted offline."""

    tokens: int
    unknown: tuple[str, ...] = ()


class _Counter:
    """Accumulates one request's tokens for one model."""

    __slots__ = ("count", "model", "tokens", "unknown")

    def __init__(self, model: str) -> None:
        self.model = model
        self.count = counter(model)  # memoised per text: resent history is not counted again
        self.tokens = 0
        self.unknown: list[str] = []

    def text(self, value: object) -> None:
        if isinstance(value, str) and value:
            self.tokens += self.count(value)

    def json(self, value: object) -> None:
        # Spaced JSON (", ", ": "): providers render schemas with more separators than the
        # compact form, never fewer.
        self.text(json.dumps(value, default=str, ensure_ascii=False))

    def result(self) -> Counted:
        if not self.unknown:
            return Counted(self.tokens)
        return Counted(self.tokens, tuple(dict.fromkeys(self.unknown)))

    # -- content parts ---------------------------------------------------------------------
    def content(self, content: object) -> None:
        if isinstance(content, str):
            self.text(content)
            return
        for part in items(content):
            self.part(part)

    def part(self, part: object) -> None:
        kind = field(part, "type")
        if kind in ("text", "input_text", "output_text", "refusal", "summary_text"):
            self.text(field(part, "text") or field(part, "refusal"))
        elif kind == "image_url":
            image = field(part, "image_url")
            url = image if isinstance(image, str) else field(image, "url")
            self.image(url, field(image, "detail"))
        elif kind == "input_image":
            self.image(field(part, "image_url"), field(part, "detail"))
        elif kind == "input_audio":
            audio = field(part, "input_audio")
            data = field(audio, "data")
            if isinstance(data, str):
                self.tokens += audio_tokens(data, field(audio, "format"))
            else:
                self.unknown.append("audio")
        elif kind in ("file", "input_file"):
            self.unknown.append("file")  # a PDF's pages (text and images) cannot be bounded
        elif isinstance(part, str):
            self.text(part)
        else:
            self.json(part)  # a part type this version does not know: its JSON bounds it

    def image(self, url: object, detail: object) -> None:
        size = data_url_size(url) if isinstance(url, str) and url.startswith("data:") else None
        self.tokens += image_tokens(self.model, size, detail if isinstance(detail, str) else None)

    # -- chat ------------------------------------------------------------------------------
    def message(self, message: object) -> None:
        kind = type(message)  # (not narrowed: the general case below reads any object)
        if kind is dict:
            # The usual message, {"role": ..., "content": "..."}: what the general case below
            # counts for it, without looking for the keys it does not have.
            plain: dict[str, object] = message  # pyright: ignore[reportAssignmentType]
            role, content = plain.get("role"), plain.get("content")
            if len(plain) == 2 and type(role) is str and type(content) is str:
                count = self.count
                self.tokens += TOKENS_PER_MESSAGE
                if role:
                    self.tokens += count(role)
                if content:
                    self.tokens += count(content)
                return
        self.tokens += TOKENS_PER_MESSAGE
        self.text(field(message, "role"))
        self.content(field(message, "content"))
        name = field(message, "name")
        if isinstance(name, str) and name:
            self.text(name)
            self.tokens += TOKENS_PER_NAME
        for call in items(field(message, "tool_calls")):
            self.call(field(call, "function") or call)
        legacy = field(message, "function_call")
        if legacy is not None:
            self.call(legacy)
        audio = field(message, "audio")  # an earlier audio answer, resent by id
        if audio is not None:
            self.unknown.append("audio")

    def call(self, function: object) -> None:
        self.tokens += CALL_OVERHEAD
        self.text(field(function, "name"))
        arguments = field(function, "arguments")
        if isinstance(arguments, str):
            self.text(arguments)
        elif arguments is not None:
            self.json(arguments)

    def tools(self, tools: object, functions: object, choice: object) -> None:
        definitions = items(tools) + items(functions)
        if definitions:
            self.tokens += TOOLS_OVERHEAD
        for tool in definitions:
            self.tokens += TOOL_OVERHEAD
            self.json(tool)
        if choice is not None and not isinstance(choice, str):
            self.tokens += CALL_OVERHEAD
            self.json(choice)

    def schema(self, response_format: object) -> None:
        if response_format is None or isinstance(response_format, type):
            if isinstance(response_format, type):  # a pydantic model given to .parse()
                rendered = _class_schema(response_format)
                if rendered is not None:
                    self.tokens += SCHEMA_OVERHEAD
                    self.text(rendered)
            return
        if field(response_format, "type") in ("json_schema", "json_object"):
            self.tokens += SCHEMA_OVERHEAD
            # A typed openai model or a dict: its JSON holds the schema and its name.
            dump = getattr(response_format, "model_dump", None)
            self.json(dump() if callable(dump) else response_format)

    # -- Responses -------------------------------------------------------------------------
    def item(self, item: object) -> None:
        if isinstance(item, str):
            self.message({"role": "user", "content": item})
            return
        kind = field(item, "type")
        if kind in (None, "message") and field(item, "role") is not None:
            self.message(item)
        elif kind in ("function_call", "custom_tool_call"):
            self.call(item)
            self.text(field(item, "call_id"))
        elif kind in ("function_call_output", "custom_tool_call_output"):
            self.tokens += CALL_OVERHEAD
            output = field(item, "output")
            if isinstance(output, str):
                self.text(output)
            else:
                self.content(output)
        elif kind == "reasoning":
            self.tokens += CALL_OVERHEAD
            for part in items(field(item, "summary")):
                self.part(part)
            encrypted = field(item, "encrypted_content")
            if isinstance(encrypted, str):
                # The reasoning it stands for is billed as input; its text is shorter than
                # its encryption, and a token is never shorter than one character.
                self.tokens += len(encrypted)
        elif kind == "item_reference":
            self.unknown.append("item_reference")
        elif kind == "image_generation_call":
            self.tokens += CALL_OVERHEAD
            self.image(None, "high")
        else:
            self.tokens += CALL_OVERHEAD
            self.json(item)


_schemas: weakref.WeakKeyDictionary[type, str | None] = weakref.WeakKeyDictionary()


def _class_schema(model: type) -> str | None:
    """The JSON schema text of a pydantic model class given to ``.parse()`` (None: not one),
    rendered once per class: building a schema costs far more than counting it."""
    try:
        return _schemas[model]
    except (KeyError, TypeError):
        pass
    schema = getattr(model, "model_json_schema", None)
    rendered = json.dumps(schema(), default=str, ensure_ascii=False) if callable(schema) else None
    with contextlib.suppress(TypeError):  # a class without weak references: rendered each time
        _schemas[model] = rendered
    return rendered


def chat(kwargs: Mapping[str, Any], model: str) -> Counted:
    """Chat Completions: messages, tools, schema."""
    counter = _Counter(model)
    counter.tokens += REPLY_PRIMING_TOKENS
    message = counter.message
    for each in items(kwargs.get("messages")):
        message(each)
    # (Most requests have neither: the `in` checks spare the lookups of what is not there.)
    if (
        "tools" in kwargs
        or "functions" in kwargs
        or "tool_choice" in kwargs
        or ("function_call" in kwargs)
    ):
        counter.tools(given(kwargs, "tools"), given(kwargs, "functions"), _choice(kwargs))
    if "response_format" in kwargs:
        counter.schema(given(kwargs, "response_format"))
    return counter.result()


def responses(kwargs: Mapping[str, Any], model: str) -> Counted:
    """Responses: instructions, input items, tools, ``text.format``, stored history."""
    counter = _Counter(model)
    counter.tokens += REPLY_PRIMING_TOKENS
    instructions = given(kwargs, "instructions")
    if isinstance(instructions, str) and instructions:
        counter.message({"role": "developer", "content": instructions})
    source = given(kwargs, "input")
    if isinstance(source, str):
        counter.message({"role": "user", "content": source})
    else:
        for item in items(source):
            counter.item(item)
    counter.tools(given(kwargs, "tools"), None, _choice(kwargs))
    counter.schema(field(given(kwargs, "text"), "format"))
    counter.schema(given(kwargs, "text_format"))
    for stored in ("previous_response_id", "conversation", "prompt"):
        if given(kwargs, stored) is not None:
            counter.unknown.append(stored)  # the provider adds what it stored
    return counter.result()


def prompt(value: object, model: str) -> Counted:
    """Legacy Completions ``prompt`` or Embeddings ``input``: text, texts, or token arrays."""
    counter = _Counter(model)
    if isinstance(value, str):
        counter.text(value)
        return counter.result()
    values = items(value)
    if values and all(isinstance(v, int) for v in values):
        return Counted(len(values))  # one prompt given as token ids
    for entry in values:
        if isinstance(entry, str):
            counter.text(entry)
        elif isinstance(entry, list | tuple):
            counter.tokens += len(entry)  # pyright: ignore[reportUnknownArgumentType]
    return counter.result()


def _choice(kwargs: Mapping[str, Any]) -> object:
    choice = given(kwargs, "tool_choice")
    if choice is None:
        choice = given(kwargs, "function_call")
    return choice
