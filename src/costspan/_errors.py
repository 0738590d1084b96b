"""costspan's warnings and exceptions.

::

    UserWarning
     └── UnpricedModelWarning       a call's model has no known price (once per model)
    LookupError
     └── UnpricedModelError         COSTSPAN_ON_UNPRICED=raise and a budgeted call has no price
    RuntimeError
     └── BudgetExceeded             a call would break a budget that refuses it; nothing was sent
          └── BudgetUnavailable     the shared ledger is unreachable and COSTSPAN_FAIL_MODE=closed
"""

from __future__ import annotations

from decimal import Decimal


class UnpricedModelWarning(UserWarning):
    """A call used a model that neither genai-prices nor a price override knows.

    The call is recorded with ``costspan.unpriced=true`` and counted in the
    ``costspan.calls.unpriced`` metric, never as a silent $0. Warned once per provider and model.
    Add the model with ``costspan.configure(prices=...)`` or ``COSTSPAN_PRICES``.
    """


class UnpricedModelError(LookupError):
    """Raised before a request is sent when ``on_unpriced="raise"`` and its model has no price.

    Attributes:
        model: the model the call asked for.
        provider: the ``gen_ai.provider.name`` of the call.
    """

    def __init__(self, model: str, provider: str) -> None:
        super().__init__(
            f"no price is known for model {model!r} of provider {provider!r}, and "
            "COSTSPAN_ON_UNPRICED=raise refuses calls that cannot be priced; add the model with "
            "costspan.configure(prices={...}) or COSTSPAN_PRICES"
        )
        self.model = model
        self.provider = provider


class BudgetExceeded(RuntimeError):
    """Raised before a request is sent, when it could break a budget whose action refuses it.

    Nothing was sent and nothing was charged. The attributes say which budget refused and why.

    Attributes:
        budget: the :class:`~costspan.Budget` that refused, or None for a budget that arrived in
            baggage from another service.
        scope: the refusing budget's name, or its scope id.
        spent_usd: what that budget had spent (``Decimal``).
        remaining_usd: what it could still hold (``Decimal``; None without a USD cap).
        remaining_tokens: likewise for tokens.
        estimate_usd: the most the refused call could have cost (None if its model is unpriced).
        estimate_tokens: the most tokens it could have used.
        model: the model the call asked for.
        held_usd: what calls still in flight held in that budget (``Decimal``): room that is
            not spent yet but not free either.
        cap_usd: the budget's USD cap (None without one).
    """

    def __init__(
        self,
        *,
        budget: object,
        scope: str,
        spent_usd: Decimal,
        remaining_usd: Decimal | None,
        remaining_tokens: int | None,
        estimate_usd: Decimal | None,
        estimate_tokens: int,
        model: str,
        held_usd: Decimal = Decimal(0),
        cap_usd: Decimal | None = None,
    ) -> None:
        if remaining_usd is not None:
            room = f"${remaining_usd:.6f} left" + (f" of ${cap_usd}" if cap_usd is not None else "")
        else:
            room = f"{remaining_tokens} tokens left"
        used = f"spent ${spent_usd:.6f}"
        if held_usd:
            used += f", ${held_usd:.6f} held by calls in flight"
        cost = f"${estimate_usd:.6f}" if estimate_usd is not None else f"{estimate_tokens} tokens"
        hint = ""
        if estimate_usd is not None and cap_usd is not None and estimate_usd > cap_usd:
            hint = "; it could never fit: give it a smaller output cap (max_completion_tokens)"
        super().__init__(
            f"call to {model!r} refused before it was sent: budget {scope!r} has {room} "
            f"({used}) and the call could cost up to {cost}{hint}"
        )
        self.held_usd = held_usd
        self.cap_usd = cap_usd
        self.budget = budget
        self.scope = scope
        self.spent_usd = spent_usd
        self.remaining_usd = remaining_usd
        self.remaining_tokens = remaining_tokens
        self.estimate_usd = estimate_usd
        self.estimate_tokens = estimate_tokens
        self.model = model


class BudgetUnavailable(BudgetExceeded):
    """Raised before a request is sent when its budgets cannot be checked: the shared ledger is
    unreachable, or checking failed (a ledger error, input costspan cannot read), and the fail
    mode refuses (``COSTSPAN_FAIL_MODE=closed``, or ``local`` when not even this process's own
    counters can decide). Nothing was sent and nothing was charged.

    A subclass of :class:`BudgetExceeded`, so code that handles refusals handles this one too.
    """

    def __init__(self, *, scope: str, model: str, reason: str, fail_mode: str = "closed") -> None:
        RuntimeError.__init__(
            self,
            f"call to {model!r} refused before it was sent: budget {scope!r} cannot be checked "
            f"because {reason} (COSTSPAN_FAIL_MODE={fail_mode})",
        )
        self.budget = None
        self.scope = scope
        self.held_usd = Decimal(0)
        self.cap_usd = None
        self.spent_usd = Decimal(0)
        self.remaining_usd = None
        self.remaining_tokens = None
        self.estimate_usd = None
        self.estimate_tokens = 0
        self.model = model
