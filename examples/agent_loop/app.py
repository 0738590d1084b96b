"""An agent loop under one budget: it downgrades to a cheaper model when the budget runs low,
and stops cleanly when not even that fits.

Each step sends the whole conversation so far (it grows) and asks for up to 300 output tokens.
``costspan.budget(on_exceed="downgrade")`` reserves each step's worst case before sending; when
gpt-4o no longer fits, the step goes to gpt-4o-mini instead, and when nothing fits the step is
refused before it is sent. Without OPENAI_BASE_URL it runs against costspan's local server.
"""

from __future__ import annotations

import os
from contextlib import ExitStack

import openai
from openai.types.chat import ChatCompletionMessageParam

import costspan
from costspan.testing import OpenAICompatibleServer

STEPS = 12


def run_agent(client: openai.OpenAI) -> list[str]:
    history: list[ChatCompletionMessageParam] = [
        {"role": "system", "content": "You plan museum visits step by step."},
        {"role": "user", "content": "Plan a day at the Louvre for a family of four."},
    ]
    log: list[str] = []
    with costspan.budget(
        usd="0.02", name="agent run", on_exceed="downgrade", downgrade={"gpt-4o": "gpt-4o-mini"}
    ) as run:
        for step in range(1, STEPS + 1):
            try:
                reply = client.chat.completions.create(
                    model="gpt-4o",
                    messages=history,
                    max_completion_tokens=300,
                    extra_headers={"x-costspan-test-output-tokens": "300"},  # chatty planner
                )
            except costspan.BudgetExceeded as refused:
                log.append(f"step {step:2}: stopped before sending, {refused.remaining_usd} left")
                break
            content = reply.choices[0].message.content or ""
            history.append({"role": "assistant", "content": content})
            history.append({"role": "user", "content": "Next step?"})
            log.append(f"step {step:2}: {reply.model:<24} spent so far ${run.spent_usd}")
        log.append(f"agent run: {run.calls} calls, ${run.spent_usd} of $0.02")
    return log


def main() -> None:
    with ExitStack() as stack:
        base_url = os.environ.get("OPENAI_BASE_URL")
        if base_url is None:
            base_url = stack.enter_context(OpenAICompatibleServer()).base_url
        costspan.instrument()
        client = openai.OpenAI(base_url=base_url, api_key=os.environ.get("OPENAI_API_KEY", "local"))
        for line in run_agent(client):
            print(line)


if __name__ == "__main__":
    main()
