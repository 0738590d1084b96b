"""costspan: LLM spend made visible and bounded with OpenTelemetry.

Instrument the ``openai`` client once, and every call becomes a GenAI semantic-convention span
with token usage and USD cost::

    import costspan

    costspan.instrument()

Under ``opentelemetry-instrument`` no code change is needed: costspan registers the
``costspan_openai`` instrumentor entry point.
"""

from costspan._api import configure, instrument, uninstrument
from costspan._errors import UnpricedModelError, UnpricedModelWarning
from costspan._instrumentor import OpenAIInstrumentor
from costspan._processor import CostSpanProcessor
from costspan._version import __version__

__all__ = [
    "CostSpanProcessor",
    "OpenAIInstrumentor",
    "UnpricedModelError",
    "UnpricedModelWarning",
    "__version__",
    "configure",
    "instrument",
    "uninstrument",
]
