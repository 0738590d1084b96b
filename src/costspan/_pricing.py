"""Token usage to USD: genai-prices for the tables, price overrides, and a verified rate cache.

``genai_prices.calc_price`` is exact (cached input, cache writes, reasoning, dated ids, historic
and time-of-day prices, service tiers, long-context tiers) but costs about 50-100 µs a call. Within
one price and one long-context tier, a price is linear in each token count, so costspan asks
genai-prices for the per-token rate of each count once (a handful of ``calc_price`` probes), then
prices every later call with five Decimal multiplications. Rates are cached per provider, model,
service tier, long-context tier and UTC minute (time-of-day prices change on the minute).

Every cached rate set is checked against ``calc_price`` on a mixed usage before it is trusted; a
model whose price is not linear in these counts (a unit costspan does not probe) is priced by
``calc_price`` on every call instead. Nothing here re-implements genai-prices' units or tiers:
the tier *starts* decide which probe set applies, the prices themselves always come from
genai-prices.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Final, Literal

from costspan._money import usd_amount
from costspan._tokens import is_openai_model
from costspan._usage import TokenUsage

_logger = logging.getLogger(__name__)

MTOK: Final = Decimal(1_000_000)
_ZERO: Final = Decimal(0)
_TOLERANCE: Final = Decimal("1e-12")
_CACHE_SIZE: Final = 4096
_NS_PER_MINUTE: Final = 60_000_000_000
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)

# gen_ai.provider.name -> genai-prices provider id.
PROVIDER_IDS: Final[Mapping[str, str]] = {
    "openai": "openai",
    "azure.ai.openai": "azure",
    "azure.ai.inference": "azure",
    "anthropic": "anthropic",
    "aws.bedrock": "aws",
    "cohere": "cohere",
    "deepseek": "deepseek",
    "gcp.gemini": "google",
    "gcp.vertex_ai": "google",
    "gcp.gen_ai": "google",
    "groq": "groq",
    "mistral_ai": "mistral",
    "perplexity": "perplexity",
    "x_ai": "x-ai",
    "moonshot_ai": "moonshotai",
}

PriceSource = Literal["genai-prices", "override", "provider"]

WARM_MODELS: Final = ("gpt-4o-mini",)
"""Priced at start-up, in the background: loading genai-prices' tables is what the first priced
call would otherwise wait for (the rates of each model are probed on its first call)."""


@dataclass(frozen=True, slots=True)
class Rates:
    """USD per token for each priced count, and where the price came from."""

    input: Decimal
    cache_read: Decimal
    cache_write: Decimal
    output: Decimal
    reasoning: Decimal
    provider: str
    model: str
    source: PriceSource


@dataclass(frozen=True, slots=True)
class Cost:
    """The price of one call. ``total`` is exact; the parts add up to it (reasoning is a part of
    output and is reported, not added)."""

    total: Decimal
    input: Decimal = _ZERO
    cached_input: Decimal = _ZERO
    cache_write: Decimal = _ZERO
    output: Decimal = _ZERO
    reasoning: Decimal = _ZERO
    source: PriceSource = "genai-prices"
    provider: str | None = None
    model: str | None = None


@dataclass(frozen=True, slots=True)
class PriceOverride:
    """A price for a model no table knows, in USD per million tokens."""

    input_mtok: Decimal
    output_mtok: Decimal
    cache_read_mtok: Decimal | None = None
    cache_write_mtok: Decimal | None = None

    def rates(self, model: str) -> Rates:
        per_input = self.input_mtok / MTOK
        per_output = self.output_mtok / MTOK
        return Rates(
            input=per_input,
            cache_read=(self.cache_read_mtok / MTOK)
            if self.cache_read_mtok is not None
            else per_input,
            cache_write=(self.cache_write_mtok / MTOK)
            if self.cache_write_mtok is not None
            else per_input,
            output=per_output,
            reasoning=per_output,
            provider="override",
            model=model,
            source="override",
        )


_OVERRIDE_KEYS: Final = frozenset(
    {"input_mtok", "output_mtok", "cache_read_mtok", "cache_write_mtok"}
)


def parse_overrides(raw: Mapping[str, Any], where: str) -> dict[str, PriceOverride]:
    """Validate ``{model: {input_mtok: ..., output_mtok: ...}}``; ValueError names the problem."""
    result: dict[str, PriceOverride] = {}
    for model, spec in raw.items():
        if not isinstance(spec, Mapping):
            raise ValueError(f"{where}: price of {model!r} must be a mapping of *_mtok prices")
        spec_map: Mapping[str, Any] = spec  # pyright: ignore[reportUnknownVariableType]
        unknown = sorted(set(spec_map) - _OVERRIDE_KEYS)
        if unknown:
            raise ValueError(
                f"{where}: unknown price key(s) {', '.join(unknown)} for {model!r}; "
                f"use {', '.join(sorted(_OVERRIDE_KEYS))} (USD per million tokens)"
            )
        values = {
            key: usd_amount(value, f"{where}: {model!r} {key}") for key, value in spec_map.items()
        }
        for required in ("input_mtok", "output_mtok"):
            if required not in values:
                raise ValueError(f"{where}: price of {model!r} needs {required}")
        result[str(model).lower()] = PriceOverride(**values)
    return result


def _counts(usage: TokenUsage) -> tuple[int, int, int, int, int]:
    """(input, cache read, cache write, output, reasoning), with counts a provider reported
    inconsistently clamped (cache reads beyond the input, reasoning beyond the output) rather
    than priced negative or rejected."""
    total_in = usage.input_tokens or 0
    cache_read = min(usage.cache_read_tokens or 0, total_in)
    cache_write = min(usage.cache_write_tokens or 0, total_in - cache_read)
    total_out = usage.output_tokens or 0
    return total_in, cache_read, cache_write, total_out, min(usage.reasoning_tokens or 0, total_out)


def total_from_rates(rates: Rates, input_tokens: int, output_tokens: int) -> Decimal:
    """What :func:`cost_from_rates` totals for a usage with no cache and no reasoning, without
    building the usage or the cost (a budget's estimate, on every call): the same operations,
    so the same Decimal."""
    uncached = rates.input * input_tokens
    cached = rates.cache_read * 0
    written = rates.cache_write * 0
    output = rates.output * output_tokens + rates.reasoning * 0
    return uncached + cached + written + output


def cost_from_rates(rates: Rates, usage: TokenUsage) -> Cost:
    """Price a usage with linear rates."""
    total_in, cache_read, cache_write, total_out, reasoning = _counts(usage)
    uncached = rates.input * (total_in - cache_read - cache_write)
    cached = rates.cache_read * cache_read
    written = rates.cache_write * cache_write
    reasoned = rates.reasoning * reasoning
    output = rates.output * (total_out - reasoning) + reasoned
    return Cost(
        total=uncached + cached + written + output,
        input=uncached,
        cached_input=cached,
        cache_write=written,
        output=output,
        reasoning=reasoned,
        source=rates.source,
        provider=rates.provider,
        model=rates.model,
    )


class _Slow:
    """Marker: this model's price must be computed by calc_price on every call."""

    __slots__ = ("model", "provider")

    def __init__(self, provider: str, model: str) -> None:
        self.provider = provider
        self.model = model


class _Unpriced:
    __slots__ = ()


_UNPRICED: Final = _Unpriced()
_UNKNOWN_WINDOW: Final = object()
_Entry = Rates | _Slow | _Unpriced


def _usage(**counts: int) -> Any:
    from genai_prices import Usage

    return Usage(**{k: v for k, v in counts.items() if v})


def _tier_starts(model_price: object) -> tuple[int, ...]:
    starts: set[int] = set()
    for value in vars(model_price).values():
        for tier in getattr(value, "tiers", None) or ():
            start = getattr(tier, "start", None)
            if isinstance(start, int):
                starts.add(start)
    return tuple(sorted(starts))


class Pricer:
    """Prices usage; thread-safe; one per process is enough."""

    def __init__(self, overrides: Mapping[str, PriceOverride] | None = None) -> None:
        self.overrides: dict[str, PriceOverride] = dict(overrides or {})
        self._entries: dict[tuple[Any, ...], _Entry] = {}
        self._tiers: dict[tuple[Any, ...], tuple[int, ...]] = {}
        self._windows: dict[tuple[str, str], int | None] = {}
        self._lock = threading.Lock()

    # -- public ------------------------------------------------------------------------------
    def price(
        self,
        usage: TokenUsage,
        *,
        models: tuple[str | None, ...],
        provider: str,
        when_ns: int,
        service_tier: str | None = None,
    ) -> Cost | None:
        """The cost of ``usage``, or None when no model in ``models`` has a price.

        ``models`` are tried in order (the response's dated id first, then the requested id).
        ``when_ns`` is the request time (Unix ns, UTC): it selects historic and time-of-day
        prices. A cost the provider reported itself wins over any table.
        """
        if usage.reported_cost is not None:
            return Cost(total=usage.reported_cost, source="provider", provider=provider)
        if self.overrides:
            for model in models:
                override = self.overrides.get(model.lower()) if model else None
                if override is not None:
                    return cost_from_rates(override.rates(model or ""), usage)
        for model in models:
            if not model:
                continue
            cost = self._table_price(usage, model, provider, when_ns, service_tier)
            if cost is not None:
                return cost
        return None

    def total(
        self, input_tokens: int, output_tokens: int, *, model: str, provider: str, when_ns: int
    ) -> Decimal | None:
        """``price(TokenUsage(input_tokens, output_tokens), models=(model,), ...).total`` (None:
        no price), without the objects: a budget prices its estimate on every call."""
        if input_tokens < 0 or output_tokens < 0:  # what _counts() would clamp: the slow way
            return self._slow_total(input_tokens, output_tokens, model, provider, when_ns)
        if self.overrides and model:
            override = self.overrides.get(model.lower())
            if override is not None:
                return total_from_rates(override.rates(model), input_tokens, output_tokens)
        if not model:
            return None
        base_key = (provider, model, None, when_ns // _NS_PER_MINUTE)
        starts = self._tiers.get(base_key)
        if starts is not None:
            bucket = sum(1 for start in starts if input_tokens > start) if starts else 0
            entry = self._entries.get((*base_key, bucket))
            if isinstance(entry, Rates):
                return total_from_rates(entry, input_tokens, output_tokens)
        return self._slow_total(input_tokens, output_tokens, model, provider, when_ns)

    def _slow_total(
        self, input_tokens: int, output_tokens: int, model: str, provider: str, when_ns: int
    ) -> Decimal | None:
        """:meth:`total` through :meth:`price` (the first call of a model, odd counts)."""
        usage = TokenUsage(input_tokens, output_tokens)
        cost = self.price(usage, models=(model,), provider=provider, when_ns=when_ns)
        return None if cost is None else cost.total

    def warm(self, models: tuple[str, ...] = WARM_MODELS, provider: str = "openai") -> None:
        """Load genai-prices' tables and the rates of ``models`` now (costspan does it in the
        background at start-up, so the first call does not). Never raises."""
        now = time.time_ns()
        for model in models:
            try:
                self.price(TokenUsage(1, 1), models=(model,), provider=provider, when_ns=now)
            except Exception:
                _logger.debug("could not warm the price of %s", model, exc_info=True)

    def context_window(self, model: str, provider: str) -> int | None:
        """The model's context window (input and output together), as genai-prices records it;
        None when it does not know the model or its window."""
        key = (provider, model)
        found = self._windows.get(key, _UNKNOWN_WINDOW)
        if found is not _UNKNOWN_WINDOW:
            return found  # pyright: ignore[reportReturnType]
        window: int | None = None
        if model.lower() not in self.overrides:
            try:
                now = time.time_ns()
                probe = self._calc_raw(_usage(input_tokens=1), model, provider, now, None)
                value = getattr(probe.model, "context_window", None)
                window = value if isinstance(value, int) and value > 0 else None
            except Exception:
                window = None
        with self._lock:
            if len(self._windows) >= _CACHE_SIZE:
                self._windows.clear()
            self._windows[key] = window
        return window

    # -- the rate cache ----------------------------------------------------------------------
    def _table_price(
        self, usage: TokenUsage, model: str, provider: str, when_ns: int, tier: str | None
    ) -> Cost | None:
        context = tier if tier and tier not in ("default", "auto") else None
        base_key = (provider, model, context, when_ns // _NS_PER_MINUTE)
        starts = self._tiers.get(base_key)
        if starts is None:
            # The load's own tier starts: a full cache cleared while loading forgets them.
            entry, starts = self._load(base_key, 0, when_ns)
            if isinstance(entry, _Unpriced):
                return None
        bucket = sum(1 for start in starts if (usage.input_tokens or 0) > start)
        # A plain dict read is atomic under the GIL: the hot path takes no lock.
        entry = self._entries.get((*base_key, bucket))
        if entry is None:
            entry = self._load(base_key, bucket, when_ns)[0]
        if isinstance(entry, Rates):
            return cost_from_rates(entry, usage)
        if isinstance(entry, _Slow):
            return self._calc(usage, entry.model, provider, when_ns, context)
        return None

    def _store(
        self, base_key: tuple[Any, ...], bucket: int, entry: _Entry, starts: tuple[int, ...]
    ) -> tuple[_Entry, tuple[int, ...]]:
        with self._lock:
            # Keys carry the UTC minute, so old ones go stale; starting over when full is
            # simpler than LRU bookkeeping on every hit and costs one reload per live model.
            if len(self._entries) >= _CACHE_SIZE:
                self._entries.clear()
                self._tiers.clear()
            # The tier starts after the entry, in one step: a reader that finds the starts
            # finds the entries they lead to, or loads them (never a bucket of another size).
            self._entries[(*base_key, bucket)] = entry
            self._tiers[base_key] = starts
        return entry, starts

    def _load(
        self, base_key: tuple[Any, ...], bucket: int, when_ns: int
    ) -> tuple[_Entry, tuple[int, ...]]:
        """Probe and keep the rates of one tier; returns them with the model's tier starts."""
        provider, model, context = base_key[0], base_key[1], base_key[2]
        try:
            first = self._calc_raw(_usage(input_tokens=1), model, provider, when_ns, context)
        except LookupError:
            return self._store(base_key, 0, _UNPRICED, ())
        starts = _tier_starts(first.model_price)
        try:
            entry = self._probe(
                model,
                provider=provider,
                when_ns=when_ns,
                context=context,
                starts=starts,
                bucket=bucket,
            )
        except Exception:
            _logger.debug(
                "rates of %s/%s not probed; pricing each call", provider, model, exc_info=True
            )
            entry = _Slow(provider, model)
        return self._store(base_key, bucket, entry, starts)

    def _probe(
        self,
        model: str,
        *,
        provider: str,
        when_ns: int,
        context: str | None,
        starts: tuple[int, ...],
        bucket: int,
    ) -> _Entry:
        n = 1 if bucket == 0 else starts[bucket - 1] + 1

        def total(**counts: int) -> Any:
            return self._calc_raw(_usage(**counts), model, provider, when_ns, context)

        base = total(input_tokens=n)
        with_output = total(input_tokens=n, output_tokens=n)
        with_reasoning = total(input_tokens=n, output_tokens=n, output_reasoning_tokens=n)
        matched = base.model
        rates = Rates(
            input=base.total_price / n,
            cache_read=total(input_tokens=n, cache_read_tokens=n).total_price / n,
            cache_write=total(input_tokens=n, cache_write_tokens=n).total_price / n,
            output=(with_output.total_price - base.total_price) / n,
            reasoning=(with_reasoning.total_price - base.total_price) / n,
            provider=str(getattr(base.provider, "id", provider)),
            model=str(getattr(matched, "id", model)),
            source="genai-prices",
        )
        # Trust the rates only if they reproduce calc_price on a usage mixing every count.
        upper = starts[bucket] if bucket < len(starts) else n + 10_000
        check_in = min(n + 997, upper)
        check = TokenUsage(
            input_tokens=check_in,
            output_tokens=389,
            cache_read_tokens=check_in // 3,
            cache_write_tokens=check_in // 7,
            reasoning_tokens=101,
        )
        expected = total(
            input_tokens=check_in,
            output_tokens=389,
            cache_read_tokens=check_in // 3,
            cache_write_tokens=check_in // 7,
            output_reasoning_tokens=101,
        )
        fast = cost_from_rates(rates, check)
        if abs(fast.total - expected.total_price) > _TOLERANCE:
            return _Slow(provider, model)
        return rates

    def _calc_raw(
        self, usage: Any, model: str, provider: str, when_ns: int, context: str | None
    ) -> Any:
        from genai_prices import calc_price

        # Exact, truncated to the microsecond: a float of the nanoseconds rounds the last
        # instant of a minute into the next one, whose price may differ (off-peak hours).
        when = _EPOCH + timedelta(microseconds=when_ns // 1000)
        price_context = {"service_tier": context} if context else None
        provider_id = PROVIDER_IDS.get(provider, provider)
        try:
            return calc_price(
                usage,
                model,
                provider_id=provider_id,
                genai_request_timestamp=when,
                price_context=price_context,
            )
        except LookupError:
            guessed = provider_id == "openai" and not is_openai_model(model)
            if provider_id in PROVIDER_IDS.values() and not guessed:
                raise
            # A provider name genai-prices does not know (a gateway, a custom mapping), or a
            # model that is not OpenAI's on what looked like OpenAI (an OpenAI-compatible server
            # on an unknown host serving, say, deepseek-chat): find the model among all
            # providers.
            return calc_price(
                usage, model, genai_request_timestamp=when, price_context=price_context
            )

    def _calc(
        self, usage: TokenUsage, model: str, provider: str, when_ns: int, context: str | None
    ) -> Cost:
        total_in, cache_read, cache_write, total_out, reasoning = _counts(usage)
        result = self._calc_raw(
            _usage(
                input_tokens=total_in,
                output_tokens=total_out,
                cache_read_tokens=cache_read,
                cache_write_tokens=cache_write,
                output_reasoning_tokens=reasoning,
            ),
            model,
            provider,
            when_ns,
            context,
        )
        return Cost(
            total=result.total_price,
            input=result.input_price,
            output=result.output_price,
            source="genai-prices",
            provider=str(getattr(result.provider, "id", provider)),
            model=str(getattr(result.model, "id", model)),
        )
