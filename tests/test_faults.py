"""Telemetry never breaks the user's call: faults injected at every seam where costspan's own
code runs during a call.

For each seam, a call made through the real openai client (plain and streamed, under a budget):
the user gets their result, exactly one span ends, and the budget's hold is settled (committed
or released), never left to its lease. The faults are injected into costspan's own functions,
never into the openai client. Each test fails if the guard around its seam is removed: the
exception would reach the caller, the span would not end, or the hold would stay.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from decimal import Decimal
from typing import Any

import openai
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import costspan
from costspan import _invocation, _operations, _processor, _records, _telemetry
from costspan._runtime import set_ledger
from costspan.ledgers import CommitCode, MemoryLedger, Reservation, ScopeLimit
from costspan.testing import OpenAICompatibleServer
from tests.conftest import USER

pytestmark = pytest.mark.usefixtures("instrumented")


class Injected(RuntimeError):
    """The fault costspan's own code raises at the seam under test."""


class FaultyLedger(MemoryLedger):
    """A real memory ledger whose chosen operation fails ``times`` times (then works)."""

    def __init__(self, operation: str, times: int = 1) -> None:
        super().__init__()
        self.operation = operation
        self.left = times

    def _maybe_fail(self, operation: str) -> None:
        if operation == self.operation and self.left > 0:
            self.left -= 1
            raise Injected(f"injected fault in ledger.{operation}")

    def reserve(
        self,
        rid: str,
        scopes: Sequence[ScopeLimit],
        usd_micros: int,
        tokens: int,
        lease_s: float,
    ) -> Reservation:
        self._maybe_fail("reserve")
        return super().reserve(rid, scopes, usd_micros, tokens, lease_s)

    def commit(
        self, rid: str, usd_micros: int, tokens: int, scopes: Sequence[ScopeLimit] = ()
    ) -> CommitCode:
        self._maybe_fail("commit")
        return super().commit(rid, usd_micros, tokens, scopes)


def _boom(*_args: Any, **_kwargs: Any) -> Any:
    raise Injected("injected fault")


# seam name -> how to inject it (monkeypatch) ; "ledger:<op>" seams use a FaultyLedger instead.
SEAMS: dict[str, Callable[[pytest.MonkeyPatch], None]] = {
    "prepare": lambda mp: mp.setattr(_operations.ChatOperation, "request_attributes", _boom),
    "estimate": lambda mp: mp.setattr(_operations.ChatOperation, "count_input", _boom),
    "price": lambda mp: mp.setattr(_invocation, "price_usage", _boom),
    "record": lambda mp: mp.setattr(_records.Recorder, "add", _boom),
    "cost metrics": lambda mp: mp.setattr(_telemetry.CostMeter, "record", _boom),
    "call metrics": lambda mp: mp.setattr(_telemetry.Telemetry, "record_call", _boom),
    "attribution": lambda mp: mp.setattr(_invocation, "attribution", _boom),
    "processor": lambda mp: mp.setattr(_processor.gate, "start", _boom),
    "stream chunk": lambda mp: mp.setattr(_operations._ChoicesAccumulator, "feed", _boom),
    "stream outcome": lambda mp: mp.setattr(
        _operations._ChoicesAccumulator,
        "outcome",
        _boom,
    ),
}
LEDGER_SEAMS = ("ledger:reserve", "ledger:commit")


@pytest.fixture(name="ledger")
def _ledger(request: pytest.FixtureRequest) -> Iterator[MemoryLedger]:
    seam = str(getattr(request, "param", ""))
    ledger = FaultyLedger(seam.partition(":")[2]) if seam.startswith("ledger:") else MemoryLedger()
    set_ledger(ledger)
    yield ledger
    set_ledger(None)


def _inject(seam: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if seam in SEAMS:
        SEAMS[seam](monkeypatch)


def _held(budget: costspan.Budget) -> Decimal:
    """What the budget still holds for calls in flight (its cap less spend less room)."""
    assert budget.usd is not None
    assert budget.remaining_usd is not None
    return budget.usd - budget.spent_usd - budget.remaining_usd


ALL = [*SEAMS, *LEDGER_SEAMS]


@pytest.mark.parametrize("ledger", ALL, indirect=True, ids=ALL)
def test_a_fault_never_breaks_a_plain_call(
    ledger: MemoryLedger,
    request: pytest.FixtureRequest,
    client: openai.OpenAI,
    server: OpenAICompatibleServer,
    span_exporter: InMemorySpanExporter,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A plain call under a budget: answered, one span, the hold settled, the fault logged."""
    seam = request.node.callspec.params["ledger"]
    _inject(seam, monkeypatch)
    with caplog.at_level(logging.ERROR), costspan.budget(usd=1) as b:
        response = client.chat.completions.create(model="gpt-4o-mini", messages=USER)
    assert response.choices[0].message.content
    assert len(server.requests) == 1
    (span,) = span_exporter.get_finished_spans()
    assert span.name == "chat gpt-4o-mini"
    assert _held(b) == 0
    _still_described(seam, span.attributes or {})
    if not seam.startswith("stream"):  # a plain call reads no stream
        assert any("injected fault" in str(r.exc_info) for r in caplog.records if r.exc_info)


@pytest.mark.parametrize("ledger", ALL, indirect=True, ids=ALL)
def test_a_fault_never_breaks_a_stream(
    ledger: MemoryLedger,
    request: pytest.FixtureRequest,
    client: openai.OpenAI,
    server: OpenAICompatibleServer,
    span_exporter: InMemorySpanExporter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A streamed call under a budget: every chunk reaches the caller, one span, hold settled."""
    seam = request.node.callspec.params["ledger"]
    _inject(seam, monkeypatch)
    with costspan.budget(usd=1) as b:
        stream = client.chat.completions.create(model="gpt-4o-mini", messages=USER, stream=True)
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text
    assert len(server.requests) == 1
    (span,) = span_exporter.get_finished_spans()
    assert span.name == "chat gpt-4o-mini"
    assert _held(b) == 0
    _still_described(seam, span.attributes or {})


def _still_described(seam: str, attributes: Mapping[str, Any]) -> None:
    """A fault in one step costs the span only what that step writes: usage is on every span,
    and cost on every span whose pricing did not fail."""
    assert "gen_ai.usage.input_tokens" in attributes
    if seam != "price":
        assert "gen_ai.usage.cost.amount" in attributes


@pytest.mark.parametrize("seam", ["price", "stream outcome", "ledger:commit"])
def test_a_call_sent_is_charged_even_when_a_step_fails(
    seam: str,
    client: openai.OpenAI,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Spend is never lost to a fault: a call whose price (or outcome) could not be computed is
    charged its worst case; a commit that failed once is retried."""
    ledger = FaultyLedger(seam.partition(":")[2]) if seam.startswith("ledger:") else MemoryLedger()
    set_ledger(ledger)
    try:
        _inject(seam, monkeypatch)
        with costspan.budget(usd=1) as b:
            stream = client.chat.completions.create(
                model="gpt-4o-mini", messages=USER, stream=True, max_completion_tokens=100
            )
            for _ in stream:
                pass
        assert b.calls == 1
        assert b.spent_usd > 0
        assert _held(b) == 0
    finally:
        set_ledger(None)


def test_a_fault_in_a_raw_response_still_ends_the_span(
    client: openai.OpenAI,
    span_exporter: InMemorySpanExporter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`with_raw_response` whose parsing costspan cannot read: the caller's parse() works and the
    span ends (with estimated usage)."""
    monkeypatch.setattr(_operations.ChatOperation, "response_outcome", _boom)
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=USER)
    assert raw.parse().choices[0].message.content
    (span,) = span_exporter.get_finished_spans()
    assert span.attributes is not None
    assert span.attributes["costspan.usage.missing"] is True
