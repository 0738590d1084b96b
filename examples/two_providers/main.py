"""One budget, two providers, one trace: an OpenAI call traced by costspan's own instrumentor and
Anthropic calls traced by the official OpenTelemetry Anthropic instrumentation, all charged to the
same ``costspan.budget``; the Anthropic call that no longer fits is refused by
``CostSpanProcessor`` when its span starts, before the request is sent.

Runs against costspan's local OpenAI- and Anthropic-compatible server. Spans are printed at the
end, and exported over OTLP too when OTEL_EXPORTER_OTLP_ENDPOINT is set.
"""

from __future__ import annotations

import os

import anthropic
import openai
from opentelemetry import trace
from opentelemetry.instrumentation.genai.anthropic import AnthropicInstrumentor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import costspan
from costspan.testing import OpenAICompatibleServer

# The local server answers each call with about this many tokens (up to the call's max_tokens).
LONG_ANSWERS = {"x-costspan-test-output-tokens": "5000"}


def main() -> None:
    shown = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "support-bot"}))
    # CostSpanProcessor in front of the exporters: it prices, charges and gates the spans of
    # every GenAI instrumentation on this provider, and counts each provider call once.
    provider.add_span_processor(costspan.CostSpanProcessor(SimpleSpanProcessor(shown)))
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(
            costspan.CostSpanProcessor(BatchSpanProcessor(OTLPSpanExporter()))
        )
    trace.set_tracer_provider(provider)

    # The other instrumentation's spans say no max_tokens when they start: costspan holds this
    # many output tokens for them until the anthropic SDK's own span says the real cap.
    costspan.configure(default_max_output_tokens=1024)
    costspan.instrument(tracer_provider=provider)  # openai: costspan's own spans
    AnthropicInstrumentor().instrument(tracer_provider=provider)  # anthropic: the official ones

    with OpenAICompatibleServer() as server:
        gpt = openai.OpenAI(base_url=server.base_url, api_key="local", max_retries=0)
        claude = anthropic.Anthropic(
            base_url=server.anthropic_base_url, api_key="local", max_retries=0
        )
        tracer = trace.get_tracer("support-bot")
        with (
            tracer.start_as_current_span("answer ticket 4711") as root,
            costspan.tags({"feature": "support", "user.id": "u-42"}),
            costspan.budget(usd="0.01", name="ticket") as budget,
        ):
            gpt.chat.completions.create(
                model="gpt-4o-mini",
                messages=[{"role": "user", "content": "Classify: my invoice is wrong."}],
                max_completion_tokens=20,
            )
            print(f"openai    gpt-4o-mini        spent so far ${budget.spent_usd}")
            for step in range(1, 20):
                try:
                    claude.messages.create(
                        model="claude-haiku-4-5",
                        max_tokens=300,
                        messages=[{"role": "user", "content": f"Draft reply {step}."}],
                        extra_headers=LONG_ANSWERS,
                    )
                except costspan.BudgetExceeded as refused:
                    left = refused.remaining_usd
                    print(f"anthropic draft {step:2d}: refused before sending, ${left} left")
                    break
                spent = budget.spent_usd
                print(f"anthropic draft {step:2d}: claude-haiku-4-5   spent so far ${spent}")
        trace_id = root.get_span_context().trace_id
    provider.force_flush()
    print()
    print(f"trace {trace_id:032x}:")
    for span in shown.get_finished_spans():
        a = span.attributes or {}
        assert span.context is not None
        assert span.context.trace_id == trace_id  # one trace: every call of the ticket
        if "gen_ai.usage.cost.amount" in a:
            what = f"${a['gen_ai.usage.cost.amount']:.6f}"
        elif "costspan.cost.counted_on" in a:
            what = f"counted on {a['costspan.cost.counted_on']}"
        elif a.get("costspan.budget.decision") == "refuse":
            what = "refused, not sent"
        else:
            what = ""
        scope = span.instrumentation_scope.name if span.instrumentation_scope else ""
        print(f"  {span.context.span_id:016x} {span.name:28} {scope:45} {what}")
    calls = len(server.requests)
    print(f"budget {budget.label}: spent ${budget.spent_usd} of $0.01 in {calls} calls sent")
    provider.shutdown()


if __name__ == "__main__":
    main()
