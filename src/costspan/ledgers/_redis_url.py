"""Redis ledger URLs: the forms costspan accepts, what it checks when they are configured, and
the engine each one opens.

- ``redis://[user:password@]host:port/db``, ``rediss://...`` (TLS), ``unix:///path.sock``: one
  server.
- ``redis+cluster://[user:password@]host:port[,host:port...][/0]``, ``rediss+cluster://...``:
  a Redis Cluster (the nodes listed are where discovery starts).

costspan's own options (``timeout``, ``retries``, ``prefix``, ``layout``, ``lease``, ``wait``)
are taken out; the rest go to redis-py (``ssl_ca_certs``, ``ssl_certfile``, ``ssl_keyfile``,
``ssl_cert_reqs``...). Certificate verification is redis-py's default: on, against
``ssl_ca_certs`` or the system's CAs. A certificate file that does not exist, a TLS option on a
plain URL or an option a cluster client cannot take is an error when configured, not at the
first call.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any, Final
from urllib.parse import parse_qsl, urlencode, urlsplit

from costspan.ledgers._redis_errors import misplaced_at, redacted

_logger = logging.getLogger(__name__)

SCHEMES: Final = ("redis", "rediss", "unix", "redis+cluster", "rediss+cluster")
OPTIONS: Final = {
    "timeout": float,
    "retries": int,
    "prefix": str,
    "layout": str,
    "lease": str,
    "wait": int,
}
"""costspan's own options in a Redis URL (everything else goes to redis-py)."""
LAYOUTS: Final = ("slot", "spread")
_TLS_FILES: Final = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile")
_CERT_REQS: Final = ("none", "optional", "required")


def redis_target(
    name: str, raw: str, options: Mapping[str, object], rest: Sequence[tuple[str, str]]
) -> str:
    """Check a Redis ledger URL (``options``: costspan's, ``rest``: redis-py's) and return the
    URL the engine is given (``raw`` less costspan's options). ValueError says what is wrong."""
    text = raw.strip()
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    cluster = scheme.endswith("+cluster")

    def bad(problem: str) -> ValueError:
        return ValueError(f"{name}={redacted(raw)!r}: {problem}")

    query = urlencode(rest, safe="/")
    target = text.split("?", 1)[0] + (f"?{query}" if query else "")
    if misplaced_at(text):
        raise bad(
            "the password ends the URL early: percent-encode its special characters "
            "(/ as %2F, ? as %3F, # as %23, @ as %40, : as %3A)"
        )
    if cluster:
        from costspan.ledgers._redis_cluster import cluster_settings

        try:
            cluster_settings(target)
        except ValueError as exc:
            raise bad(f"{exc} (e.g. redis+cluster://10.0.0.1:6379,10.0.0.2:6379)") from None
    elif scheme != "unix" and not parts.hostname:
        raise bad("a Redis URL needs a host, e.g. redis://127.0.0.1:6379/0")
    else:
        try:
            port = parts.port
        except ValueError:
            raise bad("the port is not a number in 1-65535 (in a password, : is %3A)") from None
        if port == 0:
            raise bad("the port must be 1-65535")
    given = dict(rest)
    tls = scheme.startswith("rediss")
    for key in given:
        if key.startswith("ssl_") and not tls:
            raise bad(f"{key} needs TLS: use rediss://" + ("...+cluster" if cluster else ""))
    for key in _TLS_FILES:
        path = given.get(key)
        if path is not None and not os.access(path, os.R_OK):
            problem = "no such file" if not os.path.exists(path) else "not readable"
            raise bad(f"{key}={path!r}: {problem}")
    reqs = given.get("ssl_cert_reqs")
    if reqs is not None and reqs not in _CERT_REQS:
        raise bad(f"ssl_cert_reqs must be one of {', '.join(_CERT_REQS)}")
    layout = str(options.get("layout", "slot"))
    if layout not in LAYOUTS:
        raise bad(f"layout must be one of {', '.join(LAYOUTS)}")
    if "lease" in options and layout != "spread":
        raise bad("lease applies to layout=spread")
    prefix = str(options.get("prefix", "costspan"))
    if "{" in prefix or "}" in prefix:
        raise bad("prefix must not contain { or } (the ledger's hash tags)")
    import importlib.util

    if importlib.util.find_spec("redis") is None:
        raise bad("the Redis ledger needs redis-py (pip install 'costspan[redis]')")
    return target


def open_redis(target: str, options: Mapping[str, object]) -> Any:
    """The engine for a checked Redis URL (connections are made on first use)."""
    from costspan.ledgers._redis import RedisLedger

    settings: dict[str, Any] = {
        "timeout_s": float(str(options.get("timeout", 0.1))),
        "retries": int(str(options.get("retries", 1))),
        "prefix": str(options.get("prefix", "costspan")),
        "wait_replicas": int(str(options.get("wait", 0))),
    }
    if urlsplit(target).scheme.lower().endswith("+cluster"):
        from costspan.ledgers._redis_cluster import RedisClusterLedger

        engine: RedisLedger = RedisClusterLedger(target, **settings)
    else:
        engine = RedisLedger(target, **settings)
    if dict(parse_qsl(urlsplit(target).query)).get("ssl_cert_reqs") == "none":
        _logger.warning(
            "costspan: the Redis ledger's TLS certificate is not verified (ssl_cert_reqs=none)"
        )
    if options.get("layout", "slot") != "spread":
        return engine
    from costspan.ledgers._spread import LEASED, SpreadLedger

    lease = options.get("lease")
    leased = LEASED if lease is None else _prefixes(str(lease))
    return SpreadLedger(engine, leased=leased)


def _prefixes(text: str) -> tuple[str, ...]:
    """``lease=`` as key prefixes: comma-separated, ``none`` for no leases."""
    if text.strip().lower() == "none":
        return ()
    return tuple(p.strip() for p in text.split(",") if p.strip())
