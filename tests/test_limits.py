"""Configured limits (COSTSPAN_LIMITS): the grammar, scopes from baggage values, UTC windows
with an injected clock, and the hierarchy, through real openai calls on every ledger engine."""

from __future__ import annotations

import calendar
from decimal import Decimal

import openai
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import costspan
from costspan import _config
from costspan._limits import LimitTable, scope_value
from tests.conftest import USER, attrs

pytestmark = pytest.mark.usefixtures("instrumented", "fresh_ledger")

FULL = {"x-costspan-test-output-tokens": "100"}  # every answer uses its whole output cap


class Clock:
    def __init__(self, iso: str) -> None:
        self.set(iso)

    def set(self, iso: str) -> None:
        date, time_of_day = iso.rstrip("Z").split("T")
        y, mo, d = (int(x) for x in date.split("-"))
        h, mi, s = (int(x) for x in time_of_day.split(":"))
        self.now = float(calendar.timegm((y, mo, d, h, mi, s)))

    def __call__(self) -> float:
        return self.now


def _per_call() -> Decimal:
    estimate = costspan.estimate("gpt-4o-mini", USER, max_output_tokens=100)
    assert estimate.usd is not None
    return estimate.usd


def _configure(rules: str, clock: Clock | None = None) -> None:
    costspan.configure(limits=LimitTable.parse(rules, clock=clock) if clock else rules)


def _ask(client: openai.OpenAI) -> str:
    try:
        client.chat.completions.create(
            model="gpt-4o-mini", messages=USER, max_completion_tokens=100, extra_headers=FULL
        )
        return "sent"
    except costspan.BudgetExceeded as refused:
        return refused.scope


def test_each_user_has_their_own_daily_cap(client: openai.OpenAI) -> None:
    """`user.id $X/day`: every user.id value gets X; a call without user.id is not under it."""
    _configure(f"user.id ${_per_call() * Decimal('2.5')}/day")
    with costspan.tags({"user.id": "alice"}):
        alice = [_ask(client) for _ in range(3)]
    with costspan.tags({"user.id": "bob"}):
        bob = [_ask(client) for _ in range(3)]
    anonymous = [_ask(client) for _ in range(3)]
    assert alice[:2] == ["sent", "sent"]
    assert alice[2].startswith("limit user.id=alice $")
    assert bob[:2] == ["sent", "sent"]
    assert bob[2].startswith("limit user.id=bob $")
    assert anonymous == ["sent"] * 3


def test_a_call_must_fit_user_tenant_and_global_caps_at_once(client: openai.OpenAI) -> None:
    """The hierarchy: whichever of the user's, tenant's and global caps is tightest refuses."""
    one = _per_call()
    user, tenant, everyone = (one * Decimal(x) for x in ("3.5", "4.5", "5.5"))
    _configure(f"user.id ${user}/day; tenant.id ${tenant}/day; * ${everyone}/day")
    outcomes: list[str] = []
    for user, tenant in [("u1", "t1")] * 4 + [("u2", "t1")] * 2 + [("u3", "t2")] * 3:
        with costspan.tags({"user.id": user, "tenant.id": tenant}):
            outcomes.append(_ask(client))
    assert outcomes[:3] == ["sent"] * 3
    assert outcomes[3].startswith("limit user.id=u1")  # u1's own cap
    assert outcomes[4] == "sent"
    assert outcomes[5].startswith("limit tenant.id=t1")  # t1 has spent 4 calls' worth
    assert outcomes[6] == "sent"
    assert outcomes[7].startswith("limit * $")  # 5 calls in all today
    assert outcomes[8].startswith("limit * $")


def test_a_daily_cap_resets_at_utc_midnight(client: openai.OpenAI) -> None:
    """Spent out at 23:59:50 UTC; admitted again at 00:00:01 the next day, refused at 23:59:59."""
    clock = Clock("2026-11-22T23:59:50Z")
    _configure(f"user.id ${_per_call() * Decimal('1.5')}/day", clock)
    with costspan.tags({"user.id": "night-owl"}):
        assert _ask(client) == "sent"
        assert _ask(client).startswith("limit user.id=night-owl")
        clock.set("2026-11-22T23:59:59Z")
        assert _ask(client).startswith("limit")
        clock.set("2026-11-23T00:00:01Z")
        assert _ask(client) == "sent"
        assert _ask(client).startswith("limit")


def test_hour_and_month_windows_roll_over(client: openai.OpenAI) -> None:
    """An hourly cap frees up on the hour; a monthly one only on the 1st (UTC)."""
    clock = Clock("2026-11-30T10:59:00Z")
    one = _per_call()
    _configure(
        f"feature ${one * Decimal('1.5')}/hour; tenant.id ${one * Decimal('2.5')}/month", clock
    )
    with costspan.tags({"feature": "search", "tenant.id": "acme"}):
        assert _ask(client) == "sent"
        assert _ask(client).startswith("limit feature=search")
        clock.set("2026-11-30T11:00:00Z")
        assert _ask(client) == "sent"  # a new hour: the month's second call
        assert _ask(client).startswith("limit")
        clock.set("2026-11-30T12:00:00Z")
        assert _ask(client).startswith("limit tenant.id=acme")  # the month is spent
        clock.set("2026-12-01T00:00:00Z")
        assert _ask(client) == "sent"


def test_a_request_window_is_one_trace(
    client: openai.OpenAI, tracer_provider: TracerProvider
) -> None:
    """`$X/request` caps the calls of one trace; the next request (trace) starts afresh, and a
    call outside any request is a trace of its own."""
    _configure(f"* ${_per_call() * Decimal('1.5')}/request")
    tracer = tracer_provider.get_tracer("test")
    with tracer.start_as_current_span("request 1"):
        first = [_ask(client), _ask(client)]
    with tracer.start_as_current_span("request 2"):
        second = [_ask(client)]
    assert not trace.get_current_span().get_span_context().is_valid
    alone = [_ask(client), _ask(client)]  # no request around them: each call is its own trace
    assert first[0] == "sent"
    assert first[1].startswith("limit * $")
    assert second == ["sent"]
    assert alone == ["sent", "sent"]


def test_limit_decisions_are_on_the_span(
    client: openai.OpenAI, span_exporter: InMemorySpanExporter
) -> None:
    """The span names the limits a call had to fit and the one that refused it."""
    _configure(f"user.id ${_per_call() * Decimal('1.5')}/day")
    with costspan.tags({"user.id": "carol"}):
        _ask(client)
        _ask(client)
    spans = span_exporter.get_finished_spans()
    label = str(attrs(spans[1])["costspan.budget.refused_by"])
    assert label.startswith("limit user.id=carol $")
    assert label.endswith("/day")
    assert list(attrs(spans[0])["costspan.budget.ids"]) == [label]


def test_limits_and_budgets_apply_together(client: openai.OpenAI) -> None:
    """A budget() inside a configured limit: the call must fit both."""
    one = _per_call()
    _configure(f"user.id ${one * Decimal('1.5')}/day")
    with costspan.tags({"user.id": "dave"}), costspan.budget(usd=one * 10):
        assert _ask(client) == "sent"
        assert _ask(client).startswith("limit user.id=dave")
    with costspan.tags({"user.id": "erin"}), costspan.budget(usd=one * Decimal("0.5")) as b:
        assert _ask(client) == b.label


# -- the grammar ---------------------------------------------------------------------------------
def test_grammar_reads_every_form() -> None:
    """Scopes (*, key, key=value), USD and token caps, windows, actions, comments, merging."""
    table = LimitTable.parse(
        """
        user.id          $10/day    # every user
        tenant.id        $500/month 20000000 tokens/month
        tenant.id=acme   $2000/month
        *                $5000/day
        feature=search   $50/hour   warn
        user.id          100000 tokens/day
        """
    )
    summary = {(r.key, r.value, r.window): (r.usd, r.tokens, r.action) for r in table.rules}
    assert summary == {
        ("user.id", None, "day"): (Decimal(10), 100_000, "block"),
        ("tenant.id", None, "month"): (Decimal(500), 20_000_000, "block"),
        ("tenant.id", "acme", "month"): (Decimal(2000), None, "block"),
        (None, None, "day"): (Decimal(5000), None, "block"),
        ("feature", "search", "hour"): (Decimal(50), None, "warn"),
    }


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ("user.id", "has no cap"),
        ("user.id $10/week", "unknown window 'week'"),
        ("user.id $10/day frob", "unknown action 'frob'"),
        ("user.id 10/day", "'10/day' is not a cap"),
        ("user id $1/day", "'id' is not a cap"),
        ("us,er $1/day", "'us,er' is not a baggage key"),
        ("user.id $0/day", "more than zero"),
        ("user.id= $1/day", "names a key but no value"),
        ("x $1/day; x $2/day", "repeats a cap"),
        ("x $1/day warn; x 5 tokens/day", "a second action"),
    ],
)
def test_bad_rules_are_clear_errors(
    rules: str, message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bad rule names itself and what is accepted, from the env var or configure()."""
    with pytest.raises(ValueError, match=message):
        costspan.configure(limits=rules)
    monkeypatch.setenv(_config.COSTSPAN_LIMITS, rules)
    with pytest.raises(ValueError, match=f"COSTSPAN_LIMITS: .*{message}"):
        costspan.configure()


def test_scope_values_are_escaped_and_bounded() -> None:
    """Baggage values cannot forge another scope's key or grow keys without bound."""
    assert scope_value("a:b") == "a%3Ab"
    assert scope_value("x=y {z}") == "x%3Dy%20%7Bz%7D"
    assert scope_value("ü") == "%C3%BC"
    long = scope_value("u" * 5000)
    assert long.startswith("#")
    assert len(long) == 65
    # Whatever a client sends, a raw value never names a hashed value's counter.
    assert scope_value(long) != long
    assert scope_value(long).startswith("%23")
