"""The process's state, owned in one place: the settings in force and what is built from them.

A :class:`Runtime` holds the validated :class:`~costspan._config.Settings` and every member
derived from them: the pricer (from the price overrides), the ledger (opened on first use from
``COSTSPAN_LEDGER`` and the fail mode), the spend recorder (buffer size, durable store) and the
provider-host map. ``configure()`` swaps the runtime as a whole; a member whose inputs did not
change is carried over, so reconfiguring one setting neither forgets in-memory spend nor drops
the record buffer. Readers call :func:`runtime` and use what they get: a call admitted under one
runtime keeps the ledger it reserved in until it settles, whatever ``configure()`` does meanwhile.

:func:`reset` starts over from the environment (tests and the pytest plugin use it). Warnings
that must appear once per process go through :func:`once`, which ``reset()`` also forgets.
"""

from __future__ import annotations

import atexit
import logging
import sys
import threading
import weakref
from collections.abc import Callable, Hashable
from typing import Any, Final

from costspan import _config, _tokens
from costspan._calibration import Calibration
from costspan._config import Settings, outbox_path, records_path
from costspan._pricing import Pricer
from costspan._providers import HostMap
from costspan._records import Recorder
from costspan.ledgers._open import LedgerSpec, check_ledger
from costspan.ledgers._protocol import Ledger
from costspan.ledgers._renewer import Renewer

_logger = logging.getLogger("costspan")


class _Unheard(logging.Handler):
    """Shows costspan's warnings on stderr when nothing else would show them on a terminal.

    Under ``opentelemetry-instrument`` the SDK's logging handler sits on the root logger: Python
    then no longer prints warnings itself (its last-resort handler only acts when no handler
    exists), and a ledger outage or an unenforced budget would only reach the log backend. This
    handler prints a warning once, and only when no handler on the way up writes to stderr or
    stdout (an app that configured console logging sees it once, from its own handler)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.setFormatter(logging.Formatter("%(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        if _shown_elsewhere(logging.getLogger(record.name), self):
            return
        try:
            sys.stderr.write(self.format(record) + "\n")
        except Exception:
            self.handleError(record)


def _shown_elsewhere(logger: logging.Logger | None, me: logging.Handler) -> bool:
    # (With this handler in place, Python's last-resort handler never prints: nothing else
    # in the hierarchy means it is this handler's to print.)
    while logger is not None:
        for handler in logger.handlers:
            stream = getattr(handler, "stream", None)
            if handler is not me and stream in (sys.stderr, sys.stdout):
                return True
        if not logger.propagate:
            break
        logger = logger.parent
    return False


_logger.addHandler(_Unheard())


class Runtime:
    """The settings in force and the members built from them (see the module docstring)."""

    __slots__ = (
        "_ledger",
        "_lock",
        "calibration",
        "hosts",
        "override",
        "pricer",
        "recorder",
        "renewer",
        "settings",
    )

    def __init__(
        self,
        settings: Settings,
        previous: Runtime | None = None,
        override: Ledger | None = None,
    ) -> None:
        self.settings = settings
        old = previous.settings if previous is not None else None
        self.pricer: Pricer = (
            previous.pricer
            if previous is not None and old is not None and old.prices == settings.prices
            else Pricer(settings.prices)
        )
        self.hosts: HostMap = (
            previous.hosts
            if previous is not None and old is not None
            and old.provider_hosts == settings.provider_hosts
            else HostMap(settings.provider_hosts)
        )  # fmt: skip
        self.recorder = Recorder(
            settings.max_records,
            records_path(settings),
            previous.recorder if previous is not None else None,
        )
        self.override = override
        # What providers really bill: learned for the life of the process, whatever the settings.
        self.calibration = previous.calibration if previous is not None else Calibration()
        # The holds of calls in flight, renewed until they settle.
        self.renewer = previous.renewer if previous is not None else Renewer()
        # (what the settings asked for, the engine), opened on first use.
        self._ledger: tuple[object, Ledger] | None = None
        kept = previous._ledger if previous is not None else None
        if kept is not None and kept[0] == _ledger_key(settings):
            self._ledger = kept
        self._lock = threading.Lock()

    @property
    def ledger(self) -> Ledger:
        """The ledger budgets and limits keep their spend in (opened once, on first use)."""
        if self.override is not None:
            return self.override
        opened = self._ledger
        if opened is not None:
            return opened[1]
        with self._lock:
            if self._ledger is None:
                settings = self.settings
                spec = settings.ledger
                ledger = (
                    spec.open(settings.fail_mode, outbox_path(settings))
                    if isinstance(spec, LedgerSpec)
                    else spec
                )
                self._ledger = (_ledger_key(settings), ledger)
            return self._ledger[1]


def _ledger_key(settings: Settings) -> object:
    return (settings.ledger, settings.fail_mode, settings.outbox)


_lock = threading.Lock()
_current: Runtime | None = None
_once: set[Hashable] = set()
# What enforces budgets in this process: costspan's instrumentor, CostSpanProcessors.
_enforcers: weakref.WeakSet[object] = weakref.WeakSet()


def runtime() -> Runtime:
    """The runtime in force; built from the environment on first use."""
    current = _current
    if current is None:
        current = _swap(_from_env)
    return current


def _from_env(previous: Runtime | None) -> Runtime:
    fresh = Runtime(_config.settings_from_env(), previous)
    _check_ledger_soon(fresh.settings)
    return fresh


_checked: set[object] = set()


def _check_ledger_soon(settings: Settings) -> None:
    """Prove a newly configured shared ledger usable (TLS verified, user authenticated,
    scripts allowed) in the background, and say in one line at start-up what is wrong, rather
    than at the first budgeted call. Never raises: until it is usable the fail mode decides."""
    spec = settings.ledger
    if not isinstance(spec, LedgerSpec) or spec.engine == "memory" or spec in _checked:
        return
    _checked.add(spec)

    def check() -> None:
        try:
            problem = check_ledger(spec)
        except Exception as exc:  # a ledger that cannot even be opened
            problem = f"{type(exc).__name__}: {exc}"
        if problem is not None:
            _logger.error(
                "costspan: the budget ledger %s cannot be used now: %s (COSTSPAN_FAIL_MODE=%s "
                "decides until it can; `costspan doctor` checks it)",
                spec,
                problem,
                settings.fail_mode,
            )

    threading.Thread(target=check, name="costspan-ledger-check", daemon=True).start()


def settings() -> Settings:
    """The settings in force (a shortcut for ``runtime().settings``)."""
    return runtime().settings


def configure(**overrides: Any) -> Settings:
    """Apply ``overrides`` on top of the environment and swap the runtime; see ``configure()``."""

    def build(previous: Runtime | None) -> Runtime:
        fresh = _config.with_overrides(_config.settings_from_env(), overrides)
        return Runtime(fresh, previous, previous.override if previous is not None else None)

    current = _swap(build, always=True)
    _check_ledger_soon(current.settings)
    if current.settings.limits and not enforced():
        # configure() usually comes just before instrument(): look again a moment later.
        timer = threading.Timer(2.0, warn_if_unenforced, ("limits are configured",))
        timer.daemon = True
        timer.start()
    return current.settings


def set_ledger(ledger: Ledger | None) -> None:
    """Use ``ledger`` for every budget from now on (None: the configured one, opened afresh)."""

    def build(previous: Runtime | None) -> Runtime:
        base = previous.settings if previous is not None else _config.settings_from_env()
        fresh = Runtime(base, previous, ledger)
        if ledger is None:
            fresh._ledger = None  # pyright: ignore[reportPrivateUsage]
        return fresh

    _swap(build, always=True)


def reset() -> None:
    """Forget settings, ledgers, records and once-only warnings; the environment is read again
    on next use (for tests)."""
    global _current
    with _lock:
        previous, _current = _current, None
        _once.clear()
        _checked.clear()
    if previous is not None:
        previous.recorder.flush()  # records handed to a store are written, not lost


def once(key: Hashable) -> bool:
    """True the first time ``key`` is seen in this process (since the last :func:`reset`)."""
    if key in _once:
        return False
    with _lock:
        if key in _once:
            return False
        _once.add(key)
        return True


def add_enforcer(enforcer: object) -> None:
    """Something that checks calls against budgets is active (until it is removed or gone)."""
    _enforcers.add(enforcer)


def remove_enforcer(enforcer: object) -> None:
    _enforcers.discard(enforcer)


def enforced() -> bool:
    """Whether anything in this process checks calls against budgets and limits."""
    return len(_enforcers) > 0


UNENFORCED = (
    "costspan: %s, but nothing in this process enforces budgets: call costspan.instrument() at "
    "start-up (or run under opentelemetry-instrument, or add a CostSpanProcessor); until then "
    "openai calls are neither checked nor charged"
)


def warn_if_unenforced(what: str) -> None:
    """Say once, loudly, that a budget or limit has nothing to enforce it."""
    if not enforced() and once(("unenforced", what)):
        _logger.warning(UNENFORCED, what)


def _swap(build: Callable[[Runtime | None], Runtime], *, always: bool = False) -> Runtime:
    global _current
    with _lock:
        current = _current
        if current is None or always:
            current = _current = build(current)
        return current


WARM_VOCABULARIES: Final = ("o200k_base",)
"""The tokenizers loaded at start-up: the vocabulary of the gpt-4o, gpt-4.1, gpt-5 and o-series
models and of every model costspan has no tokenizer for (it loads in about 0.3 s and holds about
80 MB). ``cl100k_base`` (gpt-4, gpt-3.5, the embedding models) loads on first use."""

_warming: threading.Thread | None = None


def warm_up() -> threading.Thread:
    """Load, in a background thread, what the first calls would otherwise load while the caller
    waits: the tokenizer, genai-prices' tables. Once per process; returns immediately (the
    thread, for callers that want to wait for it). A call that needs what is still loading waits
    for that load, never loads it twice."""
    global _warming
    with _lock:
        if _warming is None:
            _import_shared_modules()
            _warming = threading.Thread(target=_warm, name="costspan-warm-up", daemon=True)
            _warming.start()
        return _warming


_SHARED_MODULES: Final = ("httpx2",)
"""Modules the warm-up would import that other libraries look up in ``sys.modules`` without
importing them: openai 2.x checks for ``httpx2`` on every response, and while another thread is
still importing it (genai-prices does) it finds a half-initialised module and the user's call
fails with an AttributeError. They are imported on the caller's thread, before the warm-up."""


def _import_shared_modules() -> None:
    import importlib
    import importlib.util

    for name in _SHARED_MODULES:
        if name in sys.modules:
            continue
        try:
            if importlib.util.find_spec(name) is not None:
                importlib.import_module(name)
        except Exception:  # not importable here: then nothing imports it in the background either
            _logger.debug("costspan could not import %s before its warm-up", name, exc_info=True)


def _warm() -> None:
    _tokens.warm(WARM_VOCABULARIES)
    try:
        runtime().pricer.warm()
    except Exception:  # a bad setting is reported where it is used, not from here
        _logger.debug("costspan could not warm its price cache", exc_info=True)


@atexit.register
def _flush_records_at_exit() -> None:
    current = _current
    if current is not None:
        current.recorder.flush()
