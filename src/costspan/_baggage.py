"""Baggage in and out: what costspan writes into the OpenTelemetry context, and what it reads.

- Out: :class:`tags` puts attribution entries into baggage; a :class:`~costspan.Budget` writes
  a compact entry under ``costspan.budgets`` (``<id>:<usd>:<tokens>:<action>``) so downstream
  services that run costspan enforce it too. Both derive from :class:`ContextEntry`.
- In: :func:`attribution` and :func:`metric_tags` read the configured keys for spans, records and
  metrics; :func:`inbound_budgets` reads budgets that arrived from another process.

Baggage that arrives from another process is untrusted input: entries that are malformed,
oversized, negative or absurd are rejected (reported to a callback with a short reason), never
an exception. A well-formed inbound budget can only restrict: every call must fit every budget,
and a ledger scope keeps the smallest cap it was ever given. An entry may carry the budget's
name (``<id>:<usd>:<tokens>:<action>:<name>``, sanitised and bounded), for messages downstream.
"""

from __future__ import annotations

import contextvars
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from types import TracebackType
from typing import Final, Literal

from opentelemetry import baggage, context

from costspan._money import MAX_TOKENS, MAX_USD
from costspan._runtime import settings

BUDGETS_KEY: Final = "costspan.budgets"
MAX_BUDGETS: Final = 8
MAX_BUDGETS_VALUE: Final = 1024  # characters of the baggage value; real ones are ~40 per budget
MAX_TAG_VALUE: Final = 256
# W3C guarantees propagation of 8,192 bytes of baggage in all; a single attribution value of
# more than 256 characters is not an id, and is dropped rather than copied onto every span.
MAX_ATTRIBUTION_VALUE: Final = 256
ACTIONS: Final = ("block", "downgrade", "clamp", "truncate", "warn")

Action = Literal["block", "downgrade", "clamp", "truncate", "warn"]

_TOKENS: contextvars.ContextVar[tuple[object, ...]] = contextvars.ContextVar(
    "costspan_context_tokens", default=()
)
_ID: Final = re.compile(r"^[0-9a-f]{8,32}$")
_DIGITS: Final = re.compile(r"^[0-9]{1,16}$")  # ASCII only: str.isdigit() accepts "²" and "٣"
_USD: Final = re.compile(r"^[0-9]{1,10}(?:\.[0-9]{1,12})?$")
# RFC 7230 token characters: what a baggage key may be made of.
_KEY: Final = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,128}$")


class ContextEntry:
    """Entering attaches a context derived from the current one; leaving detaches it.

    Tokens live in a context variable, not on the object, so one object can be entered by
    several threads or tasks at once, each detaching its own.
    """

    def _derive(self, ctx: context.Context) -> context.Context:
        raise NotImplementedError

    def _attach(self) -> None:
        _TOKENS.set((*_TOKENS.get(), context.attach(self._derive(context.get_current()))))

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        tokens = _TOKENS.get()
        if tokens:
            _TOKENS.set(tokens[:-1])
            context.detach(tokens[-1])  # pyright: ignore[reportArgumentType]

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)


def in_front(ctx: context.Context, entries: Mapping[str, str]) -> context.Context:
    """``ctx`` with ``entries`` set and placed first in its baggage, ``costspan.budgets``
    foremost. OpenTelemetry's propagator sends at most 180 entries and 8,192 bytes, dropping
    what comes last: put last, a budget could be pushed out by entries a client padded the
    incoming baggage with, and the next service would not enforce it."""
    current = baggage.get_all(ctx)
    front = {k: entries[k] for k in sorted(entries, key=lambda k: k != BUDGETS_KEY)}
    if BUDGETS_KEY not in front and BUDGETS_KEY in current:
        front = {BUDGETS_KEY: current[BUDGETS_KEY], **front}
    ordered = {**front, **{k: v for k, v in current.items() if k not in front}}
    ctx = baggage.clear(ctx)
    for key, value in ordered.items():
        ctx = baggage.set_baggage(key, value, context=ctx)
    return ctx


def is_baggage_key(key: str) -> bool:
    return _KEY.match(key) is not None


def budget_entries(value: object) -> list[str]:
    """The comma-separated entries of a ``costspan.budgets`` value."""
    if not isinstance(value, str) or not value:
        return []
    return [part.strip() for part in value.split(",")]


def attribution(ctx: context.Context | None = None) -> dict[str, str]:
    """The attribution keys present in baggage, with usable values."""
    keys = settings().attribution_keys
    if not keys:
        return {}
    entries = baggage.get_all(ctx)
    return {
        k: v
        for k in keys
        if isinstance(v := entries.get(k), str) and 0 < len(v) <= MAX_ATTRIBUTION_VALUE
    }


def metric_tags(ctx: context.Context | None = None) -> dict[str, str]:
    """The configured metric tags present in baggage (bounded: only keys the user named)."""
    keys = settings().metric_tags
    if not keys:
        return {}
    entries = baggage.get_all(ctx)
    return {k: v for k in keys if isinstance(v := entries.get(k), str) and len(v) <= 128}


# -- tags ---------------------------------------------------------------------------------------
class tags(ContextEntry):  # lower-case: a context manager used like a function
    """Attribution entries in baggage: ``with costspan.tags(feature="search", **{"user.id": uid})``.

    Entries land on every span (through :class:`~costspan.CostSpanProcessor`) and travel to
    downstream services with the rest of the baggage. Baggage rides on every outgoing request:
    never put secrets in it.

    Raises:
        ValueError: a key that is not a valid baggage key, or a value over 256 characters.
    """

    def __init__(self, mapping: Mapping[str, object] | None = None, **entries: object) -> None:
        merged = {**(mapping or {}), **entries}
        if not merged:
            raise ValueError("tags() needs at least one entry")
        self.entries: dict[str, str] = {}
        for key, value in merged.items():
            if not is_baggage_key(key):
                raise ValueError(f"{key!r} is not a valid baggage key")
            if key == BUDGETS_KEY:
                raise ValueError(f"{BUDGETS_KEY} is reserved for budgets; use costspan.budget()")
            text = str(value)
            if len(text) > MAX_TAG_VALUE:
                raise ValueError(f"the value of {key!r} is over {MAX_TAG_VALUE} characters")
            self.entries[key] = text

    def __enter__(self) -> tags:
        self._attach()
        return self

    async def __aenter__(self) -> tags:
        return self.__enter__()

    def _derive(self, ctx: context.Context) -> context.Context:
        return in_front(ctx, self.entries)


# -- inbound baggage ----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class InboundBudget:
    """A budget that arrived in baggage from another service."""

    id: str
    usd: Decimal | None
    tokens: int | None
    action: Action
    name: str | None = None

    @property
    def scope_key(self) -> str:
        return f"budget:{self.id}"

    @property
    def label(self) -> str:
        """Its name from upstream (with its id: names are not unique), else its id."""
        return f"{self.name} #{self.id[:8]}" if self.name else self.id


_NAME: Final = re.compile(r"^[A-Za-z0-9._-]{1,32}$")


def baggage_name(name: str | None) -> str | None:
    """A budget's name as it travels in baggage: letters, digits, ``._-`` (others become
    ``-``), at most 32 characters; None when nothing is left."""
    if not name:
        return None
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "-", name)[:32].strip("-")
    return cleaned or None


def parse_budget_entry(entry: str) -> InboundBudget | str:
    """An inbound budget, or the reason the entry is rejected. Never raises: only ASCII digits
    and the documented grammar are accepted."""
    parts = entry.split(":")
    if len(parts) not in (4, 5):
        return "malformed"
    ident, usd_text, tokens_text, action = parts[:4]
    name = parts[4] if len(parts) == 5 else None
    if name is not None and not _NAME.match(name):
        return "bad name"
    if not _ID.match(ident):
        return "bad id"
    usd: Decimal | None = None
    if usd_text != "-":
        if not _USD.match(usd_text):
            return "bad usd"
        try:
            usd = Decimal(usd_text)
        except InvalidOperation:  # unreachable after the pattern; kept as a guard
            return "bad usd"
        if usd > MAX_USD:
            return "bad usd"
    tokens: int | None = None
    if tokens_text != "-":
        if not _DIGITS.match(tokens_text) or int(tokens_text) > MAX_TOKENS:
            return "bad tokens"
        tokens = int(tokens_text)
    if usd is None and tokens is None:
        return "no cap"
    if action not in ACTIONS:
        return "bad action"
    return InboundBudget(ident, usd, tokens, action, name)


_parsed_cache: dict[str, tuple[tuple[InboundBudget, ...], tuple[str, ...]]] = {}


def _parse_value(value: str) -> tuple[tuple[InboundBudget, ...], tuple[str, ...]]:
    """(budgets, rejection reasons) of a baggage value; memoised (a pure function of the text),
    since every call of a request carries the same value."""
    cached = _parsed_cache.get(value)
    if cached is not None:
        return cached
    found: list[InboundBudget] = []
    reasons: list[str] = []
    seen: set[str] = set()
    for entry in budget_entries(value):
        parsed = parse_budget_entry(entry)
        if isinstance(parsed, str):
            reasons.append(parsed)
        elif parsed.id not in seen:
            seen.add(parsed.id)
            found.append(parsed)
    if len(_parsed_cache) >= 1024:
        _parsed_cache.clear()
    result = _parsed_cache[value] = (tuple(found), tuple(reasons))
    return result


def inbound_budgets(
    ctx: context.Context | None = None,
    reject: Callable[[str], None] | None = None,
    local_ids: Collection[str] = (),
) -> list[InboundBudget]:
    """Budgets from baggage that were not entered in this process (``local_ids``), validated.

    Rejected entries are reported to ``reject`` with a short reason and otherwise ignored.
    """
    value = baggage.get_baggage(BUDGETS_KEY, ctx)
    if value is None:
        return []
    report: Callable[[str], None] = reject or (lambda _reason: None)
    if not isinstance(value, str) or len(value) > MAX_BUDGETS_VALUE:
        report("oversized")
        return []
    parsed, reasons = _parse_value(value)
    for reason in reasons:
        report(reason)
    found = [b for b in parsed if b.id not in local_ids]
    if len(found) > MAX_BUDGETS:
        report("too many")
        found = found[:MAX_BUDGETS]
    return found
