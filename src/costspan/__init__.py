"""costspan: LLM spend made visible and bounded with OpenTelemetry.

Instrument the ``openai`` client once, and every call becomes a GenAI semantic-convention span
with token usage::

    import costspan

    costspan.instrument()

Under ``opentelemetry-instrument`` no code change is needed: costspan registers the
``costspan_openai`` instrumentor entry point.
"""

from costspan._api import configure, instrument, uninstrument
from costspan._instrumentor import OpenAIInstrumentor
from costspan._version import __version__

__all__ = [
    "OpenAIInstrumentor",
    "__version__",
    "configure",
    "instrument",
    "uninstrument",
]
