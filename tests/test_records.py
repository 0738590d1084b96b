"""Spend records: one per settled call, in a bounded buffer and, with a store, in SQLite."""

from __future__ import annotations

import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import openai
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import costspan
from costspan._runtime import runtime
from tests.conftest import USER, attrs

pytestmark = pytest.mark.usefixtures("instrumented")


def test_every_settled_call_yields_a_record(
    client: openai.OpenAI, span_exporter: InMemorySpanExporter
) -> None:
    """The record says what the span says: models, tags, tokens, exact USD, ids."""
    with costspan.tags({"feature": "search", "user.id": "u-1"}):
        client.chat.completions.create(model="gpt-4o-mini", messages=USER)
    (record,) = runtime().recorder.buffer.records()
    span = span_exporter.get_finished_spans()[0]
    a = attrs(span)
    assert record.operation == "chat"
    assert record.provider == "openai"
    assert record.request_model == "gpt-4o-mini"
    assert record.response_model == a["gen_ai.response.model"]
    assert dict(record.tags) == {"feature": "search", "user.id": "u-1"}
    assert record.input_tokens == a["gen_ai.usage.input_tokens"]
    assert record.output_tokens == a["gen_ai.usage.output_tokens"]
    assert record.usd == Decimal(repr(a["gen_ai.usage.cost.amount"]))
    assert not record.estimated
    assert not record.unpriced
    context = span.get_span_context()
    assert context is not None
    assert record.trace_id == f"{context.trace_id:032x}"
    assert record.span_id == f"{context.span_id:016x}"


def test_unpriced_estimated_and_refused_calls(client: openai.OpenAI) -> None:
    """Unpriced calls are recorded without USD (not $0); missing usage is estimated and marked;
    a refused call was never sent and has no record."""
    with pytest.warns(costspan.UnpricedModelWarning):
        client.chat.completions.create(model="house-model-7", messages=USER)
    stream = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=USER,
        stream=True,
        extra_headers={"x-costspan-test-omit-usage": "1"},  # a server ignoring include_usage
    )
    for _ in stream:
        pass
    with costspan.budget(usd="0.0000001"), pytest.raises(costspan.BudgetExceeded):
        client.chat.completions.create(model="gpt-4o-mini", messages=USER)
    unpriced, estimated = runtime().recorder.buffer.records()
    assert unpriced.usd is None
    assert unpriced.unpriced
    assert estimated.estimated
    assert estimated.usd is not None


def test_the_buffer_is_bounded_and_counts_what_it_drops(client: openai.OpenAI) -> None:
    """max_records keeps the newest records; dropped_records() says how many fell out."""
    costspan.configure(max_records=3)
    for i in range(5):
        with costspan.tags(feature=f"f{i}"):
            client.chat.completions.create(model="gpt-4o-mini", messages=USER)
    kept = runtime().recorder.buffer.records()
    assert [r.tags["feature"] for r in kept] == ["f2", "f3", "f4"]
    assert costspan.dropped_records() == 2


def test_bad_record_settings_are_clear_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COSTSPAN_MAX_RECORDS", "lots")
    with pytest.raises(ValueError, match="COSTSPAN_MAX_RECORDS='lots' is not a whole number"):
        costspan.configure()
    monkeypatch.setenv("COSTSPAN_MAX_RECORDS", "0")
    with pytest.raises(ValueError, match="between 1 and 10,000,000"):
        costspan.configure()


WRITER = """
import openai, costspan
from costspan.testing import OpenAICompatibleServer
costspan.instrument()
with OpenAICompatibleServer() as llm, costspan.tags(feature="{feature}"):
    client = openai.OpenAI(base_url=llm.base_url, api_key="k", max_retries=0)
    for _ in range(2):
        client.chat.completions.create(
            model="gpt-4o-mini", messages=[{{"role": "user", "content": "hi"}}]
        )
"""


def test_records_survive_restarts_in_the_sqlite_store(tmp_path: Path) -> None:
    """Two processes write to one store and exit; a report here sees all their calls."""
    store = tmp_path / "spend.db"
    env = {"COSTSPAN_RECORDS": str(store), "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "openai"}
    for feature in ("search", "chat"):
        subprocess.run(
            [sys.executable, "-c", WRITER.format(feature=feature)],
            env={**os.environ, **env},
            check=True,
            timeout=120,
        )
    costspan.configure(records=str(store))
    report = costspan.report(group_by=["feature"])
    assert sorted((row.tags["feature"], row.calls) for row in report) == [
        ("chat", 2),
        ("search", 2),
    ]
    assert report.usd > 0


def test_the_sqlite_ledger_file_is_the_default_store(client: openai.OpenAI, tmp_path: Path) -> None:
    """With COSTSPAN_LEDGER=sqlite:///..., records go to the same file without more settings."""
    ledger = tmp_path / "ledger.db"
    costspan.configure(ledger=f"sqlite:///{ledger}")
    client.chat.completions.create(model="gpt-4o-mini", messages=USER)
    store = runtime().recorder.store
    assert store is not None
    assert [r.request_model for r in store.read()] == ["gpt-4o-mini"]
    assert store.path == ledger.resolve()


@pytest.mark.parametrize(
    "content",
    [b"plain text, not a database " * 8, b"SQLite format 3\x00" + b"\xff" * 200],
    ids=["text", "truncated-sqlite"],
)
def test_a_store_that_is_not_a_records_database_is_one_clear_error(
    tmp_path: Path, content: bytes
) -> None:
    """report() over a file that is not a readable SQLite store raises a ValueError naming the
    file, not sqlite3's DatabaseError."""
    store = tmp_path / "spend.db"
    store.write_bytes(content)
    costspan.configure(records=str(store))
    with pytest.raises(ValueError, match=r"cannot read spend records from .*spend\.db"):
        costspan.report()
