"""``costspan demo``: a real instrumented app against the bundled local server, spans printed.

The app is ordinary openai code: a chat call, a streamed chat, a Responses call, an embeddings
call and a call the server rejects. costspan instruments it through the public ``instrument()``;
a small exporter collects the finished spans and prints them as a person would want to read them.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import TextIO

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import costspan
from costspan import _attributes as A
from costspan import _records
from costspan.testing import OpenAICompatibleServer


def run_app(base_url: str) -> None:
    """The demo's "application": plain openai code, nothing costspan-specific in it."""
    import openai
    from openai.types.chat import ChatCompletionMessageParam

    client = openai.OpenAI(base_url=base_url, api_key="demo-key", max_retries=0)
    question: list[ChatCompletionMessageParam] = [
        {"role": "user", "content": "Which city hosts the Louvre?"}
    ]
    # Who and what each call is for travels in baggage (a web framework would set it per
    # request); reports group spend by it.
    with costspan.tags({"feature": "museum-guide", "user.id": "visitor-1"}):
        client.chat.completions.create(model="gpt-4o-mini", messages=question)
        stream = client.chat.completions.create(model="o4-mini", messages=question, stream=True)
        for chunk in stream:
            _ = chunk.choices[0].delta.content  # callers that never asked for usage keep working
    with costspan.tags({"feature": "museum-guide", "user.id": "visitor-2"}):
        client.responses.create(model="gpt-5", input="Summarise the Louvre's history in a line.")
    with costspan.tags({"feature": "search", "user.id": "visitor-2"}):
        client.embeddings.create(model="text-embedding-3-small", input=["Louvre", "Orsay"])
    # o-series models reject max_tokens: the demo shows how a rejected call is recorded.
    with contextlib.suppress(openai.BadRequestError):
        client.chat.completions.create(model="o3", messages=question, max_tokens=50)


def run_budgets(base_url: str, out: TextIO) -> None:
    """The budget part of the demo: a refusal, a downgrade and a clamp, all before sending."""
    import openai
    from openai.types.chat import ChatCompletionMessageParam

    client = openai.OpenAI(base_url=base_url, api_key="demo-key", max_retries=0)
    question: list[ChatCompletionMessageParam] = [
        {"role": "user", "content": "Write a long essay on the Louvre."}
    ]
    long_answer = {"x-costspan-test-output-tokens": "2000"}  # the local server talks at length
    with costspan.tags({"feature": "essays", "user.id": "demo-user"}):
        with costspan.budget(usd="0.002", name="block $0.002"):
            try:
                client.chat.completions.create(
                    model="gpt-4o", messages=question, max_completion_tokens=1000
                )
            except costspan.BudgetExceeded as refused:
                print(f"refused: {refused}", file=out)
        with costspan.budget(
            usd="0.002", name="downgrade $0.002", on_exceed="downgrade",
            downgrade={"gpt-4o": "gpt-4o-mini"},
        ):  # fmt: skip
            client.chat.completions.create(
                model="gpt-4o", messages=question, max_completion_tokens=1000,
                extra_headers=long_answer,
            )  # fmt: skip
        with costspan.budget(usd="0.002", name="clamp $0.002", on_exceed="clamp") as clamped:
            client.chat.completions.create(
                model="gpt-4o", messages=question, extra_headers=long_answer
            )
            print(
                f"clamped budget spent ${clamped.spent_usd} of $0.002 "
                f"(${clamped.remaining_usd} left)",
                file=out,
            )


def _usd(value: object) -> str:
    return f"${value:.8f}" if isinstance(value, float) else "unpriced"


def _line(span: ReadableSpan) -> str:
    attrs = span.attributes or {}
    duration_ms = ((span.end_time or 0) - (span.start_time or 0)) / 1e6
    kind = "stream" if attrs.get(A.GEN_AI_REQUEST_STREAM) else "call"
    parts = [f"{span.name:<38}", f"{kind:<6}", f"{duration_ms:7.1f} ms"]
    if A.ERROR_TYPE not in attrs:
        parts.append(f"{_usd(attrs.get(A.GEN_AI_USAGE_COST_AMOUNT)):>10}")
    decision = attrs.get(A.COSTSPAN_BUDGET_DECISION)
    if decision is not None and decision != "allow":
        detail = {
            "downgrade": f" from {attrs.get(A.COSTSPAN_BUDGET_ORIGINAL_MODEL)}",
            "clamp": f" to {attrs.get(A.COSTSPAN_BUDGET_CLAMPED_MAX_TOKENS)} output tokens",
            "refuse": f" by {attrs.get(A.COSTSPAN_BUDGET_REFUSED_BY)!r}, nothing sent",
        }.get(str(decision), "")
        parts.append(f"[budget: {decision}{detail}]")
    if A.ERROR_TYPE in attrs:
        parts.append(f"ERROR {attrs[A.ERROR_TYPE]}")
    else:
        tokens = f"in {attrs.get(A.GEN_AI_USAGE_INPUT_TOKENS, '?')}"
        cached = attrs.get(A.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS)
        if cached:
            tokens += f" (cached {cached})"
        if A.GEN_AI_USAGE_OUTPUT_TOKENS in attrs:
            tokens += f"  out {attrs[A.GEN_AI_USAGE_OUTPUT_TOKENS]}"
            reasoning = attrs.get(A.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS)
            if reasoning:
                tokens += f" (reasoning {reasoning})"
        parts.append(tokens)
    return "  ".join(parts)


def _summary(spans: Sequence[ReadableSpan]) -> list[str]:
    by_model: dict[str, tuple[int, Decimal]] = {}
    for span in spans:
        attrs = span.attributes or {}
        if A.GEN_AI_USAGE_INPUT_TOKENS not in attrs:
            continue  # refused by the server before any work: nothing was billed
        amount = attrs.get(A.GEN_AI_USAGE_COST_AMOUNT)
        model = str(attrs.get(A.GEN_AI_REQUEST_MODEL, "?"))
        calls, total = by_model.get(model, (0, Decimal(0)))
        # Span attributes are floats; the summary adds them as decimals of their shortest repr.
        by_model[model] = (
            calls + 1,
            total + (Decimal(repr(amount)) if isinstance(amount, float) else 0),
        )
    grand = sum((total for _, total in by_model.values()), Decimal(0))
    lines = ["", "cost by model:"]
    for model, (calls, total) in sorted(by_model.items(), key=lambda kv: -kv[1][1]):
        lines.append(f"  {model:<28}{calls:>3} call(s)  ${total:.8f}")
    count = sum(calls for calls, _ in by_model.values())
    lines.append(f"  {'total':<28}{count:>3} call(s)  ${grand:.8f}")
    return lines


def format_spans(spans: Sequence[ReadableSpan]) -> str:
    lines = [_line(span) for span in spans]
    lines.extend(_summary(spans))
    if spans:
        lines.append("")
        lines.append(f"attributes of the first span ({spans[0].name}):")
        width = max(len(k) for k in spans[0].attributes or {"": 0})
        for key, value in sorted((spans[0].attributes or {}).items()):
            lines.append(f"  {key:<{width}}  {value}")
    return "\n".join(lines)


def run(out: TextIO, records: Path | None = None) -> int:
    """Run the demo, printing to ``out``; returns the process exit code. ``records``: a SQLite
    file that keeps the demo's spend records (for ``costspan report``)."""
    os.environ.setdefault("OTEL_SERVICE_NAME", "costspan-demo")
    with OpenAICompatibleServer() as server:
        exporter = InMemorySpanExporter()
        tracer_provider = TracerProvider(resource=Resource.create({}))
        tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
        meter_provider = MeterProvider()
        settings = {} if records is None else {"records": str(records)}
        costspan.instrument(
            tracer_provider=tracer_provider, meter_provider=meter_provider, **settings
        )
        try:
            print(f"costspan demo: local OpenAI-compatible server at {server.base_url}", file=out)
            print(
                "running an instrumented app (chat, stream, Responses, embeddings, an error),\n"
                "then three calls under $0.002 budgets (block, downgrade, clamp)\n",
                file=out,
            )
            run_app(server.base_url)
            run_budgets(server.base_url, out)
            print(file=out)
        finally:
            costspan.uninstrument()
            _records.flush_all()
            tracer_provider.shutdown()
            meter_provider.shutdown()
    spans = exporter.get_finished_spans()
    print(format_spans(spans), file=out)
    return 0 if spans else 1
