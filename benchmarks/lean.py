"""How low a budgeted call's overhead can go: the leanest path over costspan's own parts.

Issue 16 asks that a call under an active in-memory budget add at most 0.6x what the official
instrumentation adds. This benchmark measures what a *specialised* path would reach: one
hand-written function per call that does only what a budgeted call must do, in the cheapest way
costspan's parts allow, with none of costspan's generality (no fail-safe handling, no
calibration, no limits, no thresholds, no hold renewal, no actions, no streams, no other APIs):

- start the CLIENT span with the request attributes, and make it current while the call is sent;
- read the caller's baggage (attribution);
- count the prompt with costspan's cached tokenizer and price the worst case with its pricer;
- reserve that in costspan's in-memory ledger and give the uncapped request its output cap;
- read the response's usage, price it, commit it, and read what the budget has left;
- write the end attributes, keep the spend record, queue the call's metrics (recorded in
  batches, as costspan does) and end the span.

Three versions run:

- over costspan's parts (its pricer, in-memory ledger and spend records), writing every attribute
  costspan writes on a budgeted call;
- the same, writing only what the span contract requires (usage, the cost, price source, budget
  decision and remaining, and the response attributes the official instrumentation also writes);
- over the least machinery there is (the model's rates looked up once, one lock-guarded counter,
  a ring of tuples): not a design, a measure of what the contract's own work costs.

Everything these paths leave out only adds time: the first two bound what a specialised path
over costspan's parts could reach, the third what any implementation could.

    .venv/bin/python benchmarks/lean.py            # 30 rounds x 60 calls, plain calls
    .venv/bin/python benchmarks/lean.py -r 5 -n 20 # a quick look
"""

from __future__ import annotations

import argparse
import itertools
import sys
import threading
import time
import timeit
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import overhead
from openai.types.chat import ChatCompletion
from opentelemetry import baggage, trace
from opentelemetry import context as otel_context
from opentelemetry.context import Context
from opentelemetry.metrics import Histogram
from opentelemetry.trace import SpanKind

from costspan._pricing import Cost, Pricer
from costspan._records import Buffer, spend_record
from costspan._tokens import counter
from costspan._usage import TokenUsage
from costspan.ledgers._memory import MemoryLedger
from costspan.ledgers._protocol import ScopeLimit

MODEL = "gpt-4o-mini"
CAP = 4096  # costspan's default output cap for an uncapped request under a budget
_MILLION = Decimal(1_000_000)
_START: dict[str, Any] = {
    "gen_ai.operation.name": "chat",
    "server.address": "api.openai.com",
    "server.port": 443,
    "gen_ai.provider.name": "openai",
    "gen_ai.request.model": MODEL,
    "openai.api.type": "chat_completions",
}


@dataclass(frozen=True)
class Priced:
    """What a lean path learnt from a response: its usage and what it cost."""

    input_tokens: int
    output_tokens: int
    cached: int
    reasoning: int
    total: Decimal
    extra: dict[str, Any]
    """The attributes only costspan's full set has (the cost's parts and where its price came
    from)."""


Before = Callable[[int], tuple[str, Decimal]]
"""A budget's admission: the prompt's token count in, the hold's id and worst case out."""
After = Callable[[str, ChatCompletion, int], tuple[Priced, float]]
"""A budget's settlement: the hold's id, the response and when it was asked for in; what the
call cost and what the budget has left (USD) out."""


@contextmanager
def lean_path(
    providers: overhead.Providers,
    parts: Callable[[], tuple[Before, After, Callable[..., None]]],
    *,
    every_attribute: bool,
) -> Iterator[None]:
    """A budgeted path wrapped around ``Completions.create`` while the block runs: the span,
    the cap and the metrics as costspan does them, the budget's work done by ``parts``."""
    tracer = providers.tracer.get_tracer("lean")
    meter = providers.meter.get_meter("lean")
    duration = meter.create_histogram("gen_ai.client.operation.duration", unit="s")
    token_usage = meter.create_histogram("gen_ai.client.token.usage", unit="{token}")
    spend = meter.create_histogram("costspan.cost", unit="USD")
    pending: deque[tuple[Histogram, float, dict[str, Any], Context]] = deque()
    count = counter(MODEL)
    before, after, keep = parts()

    def call(wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
        model = kwargs["model"]
        tags = baggage.get_all()
        span = tracer.start_span(f"chat {model}", kind=SpanKind.CLIENT, attributes=_START)
        start_ns = time.time_ns()
        prompt = 3
        for message in kwargs["messages"]:
            prompt += 3 + count(message["role"]) + count(message["content"])
        rid, worst = before(prompt)
        token = otel_context.attach(trace.set_span_in_context(span))
        started = timeit.default_timer()
        try:
            response: ChatCompletion = wrapped(*args, **{**kwargs, "max_tokens": CAP})
        finally:
            otel_context.detach(token)
        priced, left = after(rid, response, start_ns)
        total = float(priced.total)
        end: dict[str, Any] = {
            "costspan.budget.decision": "allow",
            "gen_ai.request.max_tokens": CAP,
            "costspan.budget.output_cap_set": CAP,
            "gen_ai.response.id": response.id,
            "gen_ai.response.model": response.model,
            "gen_ai.response.finish_reasons": tuple(c.finish_reason for c in response.choices),
            "gen_ai.usage.input_tokens": priced.input_tokens,
            "gen_ai.usage.output_tokens": priced.output_tokens,
            "gen_ai.usage.cache_read.input_tokens": priced.cached,
            "gen_ai.usage.reasoning.output_tokens": priced.reasoning,
            "gen_ai.usage.cost.amount": total,
            "gen_ai.usage.cost.currency": "USD",
            "gen_ai.usage.cost.source": "local",
            "costspan.price.source": "genai-prices",
            "costspan.budget.remaining_usd": left,
        }
        if every_attribute:
            end["costspan.budget.ids"] = ("lean",)
            end["costspan.budget.estimate_usd"] = float(worst)
            end["openai.response.service_tier"] = response.service_tier or ""
            end["openai.response.system_fingerprint"] = response.system_fingerprint or ""
            end.update(priced.extra)
        span.set_attributes(end)
        context = span.get_span_context()
        keep(start_ns, model, response.model, tags, priced, context.trace_id, context.span_id)
        dims = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": model,
            "gen_ai.response.model": response.model,
        }
        linked = trace.set_span_in_context(span)
        pending.append((duration, timeit.default_timer() - started, dims, linked))
        pending.append((token_usage, priced.input_tokens, dims, linked))
        pending.append((token_usage, priced.output_tokens, dims, linked))
        pending.append((spend, total, dims, linked))
        if len(pending) >= 64:  # costspan's batches: a median leaves them out, a mean does not
            while pending:
                instrument, amount, attributes, ctx = pending.popleft()
                instrument.record(amount, attributes, context=ctx)
        span.end()
        return response

    with overhead.wrapping_create(call):
        yield


def _usage(response: ChatCompletion) -> tuple[int, int, int, int]:
    usage = response.usage
    assert usage is not None
    details = usage.prompt_tokens_details
    cached = (details.cached_tokens or 0) if details is not None else 0
    out_details = usage.completion_tokens_details
    reasoning = (out_details.reasoning_tokens or 0) if out_details is not None else 0
    return usage.prompt_tokens, usage.completion_tokens, cached, reasoning


def costspans_parts() -> tuple[Before, After, Callable[..., None]]:
    """The budget's work done with costspan's own pricer, in-memory ledger and spend records."""
    ledger = MemoryLedger()
    scopes = (ScopeLimit("budget:lean", cap_micros=10**15),)
    pricer = Pricer()
    pricer.price(TokenUsage(1, 1), models=(MODEL,), provider="openai", when_ns=time.time_ns())
    records = Buffer(10_000)
    ids = itertools.count()

    def before(prompt: int) -> tuple[str, Decimal]:
        worst = pricer.total(prompt, CAP, model=MODEL, provider="openai", when_ns=time.time_ns())
        assert worst is not None
        rid = f"lean-{next(ids)}"
        if not ledger.reserve(rid, scopes, int(worst * _MILLION) + 1, prompt + CAP, 60.0).granted:
            raise RuntimeError("the lean budget refused a call")
        return rid, worst

    def after(rid: str, response: ChatCompletion, when_ns: int) -> tuple[Priced, float]:
        input_tokens, output_tokens, cached, reasoning = _usage(response)
        usage = TokenUsage(input_tokens, output_tokens, cached, None, reasoning)
        cost = pricer.price(
            usage, models=(response.model, MODEL), provider="openai", when_ns=when_ns
        )
        assert cost is not None
        ledger.commit(rid, int(cost.total * _MILLION), input_tokens + output_tokens, scopes)
        left = ledger.snapshot("budget:lean").room_micros or 0
        extra = {
            "costspan.cost.input_usd": float(cost.input),
            "costspan.cost.output_usd": float(cost.output),
            "costspan.price.provider": cost.provider or "",
            "costspan.price.model": cost.model or "",
        }
        return Priced(input_tokens, output_tokens, cached, reasoning, cost.total, extra), left / 1e6

    def keep(when_ns: int, model: str, answered: str, tags: Any, priced: Priced, *ids: int) -> None:
        usage = TokenUsage(
            priced.input_tokens, priced.output_tokens, priced.cached, None, priced.reasoning
        )
        records.add(
            spend_record(
                time_ns=when_ns,
                operation="chat",
                provider="openai",
                request_model=model,
                response_model=answered,
                tags=tags,
                usage=usage,
                cost=Cost(priced.total),
                trace_id=ids[0],
                span_id=ids[1],
                decision="allow",
            )
        )

    return before, after, keep


def minimal_parts() -> tuple[Before, After, Callable[..., None]]:
    """The budget's work with the least machinery there is: the model's rates looked up once,
    one lock-guarded counter (cap, spent, held) and a ring of tuples for the records. Not a
    design (no price tiers or dates, one scope, no idempotency, no leases): a measure of what the
    contract's own work costs."""
    cost = Pricer().price(
        TokenUsage(1_000_000, 1_000_000), models=(MODEL,), provider="openai", when_ns=time.time_ns()
    )
    assert cost is not None
    per_input, per_output = cost.input / 1_000_000, cost.output / 1_000_000
    lock = threading.Lock()
    budget = [10**15, 0, 0]  # cap, spent, held (micro-USD)
    records: deque[tuple[Any, ...]] = deque(maxlen=10_000)

    def before(prompt: int) -> tuple[str, Decimal]:
        worst = per_input * prompt + per_output * CAP
        hold = int(worst * _MILLION) + 1
        with lock:
            if budget[1] + budget[2] + hold > budget[0]:
                raise RuntimeError("the lean budget refused a call")
            budget[2] += hold
        return str(hold), worst

    def after(rid: str, response: ChatCompletion, when_ns: int) -> tuple[Priced, float]:
        input_tokens, output_tokens, cached, reasoning = _usage(response)
        total = per_input * input_tokens + per_output * output_tokens
        with lock:
            budget[2] -= int(rid)
            budget[1] += int(total * _MILLION)
            left = budget[0] - budget[1] - budget[2]
        return Priced(input_tokens, output_tokens, cached, reasoning, total, {}), left / 1e6

    def keep(*record: Any) -> None:
        records.append(record)

    return before, after, keep


@contextmanager
def lean_every_attribute(providers: overhead.Providers) -> Iterator[None]:
    with lean_path(providers, costspans_parts, every_attribute=True):
        yield


@contextmanager
def lean_required_attributes(providers: overhead.Providers) -> Iterator[None]:
    with lean_path(providers, costspans_parts, every_attribute=False):
        yield


@contextmanager
def minimal(providers: overhead.Providers) -> Iterator[None]:
    with lean_path(providers, minimal_parts, every_attribute=False):
        yield


VARIANTS: dict[str, overhead.Variant] = {
    "bare client": overhead.bare,
    "sdk span + costspan's attrs": overhead.sdk_span_with_attributes,
    "official genai-openai": overhead.official,
    "costspan + budget": overhead.costspan_budget_variant,
    "lean path, costspan's attrs": lean_every_attribute,
    "lean path, required attrs": lean_required_attributes,
    "minimal parts, required attrs": minimal,
}


def measure(rounds: int, calls: int) -> dict[str, dict[str, float]]:
    """Median and mean µs per plain call of each variant, measured interleaved."""
    return overhead.measure(rounds, calls, variants=VARIANTS, modes={"plain": overhead.plain})


def table(times: dict[str, dict[str, float]]) -> str:
    bare = times["bare client"]
    official = times["official genai-openai"]
    theirs = official["plain"] - bare["plain"]
    theirs_mean = official["plain mean"] - bare["plain mean"]
    lines = [f"{'variant (plain calls)':<30}{'µs':>9}{'added':>9}{'ratio':>8}{'means':>8}"]
    for name, row in times.items():
        added = row["plain"] - bare["plain"]
        mean = row["plain mean"] - bare["plain mean"]
        lines.append(
            f"{name:<30}{row['plain']:>9.1f}{added:>+9.1f}"
            f"{added / theirs:>8.2f}{mean / theirs_mean:>8.2f}"
        )
    for name, over in (
        ("lean path, required attrs", "costspan's parts"),
        ("minimal parts, required attrs", "the least machinery"),
    ):
        lean = times[name]["plain"] - bare["plain"]
        lines.append(
            f"one function per call over {over} adds {lean / theirs:.2f}x what the official "
            f"instrumentation adds (issue 16's target: {overhead.TARGET:g}x)"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description="The leanest budgeted path, measured.")
    parser.add_argument("-r", "--rounds", type=int, default=30)
    parser.add_argument("-n", "--calls", type=int, default=60)
    args = parser.parse_args()
    print(table(measure(args.rounds, args.calls)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
