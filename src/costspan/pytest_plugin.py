"""costspan's pytest plugin (entry point ``pytest11``): assert what a test's LLM calls cost.

Fixtures:

- ``costspan_spend``: the spend of the calls made during this test only (instruments openai
  with costspan first; ``costspan.instrument()`` is idempotent). Its ``usd``, ``calls`` and
  ``records`` grow as the test runs; ``report(...)`` and ``assert_under(usd=..., **tags)`` work
  as on :func:`costspan.report`.
- ``costspan_server``: costspan's local OpenAI-compatible server, started for the test and
  stopped after it.

Marker: ``@pytest.mark.costspan_budget(usd="0.05", **tags)`` fails a test whose calls (those
matching the tags) spent that much or more.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator, Sequence
from decimal import Decimal

import pytest

import costspan
from costspan._records import SpendRecord
from costspan._report import Report, Where
from costspan._runtime import runtime
from costspan.testing import OpenAICompatibleServer


class Spend:
    """The calls one test made, and what they cost."""

    def __init__(self, records: list[SpendRecord]) -> None:
        self.records = records  # filled in as the test's calls settle

    @property
    def usd(self) -> Decimal:
        """Priced spend so far (unpriced calls are counted in ``report().unpriced_calls``)."""
        return sum((r.usd for r in self.records if r.usd is not None), Decimal(0))

    @property
    def calls(self) -> int:
        return len(self.records)

    def report(self, group_by: Sequence[str] | str = (), where: Where = None) -> Report:
        return costspan.report(group_by, where=where, records=list(self.records))

    def assert_under(self, usd: object, **tags: str) -> None:
        """Fail if this test's calls matching ``tags`` spent ``usd`` or more; the message
        breaks the spend down by model."""
        self.report(group_by=["model"]).assert_under(usd, **tags)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "costspan_budget(usd, **tags): fail the test if its LLM calls spend usd or more",
    )


@pytest.fixture
def costspan_spend() -> Iterator[Spend]:
    """The spend of this test's LLM calls (openai instrumented by costspan)."""
    costspan.instrument()
    with runtime().recorder.capture() as collected:
        yield Spend(collected)


@pytest.fixture
def costspan_server() -> Iterator[OpenAICompatibleServer]:
    """costspan's local OpenAI-compatible server on 127.0.0.1, for this test."""
    with OpenAICompatibleServer() as server:
        yield server


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    """Enforce ``costspan_budget`` around the test's own call, so going over fails the test."""
    marker = item.get_closest_marker("costspan_budget")
    if marker is None:
        yield
        return
    tags = {k: str(v) for k, v in marker.kwargs.items() if k != "usd"}
    usd = marker.kwargs.get("usd", marker.args[0] if marker.args else None)
    if usd is None:
        raise pytest.UsageError("write @pytest.mark.costspan_budget(usd='0.05'), with a cap")
    costspan.instrument()
    with runtime().recorder.capture() as collected:
        yield
    Spend(collected).assert_under(usd, **tags)
