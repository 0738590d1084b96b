"""Proxies around openai ``Stream``/``AsyncStream`` that end the call's span when the stream ends.

A stream can end five ways, and each ends the span exactly once: exhausted (``completed``), a read
error (failed with the error), ``close()`` or leaving its ``with`` block early (``closed``),
leaving the ``with`` block by an exception (failed), or being garbage-collected unconsumed
(``abandoned``: failed with ``error.type=_OTHER``, like the official instrumentation). The proxy
also hides the usage-only final chunk that costspan asked for on the caller's behalf.

The proxies are :class:`wrapt.ObjectProxy` subclasses, so ``isinstance(proxy, openai.Stream)``,
``proxy.response`` and every other attribute behave as on the real stream.
"""

from __future__ import annotations

import logging
from types import TracebackType
from typing import Any

from costspan import _attributes as A
from costspan._invocation import Invocation, error_type_of
from costspan._operations import Accumulator, Outcome
from costspan._proxy import ObjectProxy
from costspan._reservation import await_writes
from costspan._usage import TokenUsage

_logger = logging.getLogger(__name__)


class StreamState:
    """What both proxies share: the invocation, the accumulator and the ending logic."""

    __slots__ = ("accumulator", "capture", "invocation")

    def __init__(self, invocation: Invocation, accumulator: Accumulator, capture: bool) -> None:
        self.invocation = invocation
        self.accumulator = accumulator
        self.capture = capture

    def feed(self, chunk: object) -> bool:
        """Record a chunk; True when it must be hidden from the caller. Never raises."""
        try:
            invocation = self.invocation
            if invocation.first_chunk_at is None:
                invocation.mark_first_chunk()
            return self.accumulator.feed(chunk)
        except Exception:
            _logger.exception("costspan could not read a stream chunk; the stream goes on")
            return False

    def _outcome(self, how: str) -> Outcome:
        """What the stream said, however it ended. Never raises: an accumulator that cannot
        build its outcome still hands over the usage it saw, so the call is accounted for."""
        try:
            outcome = self.accumulator.outcome(self.capture)
        except Exception:
            _logger.exception("costspan could not read a stream's outcome; usage is estimated")
            usage = getattr(self.accumulator, "usage", None)
            outcome = Outcome({}, usage if isinstance(usage, TokenUsage) else None)
        outcome.attributes[A.COSTSPAN_STREAM_OUTCOME] = how
        return outcome

    def finish(self, how: str) -> None:
        try:
            self.invocation.succeed(self._outcome(how))
        except Exception:
            _logger.exception("costspan could not end a stream span")

    def fail(self, exc: BaseException | None, how: str) -> None:
        try:
            outcome = self._outcome(how)
            if exc is None:
                self.invocation.fail(A.ERROR_TYPE_OTHER, f"{how} stream", outcome)
            else:
                self.invocation.fail(error_type_of(exc), str(exc), outcome, exception=exc)
        except Exception:
            _logger.exception("costspan could not end a stream span")

    def abandon(self, stream: object) -> None:
        if self.invocation.ended:
            return
        # The SDK's stream helpers (chat.completions.stream()) close the HTTP response directly,
        # not the stream: a closed response means the caller closed it, not that it was dropped.
        if getattr(getattr(stream, "response", None), "is_closed", False):
            self.finish("closed")
        else:
            self.fail(None, "abandoned")


class SyncStreamProxy(ObjectProxy):
    """Wraps ``openai.Stream`` (and anything iterable with ``close()``)."""

    _self_state: StreamState

    def __init__(self, wrapped: Any, state: StreamState) -> None:
        super().__init__(wrapped)
        self._self_state = state

    def __iter__(self) -> SyncStreamProxy:
        return self

    def __next__(self) -> Any:
        state = self._self_state
        while True:
            try:
                chunk = self.__wrapped__.__next__()
            except StopIteration:
                state.finish("completed")
                raise
            except BaseException as exc:
                state.fail(exc, "error")
                raise
            if not state.feed(chunk):
                return chunk

    def close(self) -> None:
        try:
            self.__wrapped__.close()
        finally:
            if not self._self_state.invocation.ended:
                self._self_state.finish("closed")

    def __enter__(self) -> SyncStreamProxy:
        self.__wrapped__.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self.__wrapped__.__exit__(exc_type, exc, tb)
        finally:
            if exc is not None:
                self._self_state.fail(exc, "error")
            elif not self._self_state.invocation.ended:
                self._self_state.finish("closed")

    def __del__(self) -> None:
        self._self_state.abandon(self.__wrapped__)


class AsyncStreamProxy(ObjectProxy):
    """Wraps ``openai.AsyncStream``."""

    _self_state: StreamState

    def __init__(self, wrapped: Any, state: StreamState) -> None:
        super().__init__(wrapped)
        self._self_state = state

    def __aiter__(self) -> AsyncStreamProxy:
        return self

    async def __anext__(self) -> Any:
        state = self._self_state
        while True:
            try:
                chunk = await self.__wrapped__.__anext__()
            except StopAsyncIteration:
                state.finish("completed")
                await await_writes(state.invocation.admission)
                raise
            except BaseException as exc:
                state.fail(exc, "error")
                raise
            if not state.feed(chunk):
                return chunk

    async def close(self) -> None:
        try:
            await self.__wrapped__.close()
        finally:
            if not self._self_state.invocation.ended:
                self._self_state.finish("closed")

    async def __aenter__(self) -> AsyncStreamProxy:
        await self.__wrapped__.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self.__wrapped__.__aexit__(exc_type, exc, tb)
        finally:
            if exc is not None:
                self._self_state.fail(exc, "error")
            elif not self._self_state.invocation.ended:
                self._self_state.finish("closed")

    def __del__(self) -> None:
        self._self_state.abandon(self.__wrapped__)
