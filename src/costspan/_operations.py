"""What each wrapped OpenAI method means in GenAI terms: request, response and stream chunks.

One :class:`Operation` per API surface (Chat Completions, Responses, Embeddings, legacy
Completions) turns call keyword arguments into request attributes, a response object into
response attributes and :class:`~costspan._usage.TokenUsage`, and a stream into the same through
an :class:`Accumulator` fed chunk by chunk. Everything here reads objects duck-typed through
:func:`~costspan._usage.field`, so typed openai models and plain dicts both work, and nothing here
touches a span: :mod:`costspan._invocation` owns the span.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Final

from opentelemetry.util.types import AttributeValue

from costspan import _attributes as A
from costspan import _content, _input, _tokens
from costspan._coerce import given, number, text, whole
from costspan._input import Counted
from costspan._usage import TokenUsage, field, from_openai, items

_OWN_CAP_PROVIDERS = frozenset({"openai", "azure.ai.openai"})

Attributes = dict[str, AttributeValue]


def _set(attrs: Attributes, key: str, value: AttributeValue | None) -> None:
    if value is not None:
        attrs[key] = value


_SAMPLING_KEYS: Final = frozenset(
    {
        "temperature",
        "top_p",
        "frequency_penalty",
        "presence_penalty",
        "seed",
        "stop",
        "n",
        "service_tier",
        "stream",
    }
)


def _common_sampling(attrs: Attributes, kwargs: Mapping[str, Any]) -> None:
    # Most requests set none or one of these: look only at the keys the request has.
    present = kwargs.keys() & _SAMPLING_KEYS
    if not present:
        return
    if "temperature" in present:
        _set(attrs, A.GEN_AI_REQUEST_TEMPERATURE, number(given(kwargs, "temperature")))
    if "top_p" in present:
        _set(attrs, A.GEN_AI_REQUEST_TOP_P, number(given(kwargs, "top_p")))
    if "frequency_penalty" in present:
        value = number(given(kwargs, "frequency_penalty"))
        _set(attrs, A.GEN_AI_REQUEST_FREQUENCY_PENALTY, value)
    if "presence_penalty" in present:
        value = number(given(kwargs, "presence_penalty"))
        _set(attrs, A.GEN_AI_REQUEST_PRESENCE_PENALTY, value)
    if "seed" in present:
        _set(attrs, A.GEN_AI_REQUEST_SEED, whole(given(kwargs, "seed")))
    if "stop" in present:
        stop = given(kwargs, "stop")
        if isinstance(stop, str):
            attrs[A.GEN_AI_REQUEST_STOP_SEQUENCES] = [stop]
        elif isinstance(stop, Sequence) and all(isinstance(s, str) for s in stop):  # pyright: ignore[reportUnknownVariableType]
            attrs[A.GEN_AI_REQUEST_STOP_SEQUENCES] = [str(s) for s in stop]  # pyright: ignore[reportUnknownVariableType,reportUnknownArgumentType]
    if "n" in present:
        n = whole(given(kwargs, "n"))
        if n is not None and n != 1:
            attrs[A.GEN_AI_REQUEST_CHOICE_COUNT] = n
    if "service_tier" in present:
        tier = given(kwargs, "service_tier")
        if isinstance(tier, str) and tier != "auto":
            attrs[A.OPENAI_REQUEST_SERVICE_TIER] = tier
    if "stream" in present and given(kwargs, "stream") is True:
        attrs[A.GEN_AI_REQUEST_STREAM] = True


def _output_type(response_format: object) -> str | None:
    kind = field(response_format, "type")
    if kind in ("json_object", "json_schema"):
        return "json"
    if kind == "text":
        return "text"
    if isinstance(response_format, type):  # a pydantic model passed to .parse()
        return "json"
    return None


_RESPONSE_FIELDS: Final = (
    (A.GEN_AI_RESPONSE_ID, "id"),
    (A.GEN_AI_RESPONSE_MODEL, "model"),
    (A.OPENAI_RESPONSE_SERVICE_TIER, "service_tier"),
    (A.OPENAI_RESPONSE_SYSTEM_FINGERPRINT, "system_fingerprint"),
)


def _common_response(attrs: Attributes, response: object) -> None:
    for key, name in _RESPONSE_FIELDS:
        value = field(response, name)
        if value and type(value) is str:
            attrs[key] = value


@dataclass(slots=True)
class Outcome:
    """What a finished call produced: response attributes and token usage."""

    attributes: Attributes
    usage: TokenUsage | None
    text: str | None = None
    """Generated text, kept only where usage is missing and must be estimated from it."""


class Accumulator:
    """Collects what a stream carries, chunk by chunk; subclasses read one API's chunks."""

    __slots__ = ("attributes", "chunks", "hide_usage_chunk", "reasoning", "texts", "usage")

    def __init__(self, *, hide_usage_chunk: bool) -> None:
        self.hide_usage_chunk = hide_usage_chunk
        self.attributes: Attributes = {}
        self.usage: TokenUsage | None = None
        self.texts: dict[int, list[str]] = {}
        # Reasoning streamed as text by OpenAI-compatible servers (``reasoning_content``,
        # ``reasoning``): billed as output, so counted when usage must be estimated, never
        # captured as the answer.
        self.reasoning: list[str] = []
        self.chunks = 0

    def feed(self, chunk: object) -> bool:
        """Take one chunk; return True when the caller must not see it."""
        self.chunks += 1
        return False

    @property
    def text(self) -> str:
        return "".join("".join(parts) for _, parts in sorted(self.texts.items()))

    def _append(self, index: int, text: object) -> None:
        if isinstance(text, str) and text:
            self.texts.setdefault(index, []).append(text)

    def outcome(self, capture: bool) -> Outcome:
        attrs = dict(self.attributes)
        attrs[A.COSTSPAN_STREAM_CHUNKS] = self.chunks
        text = self.text
        if self.reasoning:
            text += "".join(self.reasoning)
        attrs[A.COSTSPAN_STREAM_OUTPUT_CHARS] = len(text)
        return Outcome(attrs, self.usage, text if self.usage is None else None)


_REASONING_FIELDS: Final = ("reasoning_content", "reasoning")


def reasoning_text(message: object) -> str:
    """The reasoning an OpenAI-compatible server sent as text in a message or delta (DeepSeek
    and vLLM: ``reasoning_content``; others: ``reasoning``), else ``""``."""
    for name in _REASONING_FIELDS:
        value = field(message, name)
        if value and type(value) is str:
            return value
    return ""


class _ChoicesAccumulator(Accumulator):
    """Chat chunks: ``choices[i].delta.content`` (legacy completions: ``choices[i].text``)."""

    __slots__ = ("finish_reasons", "model")

    # Where a choice carries its text; chat chunks carry none of legacy completions' `text`.
    TEXT_IN_DELTA: ClassVar[bool] = True

    def __init__(self, *, hide_usage_chunk: bool) -> None:
        super().__init__(hide_usage_chunk=hide_usage_chunk)
        self.finish_reasons: dict[int, str] = {}
        self.model: object = None

    def feed(self, chunk: object) -> bool:
        # Runs for every chunk of every stream: each field is read once, and only those a
        # chunk of this API has; a typed chunk is read from its fields directly.
        self.chunks += 1
        if self.chunks == 1:
            _common_response(self.attributes, chunk)
            self.model = self.attributes.get(A.GEN_AI_RESPONSE_MODEL)
        found_fields: object = getattr(chunk, "__dict__", None)
        if type(found_fields) is not dict or not self.TEXT_IN_DELTA:
            return self._feed(chunk)
        fields: dict[str, Any] = found_fields  # pyright: ignore[reportUnknownVariableType]
        if "choices" not in fields:
            return self._feed(chunk)
        model = fields.get("model")
        if model != self.model and type(model) is str and model:
            self.model = self.attributes[A.GEN_AI_RESPONSE_MODEL] = model
        choices = fields["choices"]
        for choice in choices or ():
            found_read: object = getattr(choice, "__dict__", None)
            if type(found_read) is not dict:
                self._choice(choice)
                continue
            read: dict[str, Any] = found_read  # pyright: ignore[reportUnknownVariableType]
            index = read.get("index")
            if type(index) is not int:
                index = whole(index) or 0
            delta = read.get("delta")
            content = field(delta, "content") if delta is not None else None
            if content and type(content) is str:
                parts = self.texts.get(index)
                if parts is None:
                    self.texts[index] = [content]
                else:
                    parts.append(content)
            if delta is not None and getattr(delta, "__pydantic_extra__", None):
                # (Only a delta with extra fields can carry reasoning text: no lookups else.)
                thought = reasoning_text(delta)
                if thought:
                    self.reasoning.append(thought)
            reason = read.get("finish_reason")
            if reason is not None and isinstance(reason, str):
                self.finish_reasons[index] = reason
        usage = fields.get("usage")
        return False if usage is None else self._take_usage(usage, choices)

    def _take_usage(self, usage: object, choices: object) -> bool:
        """Keep a chunk's usage; True when the chunk is the injected usage chunk (no choices),
        which a caller who did not ask for it must not see."""
        found = from_openai(usage)
        if found is None:
            return False
        self.usage = found
        return self.hide_usage_chunk and not choices

    def _feed(self, chunk: object) -> bool:
        """Any chunk (a dict, an object of another client): read through :func:`field`."""
        if self.chunks > 1:
            model = field(chunk, "model")
            if model != self.model and isinstance(model, str) and model:
                self.model = self.attributes[A.GEN_AI_RESPONSE_MODEL] = model
        choices = field(chunk, "choices")
        for choice in choices or ():
            self._choice(choice)
        usage = field(chunk, "usage")
        return False if usage is None else self._take_usage(usage, choices)

    def _choice(self, choice: object) -> None:
        index = field(choice, "index")
        if type(index) is not int:
            index = whole(index) or 0
        if self.TEXT_IN_DELTA:
            delta = field(choice, "delta")
            content = field(delta, "content") if delta is not None else None
            thought = reasoning_text(delta) if delta is not None else ""
            if thought:
                self.reasoning.append(thought)
        else:
            content = field(choice, "text")
        if content:
            self._append(index, content)
        reason = field(choice, "finish_reason")
        if reason is not None and isinstance(reason, str):
            self.finish_reasons[index] = reason

    def outcome(self, capture: bool) -> Outcome:
        result = super().outcome(capture)
        if self.finish_reasons:
            result.attributes[A.GEN_AI_RESPONSE_FINISH_REASONS] = [
                r for _, r in sorted(self.finish_reasons.items())
            ]
        if capture:
            indexes = sorted(set(self.texts) | set(self.finish_reasons))
            result.attributes[A.GEN_AI_OUTPUT_MESSAGES] = _content.to_json(
                [
                    _content.output_message(
                        "".join(self.texts.get(i, [])), self.finish_reasons.get(i)
                    )
                    for i in indexes
                ]
            )
        return result


class _CompletionsAccumulator(_ChoicesAccumulator):
    """Legacy completion chunks: ``choices[i].text``."""

    __slots__ = ()
    TEXT_IN_DELTA: ClassVar[bool] = False


class _ResponsesAccumulator(Accumulator):
    """Responses API events: text deltas, then the full response in ``response.completed``."""

    __slots__ = ("final",)

    def __init__(self, *, hide_usage_chunk: bool) -> None:
        super().__init__(hide_usage_chunk=hide_usage_chunk)
        self.final: Outcome | None = None

    def feed(self, chunk: object) -> bool:
        self.chunks += 1
        kind = field(chunk, "type")
        if kind == "response.output_text.delta":
            self._append(whole(field(chunk, "output_index")) or 0, field(chunk, "delta"))
        elif kind in ("response.created", "response.in_progress"):
            _common_response(self.attributes, field(chunk, "response"))
        elif kind in ("response.completed", "response.incomplete", "response.failed"):
            self.final = RESPONSES.response_outcome(field(chunk, "response"), capture=True)
            self.usage = self.final.usage
        return False

    def outcome(self, capture: bool) -> Outcome:
        result = super().outcome(capture)
        if self.final is not None:
            final = dict(self.final.attributes)
            if not capture:
                final.pop(A.GEN_AI_OUTPUT_MESSAGES, None)
            result.attributes.update(final)
        return result


class Operation:
    """One OpenAI API surface. Subclasses fill in the three extraction steps."""

    name: ClassVar[str]
    api_type: ClassVar[str | None] = None
    # The parameters that cap this API's output. A server ignores another API's cap name (or
    # rejects it): only these bound what it generates.
    cap_params: ClassVar[tuple[str, ...]] = ("max_tokens",)
    # Whether `stream_options.include_usage` exists for this API's streams.
    stream_usage_option: ClassVar[bool] = False

    def request_attributes(self, kwargs: Mapping[str, Any]) -> Attributes:
        attrs: Attributes = {}
        _common_sampling(attrs, kwargs)
        return attrs

    def input_content(self, kwargs: Mapping[str, Any]) -> Attributes:
        return {}

    def response_outcome(self, response: object, capture: bool) -> Outcome:
        attrs: Attributes = {}
        _common_response(attrs, response)
        usage = from_openai(field(response, "usage"))
        return Outcome(attrs, usage, self.output_text(response) if usage is None else None)

    def accumulator(self, *, hide_usage_chunk: bool) -> Accumulator:
        return _ChoicesAccumulator(hide_usage_chunk=hide_usage_chunk)

    def output_text(self, response: object) -> str:
        """The generated text of a response (for estimates when usage is missing)."""
        return "".join(
            str(field(field(c, "message"), "content") or field(c, "text") or "")
            + reasoning_text(field(c, "message"))
            for c in field(response, "choices") or ()
        )

    def count_input(self, kwargs: Mapping[str, Any], model: str) -> Counted:
        """Everything the request is billed as input, counted offline (:mod:`costspan._input`)."""
        counted = _input.prompt(given(kwargs, "prompt"), model)
        suffix = given(kwargs, "suffix")
        if isinstance(suffix, str) and suffix:
            counted = Counted(counted.tokens + _tokens.count_text(suffix, model), counted.unknown)
        return counted

    def input_tokens(self, kwargs: Mapping[str, Any], model: str) -> int:
        """Prompt tokens of a request, counted offline."""
        return self.count_input(kwargs, model).tokens

    # -- output ------------------------------------------------------------------------------
    def output_cap(self, kwargs: Mapping[str, Any]) -> int | None:
        """The output cap the request sets itself, if any (reasoning included): the largest of
        this API's cap parameters it sets (a server may honour either when both are given)."""
        cap: int | None = None
        for name in self.cap_params:
            value = kwargs.get(name)
            if value is None:
                continue
            if type(value) is not int:
                value = whole(value)  # the SDK's "not given" sentinels, bools: no cap
            if value is not None and value >= 0 and (cap is None or value > cap):
                cap = value
        return cap

    def invalid_cap(self, kwargs: Mapping[str, Any]) -> bool:
        """Whether the request sets an output cap that is not a whole number >= 0."""
        return any(given(kwargs, name) is not None for name in self.cap_params) and (
            self.output_cap(kwargs) is None
        )

    def implicit_cap(self, provider: str) -> int | None:
        """The cap the provider applies when the request sets none (None: the model's limit)."""
        return None

    def choices(self, kwargs: Mapping[str, Any]) -> int:
        """How many answers are billed (``n``): each has its own output."""
        n = kwargs.get("n")
        if n is None:
            return 1
        n = whole(n)
        return n if n is not None and n > 1 else 1

    def extra_output(self, kwargs: Mapping[str, Any], model: str) -> int:
        """Output billed beyond the answers' cap (predicted outputs' rejected tokens)."""
        return 0

    def cap_param(self, kwargs: Mapping[str, Any], provider: str) -> str:
        """The request parameter that caps this API's output for this provider."""
        return "max_tokens"

    def estimate_usage(self, kwargs: Mapping[str, Any], model: str, text: str | None) -> TokenUsage:
        """Usage counted offline from the request and the generated text, marked estimated."""
        return TokenUsage(
            input_tokens=self.input_tokens(kwargs, model),
            output_tokens=_tokens.count_text(text or "", model),
            estimated=True,
        )


class ChatOperation(Operation):
    name = A.OP_CHAT
    api_type = A.API_CHAT_COMPLETIONS
    stream_usage_option = True
    cap_params = ("max_completion_tokens", "max_tokens")

    def request_attributes(self, kwargs: Mapping[str, Any]) -> Attributes:
        attrs = super().request_attributes(kwargs)
        if "max_completion_tokens" in kwargs or "max_tokens" in kwargs:
            max_tokens = whole(given(kwargs, "max_completion_tokens"))
            if max_tokens is None:
                max_tokens = whole(given(kwargs, "max_tokens"))
            _set(attrs, A.GEN_AI_REQUEST_MAX_TOKENS, max_tokens)
        if "response_format" in kwargs:
            _set(attrs, A.GEN_AI_OUTPUT_TYPE, _output_type(given(kwargs, "response_format")))
        return attrs

    def input_content(self, kwargs: Mapping[str, Any]) -> Attributes:
        return {
            A.GEN_AI_INPUT_MESSAGES: _content.to_json(_content.chat_input(kwargs.get("messages")))
        }

    def count_input(self, kwargs: Mapping[str, Any], model: str) -> Counted:
        return _input.chat(kwargs, model)

    def extra_output(self, kwargs: Mapping[str, Any], model: str) -> int:
        # Predicted outputs: the prediction's rejected tokens are billed as output.
        if "prediction" not in kwargs:
            return 0
        content = field(given(kwargs, "prediction"), "content")
        if isinstance(content, str):
            return _tokens.count_text(content, model)
        return sum(_tokens.count_text(str(field(p, "text") or ""), model) for p in items(content))

    def cap_param(self, kwargs: Mapping[str, Any], provider: str) -> str:
        # A caller's own max_tokens is lowered in place rather than adding a second cap.
        # OpenAI's reasoning models refuse max_tokens; other providers' OpenAI-compatible APIs
        # often know only max_tokens.
        if (
            given(kwargs, "max_tokens") is not None
            and given(kwargs, "max_completion_tokens") is None
        ):
            return "max_tokens"
        if provider in _OWN_CAP_PROVIDERS:
            return "max_completion_tokens"
        return "max_tokens"

    def response_outcome(self, response: object, capture: bool) -> Outcome:
        outcome = super().response_outcome(response, capture)
        choices = field(response, "choices") or ()
        reasons = [r for r in (field(c, "finish_reason") for c in choices) if isinstance(r, str)]
        if reasons:
            outcome.attributes[A.GEN_AI_RESPONSE_FINISH_REASONS] = reasons
        if capture:
            messages = [
                _content.output_message(
                    field(field(c, "message"), "content"),
                    field(c, "finish_reason"),
                    field(field(c, "message"), "tool_calls"),
                )
                for c in choices
            ]
            outcome.attributes[A.GEN_AI_OUTPUT_MESSAGES] = _content.to_json(messages)
        return outcome


class CompletionsOperation(Operation):
    name = A.OP_TEXT_COMPLETION
    stream_usage_option = True

    def accumulator(self, *, hide_usage_chunk: bool) -> Accumulator:
        return _CompletionsAccumulator(hide_usage_chunk=hide_usage_chunk)

    def implicit_cap(self, provider: str) -> int | None:
        # OpenAI's legacy Completions API answers with at most 16 tokens unless told otherwise.
        return 16 if provider in _OWN_CAP_PROVIDERS else None

    def choices(self, kwargs: Mapping[str, Any]) -> int:
        # best_of answers are generated (and billed); n of them are returned.
        n = whole(given(kwargs, "n"))
        best_of = whole(given(kwargs, "best_of"))
        return max(n or 1, best_of or 1, 1)

    def request_attributes(self, kwargs: Mapping[str, Any]) -> Attributes:
        attrs = super().request_attributes(kwargs)
        _set(attrs, A.GEN_AI_REQUEST_MAX_TOKENS, whole(given(kwargs, "max_tokens")))
        return attrs

    def input_content(self, kwargs: Mapping[str, Any]) -> Attributes:
        return {
            A.GEN_AI_INPUT_MESSAGES: _content.to_json(_content.prompt_input(kwargs.get("prompt")))
        }

    def response_outcome(self, response: object, capture: bool) -> Outcome:
        outcome = super().response_outcome(response, capture)
        choices = field(response, "choices") or ()
        reasons = [r for r in (field(c, "finish_reason") for c in choices) if isinstance(r, str)]
        if reasons:
            outcome.attributes[A.GEN_AI_RESPONSE_FINISH_REASONS] = reasons
        if capture:
            outcome.attributes[A.GEN_AI_OUTPUT_MESSAGES] = _content.to_json(
                [
                    _content.output_message(field(c, "text"), field(c, "finish_reason"))
                    for c in choices
                ]
            )
        return outcome


def _responses_finish_reason(response: object) -> str | None:
    status = field(response, "status")
    if status == "completed":
        output = field(response, "output") or ()
        if any(field(item, "type") == "function_call" for item in output):
            return "tool_calls"
        return "stop"
    if status == "incomplete":
        reason = field(field(response, "incomplete_details"), "reason")
        return {"max_output_tokens": "length", "content_filter": "content_filter"}.get(
            str(reason), "incomplete"
        )
    if status == "failed":
        return "error"
    return text(status)


class ResponsesOperation(Operation):
    name = A.OP_CHAT
    api_type = A.API_RESPONSES
    cap_params = ("max_output_tokens",)

    def request_attributes(self, kwargs: Mapping[str, Any]) -> Attributes:
        attrs = super().request_attributes(kwargs)
        _set(attrs, A.GEN_AI_REQUEST_MAX_TOKENS, whole(given(kwargs, "max_output_tokens")))
        text_config = given(kwargs, "text")
        _set(attrs, A.GEN_AI_OUTPUT_TYPE, _output_type(field(text_config, "format")))
        if given(kwargs, "text_format") is not None:
            attrs[A.GEN_AI_OUTPUT_TYPE] = "json"
        conversation = given(kwargs, "conversation")
        conversation_id = (
            conversation if isinstance(conversation, str) else field(conversation, "id")
        )
        _set(attrs, A.GEN_AI_CONVERSATION_ID, text(conversation_id))
        return attrs

    def input_content(self, kwargs: Mapping[str, Any]) -> Attributes:
        attrs: Attributes = {
            A.GEN_AI_INPUT_MESSAGES: _content.to_json(
                _content.responses_input(given(kwargs, "input"))
            )
        }
        instructions = _content.system_instructions(given(kwargs, "instructions"))
        if instructions:
            attrs[A.GEN_AI_SYSTEM_INSTRUCTIONS] = _content.to_json(instructions)
        return attrs

    def response_outcome(self, response: object, capture: bool) -> Outcome:
        outcome = super().response_outcome(response, capture)
        reason = _responses_finish_reason(response)
        if reason is not None:
            outcome.attributes[A.GEN_AI_RESPONSE_FINISH_REASONS] = [reason]
        _set(
            outcome.attributes,
            A.GEN_AI_CONVERSATION_ID,
            text(field(field(response, "conversation"), "id")),
        )
        if capture:
            outcome.attributes[A.GEN_AI_OUTPUT_MESSAGES] = _content.to_json(
                [_content.output_message(self.output_text(response), reason)]
            )
        return outcome

    def accumulator(self, *, hide_usage_chunk: bool) -> Accumulator:
        return _ResponsesAccumulator(hide_usage_chunk=hide_usage_chunk)

    def output_text(self, response: object) -> str:
        output = field(response, "output_text")
        if isinstance(output, str):
            return output
        return "".join(
            str(field(part, "text") or "")
            for item in field(response, "output") or ()
            if field(item, "type") == "message"
            for part in field(item, "content") or ()
        )

    def count_input(self, kwargs: Mapping[str, Any], model: str) -> Counted:
        return _input.responses(kwargs, model)

    def choices(self, kwargs: Mapping[str, Any]) -> int:
        return 1

    def cap_param(self, kwargs: Mapping[str, Any], provider: str) -> str:
        return "max_output_tokens"


class EmbeddingsOperation(Operation):
    name = A.OP_EMBEDDINGS
    cap_params = ()

    def count_input(self, kwargs: Mapping[str, Any], model: str) -> Counted:
        return _input.prompt(given(kwargs, "input"), model)

    def estimate_usage(self, kwargs: Mapping[str, Any], model: str, text: str | None) -> TokenUsage:
        return TokenUsage(input_tokens=self.input_tokens(kwargs, model), estimated=True)

    def request_attributes(self, kwargs: Mapping[str, Any]) -> Attributes:
        attrs: Attributes = {}
        encoding = given(kwargs, "encoding_format")
        if isinstance(encoding, str):
            attrs[A.GEN_AI_REQUEST_ENCODING_FORMATS] = [encoding]
        _set(attrs, A.GEN_AI_EMBEDDINGS_DIMENSION_COUNT, whole(given(kwargs, "dimensions")))
        return attrs

    def response_outcome(self, response: object, capture: bool) -> Outcome:
        attrs: Attributes = {}
        _set(attrs, A.GEN_AI_RESPONSE_MODEL, text(field(response, "model")))
        data = field(response, "data") or ()
        if data:
            vector = field(data[0], "embedding")
            if isinstance(vector, list):
                attrs[A.GEN_AI_EMBEDDINGS_DIMENSION_COUNT] = len(vector)  # pyright: ignore[reportUnknownArgumentType]
        return Outcome(attrs, from_openai(field(response, "usage")))


CHAT = ChatOperation()
RESPONSES = ResponsesOperation()
EMBEDDINGS = EmbeddingsOperation()
COMPLETIONS = CompletionsOperation()
