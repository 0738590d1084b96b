"""Budgets: spending caps on the calls made inside a ``with`` block or a decorated function.

``budget()`` makes a :class:`Budget`, a scope with caps (USD, tokens) and an action for calls that
would break it. Entering it puts the budget into the current context twice: as a Python object
for calls in this process (:func:`local_budgets`), and as a compact entry in W3C baggage (key
``costspan.budgets``, see :mod:`costspan._baggage`) so that downstream services running costspan
enforce it too. What it has spent is read from the ledger of the runtime in force.
"""

from __future__ import annotations

import functools
import inspect
import logging
import threading
import uuid
from collections.abc import AsyncGenerator, Callable, Generator, Iterable, Mapping
from decimal import Decimal
from types import TracebackType
from typing import Any, Final, ParamSpec, TypeVar, cast

from opentelemetry import baggage, context

from costspan._baggage import (
    ACTIONS,
    BUDGETS_KEY,
    MAX_BUDGETS,
    Action,
    ContextEntry,
    baggage_name,
    budget_entries,
    in_front,
)
from costspan._money import MAX_TOKENS, cap_amount, usd
from costspan._runtime import runtime, warn_if_unenforced
from costspan.ledgers import ScopeState

_logger = logging.getLogger(__name__)

DEFAULT_WARN_AT: Final = (0.8,)

OnExceed = Action | Callable[..., Mapping[str, Any] | None]

_LOCAL_KEY: Final = context.create_key("costspan.local-budgets")
_LOCAL_ENTRIES_KEY: Final = context.create_key("costspan.local-budget-entries")

P = ParamSpec("P")
R = TypeVar("R")


class Budget(ContextEntry):
    """A spending cap for the calls made inside it; see :func:`costspan.budget`.

    A ``Budget`` is a context manager (sync and async) and a decorator (functions, coroutines,
    generators and async generators). Entered as a context manager it is one scope: every
    thread or task that enters the same object shares its cap. As a decorator, every call of the
    decorated function runs under a fresh scope with the same caps.
    """

    def __init__(
        self,
        *,
        usd: object = None,
        tokens: object = None,
        on_exceed: OnExceed = "block",
        downgrade: object = None,
        warn_at: object = DEFAULT_WARN_AT,
        name: object = None,
    ) -> None:
        # Arguments are typed as object: they come from user code and are checked here.
        self.usd: Decimal | None = None if usd is None else cap_amount(usd, "usd")
        if tokens is not None and (
            isinstance(tokens, bool) or not isinstance(tokens, int) or not 0 <= tokens <= MAX_TOKENS
        ):
            raise ValueError(f"tokens must be a whole number from 0 to 10**15, not {tokens!r}")
        self.tokens: int | None = tokens
        if self.usd is None and self.tokens is None:
            raise ValueError("a budget needs a cap: usd=..., tokens=..., or both")
        if not callable(on_exceed) and on_exceed not in ACTIONS:
            raise ValueError(
                f"on_exceed must be one of {', '.join(ACTIONS)} or a callable, not {on_exceed!r}"
            )
        self.on_exceed: OnExceed = on_exceed
        self.downgrade: dict[str, str] = {}
        if downgrade is not None:
            pairs = (
                list(cast("Mapping[object, object]", downgrade).items())
                if isinstance(downgrade, Mapping)
                else None
            )
            if pairs is None or not all(
                isinstance(k, str) and isinstance(v, str) and k and v for k, v in pairs
            ):
                raise ValueError("downgrade must map model names to cheaper model names")
            self.downgrade = {str(k): str(v) for k, v in pairs}
        if on_exceed == "downgrade" and not self.downgrade:
            raise ValueError('on_exceed="downgrade" needs downgrade={"model": "cheaper model"}')
        if not isinstance(warn_at, Iterable):
            raise ValueError(f"warn_at must be fractions of the cap in (0, 1], not {warn_at!r}")
        thresholds = tuple(cast("Iterable[object]", warn_at))
        if not all(
            isinstance(t, int | float) and not isinstance(t, bool) and 0 < t <= 1
            for t in thresholds
        ):
            raise ValueError(f"warn_at must be fractions of the cap in (0, 1], not {thresholds!r}")
        self.warn_at: tuple[float, ...] = tuple(sorted(float(cast("float", t)) for t in thresholds))
        if name is not None and (not isinstance(name, str) or not 0 < len(name) <= 64):
            raise ValueError("name must be a string of 1 to 64 characters")
        self.name: str | None = name
        self.id = uuid.uuid4().hex[:16]
        self._crossed: set[float] = set()
        self._crossed_lock = threading.Lock()
        self._latest: Budget = self
        self._entered = 0  # threads and tasks inside it now
        self._final: ScopeState | None = None  # its counters, once its scope left the ledger

    # -- identity ----------------------------------------------------------------------------
    @property
    def scope_key(self) -> str:
        """The ledger scope that holds this budget's spend."""
        return f"budget:{self.id}"

    @property
    def label(self) -> str:
        """How spans and refusals name the budget: its name, else its cap and a short id."""
        if self.name:
            return self.name
        cap = f"${self.usd.normalize():f}" if self.usd is not None else f"{self.tokens} tokens"
        return f"{cap} budget #{self.id[:8]}"

    def _fresh(self) -> Budget:
        copy = Budget(
            usd=self.usd,
            tokens=self.tokens,
            on_exceed=self.on_exceed,
            downgrade=self.downgrade or None,
            warn_at=self.warn_at,
            name=self.name,
        )
        self._latest = copy
        return copy

    def __repr__(self) -> str:
        caps = ", ".join(
            c for c in (f"usd={self.usd}" if self.usd is not None else "",
                        f"tokens={self.tokens}" if self.tokens is not None else "") if c
        )  # fmt: skip
        return f"Budget({caps}, on_exceed={self.on_exceed!r}, id={self.id!r})"

    # -- what it has spent (of the most recent run, when used as a decorator) -----------------
    def _state(self) -> ScopeState:
        latest = self._latest
        final = latest._final
        if final is not None:
            return final
        return runtime().ledger.snapshot(latest.scope_key)

    @property
    def spent_usd(self) -> Decimal:
        return usd(self._state().spent_micros)

    @property
    def remaining_usd(self) -> Decimal | None:
        """What new calls may still spend: the cap less spend and in-flight holds."""
        if self._latest.usd is None:
            return None
        state = self._state()
        left = self._latest.usd - usd(state.spent_micros + state.held_micros)
        return max(left, Decimal(0))

    @property
    def spent_tokens(self) -> int:
        return int(self._state().spent_tokens)

    @property
    def remaining_tokens(self) -> int | None:
        if self._latest.tokens is None:
            return None
        state = self._state()
        return max(self._latest.tokens - state.spent_tokens - state.held_tokens, 0)

    @property
    def calls(self) -> int:
        """Calls settled against this budget (sent and paid for)."""
        return int(self._state().calls)

    def crossed(self, fraction: float) -> bool:
        """Record that ``fraction`` of the cap was passed; True the first time only."""
        with self._crossed_lock:
            if fraction in self._crossed:
                return False
            self._crossed.add(fraction)
            return True

    # -- context manager ---------------------------------------------------------------------
    def __enter__(self) -> Budget:
        with self._crossed_lock:
            self._entered += 1
        warn_if_unenforced("a budget was entered")
        self.revive(runtime().ledger)
        self._attach()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        super().__exit__(exc_type, exc, tb)
        with self._crossed_lock:
            self._entered -= 1
            last = self._entered == 0
        if last:
            self._retire()

    def _retire(self) -> None:
        """Nobody is inside any more: the ledger may forget the scope once nothing is held in
        it (per-request budgets keep no memory), after handing over the final counters, which
        ``spent_usd`` and friends read from then on."""
        retire = getattr(runtime().ledger, "retire", None)
        if retire is None:
            return  # a shared ledger: other processes may still use the scope; it expires
        try:
            retire(self.scope_key, self._gone)
        except Exception:
            _logger.exception("costspan could not release a finished budget's scope")

    @property
    def retired(self) -> bool:
        """True once the scope left the ledger (the budget was left and nothing was held)."""
        return self._final is not None

    def _gone(self, state: ScopeState) -> None:
        self._final = state

    def revive(self, ledger: object) -> None:
        """Put the scope back into the ledger before it is used again (a budget entered anew,
        or a task still running in its context after it was left)."""
        with self._crossed_lock:
            final, self._final = self._final, None
        seed = getattr(ledger, "seed", None)
        if final is not None and seed is not None:
            seed(final)

    async def __aenter__(self) -> Budget:
        return self.__enter__()

    def _derive(self, ctx: context.Context) -> context.Context:
        local = cast("tuple[Budget, ...]", context.get_value(_LOCAL_KEY, ctx) or ())
        ctx = context.set_value(_LOCAL_KEY, (*local, self), ctx)
        previous = baggage.get_baggage(BUDGETS_KEY, ctx)
        # Whether every entry was written by budgets of this process (none arrived inbound).
        local_only = previous is None or previous is local_entries(ctx)
        entries = [e for e in budget_entries(previous) if e]
        entries.append(self.baggage_entry())
        if len(entries) > MAX_BUDGETS:
            _logger.warning(
                "more than %d nested budgets: only the innermost travel to other services",
                MAX_BUDGETS,
            )
            entries = entries[-MAX_BUDGETS:]
        value = ",".join(entries)
        ctx = in_front(ctx, {BUDGETS_KEY: value})
        if local_only:
            ctx = context.set_value(_LOCAL_ENTRIES_KEY, value, ctx)
        return ctx

    def baggage_entry(self) -> str:
        usd = "-" if self.usd is None else format(self.usd.normalize(), "f")
        tokens = "-" if self.tokens is None else str(self.tokens)
        action = self.on_exceed if isinstance(self.on_exceed, str) else "block"
        entry = f"{self.id}:{usd}:{tokens}:{action}"
        name = baggage_name(self.name)
        return f"{entry}:{name}" if name else entry

    # -- decorator ---------------------------------------------------------------------------
    def __call__(self, func: Callable[P, R]) -> Callable[P, R]:
        if inspect.isasyncgenfunction(func):
            return cast("Callable[P, R]", self._wrap_async_gen(func))
        if inspect.isgeneratorfunction(func):
            return cast("Callable[P, R]", self._wrap_gen(func))
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def run_async(*args: P.args, **kwargs: P.kwargs) -> Any:
                async with self._fresh():
                    return await func(*args, **kwargs)

            return cast("Callable[P, R]", run_async)

        @functools.wraps(func)
        def run(*args: P.args, **kwargs: P.kwargs) -> R:
            with self._fresh():
                return func(*args, **kwargs)

        return run

    def _wrap_gen(self, func: Callable[..., Generator[Any, Any, Any]]) -> Callable[..., Any]:
        @functools.wraps(func)
        def run(*args: Any, **kwargs: Any) -> Generator[Any, Any, Any]:
            scope = self._fresh()
            # The budget is entered around each step of the generator only: between steps the
            # consumer runs, and the budget must not leak into its context. send(), throw()
            # and close() reach the wrapped generator as they would without the decorator.
            with scope:
                gen = func(*args, **kwargs)
            sent: Any = None
            thrown: BaseException | None = None
            while True:
                with scope:
                    try:
                        value = gen.throw(thrown) if thrown is not None else gen.send(sent)
                    except StopIteration as stop:
                        return stop.value
                thrown = None
                try:
                    sent = yield value
                except GeneratorExit:
                    with scope:
                        gen.close()
                    raise
                except BaseException as exc:
                    thrown, sent = exc, None

        return run

    def _wrap_async_gen(
        self, func: Callable[..., AsyncGenerator[Any, Any]]
    ) -> Callable[..., AsyncGenerator[Any, Any]]:
        @functools.wraps(func)
        async def run(*args: Any, **kwargs: Any) -> AsyncGenerator[Any, Any]:
            scope = self._fresh()
            with scope:
                agen = func(*args, **kwargs)
            sent: Any = None
            thrown: BaseException | None = None
            while True:
                with scope:
                    try:
                        if thrown is not None:
                            value = await agen.athrow(thrown)
                        else:
                            value = await agen.asend(sent)
                    except StopAsyncIteration:
                        return
                thrown = None
                try:
                    sent = yield value
                except GeneratorExit:
                    with scope:
                        await agen.aclose()
                    raise
                except BaseException as exc:
                    thrown, sent = exc, None

        return run


def budget(
    usd: object = None,
    tokens: object = None,
    on_exceed: OnExceed = "block",
    downgrade: Mapping[str, str] | None = None,
    warn_at: Iterable[float] = DEFAULT_WARN_AT,
    name: str | None = None,
) -> Budget:
    """Cap the spend of the calls made inside: ``with costspan.budget(usd=0.50): ...``.

    Args:
        usd: the USD cap (a number or a numeric string; kept as ``Decimal``).
        tokens: the token cap (input plus output tokens).
        on_exceed: what happens to a call that could break the cap, decided before it is sent:
            ``"block"`` raises :class:`~costspan.BudgetExceeded`; ``"downgrade"`` switches to
            the cheaper model of ``downgrade`` if that fits; ``"clamp"`` sets the request's
            output cap to what the budget affords; ``"truncate"`` drops the oldest messages
            until the prompt fits; ``"warn"`` lets it through and records it; a callable gets the
            :class:`~costspan.BudgetExceeded` and returns request changes to retry with (e.g.
            ``{"model": "gpt-4o-mini"}``) or None to refuse.
        downgrade: ``{model: cheaper model}``, followed as a chain.
        warn_at: fractions of the cap whose crossing emits a span event, a log record and a
            metric, once each.
        name: a label for reports and errors.

    Raises:
        ValueError: no cap, a negative cap, an unknown action, ``downgrade`` without a map.
    """
    return Budget(
        usd=usd, tokens=tokens, on_exceed=on_exceed, downgrade=downgrade, warn_at=warn_at, name=name
    )


def local_entries(ctx: context.Context | None = None) -> object:
    """The baggage value of ``costspan.budgets`` as this process's budgets wrote it, when every
    entry in it is theirs (compared by identity: a value that came from anywhere else is another
    object, and is read as inbound)."""
    return context.get_value(_LOCAL_ENTRIES_KEY, ctx)


def local_budgets(ctx: context.Context | None = None) -> tuple[Budget, ...]:
    """The budgets entered in this process, outermost first."""
    found: tuple[Budget, ...] = context.get_value(_LOCAL_KEY, ctx) or ()  # pyright: ignore
    return found
