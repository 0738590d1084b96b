"""Inbound baggage is untrusted: hostile budget entries are ignored, never raised, never loosen."""

from __future__ import annotations

import logging
from decimal import Decimal
from urllib.parse import quote

import openai
import pytest
from opentelemetry import baggage, context, propagate
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import costspan
from costspan import BudgetExceeded, _runtime
from costspan._baggage import inbound_budgets
from costspan.testing import OpenAICompatibleServer
from tests.conftest import USER, attrs, counter_points
from tests.inbound import inbound

pytestmark = pytest.mark.usefixtures("instrumented", "fresh_ledger")

TIGHT = "0123456789abcdef:0.00001:-:block"


def _budgets(value: str) -> str:
    return "costspan.budgets=" + quote(value, safe="")


def _call(client: openai.OpenAI) -> None:
    client.chat.completions.create(model="gpt-4o", messages=USER, max_completion_tokens=500)


def test_a_valid_inbound_budget_is_enforced(
    client: openai.OpenAI, server: OpenAICompatibleServer
) -> None:
    """A budget from an upstream service refuses a call that could break it; nothing sent."""
    with inbound(_budgets(TIGHT)), pytest.raises(BudgetExceeded) as caught:
        _call(client)
    assert caught.value.budget is None
    assert caught.value.scope == "0123456789abcdef"
    assert server.requests == []


@pytest.mark.parametrize(
    "entry",
    [
        "garbage",
        "0123456789abcdef:0.00001:-",  # missing action
        "NOT-AN-ID!:0.00001:-:block",
        "0123456789abcdef:-0.5:-:block",
        "0123456789abcdef:NaN:-:block",
        "0123456789abcdef:Infinity:-:block",
        "0123456789abcdef:1e30:-:block",
        "0123456789abcdef:-:-12:block",
        "0123456789abcdef:-:99999999999999999999:block",
        "0123456789abcdef:-:-:block",
        "0123456789abcdef:0.00001:-:explode",
        "0123456789abcdef:0.00001:-:" + "x" * 2000,
        "0123456789abcdef:0x10:-:block",
    ],
)
def test_hostile_entries_are_ignored_with_a_warning_and_a_metric(
    entry: str,
    client: openai.OpenAI,
    caplog: pytest.LogCaptureFixture,
    metric_reader: InMemoryMetricReader,
) -> None:
    """Malformed, negative, absurd or oversized entries never raise and never apply."""
    _runtime.reset()
    with caplog.at_level(logging.WARNING), inbound(_budgets(entry)):
        _call(client)  # not refused: the entry does not count
    assert "ignored a budget entry in inbound baggage" in caplog.text
    rejected = counter_points(metric_reader, "costspan.baggage.rejected")
    assert sum(p.value for p in rejected) >= 1


def test_a_hostile_entry_does_not_hide_a_valid_one(client: openai.OpenAI) -> None:
    """Garbage next to a real budget is dropped; the real budget still applies."""
    with inbound(_budgets("garbage," + TIGHT)), pytest.raises(BudgetExceeded):
        _call(client)


def test_too_many_budgets_are_cut(client: openai.OpenAI) -> None:
    """At most eight inbound budgets are read; a flood cannot make each call check dozens."""
    flood = ",".join(f"{i:016x}:1000:-:block" for i in range(20))
    with inbound(_budgets(flood)):
        assert len(inbound_budgets()) == 8
        _call(client)


def test_inbound_baggage_cannot_loosen_a_local_budget(client: openai.OpenAI) -> None:
    """An entry naming a local budget's id with a huge cap changes nothing: the local one wins."""
    with costspan.budget(usd="0.00001") as local:
        forged = f"{local.id}:1000000:-:warn"
        token = context.attach(baggage.set_baggage("costspan.budgets", forged))
        try:
            with costspan.budget(usd=1000), pytest.raises(BudgetExceeded):
                _call(client)
        finally:
            context.detach(token)


def test_inbound_baggage_cannot_raise_a_scope_it_reuses(client: openai.OpenAI) -> None:
    """Two requests naming the same scope: the larger cap of the second never loosens it."""
    with inbound(_budgets(TIGHT)), pytest.raises(BudgetExceeded):
        _call(client)
    loosened = "0123456789abcdef:1000:-:block"
    with inbound(_budgets(loosened)), pytest.raises(BudgetExceeded):
        _call(client)


def test_distrust_switch_ignores_inbound_budgets(
    client: openai.OpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """COSTSPAN_TRUST_INBOUND_BUDGETS=false: baggage budgets are not enforced at all."""
    monkeypatch.setenv("COSTSPAN_TRUST_INBOUND_BUDGETS", "false")
    costspan.configure()
    with inbound(_budgets(TIGHT)):
        _call(client)


def test_oversized_attribution_values_are_not_copied(
    client: openai.OpenAI, span_exporter: InMemorySpanExporter
) -> None:
    """A hostile user.id of 4000 characters does not land on spans; a normal one does."""
    header = "user.id=" + "u" * 4000 + ",feature=search"
    with inbound(header):
        client.chat.completions.create(model="gpt-4o-mini", messages=USER)
    recorded = attrs(span_exporter.get_finished_spans()[0])
    assert "user.id" not in recorded
    assert recorded["feature"] == "search"


def test_an_oversized_budgets_value_is_dropped_whole(client: openai.OpenAI) -> None:
    """A budgets entry longer than any real one is refused as a whole, not parsed."""
    flood = ",".join(f"{i:016x}:0.00001:-:block" for i in range(60))
    with inbound(_budgets(flood)):
        assert inbound_budgets() == []
        _call(client)


def test_a_budget_name_travels_sanitised_and_hostile_names_are_rejected() -> None:
    """A budget's name crosses services in its baggage entry, sanitised and bounded; an inbound
    name outside that alphabet rejects the whole entry."""
    from costspan._baggage import parse_budget_entry

    entry = costspan.budget(usd="0.01", name="checkout: EU/web ✓").baggage_entry()
    assert entry.endswith(":checkout--EU-web")
    parsed = parse_budget_entry(entry)
    assert not isinstance(parsed, str)
    assert parsed.label.startswith("checkout--EU-web #")
    assert parse_budget_entry("0123456789abcdef:0.01:-:block:<script>") == "bad name"
    assert parse_budget_entry("0123456789abcdef:0.01:-:block:" + "a" * 33) == "bad name"


def test_a_refusal_says_what_is_held_by_calls_in_flight(client: openai.OpenAI) -> None:
    """The refusal names the budget, its cap, what was spent and what calls in flight hold."""
    b = costspan.budget(usd="0.0003")
    with b:
        stream = client.chat.completions.create(  # still open: its hold stays
            model="gpt-4o-mini", messages=USER, max_completion_tokens=300, stream=True
        )
        with pytest.raises(BudgetExceeded) as caught:
            client.chat.completions.create(
                model="gpt-4o-mini", messages=USER, max_completion_tokens=300
            )
        with pytest.raises(BudgetExceeded) as never:
            client.chat.completions.create(model="gpt-4o", messages=USER, max_completion_tokens=500)
        stream.close()
    message = str(caught.value)
    assert f"budget '$0.0003 budget #{b.id[:8]}'" in message
    assert "left of $0.0003" in message
    assert "held by calls in flight" in message
    assert caught.value.held_usd > 0
    assert caught.value.cap_usd == Decimal("0.0003")
    assert "could never fit" in str(never.value)  # $0.005 for a $0.0003 budget


@pytest.mark.parametrize("padding", ["pairs", "bytes"])
def test_padding_the_incoming_baggage_cannot_push_a_budget_out(padding: str) -> None:
    """OpenTelemetry sends at most 180 entries and 8,192 bytes and drops what comes last: a
    client padding its baggage must not push this service's budget and tags out of what the
    next service receives."""
    if padding == "pairs":
        header = ",".join(f"pad{i}=x" for i in range(400))
    else:
        header = ",".join(f"pad{i}=" + "x" * 4000 for i in range(2))
    with inbound(header), costspan.budget(usd="0.001") as b, costspan.tags({"user.id": "u-1"}):
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
    downstream = propagate.extract(carrier)
    assert baggage.get_baggage("costspan.budgets", downstream) == b.baggage_entry()
    assert baggage.get_baggage("user.id", downstream) == "u-1"
