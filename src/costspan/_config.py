"""costspan's settings: environment variables, ``configure()`` arguments, and their validation.

Each setting is declared once in ``_SETTINGS`` with its environment variable, a parser for the
variable's text and a validator for a Python argument. Code arguments win over environment
variables. A bad value is a ``ValueError`` naming the variable or argument and what it accepts,
raised when costspan is configured or instrumented, never in the middle of an LLM call.

This module only parses and validates; the settings in force belong to the process's runtime
(:mod:`costspan._runtime`).
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path
from typing import Any, Final, Literal, cast

from costspan._limits import LimitTable
from costspan._pricing import PriceOverride, parse_overrides
from costspan.ledgers._open import LedgerSpec, parse_ledger_url
from costspan.ledgers._protocol import FAIL_MODES, FailMode, Ledger

_logger = logging.getLogger(__name__)

COSTSPAN_INJECT_STREAM_USAGE: Final = "COSTSPAN_INJECT_STREAM_USAGE"
COSTSPAN_PROVIDER_HOSTS: Final = "COSTSPAN_PROVIDER_HOSTS"
COSTSPAN_PRICES: Final = "COSTSPAN_PRICES"
COSTSPAN_ON_UNPRICED: Final = "COSTSPAN_ON_UNPRICED"
COSTSPAN_ATTRIBUTION_KEYS: Final = "COSTSPAN_ATTRIBUTION_KEYS"
COSTSPAN_METRIC_TAGS: Final = "COSTSPAN_METRIC_TAGS"
COSTSPAN_OPENLIT_COST_ATTRIBUTE: Final = "COSTSPAN_OPENLIT_COST_ATTRIBUTE"
COSTSPAN_TRUST_INBOUND_BUDGETS: Final = "COSTSPAN_TRUST_INBOUND_BUDGETS"
COSTSPAN_LEDGER: Final = "COSTSPAN_LEDGER"
COSTSPAN_LIMITS: Final = "COSTSPAN_LIMITS"
COSTSPAN_FAIL_MODE: Final = "COSTSPAN_FAIL_MODE"
COSTSPAN_RECORDS: Final = "COSTSPAN_RECORDS"
COSTSPAN_MAX_RECORDS: Final = "COSTSPAN_MAX_RECORDS"
COSTSPAN_OUTBOX: Final = "COSTSPAN_OUTBOX"
COSTSPAN_DEFAULT_MAX_OUTPUT_TOKENS: Final = "COSTSPAN_DEFAULT_MAX_OUTPUT_TOKENS"
COSTSPAN_UNCAPPED_OUTPUT: Final = "COSTSPAN_UNCAPPED_OUTPUT"
COSTSPAN_MAX_INPUT_TOKENS: Final = "COSTSPAN_MAX_INPUT_TOKENS"
COSTSPAN_LEASE_SECONDS: Final = "COSTSPAN_LEASE_SECONDS"
COSTSPAN_GATE_FOREIGN_SPANS: Final = "COSTSPAN_GATE_FOREIGN_SPANS"
COSTSPAN_OTHER_OPENAI_INSTRUMENTORS: Final = "COSTSPAN_OTHER_OPENAI_INSTRUMENTORS"
OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT: Final = (
    "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
)

DEFAULT_ATTRIBUTION_KEYS: Final = ("user.id", "tenant.id", "feature", "session.id", "request.id")

_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off", ""})


class ContentCapture(Enum):
    """Whether message content goes on spans."""

    NONE = "none"
    SPAN = "span"


OnUnpriced = Literal["warn", "raise"]
UncappedOutput = Literal["cap", "reserve"]
OtherInstrumentors = Literal["disable", "keep"]


@dataclass(frozen=True, slots=True)
class Settings:
    """A complete, validated set of settings. Replaced as a whole, never mutated."""

    inject_stream_usage: bool = True
    provider_hosts: Mapping[str, str] = field(default_factory=dict[str, str])
    capture_content: ContentCapture = ContentCapture.NONE
    prices: Mapping[str, PriceOverride] = field(default_factory=dict[str, PriceOverride])
    on_unpriced: OnUnpriced = "warn"
    attribution_keys: tuple[str, ...] = DEFAULT_ATTRIBUTION_KEYS
    metric_tags: tuple[str, ...] = ()
    openlit_cost_attribute: bool = False
    trust_inbound_budgets: bool = True
    ledger: LedgerSpec | Ledger = field(default_factory=lambda: LedgerSpec("memory"))
    limits: LimitTable = field(default_factory=LimitTable)
    fail_mode: FailMode = "local"
    records: str | None = None
    max_records: int = 10_000
    outbox: str | None = ""
    """The durable outbox file: "" for the default (in the user's state directory), None for
    none (settlements a shared ledger could not take wait in memory only)."""
    default_max_output_tokens: int = 4096
    """The output cap a request under a budget or limit is given when it sets none."""
    uncapped_output: UncappedOutput = "cap"
    """``cap``: give an uncapped budgeted request that cap; ``reserve``: leave the request alone
    and reserve the most the model can answer (its context window less the input)."""
    max_input_tokens: int = 1_000_000
    """The input bound of a request with parts costspan cannot count (a file, stored history)
    for a model whose context window genai-prices does not know."""
    lease_seconds: float = 300.0
    """How long a hold lives unless renewed; calls in flight renew theirs."""
    gate_foreign_spans: bool = True
    """Whether ``CostSpanProcessor`` reserves at the start of other instrumentations' GenAI spans
    and refuses those with no room (``False``: it only charges them when they end)."""
    other_openai_instrumentors: OtherInstrumentors = "disable"
    """What costspan's distro does with other instrumentors of openai under
    ``opentelemetry-instrument``: ``disable`` them (one span per call) or ``keep`` them."""


# -- parsers of environment text ----------------------------------------------------------------
def parse_bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"{name}={raw!r} is not a boolean; use true or false")


def parse_provider_hosts(name: str, raw: str) -> dict[str, str]:
    result: dict[str, str] = {}
    for item in raw.split(","):
        if not item.strip():
            continue
        host, sep, provider = item.partition("=")
        if not sep or not host.strip() or not provider.strip():
            raise ValueError(
                f"{name}: {item.strip()!r} is not host=provider (example: llm.internal=groq)"
            )
        result[host.strip().lower()] = provider.strip()
    return result


def parse_capture_content(name: str, raw: str) -> ContentCapture:
    value = raw.strip().lower()
    if value in {"span_only", "span_and_event", "true"}:
        return ContentCapture.SPAN
    if value not in {"", "no_content", "false", "event_only"}:
        # The official GenAI stack warns and falls back for unknown values; so do we, because
        # this variable is shared with other instrumentations that may accept more values.
        _logger.warning(
            "%s=%r is not one of span_only, span_and_event, event_only, no_content; "
            "message content will not be captured",
            name,
            raw,
        )
    return ContentCapture.NONE


def parse_prices(name: str, raw: str) -> dict[str, PriceOverride]:
    text = raw.strip()
    if not text:
        return {}
    where = name
    if not text.startswith("{"):
        path = Path(text).expanduser()
        try:
            text = path.read_text()
        except OSError as exc:
            raise ValueError(
                f"{name}={raw!r}: not inline JSON and not a readable file ({exc.strerror})"
            ) from exc
        where = f"{name} file {path}"
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{where}: invalid JSON ({exc.msg} at line {exc.lineno})") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a JSON object of model -> prices")
    return parse_overrides(cast("dict[str, Any]", data), where)


def parse_on_unpriced(name: str, raw: str) -> OnUnpriced:
    value = raw.strip().lower()
    if value == "warn":
        return "warn"
    if value == "raise":
        return "raise"
    raise ValueError(f"{name}={raw!r}: use warn or raise")


def parse_keys(name: str, raw: str) -> tuple[str, ...]:
    keys = tuple(k.strip() for k in raw.split(",") if k.strip())
    for key in keys:
        if len(key) > 128 or any(c.isspace() or c in '",;\\=' for c in key):
            raise ValueError(f"{name}: {key!r} is not a usable baggage key")
    return keys


def parse_limits(name: str, raw: str) -> LimitTable:
    return LimitTable.parse(raw, name)


def parse_fail_mode(name: str, raw: str) -> FailMode:
    value = raw.strip().lower()
    for mode in FAIL_MODES:
        if value == mode:
            return mode
    raise ValueError(f"{name}={raw!r}: use {', '.join(FAIL_MODES)}")


def parse_records(name: str, raw: str) -> str | None:
    text = raw.strip()
    if not text:
        return None
    path = Path(text).expanduser()
    if path.is_dir():
        raise ValueError(f"{name}={raw!r} is a directory; give the SQLite file to keep records in")
    return str(path)


def _whole(name: str, raw: str, low: int, high: int, what: str) -> int:
    text = raw.strip()
    # ASCII digits only: int() would also take "٣" and "1_000".
    if not (text.isascii() and text.isdigit()) or len(text) > 12:
        raise ValueError(f"{name}={raw!r} is not a whole number")
    value = int(text)
    if not low <= value <= high:
        raise ValueError(f"{name}={raw!r}: {what}")
    return value


def parse_output_tokens(name: str, raw: str) -> int:
    return _whole(name, raw, 16, 1_000_000, "give 16 to 1,000,000 tokens")


def parse_input_tokens(name: str, raw: str) -> int:
    return _whole(name, raw, 1, 100_000_000, "give 1 to 100,000,000 tokens")


def parse_uncapped(name: str, raw: str) -> UncappedOutput:
    value = raw.strip().lower()
    if value == "cap":
        return "cap"
    if value == "reserve":
        return "reserve"
    raise ValueError(f"{name}={raw!r}: use cap or reserve")


def parse_lease(name: str, raw: str) -> float:
    text = raw.strip()
    if not re.fullmatch(r"[0-9]{1,6}(?:\.[0-9]{1,3})?", text, re.ASCII):
        raise ValueError(f"{name}={raw!r} is not a number of seconds")
    value = float(text)
    if not 1.0 <= value <= 86400.0:
        raise ValueError(f"{name}={raw!r}: give 1 to 86400 seconds")
    return value


def parse_other_instrumentors(name: str, raw: str) -> OtherInstrumentors:
    value = raw.strip().lower()
    if value == "disable":
        return "disable"
    if value == "keep":
        return "keep"
    raise ValueError(f"{name}={raw!r}: use disable or keep")


def parse_max_records(name: str, raw: str) -> int:
    text = raw.strip()
    # ASCII digits only: int() would also take "٣" and "1_000".
    if not (text.isascii() and text.isdigit()) or len(text) > 12:
        raise ValueError(f"{name}={raw!r} is not a whole number")
    value = int(text)
    if not 1 <= value <= 10_000_000:
        raise ValueError(f"{name}={raw!r}: keep between 1 and 10,000,000 records")
    return value


def parse_outbox(name: str, raw: str) -> str | None:
    text = raw.strip()
    if text.lower() in ("off", "none", "false", "0"):
        return None
    if not text or text.lower() == "default":
        return ""
    path = Path(text).expanduser()
    if path.is_dir():
        raise ValueError(f"{name}={raw!r} is a directory; give the file to keep the outbox in")
    return str(path)


def outbox_path(settings: Settings) -> Path | None:
    """Where a shared ledger keeps settlements it could not write yet (None: in memory)."""
    if settings.outbox is None:
        return None
    if settings.outbox:
        return Path(settings.outbox)
    from costspan.ledgers._outbox import default_path  # (sqlite3: imported when needed)

    return default_path()


def records_path(settings: Settings) -> str | None:
    """Where spend records are stored durably: COSTSPAN_RECORDS, else the SQLite ledger's file."""
    if settings.records:
        return settings.records
    ledger = settings.ledger
    if isinstance(ledger, LedgerSpec) and ledger.engine == "sqlite":
        return ledger.target
    return None


# -- validators of Python arguments -------------------------------------------------------------
def _check_bool(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, not {value!r}")
    return value


def _check_hosts(name: str, value: object) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise ValueError(f"{name} must map host names to provider names (str -> str)")
    hosts = cast("Mapping[object, object]", value)
    if not all(isinstance(k, str) and isinstance(v, str) and k and v for k, v in hosts.items()):
        raise ValueError(f"{name} must map host names to provider names (str -> str)")
    return {str(k).lower(): str(v) for k, v in hosts.items()}


def _check_capture(name: str, value: object) -> ContentCapture:
    if isinstance(value, bool):
        return ContentCapture.SPAN if value else ContentCapture.NONE
    if isinstance(value, ContentCapture):
        return value
    raise ValueError(f"{name} must be True or False, not {value!r}")


def _check_prices(name: str, value: object) -> dict[str, PriceOverride]:
    if not isinstance(value, Mapping):
        raise ValueError(
            f"{name} must map model names to {{'input_mtok': ..., 'output_mtok': ...}}"
        )
    return parse_overrides(cast("Mapping[str, Any]", value), name)


def _check_on_unpriced(name: str, value: object) -> OnUnpriced:
    if not isinstance(value, str):
        raise ValueError(f"{name} must be 'warn' or 'raise', not {value!r}")
    return parse_on_unpriced(name, value)


def _check_keys(name: str, value: object) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise ValueError(f"{name} must be a list of baggage keys, not {value!r}")
    keys = cast("list[object] | tuple[object, ...]", value)
    if not all(isinstance(k, str) for k in keys):
        raise ValueError(f"{name} must be a list of baggage keys, not {value!r}")
    return parse_keys(name, ",".join(str(k) for k in keys))


def _check_ledger(name: str, value: object) -> LedgerSpec | Ledger:
    if isinstance(value, str):
        return parse_ledger_url(name, value)
    if isinstance(value, Ledger):
        return value
    raise ValueError(
        f"{name} must be a ledger URL (memory, sqlite:///..., redis://...) or a Ledger"
    )


def _check_limits(name: str, value: object) -> LimitTable:
    if isinstance(value, LimitTable):
        return value
    if isinstance(value, str):
        return LimitTable.parse(value, name)
    if isinstance(value, list | tuple) and all(
        isinstance(v, str) for v in cast("list[object]", value)
    ):
        return LimitTable.parse(cast("list[str]", value), name)
    raise ValueError(f"{name} must be rules as one string or a list of strings, not {value!r}")


def _check_records(name: str, value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str | Path):
        raise ValueError(f"{name} must be the path of a SQLite file, not {value!r}")
    return parse_records(name, str(value))


def _check_max_records(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be a whole number, not {value!r}")
    return parse_max_records(name, str(value))


def _check_whole(parse: Callable[[str, str], int]) -> Callable[[str, object], int]:
    def check(name: str, value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name} must be a whole number, not {value!r}")
        return parse(name, str(value))

    return check


def _check_uncapped(name: str, value: object) -> UncappedOutput:
    if not isinstance(value, str):
        raise ValueError(f"{name} must be 'cap' or 'reserve', not {value!r}")
    return parse_uncapped(name, value)


def _check_other_instrumentors(name: str, value: object) -> OtherInstrumentors:
    if not isinstance(value, str):
        raise ValueError(f"{name} must be 'disable' or 'keep', not {value!r}")
    return parse_other_instrumentors(name, value)


def _check_lease(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number of seconds, not {value!r}")
    if not 1.0 <= float(value) <= 86400.0:
        raise ValueError(f"{name}={value!r}: give 1 to 86400 seconds")
    return float(value)


def _check_outbox(name: str, value: object) -> str | None:
    if value is None or value is False:
        return None
    if not isinstance(value, str | Path):
        raise ValueError(f"{name} must be a file path, 'off' or None, not {value!r}")
    return parse_outbox(name, str(value))


def _check_fail_mode(name: str, value: object) -> FailMode:
    if not isinstance(value, str):
        raise ValueError(f"{name} must be one of {', '.join(FAIL_MODES)}, not {value!r}")
    return parse_fail_mode(name, value)


@dataclass(frozen=True)
class _Setting:
    env: str
    parse: Callable[[str, str], Any]
    check: Callable[[str, object], Any]


_SETTINGS: Final[dict[str, _Setting]] = {
    "inject_stream_usage": _Setting(COSTSPAN_INJECT_STREAM_USAGE, parse_bool, _check_bool),
    "provider_hosts": _Setting(COSTSPAN_PROVIDER_HOSTS, parse_provider_hosts, _check_hosts),
    "capture_content": _Setting(
        OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT, parse_capture_content, _check_capture
    ),
    "prices": _Setting(COSTSPAN_PRICES, parse_prices, _check_prices),
    "on_unpriced": _Setting(COSTSPAN_ON_UNPRICED, parse_on_unpriced, _check_on_unpriced),
    "attribution_keys": _Setting(COSTSPAN_ATTRIBUTION_KEYS, parse_keys, _check_keys),
    "metric_tags": _Setting(COSTSPAN_METRIC_TAGS, parse_keys, _check_keys),
    "openlit_cost_attribute": _Setting(COSTSPAN_OPENLIT_COST_ATTRIBUTE, parse_bool, _check_bool),
    "trust_inbound_budgets": _Setting(COSTSPAN_TRUST_INBOUND_BUDGETS, parse_bool, _check_bool),
    "ledger": _Setting(COSTSPAN_LEDGER, parse_ledger_url, _check_ledger),
    "limits": _Setting(COSTSPAN_LIMITS, parse_limits, _check_limits),
    "fail_mode": _Setting(COSTSPAN_FAIL_MODE, parse_fail_mode, _check_fail_mode),
    "records": _Setting(COSTSPAN_RECORDS, parse_records, _check_records),
    "max_records": _Setting(COSTSPAN_MAX_RECORDS, parse_max_records, _check_max_records),
    "outbox": _Setting(COSTSPAN_OUTBOX, parse_outbox, _check_outbox),
    "default_max_output_tokens": _Setting(
        COSTSPAN_DEFAULT_MAX_OUTPUT_TOKENS, parse_output_tokens, _check_whole(parse_output_tokens)
    ),
    "uncapped_output": _Setting(COSTSPAN_UNCAPPED_OUTPUT, parse_uncapped, _check_uncapped),
    "max_input_tokens": _Setting(
        COSTSPAN_MAX_INPUT_TOKENS, parse_input_tokens, _check_whole(parse_input_tokens)
    ),
    "lease_seconds": _Setting(COSTSPAN_LEASE_SECONDS, parse_lease, _check_lease),
    "gate_foreign_spans": _Setting(COSTSPAN_GATE_FOREIGN_SPANS, parse_bool, _check_bool),
    "other_openai_instrumentors": _Setting(
        COSTSPAN_OTHER_OPENAI_INSTRUMENTORS, parse_other_instrumentors, _check_other_instrumentors
    ),
}


def settings_from_env(env: Mapping[str, str] | None = None) -> Settings:
    """Build settings from environment variables; raises ``ValueError`` on a bad value."""
    settings, errors = checked_env(env)
    if errors:
        raise errors[0]
    return settings


def checked_env(env: Mapping[str, str] | None = None) -> tuple[Settings, list[ValueError]]:
    """Settings from every valid variable, and the errors of the others (for a checkup that
    reports them all rather than stopping at the first)."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    errors: list[ValueError] = []
    for name, setting in _SETTINGS.items():
        if setting.env in env:
            try:
                values[name] = setting.parse(setting.env, env[setting.env])
            except ValueError as exc:
                errors.append(exc)
    return replace(Settings(), **values), errors


def with_overrides(base: Settings, overrides: Mapping[str, Any]) -> Settings:
    """``base`` with validated ``configure()`` arguments applied; TypeError for unknown names."""
    unknown = sorted(set(overrides) - set(_SETTINGS))
    if unknown:
        raise TypeError(
            f"configure() got unknown setting(s) {', '.join(unknown)}; "
            f"known settings: {', '.join(sorted(_SETTINGS))}"
        )
    values = {name: _SETTINGS[name].check(name, value) for name, value in overrides.items()}
    return replace(base, **values)
