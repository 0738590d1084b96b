"""Ledger URLs (``COSTSPAN_LEDGER``): checked when configured, opened on first use.

- ``memory`` (the default): this process only.
- ``sqlite:///absolute/path.db`` or ``sqlite://relative/path.db``: the processes of one host.
  Option: ``busy_timeout`` (seconds, default 2).
- ``redis://[user:password@]host:port/db``, ``rediss://...`` (TLS), ``unix:///path.sock``: any
  number of hosts. ``redis+cluster://host:port[,host:port...]`` (``rediss+cluster://``): a Redis
  Cluster. Options: ``timeout`` (seconds, default 0.1), ``retries`` (default 1), ``prefix`` (key
  prefix, default ``costspan``), ``layout`` (``slot`` or ``spread``), ``lease`` (with
  ``spread``: key prefixes of leased scopes); other query options go to redis-py (see
  ``_redis_url``).

Shared engines are wrapped in :class:`FailSafeLedger` with the configured fail mode.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import parse_qsl, urlsplit

# The engines (SQLite, Redis, the fail-safe wrapper and its outbox) are imported when a ledger
# is opened, not when a URL is checked: `import costspan` stays light.
from costspan.ledgers._protocol import FailMode, Ledger, LedgerUnavailable
from costspan.ledgers._redis_errors import redacted
from costspan.ledgers._redis_url import OPTIONS as REDIS_OPTIONS
from costspan.ledgers._redis_url import SCHEMES as _REDIS_SCHEMES
from costspan.ledgers._redis_url import redis_target

_INT: Final = re.compile(r"^[0-9]{1,9}$")
_FLOAT: Final = re.compile(r"^[0-9]{1,6}(?:\.[0-9]{1,9})?$")
_MAXIMA: Final[dict[str, float]] = {
    "busy_timeout": 60.0,
    "timeout": 60.0,
    "retries": 10,
    "wait": 16,
}
_OPTIONS: Final = {
    "sqlite": {"busy_timeout": float},
    "redis": REDIS_OPTIONS,
}


@dataclass(frozen=True, slots=True)
class LedgerSpec:
    """A validated ledger URL: which engine, where, and costspan's own options."""

    engine: str  # memory | sqlite | redis
    target: str = ""  # a file path, or the URL redis-py is given
    options: tuple[tuple[str, float | int | str], ...] = field(default=())

    def __str__(self) -> str:
        if self.engine == "memory":
            return "memory"
        if self.engine == "sqlite":
            return f"sqlite://{self.target}"  # an absolute path brings its third slash
        return redacted(self.target)

    @property
    def identity(self) -> str:
        """Which store this is, as the outbox names it (no password): two processes opening
        the same store find each other's entries."""
        if self.engine == "sqlite":
            return f"sqlite://{Path(self.target).resolve()}"
        prefix = dict(self.options).get("prefix", "costspan")
        return f"{_same_server(self.target)}#{prefix}"

    def open(self, fail_mode: FailMode, outbox: Path | None = None) -> Ledger:
        """A new engine for this URL (connections are made lazily, on first use); a shared one
        keeps unacknowledged settlements in the ``outbox`` file (None: in memory only)."""
        options = dict(self.options)
        if self.engine == "memory":
            from costspan.ledgers._memory import MemoryLedger

            return MemoryLedger()
        from costspan.ledgers._failsafe import FailSafeLedger
        from costspan.ledgers._outbox import Outbox

        box = Outbox(outbox, self.identity) if outbox is not None else None
        if self.engine == "sqlite":
            from costspan.ledgers._sqlite import SQLiteLedger

            busy = float(options.get("busy_timeout", 2.0))
            engine = SQLiteLedger(self.target, busy_timeout_s=busy)
            return FailSafeLedger(engine, fail_mode, outbox=box)
        from costspan.ledgers._redis_url import open_redis

        return FailSafeLedger(open_redis(self.target, options), fail_mode, outbox=box)


_LOOPBACK: Final = frozenset({"localhost", "127.0.0.1", "::1"})


def _same_server(target: str) -> str:
    """A Redis URL spelled one way for every spelling of the same server: scheme and host in
    lower case, loopback names as one, the default port and database written out, nodes of a
    cluster in order; no user, password or options."""
    parts = urlsplit(target)
    scheme = parts.scheme.lower()
    if scheme == "unix":
        return f"unix://{parts.path}"
    nodes: list[str] = []
    for node in parts.netloc.rpartition("@")[2].split(","):
        if node.startswith("["):  # [v6 address]:port
            host, _, rest = node[1:].partition("]")
            port = rest.lstrip(":")
        elif node.count(":") == 1:
            host, _, port = node.partition(":")
        else:
            host, port = node, ""
        host = host.lower() or "localhost"
        if host in _LOOPBACK:
            host = "127.0.0.1"
        nodes.append(f"{host}:{port or '6379'}")
    db = parts.path.strip("/") or "0"
    return f"{scheme}://{','.join(sorted(nodes))}/{db}"


def parse_ledger_url(name: str, raw: str) -> LedgerSpec:
    """Check a ledger URL; ``ValueError`` says what is wrong and what is accepted."""
    text = raw.strip()
    if text in ("", "memory", "memory://"):
        return LedgerSpec("memory")
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme == "sqlite":
        path = text[len("sqlite://") :].split("?", 1)[0]
        if path.startswith("/"):
            path = "/" + path.lstrip("/")  # sqlite:////abs (SQLAlchemy's form) is /abs too
        if not path:
            raise ValueError(f"{name}={raw!r}: give a file, e.g. sqlite:///var/lib/app/ledger.db")
        options = _options(name, raw, parts.query, "sqlite", passthrough=False)
        return LedgerSpec("sqlite", path, tuple(options.items()))
    if scheme in _REDIS_SCHEMES:
        # Errors quote the URL without its password.
        options = _options(name, redacted(raw), parts.query, "redis", passthrough=True)
        ours = {k: v for k, v in options.items() if k in _OPTIONS["redis"]}
        rest = [(k, str(v)) for k, v in options.items() if k not in _OPTIONS["redis"]]
        # Hand redis-py the URL as written, less costspan's own options.
        target = redis_target(name, raw, ours, rest)
        if not scheme.endswith("+cluster"):
            _check_redis_target(name, raw, target)
        return LedgerSpec("redis", target, tuple(ours.items()))
    raise ValueError(
        f"{name}={redacted(raw)!r}: use memory, sqlite:///path/to/ledger.db, redis://host:port/db, "
        "rediss://..., redis+cluster://host:port,host:port or unix:///path/to/redis.sock"
    )


def check_ledger(spec: LedgerSpec) -> str | None:
    """Open the ledger a spec names and prove it usable now: None, or one line saying why not
    (unreachable, TLS verification, authentication, permissions...). For ``configure()``-time
    checks and ``costspan doctor``; no spend is written."""
    if spec.engine == "memory":
        return None
    options = dict(spec.options)
    if spec.engine == "sqlite":
        from costspan.ledgers._sqlite import SQLiteLedger

        busy = float(options.get("busy_timeout", 2.0))
        engine: Any = SQLiteLedger(spec.target, busy_timeout_s=busy)
    else:
        from costspan.ledgers._redis_url import open_redis

        engine = open_redis(spec.target, options)
    try:
        check = getattr(engine, "check", None) or engine.ping
        check()
    except LedgerUnavailable as exc:
        return str(exc)
    finally:
        engine.close()
    return None


def _options(
    name: str, raw: str, query: str, engine: str, *, passthrough: bool
) -> dict[str, float | int | str]:
    known = _OPTIONS[engine]
    options: dict[str, float | int | str] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        kind = known.get(key)
        if kind is None:
            if passthrough:
                options[key] = value
                continue
            raise ValueError(f"{name}={raw!r}: unknown option {key!r}; known: {', '.join(known)}")
        parsed: float | int | str = value
        if kind is not str:
            # ASCII digits only (float() and int() also take "٣", "1_0", "inf" and "nan").
            shape = _INT if kind is int else _FLOAT
            if not shape.match(value):
                raise ValueError(f"{name}={raw!r}: option {key}={value!r} is not a {kind.__name__}")
            number = float(value) if kind is float else int(value)
            parsed = number
            if number > _MAXIMA[key]:
                raise ValueError(f"{name}={raw!r}: option {key} must be at most {_MAXIMA[key]}")
        if kind is str and not parsed:
            raise ValueError(f"{name}={raw!r}: option {key} must not be empty")
        options[key] = parsed
    return options


def _check_redis_target(name: str, raw: str, target: str) -> None:
    """What redis-py would only find when it first connects, found now: a port out of range, a
    database that is not a number, an option no connection takes. No connection is made."""
    parts = urlsplit(target)
    shown = redacted(raw)
    try:
        parts.port  # noqa: B018 - raises ValueError when out of range
    except ValueError:
        raise ValueError(f"{name}={shown!r}: the port must be a number from 0 to 65535") from None
    if parts.scheme != "unix":
        db = parts.path.strip("/")
        if db and not _INT.match(db):
            raise ValueError(f"{name}={shown!r}: the database ({db!r}) must be a whole number >= 0")
    import redis

    try:
        from_url: Any = getattr(redis.ConnectionPool, "from_url")  # noqa: B009
        from_url(target).make_connection()
    except (TypeError, ValueError) as exc:
        message = str(exc).replace("AbstractConnection.__init__() got an ", "")
        raise ValueError(f"{name}={shown!r}: {message}") from None
