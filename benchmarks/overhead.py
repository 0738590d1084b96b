"""What instrumentation adds per ``chat.completions.create`` call, plain and streaming.

Seven variants run interleaved in one process, on the same in-process HTTP transport (an
``httpx2.MockTransport`` answering with the local server's real response bodies), each with SDK
tracer and meter providers set up alike (the same exporter and reader):

- ``bare``: the openai client, uninstrumented (the baseline every overhead is measured from);
- ``sdk span``: a minimal hand-written wrapper that opens one SDK span per call;
- ``sdk span + costspan's attrs``: the same span with every attribute costspan writes on a
  budgeted call (taken from a real one): the floor under costspan's own work;
- ``official``: ``opentelemetry-instrumentation-genai-openai``;
- ``official, no chunk metric``: the same without its per-chunk histogram, which costspan does
  not record (one SDK measurement per chunk of a stream): the like-for-like stream baseline;
- ``costspan``: this project, alone and with every call under an active in-memory budget.

Every variant runs with its default settings: the environment variables that would change what
one does (content capture, events, costspan's settings) are unset while the benchmark runs.

costspan's variants get providers of their own: ``instrument()`` puts a
:class:`~costspan.CostSpanProcessor` on its tracer provider, and that processor stays there after
``uninstrument()``. On a provider shared with the others it would price and track the official
instrumentation's spans too, and count costspan's own work in the baseline it is compared with.

Each round instruments one variant, times N calls one by one, and uninstruments it; the order of
variants is shuffled every round so drift on a shared machine spreads evenly. The table reports
median microseconds per call and each variant's overhead over ``bare``; the ratios are printed
from medians and from means (costspan records its histograms in batches, so a median leaves out
the calls that record a batch, and the mean does not).
"""

from __future__ import annotations

import json
import os
import random
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, cast

import httpx2
import openai
from openai.resources.chat.completions.completions import Completions
from openai.types.chat import ChatCompletionMessageParam
from opentelemetry.context import Context
from opentelemetry.instrumentation.genai.openai import (
    OpenAIInstrumentor as OfficialInstrumentor,
)
from opentelemetry.instrumentation.utils import unwrap
from opentelemetry.metrics import Histogram, Meter, MeterProvider, NoOpHistogram
from opentelemetry.sdk.metrics import MeterProvider as SdkMeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind
from wrapt import wrap_function_wrapper

import costspan
from costspan.testing import _replies as R

MESSAGES: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "What is the capital of France?"}
]


class DropExporter(SpanExporter):
    """Finishes the export pipeline without keeping spans (memory stays flat over long runs)."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def _handler(request: httpx2.Request) -> httpx2.Response:
    body = json.loads(request.content)
    model = body["model"]
    reply = R.make_reply(
        model,
        prompt_text="What is the capital of France?",
        prompt_tokens=R.chat_prompt_tokens(body["messages"], model),
        cached_tokens=0,
        cap=None,
    )
    if not body.get("stream"):
        return httpx2.Response(200, json=R.chat_completion(model, reply, "default"))
    include = bool((body.get("stream_options") or {}).get("include_usage"))
    events = R.chat_chunks(model, reply, "default", include)
    sse = b"".join(f"data: {json.dumps(e)}\n\n".encode() for e in events) + b"data: [DONE]\n\n"
    return httpx2.Response(200, content=sse, headers={"content-type": "text/event-stream"})


def make_client() -> openai.OpenAI:
    http = openai.DefaultHttpxClient(transport=httpx2.MockTransport(_handler))
    return openai.OpenAI(
        base_url="https://api.openai.com/v1", api_key="bench", http_client=http, max_retries=0
    )


@dataclass
class Providers:
    tracer: TracerProvider = field(default_factory=TracerProvider)
    meter: SdkMeterProvider = field(
        default_factory=lambda: SdkMeterProvider(metric_readers=[InMemoryMetricReader()])
    )

    def __post_init__(self) -> None:
        self.tracer.add_span_processor(SimpleSpanProcessor(DropExporter()))


Variant = Callable[[Providers], Any]


@contextmanager
def bare(_: Providers) -> Iterator[None]:
    yield


@contextmanager
def wrapping_create(wrapper: Callable[..., Any]) -> Iterator[None]:
    """``Completions.create`` wrapped by a hand-written ``wrapper`` while the block runs."""
    wrap_function_wrapper(
        "openai.resources.chat.completions.completions", "Completions.create", wrapper
    )
    try:
        yield
    finally:
        unwrap(Completions, "create")


@contextmanager
def sdk_span(providers: Providers) -> Iterator[None]:
    tracer = providers.tracer.get_tracer("bench")

    def one_span(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        with tracer.start_as_current_span(f"chat {kwargs.get('model')}", kind=SpanKind.CLIENT):
            return wrapped(*args, **kwargs)

    with wrapping_create(one_span):
        yield


class _Snapshots(SpanProcessor):
    """Keeps the attributes of the last span at its start and at its end."""

    def __init__(self) -> None:
        self.start: dict[str, Any] = {}
        self.end: dict[str, Any] = {}

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        self.start = dict(span.attributes or {})

    def on_end(self, span: ReadableSpan) -> None:
        self.end = dict(span.attributes or {})


_attributes: tuple[dict[str, Any], dict[str, Any]] | None = None


def costspan_attributes() -> tuple[dict[str, Any], dict[str, Any]]:
    """The attributes costspan writes on a budgeted call's span: those it starts the span with,
    and those it adds at the end (taken once from a real call, on providers of their own)."""
    global _attributes
    if _attributes is None:
        snapshots = _Snapshots()
        providers = Providers()
        providers.tracer.add_span_processor(snapshots)
        with costspan_budget_variant(providers):
            plain(make_client())
        added = {k: v for k, v in snapshots.end.items() if k not in snapshots.start}
        _attributes = snapshots.start, added
    return _attributes


@contextmanager
def sdk_span_with_attributes(providers: Providers) -> Iterator[None]:
    """The hand-written span with every attribute costspan writes on a budgeted call: what the
    span alone costs costspan, the floor under anything it computes."""
    tracer = providers.tracer.get_tracer("bench")
    start, added = costspan_attributes()

    def one_span(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        with tracer.start_as_current_span(
            f"chat {kwargs.get('model')}", kind=SpanKind.CLIENT, attributes=start
        ) as span:
            result = wrapped(*args, **kwargs)
            span.set_attributes(added)
            return result

    with wrapping_create(one_span):
        yield


@contextmanager
def _official(tracer_provider: TracerProvider, meter_provider: MeterProvider) -> Iterator[None]:
    instrumentor = OfficialInstrumentor()
    instrumentor.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)
    try:
        yield
    finally:
        instrumentor.uninstrument()


@contextmanager
def official(providers: Providers) -> Iterator[None]:
    with _official(providers.tracer, providers.meter):
        yield


TIME_PER_OUTPUT_CHUNK = "gen_ai.client.operation.time_per_output_chunk"


class _MeterWithoutChunkMetric:
    """A meter that hands out a no-op instrument for the per-chunk histogram, and the real
    meter's instruments for everything else."""

    def __init__(self, meter: Meter) -> None:
        self._meter = meter

    def create_histogram(self, name: str, *args: Any, **kwargs: Any) -> Histogram:
        if name == TIME_PER_OUTPUT_CHUNK:
            return NoOpHistogram(name)
        return self._meter.create_histogram(name, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._meter, name)


class _WithoutChunkMetric(MeterProvider):
    """The providers' meter provider, less ``gen_ai.client.operation.time_per_output_chunk``."""

    def __init__(self, inner: MeterProvider) -> None:
        self._inner = inner

    def get_meter(
        self,
        name: str,
        version: str | None = None,
        schema_url: str | None = None,
        attributes: Any = None,
    ) -> Meter:
        meter = self._inner.get_meter(name, version, schema_url, attributes)
        return cast("Meter", _MeterWithoutChunkMetric(meter))


@contextmanager
def official_like_for_like(providers: Providers) -> Iterator[None]:
    """The official instrumentation without the one metric costspan does not record: the
    per-chunk histogram (``gen_ai.client.operation.time_per_output_chunk``), one SDK measurement
    for every chunk of a stream after the first. The same work costspan does, on streams."""
    with _official(providers.tracer, _WithoutChunkMetric(providers.meter)):
        yield


@contextmanager
def costspan_variant(providers: Providers) -> Iterator[None]:
    costspan.instrument(tracer_provider=providers.tracer, meter_provider=providers.meter)
    try:
        yield
    finally:
        costspan.uninstrument()


@contextmanager
def costspan_budget_variant(providers: Providers) -> Iterator[None]:
    """costspan with every call under an active budget (reserve + commit per call)."""
    costspan.instrument(tracer_provider=providers.tracer, meter_provider=providers.meter)
    try:
        with costspan.budget(usd=1_000_000):
            yield
    finally:
        costspan.uninstrument()


VARIANTS: dict[str, Variant] = {
    "bare client": bare,
    "sdk span (hand-written)": sdk_span,
    "sdk span + costspan's attrs": sdk_span_with_attributes,
    "official genai-openai": official,
    "official, no chunk metric": official_like_for_like,
    "costspan": costspan_variant,
    "costspan + budget": costspan_budget_variant,
}


def providers_by_variant(variants: Sequence[str] = tuple(VARIANTS)) -> dict[str, Providers]:
    """Providers for each variant: costspan's share one set, the others another (see the
    module docstring)."""
    ours, theirs = Providers(), Providers()
    return {name: ours if name.startswith("costspan") else theirs for name in variants}


def plain(client: openai.OpenAI) -> None:
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)


def _stream(client: openai.OpenAI) -> None:
    for chunk in client.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True
    ):
        _ = chunk.choices[0].delta.content


MODES: dict[str, Callable[[openai.OpenAI], None]] = {"plain": plain, "stream": _stream}


_SETTINGS_PREFIXES = ("OTEL_INSTRUMENTATION_GENAI_", "OTEL_SEMCONV_", "COSTSPAN_")
"""Environment variables that change what a variant does (content capture, events, completion
hooks, costspan's settings): every variant runs with its defaults."""


@contextmanager
def default_settings() -> Iterator[None]:
    """The variants' settings at their defaults while the block runs, whatever the environment
    of the machine says."""
    saved = {k: v for k, v in os.environ.items() if k.startswith(_SETTINGS_PREFIXES)}
    for key in saved:
        del os.environ[key]
    try:
        yield
    finally:
        os.environ.update(saved)


def measure(
    rounds: int,
    calls: int,
    seed: int = 1,
    variants: dict[str, Variant] = VARIANTS,
    modes: dict[str, Callable[[openai.OpenAI], None]] = MODES,
) -> dict[str, dict[str, float]]:
    """Median µs per call for every (variant, mode), all measured interleaved; and the mean, as
    ``"<mode> mean"`` (work done in batches, every few calls, shows in the mean only)."""
    with default_settings():
        return _measure(rounds, calls, seed, variants, modes)


def _measure(
    rounds: int,
    calls: int,
    seed: int,
    variants: dict[str, Variant],
    modes: dict[str, Callable[[openai.OpenAI], None]],
) -> dict[str, dict[str, float]]:
    client = make_client()
    providers = providers_by_variant(tuple(variants))
    samples: dict[tuple[str, str], list[float]] = {(v, m): [] for v in variants for m in modes}
    rng = random.Random(seed)
    for mode, call in modes.items():  # warm up the client, pydantic models and every variant
        for name, variant in variants.items():
            with variant(providers[name]):
                for _ in range(20):
                    call(client)
            del name
        del mode
    for _ in range(rounds):
        order = list(variants)
        rng.shuffle(order)
        for name in order:
            with variants[name](providers[name]):
                for mode, call in modes.items():
                    bucket = samples[(name, mode)]
                    for _ in range(calls):
                        start = time.perf_counter_ns()
                        call(client)
                        bucket.append((time.perf_counter_ns() - start) / 1000)
    return {
        name: {
            **{mode: statistics.median(samples[(name, mode)]) for mode in modes},
            **{f"{mode} mean": statistics.fmean(samples[(name, mode)]) for mode in modes},
        }
        for name in variants
    }


TARGET = 0.6
"""What costspan with an active budget may add, as a share of what the official
instrumentation adds (issue 16)."""


def _ratio(times: dict[str, dict[str, float]], ours: str, theirs: str, key: str) -> float:
    """What ``ours`` adds over the bare client as a share of what ``theirs`` adds."""
    base = times["bare client"][key]
    added = times[theirs][key] - base
    return (times[ours][key] - base) / added if added > 0 else float("nan")


def table(medians: dict[str, dict[str, float]]) -> str:
    base = medians["bare client"]
    span = medians["sdk span (hand-written)"]
    lines = [
        f"{'variant':<29}{'plain µs':>10}{'added':>9}{'x span':>8}"
        f"{'stream µs':>12}{'added':>9}{'x span':>8}",
    ]
    for name, m in medians.items():
        row = f"{name:<29}"
        for mode in MODES:
            added = m[mode] - base[mode]
            span_added = span[mode] - base[mode]
            ratio = f"{added / span_added:.2f}" if span_added > 0 and name != "bare client" else "-"
            pad = 12 if mode == "stream" else 10
            row += f"{m[mode]:>{pad}.1f}{added:>+9.1f}{ratio:>8}"
        lines.append(row)
    off = medians["official genai-openai"]
    lines.append("")
    lines.append(
        "ratios to what the official instrumentation adds, from median times, then from mean "
        "times (a mean includes the calls that record costspan's batched histograms):"
    )
    for variant in ("costspan", "costspan + budget"):
        target = TARGET if variant == "costspan + budget" else 1.0
        for mode in MODES:
            ours, theirs = medians[variant][mode] - base[mode], off[mode] - base[mode]
            ratio = _ratio(medians, variant, "official genai-openai", mode)
            mean = _ratio(medians, variant, "official genai-openai", f"{mode} mean")
            verdict = "meets" if ratio <= target else "MISSES"
            lines.append(
                f"{mode}: {variant} adds {ours:.1f} µs, the official instrumentation "
                f"{theirs:.1f} µs (ratio {ratio:.2f}; means {mean:.2f}): {verdict} the "
                f"{target:g}x target"
            )
    like = medians["official, no chunk metric"]["stream"] - base["stream"]
    lines.append(
        f"stream, like for like: the official instrumentation without its per-chunk metric "
        f"(one histogram record per chunk; costspan records none) adds {like:.1f} µs; against it"
    )
    for variant in ("costspan", "costspan + budget"):
        ratio = _ratio(medians, variant, "official, no chunk metric", "stream")
        mean = _ratio(medians, variant, "official, no chunk metric", "stream mean")
        lines.append(f"  {variant}: ratio {ratio:.2f}; means {mean:.2f}")
    floor = medians["sdk span + costspan's attrs"]["plain"] - base["plain"]
    theirs = off["plain"] - base["plain"]
    if theirs > 0:
        lines.append(
            f"plain: the span with costspan's attributes alone adds {floor:.1f} µs "
            f"(ratio {floor / theirs:.2f}): the budgeted call's own work has "
            f"{TARGET * theirs - floor:.1f} µs under the {TARGET:g}x target"
        )
    return "\n".join(lines)
