"""A reservation is a bound: no request shape spends past a budget's cap.

Every shape the bound issue found breaking the cap, against the bundled server, which bills the
way providers do (tool definitions rendered into a hidden prompt, schemas, images by OpenAI's
formulas, history, ``n``; other providers' tokenizers and gateways count differently): 20 threads
and 200 asyncio tasks under one cap, on the memory, SQLite and Redis ledgers. The sum of the
spans' costs (what the provider billed) stays at or under the cap; where the request can be
bounded, at least half the cap is spent (a bound that refuses everything is no bound); nothing
but ``BudgetExceeded`` reaches the caller.
"""

from __future__ import annotations

import asyncio
import base64
import contextvars
import io
import json
import os
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import openai
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from PIL import Image

import costspan
from costspan import BudgetExceeded
from costspan._baggage import Action
from costspan.testing import OpenAICompatibleServer
from tests.conftest import attrs

ENGINES = ("memory", "sqlite", "redis")
pytestmark = pytest.mark.usefixtures("instrumented")


def _png(width: int, height: int) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 40, 40)).save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


_WORDS = [
    "budget",
    "ledger",
    "span",
    "token",
    "baggage",
    "reservation",
    "provider",
    "tenant",
    "window",
    "cap",
]


def _text(words: int, seed: int = 0) -> str:
    return " ".join(_WORDS[(i * 7 + seed) % len(_WORDS)] for i in range(words))


def _tools(count: int) -> list[dict[str, Any]]:
    return [
        {
            "type": "function",
            "function": {
                "name": f"lookup_{i}",
                "description": _text(120, i),
                "parameters": {
                    "type": "object",
                    "properties": {
                        f"field_{j}": {"type": "string", "description": _text(25, i + j)}
                        for j in range(8)
                    },
                    "required": ["field_0"],
                },
            },
        }
        for i in range(count)
    ]


@dataclass(frozen=True)
class Shape:
    """One request shape under one budget."""

    name: str
    cap: str
    kwargs: Callable[[], dict[str, Any]]
    api: str = "chat"
    headers: dict[str, str] = field(default_factory=dict[str, str])
    action: Action = "block"
    warm: int = 0
    """Calls made one by one before the fan-out (the calibration learns from them)."""
    settings: dict[str, Any] = field(default_factory=dict[str, Any])


def _user(text: str) -> Any:
    return [{"role": "user", "content": text}]


def _fresh(words: int) -> Any:
    """A long prompt that starts differently every time (no prompt-cache hits: a burst of
    distinct requests, billed at the full input rate)."""
    return _user(f"{uuid.uuid4()} {_text(words)}")


SHAPES = [
    Shape(
        "uncapped output, block",
        "0.05",
        lambda: {"model": "gpt-4o", "messages": _user("Write at length.")},
        headers={"x-costspan-test-output-tokens": "3000"},
    ),
    Shape(
        "uncapped output, clamp",
        "0.05",
        lambda: {"model": "gpt-4o", "messages": _user("Write at length.")},
        headers={"x-costspan-test-output-tokens": "3000"},
        action="clamp",
    ),
    Shape(
        "ten tool definitions",
        "0.15",
        lambda: {
            "model": "gpt-4o",
            "messages": _user("Which tool?"),
            "tools": _tools(10),
            "max_completion_tokens": 300,
        },
        headers={"x-costspan-test-output-tokens": "300"},
    ),
    Shape(
        "two images per message",
        "0.08",
        lambda: {
            "model": "gpt-4o",
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "Compare these."},
                        {"type": "image_url", "image_url": {"url": _png(2048, 4096)}},
                        {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": _png(900, 600)}},
                        {
                            "type": "image_url",
                            "image_url": {"url": _png(300, 300), "detail": "low"},
                        },
                    ],
                },
            ],
            "max_completion_tokens": 200,
        },
        headers={"x-costspan-test-output-tokens": "200"},
    ),
    Shape(
        "structured-output schema",
        "0.05",
        lambda: {
            "model": "gpt-4o",
            "messages": _user("Fill the form."),
            "response_format": {
                "type": "json_schema",
                "json_schema": {
                    "name": "form",
                    "schema": {
                        "type": "object",
                        "properties": {
                            f"f{j}": {"type": "string", "description": _text(60, j)}
                            for j in range(20)
                        },
                    },
                },
            },
            "max_completion_tokens": 200,
        },
        headers={"x-costspan-test-output-tokens": "200"},
    ),
    Shape(
        "n=3",
        "0.05",
        lambda: {
            "model": "gpt-4o",
            "messages": _user("Three takes."),
            "n": 3,
            "max_completion_tokens": 300,
        },
        headers={"x-costspan-test-output-tokens": "300"},
    ),
    Shape(
        "tool-call history",
        "0.05",
        lambda: {
            "model": "gpt-4o",
            "messages": [
                *_user("Look it up."),
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": f"call_{i}",
                            "type": "function",
                            "function": {
                                "name": "lookup",
                                "arguments": json.dumps({"query": _text(150, i)}),
                            },
                        }
                        for i in range(3)
                    ],
                },
                *[
                    {"role": "tool", "tool_call_id": f"call_{i}", "content": _text(300, i)}
                    for i in range(3)
                ],
            ],
            "max_completion_tokens": 200,
        },
        headers={"x-costspan-test-output-tokens": "200"},
    ),
    Shape(
        "Responses input items",
        "0.05",
        lambda: {
            "model": "gpt-4o",
            "input": [
                {
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": _text(200)},
                        {"type": "input_image", "image_url": _png(1024, 1024), "detail": "high"},
                    ],
                },
                {
                    "type": "function_call",
                    "call_id": "c1",
                    "name": "lookup",
                    "arguments": json.dumps({"q": _text(100)}),
                },
                {"type": "function_call_output", "call_id": "c1", "output": _text(400, 3)},
            ],
            "max_output_tokens": 200,
        },
        api="responses",
        headers={"x-costspan-test-output-tokens": "200"},
    ),
    Shape(
        "an output cap overridden by extra_body",
        "0.05",
        lambda: {
            "model": "gpt-4o",
            "messages": _user("Write at length."),
            "max_completion_tokens": 10,
            "extra_body": {"max_completion_tokens": 3000},
        },
        headers={"x-costspan-test-output-tokens": "3000"},
    ),
    Shape(
        "only another API's cap name (max_output_tokens on chat)",
        "0.05",
        lambda: {
            "model": "gpt-4o",
            "messages": _user("Write at length."),
            "extra_body": {"max_output_tokens": 16},
        },
        headers={"x-costspan-test-output-tokens": "3000"},
    ),
    Shape(
        "messages replaced by extra_body",
        "0.01",
        lambda: {
            "model": "gpt-4o",
            "messages": _user("hi"),
            "max_completion_tokens": 100,
            "extra_body": {"messages": _fresh(1500)},
        },
        headers={"x-costspan-test-output-tokens": "100"},
    ),
    Shape(
        "a tokenizer counting 36% more, after warm-up",
        "0.05",
        lambda: {"model": "gpt-4o", "messages": _fresh(1500), "max_completion_tokens": 100},
        headers={"x-costspan-test-input-scale": "1.36", "x-costspan-test-output-tokens": "100"},
        warm=5,
    ),
    Shape(
        "another provider's tokenizer, cold",
        "0.01",
        lambda: {
            "model": "deepseek-chat",
            "messages": _fresh(1500),
            "max_completion_tokens": 100,
        },
        headers={"x-costspan-test-output-tokens": "100"},
        settings={"provider_hosts": {"127.0.0.1": "deepseek"}},
    ),
    Shape(
        "another provider's model on an unknown host, cold",
        "0.01",
        lambda: {
            "model": "deepseek-chat",
            "messages": _fresh(1500),
            "max_completion_tokens": 100,
        },
        headers={"x-costspan-test-output-tokens": "100"},
    ),
]


@dataclass
class Outcome:
    spent: Decimal = Decimal(0)
    sent: int = 0
    refused: int = 0
    errors: list[BaseException] = field(default_factory=list[BaseException])


def _billed(exporter: InMemorySpanExporter) -> Decimal:
    """What the provider billed: the sum of the spans' costs (each priced from its usage)."""
    return sum(
        (
            Decimal(repr(attrs(s)["gen_ai.usage.cost.amount"]))
            for s in exporter.get_finished_spans()
            if "gen_ai.usage.cost.amount" in attrs(s)
        ),
        Decimal(0),
    )


def _call(client: openai.OpenAI, shape: Shape) -> None:
    if shape.api == "responses":
        client.responses.create(**shape.kwargs(), extra_headers=shape.headers)
    else:
        client.chat.completions.create(**shape.kwargs(), extra_headers=shape.headers)


async def _acall(client: openai.AsyncOpenAI, shape: Shape) -> None:
    if shape.api == "responses":
        await client.responses.create(**shape.kwargs(), extra_headers=shape.headers)
    else:
        await client.chat.completions.create(**shape.kwargs(), extra_headers=shape.headers)


def _check(shape: Shape, outcome: Outcome, exporter: InMemorySpanExporter, how: str) -> None:
    cap = Decimal(shape.cap)
    billed = _billed(exporter)
    figures = os.environ.get("COSTSPAN_BOUND_FIGURES")
    if figures:  # the table of the closing note: cap, spend and refusals per shape
        with open(figures, "a") as out:
            row = {"shape": shape.name, "how": how, "cap": shape.cap, "billed": str(billed)}
            out.write(json.dumps({**row, "sent": outcome.sent, "refused": outcome.refused}) + "\n")
    assert outcome.errors == []  # nothing but BudgetExceeded reached a caller
    assert billed <= cap, f"{shape.name}: billed {billed} over the cap {cap}"
    assert outcome.spent <= cap
    assert outcome.refused > 0, f"{shape.name}: the cap never bound: the test proves nothing"
    assert billed >= cap / 2, f"{shape.name}: only {billed} of {cap} spent: a bound too loose"


def _engine(ledger: object) -> str:
    return type(getattr(ledger, "engine", ledger)).__name__


def _prepare(shape: Shape, server: OpenAICompatibleServer) -> None:
    if shape.settings:
        costspan.configure(**shape.settings)
    if shape.warm:
        client = openai.OpenAI(base_url=server.base_url, api_key="k", max_retries=0)
        for _ in range(shape.warm):
            _call(client, shape)  # outside any budget: only teaches the calibration
        client.close()


@pytest.mark.parametrize("fresh_ledger", ENGINES, indirect=True)
@pytest.mark.parametrize("shape", SHAPES, ids=[s.name for s in SHAPES])
def test_twenty_threads_hold_the_cap(
    shape: Shape,
    fresh_ledger: object,
    server: OpenAICompatibleServer,
    span_exporter: InMemorySpanExporter,
) -> None:
    """20 threads x 3 calls of one shape under one budget: billed <= cap, >= half of it."""
    _prepare(shape, server)
    span_exporter.clear()
    client = openai.OpenAI(base_url=server.base_url, api_key="k", max_retries=0)
    outcome = Outcome()

    def worker() -> None:
        for _ in range(3):
            try:
                _call(client, shape)
                outcome.sent += 1
            except BudgetExceeded:
                outcome.refused += 1
            except BaseException as exc:
                outcome.errors.append(exc)

    with (
        costspan.budget(usd=shape.cap, on_exceed=shape.action) as b,
        ThreadPoolExecutor(20) as pool,
    ):
        for future in [pool.submit(contextvars.copy_context().run, worker) for _ in range(20)]:
            future.result()
    client.close()
    outcome.spent = b.spent_usd
    _check(shape, outcome, span_exporter, f"20 threads, {_engine(fresh_ledger)}")


@pytest.mark.parametrize("fresh_ledger", ENGINES, indirect=True)
@pytest.mark.parametrize("shape", SHAPES, ids=[s.name for s in SHAPES])
async def test_two_hundred_tasks_hold_the_cap(
    shape: Shape,
    fresh_ledger: object,
    server: OpenAICompatibleServer,
    span_exporter: InMemorySpanExporter,
) -> None:
    """200 asyncio tasks, one call each, under one budget: billed <= cap, >= half of it."""
    _prepare(shape, server)
    span_exporter.clear()
    client = openai.AsyncOpenAI(base_url=server.base_url, api_key="k", max_retries=0)
    outcome = Outcome()

    async def one() -> None:
        try:
            await _acall(client, shape)
            outcome.sent += 1
        except BudgetExceeded:
            outcome.refused += 1
        except BaseException as exc:
            outcome.errors.append(exc)

    async with costspan.budget(usd=shape.cap, on_exceed=shape.action) as b:
        await asyncio.gather(*(one() for _ in range(200)))
    await client.close()
    outcome.spent = b.spent_usd
    _check(shape, outcome, span_exporter, f"200 tasks, {_engine(fresh_ledger)}")


@pytest.mark.parametrize("fresh_ledger", ENGINES, indirect=True)
def test_a_stream_read_past_its_lease_keeps_its_hold(
    fresh_ledger: object, server: OpenAICompatibleServer, span_exporter: InMemorySpanExporter
) -> None:
    """With COSTSPAN_LEASE_SECONDS=1, streams read for about 3 s each: their holds are renewed,
    so no call is admitted into room a running stream still holds (it used to expire)."""
    costspan.configure(lease_seconds=1)
    client = openai.OpenAI(base_url=server.base_url, api_key="k", max_retries=0)
    outcome = Outcome()

    def worker() -> None:
        try:
            stream = client.chat.completions.create(
                model="gpt-4o",
                messages=_user("Stream slowly."),
                stream=True,
                max_completion_tokens=1500,
                extra_headers={"x-costspan-test-output-tokens": "1500"},
            )
            for i, _chunk in enumerate(stream):
                if i % 20 == 0:
                    time.sleep(0.1)  # a slow reader: the whole stream takes about 3 s
            outcome.sent += 1
        except BudgetExceeded:
            outcome.refused += 1
        except BaseException as exc:
            outcome.errors.append(exc)

    cap = Decimal("0.05")  # room for three such streams at once
    with costspan.budget(usd=cap) as b, ThreadPoolExecutor(20) as pool:
        futures = []
        for _ in range(20):
            futures.append(pool.submit(contextvars.copy_context().run, worker))
            time.sleep(0.1)  # arrivals spread over the streams' lifetime, past several leases
        for future in futures:
            future.result()
    client.close()
    outcome.spent = b.spent_usd
    assert outcome.errors == []
    assert _billed(span_exporter) <= cap
    assert outcome.spent <= cap
    assert outcome.refused > 0
    assert outcome.sent >= 3
