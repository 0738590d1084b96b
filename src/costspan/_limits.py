"""Configured limits: caps from trusted configuration, keyed by baggage values and UTC windows.

``COSTSPAN_LIMITS`` (or ``configure(limits=...)``) holds rules separated by ``;`` or newlines::

    user.id          $10/day
    tenant.id        $500/month  20000000 tokens/month
    tenant.id=acme   $2000/month
    *                $5000/day
    feature=search   $50/hour    warn
    *                $0.50/request

A rule is ``<scope> <cap> [<cap> ...] [<action>]``:

- scope: ``*`` (every call together), ``<baggage key>`` (each value of that key separately:
  every user has their own $10 a day), or ``<baggage key>=<value>`` (that value only). A call
  whose baggage lacks the key is not under that rule.
- cap: ``$<amount>/<window>`` (USD) or ``<count> tokens/<window>``; windows are ``hour``,
  ``day``, ``month`` (calendar periods in UTC) and ``request`` (one trace: every call of one
  incoming request, across services).
- action: ``block`` (the default), ``warn``, ``clamp`` or ``truncate``, as for ``budget()``.

A call must fit every rule that applies to it at once (user, tenant and global caps together).
Baggage supplies only the scope *values*; caps come only from here, so a client cannot raise one.
"""

from __future__ import annotations

import calendar
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Final
from urllib.parse import quote

from opentelemetry import baggage, trace

from costspan._money import MAX_TOKENS, cap_amount

WINDOWS: Final = ("request", "hour", "day", "month")
ACTIONS: Final = ("block", "warn", "clamp", "truncate")
GRACE_S: Final = 3 * 3600.0
"""How long a window's counters outlive it: late commits (leases, replayed outboxes) still land
in the window they were reserved in."""
REQUEST_TTL_S: Final = 86400.0
MAX_VALUE: Final = 128  # characters of a baggage value kept in a scope key; longer ones hashed

# ASCII only, everywhere: str.isdigit(), \d and int() also accept "²" and "٣".
_CAP: Final = re.compile(
    r"^(?:\$(?P<usd>[0-9]+(?:\.[0-9]+)?)|(?P<tokens>[0-9]+) *tokens?) */ *(?P<window>[a-z]+)$",
    re.ASCII,
)
_WORD: Final = re.compile(r"^[A-Za-z]+$")
_KEY: Final = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,128}$")


@dataclass(frozen=True, slots=True)
class Rule:
    """One scope and window of the configuration, with its caps."""

    key: str | None  # None: every call together
    value: str | None  # None: each value of ``key`` separately
    window: str
    usd: Decimal | None
    tokens: int | None
    action: str

    @property
    def scope(self) -> str:
        if self.key is None:
            return "*"
        return self.key if self.value is None else f"{self.key}={self.value}"

    def label(self, scope: str | None = None) -> str:
        """How refusals and spans name the rule (``scope``: the value it applied to)."""
        caps = [f"${self.usd}/{self.window}"] if self.usd is not None else []
        if self.tokens is not None:
            caps.append(f"{self.tokens} tokens/{self.window}")
        return f"limit {scope or self.scope} {' '.join(caps)}"


@dataclass(frozen=True, slots=True)
class Applied:
    """A rule as it applies to one call: the scope key of this value and window."""

    rule: Rule
    key: str
    label: str
    expires_at: float


def _window(window: str, now: float, trace_id: int) -> tuple[str, float]:
    """The window's id and the time its counters may go (end + grace)."""
    t = time.gmtime(now)
    # Epoch seconds have no leap seconds: UTC hours and days start at multiples of 3600/86400.
    if window == "hour":
        end = now - now % 3600 + 3600
        return f"h{t.tm_year:04d}{t.tm_mon:02d}{t.tm_mday:02d}{t.tm_hour:02d}", end + GRACE_S
    if window == "day":
        end = now - now % 86400 + 86400
        return f"d{t.tm_year:04d}{t.tm_mon:02d}{t.tm_mday:02d}", end + GRACE_S
    if window == "month":
        year, month = (t.tm_year + 1, 1) if t.tm_mon == 12 else (t.tm_year, t.tm_mon + 1)
        end = calendar.timegm((year, month, 1, 0, 0, 0))
        return f"m{t.tm_year:04d}{t.tm_mon:02d}", end + GRACE_S
    # request: one trace, across every service it reaches
    return f"t{trace_id:032x}", now + REQUEST_TTL_S


def scope_value(value: str) -> str:
    """A baggage value made safe for a ledger key: escaped, bounded in length.

    A long value is stored as ``#`` and its SHA-256: escaping turns every ``#`` of a raw value
    into ``%23``, so no raw value, however chosen, can name a hashed one's counter."""
    if len(value) > MAX_VALUE:
        import hashlib  # (OpenSSL: loaded for the first over-long value only)

        return "#" + hashlib.sha256(value.encode()).hexdigest()
    return quote(value, safe="@+-._~")


@dataclass(frozen=True)
class LimitTable:
    """Parsed rules, and how to find the ones that apply to a call.

    ``clock`` (seconds since the epoch) picks the windows; injectable for tests.
    """

    rules: tuple[Rule, ...] = ()
    clock: Callable[[], float] = field(default=time.time, compare=False)

    def __bool__(self) -> bool:
        return bool(self.rules)

    def applied(self, trace_id: int = 0) -> list[Applied]:
        """The rules that apply to a call made in the current context, with their scopes.

        ``trace_id`` is the call's own trace (its span's), which names its request window; 0
        falls back to the current span's trace."""
        if not self.rules:
            return []
        entries = baggage.get_all()
        now = self.clock()
        trace_id = trace_id or trace.get_current_span().get_span_context().trace_id
        out: list[Applied] = []
        for rule in self.rules:
            if rule.key is None:
                selector = "*"
            else:
                value = entries.get(rule.key)
                if not isinstance(value, str) or not value:
                    continue
                if rule.value is not None and value != rule.value:
                    continue
                selector = f"{rule.key}={scope_value(value)}"
            if rule.window == "request" and not trace_id:
                continue  # no trace, no request to scope it to
            window_id, expires_at = _window(rule.window, now, trace_id)
            key = f"limit:{selector}:{window_id}"
            out.append(Applied(rule, key, rule.label(selector), expires_at))
        return out

    @classmethod
    def parse(
        cls,
        text: str | Iterable[str],
        where: str = "limits",
        clock: Callable[[], float] = time.time,
    ) -> LimitTable:
        """Parse the rule grammar (module docstring); ``ValueError`` names the bad rule."""
        lines = re.split(r"[;\n]", text) if isinstance(text, str) else list(text)
        merged: dict[tuple[str | None, str | None, str], Rule] = {}
        for raw in lines:
            if not isinstance(raw, str):  # from user code: checked, whatever the annotation
                raise ValueError(f"{where}: rules must be strings, not {raw!r}")
            rule_text = raw.split("#", 1)[0].strip()
            if not rule_text:
                continue
            for rule in _parse_rule(rule_text, where):
                slot = (rule.key, rule.value, rule.window)
                previous = merged.get(slot)
                if previous is None:
                    merged[slot] = rule
                    continue
                if previous.action != rule.action:
                    raise ValueError(
                        f"{where}: {rule_text!r} gives {rule.scope} per {rule.window} a second "
                        f"action ({rule.action}, not {previous.action})"
                    )
                if (previous.usd is not None and rule.usd is not None) or (
                    previous.tokens is not None and rule.tokens is not None
                ):
                    raise ValueError(
                        f"{where}: {rule_text!r} repeats a cap already set by another rule"
                    )
                merged[slot] = Rule(
                    rule.key,
                    rule.value,
                    rule.window,
                    previous.usd if previous.usd is not None else rule.usd,
                    previous.tokens if previous.tokens is not None else rule.tokens,
                    rule.action,
                )
        return cls(tuple(merged.values()), clock)


def _parse_rule(text: str, where: str) -> list[Rule]:
    words = text.split()
    scope, rest = words[0], words[1:]
    action = "block"
    if rest and rest[-1].lower() in ACTIONS:
        action = rest.pop().lower()
    elif rest and _WORD.match(rest[-1]) and rest[-1].lower() != "tokens":
        raise ValueError(
            f"{where}: {text!r}: unknown action {rest[-1]!r}; use one of {', '.join(ACTIONS)}"
        )
    key: str | None
    value: str | None = None
    if scope == "*":
        key = None
    else:
        key, sep, value_text = scope.partition("=")
        if sep:
            if not value_text:
                raise ValueError(f"{where}: {text!r}: {scope!r} names a key but no value")
            value = value_text
        if not _KEY.match(key):
            raise ValueError(f"{where}: {text!r}: {key!r} is not a baggage key")
    # Re-join so "2000000 tokens/day" (two words) reads as one cap.
    caps = re.findall(r"\$?[0-9.]+ *(?:tokens? *)?/ *\S+|\S+", " ".join(rest), re.ASCII)
    if not caps:
        raise ValueError(
            f"{where}: {text!r} has no cap; write e.g. '{scope} $10/day' or "
            f"'{scope} 100000 tokens/day'"
        )
    rules: list[Rule] = []
    for cap in caps:
        match = _CAP.match(cap.strip())
        if match is None:
            raise ValueError(
                f"{where}: {text!r}: {cap!r} is not a cap; write $<amount>/<window> or "
                f"<count> tokens/<window>, window one of {', '.join(WINDOWS)}"
            )
        window = match["window"]
        if window not in WINDOWS:
            raise ValueError(
                f"{where}: {text!r}: unknown window {window!r}; use one of {', '.join(WINDOWS)}"
            )
        usd = None if match["usd"] is None else cap_amount(match["usd"], f"{where}: {text!r}")
        tokens = None if match["tokens"] is None else int(match["tokens"])
        if (usd is not None and usd <= 0) or tokens == 0:
            raise ValueError(f"{where}: {text!r}: a cap must be more than zero")
        if tokens is not None and tokens > MAX_TOKENS:
            raise ValueError(f"{where}: {text!r}: at most 10**15 tokens fit in a ledger")
        rules.append(Rule(key, value, window, usd, tokens, action))
    return rules
