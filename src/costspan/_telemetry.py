"""The tracer and the metric instruments of one instrumentation, and how they are recorded.

:class:`Telemetry` is made once per ``instrument()`` (and per :class:`~costspan.CostSpanProcessor`
for foreign spans): the GenAI semantic-convention histograms (v1.41 ``gen-ai-metrics.md``),
costspan's cost counters (:class:`CostMeter`) and its budget counters (:class:`BudgetMeter`).
Metric dimensions are bounded: operation, provider, model, server, and only the baggage keys a
user named in ``COSTSPAN_METRIC_TAGS``.

Two things keep the SDK off a call's path (each SDK measurement validates, copies and hashes its
attributes): the cost, token and unpriced-call counters are sums kept here (:class:`Tally`) and
read by the SDK through observable counters when a reader collects; the histograms are recorded
in batches (:class:`Deferred`), before every collection and by the call that fills a batch.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections import deque
from collections.abc import Iterable, Mapping
from typing import Final

from opentelemetry import trace
from opentelemetry.context import Context, get_current
from opentelemetry.metrics import (
    CallbackOptions,
    Counter,
    Histogram,
    Meter,
    MeterProvider,
    NoOpMeter,
    Observation,
    get_meter,
)
from opentelemetry.trace import Tracer, TracerProvider
from opentelemetry.util.types import AttributeValue

from costspan import _attributes as A
from costspan._money import display
from costspan._pricing import Cost
from costspan._usage import TokenUsage
from costspan._version import __version__

_logger = logging.getLogger(__name__)

SCHEMA_URL = "https://opentelemetry.io/schemas/1.41.0"

Dimensions = Mapping[str, AttributeValue]


class Tally:
    """A monotonic sum per attribute set, kept in this process and exported through an
    observable counter: adding to it is a dict update under a lock, not an SDK measurement (the
    SDK validates, copies and hashes a measurement's attributes on every ``add``). The exported
    data is the SDK's own ``Sum`` (monotonic; cumulative or delta as the reader asks), read when
    a reader collects. Attribute sets are bounded like the SDK's (2,000, then an overflow set)."""

    __slots__ = ("__weakref__", "_attributes", "_lock", "_sums")

    def __init__(self) -> None:
        self._sums: dict[frozenset[tuple[str, AttributeValue]], float] = {}
        self._attributes: dict[
            frozenset[tuple[str, AttributeValue]], dict[str, AttributeValue]
        ] = {}
        self._lock = threading.Lock()
        _forkable.add(self)

    def _after_fork(self) -> None:
        self._lock = threading.Lock()

    def add(self, amount: float, dims: Dimensions) -> None:
        key = frozenset(dims.items())
        with self._lock:
            total = self._sums.get(key)
            if total is not None:
                self._sums[key] = total + amount
                return
            if len(self._sums) >= CARDINALITY_LIMIT:
                key = _OVERFLOW_KEY
                dims = _OVERFLOW
            self._sums[key] = self._sums.get(key, 0) + amount
            self._attributes[key] = dict(dims)

    def observe(self, _options: CallbackOptions) -> Iterable[Observation]:
        with self._lock:
            sums = list(self._sums.items())
        return [Observation(total, self._attributes[key]) for key, total in sums]

    def value(self, dims: Dimensions) -> float:
        """The sum for one attribute set (0 if none was added)."""
        return self._sums.get(frozenset(dims.items()), 0)


_forkable: weakref.WeakSet[Tally | Deferred] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    """A fork copies the locks other threads held, with nobody left in the child to release
    them: a drain holds its lock while it records a whole batch, so a child forked meanwhile
    would wait for good at its first collection (or its shutdown). The child starts with new
    locks."""
    global _tallies_lock
    _tallies_lock = threading.Lock()
    for item in list(_forkable):
        item._after_fork()  # pyright: ignore[reportPrivateUsage]


os.register_at_fork(after_in_child=_after_fork_in_child)


CARDINALITY_LIMIT: Final = 2000
_OVERFLOW: Final[dict[str, AttributeValue]] = {"otel.metric.overflow": True}
_OVERFLOW_KEY: Final = frozenset(_OVERFLOW.items())


class Deferred:
    """Histogram measurements waiting to be recorded, in batches.

    A call's semantic-convention histograms (duration, input and output tokens, time to first
    chunk) stay real SDK histograms, recorded with the call's attributes and context (so
    exemplars link to the same spans). They are recorded in batches rather than one by one on the
    caller's path: every :data:`BATCH` calls by the call that fills the batch, and before every
    collection (a reader sees every call that finished before it collected). Recorded in a row,
    the SDK's code and data stay in the CPU's caches, where the same records made one per call,
    between an HTTP client's work, run cold: the batch costs about half the CPU time."""

    __slots__ = ("__weakref__", "_drain_lock", "_queue")

    def __init__(self) -> None:
        self._queue: deque[tuple[Histogram, float, Dimensions, Context]] = deque()
        self._drain_lock = threading.Lock()
        _forkable.add(self)

    def _after_fork(self) -> None:
        # The measurements still waiting are the parent's calls: the parent records them.
        self._queue.clear()
        self._drain_lock = threading.Lock()

    def add(self, instrument: Histogram, amount: float, dims: Dimensions, ctx: Context) -> None:
        queue = self._queue
        queue.append((instrument, amount, dims, ctx))
        if len(queue) >= BATCH * 3:
            self.drain()

    def drain(self, *, wait: bool = False) -> None:
        """Record everything waiting (never raises). One drainer at a time: a call that finds
        another draining goes on (that one takes its measurements too); a collection waits."""
        if not self._drain_lock.acquire(blocking=wait):
            return
        try:
            pop = self._queue.popleft
            while True:
                try:
                    instrument, amount, dims, ctx = pop()
                except IndexError:
                    return
                try:
                    instrument.record(amount, dims, ctx)
                except Exception:
                    _logger.exception("costspan could not record a metric")
        finally:
            self._drain_lock.release()

    def __len__(self) -> int:
        return len(self._queue)


BATCH: Final = 32
"""Calls whose histogram measurements wait to be recorded together (at most)."""


class _CostTallies:
    """The cost, token and unpriced-call sums of one meter, their observable counters, and the
    meter's deferred histogram measurements (recorded before each collection)."""

    __slots__ = ("cost", "deferred", "tokens", "unpriced")

    def __init__(self, meter: Meter) -> None:
        self.cost = Tally()
        self.tokens = Tally()
        self.unpriced = Tally()
        self.deferred: Deferred | None = None
        if isinstance(meter, NoOpMeter):
            return  # nothing would ever read them
        self.deferred = Deferred()
        meter.create_observable_counter(
            A.METRIC_COST,
            callbacks=[self._observe_cost],
            unit="USD",
            description="Cost of GenAI calls in US dollars",
        )
        meter.create_observable_counter(
            A.METRIC_TOKENS,
            callbacks=[self.tokens.observe],
            unit="{token}",
            description="Cached-input, cache-write and reasoning tokens of GenAI calls",
        )
        meter.create_observable_counter(
            A.METRIC_UNPRICED_CALLS,
            callbacks=[self.unpriced.observe],
            unit="{call}",
            description="GenAI calls whose model has no known price",
        )

    def _observe_cost(self, options: CallbackOptions) -> Iterable[Observation]:
        # A reader is collecting: the deferred histogram measurements go in first (every
        # observable callback runs before the SDK reads its aggregations).
        if self.deferred is not None:
            self.deferred.drain(wait=True)
        return self.cost.observe(options)


# One set of sums per meter: the SDK registers an instrument name once per meter and ignores
# the callbacks of a second registration, so every CostMeter of a meter must share them.
_tallies_lock = threading.Lock()
_tallies: weakref.WeakKeyDictionary[Meter, _CostTallies] = weakref.WeakKeyDictionary()
_tallies_by_id: dict[int, tuple[Meter, _CostTallies]] = {}  # meters that take no weak reference


def _tallies_of(meter: Meter) -> _CostTallies:
    with _tallies_lock:
        try:
            found = _tallies.get(meter)
            if found is None:
                found = _tallies[meter] = _CostTallies(meter)
            return found
        except TypeError:
            kept = _tallies_by_id.get(id(meter))
            if kept is None:
                kept = _tallies_by_id[id(meter)] = (meter, _CostTallies(meter))
            return kept[1]


class CostMeter:
    """The cost, token and unpriced-call counters of one meter."""

    __slots__ = ("cost", "tokens", "unpriced")

    def __init__(self, meter: Meter) -> None:
        tallies = _tallies_of(meter)
        self.cost = tallies.cost
        self.tokens = tallies.tokens
        self.unpriced = tallies.unpriced

    def record(self, usage: TokenUsage, cost: Cost | None, dims: Dimensions) -> None:
        """Count one priced (or unpriceable) call."""
        if cost is None:
            self.unpriced.add(1, dims)
        else:
            self.cost.add(display(cost.total), dims)
        # Input and output totals are in gen_ai.client.token.usage; this counter breaks out the
        # subsets that histogram cannot show.
        if usage.cache_read_tokens or usage.cache_write_tokens or usage.reasoning_tokens:
            for kind, count in (
                ("cached_input", usage.cache_read_tokens),
                ("cache_write", usage.cache_write_tokens),
                ("reasoning", usage.reasoning_tokens),
            ):
                if count:
                    self.tokens.add(count, {**dims, A.COSTSPAN_TOKEN_TYPE: kind})


class BudgetMeter:
    """Decision, threshold, rejected-baggage and ledger-unavailable counters."""

    __slots__ = ("decisions", "overruns", "rejected", "thresholds", "unavailable")

    def __init__(self, meter: Meter) -> None:
        self.decisions: Counter = meter.create_counter(
            A.METRIC_BUDGET_DECISIONS, unit="{call}", description="Budget decisions on GenAI calls"
        )
        self.thresholds: Counter = meter.create_counter(
            A.METRIC_BUDGET_THRESHOLDS,
            unit="{event}",
            description="Budgets passing a soft threshold (warn_at)",
        )
        self.rejected: Counter = meter.create_counter(
            A.METRIC_BAGGAGE_REJECTED,
            unit="{entry}",
            description="Inbound budget baggage entries ignored as malformed or hostile",
        )
        self.overruns: Counter = meter.create_counter(
            A.METRIC_BUDGET_OVERRUNS,
            unit="{call}",
            description="Calls that cost more than the worst case they reserved",
        )
        self.unavailable: Counter = meter.create_counter(
            A.METRIC_LEDGER_UNAVAILABLE,
            unit="{call}",
            description="Calls decided without the shared ledger (it was unreachable)",
        )


class Telemetry:
    """The tracer and the metric instruments of one instrumentation."""

    __slots__ = (
        "budgets",
        "costs",
        "deferred",
        "duration",
        "meter",
        "time_to_first_chunk",
        "token_usage",
        "tracer",
    )

    def __init__(
        self,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
    ) -> None:
        self.tracer: Tracer = trace.get_tracer(
            "costspan", __version__, tracer_provider, schema_url=SCHEMA_URL
        )
        self.meter: Meter = get_meter(
            "costspan", __version__, meter_provider, schema_url=SCHEMA_URL
        )
        self.duration: Histogram = self.meter.create_histogram(
            A.METRIC_OPERATION_DURATION,
            unit="s",
            description="GenAI operation duration",
            explicit_bucket_boundaries_advisory=list(A.DURATION_BUCKETS),
        )
        self.token_usage: Histogram = self.meter.create_histogram(
            A.METRIC_TOKEN_USAGE,
            unit="{token}",
            description="Number of input and output tokens used",
            explicit_bucket_boundaries_advisory=list(A.TOKEN_USAGE_BUCKETS),
        )
        self.time_to_first_chunk: Histogram = self.meter.create_histogram(
            A.METRIC_TIME_TO_FIRST_CHUNK,
            unit="s",
            description="Time to receive the first chunk of a streaming response",
            explicit_bucket_boundaries_advisory=list(A.DURATION_BUCKETS),
        )
        self.costs = CostMeter(self.meter)
        self.budgets = BudgetMeter(self.meter)
        self.deferred = _tallies_of(self.meter).deferred

    def record(
        self, instrument: Histogram, amount: float, dims: Dimensions, ctx: Context | None = None
    ) -> None:
        """Record a histogram measurement, in the next batch (see :class:`Deferred`). ``ctx``:
        the context whose span an exemplar links to (the current one by default)."""
        if ctx is None:
            ctx = get_current()
        deferred = self.deferred
        if deferred is None:
            instrument.record(amount, dims, ctx)
        else:
            deferred.add(instrument, amount, dims, ctx)

    def flush(self) -> None:
        """Record the measurements waiting in the batch now."""
        if self.deferred is not None:
            self.deferred.drain()

    def record_call(
        self,
        dims: Dimensions,
        duration_s: float,
        usage: TokenUsage | None,
        ctx: Context | None = None,
    ) -> None:
        """The semantic-convention metrics of one call (``dims`` include ``error.type`` for a
        failed one). ``ctx``: the context of the call's span, which exemplars link to (the
        current one by default)."""
        if ctx is None:
            ctx = get_current()
        deferred = self.deferred
        if deferred is None:
            self._record_now(dims, duration_s, usage, ctx)
            return
        add = deferred.add
        add(self.duration, duration_s, dims, ctx)
        # The conventions allow recording counted (not reported) usage when offline counting
        # is on, as it is here; the span says which it was.
        if usage is None:
            return
        if usage.input_tokens is not None:
            add(self.token_usage, usage.input_tokens, {**dims, A.GEN_AI_TOKEN_TYPE: "input"}, ctx)
        if usage.output_tokens is not None:
            add(self.token_usage, usage.output_tokens, {**dims, A.GEN_AI_TOKEN_TYPE: "output"}, ctx)

    def _record_now(
        self, dims: Dimensions, duration_s: float, usage: TokenUsage | None, ctx: Context
    ) -> None:
        self.duration.record(duration_s, dims, ctx)
        if usage is None:
            return
        tokens = self.token_usage
        if usage.input_tokens is not None:
            tokens.record(usage.input_tokens, {**dims, A.GEN_AI_TOKEN_TYPE: "input"}, ctx)
        if usage.output_tokens is not None:
            tokens.record(usage.output_tokens, {**dims, A.GEN_AI_TOKEN_TYPE: "output"}, ctx)
