"""Money: USD as ``Decimal`` for people and prices, integer micro-USD for ledgers.

Ledgers add and compare whole micro-dollars (µ$) only, so that no float and no rounding drift
ever decides a budget. Conversions happen here and nowhere else: a hold or a charge rounds *up*
to the next µ$ (never to less than it costs), and a µ$ amount converts back to USD exactly.
Span attributes are doubles by convention; :func:`display` makes that (lossy) step explicit.
"""

from __future__ import annotations

from decimal import ROUND_CEILING, Decimal
from typing import Final

MICROS_PER_USD: Final = 1_000_000
_MICROS: Final = Decimal(MICROS_PER_USD)
MAX_MICROS: Final = 10**15
"""The largest USD amount (in µ$: one billion dollars) a cap, hold or charge may have. Every
ledger engine stores it exactly: below 2**53 (Redis scripts compute in doubles) and 2**63
(SQLite integers)."""
MAX_USD: Final = Decimal(MAX_MICROS) / _MICROS
""":data:`MAX_MICROS` in USD: the largest cap a budget or limit may have."""
MAX_TOKENS: Final = 10**15
"""The largest token amount a cap, hold or charge may have (same reason)."""


def cap_amount(value: object, name: str) -> Decimal:
    """A USD cap from user input: :func:`usd_amount`, and at most :data:`MAX_USD`."""
    amount = usd_amount(value, name)
    if amount > MAX_USD:
        raise ValueError(
            f"{name}={value!r} is more than a ledger can hold (at most $1,000,000,000)"
        )
    return amount


def micros(amount: Decimal) -> int:
    """USD to whole micro-dollars, rounded up (a hold or a charge never rounds to less)."""
    return int((amount * _MICROS).to_integral_value(rounding=ROUND_CEILING))


def held(amount: Decimal | None, tokens: int) -> tuple[int, int]:
    """What a ledger is asked to hold or charge for ``amount`` USD and ``tokens``: whole µ$
    (rounded up), each at most what a ledger stores (:data:`MAX_MICROS`, :data:`MAX_TOKENS`).
    An absurd usage or estimate (a hostile server's 10**30 tokens) is charged the most a ledger
    can hold, which no cap admits past: never a ledger error that loses the charge."""
    spent = 0 if amount is None else min(micros(amount), MAX_MICROS)
    return spent, max(min(tokens, MAX_TOKENS), 0)


def usd(micro_amount: int) -> Decimal:
    """Micro-dollars to USD, exactly."""
    return Decimal(micro_amount) / _MICROS


def display(amount: Decimal | int) -> float:
    """A USD amount (``Decimal``) or a µ$ amount (``int``) as the double a span attribute holds."""
    if isinstance(amount, int):
        return float(usd(amount))
    return float(amount)


def usd_amount(value: object, name: str) -> Decimal:
    """A non-negative, finite USD amount from user input, exactly, as Decimal (never via float
    arithmetic: a float is read through its shortest repr). ValueError names ``name``."""
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        raise ValueError(f"{name} must be a number of US dollars, not {value!r}")
    if isinstance(value, str) and not value.strip().isascii():
        raise ValueError(f"{name}={value!r} is not a number of US dollars")
    try:
        amount = Decimal(str(value))
    except ArithmeticError as exc:
        raise ValueError(f"{name}={value!r} is not a number of US dollars") from exc
    if not amount.is_finite() or amount < 0:
        raise ValueError(f"{name} must be a finite amount >= 0, not {value!r}")
    return amount


def reported_usd(value: object) -> Decimal | None:
    """A non-negative finite USD amount a server reported (a number or numeric string); else
    None. Unlike :func:`usd_amount` it never raises: a server's odd value is no cost."""
    if value is None:  # the usual case: no exception raised and caught on every call
        return None
    try:
        return usd_amount(value, "cost")
    except ValueError:
        return None
