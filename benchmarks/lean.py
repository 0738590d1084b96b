"""How low a budgeted call's overhead can go: the leanest path over costspan's own parts.

Issue 16 asks that a call under an active in-memory budget add at most 0.6x what the official
instrumentation adds. This benchmark measures what a *specialised* path would reach: one
hand-written function per call that does only what a budgeted call must do, in the cheapest way
costspan's parts allow, with none of costspan's generality (no fail-safe handling, no limits,
no thresholds, no actions, no streams, no other APIs; calibration and hold renewal only where
said below):

- start the CLIENT span with the request attributes, and make it current while the call is sent;
- read the caller's baggage (attribution);
- count the prompt with costspan's cached tokenizer and price the worst case with its pricer;
- reserve that in costspan's in-memory ledger and give the uncapped request its output cap;
- read the response's usage, price it, commit it, and read what the budget has left;
- write the end attributes, keep the spend record, queue the call's metrics (recorded in
  batches, as costspan does) and end the span.

The budget's work is done by three parts: pricing, the ledger and the spend records. The path
runs four times:

- over costspan's own parts, writing every attribute costspan writes on a budgeted call;
- over costspan's own parts, writing only what the span contract requires (usage, the cost,
  price source, budget decision and remaining, the cap, and the response attributes the official
  instrumentation also writes);
- over the least machinery that does each part's job, writing what the contract requires:
  the model's rates (input, cached input, output) looked up once a minute (prices have dates; no
  tiers), the budget found in a context variable and kept as one lock-guarded counter of USD and
  tokens (no reservation ids, leases or idempotency), a ring of tuples for the records;
- over the same least machinery with what the contract asks of every budget on top
  (DESIGN.md, "Reserve, then settle"): each hold under its own reservation id, with a lease that
  a crashed caller's hold expires by, renewed by costspan's renewer while the call runs, commits
  idempotent by id, and the prompt's count calibrated from settled calls (and the calibration
  taught by each settled call).

Every path finds its budget in the context, and keeps its parts and its metric batches across
rounds, as costspan does. Everything these paths leave out only adds time. The first two bound
what a specialised path over costspan's parts could reach, the third what a path that drops
the contract's guarantees could, and the fourth what any implementation that keeps them over
the OpenTelemetry SDK could. (Swapping one of costspan's parts at a time into the least
machinery moved the ratio by 0.05-0.15 each, with too wide a spread between runs for a table of
its own.)

    .venv/bin/python benchmarks/lean.py            # 30 rounds x 60 calls, plain calls
    .venv/bin/python benchmarks/lean.py -r 5 -n 20 # a quick look
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
import timeit
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol, cast

sys.path.insert(0, str(Path(__file__).resolve().parent))

import overhead
from openai.types.chat import ChatCompletion
from opentelemetry import baggage, trace
from opentelemetry import context as otel_context
from opentelemetry.context import Context
from opentelemetry.metrics import Meter
from opentelemetry.trace import Span, SpanKind

import costspan
from costspan._money import micros
from costspan._pricing import Cost, Pricer
from costspan._records import Buffer, spend_record
from costspan._reservation import reservation_id
from costspan._runtime import runtime
from costspan._scopes import active_scopes, possibly_limited
from costspan._tokens import counter
from costspan._usage import TokenUsage
from costspan.ledgers import ScopeLimit

MODEL = "gpt-4o-mini"
ANSWERED = "gpt-4o-mini-2024-07-18"  # the dated model the local server answers with
CAP = 4096  # costspan's default output cap for an uncapped request under a budget
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
    """A response's usage and what it cost."""

    input_tokens: int
    output_tokens: int
    cached: int
    reasoning: int
    total: Decimal
    usage: TokenUsage | None = None
    """costspan's usage object, when costspan's pricer priced it (the spend record reads it)."""
    cost: Cost | None = None
    """costspan's cost, when its pricer priced it (its parts are attributes of the full set)."""


def _usage(response: ChatCompletion) -> tuple[int, int, int, int]:
    usage = response.usage
    assert usage is not None
    details = usage.prompt_tokens_details
    cached = (details.cached_tokens or 0) if details is not None else 0
    out_details = usage.completion_tokens_details
    reasoning = (out_details.reasoning_tokens or 0) if out_details is not None else 0
    return usage.prompt_tokens, usage.completion_tokens, cached, reasoning


class Pricing(Protocol):
    def worst(self, prompt: int, when_ns: int) -> Decimal: ...
    def cost(self, response: ChatCompletion, when_ns: int) -> Priced: ...


@dataclass(frozen=True)
class Hold:
    """A granted hold: what it holds, what the budget had left after it (micro-USD), and where
    (a reservation id and its scopes, for a ledger that has them)."""

    micros: int
    tokens: int
    room: int
    rid: str = ""
    scopes: tuple[ScopeLimit, ...] = ()


class Ledger(Protocol):
    def hold(self, usd_micros: int, tokens: int) -> Hold: ...
    def settle(self, hold: Hold, usd_micros: int, tokens: int) -> int:
        """Commit; what the budget has left (micro-USD), worked out from the grant's state."""
        ...


Keep = Callable[[int, str, str, Any, Priced, int, int], None]
"""Keep a call's spend record: when, the model asked for and the one that answered, the
caller's tags, what it cost, its trace and span ids."""


class CostspansPricing:
    """costspan's pricer: cached rates for the estimate, a :class:`Cost` for the usage."""

    def __init__(self) -> None:
        self.pricer = Pricer()
        when = time.time_ns()
        for model in (MODEL, ANSWERED):  # the model asked for and the dated one that answers
            self.pricer.price(TokenUsage(1, 1), models=(model,), provider="openai", when_ns=when)

    def worst(self, prompt: int, when_ns: int) -> Decimal:
        worst = self.pricer.total(prompt, CAP, model=MODEL, provider="openai", when_ns=when_ns)
        assert worst is not None
        return worst

    def cost(self, response: ChatCompletion, when_ns: int) -> Priced:
        input_tokens, output_tokens, cached, reasoning = _usage(response)
        usage = TokenUsage(input_tokens, output_tokens, cached, None, reasoning)
        models = (response.model, MODEL)
        cost = self.pricer.price(usage, models=models, provider="openai", when_ns=when_ns)
        assert cost is not None
        return Priced(input_tokens, output_tokens, cached, reasoning, cost.total, usage, cost)


class FixedPricing:
    """The model's rates (input, cached input, output), looked up once a minute (prices have
    dates): no tiers, no price tables."""

    def __init__(self) -> None:
        self.minute = -1
        self.rates = (Decimal(0), Decimal(0), Decimal(0))

    def _rates(self, when_ns: int) -> tuple[Decimal, Decimal, Decimal]:
        minute = when_ns // 60_000_000_000
        if minute != self.minute:
            pricer, per = Pricer(), Decimal(1_000_000)
            plain, cached = TokenUsage(1_000_000, 1_000_000), TokenUsage(1_000_000, 0, 1_000_000)
            full = pricer.price(plain, models=(MODEL,), provider="openai", when_ns=when_ns)
            read = pricer.price(cached, models=(MODEL,), provider="openai", when_ns=when_ns)
            assert full is not None
            assert read is not None
            self.rates = (full.input / per, read.cached_input / per, full.output / per)
            self.minute = minute
        return self.rates

    def worst(self, prompt: int, when_ns: int) -> Decimal:
        per_input, _, per_output = self._rates(when_ns)
        return per_input * prompt + per_output * CAP

    def cost(self, response: ChatCompletion, when_ns: int) -> Priced:
        input_tokens, output_tokens, cached, reasoning = _usage(response)
        per_input, per_cached, per_output = self._rates(when_ns)
        total = per_input * (input_tokens - cached) + per_cached * cached
        total += per_output * output_tokens  # reasoning is billed as output
        return Priced(input_tokens, output_tokens, cached, reasoning, total)


class CostspansLedger:
    """costspan's in-memory ledger, the scopes found in the context as costspan finds them."""

    def hold(self, usd_micros: int, tokens: int) -> Hold:
        if not possibly_limited():
            raise RuntimeError("the lean path runs under a budget")
        scopes, _ = active_scopes()
        limits = tuple(scope.limit for scope in scopes)
        rid = reservation_id()  # unique across ledgers and processes, as costspan's are
        granted = runtime().ledger.reserve(rid, limits, usd_micros, tokens, 60.0)
        if not granted.granted:
            raise RuntimeError("the lean budget refused a call")
        room = min(state.room_micros or 0 for state in granted.states)
        return Hold(usd_micros, tokens, room, rid, limits)

    def settle(self, hold: Hold, usd_micros: int, tokens: int) -> int:
        runtime().ledger.commit(hold.rid, usd_micros, tokens, hold.scopes)
        return hold.room + hold.micros - usd_micros


class _Counter:
    """One budget: caps, spend and holds in micro-USD and tokens."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.cap, self.spent, self.held = 10**15, 0, 0
        self.cap_tokens, self.spent_tokens, self.held_tokens = 10**15, 0, 0

    def take(self, usd_micros: int, tokens: int) -> int:
        """Hold the amounts if they fit (the caller holds the lock); the room left after."""
        room = self.cap - self.spent - self.held - usd_micros
        room_tokens = self.cap_tokens - self.spent_tokens - self.held_tokens - tokens
        if room < 0 or room_tokens < 0:
            raise RuntimeError("the lean budget refused a call")
        self.held += usd_micros
        self.held_tokens += tokens
        return room


_COUNTER: ContextVar[_Counter | None] = ContextVar("lean_counter", default=None)


class CounterLedger:
    """The context's budget as one lock-guarded counter: no ids, leases or idempotency."""

    def hold(self, usd_micros: int, tokens: int) -> Hold:
        budget = _COUNTER.get()
        if budget is None:
            raise RuntimeError("the lean path runs under a budget")
        with budget.lock:
            room = budget.take(usd_micros, tokens)
        return Hold(usd_micros, tokens, room)

    def settle(self, hold: Hold, usd_micros: int, tokens: int) -> int:
        budget = _COUNTER.get()
        assert budget is not None
        with budget.lock:
            budget.held -= hold.micros
            budget.held_tokens -= hold.tokens
            budget.spent += usd_micros
            budget.spent_tokens += tokens
            return budget.cap - budget.spent - budget.held


class GuardedLedger:
    """Budgets as counters (found in the context) with what the contract asks of any ledger: a
    reservation id per hold, a lease (a crashed caller's hold expires), the hold renewed while
    the call runs (by costspan's renewer), and commits idempotent by id (a bounded window of
    settled ids). One lock, as costspan's in-memory ledger has."""

    lease_s = 60.0

    def __init__(self) -> None:
        self.lock = threading.Lock()
        # rid -> (held µ$, held tokens, lease expiry, its budget)
        self.holds: dict[str, tuple[int, int, float, _Counter]] = {}
        self.settled: OrderedDict[str, None] = OrderedDict()
        self.renewer = runtime().renewer

    def hold(self, usd_micros: int, tokens: int) -> Hold:
        budget = _COUNTER.get()
        if budget is None:
            raise RuntimeError("the lean path runs under a budget")
        rid = reservation_id()
        now = time.time()
        with self.lock:
            if self.holds:  # expired holds go first (a crashed caller's)
                for old, (held, held_tokens, expiry, owner) in list(self.holds.items()):
                    if expiry <= now:
                        del self.holds[old]
                        owner.held -= held
                        owner.held_tokens -= held_tokens
            room = budget.take(usd_micros, tokens)
            self.holds[rid] = (usd_micros, tokens, now + self.lease_s, budget)
        # The renewer extends the hold (through extend()) every third of a lease.
        self.renewer.watch(rid, cast("costspan.ledgers.Ledger", self), (), self.lease_s)
        return Hold(usd_micros, tokens, room, rid)

    def extend(self, rid: str, scopes: object, lease_s: float) -> bool:
        """The renewer's call: the hold lives another lease, if it still holds."""
        with self.lock:
            held = self.holds.get(rid)
            if held is None:
                return False
            self.holds[rid] = (held[0], held[1], time.time() + lease_s, held[3])
            return True

    def settle(self, hold: Hold, usd_micros: int, tokens: int) -> int:
        self.renewer.forget(hold.rid)
        with self.lock:
            held = self.holds.pop(hold.rid, None)
            budget = held[3] if held is not None else _COUNTER.get()
            assert budget is not None
            if hold.rid in self.settled:  # a repeated commit: counted once
                return budget.cap - budget.spent - budget.held
            if held is not None:
                budget.held -= held[0]
                budget.held_tokens -= held[1]
            budget.spent += usd_micros
            budget.spent_tokens += tokens
            self.settled[hold.rid] = None
            if len(self.settled) > 4096:
                self.settled.popitem(last=False)
            return budget.cap - budget.spent - budget.held


def costspans_records() -> Keep:
    """costspan's spend records, in its ring buffer."""
    records = Buffer(10_000)

    def keep(
        when_ns: int, model: str, answered: str, tags: Any, priced: Priced, trace: int, span: int
    ) -> None:
        assert priced.usage is not None
        records.add(
            spend_record(
                time_ns=when_ns,
                operation="chat",
                provider="openai",
                request_model=model,
                response_model=answered,
                tags=tags,
                usage=priced.usage,
                cost=priced.cost,
                trace_id=trace,
                span_id=span,
                decision="allow",
            )
        )

    return keep


def tuple_records() -> Keep:
    """A ring of tuples."""
    records: deque[tuple[Any, ...]] = deque(maxlen=10_000)

    def keep(*record: Any) -> None:
        records.append(record)

    return keep


class _Metrics:
    """The conventions' histograms and the cost counter, recorded in batches as costspan
    records them (a median leaves the batches out, a mean does not). Kept across a variant's
    rounds, like costspan's: every measurement is recorded, none dropped when a round ends."""

    def __init__(self, meter: Meter) -> None:
        self.duration = meter.create_histogram("gen_ai.client.operation.duration", unit="s")
        self.tokens = meter.create_histogram("gen_ai.client.token.usage", unit="{token}")
        self.spend = meter.create_counter("costspan.cost", unit="USD")
        self.pending: deque[tuple[Callable[..., None], float, dict[str, Any], Context]] = deque()

    def add(
        self, span: Span, dims: dict[str, Any], seconds: float, priced: Priced, usd: float
    ) -> None:
        linked = trace.set_span_in_context(span)  # exemplars link to the call's span
        pending = self.pending
        pending.append((self.duration.record, seconds, dims, linked))
        inputs = {**dims, "gen_ai.token.type": "input"}
        pending.append((self.tokens.record, priced.input_tokens, inputs, linked))
        outputs = {**dims, "gen_ai.token.type": "output"}
        pending.append((self.tokens.record, priced.output_tokens, outputs, linked))
        pending.append((self.spend.add, usd, dims, linked))
        if len(pending) >= 128:  # costspan's batch: 32 calls of four measurements
            while pending:
                record, amount, attributes, ctx = pending.popleft()
                record(amount, attributes, ctx)


@contextmanager
def lean_path(
    providers: overhead.Providers,
    pricing: Pricing,
    ledger: Ledger,
    keep: Keep,
    metrics: _Metrics,
    *,
    every_attribute: bool,
    calibrated: bool = False,
) -> Iterator[None]:
    """A budgeted path wrapped around ``Completions.create`` while the block runs: the span,
    the cap and the metrics as costspan does them, the budget's work done by the parts."""
    tracer = providers.tracer.get_tracer("lean")
    count = counter(MODEL)
    calibration = runtime().calibration

    def call(wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
        model = kwargs["model"]
        tags = baggage.get_all()
        span = tracer.start_span(f"chat {model}", kind=SpanKind.CLIENT, attributes=_START)
        start_ns = time.time_ns()
        prompt = 3
        for message in kwargs["messages"]:
            prompt += 3 + count(message["role"]) + count(message["content"])
        counted = prompt
        if calibrated:  # the provider's tokenizer, as settled calls taught the calibration
            prompt = calibration.calibrated("openai", model, prompt)
        worst = pricing.worst(prompt, start_ns)
        held = ledger.hold(micros(worst), prompt + CAP)
        token = otel_context.attach(trace.set_span_in_context(span))
        started = timeit.default_timer()
        try:
            response: ChatCompletion = wrapped(*args, **{**kwargs, "max_tokens": CAP})
        finally:
            otel_context.detach(token)
        priced = pricing.cost(response, start_ns)
        used = priced.input_tokens + priced.output_tokens
        left = ledger.settle(held, micros(priced.total), used)
        if calibrated:
            calibration.observe("openai", model, counted, priced.input_tokens)
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
            "costspan.budget.remaining_usd": left / 1e6,
        }
        if every_attribute:
            end["costspan.budget.ids"] = ("lean",)
            end["costspan.budget.estimate_usd"] = float(worst)
            end["openai.response.service_tier"] = response.service_tier or ""
            end["openai.response.system_fingerprint"] = response.system_fingerprint or ""
            cost = priced.cost
            if cost is not None:
                end["costspan.cost.input_usd"] = float(cost.input)
                end["costspan.cost.output_usd"] = float(cost.output)
                end["costspan.price.provider"] = cost.provider or ""
                end["costspan.price.model"] = cost.model or ""
        span.set_attributes(end)
        context = span.get_span_context()
        keep(start_ns, model, response.model, tags, priced, context.trace_id, context.span_id)
        dims = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": model,
            "gen_ai.response.model": response.model,
        }
        metrics.add(span, dims, timeit.default_timer() - started, priced, total)
        span.end()
        return response

    with overhead.wrapping_create(call):
        yield


def variant(
    pricing: Callable[[], Pricing],
    ledger: Callable[[], Ledger],
    records: Callable[[], Keep],
    budget: Callable[[], AbstractContextManager[object]],
    *,
    every_attribute: bool = False,
    calibrated: bool = False,
) -> overhead.Variant:
    """A benchmark variant: the lean path over parts of these kinds, under ``budget()``. The
    parts and the metrics are made once and kept across rounds, as costspan keeps its own."""
    kept: dict[int, tuple[Pricing, Ledger, Keep, _Metrics]] = {}

    @contextmanager
    def run(providers: overhead.Providers) -> Iterator[None]:
        parts = kept.get(id(providers))
        if parts is None:
            metrics = _Metrics(providers.meter.get_meter("lean"))
            parts = kept[id(providers)] = (pricing(), ledger(), records(), metrics)
        with (
            budget(),
            lean_path(providers, *parts, every_attribute=every_attribute, calibrated=calibrated),
        ):
            yield

    return run


def costspans_budget() -> AbstractContextManager[object]:
    """A costspan budget, as the costspan + budget variant opens one."""
    return costspan.budget(usd=1_000_000)


_counter = _Counter()


@contextmanager
def counter_budget() -> Iterator[None]:
    """The least machinery's budget: its counter in a context variable."""
    token = _COUNTER.set(_counter)
    try:
        yield
    finally:
        _COUNTER.reset(token)


VARIANTS: dict[str, overhead.Variant] = {
    "bare client": overhead.bare,
    "sdk span + costspan's attrs": overhead.sdk_span_with_attributes,
    "official genai-openai": overhead.official,
    "costspan + budget": overhead.costspan_budget_variant,
    "lean path, costspan's attrs": variant(
        CostspansPricing,
        CostspansLedger,
        costspans_records,
        costspans_budget,
        every_attribute=True,
    ),
    "lean path, required attrs": variant(
        CostspansPricing, CostspansLedger, costspans_records, costspans_budget
    ),
    "least machinery": variant(FixedPricing, CounterLedger, tuple_records, counter_budget),
    "least machinery, guarded": variant(
        FixedPricing, GuardedLedger, tuple_records, counter_budget, calibrated=True
    ),
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
        ("least machinery", "the least machinery"),
        ("least machinery, guarded", "the least machinery that keeps the contract's guarantees"),
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
