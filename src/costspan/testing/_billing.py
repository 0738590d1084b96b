"""What the local server bills for a request's input, the way OpenAI bills it.

This is deliberately independent of costspan's own estimator (the server plays the provider): it
uses only the raw tokenizer count of a text (``costspan._tokens.count_text``).

Text (o200k_base, or cl100k_base for older models), as the OpenAI cookbook counts chat: 3 tokens
to prime the reply, and per message 3 + its role + its content (text parts joined) + its name
(+1 when a name is set). Plain text-only requests are billed exactly this way.

On top of that, in the order OpenAI renders them into the prompt:

- **Function tools** (chat ``tools``, legacy ``functions``, Responses ``tools`` of type
  ``function``) are rendered into a hidden system section as TypeScript-like declarations
  (``namespace functions { // description \\n type name = (_: { prop: type, }) => any; }``, the
  form reverse-engineered by the community, e.g. hmarr/openai-chat-tokens) and billed as that
  text + 9 tokens, 4 fewer when the request has its own system/developer message (OpenAI reuses
  it). Other tool types (web search, custom, ...) bill the tokens of their JSON. ``tool_choice``
  ``"none"`` adds 1, a named function 4 + its name; ``auto``/``required`` and
  ``parallel_tool_calls`` add nothing.
- **Structured output** (chat ``response_format`` / Responses ``text.format`` of type
  ``json_schema``): the tokens of ``"# Response Formats\\n\\n## {name}\\n\\n{json.dumps(schema)}"``.
- **Tool calls in the history**: each assistant ``tool_calls`` entry (and legacy
  ``function_call``) bills 3 + its name + its arguments; ``tool`` messages are ordinary messages.
- **Responses items**: ``message`` as above; ``function_call`` 3 + name + arguments;
  ``function_call_output`` 3 + its output; ``reasoning`` 3 + its summary text;
  ``item_reference`` what the referenced item (one this server produced) cost; any other item
  3 + the tokens of its JSON. ``previous_response_id`` adds the previous response's whole
  context (its billed input + its visible output); an id this server never issued is a 400.
- **Images** (``image_url`` / ``input_image``) and **audio** (``input_audio``): see ``_media``.
- **Files** (``file`` / ``input_file`` parts): :data:`FILE_TOKENS` each, whatever the file.

Then the tokenizer of the model's provider: text tokens (not images, audio or files) are
multiplied by :data:`TOKENIZER_SCALES` for models that OpenAI does not serve (their own
tokenizers count more than o200k), or by the request's ``x-costspan-test-input-scale`` header,
rounded up; ``x-costspan-test-extra-input-tokens`` adds a fixed gateway prompt.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from costspan import _tokens
from costspan.testing import _media as media
from costspan.testing._errors import APIError
from costspan.testing._json import items, obj, objs, text_of

TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMING_TOKENS = 3
FUNCTIONS_OVERHEAD = 9
SYSTEM_REUSE_DISCOUNT = 4
TOOL_CHOICE_NONE = 1
TOOL_CHOICE_NAMED = 4
TOOL_CALL_OVERHEAD = 3
ITEM_OVERHEAD = 3
FILE_TOKENS = 1000

# Tokens of the provider's tokenizer per o200k token, for model families that OpenAI does not
# serve (called through an OpenAI-compatible API). Rough ratios for English text: the point is
# that they are not 1, as costspan's offline estimate assumes.
TOKENIZER_SCALES: tuple[tuple[re.Pattern[str], Decimal], ...] = (
    (re.compile(r"^(anthropic/)?claude"), Decimal("1.25")),
    (
        re.compile(
            r"^(mistralai/)?(mistral|mixtral|codestral|ministral|magistral|pixtral|devstral|open-mistral)"
        ),
        Decimal("1.25"),
    ),
    (re.compile(r"^(deepseek/|deepseek-ai/)?deepseek"), Decimal("1.2")),
    (re.compile(r"^(qwen/)?qwen"), Decimal("1.2")),
    (re.compile(r"^(x-ai/)?grok"), Decimal("1.2")),
    (re.compile(r"^(cohere/)?command"), Decimal("1.2")),
    (re.compile(r"^(meta-llama/|meta/)?(llama|meta-llama)"), Decimal("1.15")),
    (re.compile(r"^(google/)?(gemini|gemma)"), Decimal("1.15")),
)

INPUT_SCALE_HEADER = "x-costspan-test-input-scale"
EXTRA_INPUT_HEADER = "x-costspan-test-extra-input-tokens"
OUTPUT_SCALE_HEADER = "x-costspan-test-output-scale"


def count(text: object, model: str) -> int:
    """Raw tokenizer tokens of a string (anything else counts nothing)."""
    return _tokens.count_text(text, model) if isinstance(text, str) and text else 0


@dataclass
class Prompt:
    """A request's input: tokenizer-dependent text, and parts billed as they are."""

    text: int = 0
    media: int = 0  # images, audio and files: not affected by the tokenizer scale
    audio: int = 0  # the audio part of ``media`` (reported as audio_tokens)
    context: int = 0  # already-billed tokens (a previous response's context)
    cache_key: list[object] = field(default_factory=list[object])


def family_scale(model: str) -> Decimal:
    """The default tokenizer ratio for ``model``'s family (1 for OpenAI's and unknown models)."""
    name = model.lower()
    for pattern, scale in TOKENIZER_SCALES:
        if pattern.match(name):
            return scale
    return Decimal(1)


def decimal_header(headers: Mapping[str, str], name: str) -> Decimal | None:
    """A positive decimal test header (None when absent); anything else is a 400 naming it."""
    raw = headers.get(name)
    if not raw:
        return None
    try:
        value = Decimal(raw.strip())
    except InvalidOperation:
        value = Decimal(-1)
    if not value.is_finite() or value <= 0:
        raise APIError(400, f"{name} must be a positive decimal number, not {raw!r}")
    return value


def int_header(headers: Mapping[str, str], name: str) -> int:
    """A whole-number test header (0 when absent); anything else is a 400 naming it."""
    raw = headers.get(name)
    if not raw:
        return 0
    try:
        value = int(raw.strip())
    except ValueError:
        value = -1
    if value < 0:
        raise APIError(400, f"{name} must be a whole number of tokens, not {raw!r}")
    return value


def input_scale(model: str, headers: Mapping[str, str]) -> Decimal:
    """The header's input scale, else the model family's."""
    return decimal_header(headers, INPUT_SCALE_HEADER) or family_scale(model)


def output_scale(model: str, headers: Mapping[str, str]) -> Decimal:
    """The header's output scale, else the model family's."""
    return decimal_header(headers, OUTPUT_SCALE_HEADER) or family_scale(model)


def scaled(tokens: int, scale: Decimal) -> int:
    return math.ceil(Decimal(tokens) * scale)


def billed(prompt: Prompt, model: str, headers: Mapping[str, str]) -> int:
    """The input tokens the provider reports for ``prompt``."""
    return (
        scaled(prompt.text, input_scale(model, headers))
        + prompt.media
        + prompt.context
        + int_header(headers, EXTRA_INPUT_HEADER)
    )


# -- function definitions -----------------------------------------------------------------------
def function_definitions(tools: object, functions: object) -> list[Mapping[str, Any]]:
    """The function definitions of chat ``tools``, Responses ``tools`` and legacy ``functions``."""
    found: list[Mapping[str, Any]] = []
    for tool in objs(tools):
        if tool.get("type", "function") != "function":
            continue
        found.append(obj(tool["function"]) if "function" in tool else tool)
    found.extend(objs(functions))
    return found


def render_functions(definitions: list[Mapping[str, Any]]) -> str:
    """The hidden ``namespace functions`` section OpenAI writes for function definitions."""
    lines = ["namespace functions {", ""]
    for definition in definitions:
        description = definition.get("description")
        if isinstance(description, str) and description:
            lines.extend(_comment(description, 0))
        name = str(definition.get("name", ""))
        parameters = obj(definition.get("parameters"))
        defs = obj(parameters.get("$defs") or parameters.get("definitions"))
        if obj(parameters.get("properties")):
            lines.append(f"type {name} = (_: {{")
            lines.extend(_properties(parameters, 0, defs, 0))
            lines.append("}) => any;")
        else:
            lines.append(f"type {name} = () => any;")
        lines.append("")
    lines.append("} // namespace functions")
    return "\n".join(lines)


def _comment(text: str, indent: int) -> list[str]:
    return [" " * indent + "// " + line for line in text.splitlines() or [""]]


def _properties(
    schema: Mapping[str, Any], indent: int, defs: Mapping[str, Any], depth: int
) -> list[str]:
    required = {r for r in items(schema.get("required")) if isinstance(r, str)}
    lines: list[str] = []
    for name, raw in obj(schema.get("properties")).items():
        prop = obj(raw)
        description = prop.get("description")
        if isinstance(description, str) and description:
            lines.extend(_comment(description, indent))
        optional = "" if name in required else "?"
        kind = _ts_type(prop, indent, defs, depth + 1)
        default = f" // default: {json.dumps(prop['default'])}" if "default" in prop else ""
        lines.append(f"{' ' * indent}{name}{optional}: {kind},{default}")
    return lines


_SIMPLE_TYPES = {
    "string": "string",
    "number": "number",
    "integer": "number",
    "boolean": "boolean",
    "null": "null",
}


def _ts_type(schema: Mapping[str, Any], indent: int, defs: Mapping[str, Any], depth: int) -> str:
    if depth > 8:  # a recursive $ref: stop, as a renderer must
        return "any"
    ref = schema.get("$ref")
    if isinstance(ref, str):
        return _ts_type(obj(defs.get(ref.rsplit("/", 1)[-1])), indent, defs, depth + 1)
    for key in ("anyOf", "oneOf"):
        options = objs(schema.get(key))
        if options:
            return " | ".join(_ts_type(o, indent, defs, depth + 1) for o in options)
    if isinstance(schema.get("enum"), list):
        return " | ".join(json.dumps(v) for v in schema["enum"]) or "never"
    if "const" in schema:
        return json.dumps(schema["const"])
    kind = schema.get("type")
    if isinstance(kind, list):
        kinds = items(kind)  # pyright: ignore[reportUnknownArgumentType]
        return " | ".join(_ts_type({**schema, "type": k}, indent, defs, depth + 1) for k in kinds)
    if kind in _SIMPLE_TYPES:
        return _SIMPLE_TYPES[str(kind)]
    if kind == "array":
        element = obj(schema.get("items"))
        inner = _ts_type(element, indent, defs, depth + 1) if element else "any"
        return f"({inner})[]" if " | " in inner else f"{inner}[]"
    if kind == "object" or "properties" in schema:
        if not obj(schema.get("properties")):
            return "object"
        body = _properties(schema, indent + 2, defs, depth)
        return "\n".join(["{", *body, " " * indent + "}"])
    return "any"


def tools_tokens(tools: object, functions: object, model: str, *, has_system: bool) -> int:
    """Tokens of the tool definitions of a request."""
    definitions = function_definitions(tools, functions)
    total = 0
    if definitions:
        total += count(render_functions(definitions), model) + FUNCTIONS_OVERHEAD
        if has_system:
            total -= SYSTEM_REUSE_DISCOUNT
    for tool in objs(tools):
        if tool.get("type", "function") != "function":
            total += count(json.dumps(tool), model)
    return total


def tool_choice_tokens(choice: object, model: str) -> int:
    if choice == "none":
        return TOOL_CHOICE_NONE
    named = obj(choice)
    name = named.get("name") or obj(named.get("function")).get("name")
    if isinstance(name, str) and name:
        return TOOL_CHOICE_NAMED + count(name, model)
    return 0


def schema_tokens(holder: Mapping[str, Any], model: str) -> int:
    """Tokens of a structured-output JSON schema (chat ``json_schema`` or Responses format)."""
    schema = holder.get("schema", {})
    name = holder.get("name", "response")
    return count(f"# Response Formats\n\n## {name}\n\n{json.dumps(schema)}", model)


# -- content parts ------------------------------------------------------------------------------
def image_tokens(url: object, detail: object, model: str) -> int:
    """What an image part costs; a data URL that holds no image is OpenAI's 400."""
    if not isinstance(url, str) or not url:
        raise APIError(400, "Invalid image: no image_url was given.", param="image_url")
    level = detail if detail in ("low", "high") else "high"
    if url.startswith("data:"):
        try:
            width, height = media.image_size(media.decode_data_url(url))
        except media.MediaError as err:
            raise APIError(
                400,
                f"You uploaded an unsupported image. {str(err).capitalize()}. Please make sure "
                "your image has of one the following formats: ['png', 'jpeg', 'gif', 'webp'].",
                param="image_url",
                code="invalid_image_format",
            ) from err
    else:
        width, height = media.LINKED_IMAGE_SIZE
    return media.openai_image_tokens(model, width, height, str(level))


def audio_part_tokens(part: Mapping[str, Any]) -> int:
    audio = obj(part.get("input_audio"))
    data = audio.get("data")
    try:
        raw = media.decode_base64(data) if isinstance(data, str) else b""
    except media.MediaError as err:
        raise APIError(400, "Invalid audio: the data is not base64.", param="input_audio") from err
    return media.audio_tokens(raw, str(audio.get("format", "")))


def add_content(prompt: Prompt, content: object, model: str) -> None:
    """Bill a message's content: a string, or parts (text joined, then media)."""
    if isinstance(content, str):
        prompt.text += count(content, model)
        return
    texts: list[str] = []
    for part in objs(content):
        kind = part.get("type")
        if isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind == "refusal":
            texts.append(str(part.get("refusal", "")))
        elif kind == "image_url":
            image = part.get("image_url")
            holder = obj(image)
            url = holder.get("url") if holder else image
            prompt.media += image_tokens(url, holder.get("detail"), model)
        elif kind == "input_image":
            if part.get("file_id") and not part.get("image_url"):
                prompt.media += media.openai_image_tokens(model, *media.LINKED_IMAGE_SIZE, "high")
            else:
                prompt.media += image_tokens(part.get("image_url"), part.get("detail"), model)
        elif kind == "input_audio":
            tokens = audio_part_tokens(part)
            prompt.media += tokens
            prompt.audio += tokens
        elif kind in ("file", "input_file"):
            prompt.media += FILE_TOKENS
    prompt.text += count("".join(texts), model)


# -- Chat Completions ---------------------------------------------------------------------------
def _has_system(messages: list[Mapping[str, Any]]) -> bool:
    return any(m.get("role") in ("system", "developer") for m in messages)


def add_message(prompt: Prompt, message: Mapping[str, Any], model: str) -> None:
    prompt.text += TOKENS_PER_MESSAGE + count(message.get("role"), model)
    add_content(prompt, message.get("content"), model)
    name = message.get("name")
    if isinstance(name, str) and name:
        prompt.text += count(name, model) + TOKENS_PER_NAME
    calls = [obj(c.get("function")) for c in objs(message.get("tool_calls"))]
    legacy = obj(message.get("function_call"))
    for call in [*calls, *([legacy] if legacy else [])]:
        prompt.text += (
            TOOL_CALL_OVERHEAD
            + count(call.get("name"), model)
            + count(call.get("arguments"), model)
        )


def chat_prompt(body: Mapping[str, Any], model: str) -> Prompt:
    """The input of a Chat Completions request."""
    messages = objs(body.get("messages"))
    prompt = Prompt(text=REPLY_PRIMING_TOKENS)
    for message in messages:
        add_message(prompt, message, model)
    extras = _request_extras(body, model, has_system=_has_system(messages))
    prompt.text += extras
    fmt = obj(body.get("response_format"))
    if fmt.get("type") == "json_schema":
        prompt.text += schema_tokens(obj(fmt.get("json_schema")), model)
    prompt.cache_key = [list(messages)]
    if extras or fmt:
        prompt.cache_key.append([body.get("tools"), body.get("functions"), fmt])
    return prompt


def _request_extras(body: Mapping[str, Any], model: str, *, has_system: bool) -> int:
    choice = body.get("tool_choice", body.get("function_call"))
    return tools_tokens(
        body.get("tools"), body.get("functions"), model, has_system=has_system
    ) + tool_choice_tokens(choice, model)


# -- Responses ----------------------------------------------------------------------------------
class ResponseMemory:
    """What the server produced, so a later request can refer to it (as OpenAI stores it)."""

    def __init__(self) -> None:
        self.contexts: dict[str, int] = {}  # response id -> billed input + visible output
        self.items: dict[str, int] = {}  # output item id -> tokens it costs as input


def responses_prompt(body: Mapping[str, Any], model: str, memory: ResponseMemory) -> Prompt:
    """The input of a Responses request (``input`` and ``instructions``, tools, format, ...)."""
    raw = body.get("input")
    if isinstance(raw, str):
        entries: list[Mapping[str, Any]] = [{"role": "user", "content": raw}]
    elif isinstance(raw, list):
        entries = objs(raw)  # pyright: ignore[reportUnknownArgumentType]
    else:
        raise APIError(400, "Missing required parameter: 'input'.", param="input")
    instructions = body.get("instructions")
    if isinstance(instructions, str) and instructions:
        entries = [{"role": "developer", "content": instructions}, *entries]
    prompt = Prompt(text=REPLY_PRIMING_TOKENS)
    for item in entries:
        add_item(prompt, item, model, memory)
    previous = body.get("previous_response_id")
    if isinstance(previous, str) and previous:
        if previous not in memory.contexts:
            raise APIError(
                400,
                f"Previous response with id '{previous}' not found.",
                param="previous_response_id",
                code="previous_response_not_found",
            )
        prompt.context += memory.contexts[previous]
    has_system = any(i.get("role") in ("system", "developer") for i in entries)
    extras = _request_extras(body, model, has_system=has_system)
    prompt.text += extras
    fmt = obj(obj(body.get("text")).get("format"))
    if fmt.get("type") == "json_schema":
        prompt.text += schema_tokens(fmt, model)
    prompt.cache_key = [list(entries)]
    if extras or fmt.get("type") == "json_schema" or previous:
        prompt.cache_key.append([body.get("tools"), fmt, previous])
    return prompt


def add_item(prompt: Prompt, item: Mapping[str, Any], model: str, memory: ResponseMemory) -> None:
    """Bill one Responses input item."""
    kind = item.get("type")
    if kind in (None, "message") or "role" in item:
        add_message(prompt, item, model)
    elif kind in ("input_text", "input_image", "input_file", "input_audio"):
        add_content(prompt, [item], model)  # a bare content part
    elif kind == "function_call":
        prompt.text += (
            ITEM_OVERHEAD + count(item.get("name"), model) + count(item.get("arguments"), model)
        )
    elif kind in ("function_call_output", "custom_tool_call_output"):
        prompt.text += ITEM_OVERHEAD
        add_content(prompt, item.get("output"), model)
    elif kind == "reasoning":
        summary = " ".join(text_of([s]) for s in objs(item.get("summary")))
        prompt.text += ITEM_OVERHEAD + count(summary, model)
    elif kind == "item_reference":
        ref = item.get("id")
        if not isinstance(ref, str) or ref not in memory.items:
            raise APIError(400, f"Item with id '{ref}' not found.", param="input")
        prompt.context += memory.items[ref]
    else:
        prompt.text += ITEM_OVERHEAD + count(json.dumps(item), model)
