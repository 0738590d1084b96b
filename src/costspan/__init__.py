"""costspan: LLM spend made visible and bounded with OpenTelemetry.

Instrument the ``openai`` client once, and every call becomes a GenAI semantic-convention span
with token usage and USD cost::

    import costspan

    costspan.instrument()

Budgets are checked before a call is sent, and attribution travels in baggage::

    with costspan.budget(usd=0.50), costspan.tags(feature="search"):
        client.chat.completions.create(...)   # refused with BudgetExceeded if it could break $0.50

Under ``opentelemetry-instrument`` no code change is needed: costspan registers the
``costspan_openai`` instrumentor entry point.
"""

import typing as _typing

from costspan._api import configure, dropped_records, instrument, uninstrument
from costspan._baggage import tags
from costspan._budget import Budget, budget
from costspan._errors import (
    BudgetExceeded,
    BudgetUnavailable,
    UnpricedModelError,
    UnpricedModelWarning,
)
from costspan._estimate import Estimate, estimate
from costspan._processor import CostSpanProcessor
from costspan._records import SpendRecord
from costspan._report import Report, ReportRow, report
from costspan._version import __version__

if _typing.TYPE_CHECKING:
    from costspan._instrumentor import OpenAIInstrumentor


def __getattr__(name: str) -> _typing.Any:
    # The instrumentor is loaded when asked for (instrument() loads it too): it brings wrapt,
    # opentelemetry-instrumentation and packaging, which `import costspan` need not pay for.
    if name == "OpenAIInstrumentor":
        from costspan._instrumentor import OpenAIInstrumentor

        globals()[name] = OpenAIInstrumentor
        return OpenAIInstrumentor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), "OpenAIInstrumentor"})


__all__ = [
    "Budget",
    "BudgetExceeded",
    "BudgetUnavailable",
    "CostSpanProcessor",
    "Estimate",
    "OpenAIInstrumentor",
    "Report",
    "ReportRow",
    "SpendRecord",
    "UnpricedModelError",
    "UnpricedModelWarning",
    "__version__",
    "budget",
    "configure",
    "dropped_records",
    "estimate",
    "instrument",
    "report",
    "tags",
    "uninstrument",
]
