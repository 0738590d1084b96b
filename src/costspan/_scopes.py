"""Which budgets and limits a call must fit: the scopes of the context it is made in.

A call made in some context is under three kinds of caps at once, each a :class:`Scope`:

- the :class:`~costspan.Budget` objects entered in this process (``budget()``);
- budgets that arrived in baggage from another service (when ``COSTSPAN_TRUST_INBOUND_BUDGETS``
  allows), which can only restrict;
- configured limits (``COSTSPAN_LIMITS``) that apply to the call's baggage values and windows.

:func:`active_scopes` lists them, block actions first, so that an inner budget's ``downgrade``
never masks an outer budget's ``block``.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from opentelemetry import baggage

from costspan._baggage import BUDGETS_KEY, InboundBudget, inbound_budgets
from costspan._budget import Budget, local_budgets, local_entries
from costspan._limits import Applied
from costspan._money import micros
from costspan._runtime import settings
from costspan.ledgers import ScopeLimit


@dataclass(frozen=True)
class Scope:
    """A cap as one call sees it: a local budget, an inbound budget, or a configured limit."""

    key: str
    """The ledger scope that keeps its spend."""
    usd: Decimal | None
    tokens: int | None
    action: Any
    downgrade: Mapping[str, str]
    label: str
    budget: Budget | None
    expires_at: float | None = None
    sticky: bool = True

    @classmethod
    def of_budget(cls, b: Budget) -> Scope:
        # A Budget's caps never change: build its Scope once, not on every call.
        scope = b.__dict__.get("_scope")
        if scope is None:
            scope = cls(b.scope_key, b.usd, b.tokens, b.on_exceed, b.downgrade, b.label, b)
            b.__dict__["_scope"] = scope
        return scope

    @classmethod
    def of_inbound(cls, b: InboundBudget) -> Scope:
        return cls(b.scope_key, b.usd, b.tokens, b.action, {}, b.label, None)

    @classmethod
    def of_rule(cls, applied: Applied) -> Scope:
        rule = applied.rule
        return cls(
            applied.key,
            rule.usd,
            rule.tokens,
            rule.action,
            {},
            applied.label,
            None,
            expires_at=applied.expires_at,
            sticky=False,  # caps from trusted configuration: the configured value is the cap
        )

    @functools.cached_property
    def limit(self) -> ScopeLimit:
        """The ledger scope and caps (built once: a scope's caps never change)."""
        return ScopeLimit(
            self.key,
            None if self.usd is None else micros(self.usd),
            self.tokens,
            self.expires_at,
            self.sticky,
        )


def possibly_limited() -> bool:
    """Cheap: whether a call in this context may be under a budget or a configured limit."""
    current = settings()
    return bool(
        local_budgets()
        or current.limits.rules
        or (current.trust_inbound_budgets and baggage.get_baggage(BUDGETS_KEY) is not None)
    )


# The scopes of the last context asked about, when no configured limit applies: calls made one
# after another in one budget (an agent loop, a request handler) ask about the same context.
# A context is immutable, so the same budgets tuple, baggage value and settings object give the
# same scopes. One slot, replaced whole (atomic): threads at most miss it.
_last: tuple[object, object, object, list[Scope], tuple[str, ...]] | None = None


def active_scopes(trace_id: int = 0) -> tuple[list[Scope], list[str]]:
    """Every budget and configured limit on a call in this context, block actions first, and
    the reasons inbound budget entries were rejected for. ``trace_id``: the call's trace, which
    names its per-request windows."""
    global _last
    local = local_budgets()
    current = settings()
    inbound_value = baggage.get_baggage(BUDGETS_KEY) if current.trust_inbound_budgets else None
    limited = bool(current.limits.rules)
    last = _last
    if (
        not limited
        and last is not None
        and last[0] is local
        and last[1] is current
        and last[2] == inbound_value
    ):
        return list(last[3]), list(last[4])
    scopes = [Scope.of_budget(b) for b in local]
    rejected: list[str] = []
    # A value written by this process's budgets alone holds no inbound budget: not parsed.
    if inbound_value is not None and inbound_value is not local_entries():
        inbound = inbound_budgets(reject=rejected.append, local_ids={b.id for b in local})
        scopes.extend(Scope.of_inbound(b) for b in inbound)
    if limited:
        scopes.extend(Scope.of_rule(applied) for applied in current.limits.applied(trace_id))
    if len(scopes) > 1:
        scopes.sort(key=_not_a_block)
    if not limited:
        _last = (local, current, inbound_value, scopes, tuple(rejected))
        return list(scopes), rejected
    return scopes, rejected


def _not_a_block(scope: Scope) -> bool:
    return scope.action != "block"
