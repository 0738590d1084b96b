"""``OpenAIInstrumentor``: installs costspan's wrappers on the openai resource classes.

Registered under the ``opentelemetry_instrumentor`` entry point ``costspan_openai`` so that
``opentelemetry-instrument`` loads it. The wrappers go on the *classes* (``Completions.create``…),
not on client instances, so every client sees them: clients made before or after instrumenting,
``client.with_options(...)`` copies, and ``with_raw_response``/``with_streaming_response`` calls
(which call the same resource methods).
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Collection
from typing import Any, Final, NamedTuple

from opentelemetry.instrumentation.instrumentor import BaseInstrumentor
from opentelemetry.instrumentation.utils import unwrap
from wrapt import wrap_function_wrapper

from costspan import _operations as ops
from costspan._runtime import add_enforcer, remove_enforcer, warm_up
from costspan._telemetry import Telemetry
from costspan._wrappers import traced_async, traced_sync

_logger = logging.getLogger(__name__)

_INSTRUMENTS: Final = ("openai >= 1.66, < 4",)


class Target(NamedTuple):
    """One method to wrap: where it lives, which operation it is, and whether it is async."""

    modules: tuple[str, ...]  # module paths tried in order (the SDK moved some between releases)
    cls: str
    method: str
    operation: ops.Operation
    is_async: bool


_CHAT = ("openai.resources.chat.completions.completions", "openai.resources.chat.completions")
_RESPONSES = ("openai.resources.responses.responses", "openai.resources.responses")
_EMBEDDINGS = ("openai.resources.embeddings",)
_LEGACY = ("openai.resources.completions",)
# openai 1.66 to 1.91 keep the chat parse() helper in beta, and it posts directly; from 1.92 on
# the module is gone and parse() lives on chat.completions (never both: nothing is wrapped twice).
_BETA_CHAT = ("openai.resources.beta.chat.completions",)

TARGETS: Final = (
    Target(_CHAT, "Completions", "create", ops.CHAT, False),
    Target(_CHAT, "AsyncCompletions", "create", ops.CHAT, True),
    # `parse()` posts directly instead of going through `create()`, so it needs its own wrapper.
    Target(_CHAT, "Completions", "parse", ops.CHAT, False),
    Target(_CHAT, "AsyncCompletions", "parse", ops.CHAT, True),
    Target(_BETA_CHAT, "Completions", "parse", ops.CHAT, False),
    Target(_BETA_CHAT, "AsyncCompletions", "parse", ops.CHAT, True),
    # The Responses `stream()` helper calls `create(stream=True)`: wrapping `create` covers it
    # without nesting a second span. `parse()` posts directly.
    Target(_RESPONSES, "Responses", "create", ops.RESPONSES, False),
    Target(_RESPONSES, "AsyncResponses", "create", ops.RESPONSES, True),
    Target(_RESPONSES, "Responses", "parse", ops.RESPONSES, False),
    Target(_RESPONSES, "AsyncResponses", "parse", ops.RESPONSES, True),
    Target(_EMBEDDINGS, "Embeddings", "create", ops.EMBEDDINGS, False),
    Target(_EMBEDDINGS, "AsyncEmbeddings", "create", ops.EMBEDDINGS, True),
    Target(_LEGACY, "Completions", "create", ops.COMPLETIONS, False),
    Target(_LEGACY, "AsyncCompletions", "create", ops.COMPLETIONS, True),
)


def _owner(target: Target) -> tuple[str, type] | None:
    for name in target.modules:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        cls = getattr(module, target.cls, None)
        if isinstance(cls, type) and callable(getattr(cls, target.method, None)):
            return name, cls
    return None


class OpenAIInstrumentor(BaseInstrumentor):
    """Instruments the ``openai`` client with GenAI semantic-convention spans and metrics.

    ``instrument(tracer_provider=..., meter_provider=...)`` uses the global providers when none
    are given. Instrumenting twice is a warning and a no-op; ``uninstrument()`` restores the
    original methods.
    """

    _wrapped: list[type | Any]

    def instrumentation_dependencies(self) -> Collection[str]:
        return _INSTRUMENTS

    def _instrument(self, **kwargs: Any) -> None:
        add_enforcer(self)
        telemetry = Telemetry(kwargs.get("tracer_provider"), kwargs.get("meter_provider"))
        self._wrapped = []
        for target in TARGETS:
            found = _owner(target)
            if found is None:
                _logger.debug("openai has no %s.%s; not instrumented", target.cls, target.method)
                continue
            module, cls = found
            factory = traced_async if target.is_async else traced_sync
            wrap_function_wrapper(
                module, f"{target.cls}.{target.method}", factory(telemetry, target.operation)
            )
            self._wrapped.append((cls, target.method))
        # instrument() and opentelemetry-instrument both come here: the tokenizer and the price
        # tables load in the background while the application starts (started last, so that
        # instrumenting itself does not share the interpreter with it).
        warm_up()

    def _uninstrument(self, **kwargs: Any) -> None:
        remove_enforcer(self)
        for cls, method in getattr(self, "_wrapped", []):
            unwrap(cls, method)
        self._wrapped = []
