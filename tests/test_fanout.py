"""Concurrent fan-out under one budget never spends more than the cap.

Each competing budget library we measured spent about 3x the cap in the 20-thread scenario: they
check the spend, send, and charge afterwards, so every concurrent call passes the check. costspan
reserves each call's worst case first, in one atomic step.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import openai
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import costspan
from costspan import BudgetExceeded
from costspan._reservation import blocks
from costspan.ledgers import Ledger
from costspan.testing import OpenAICompatibleServer
from tests.conftest import USER, attrs

pytestmark = pytest.mark.usefixtures("instrumented", "fresh_ledger")

CAP = Decimal("0.05")
# Each reply is as long as its cap allows: the actual cost comes close to the reservation, so
# the cap really binds (short replies would leave it unreachable and prove nothing).
LONG = {"x-costspan-test-output-tokens": "5000"}


def _spent(exporter: InMemorySpanExporter) -> tuple[Decimal, int]:
    spans = [s for s in exporter.get_finished_spans() if "gen_ai.usage.cost.amount" in attrs(s)]
    return sum(
        (Decimal(repr(attrs(s)["gen_ai.usage.cost.amount"])) for s in spans), Decimal(0)
    ), len(spans)


@pytest.mark.parametrize("mode", ["output cap", "clamp"])
def test_twenty_threads_never_overspend(
    mode: str, server: OpenAICompatibleServer, span_exporter: InMemorySpanExporter
) -> None:
    """20 threads x 5 calls under one $0.05 budget: spend stays under the cap, some refused."""
    client = openai.OpenAI(base_url=server.base_url, api_key="k", max_retries=0)
    refused: list[BudgetExceeded] = []
    cap: int | openai.Omit = 400 if mode == "output cap" else openai.omit

    def worker() -> None:
        for _ in range(5):
            try:
                client.chat.completions.create(
                    model="gpt-4o", messages=USER, extra_headers=LONG, max_completion_tokens=cap
                )
            except BudgetExceeded as exc:
                refused.append(exc)

    on_exceed = "block" if mode == "output cap" else "clamp"
    # Uncapped calls get costspan's cap: a smaller one leaves room for more calls at once.
    costspan.configure(default_max_output_tokens=1024)
    with costspan.budget(usd=CAP, on_exceed=on_exceed) as b, ThreadPoolExecutor(20) as pool:
        # A plain thread does not inherit contextvars: copy the context into each task.
        futures = [pool.submit(contextvars.copy_context().run, worker) for _ in range(20)]
        for future in futures:
            future.result()
    client.close()
    spent, calls = _spent(span_exporter)
    assert spent <= CAP
    assert b.spent_usd <= CAP
    assert refused, "the cap never bound: the test proves nothing"
    assert calls >= 5
    assert spent > CAP / 2  # the budget was used, not refused wholesale
    assert b.remaining_usd == CAP - b.spent_usd  # nothing left held


async def test_two_hundred_tasks_never_overspend(
    server: OpenAICompatibleServer, span_exporter: InMemorySpanExporter
) -> None:
    """200 asyncio tasks under one budget: tasks inherit the context; spend stays under the cap."""
    client = openai.AsyncOpenAI(base_url=server.base_url, api_key="k", max_retries=0)
    outcomes: list[str] = []

    async def one() -> None:
        try:
            await client.chat.completions.create(
                model="gpt-4o", messages=USER, max_completion_tokens=200, extra_headers=LONG
            )
            outcomes.append("sent")
        except BudgetExceeded:
            outcomes.append("refused")

    async with costspan.budget(usd=CAP) as b:
        await asyncio.gather(*(one() for _ in range(200)))
    await client.close()
    spent, calls = _spent(span_exporter)
    assert spent <= CAP
    assert b.spent_usd <= CAP
    assert outcomes.count("refused") > 0
    assert calls == outcomes.count("sent") >= 10


def test_streams_under_fan_out_never_overspend(
    server: OpenAICompatibleServer, span_exporter: InMemorySpanExporter
) -> None:
    """Streams hold their reservation until they end, so concurrent streams respect the cap."""
    client = openai.OpenAI(base_url=server.base_url, api_key="k", max_retries=0)

    def worker() -> None:
        for _ in range(3):
            try:
                stream = client.chat.completions.create(
                    model="gpt-4o",
                    messages=USER,
                    stream=True,
                    max_completion_tokens=400,
                    extra_headers=LONG,
                )
                for _chunk in stream:
                    pass
            except BudgetExceeded:
                pass

    with costspan.budget(usd=CAP) as b, ThreadPoolExecutor(10) as pool:
        for future in [pool.submit(contextvars.copy_context().run, worker) for _ in range(10)]:
            future.result()
    client.close()
    spent, _ = _spent(span_exporter)
    assert spent <= CAP
    assert b.spent_usd <= CAP


def _story(client: openai.OpenAI, delay_ms: int) -> None:
    client.chat.completions.create(
        model="gpt-4o",
        messages=USER,
        max_completion_tokens=400,
        extra_headers={**LONG, "x-costspan-test-delay-ms": str(delay_ms)},
    )


def test_calls_that_pass_a_threshold_together_report_it(
    server: OpenAICompatibleServer, span_exporter: InMemorySpanExporter, fresh_ledger: Ledger
) -> None:
    """Three calls admitted at once, none settled before the others were admitted, spend more
    than half of the budget together (each alone less): the budget passed warn_at=0.5, and it
    is reported once. An in-process ledger is read after each commit, so one of the three
    reports it (each used to see only its own spend since its admission, and none did); a shared
    ledger is not read again (no round trip), so the next call admitted reports it."""
    client = openai.OpenAI(base_url=server.base_url, api_key="k", max_retries=0)
    budget = costspan.budget(usd="0.02", warn_at=(0.5,), name="together")
    lined_up = threading.Barrier(3)

    def call() -> None:
        with budget:
            lined_up.wait(10)
            _story(client, 400)

    with ThreadPoolExecutor(3) as pool:
        for done in [pool.submit(call) for _ in range(3)]:
            done.result()
    spent = budget.spent_usd
    assert spent is not None
    assert Decimal("0.01") <= spent < Decimal("0.02")
    spans = span_exporter.get_finished_spans()
    assert all(Decimal(repr(attrs(s)["gen_ai.usage.cost.amount"])) < Decimal("0.01") for s in spans)
    together = [e for s in spans for e in s.events if e.name == "costspan.budget.threshold"]
    assert len(together) == (0 if blocks(fresh_ledger) else 1)
    with budget:
        client.chat.completions.create(model="gpt-4o-mini", messages=USER)
    events = [
        e
        for s in span_exporter.get_finished_spans()
        for e in s.events
        if e.name == "costspan.budget.threshold"
    ]
    assert len(events) == 1


def test_the_remaining_budget_counts_calls_that_settled_meanwhile(
    server: OpenAICompatibleServer, span_exporter: InMemorySpanExporter, fresh_ledger: Ledger
) -> None:
    """A slow call admitted first ends after two quick ones settled. With an in-process ledger
    the remaining budget on its span is what the budget has left once all three are paid. A
    shared ledger's is projected from its answer at the slow call's admission, less the slow
    call's spend: it overstates the room by what the others spent meanwhile, and the next call
    gets it right."""
    client = openai.OpenAI(base_url=server.base_url, api_key="k", max_retries=0)
    budget = costspan.budget(usd="0.02", name="overlap")

    def call(delay_ms: int) -> None:
        with budget:
            _story(client, delay_ms)

    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(call, 1500)
        time.sleep(0.3)  # the slow call holds, and waits for its answer
        call(0)
        call(0)
        slow.result()
    ended = sorted(span_exporter.get_finished_spans(), key=lambda s: s.end_time or 0)
    quick_spent = sum(Decimal(repr(attrs(s)["gen_ai.usage.cost.amount"])) for s in ended[:2])
    remaining = budget.remaining_usd
    assert remaining is not None
    slow_says = attrs(ended[-1])["costspan.budget.remaining_usd"]
    if blocks(fresh_ledger):
        assert slow_says == pytest.approx(float(remaining + quick_spent))
    else:
        assert slow_says == pytest.approx(float(remaining))
    call(0)
    last = max(span_exporter.get_finished_spans(), key=lambda s: s.end_time or 0)
    remaining = budget.remaining_usd
    assert remaining is not None
    assert attrs(last)["costspan.budget.remaining_usd"] == pytest.approx(float(remaining))
