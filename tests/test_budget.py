"""Budgets: refused before sending, actions, nesting, decorators, streams, visibility."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Generator, Iterator, Mapping
from decimal import Decimal
from typing import Any

import openai
import pytest
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

import costspan
from costspan import BudgetExceeded, UnpricedModelError, _runtime
from costspan._estimate import DEFAULT_OUTPUT_TOKENS
from costspan.ledgers import MemoryLedger
from costspan.testing import OpenAICompatibleServer
from tests.conftest import USER, attrs, counter_points
from tests.transport import answering, http_package

pytestmark = pytest.mark.usefixtures("instrumented", "fresh_ledger")

LONG = {"x-costspan-test-output-tokens": "400"}


def _cost(span: Any) -> float:
    return float(attrs(span).get("gen_ai.usage.cost.amount", 0.0))


# -- creation -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "needs a cap"),
        ({"usd": -1}, "finite amount >= 0"),
        ({"usd": "abc"}, "not a number"),
        ({"usd": float("nan")}, "finite amount"),
        ({"tokens": -5}, "whole number"),
        ({"tokens": 1.5}, "whole number"),
        ({"usd": 1, "on_exceed": "explode"}, "on_exceed must be one of"),
        ({"usd": 1, "on_exceed": "downgrade"}, "needs downgrade"),
        ({"usd": 1, "downgrade": {"gpt-4o": 3}}, "downgrade must map"),
        ({"usd": 1, "warn_at": (0.5, 2)}, "warn_at"),
        ({"usd": 1, "name": ""}, "name must be"),
    ],
)
def test_bad_configuration_is_a_value_error(kwargs: dict[str, Any], message: str) -> None:
    """A budget that cannot work is rejected when it is made, never a silent no-op."""
    with pytest.raises(ValueError, match=message):
        costspan.budget(**kwargs)


def test_caps_are_decimal() -> None:
    """USD caps keep their exact decimal value."""
    assert costspan.budget(usd="0.10").usd == Decimal("0.10")
    assert costspan.budget(usd=0.1).usd == Decimal("0.1")


# -- block --------------------------------------------------------------------------------------
def test_block_refuses_before_sending(
    client: openai.OpenAI, server: OpenAICompatibleServer, span_exporter: InMemorySpanExporter
) -> None:
    """A call that could break the cap raises BudgetExceeded and never reaches the server."""
    with costspan.budget(usd="0.0001", name="tight") as b, pytest.raises(BudgetExceeded) as caught:
        client.chat.completions.create(model="gpt-4o", messages=USER, max_completion_tokens=500)
    assert server.requests == []
    error = caught.value
    assert error.budget is b
    assert error.scope == "tight"
    assert error.remaining_usd == Decimal("0.0001")
    assert error.estimate_usd is not None
    assert error.estimate_usd > Decimal("0.0001")
    assert "refused before it was sent" in str(error)
    (span,) = span_exporter.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert attrs(span)["error.type"] == "BudgetExceeded"
    assert attrs(span)["costspan.budget.decision"] == "refuse"
    assert attrs(span)["costspan.budget.refused_by"] == "tight"
    assert b.calls == 0


def test_spend_and_remaining_are_tracked(
    client: openai.OpenAI, span_exporter: InMemorySpanExporter
) -> None:
    """spent_usd equals the spans' cost; remaining is the cap less it; calls count settlements."""
    with costspan.budget(usd="0.05", tokens=100_000) as b:
        for _ in range(3):
            client.chat.completions.create(model="gpt-4o-mini", messages=USER)
    spans = span_exporter.get_finished_spans()
    spent = sum(Decimal(repr(_cost(s))) for s in spans)
    assert abs(b.spent_usd - spent) <= Decimal("0.000003")  # micro-dollar rounding per call
    assert b.remaining_usd == Decimal("0.05") - b.spent_usd
    tokens = sum(
        attrs(s)["gen_ai.usage.input_tokens"] + attrs(s)["gen_ai.usage.output_tokens"]
        for s in spans
    )
    assert b.spent_tokens == tokens
    assert b.remaining_tokens == 100_000 - tokens
    assert b.calls == 3
    # Each span says what was left after it, as the ledger reported it (no extra round trip).
    left = [attrs(s)["costspan.budget.remaining_usd"] for s in spans]
    assert left == sorted(left, reverse=True)
    assert b.remaining_usd is not None
    assert left[-1] == pytest.approx(float(b.remaining_usd), abs=1e-6)


def test_a_paid_response_is_returned_and_the_next_call_refused(
    client: openai.OpenAI, server: OpenAICompatibleServer
) -> None:
    """A response that costs more than its hold is kept and settled; the overrun blocks next."""
    with costspan.budget(tokens=120) as b:
        # The estimate uses the request's cap; the provider's usage is what is charged.
        result = client.chat.completions.create(
            model="gpt-4o-mini", messages=USER, max_completion_tokens=100, extra_headers=LONG
        )
        assert result.choices[0].message.content
        assert b.spent_tokens > 0
        with pytest.raises(BudgetExceeded):
            client.chat.completions.create(
                model="gpt-4o-mini", messages=USER, max_completion_tokens=100
            )
    assert len(server.requests) == 1


def test_token_budget(client: openai.OpenAI) -> None:
    """A token cap counts input plus the output bound."""
    with costspan.budget(tokens=50), pytest.raises(BudgetExceeded, match="tokens left"):
        client.chat.completions.create(model="gpt-4o-mini", messages=USER)  # 1024-token bound


def test_server_error_releases_the_hold(
    client: openai.OpenAI, server: OpenAICompatibleServer
) -> None:
    """A request the provider refused was not billed: its hold is released, nothing spent."""
    server.fail_next(500)
    with costspan.budget(usd="0.05") as b:
        with pytest.raises(openai.InternalServerError):
            client.chat.completions.create(model="gpt-4o-mini", messages=USER)
        assert b.spent_usd == 0
        assert b.remaining_usd == Decimal("0.05")


# -- downgrade ----------------------------------------------------------------------------------
def test_downgrade_switches_to_the_cheaper_model(
    client: openai.OpenAI, server: OpenAICompatibleServer, span_exporter: InMemorySpanExporter
) -> None:
    """Over budget for gpt-4o, the call goes to gpt-4o-mini instead, visibly."""
    with costspan.budget(usd="0.0005", on_exceed="downgrade", downgrade={"gpt-4o": "gpt-4o-mini"}):
        client.chat.completions.create(model="gpt-4o", messages=USER, max_completion_tokens=200)
    assert server.requests[-1].body["model"] == "gpt-4o-mini"
    (span,) = span_exporter.get_finished_spans()
    assert span.name == "chat gpt-4o-mini"
    recorded = attrs(span)
    assert recorded["costspan.budget.decision"] == "downgrade"
    assert recorded["costspan.budget.original_model"] == "gpt-4o"
    assert recorded["gen_ai.request.model"] == "gpt-4o-mini"


def test_downgrade_that_does_not_fit_refuses(client: openai.OpenAI) -> None:
    """If even the cheaper model cannot fit, the call is refused."""
    with (
        costspan.budget(usd="0.00001", on_exceed="downgrade", downgrade={"gpt-4o": "gpt-4o-mini"}),
        pytest.raises(BudgetExceeded),
    ):
        client.chat.completions.create(model="gpt-4o", messages=USER, max_completion_tokens=500)


# -- clamp --------------------------------------------------------------------------------------
def test_clamp_sets_max_completion_tokens_to_what_the_budget_affords(
    client: openai.OpenAI, server: OpenAICompatibleServer, span_exporter: InMemorySpanExporter
) -> None:
    """The injected cap times the output price fits the remaining budget."""
    with costspan.budget(usd="0.001", on_exceed="clamp") as b:
        client.chat.completions.create(model="gpt-4o", messages=USER, extra_headers=LONG)
    sent = server.requests[-1].body
    assert "max_tokens" not in sent
    cap = sent["max_completion_tokens"]
    (span,) = span_exporter.get_finished_spans()
    assert attrs(span)["costspan.budget.decision"] == "clamp"
    assert attrs(span)["costspan.budget.clamped_max_tokens"] == cap
    assert attrs(span)["gen_ai.request.max_tokens"] == cap
    # gpt-4o: $2.50 / $10 per million; the prompt's cost plus cap x $10/M fits $0.001.
    prompt = attrs(span)["gen_ai.usage.input_tokens"]
    assert prompt * 2.5e-6 + cap * 1e-5 <= 0.001 + 1e-12
    assert cap >= 90
    assert b.spent_usd <= Decimal("0.001")


def test_clamp_uses_max_output_tokens_for_responses(
    client: openai.OpenAI, server: OpenAICompatibleServer
) -> None:
    """Responses calls are clamped with max_output_tokens."""
    with costspan.budget(usd="0.001", on_exceed="clamp"):
        client.responses.create(model="gpt-4o", input="hi", extra_headers=LONG)
    assert 0 < server.requests[-1].body["max_output_tokens"] < DEFAULT_OUTPUT_TOKENS


def test_clamp_lowers_a_callers_max_tokens_in_place(
    client: openai.OpenAI, server: OpenAICompatibleServer
) -> None:
    """A caller's max_tokens on a non-reasoning model is lowered, not doubled by another cap."""
    with costspan.budget(usd="0.001", on_exceed="clamp"):
        client.chat.completions.create(model="gpt-4o", messages=USER, max_tokens=900)
    sent = server.requests[-1].body
    assert "max_completion_tokens" not in sent
    assert sent["max_tokens"] < 900


def test_clamp_lowers_a_cap_set_in_extra_body_where_the_client_reads_it(
    client: openai.OpenAI, server: OpenAICompatibleServer, span_exporter: InMemorySpanExporter
) -> None:
    """extra_body is merged into the body last: a cap set there is the one that is sent, so it
    is the one reserved and clamped (the argument of the same name is left as the caller set
    it, and the caller's extra_body dict is not changed)."""
    extra = {"max_completion_tokens": 5000}
    with costspan.budget(usd="0.001", on_exceed="clamp") as b:
        client.chat.completions.create(
            model="gpt-4o",
            messages=USER,
            max_completion_tokens=10,
            extra_body=extra,
            extra_headers={"x-costspan-test-output-tokens": "5000"},
        )
    sent = server.requests[-1].body["max_completion_tokens"]
    assert 90 <= sent < 5000
    assert extra == {"max_completion_tokens": 5000}
    (span,) = span_exporter.get_finished_spans()
    assert attrs(span)["costspan.budget.clamped_max_tokens"] == sent
    assert b.spent_usd <= Decimal("0.001")


def test_a_model_named_in_extra_body_is_the_one_priced_and_downgraded(
    client: openai.OpenAI, server: OpenAICompatibleServer, span_exporter: InMemorySpanExporter
) -> None:
    """A model set in extra_body replaces the argument when sent: it is the model reserved
    for, and a downgrade rewrites it there."""
    with costspan.budget(usd="0.002", on_exceed="downgrade", downgrade={"gpt-4o": "gpt-4o-mini"}):
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=USER,
            max_completion_tokens=500,
            extra_body={"model": "gpt-4o"},
        )
    assert server.requests[-1].body["model"] == "gpt-4o-mini"
    (span,) = span_exporter.get_finished_spans()
    assert attrs(span)["costspan.budget.decision"] == "downgrade"


def test_clamp_below_the_minimum_refuses(client: openai.OpenAI) -> None:
    """A budget that affords only a few output tokens refuses rather than send a stub."""
    with (
        costspan.budget(usd="0.0001", on_exceed="clamp"),
        pytest.raises(BudgetExceeded),
    ):
        client.chat.completions.create(model="gpt-4o", messages=USER)


# -- truncate, warn, callable --------------------------------------------------------------------
def test_truncate_drops_the_oldest_messages(
    client: openai.OpenAI, server: OpenAICompatibleServer, span_exporter: InMemorySpanExporter
) -> None:
    """Old turns go first; the system prompt and the last message stay."""
    history: list[Any] = [{"role": "system", "content": "Be brief."}]
    history += [{"role": "user", "content": "old " * 300}, {"role": "assistant", "content": "ok"}]
    history += [{"role": "user", "content": "Now: what is 2+2?"}]
    with costspan.budget(tokens=200, on_exceed="truncate"):
        client.chat.completions.create(
            model="gpt-4o-mini", messages=history, max_completion_tokens=50
        )
    sent = server.requests[-1].body["messages"]
    assert sent[0]["role"] == "system"
    assert sent[-1]["content"] == "Now: what is 2+2?"
    assert len(sent) < len(history)
    assert len(history) == 4  # the caller's list is untouched
    assert attrs(span_exporter.get_finished_spans()[0])["costspan.budget.decision"] == "truncate"


def test_warn_lets_the_call_through_and_records_the_overrun(
    client: openai.OpenAI, span_exporter: InMemorySpanExporter
) -> None:
    """warn never refuses: the call is sent, marked, and charged."""
    with costspan.budget(usd="0.000001", on_exceed="warn") as b:
        client.chat.completions.create(model="gpt-4o-mini", messages=USER)
    assert attrs(span_exporter.get_finished_spans()[0])["costspan.budget.decision"] == "warn"
    assert b.spent_usd > Decimal("0.000001")
    assert b.calls == 1


def test_callable_action_can_rewrite_the_request(
    client: openai.OpenAI, server: OpenAICompatibleServer
) -> None:
    """A callable gets the BudgetExceeded and returns request changes."""
    seen: list[BudgetExceeded] = []

    def cheaper(exceeded: BudgetExceeded) -> Mapping[str, Any]:
        seen.append(exceeded)
        return {"model": "gpt-4o-mini", "max_completion_tokens": 50}

    with costspan.budget(usd="0.0005", on_exceed=cheaper):
        client.chat.completions.create(model="gpt-4o", messages=USER, max_completion_tokens=500)
    assert seen[0].model == "gpt-4o"
    assert server.requests[-1].body["model"] == "gpt-4o-mini"


def test_callable_may_raise_the_refusal_itself(
    client: openai.OpenAI, server: OpenAICompatibleServer, span_exporter: InMemorySpanExporter
) -> None:
    """Re-raising the BudgetExceeded it was given refuses the call, and its span still ends."""

    def refuse(exceeded: BudgetExceeded) -> None:
        raise exceeded

    with costspan.budget(usd="0.0001", on_exceed=refuse), pytest.raises(BudgetExceeded):
        client.chat.completions.create(model="gpt-4o", messages=USER, max_completion_tokens=500)
    assert server.requests == []
    (span,) = span_exporter.get_finished_spans()
    assert attrs(span)["error.type"] == "BudgetExceeded"


def test_a_failing_callable_raises_its_own_error_and_sends_nothing(
    client: openai.OpenAI, server: OpenAICompatibleServer, span_exporter: InMemorySpanExporter
) -> None:
    """The user's on_exceed callable raising is the user's exception: it reaches the caller
    unchanged, before anything is sent (a failing control never lets the call through)."""

    def broken(exceeded: BudgetExceeded) -> None:
        raise ZeroDivisionError

    with (
        costspan.budget(usd="0.0001", on_exceed=broken),
        pytest.raises(ZeroDivisionError),
    ):
        client.chat.completions.create(model="gpt-4o", messages=USER, max_completion_tokens=500)
    assert server.requests == []
    (span,) = span_exporter.get_finished_spans()
    assert attrs(span)["error.type"] == "ZeroDivisionError"


def test_callable_returning_none_refuses(client: openai.OpenAI) -> None:
    """None from the callable means refuse."""
    with costspan.budget(usd="0.0001", on_exceed=lambda e: None), pytest.raises(BudgetExceeded):
        client.chat.completions.create(model="gpt-4o", messages=USER, max_completion_tokens=500)


# -- soft thresholds ----------------------------------------------------------------------------
def test_soft_threshold_emits_event_log_and_metric_once(
    client: openai.OpenAI,
    span_exporter: InMemorySpanExporter,
    metric_reader: InMemoryMetricReader,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Passing 50% emits a span event, a log record and a metric, the first time only."""
    with caplog.at_level(logging.WARNING), costspan.budget(usd="0.0001", warn_at=(0.5,)):
        for _ in range(6):
            try:
                client.chat.completions.create(
                    model="gpt-4o-mini", messages=USER, max_completion_tokens=30
                )
            except BudgetExceeded:
                break
    events = [e for s in span_exporter.get_finished_spans() for e in s.events]
    thresholds = [e for e in events if e.name == "costspan.budget.threshold"]
    assert len(thresholds) == 1
    assert (thresholds[0].attributes or {})["costspan.budget.threshold"] == 0.5
    assert caplog.text.count("passed 50% of its cap") == 1
    assert [p.value for p in counter_points(metric_reader, "costspan.budget.thresholds")] == [1]


# -- nesting ------------------------------------------------------------------------------------
def test_inner_budget_tightens_the_outer(client: openai.OpenAI) -> None:
    """Every call must fit every active budget: the smaller inner one refuses."""
    with costspan.budget(usd="1.00") as outer:
        with costspan.budget(usd="0.0001"), pytest.raises(BudgetExceeded) as caught:
            client.chat.completions.create(model="gpt-4o", messages=USER, max_completion_tokens=500)
        assert caught.value.budget is not outer
        client.chat.completions.create(model="gpt-4o", messages=USER, max_completion_tokens=500)
    assert outer.calls == 1


def test_inner_spend_counts_in_the_outer(client: openai.OpenAI) -> None:
    """A call inside both budgets is charged to both."""
    with costspan.budget(usd="1.00") as outer, costspan.budget(usd="0.50") as inner:
        client.chat.completions.create(model="gpt-4o-mini", messages=USER)
    assert outer.spent_usd == inner.spent_usd > 0


def test_inner_downgrade_never_masks_an_outer_block(
    client: openai.OpenAI, server: OpenAICompatibleServer
) -> None:
    """When the outer block budget is the one that cannot fit the call, it is refused."""
    with (
        costspan.budget(usd="0.0001", name="outer"),
        costspan.budget(usd="1", on_exceed="downgrade", downgrade={"gpt-4o": "gpt-4o-mini"}),
        pytest.raises(BudgetExceeded) as caught,
    ):
        client.chat.completions.create(model="gpt-4o", messages=USER, max_completion_tokens=500)
    assert caught.value.scope == "outer"
    assert server.requests == []


# -- decorators ---------------------------------------------------------------------------------
def test_decorator_gives_each_call_a_fresh_budget(client: openai.OpenAI) -> None:
    """Two calls of a decorated function do not share spend."""
    limit = costspan.budget(usd="0.0005")

    @limit
    def handler() -> None:
        client.chat.completions.create(
            model="gpt-4o-mini", messages=USER, max_completion_tokens=200
        )

    handler()
    first = limit.spent_usd
    handler()
    assert limit.spent_usd == pytest.approx(first, abs=Decimal("0.000002"))
    assert limit.calls == 1


async def test_async_decorator(async_client: openai.AsyncOpenAI) -> None:
    """Coroutines run under the budget and raise BudgetExceeded like sync code."""

    @costspan.budget(usd="0.00001")
    async def handler() -> None:
        await async_client.chat.completions.create(
            model="gpt-4o", messages=USER, max_completion_tokens=500
        )

    with pytest.raises(BudgetExceeded):
        await handler()


def test_generator_decorator_applies_only_inside_the_generator(client: openai.OpenAI) -> None:
    """A decorated generator's steps run under its budget; the consumer's code does not."""

    @costspan.budget(usd="0.00001")
    def steps() -> Iterator[str]:
        yield "start"
        client.chat.completions.create(model="gpt-4o", messages=USER, max_completion_tokens=500)
        yield "never"

    gen = steps()
    assert next(gen) == "start"
    # Between steps the consumer is outside the budget: this call is not refused.
    client.chat.completions.create(model="gpt-4o", messages=USER, max_completion_tokens=500)
    with pytest.raises(BudgetExceeded):
        next(gen)


def test_generator_decorator_forwards_send_throw_and_close() -> None:
    """A decorated generator behaves like the undecorated one for send(), throw() and close()."""
    seen: list[object] = []

    @costspan.budget(usd=1)
    def echo() -> Generator[int, object, None]:
        try:
            while True:
                try:
                    seen.append((yield len(seen)))
                except KeyError as exc:
                    seen.append(f"caught {exc.args[0]}")
        finally:
            seen.append("closed")

    gen = echo()
    assert next(gen) == 0
    assert gen.send("a") == 1
    assert gen.throw(KeyError("k")) == 2
    gen.close()
    assert seen == ["a", "caught k", "closed"]


async def test_async_generator_decorator(async_client: openai.AsyncOpenAI) -> None:
    """Async generators are wrapped step by step too."""

    @costspan.budget(usd="0.00001")
    async def steps() -> AsyncIterator[int]:
        yield 1
        await async_client.chat.completions.create(
            model="gpt-4o", messages=USER, max_completion_tokens=500
        )
        yield 2

    agen = steps()
    assert await anext(agen) == 1
    with pytest.raises(BudgetExceeded):
        await anext(agen)


# -- streams ------------------------------------------------------------------------------------
def test_streams_reserve_and_settle_at_the_end(
    client: openai.OpenAI, span_exporter: InMemorySpanExporter
) -> None:
    """A stream holds its estimate while it runs and is charged its usage when it ends."""
    with costspan.budget(usd="0.05") as b:
        stream = client.chat.completions.create(
            model="gpt-4o-mini", messages=USER, stream=True, max_completion_tokens=100
        )
        next(iter(stream))
        assert b.remaining_usd is not None
        assert b.remaining_usd < Decimal("0.05")  # the hold
        assert b.calls == 0
        list(stream)
    assert b.calls == 1
    assert b.spent_usd == pytest.approx(
        Decimal(repr(_cost(span_exporter.get_finished_spans()[0]))), abs=Decimal("0.000001")
    )
    assert b.remaining_usd == Decimal("0.05") - b.spent_usd


def test_cut_stream_is_charged_its_estimate(
    client: openai.OpenAI, cut_stream_error: type[BaseException]
) -> None:
    """A stream that dies midway was billed: it is charged an offline estimate."""
    with costspan.budget(usd="0.05") as b:
        stream = client.chat.completions.create(
            model="gpt-4o-mini",
            messages=USER,
            stream=True,
            extra_headers={"x-costspan-test-cut-after": "4"},
        )
        with pytest.raises(cut_stream_error):
            list(stream)
    assert b.calls == 1
    assert b.spent_usd > 0


# -- unpriced models ----------------------------------------------------------------------------
def test_unpriced_model_under_a_budget_raises_in_raise_mode(
    client: openai.OpenAI, server: OpenAICompatibleServer
) -> None:
    """COSTSPAN_ON_UNPRICED=raise refuses a budgeted call whose model has no price, unsent."""
    costspan.configure(on_unpriced="raise")
    with costspan.budget(usd=1), pytest.raises(UnpricedModelError, match="my-secret-model"):
        client.chat.completions.create(model="my-secret-model", messages=USER)
    assert server.requests == []


def test_unpriced_model_without_a_budget_is_not_refused(client: openai.OpenAI) -> None:
    """Raise mode only guards budgets: outside one, the call goes through (marked unpriced)."""
    _runtime.reset()  # the warning comes once per model and process
    costspan.configure(on_unpriced="raise")
    with pytest.warns(costspan.UnpricedModelWarning):
        client.chat.completions.create(model="another-secret-model", messages=USER)


# -- tags and estimate --------------------------------------------------------------------------
def test_tags_land_on_spans(client: openai.OpenAI, span_exporter: InMemorySpanExporter) -> None:
    """tags() entries are copied onto the call's span under their own keys."""
    with costspan.tags({"user.id": "u-1"}, feature="search"):
        client.chat.completions.create(model="gpt-4o-mini", messages=USER)
    recorded = attrs(span_exporter.get_finished_spans()[0])
    assert recorded["user.id"] == "u-1"
    assert recorded["feature"] == "search"


@pytest.mark.parametrize(
    ("mapping", "message"),
    [
        ({"user id": "x"}, "not a valid baggage key"),
        ({"feature": "x" * 300}, "over 256"),
        ({"costspan.budgets": "x"}, "reserved"),
        ({}, "at least one"),
    ],
)
def test_bad_tags_are_rejected(mapping: dict[str, str], message: str) -> None:
    """Tag mistakes are ValueErrors at the call site."""
    with pytest.raises(ValueError, match=message):
        costspan.tags(mapping)


def test_estimate_counts_input_exactly_and_bounds_output() -> None:
    """estimate() is offline: exact prompt tokens, the given or default output bound, a price."""
    messages = [{"role": "user", "content": "How many tokens is this?"}]
    bounded = costspan.estimate("gpt-4o", messages, max_output_tokens=100)
    default = costspan.estimate("gpt-4o", messages)
    # 3 per message + "user" (1) + "How many tokens is this?" (6) + 3 to prime the reply.
    assert bounded.input_tokens == default.input_tokens == 13
    assert bounded.output_tokens == 100
    assert default.output_tokens == DEFAULT_OUTPUT_TOKENS
    assert bounded.usd == Decimal(13) * Decimal("2.5") / 10**6 + Decimal(100) * 10 / 10**6
    assert costspan.estimate("no-such-model", "hi").usd is None
    embedding = costspan.estimate("text-embedding-3-small", "hello world", operation="embeddings")
    assert (embedding.input_tokens, embedding.output_tokens) == (2, 0)
    with pytest.raises(ValueError, match="operation must be one of"):
        costspan.estimate("gpt-4o", "hi", operation="images")


def test_per_request_budgets_leave_nothing_behind(
    client: openai.OpenAI, fresh_ledger: object
) -> None:
    """A service that opens a budget per request keeps no memory for requests that are over:
    the memory ledger forgets each budget's scope when it is left (shared ledgers expire them),
    and the budget still reports what it spent."""
    budgets: list[costspan.Budget] = []
    for _ in range(300):
        with costspan.budget(usd="0.01") as b:
            client.chat.completions.create(model="gpt-4o-mini", messages=USER)
        budgets.append(b)
    assert all(b.calls == 1 and b.spent_usd > 0 for b in budgets)
    if isinstance(fresh_ledger, MemoryLedger):
        assert not any(key.startswith("budget:") for key in fresh_ledger._counters)
        assert len(fresh_ledger._records) == 0


def test_a_budget_entered_again_keeps_its_spend(client: openai.OpenAI) -> None:
    """Leaving a budget forgets its scope, not its spend: entered again, the same object goes
    on from what it had spent, and its cap still holds."""
    b = costspan.budget(usd="0.0002")
    with b:
        client.chat.completions.create(model="gpt-4o-mini", messages=USER, max_completion_tokens=50)
    spent = b.spent_usd
    assert spent > 0
    # The largest call that fits the cap on its own, but not on top of what was spent.
    cap = Decimal("0.0002")
    fits_alone = max(
        k
        for k in range(1, 400)
        if (costspan.estimate("gpt-4o-mini", USER, max_output_tokens=k).usd or cap) <= cap
    )
    with b:
        assert b.spent_usd == spent
        with pytest.raises(BudgetExceeded):
            client.chat.completions.create(
                model="gpt-4o-mini", messages=USER, max_completion_tokens=fits_alone
            )


def test_budgets_hold_inside_suppressed_instrumentation(
    client: openai.OpenAI, server: OpenAICompatibleServer, span_exporter: InMemorySpanExporter
) -> None:
    """suppress_instrumentation() suppresses spans, not controls: the call is still checked
    and charged, and refused before sending when it does not fit."""
    with costspan.budget(usd="0.0002") as b, suppress_instrumentation():
        client.chat.completions.create(model="gpt-4o-mini", messages=USER, max_completion_tokens=50)
        with pytest.raises(BudgetExceeded):
            client.chat.completions.create(model="gpt-4o", messages=USER, max_completion_tokens=500)
    assert len(server.requests) == 1
    assert b.calls == 1
    assert b.spent_usd > 0
    assert span_exporter.get_finished_spans() == ()


# -- calls whose usage never comes ----------------------------------------------------------------
def _held(span: Any) -> Decimal:
    return Decimal(str(attrs(span)["costspan.budget.estimate_usd"]))


def test_a_stream_whose_usage_never_comes_is_charged_its_hold(
    client: openai.OpenAI, span_exporter: InMemorySpanExporter
) -> None:
    """A server that ignores include_usage, on a reasoning model: the streamed text shows a
    fraction of what was billed (the reasoning is invisible), so the budget is charged the
    call's hold, its worst case, and not the estimate made from the text."""
    with costspan.budget(usd="1") as b:
        stream = client.chat.completions.create(
            model="o4-mini",
            messages=USER,
            max_completion_tokens=1000,
            stream=True,
            extra_headers={
                "x-costspan-test-output-tokens": "1000",
                "x-costspan-test-reasoning-tokens": "950",
                "x-costspan-test-omit-usage": "1",
            },
        )
        list(stream)
    (span,) = span_exporter.get_finished_spans()
    assert attrs(span)["costspan.usage.missing"] is True
    assert abs(b.spent_usd - _held(span)) <= Decimal("0.000001")
    assert b.spent_usd > Decimal(str(attrs(span)["gen_ai.usage.cost.amount"])) * 2


def test_a_call_that_timed_out_is_charged_its_hold_for_every_attempt(
    server: OpenAICompatibleServer, span_exporter: InMemorySpanExporter
) -> None:
    """A request that timed out was received and may have been billed, once for each attempt
    the client made (1 + max_retries): the budget is charged that, not released."""
    client = openai.OpenAI(base_url=server.base_url, api_key="test-key", max_retries=2, timeout=0.3)
    try:
        with costspan.budget(usd="1") as b, pytest.raises(openai.APITimeoutError):
            client.chat.completions.create(
                model="gpt-4o-mini",
                messages=USER,
                max_completion_tokens=1000,
                extra_headers={"x-costspan-test-delay-ms": "600"},
            )
    finally:
        client.close()
    (span,) = span_exporter.get_finished_spans()
    assert attrs(span)["error.type"] == "APITimeoutError"
    assert attrs(span)["costspan.usage.missing"] is True
    assert abs(b.spent_usd - 3 * _held(span)) <= Decimal("0.000003")


def test_a_call_the_provider_refused_is_not_charged(
    client: openai.OpenAI, server: OpenAICompatibleServer
) -> None:
    """An HTTP error answer was not billed: the hold is released, nothing is charged."""
    server.fail_next(400)
    with costspan.budget(usd="1") as b, pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="gpt-4o", messages=USER, max_completion_tokens=100)
    assert b.spent_usd == 0


# -- the price a call is reserved at ------------------------------------------------------------
def test_requests_naming_no_tier_are_reserved_at_the_tier_they_were_served_at(
    span_exporter: InMemorySpanExporter,
) -> None:
    """OpenAI serves a request without ``service_tier`` (or ``auto``) at the project's default
    tier, which may be ``priority`` (billed at a premium). Once an answer shows it, such
    requests are reserved at the dearer price; one that names ``default`` keeps the standard
    price."""
    with OpenAICompatibleServer(service_tier="priority") as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="test-key", max_retries=0)
        kwargs: dict[str, Any] = {
            "model": "gpt-4o-mini",
            "messages": USER,
            "max_completion_tokens": 400,
            "extra_headers": LONG,
        }
        with costspan.budget(usd="1"):
            client.chat.completions.create(**kwargs)  # cold: the project's tier is not known
            client.chat.completions.create(**kwargs)
            client.chat.completions.create(**kwargs, service_tier="auto")
            client.chat.completions.create(**kwargs, service_tier="default")
        client.close()
    cold, unnamed, auto, default = span_exporter.get_finished_spans()
    assert attrs(cold)["openai.response.service_tier"] == "priority"
    assert _held(cold) == _held(default)
    for span in (unnamed, auto):
        assert attrs(span)["openai.response.service_tier"] == "priority"
        assert _held(span) >= Decimal(str(_cost(span)))
        assert _held(span) > _held(default)
    assert attrs(default)["openai.response.service_tier"] == "default"
    assert _held(default) >= Decimal(str(_cost(default)))


def _answered_as(model: str) -> Any:
    """A gateway that routes any requested name to ``model`` (a recorded completion's shape)."""

    def answer(request: Any) -> Any:
        return http_package().Response(
            200,
            json={
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": 1_760_000_000,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "ok"},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 8, "completion_tokens": 400, "total_tokens": 408},
            },
        )

    return answering(answer)


def test_an_unpriced_alias_is_reserved_at_the_model_that_answered_it(
    span_exporter: InMemorySpanExporter,
) -> None:
    """A gateway alias has no price of its own; once the gateway answered it as a priced model,
    later calls of the alias are reserved at that model's price (and refused when it does not
    fit) instead of going through unreserved."""
    client = openai.OpenAI(
        base_url="https://gateway.example.com/v1",
        api_key="test-key",
        max_retries=0,
        http_client=_answered_as("gpt-4o-2024-08-06"),
    )
    with costspan.budget(usd="0.006") as b:
        client.chat.completions.create(  # unpriced: warned about, let through
            model="router/auto", messages=USER, max_completion_tokens=400
        )
        assert b.spent_usd > 0
        with pytest.raises(BudgetExceeded):
            client.chat.completions.create(
                model="router/auto", messages=USER, max_completion_tokens=400
            )
    first, refused = span_exporter.get_finished_spans()
    assert "costspan.budget.estimate_usd" not in attrs(first)
    assert attrs(refused)["costspan.budget.estimate_usd"] > 0.004


@pytest.mark.parametrize("cap", [100.5, -5, True])
def test_an_invalid_output_cap_is_sent_as_given_for_the_provider_to_refuse(
    client: openai.OpenAI, server: OpenAICompatibleServer, cap: Any
) -> None:
    """costspan gives an uncapped request under a budget the cap it reserved; a request that
    sets an invalid cap is not uncapped: it is sent as the caller wrote it, the provider
    refuses it as it would without costspan, and nothing is charged."""
    with costspan.budget(usd="1") as b, pytest.raises(openai.BadRequestError):
        client.chat.completions.create(
            model="gpt-4o-mini", messages=USER, max_completion_tokens=cap, extra_headers=LONG
        )
    assert server.requests[-1].body["max_completion_tokens"] == cap
    assert b.spent_usd == 0


def test_a_model_answered_by_a_dearer_one_is_reserved_at_the_dearer_price(
    span_exporter: InMemorySpanExporter,
) -> None:
    """A gateway that routes requests for gpt-4o-mini to gpt-4o bills gpt-4o: once seen, later
    requests for gpt-4o-mini are reserved at gpt-4o's price."""
    client = openai.OpenAI(
        base_url="https://gateway.example.com/v1",
        api_key="test-key",
        max_retries=0,
        http_client=_answered_as("gpt-4o-2024-08-06"),
    )
    with costspan.budget(usd="1"):
        for _ in range(2):
            client.chat.completions.create(
                model="gpt-4o-mini", messages=USER, max_completion_tokens=400
            )
    first, second = span_exporter.get_finished_spans()
    assert _held(second) > 10 * _held(first)  # gpt-4o costs ~16x gpt-4o-mini
    assert _held(second) >= Decimal(str(_cost(second)))
