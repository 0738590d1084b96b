"""The wrapt wrappers around openai resource methods: one span per call, never a broken call.

``traced_sync``/``traced_async`` build the ``(wrapped, instance, args, kwargs)`` functions that
:mod:`costspan._instrumentor` installs. Each call is prepared (request attributes, provider, the
``include_usage`` injection), sent with the span current, and its result handed to :class:`Call`,
which ends the span now (a parsed response) or later (a stream, a raw response).

Telemetry must never break the user's call: preparing and handling are wrapped so that an error
in costspan is logged and the call goes on unobserved; the user's own exceptions are re-raised
unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any, Final, cast

from opentelemetry.instrumentation.utils import is_instrumentation_enabled
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.trace import NoOpTracerProvider

from costspan import _attributes as A
from costspan._admit import Admitted, Request, UserError, aadmit, admit
from costspan._coerce import given
from costspan._config import ContentCapture
from costspan._errors import BudgetExceeded, BudgetUnavailable, UnpricedModelError
from costspan._invocation import Invocation, error_type_of
from costspan._operations import Attributes, Operation
from costspan._providers import HostMap
from costspan._proxy import ObjectProxy
from costspan._reservation import await_writes
from costspan._runtime import runtime
from costspan._scopes import possibly_limited
from costspan._streams import AsyncStreamProxy, StreamState, SyncStreamProxy
from costspan._telemetry import Telemetry
from costspan._usage import TokenUsage

_logger = logging.getLogger(__name__)

_DEFAULT_PORTS = {"https": 443, "http": 80}


def _server_and_provider(instance: object, hosts: HostMap) -> Attributes:
    client = getattr(instance, "_client", None)
    url = getattr(client, "base_url", None)
    # A client keeps its base URL object: its attributes are worked out once per URL object
    # (and host map: configure() may name providers anew), not on every call.
    key: tuple[int, type, int] = (id(url), type(client), id(hosts))  # pyright: ignore
    cached = _servers.get(key)
    if cached is not None and cached[0] is url and cached[1] is hosts:
        return cached[2]
    host = getattr(url, "host", None)
    attrs: Attributes = {}
    if isinstance(host, str) and host:
        attrs[A.SERVER_ADDRESS] = host
        port = getattr(url, "port", None) or _DEFAULT_PORTS.get(str(getattr(url, "scheme", "")))
        if isinstance(port, int):
            attrs[A.SERVER_PORT] = port
    provider = hosts.provider(host if isinstance(host, str) else None)
    # The Azure client classes speak the Azure OpenAI protocol whatever the host.
    if type(client).__name__.startswith("Azure") and provider == "openai":
        provider = "azure.ai.openai"
    attrs[A.GEN_AI_PROVIDER_NAME] = provider
    if url is not None:
        if len(_servers) >= 256:  # a bound against clients made per call
            _servers.clear()
        _servers[key] = (url, hosts, attrs)
    return attrs


_servers: dict[tuple[int, type, int], tuple[object, HostMap, Attributes]] = {}


class Call:
    """One call in flight: the (possibly amended) kwargs, its invocation, and result handling."""

    __slots__ = (
        "capture",
        "hide_usage_chunk",
        "invocation",
        "kwargs",
        "operation",
        "stream",
        "view",
    )
    kwargs: dict[str, Any]
    """The arguments the call is sent with."""
    view: dict[str, Any]
    """The request as sent (:func:`sent_view`): what estimates and actions read and write."""

    def __init__(
        self,
        telemetry: Telemetry,
        operation: Operation,
        instance: object,
        kwargs: dict[str, Any],
    ) -> None:
        current = runtime()
        settings = current.settings
        kwargs = replayable(kwargs, operation)
        self.operation = operation
        self.capture = settings.capture_content is ContentCapture.SPAN
        self.stream = given(kwargs, "stream") is True
        self.hide_usage_chunk = False
        # What the client will send: ``extra_body`` is merged into the body last, so its keys
        # win over the arguments of the same name. Estimates, attributes and actions read and
        # write this view; the call is sent with :attr:`kwargs`.
        view = sent_view(kwargs)
        model = given(view, "model")
        model = model if isinstance(model, str) else None

        # The sampling-relevant attributes first. What describes the request may fail to be
        # read: that costs the span some attributes, never the span itself (nor the budget
        # check that needs it).
        attrs: Attributes = {A.GEN_AI_OPERATION_NAME: operation.name}
        try:
            attrs.update(_server_and_provider(instance, current.hosts))
        except Exception:
            _logger.exception("costspan could not read the client's server; provider is openai")
            attrs[A.GEN_AI_PROVIDER_NAME] = "openai"
        if model:
            attrs[A.GEN_AI_REQUEST_MODEL] = model
        if operation.api_type is not None:
            attrs[A.OPENAI_API_TYPE] = operation.api_type
        try:
            attrs.update(operation.request_attributes(view))
            if self.capture:
                attrs.update(operation.input_content(view))
        except Exception:
            _logger.exception("costspan could not read a request's attributes; the call goes on")

        if self.stream and operation.stream_usage_option and settings.inject_stream_usage:
            options = given(view, "stream_options")
            base: Mapping[str, Any] = (
                cast("Mapping[str, Any]", options) if isinstance(options, Mapping) else {}
            )
            if options is None or (base and not base.get("include_usage")):
                kwargs = write_back(kwargs, {"stream_options": {**base, "include_usage": True}})
                view = sent_view(kwargs)
                self.hide_usage_chunk = True
                attrs[A.COSTSPAN_STREAM_USAGE_INJECTED] = True
        self.kwargs = kwargs
        self.view = view

        name = f"{operation.name} {model}" if model else operation.name
        self.invocation = Invocation(
            telemetry, name, attrs, self._estimator(model or ""), self._counter(model or "")
        )
        self.invocation.attempts = _attempts(instance)

    def _estimator(self, model: str) -> Callable[[str | None], TokenUsage]:
        def estimate(text: str | None) -> TokenUsage:
            # Read at settlement: a budget action may have changed the request since.
            current = self.view.get("model")
            return self.operation.estimate_usage(
                self.view, current if isinstance(current, str) else model, text
            )

        return estimate

    def _counter(self, model: str) -> Callable[[], int]:
        def count() -> int:
            current = self.view.get("model")
            counted = self.operation.count_input(
                self.view, current if isinstance(current, str) else model
            )
            # A request with parts that cannot be counted (files, stored history) teaches nothing.
            return 0 if counted.unknown else counted.tokens

        return count

    def _request(self) -> Request | None:
        model = given(self.view, "model")
        if model is None:
            return None  # the client itself refuses a call without a model, before sending
        model = str(model)
        invocation = self.invocation
        # Actions rewrite the request (never the caller's dict): the view, written back into
        # the arguments the call is sent with once admitted (:meth:`_admitted`).
        if self.view is self.kwargs:
            self.kwargs = self.view = dict(self.kwargs)
        else:
            self.view = dict(self.view)
        # The call's trace names its per-request windows: only configured limits have those.
        limited = invocation.runtime.settings.limits.rules
        return Request(
            self.operation,
            self.view,
            model,
            invocation.provider,
            invocation.start_ns,
            invocation.span.get_span_context().trace_id if limited else 0,
        )

    def admit(self) -> None:
        """Reserve the call in every active budget; raise BudgetExceeded if one refuses."""
        if not possibly_limited():
            return  # no budget, limit or inbound budget: nothing to admit it to
        request = self._request()
        if request is None:
            return
        asked = request.model
        try:
            result = admit(request)
        except BaseException as exc:
            self._admission_failed(exc)
            raise
        self._admitted(asked, result)

    async def aadmit(self) -> None:
        """:meth:`admit` for async calls: never blocks the event loop on a shared ledger."""
        if not possibly_limited():
            return
        request = self._request()
        if request is None:
            return
        asked = request.model
        try:
            result = await aadmit(request)
        except BaseException as exc:
            self._admission_failed(exc)
            raise
        self._admitted(asked, result)

    def _admission_failed(self, exc: BaseException) -> None:
        if isinstance(exc, UserError):
            exc = exc.exc  # the user's own exception (an on_exceed callable): not sent
            self.invocation.fail(error_type_of(exc), str(exc), exception=exc)
        elif isinstance(exc, UnpricedModelError | BudgetExceeded) or not isinstance(exc, Exception):
            # Refused up front (or interrupted): not sent.
            self.invocation.fail(error_type_of(exc), str(exc), exception=exc)
        else:
            # Budgets could not be checked (see _uncheckable), and the span says so.
            self.invocation.pending[A.COSTSPAN_BUDGET_DECISION] = "unchecked"

    def _admitted(self, model: str, result: Admitted) -> None:
        refusal = self.invocation.admitted(result)
        if refusal is not None:
            raise refusal
        if self.view is not self.kwargs:
            before = sent_view(self.kwargs)
            changes = {k: v for k, v in self.view.items() if k not in before or before[k] is not v}
            if changes:
                self.kwargs = write_back(self.kwargs, changes)
        new_model = self.view.get("model")
        if isinstance(new_model, str) and new_model != model:
            self.invocation.rename(new_model, self.operation.name)

    def _stream_state(self) -> StreamState:
        return StreamState(
            self.invocation,
            self.operation.accumulator(hide_usage_chunk=self.hide_usage_chunk),
            self.capture,
        )

    def fail(self, exc: BaseException) -> None:
        try:
            self.invocation.fail(error_type_of(exc), str(exc) or None, exception=exc)
        except Exception:
            _logger.exception("costspan could not record a failed call")

    def finish_parsed(self, response: object) -> None:
        self.invocation.succeed(self.operation.response_outcome(response, self.capture))

    def handle(self, result: Any) -> Any:
        """Hand back ``result`` (or a transparent proxy of it); never raises."""
        try:
            kind = type(result).__name__
            if (
                kind == "LegacyAPIResponse"
            ):  # `.with_raw_response`: body already read unless streaming
                if self.stream:
                    return SyncRawResponseProxy(result, self)
                self.finish_parsed(result.parse())
                return result
            if kind == "APIResponse":  # `.with_streaming_response`: body not read yet
                return SyncRawResponseProxy(result, self)
            if kind == "AsyncAPIResponse":
                return AsyncRawResponseProxy(result, self)
            if self.stream:
                return self.wrap_stream(result)
            self.finish_parsed(result)
        except Exception:
            _logger.exception("costspan could not record an OpenAI response; the call goes on")
            self.invocation.succeed_unobserved()
        return result

    def wrap_stream(self, stream: Any) -> Any:
        if hasattr(stream, "__anext__"):
            return AsyncStreamProxy(stream, self._stream_state())
        if hasattr(stream, "__next__"):
            return SyncStreamProxy(stream, self._stream_state())
        self.finish_parsed(stream)
        return stream


class _RawResponseMixin:
    _self_call: Call
    _self_stream: Any

    def _self_take(self, parsed: Any) -> Any:
        call = self._self_call
        try:
            if call.stream:
                if self._self_stream is None:
                    self._self_stream = call.wrap_stream(parsed)
                return self._self_stream
            if not call.invocation.ended:
                call.finish_parsed(parsed)
        except Exception:
            _logger.exception("costspan could not record an OpenAI raw response")
        return parsed

    def _self_unread(self) -> None:
        # Closed or dropped without `parse()`: the request was sent, its usage stays unknown.
        call = self._self_call
        if not call.invocation.ended and self._self_stream is None:
            call.invocation.succeed_unobserved()


class SyncRawResponseProxy(_RawResponseMixin, ObjectProxy):
    """A raw response whose ``parse()`` reports usage (and whose streams are proxied)."""

    def __init__(self, wrapped: Any, call: Call) -> None:
        super().__init__(wrapped)
        self._self_call = call
        self._self_stream = None

    def parse(self, *, to: Any = None) -> Any:
        if to is not None:
            return self.__wrapped__.parse(to=to)
        return self._self_take(self.__wrapped__.parse())

    def close(self) -> None:
        try:
            self.__wrapped__.close()
        finally:
            self._self_unread()

    def __del__(self) -> None:
        self._self_unread()


class AsyncRawResponseProxy(_RawResponseMixin, ObjectProxy):
    """The async twin of :class:`SyncRawResponseProxy` (``AsyncAPIResponse.parse`` is async)."""

    def __init__(self, wrapped: Any, call: Call) -> None:
        super().__init__(wrapped)
        self._self_call = call
        self._self_stream = None

    async def parse(self, *, to: Any = None) -> Any:
        if to is not None:
            return await self.__wrapped__.parse(to=to)
        return self._self_take(await self.__wrapped__.parse())

    async def close(self) -> None:
        try:
            await self.__wrapped__.close()
        finally:
            self._self_unread()

    def __del__(self) -> None:
        self._self_unread()


_ITERABLE_ARGUMENTS: Final = ("messages", "input", "tools", "functions", "prompt")
"""Arguments openai accepts as any iterable (a generator among them)."""
_MESSAGE_ITERABLES: Final = ("content", "tool_calls")
"""Fields of a chat message openai accepts as any iterable (it lists them when it sends)."""


def _listed_messages(messages: list[Any] | tuple[Any, ...]) -> list[Any] | None:
    """Chat messages whose ``content`` or ``tool_calls`` can be read only once, with those
    listed (the messages copied, never changed); None when there are none."""
    fixed: list[Any] | None = None
    for i, message in enumerate(messages):
        if type(message) is not dict:
            continue
        fields = cast("dict[str, Any]", message)
        for name in _MESSAGE_ITERABLES:
            value = fields.get(name)
            if value is None or type(value) in (str, list, tuple, dict):
                continue
            if isinstance(value, Iterator):
                if fixed is None:
                    fixed = list(messages)
                fields = {**fields, name: list(cast("Iterator[Any]", value))}
                fixed[i] = fields
    return fixed


def replayable(kwargs: dict[str, Any], operation: Operation) -> dict[str, Any]:
    """``kwargs`` with every argument the client accepts as any iterable, and that can be read
    only once (a generator of messages, of tools, of a message's content parts or tool calls),
    turned into a list: costspan reads the request to count it, and the client must still send
    all of it. Only where the client itself lists iterables: a generator it would fail to send
    fails as it would without costspan. ``kwargs`` itself when there is none (the caller's own
    dicts and lists are never changed)."""
    out = kwargs
    responses = operation.api_type == A.API_RESPONSES
    for key in _ITERABLE_ARGUMENTS:
        value = kwargs.get(key)
        if value is None or type(value) is str:
            continue
        if responses and key == "input":
            continue  # the Responses client sends `input` as given: a generator fails there
        again: Any = value
        if type(value) not in (list, tuple, dict) and isinstance(value, Iterator):
            again = list(cast("Iterator[Any]", value))
        if key == "messages" and type(again) in (list, tuple):
            again = _listed_messages(again) or again
        if again is not value:
            if out is kwargs:
                out = dict(kwargs)
            out[key] = again
    return out


def _attempts(instance: object) -> int:
    """How many times the client behind a resource may send one request: 1 + its retries
    (the charge of a timed-out call; the ledger bounds the product)."""
    retries = getattr(getattr(instance, "_client", None), "max_retries", 0)
    return 1 + retries if type(retries) is int and retries > 0 else 1


def sent_view(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The request as the client sends it: ``kwargs`` with the string keys of ``extra_body``
    over them (the client merges ``extra_body`` into the body last). ``kwargs`` itself when
    ``extra_body`` overrides nothing."""
    extra = kwargs.get("extra_body")
    if not isinstance(extra, Mapping) or not extra:
        return kwargs
    body = cast("Mapping[object, Any]", extra)
    overrides = {k: v for k, v in body.items() if isinstance(k, str)}
    if not overrides:
        return kwargs
    view = {k: v for k, v in kwargs.items() if k != "extra_body"}
    view.update(overrides)
    return view


def write_back(kwargs: dict[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``kwargs`` with ``changes`` made where the client reads them: inside
    ``extra_body`` for the keys it sets (it would override an argument), else as arguments."""
    out = dict(kwargs)
    extra = kwargs.get("extra_body")
    body: dict[object, Any] = (
        dict(cast("Mapping[object, Any]", extra)) if isinstance(extra, Mapping) else {}
    )
    into_body = False
    for key, value in changes.items():
        if key in body:
            body[key] = value
            into_body = True
        else:
            out[key] = value
    if into_body:
        out["extra_body"] = body
    return out


_QUIET = Telemetry(NoOpTracerProvider(), NoOpMeterProvider())
"""No spans, no metrics: for calls made while instrumentation is suppressed."""


def _call(
    telemetry: Telemetry, operation: Operation, instance: object, kwargs: dict[str, Any]
) -> Call | None:
    if not is_instrumentation_enabled():
        # Suppressed instrumentation means no telemetry, not no control: under a budget or a
        # configured limit the call is still admitted and settled, without a span.
        if not possibly_limited():
            return None
        telemetry = _QUIET
    try:
        return Call(telemetry, operation, instance, kwargs)
    except Exception as exc:
        _uncheckable(exc, "costspan could not prepare a call")
        return None


def _uncheckable(exc: Exception, what: str) -> None:
    """A failure outside admission's own fail-safe handling: refused if the fail mode is
    ``closed`` and budgets may apply; otherwise logged (never silently unmetered)."""
    limited = possibly_limited()
    if limited and runtime().settings.fail_mode == "closed":
        raise BudgetUnavailable(
            scope="(unknown)",
            model="(unknown)",
            reason=f"{what} ({type(exc).__name__}: {exc})",
        ) from exc
    _logger.exception(
        "%s; it goes on %s", what, "unmetered" if limited else "without a span", exc_info=exc
    )


def _prepare(
    telemetry: Telemetry, operation: Operation, instance: object, kwargs: dict[str, Any]
) -> Call | None:
    call = _call(telemetry, operation, instance, kwargs)
    if call is None:
        return None
    try:
        call.admit()
    except (BudgetExceeded, UnpricedModelError):
        raise  # the deliberate refusals, before anything is sent
    except UserError as exc:
        raise exc.exc from None  # the user's on_exceed callable raised: theirs, unchanged
    except Exception as exc:
        _uncheckable(exc, "costspan could not check budgets")
    return call


async def _aprepare(
    telemetry: Telemetry, operation: Operation, instance: object, kwargs: dict[str, Any]
) -> Call | None:
    call = _call(telemetry, operation, instance, kwargs)
    if call is None:
        return None
    try:
        await call.aadmit()
    except (BudgetExceeded, UnpricedModelError):
        raise  # the deliberate refusals, before anything is sent
    except UserError as exc:
        raise exc.exc from None  # the user's on_exceed callable raised: theirs, unchanged
    except Exception as exc:
        _uncheckable(exc, "costspan could not check budgets")
    return call


Wrapper = Callable[[Callable[..., Any], Any, tuple[Any, ...], dict[str, Any]], Any]


def traced_sync(telemetry: Telemetry, operation: Operation) -> Wrapper:
    """A wrapt wrapper for a synchronous resource method of ``operation``."""

    def traced_method(
        wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        call = _prepare(telemetry, operation, instance, kwargs)
        if call is None:
            return wrapped(*args, **kwargs)
        call.invocation.activate()
        try:
            result = wrapped(*args, **call.kwargs)
        except BaseException as exc:
            call.fail(exc)
            raise
        finally:
            call.invocation.deactivate()
        return call.handle(result)

    return traced_method


def traced_async(telemetry: Telemetry, operation: Operation) -> Wrapper:
    """A wrapt wrapper for an ``async`` resource method of ``operation``."""

    async def traced_method(
        wrapped: Callable[..., Awaitable[Any]],
        instance: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        call = await _aprepare(telemetry, operation, instance, kwargs)
        if call is None:
            return await wrapped(*args, **kwargs)
        call.invocation.activate()
        try:
            result = await wrapped(*args, **call.kwargs)
        except BaseException as exc:
            call.fail(exc)
            raise
        finally:
            call.invocation.deactivate()
        handled = call.handle(result)
        await await_writes(call.invocation.admission)
        return handled

    return traced_method
