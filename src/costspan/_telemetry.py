"""The tracer and the metric instruments of one instrumentation, and how they are recorded.

:class:`Telemetry` is made once per ``instrument()`` (and per :class:`~costspan.CostSpanProcessor`
for foreign spans): the GenAI semantic-convention histograms (v1.41 ``gen-ai-metrics.md``),
costspan's cost counters (:class:`CostMeter`) and its budget counters (:class:`BudgetMeter`).
Metric dimensions are bounded: operation, provider, model, server, and only the baggage keys a
user named in ``COSTSPAN_METRIC_TAGS``.

A call's measurements go to real SDK instruments, so the SDK aggregates them and bounds their
attribute sets as it would any (per collection under a delta reader, for the process's life
under a cumulative one). They are kept off the call's path (each SDK measurement validates,
copies and hashes its attributes): they are recorded in batches (:class:`Deferred`), before
every collection and by the call that fills a batch.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Mapping
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


_forkable: weakref.WeakSet[Deferred] = weakref.WeakSet()


_held_for_fork: list[Deferred] = []
_FORK_WAIT_S: Final = 1.0
"""The longest a fork waits for a drain (one that takes longer is not waited for)."""


def _before_fork() -> None:
    """A fork copies the locks other threads hold, with nobody left in the child to release
    them. A drain records a whole batch into the SDK, under its own lock and, record by record,
    the SDK's: a child forked meanwhile would wait for good at its first collection (or its
    shutdown). So a fork waits for a drain in progress to end (briefly: a batch takes a few
    milliseconds), and none starts until it is done."""
    for item in list(_forkable):
        if item._drain_lock.acquire(timeout=_FORK_WAIT_S):  # pyright: ignore[reportPrivateUsage]
            _held_for_fork.append(item)


def _after_fork_in_parent() -> None:
    while _held_for_fork:
        _held_for_fork.pop()._drain_lock.release()  # pyright: ignore[reportPrivateUsage]


def _after_fork_in_child() -> None:
    global _counters_lock
    _held_for_fork.clear()
    _counters_lock = threading.Lock()
    for item in list(_forkable):
        item._after_fork()  # pyright: ignore[reportPrivateUsage]


os.register_at_fork(
    before=_before_fork,
    after_in_parent=_after_fork_in_parent,
    after_in_child=_after_fork_in_child,
)


Record = Callable[[float, Dimensions, Context], None]
"""An SDK instrument's own ``record`` (a histogram) or ``add`` (a counter)."""


class Deferred:
    """Metric measurements waiting to be recorded, in batches.

    A call's measurements (the semantic-convention histograms: duration, input and output
    tokens, time to first chunk; costspan's counters: cost, token kinds, unpriced calls) go to
    real SDK instruments, with the call's attributes and context (so exemplars link to the same
    spans): the SDK aggregates them, and bounds their attribute sets, as it would any. They are
    recorded in batches rather than one by one on the caller's path: every :data:`BATCH` calls
    by the call that fills the batch, and before every collection (a reader sees every call that
    finished before it collected). Recorded in a row, the SDK's code and data stay in the CPU's
    caches, where the same records made one per call, between an HTTP client's work, run cold:
    the batch costs about half the CPU time."""

    __slots__ = ("__weakref__", "_drain_lock", "_queue")

    def __init__(self) -> None:
        self._queue: deque[tuple[Record, float, Dimensions, Context]] = deque()
        self._drain_lock = threading.Lock()
        _forkable.add(self)

    def _after_fork(self) -> None:
        # The measurements still waiting are the parent's calls: the parent records them.
        self._queue.clear()
        self._drain_lock = threading.Lock()

    def add(self, record: Record, amount: float, dims: Dimensions, ctx: Context) -> None:
        queue = self._queue
        if len(queue) >= MOST_WAITING:
            # The drain is behind (a slow or stuck SDK, a process busy forking): this one is
            # recorded now, as it would be without batches, so what waits stays bounded.
            _record(record, amount, dims, ctx)
            return
        queue.append((record, amount, dims, ctx))
        if len(queue) >= BATCH * 4:  # a plain call: three histogram records and its cost
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
                    record, amount, dims, ctx = pop()
                except IndexError:
                    return
                _record(record, amount, dims, ctx)
        finally:
            self._drain_lock.release()

    def __len__(self) -> int:
        return len(self._queue)


def _record(record: Record, amount: float, dims: Dimensions, ctx: Context) -> None:
    """One measurement into the SDK; one the SDK rejects costs only itself."""
    try:
        record(amount, dims, ctx)
    except Exception:
        _logger.exception("costspan could not record a metric")


BATCH: Final = 32
"""Calls whose measurements wait to be recorded together, while the drain keeps up."""
MOST_WAITING: Final = BATCH * 4 * 16
"""Measurements that may wait at most: past it, a call records its own at once."""


class _CostCounters:
    """The cost, token and unpriced-call counters of one meter, and the meter's deferred
    measurements (recorded before each collection)."""

    __slots__ = ("cost", "deferred", "tokens", "unpriced")

    def __init__(self, meter: Meter) -> None:
        self.cost: Counter = meter.create_counter(
            A.METRIC_COST, unit="USD", description="Cost of GenAI calls in US dollars"
        )
        self.tokens: Counter = meter.create_counter(
            A.METRIC_TOKENS,
            unit="{token}",
            description="Cached-input, cache-write and reasoning tokens of GenAI calls",
        )
        self.unpriced: Counter = meter.create_counter(
            A.METRIC_UNPRICED_CALLS,
            unit="{call}",
            description="GenAI calls whose model has no known price",
        )
        self.deferred: Deferred | None = None
        if isinstance(meter, NoOpMeter):
            return  # nothing would ever read them: recorded at once, for nothing
        self.deferred = Deferred()
        # Observes nothing: its callback is how a collection records the waiting measurements
        # first (the SDK runs every observable callback before it reads its aggregations).
        meter.create_observable_gauge(
            A.METRIC_BATCHED,
            callbacks=[self._before_collection],
            description="costspan's batched measurements, recorded as a reader collects "
            "(never has a value of its own)",
        )

    def _before_collection(self, _options: CallbackOptions) -> Iterable[Observation]:
        if self.deferred is not None:
            self.deferred.drain(wait=True)
        return ()


# One set of counters per meter: the SDK registers an instrument name once per meter and
# ignores the callbacks of a second registration, so every CostMeter of a meter shares them.
_counters_lock = threading.Lock()
_counters: weakref.WeakKeyDictionary[Meter, _CostCounters] = weakref.WeakKeyDictionary()
_counters_by_id: dict[int, tuple[Meter, _CostCounters]] = {}  # meters that take no weak reference


def _counters_of(meter: Meter) -> _CostCounters:
    with _counters_lock:
        try:
            found = _counters.get(meter)
            if found is None:
                found = _counters[meter] = _CostCounters(meter)
            return found
        except TypeError:
            kept = _counters_by_id.get(id(meter))
            if kept is None:
                kept = _counters_by_id[id(meter)] = (meter, _CostCounters(meter))
            return kept[1]


class CostMeter:
    """The cost, token and unpriced-call counters of one meter."""

    __slots__ = ("cost", "deferred", "tokens", "unpriced")

    def __init__(self, meter: Meter) -> None:
        counters = _counters_of(meter)
        self.cost = counters.cost
        self.tokens = counters.tokens
        self.unpriced = counters.unpriced
        self.deferred = counters.deferred

    def record(
        self, usage: TokenUsage, cost: Cost | None, dims: Dimensions, ctx: Context | None = None
    ) -> None:
        """Count one priced (or unpriceable) call. ``ctx``: the context whose span an exemplar
        links to (the current one by default)."""
        if ctx is None:
            ctx = get_current()
        deferred = self.deferred
        add: Callable[[Record, float, Dimensions, Context], None] = (
            _record if deferred is None else deferred.add
        )
        if cost is None:
            add(self.unpriced.add, 1, dims, ctx)
        else:
            add(self.cost.add, display(cost.total), dims, ctx)
        # Input and output totals are in gen_ai.client.token.usage; this counter breaks out the
        # subsets that histogram cannot show.
        if usage.cache_read_tokens or usage.cache_write_tokens or usage.reasoning_tokens:
            for kind, count in (
                ("cached_input", usage.cache_read_tokens),
                ("cache_write", usage.cache_write_tokens),
                ("reasoning", usage.reasoning_tokens),
            ):
                if count:
                    add(self.tokens.add, count, {**dims, A.COSTSPAN_TOKEN_TYPE: kind}, ctx)


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
        self.deferred = _counters_of(self.meter).deferred

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
            deferred.add(instrument.record, amount, dims, ctx)

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
        add(self.duration.record, duration_s, dims, ctx)
        # The conventions allow recording counted (not reported) usage when offline counting
        # is on, as it is here; the span says which it was.
        if usage is None:
            return
        if usage.input_tokens is not None:
            tokens = self.token_usage.record
            add(tokens, usage.input_tokens, {**dims, A.GEN_AI_TOKEN_TYPE: "input"}, ctx)
        if usage.output_tokens is not None:
            tokens = self.token_usage.record
            add(tokens, usage.output_tokens, {**dims, A.GEN_AI_TOKEN_TYPE: "output"}, ctx)

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
