"""Untrusted input is parsed strictly and never raises past its parser (property-based).

Baggage arrives from clients costspan does not control, and the limits grammar from
configuration text: for *any* string, the result is a valid, enforced entry or an ignored one
(a ``ValueError`` naming the problem, for configuration), never another exception that could end
enforcement. The attacks of the fail-safe issue are replayed through real W3C propagation and a
real client: a crafted entry never switches a budget or a limit off.
"""

from __future__ import annotations

import re
from decimal import Decimal
from urllib.parse import quote

import openai
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry import propagate

import costspan
from costspan import BudgetExceeded
from costspan._baggage import ACTIONS, InboundBudget, inbound_budgets, parse_budget_entry
from costspan._limits import LimitTable
from costspan._money import MAX_TOKENS, MAX_USD
from costspan.testing import OpenAICompatibleServer
from tests.conftest import USER
from tests.inbound import inbound

_ID = re.compile(r"^[0-9a-f]{8,32}$")
ENTRY_TEXT = st.one_of(
    st.text(),
    # Near misses of the grammar, where a lax parser would break: four fields, odd digits.
    st.builds(
        lambda i, u, t, a: f"{i}:{u}:{t}:{a}",
        st.one_of(st.from_regex(r"[0-9a-f]{8,32}", fullmatch=True), st.text(max_size=40)),
        st.one_of(st.just("-"), st.decimals(allow_nan=True).map(str), st.text(max_size=20)),
        st.one_of(st.just("-"), st.integers().map(str), st.text(max_size=20)),
        st.one_of(st.sampled_from(ACTIONS), st.text(max_size=12)),
    ),
)


@given(ENTRY_TEXT)
@settings(max_examples=400, deadline=None)
def test_any_budget_entry_is_valid_or_rejected_never_raised(entry: str) -> None:
    """For any text: an InboundBudget whose every field is in range, or a rejection reason."""
    parsed = parse_budget_entry(entry)
    if isinstance(parsed, str):
        assert parsed  # a short reason for the counter
        return
    assert isinstance(parsed, InboundBudget)
    assert _ID.match(parsed.id)
    assert parsed.usd is not None or parsed.tokens is not None
    if parsed.usd is not None:
        assert parsed.usd.is_finite()
        assert Decimal(0) <= parsed.usd <= MAX_USD
    if parsed.tokens is not None:
        assert 0 <= parsed.tokens <= MAX_TOKENS
    assert parsed.action in ACTIONS
    assert entry.isascii()  # nothing but the ASCII grammar is ever accepted


@given(st.text())
@settings(max_examples=300, deadline=None)
def test_any_baggage_value_never_raises(value: str) -> None:
    """A whole ``costspan.budgets`` value, any text: parsed or rejected, never raised."""
    ctx = propagate.extract({"baggage": "costspan.budgets=" + quote(value, safe="")})
    found = inbound_budgets(ctx, reject=lambda _reason: None)
    assert all(isinstance(b, InboundBudget) for b in found)


@given(st.text())
@settings(max_examples=300, deadline=None)
def test_garbage_next_to_a_budget_never_hides_it(garbage: str) -> None:
    """Whatever a client appends, a well-formed budget in the same value still applies."""
    value = "0123456789abcdef:0.00001:-:block," + garbage
    ctx = propagate.extract({"baggage": "costspan.budgets=" + quote(value, safe="")})
    found = inbound_budgets(ctx)
    if len(value) <= 1024:  # longer values are dropped whole, and counted as oversized
        assert "0123456789abcdef" in {b.id for b in found}


RULE_TEXT = st.one_of(
    st.text(),
    st.builds(
        lambda scope, cap, action: f"{scope} {cap} {action}",
        st.sampled_from(["*", "user.id", "tenant.id=acme", "fe ature", "user.id="]),
        st.one_of(
            st.builds(lambda a, w: f"${a}/{w}", st.text(max_size=12), st.text(max_size=8)),
            st.builds(lambda n, w: f"{n} tokens/{w}", st.text(max_size=12), st.text(max_size=8)),
        ),
        st.one_of(st.just(""), st.sampled_from(["block", "warn", "clamp"]), st.text(max_size=8)),
    ),
)


@given(RULE_TEXT)
@settings(max_examples=400, deadline=None)
def test_any_limits_text_parses_or_is_a_value_error(text: str) -> None:
    """For any configuration text: a table of in-range ASCII rules, or a ValueError."""
    try:
        table = LimitTable.parse(text, "COSTSPAN_LIMITS")
    except ValueError as exc:
        message = str(exc)
        table = None
    else:
        message = ""
    if table is None:
        assert message.startswith("COSTSPAN_LIMITS")
        return
    for rule in table.rules:
        assert rule.usd is not None or rule.tokens is not None
        if rule.usd is not None:
            assert Decimal(0) < rule.usd <= MAX_USD
        if rule.tokens is not None:
            assert 0 < rule.tokens <= MAX_TOKENS
        assert rule.window in ("request", "hour", "day", "month")


@pytest.mark.parametrize("digits", ["\u00b2", "\u0663", "\uff13", "1\u0663"])
def test_unicode_digits_are_not_digits(digits: str) -> None:
    """Superscript, Arabic-Indic and full-width digits are rejected as a whole entry or rule."""
    assert parse_budget_entry(f"cafe0001:-:{digits}:block") == "bad tokens"
    assert parse_budget_entry(f"cafe0001:{digits}:-:block") == "bad usd"
    with pytest.raises(ValueError, match="COSTSPAN_LIMITS"):
        LimitTable.parse(f"user.id ${digits}/day", "COSTSPAN_LIMITS")
    with pytest.raises(ValueError, match="COSTSPAN_LIMITS"):
        LimitTable.parse(f"user.id {digits} tokens/day", "COSTSPAN_LIMITS")


def test_caps_beyond_what_a_ledger_holds_are_rejected_on_every_path() -> None:
    """A cap no engine can store exactly is a ValueError when it is given, not an overflow in
    the middle of a call (it used to pass and then fail open on SQLite)."""
    with pytest.raises(ValueError, match="at most"):
        LimitTable.parse("* $99999999999999999999/day", "COSTSPAN_LIMITS")
    with pytest.raises(ValueError, match="10\\*\\*15"):
        LimitTable.parse("* 9999999999999999999 tokens/day", "COSTSPAN_LIMITS")
    with pytest.raises(ValueError, match="at most"):
        costspan.budget(usd="1e12")
    with pytest.raises(ValueError, match="10\\*\\*15"):
        costspan.budget(tokens=10**16)
    assert parse_budget_entry("cafe0001:99999999999:-:block") == "bad usd"


CRAFTED = quote("cafe0001:-:\u00b2:block", safe="")  # a superscript two where a digit goes


def _sent(client: openai.OpenAI, server: OpenAICompatibleServer, calls: int) -> tuple[int, int]:
    """(requests sent, calls refused) of ``calls`` calls made in the current context."""
    before, refused = len(server.requests), 0
    for _ in range(calls):
        try:
            client.chat.completions.create(
                model="gpt-4o-mini", messages=USER, max_completion_tokens=150
            )
        except BudgetExceeded:
            refused += 1
    return len(server.requests) - before, refused


@pytest.mark.usefixtures("instrumented", "fresh_ledger")
def test_a_crafted_entry_does_not_switch_off_a_local_budget(
    client: openai.OpenAI, server: OpenAICompatibleServer
) -> None:
    """The attack of the fail-safe issue, through a real W3C header: under
    ``budget(usd="0.0001")`` as many calls go out with the crafted entry as without it, and
    some are refused (it used to let all of them through)."""
    with costspan.budget(usd="0.0001"):
        clean = _sent(client, server, 5)
    with inbound("costspan.budgets=" + CRAFTED), costspan.budget(usd="0.0001"):
        attacked = _sent(client, server, 5)
    assert clean[1] >= 1
    assert attacked == clean


@pytest.mark.usefixtures("instrumented", "fresh_ledger")
def test_a_crafted_entry_does_not_switch_off_a_configured_limit(
    client: openai.OpenAI, server: OpenAICompatibleServer
) -> None:
    """The same attack against ``COSTSPAN_LIMITS='user.id $0.0001/day'``: still enforced."""
    costspan.configure(limits="user.id $0.0001/day")
    with inbound("user.id=alice"):
        clean = _sent(client, server, 4)
    with inbound("user.id=mallory,costspan.budgets=" + CRAFTED):
        attacked = _sent(client, server, 4)
    assert clean[1] >= 1
    assert attacked == clean


@pytest.mark.usefixtures("instrumented", "fresh_ledger")
def test_a_client_cannot_pick_a_hashed_scope_as_its_user_id(
    client: openai.OpenAI, server: OpenAICompatibleServer
) -> None:
    """A long user.id is stored hashed; sending that hashed form as a raw id names another
    counter, so one client can neither exhaust nor use another's."""
    from costspan._limits import scope_value

    costspan.configure(limits="user.id $0.0001/day")
    long_id = "u" * 300
    with inbound(f"user.id={long_id}"):
        client.chat.completions.create(
            model="gpt-4o-mini", messages=USER, max_completion_tokens=100
        )
    forged = scope_value(long_id)
    with inbound("user.id=" + quote(forged, safe="")):
        # Not refused: a fresh counter, not the long id's exhausted one.
        client.chat.completions.create(
            model="gpt-4o-mini", messages=USER, max_completion_tokens=100
        )
