"""What a budget costs a call as the conversation it resends grows (an agent loop).

An agent resends its whole history with every call. A budget reserves every input token of it,
so it must count them; costspan memoises token counts per text, so only what is new is
tokenized. Each call here sends a history of N tokens (the same message objects every call, as
an agent's list holds them) plus one new user message; the same instrumented call is made with
and without an active in-memory budget, interleaved, and the table reports the difference of the
medians: the budget's cost per call. A second row per size rebuilds the history's strings for
every call (as an application that reloads it from a store would): equal text in new objects
costs a hash and a comparison per message, still no tokenizer pass.

What is timed is costspan's part of the call: ``Completions.create`` is replaced, for the
benchmark only, by a function that returns a prepared response at once. The openai client's own
work on a long history (validating and serializing it: tens of milliseconds at 200k tokens) is
the same with and without a budget, and its noise would hide a difference of a millisecond; the
table shows it once, for scale, measured through the real client and an in-process transport.
"""

from __future__ import annotations

import json
import random
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx2
import openai
from openai.resources.chat.completions.completions import Completions
from openai.types.chat import ChatCompletion, ChatCompletionMessageParam
from overhead import Providers

import costspan
from costspan._tokens import count_text
from costspan.testing import _replies as R

MODEL = "gpt-4o-mini"
SIZES = (500, 50_000, 200_000)
"""History sizes, in tokens (o200k_base)."""
_WORDS = " ".join(
    (
        "the budget agent tool call result plan step error retry model token cost user reply",
        "function search query answer context window cache input output price record span trace",
        "service request limit ledger commit reserve hold settle stream chunk usage report metric",
        "Paris France capital river museum 2024 3.14 {json} [list] <tag> naïve café 東京 데이터",
    )
).split()


def _text(rng: random.Random, tokens: int) -> str:
    words: list[str] = []
    while len(words) < tokens * 3 // 4:  # about 1.3 tokens per word in this vocabulary
        words.append(rng.choice(_WORDS))
    return " ".join(words)


def history(tokens: int, seed: int = 11) -> list[ChatCompletionMessageParam]:
    """A conversation of about ``tokens`` tokens: a system prompt, then user and assistant
    turns of about 500 tokens (tool results and long answers make up agents' histories)."""
    rng = random.Random(seed)
    system = _text(rng, min(tokens, 300))
    messages: list[ChatCompletionMessageParam] = [{"role": "system", "content": system}]
    total = count_text(system, MODEL)
    turn = 0
    while total < tokens - 50:
        content = _text(rng, min(500, tokens - total))
        role = "user" if turn % 2 == 0 else "assistant"
        messages.append({"role": role, "content": content})  # pyright: ignore[reportArgumentType]
        total += count_text(content, MODEL) + 4
        turn += 1
    return messages


def _handler(request: httpx2.Request) -> httpx2.Response:
    body = json.loads(request.content)
    reply = R.make_reply(MODEL, prompt_text="", prompt_tokens=1000, cached_tokens=0, cap=None)
    return httpx2.Response(200, json=R.chat_completion(body["model"], reply, "default"))


def _client() -> openai.OpenAI:
    http = openai.DefaultHttpxClient(transport=httpx2.MockTransport(_handler))
    return openai.OpenAI(
        base_url="https://api.openai.com/v1", api_key="bench", http_client=http, max_retries=0
    )


def _rebuilt(messages: list[ChatCompletionMessageParam]) -> list[ChatCompletionMessageParam]:
    """The same conversation in new string objects (as if loaded again from a store)."""
    copied: list[Any] = [
        {k: "".join(list(v)) if isinstance(v, str) else v for k, v in m.items()} for m in messages
    ]
    return copied


def _openai_ms(conversation: list[ChatCompletionMessageParam], calls: int = 5) -> float:
    """The uninstrumented client's own time for one call with this history (for scale)."""
    client = _client()
    times: list[float] = []
    for _ in range(calls):
        start = time.perf_counter_ns()
        client.chat.completions.create(model=MODEL, messages=conversation)
        times.append((time.perf_counter_ns() - start) / 1e6)
    return statistics.median(times)


@contextmanager
def _prepared_response() -> Iterator[None]:
    """``Completions.create`` answers with a prepared response (no request, no serialization)."""
    reply = R.make_reply(MODEL, prompt_text="", prompt_tokens=1000, cached_tokens=0, cap=None)
    response = ChatCompletion.model_validate(R.chat_completion(MODEL, reply, "default"))

    def create(self: Completions, **kwargs: Any) -> ChatCompletion:
        return response

    original = Completions.__dict__["create"]
    setattr(Completions, "create", create)  # noqa: B010 - replaced for the benchmark only
    try:
        yield
    finally:
        setattr(Completions, "create", original)  # noqa: B010


def measure(
    rounds: int, calls: int, sizes: tuple[int, ...] = SIZES, seed: int = 5
) -> dict[tuple[int, str], dict[str, float]]:
    """Median ms per call, with and without a budget, per (history size, kind)."""
    providers = Providers()
    conversations = {size: history(size) for size in sizes}
    scale = {size: _openai_ms(conversation) for size, conversation in conversations.items()}
    kinds: dict[str, Callable[[list[ChatCompletionMessageParam]], Any]] = {
        "same objects": lambda m: m,
        "rebuilt each call": _rebuilt,
    }
    samples: dict[tuple[int, str, bool], list[float]] = {
        (size, kind, budgeted): [] for size in sizes for kind in kinds for budgeted in (False, True)
    }
    rng = random.Random(seed)
    with _prepared_response():
        _timed(rounds, calls, providers, conversations, kinds, samples, rng)
    return {
        (size, kind): {
            "openai": scale[size],
            "without": statistics.median(samples[(size, kind, False)]),
            "with": statistics.median(samples[(size, kind, True)]),
        }
        for size in sizes
        for kind in kinds
    }


Samples = dict[tuple[int, str, bool], list[float]]


def _timed(
    rounds: int,
    calls: int,
    providers: Providers,
    conversations: dict[int, list[ChatCompletionMessageParam]],
    kinds: dict[str, Callable[[list[ChatCompletionMessageParam]], Any]],
    samples: Samples,
    rng: random.Random,
) -> None:
    client = _client()
    costspan.instrument(tracer_provider=providers.tracer, meter_provider=providers.meter)
    counter = 0
    try:
        for _ in range(rounds):
            order = list(samples)
            rng.shuffle(order)
            for size, kind, budgeted in order:
                for _ in range(calls):
                    counter += 1
                    messages = kinds[kind](conversations[size])
                    # The new turn: text never seen before, so it is counted.
                    new = f"step {counter}: what next? " + _text(rng, 40)
                    sent = [*messages, {"role": "user", "content": new}]
                    if budgeted:
                        with costspan.budget(usd=1_000_000):
                            start = time.perf_counter_ns()
                            client.chat.completions.create(model=MODEL, messages=sent)
                    else:
                        start = time.perf_counter_ns()
                        client.chat.completions.create(model=MODEL, messages=sent)
                    elapsed = (time.perf_counter_ns() - start) / 1e6
                    samples[(size, kind, budgeted)].append(elapsed)
    finally:
        costspan.uninstrument()


TARGET_MS = 2.0


def table(medians: dict[tuple[int, str], dict[str, float]]) -> str:
    lines = [
        f"{'history':<9}{'strings':<19}{'openai ms':>10}{'costspan ms':>13}{'+ budget ms':>13}"
        f"{'budget cost ms':>16}"
    ]
    worst = 0.0
    for (size, kind), m in medians.items():
        cost = m["with"] - m["without"]
        if size == max(s for s, _ in medians):
            worst = max(worst, cost)
        lines.append(
            f"{f'{size / 1000:g}k':<9}{kind:<19}{m['openai']:>10.1f}{m['without']:>13.3f}"
            f"{m['with']:>13.3f}{cost:>16.3f}"
        )
    verdict = "meets" if worst <= TARGET_MS else "MISSES"
    largest = max(s for s, _ in medians)
    lines.append(
        f"\nbudget cost per call at {largest / 1000:g}k tokens of history: at most {worst:.2f} ms: "
        f"{verdict} the {TARGET_MS:g} ms target"
    )
    return "\n".join(lines)
