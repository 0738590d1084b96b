"""The Redis ledger: many processes on many hosts hold one cap between them.

Each operation is one Lua script over every scope of the call (``lua/``): reserve checks every
cap before its first write, so it holds in all scopes or none; commit and release settle every
scope at once. One round trip each. Amounts are integer micro-USD in ``HINCRBY`` counters.

Scripts are idempotent by reservation id (a record key remembers each reservation), so a retry
by the client after a timeout - which cannot know whether the script ran - never charges twice.
That is what makes the bounded retries below safe.

Keys (``<prefix>`` defaults to ``costspan``; ``{ledger}`` is a Redis Cluster hash tag, so every
key of a call lives in one slot)::

    <prefix>:{ledger}:c:<scope>   HASH  counters, caps and one field per live hold
    <prefix>:{ledger}:l:<scope>   ZSET  holding reservation ids scored by lease expiry (ms)
    <prefix>:{ledger}:r:<rid>     HASH  the reservation record (H held, C committed, R released)

A scope with a window (``ScopeLimit.expires_at``) expires at its window's end plus grace; one
without is kept ``idle_ttl_s`` after its last write. Lease times come from the server's clock.
Run Redis with ``maxmemory-policy noeviction`` (eviction would silently reset a budget) and with
AOF persistence if a restart must not forget spend.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncGenerator, Sequence
from functools import cache
from importlib import resources
from typing import Any, Final

from costspan.ledgers._protocol import (
    CommitCode,
    LedgerUnavailable,
    Reservation,
    ScopeLimit,
    ScopeState,
    check_amounts,
    refusal,
)

POOL_SIZE: Final = 64
"""Connections per client (one sync client, one asyncio client per event loop)."""
POOL_WAIT_S: Final = 5.0
"""How long a caller waits for a free connection before the ledger counts as unavailable."""
SWEEP_LIMIT: Final = 64
"""Most expired holds one script releases per scope (the rest go on the next call)."""


@cache
def script(name: str) -> str:
    """The Lua source of one operation, with the shared helpers in front."""
    folder = resources.files("costspan.ledgers") / "lua"
    return (folder / "common.lua").read_text() + "\n" + (folder / f"{name}.lua").read_text()


_SWEEP: Final = str(SWEEP_LIMIT)


def _state(key: str, words: Sequence[bytes]) -> ScopeState:
    """A scope from the scripts' "s h st ht n cu ct" words ('-': no cap)."""
    s, h, st, ht, n, cu, ct = words
    return ScopeState(
        key,
        int(s),
        int(h),
        int(st),
        int(ht),
        int(n),
        None if cu == b"-" else int(cu),
        None if ct == b"-" else int(ct),
    )


def _unavailable_errors() -> tuple[type[BaseException], ...]:
    import redis.exceptions as e

    # BusyLoadingError (a restarting server loading its data) is a ConnectionError; ReadOnlyError
    # is what a demoted primary answers after a failover; OutOfMemoryError a full noeviction
    # server. After a timeout the script may have run: retries and replays are idempotent.
    return (e.ConnectionError, e.TimeoutError, e.ReadOnlyError, e.OutOfMemoryError, OSError)


class RedisLedger:
    """A ledger in Redis (``redis://`` or ``rediss://`` URL), with sync and asyncio clients.

    Args:
        url: the server, as redis-py's ``from_url`` reads it (database, password, TLS...).
        timeout_s: socket connect and read timeout; a ledger call that takes longer counts as
            a failure (the fail mode decides what the LLM call does).
        retries: how many times a failed script is retried at once (safe: scripts are
            idempotent by reservation id).
        prefix: the first part of every key.
        record_ttl_s: how long a settled reservation is remembered (idempotency window).
        idle_ttl_s: how long a scope without a window is kept after its last write.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = 0.1,
        retries: int = 1,
        prefix: str = "costspan",
        record_ttl_s: float = 7200.0,
        idle_ttl_s: float = 86400.0,
    ) -> None:
        import redis
        import redis.exceptions as rexc
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        self.url = url
        self._prefix = f"{prefix}:{{ledger}}"
        self._record_ms = str(int(record_ttl_s * 1000))
        self._idle_ms = str(int(idle_ttl_s * 1000))
        self._errors = _unavailable_errors()
        self._timeout = timeout_s
        self._retries = retries
        # Bounded, immediate retries (redis-py's default retries for seconds before failing).
        # A bounded pool that makes callers wait their turn (redis-py's default pool raises
        # "Too many connections" past 100 concurrent callers); a URL's max_connections wins.
        from_url: Any = getattr(redis.BlockingConnectionPool, "from_url")  # noqa: B009
        pool = from_url(
            url,
            max_connections=POOL_SIZE,
            timeout=POOL_WAIT_S,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), retries),
            retry_on_error=[rexc.ConnectionError, rexc.TimeoutError],
        )
        self.client: Any = redis.Redis(connection_pool=pool)
        self._reserve = self.client.register_script(script("reserve"))
        self._settle = self.client.register_script(script("settle"))
        self._snapshot = self.client.register_script(script("snapshot"))
        # redis.asyncio clients belong to the event loop that made them: one per loop.
        self._async: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, tuple[Any, Any, Any]] = (
            weakref.WeakKeyDictionary()
        )

    def __repr__(self) -> str:
        return f"RedisLedger({redacted(self.url)!r})"

    # -- keys and arguments ------------------------------------------------------------------
    def _keys(self, rid: str, scopes: Sequence[ScopeLimit]) -> list[str]:
        keys = [f"{self._prefix}:r:{rid}"]
        for limit in scopes:
            keys.append(f"{self._prefix}:c:{limit.key}")
            keys.append(f"{self._prefix}:l:{limit.key}")
        return keys

    @staticmethod
    def _specs(scopes: Sequence[ScopeLimit]) -> str:
        # Four words per scope in one argument (see lua/common.lua): far cheaper to send than
        # four arguments per scope.
        return " ".join(
            f"{'-' if limit.cap_micros is None else limit.cap_micros} "
            f"{'-' if limit.cap_tokens is None else limit.cap_tokens} "
            f"{'1' if limit.sticky else '0'} "
            f"{'-' if limit.expires_at is None else int(limit.expires_at) + 1}"
            for limit in scopes
        )

    def _reserve_args(
        self,
        rid: str,
        scopes: Sequence[ScopeLimit],
        usd_micros: int,
        tokens: int,
        lease_s: float,
    ) -> tuple[list[str], list[str]]:
        check_amounts(usd_micros, tokens)
        args = [
            rid,
            str(usd_micros),
            str(tokens),
            str(int(lease_s * 1000)),
            self._record_ms,
            self._idle_ms,
            _SWEEP,
            self._specs(scopes),
        ]
        return self._keys(rid, scopes), args

    def _settle_args(
        self, rid: str, usd_micros: int, tokens: int, scopes: Sequence[ScopeLimit], final: str
    ) -> tuple[list[str], list[str]]:
        check_amounts(usd_micros, tokens)
        if not scopes:
            # The scripts touch only the keys they are given (the Cluster contract).
            raise ValueError("the Redis ledger settles a reservation with its scopes")
        args = [rid, str(usd_micros), str(tokens), final, self._record_ms, self._idle_ms]
        return self._keys(rid, scopes), [*args, self._specs(scopes)]

    @staticmethod
    def _reservation(
        scopes: Sequence[ScopeLimit], usd_micros: int, tokens: int, reply: bytes
    ) -> Reservation:
        words = reply.split()
        code, failed = int(words[0]), int(words[1])
        states: list[ScopeState] = []
        for i, limit in enumerate(scopes):
            state = _state(limit.key, words[2 + 7 * i : 9 + 7 * i])
            if code == 1:  # the reply shows the counters before this hold
                state = state._replace(
                    held_micros=state.held_micros + usd_micros,
                    held_tokens=state.held_tokens + tokens,
                )
            states.append(state)
        if code == 0:
            return refusal(states[failed - 1], states)
        return Reservation(granted=True, duplicate=code == 2, states=tuple(states))

    # -- sync protocol -----------------------------------------------------------------------
    def _run(self, fn: Any, keys: list[str], args: list[str]) -> Any:
        try:
            return fn(keys=keys, args=args)
        except self._errors as exc:
            raise LedgerUnavailable(f"Redis ledger {redacted(self.url)}: {exc}") from exc

    def reserve(
        self,
        rid: str,
        scopes: Sequence[ScopeLimit],
        usd_micros: int,
        tokens: int,
        lease_s: float,
    ) -> Reservation:
        keys, args = self._reserve_args(rid, scopes, usd_micros, tokens, lease_s)
        return self._reservation(scopes, usd_micros, tokens, self._run(self._reserve, keys, args))

    def commit(
        self,
        rid: str,
        usd_micros: int,
        tokens: int,
        scopes: Sequence[ScopeLimit] = (),
    ) -> CommitCode:
        keys, args = self._settle_args(rid, usd_micros, tokens, scopes, "C")
        return CommitCode(int(self._run(self._settle, keys, args)))

    def release(self, rid: str, scopes: Sequence[ScopeLimit] = ()) -> CommitCode:
        keys, args = self._settle_args(rid, 0, 0, scopes, "R")
        return CommitCode(int(self._run(self._settle, keys, args)))

    def snapshot(self, scope: str) -> ScopeState:
        keys = self._keys("", [ScopeLimit(scope)])[1:]
        return _state(scope, self._run(self._snapshot, keys, [_SWEEP]).split())

    def ping(self) -> None:
        """Raise LedgerUnavailable unless the server answers."""
        try:
            self.client.ping()
        except self._errors as exc:
            raise LedgerUnavailable(f"Redis ledger {redacted(self.url)}: {exc}") from exc

    def close(self) -> None:
        self.client.close()
        self.client.connection_pool.disconnect()

    # -- asyncio protocol --------------------------------------------------------------------
    async def _scripts(self) -> tuple[Any, Any, Any]:
        loop = asyncio.get_running_loop()
        scripts = self._async.get(loop)
        if scripts is None:
            import redis.asyncio
            import redis.exceptions as rexc
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff

            from_url: Any = getattr(redis.asyncio.BlockingConnectionPool, "from_url")  # noqa: B009
            pool = from_url(
                self.url,
                max_connections=POOL_SIZE,
                timeout=POOL_WAIT_S,
                socket_timeout=self._timeout,
                socket_connect_timeout=self._timeout,
                retry=Retry(NoBackoff(), self._retries),
                retry_on_error=[rexc.ConnectionError, rexc.TimeoutError],
            )
            client: Any = redis.asyncio.Redis(connection_pool=pool)
            # The loop finalises its async generators when it shuts down (asyncio.run does):
            # this one closes the client there, so no connection outlives its loop.
            closer = _close_on_shutdown(client)
            await anext(closer)
            scripts = (
                client.register_script(script("reserve")),
                client.register_script(script("settle")),
                closer,
            )
            self._async[loop] = scripts
        return scripts

    async def _arun(self, fn: Any, keys: list[str], args: list[str]) -> Any:
        try:
            return await fn(keys=keys, args=args)
        except self._errors as exc:
            raise LedgerUnavailable(f"Redis ledger {redacted(self.url)}: {exc}") from exc

    async def areserve(
        self,
        rid: str,
        scopes: Sequence[ScopeLimit],
        usd_micros: int,
        tokens: int,
        lease_s: float,
    ) -> Reservation:
        keys, args = self._reserve_args(rid, scopes, usd_micros, tokens, lease_s)
        reply = await self._arun((await self._scripts())[0], keys, args)
        return self._reservation(scopes, usd_micros, tokens, reply)

    async def acommit(
        self, rid: str, usd_micros: int, tokens: int, scopes: Sequence[ScopeLimit] = ()
    ) -> CommitCode:
        keys, args = self._settle_args(rid, usd_micros, tokens, scopes, "C")
        return CommitCode(int(await self._arun((await self._scripts())[1], keys, args)))

    async def arelease(self, rid: str, scopes: Sequence[ScopeLimit] = ()) -> CommitCode:
        keys, args = self._settle_args(rid, 0, 0, scopes, "R")
        return CommitCode(int(await self._arun((await self._scripts())[1], keys, args)))


async def _close_on_shutdown(client: Any) -> AsyncGenerator[None]:
    try:
        yield
    finally:
        await client.aclose(close_connection_pool=True)


def redacted(url: str) -> str:
    """The URL without its password (it goes into logs and error messages)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return url.replace(parts.netloc, user + parts.netloc.rpartition("@")[2], 1)
