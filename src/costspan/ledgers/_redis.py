"""The Redis ledger: many processes on many hosts hold one cap between them.

Each operation is one Lua script over every scope of the call (``lua/``): reserve checks every
cap before its first write, so it holds in all scopes or none; commit and release settle every
scope at once. One round trip each. Amounts are integer micro-USD in ``HINCRBY`` counters.

Scripts are idempotent by reservation id (a record key remembers each reservation), so a retry
by the client after a timeout - which cannot know whether the script ran - never charges twice.
That is what makes the bounded retries below safe. Scripts run by ``EVALSHA``; a server that
does not know one (restarted, failed over, a new cluster node) answers ``NOSCRIPT`` and gets the
source by ``EVAL`` on that same node, which also caches it there.

Keys (``<prefix>`` defaults to ``costspan``; ``{ledger}`` is a Redis Cluster hash tag, so every
key of a call lives in one slot)::

    <prefix>:{ledger}:c:<scope>   HASH  counters, caps and one field per live hold
    <prefix>:{ledger}:l:<scope>   ZSET  holding reservation ids scored by lease expiry (ms)
    <prefix>:{ledger}:r:<rid>     HASH  the reservation record (H held, C committed, R released)

A scope with a window (``ScopeLimit.expires_at``) expires at its window's end plus grace; one
without is kept ``idle_ttl_s`` after its last write. Lease times come from the server's clock.
Run Redis with ``maxmemory-policy noeviction`` (eviction would silently reset a budget) and with
AOF persistence if a restart must not forget spend.

:class:`RedisLedger` talks to one server (``redis://``, ``rediss://``, ``unix://``);
``_redis_cluster.RedisClusterLedger`` to a Redis Cluster with the same keys and scripts, and
``_spread.SpreadLedger`` spreads scopes over a cluster's slots.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import threading
import weakref
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from functools import cache
from importlib import resources
from typing import Any, Final
from urllib.parse import unquote, urlsplit

from costspan.ledgers._protocol import (
    CommitCode,
    LedgerUnavailable,
    Reservation,
    ScopeLimit,
    ScopeState,
    check_amounts,
    refusal,
)
from costspan.ledgers._redis_errors import (
    redacted,
    retry_policy,
    unavailable,
    unavailable_errors,
)

__all__ = ["RedisLedger", "redacted"]

POOL_SIZE: Final = 64
"""Connections per client (one sync client, one asyncio client per event loop)."""
POOL_WAIT_S: Final = 5.0
"""How long a caller waits for a free connection before the ledger counts as unavailable."""
SWEEP_LIMIT: Final = 64
"""Most expired holds one script releases per scope (the rest go on the next call)."""
CHECK_SCOPE: Final = "costspan-check"
"""The scope a check reads (never written): proves the scripts run and the keys are allowed."""


@cache
def script(name: str) -> str:
    """The Lua source of one operation, with the shared helpers in front."""
    folder = resources.files("costspan.ledgers") / "lua"
    return (folder / "common.lua").read_text() + "\n" + (folder / f"{name}.lua").read_text()


@cache
def script_sha(name: str) -> str:
    """The SHA-1 by which Redis knows a script (EVALSHA)."""
    return hashlib.sha1(script(name).encode()).hexdigest()  # Redis names scripts by SHA-1


_SWEEP: Final = str(SWEEP_LIMIT)


def state_from(key: str, words: Sequence[bytes]) -> ScopeState:
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


def specs(scopes: Sequence[ScopeLimit]) -> str:
    """Four words per scope in one argument (see lua/common.lua): far cheaper to send than
    four arguments per scope."""
    return " ".join(
        f"{'-' if limit.cap_micros is None else limit.cap_micros} "
        f"{'-' if limit.cap_tokens is None else limit.cap_tokens} "
        f"{'1' if limit.sticky else '0'} "
        f"{'-' if limit.expires_at is None else int(limit.expires_at) + 1}"
        for limit in scopes
    )


def reservation_from(
    scopes: Sequence[ScopeLimit], usd_micros: int, tokens: int, reply: bytes
) -> Reservation:
    """The Reservation a reserve script's reply describes."""
    words = reply.split()
    code, failed = int(words[0]), int(words[1])
    states: list[ScopeState] = []
    for i, limit in enumerate(scopes):
        state = state_from(limit.key, words[2 + 7 * i : 9 + 7 * i])
        if code == 1:  # the reply shows the counters before this hold
            state = state._replace(
                held_micros=state.held_micros + usd_micros,
                held_tokens=state.held_tokens + tokens,
            )
        states.append(state)
    if code == 0:
        return refusal(states[failed - 1], states)
    return Reservation(granted=True, duplicate=code == 2, states=tuple(states))


class RedisLedger:
    """A ledger in one Redis server (``redis://``, ``rediss://`` or ``unix://`` URL), with sync
    and asyncio clients.

    Args:
        url: the server, as redis-py's ``from_url`` reads it (database, user and password, TLS
            files and verification...).
        timeout_s: socket connect and read timeout; a ledger call that takes longer counts as
            a failure (the fail mode decides what the LLM call does).
        retries: how many times a failed script is retried at once (safe: scripts are
            idempotent by reservation id). Authentication and certificate errors are not.
        prefix: the first part of every key.
        record_ttl_s: how long a settled reservation is remembered (idempotency window).
        idle_ttl_s: how long a scope without a window is kept after its last write.
        wait_replicas: after every write, ``WAIT`` until this many replicas have it (at most
            ``timeout_s``; fewer is a failure, so the fail mode and the outbox take over). A
            primary that dies then cannot take an acknowledged write with it. 0: no wait.
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
        wait_replicas: int = 0,
    ) -> None:
        self.url = url
        self.wait_replicas = wait_replicas
        self.prefix = prefix
        self._prefix = f"{prefix}:{{ledger}}"
        self.record_ms = str(int(record_ttl_s * 1000))
        self.idle_ms = str(int(idle_ttl_s * 1000))
        self._errors = unavailable_errors()
        self._timeout = timeout_s
        self._retries = retries
        username = urlsplit(url).username
        self._user = unquote(username) if username else None
        self._lock = threading.Lock()
        self._client: Any = None
        # redis.asyncio clients belong to the event loop that made them: one per loop.
        self._async: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopClient] = (
            weakref.WeakKeyDictionary()
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({redacted(self.url)!r})"

    # -- clients -----------------------------------------------------------------------------
    def _connect(self) -> Any:
        """A new sync client (connections are made on first use)."""
        import redis

        # Bounded, immediate retries (redis-py's default retries for seconds before failing).
        # A bounded pool that makes callers wait their turn (redis-py's default pool raises
        # "Too many connections" past 100 concurrent callers); a URL's max_connections wins.
        from_url: Any = getattr(redis.BlockingConnectionPool, "from_url")  # noqa: B009
        pool = from_url(
            self.url,
            max_connections=POOL_SIZE,
            timeout=POOL_WAIT_S,
            socket_timeout=self._timeout,
            socket_connect_timeout=self._timeout,
            retry=retry_policy(self._retries),
            retry_on_error=_retry_on(),
        )
        return redis.Redis(connection_pool=pool)

    def _aconnect(self) -> Any:
        """A new asyncio client for the running loop."""
        import redis.asyncio

        from_url: Any = getattr(redis.asyncio.BlockingConnectionPool, "from_url")  # noqa: B009
        pool = from_url(
            self.url,
            max_connections=POOL_SIZE,
            timeout=POOL_WAIT_S,
            socket_timeout=self._timeout,
            socket_connect_timeout=self._timeout,
            retry=retry_policy(self._retries, asyncio=True),
            retry_on_error=_retry_on(),
        )
        return redis.asyncio.Redis(connection_pool=pool)

    @property
    def client(self) -> Any:
        """The sync redis-py client (made on first use)."""
        client = self._client
        if client is None:
            with self._lock:
                if self._client is None:
                    try:
                        self._client = self._connect()
                    except self._errors as exc:
                        raise self._unavailable(exc) from exc
                client = self._client
        return client

    async def _loop_client(self) -> _LoopClient:
        loop = asyncio.get_running_loop()
        found = self._async.get(loop)
        if found is None:
            # Registered before its first await, so concurrent first calls share one client
            # and wait for the same preparation.
            try:
                client = self._aconnect()
            except self._errors as exc:
                raise self._unavailable(exc) from exc
            ready = loop.create_task(self._prepare(client))
            found = _LoopClient(client, asyncio.Semaphore(POOL_SIZE), ready)
            self._async[loop] = found
        try:
            await found.ready
        except self._errors as exc:
            if self._async.get(loop) is found:
                del self._async[loop]  # the next call starts afresh
                with contextlib.suppress(Exception):  # its sockets, if it opened any
                    await self._aclose(found.client)
            raise self._unavailable(exc) from exc
        return found

    async def _prepare(self, client: Any) -> AsyncGenerator[None]:
        # The loop finalises its async generators when it shuts down (asyncio.run does):
        # this one closes the client there, so no connection outlives its loop.
        closer = _close_on_shutdown(client, self._aclose)
        await anext(closer)
        await self._ainitialize(client)
        return closer

    async def _ainitialize(self, client: Any) -> None:
        """Make a new asyncio client ready before calls use it (nothing for one server)."""

    @staticmethod
    async def _aclose(client: Any) -> None:
        await client.aclose(close_connection_pool=True)

    def _unavailable(self, exc: BaseException) -> LedgerUnavailable:
        return unavailable(exc, self.url, user=self._user)

    # -- running scripts ---------------------------------------------------------------------
    def run_script(self, name: str, keys: Sequence[str], args: Sequence[str]) -> Any:
        """Run one of the ``lua/`` scripts; LedgerUnavailable if the store cannot answer."""
        import redis.exceptions

        try:
            client = self.client
            if self.wait_replicas and name != "snapshot":
                return self._run_waited(client, name, keys, args)
            try:
                return client.evalsha(script_sha(name), len(keys), *keys, *args)
            except redis.exceptions.NoScriptError:
                return client.eval(script(name), len(keys), *keys, *args)
        except self._errors as exc:
            raise self._unavailable(exc) from exc

    def _run_waited(self, client: Any, name: str, keys: Sequence[str], args: Sequence[str]) -> Any:
        """The script and ``WAIT`` on one connection (WAIT counts that connection's writes)."""
        return self.waited(client, name, keys, args)

    def waited(self, client: Any, name: str, keys: Sequence[str], args: Sequence[str]) -> Any:
        """Run a script then WAIT through ``client`` (one server's client) in one pipeline."""
        import redis.exceptions

        result: Any = None
        for command in ("EVALSHA", "EVAL"):
            pipe = client.pipeline(transaction=False)
            body = script_sha(name) if command == "EVALSHA" else script(name)
            pipe.execute_command(command, body, len(keys), *keys, *args)
            # Half the socket timeout: WAIT answers (with too few replicas) before the socket
            # gives up, so the reason is the replicas, not a timeout.
            pipe.execute_command("WAIT", self.wait_replicas, max(int(self._timeout * 500), 1))
            result, acked = pipe.execute(raise_on_error=False)
            if not isinstance(result, redis.exceptions.NoScriptError):
                break
        if isinstance(result, Exception):
            raise result
        if isinstance(acked, Exception):
            raise acked
        if int(acked) < self.wait_replicas:
            raise LedgerUnavailable(
                f"Redis ledger {redacted(self.url).split('?', 1)[0]}: {acked} of "
                f"{self.wait_replicas} replica(s) acknowledged the write within "
                f"{self._timeout / 2} s (wait option)"
            )
        return result

    async def arun_script(self, name: str, keys: Sequence[str], args: Sequence[str]) -> Any:
        """:meth:`run_script` on this event loop's asyncio client."""
        import redis.exceptions

        if self.wait_replicas and name != "snapshot":
            # Durable writes wait for a replica anyway: the sync path, off the event loop.
            return await asyncio.to_thread(self.run_script, name, keys, args)
        try:
            loop_client = await self._loop_client()
            client = loop_client.client
            async with loop_client.slots:
                try:
                    return await client.evalsha(script_sha(name), len(keys), *keys, *args)
                except redis.exceptions.NoScriptError:
                    return await client.eval(script(name), len(keys), *keys, *args)
        except self._errors as exc:
            raise self._unavailable(exc) from exc

    # -- keys and arguments ------------------------------------------------------------------
    def _keys(self, rid: str, scopes: Sequence[ScopeLimit]) -> list[str]:
        keys = [f"{self._prefix}:r:{rid}"]
        for limit in scopes:
            keys.append(f"{self._prefix}:c:{limit.key}")
            keys.append(f"{self._prefix}:l:{limit.key}")
        return keys

    def reserve_args(
        self, rid: str, scopes: Sequence[ScopeLimit], usd_micros: int, tokens: int, lease_s: float
    ) -> list[str]:
        """ARGV of the reserve script."""
        check_amounts(usd_micros, tokens)
        lease_ms = str(int(lease_s * 1000))
        return [rid, str(usd_micros), str(tokens), lease_ms, self.record_ms, self.idle_ms]

    def settle_args(
        self, rid: str, usd_micros: int, tokens: int, scopes: Sequence[ScopeLimit], final: str
    ) -> list[str]:
        """ARGV of the settle script (commit ``C`` or release ``R``)."""
        check_amounts(usd_micros, tokens)
        if not scopes:
            # The scripts touch only the keys they are given (the Cluster contract).
            raise ValueError("the Redis ledger settles a reservation with its scopes")
        args = [rid, str(usd_micros), str(tokens), final, self.record_ms, self.idle_ms]
        return [*args, specs(scopes)]

    # -- sync protocol -----------------------------------------------------------------------
    def reserve(
        self,
        rid: str,
        scopes: Sequence[ScopeLimit],
        usd_micros: int,
        tokens: int,
        lease_s: float,
    ) -> Reservation:
        args = [*self.reserve_args(rid, scopes, usd_micros, tokens, lease_s), _SWEEP, specs(scopes)]
        reply = self.run_script("reserve", self._keys(rid, scopes), args)
        return reservation_from(scopes, usd_micros, tokens, reply)

    def commit(
        self,
        rid: str,
        usd_micros: int,
        tokens: int,
        scopes: Sequence[ScopeLimit] = (),
    ) -> CommitCode:
        args = self.settle_args(rid, usd_micros, tokens, scopes, "C")
        return CommitCode(int(self.run_script("settle", self._keys(rid, scopes), args)))

    def release(self, rid: str, scopes: Sequence[ScopeLimit] = ()) -> CommitCode:
        args = self.settle_args(rid, 0, 0, scopes, "R")
        return CommitCode(int(self.run_script("settle", self._keys(rid, scopes), args)))

    def extend(self, rid: str, scopes: Sequence[ScopeLimit], lease_s: float) -> bool:
        if not scopes:
            return False
        args = [rid, str(int(lease_s * 1000)), self.record_ms]
        return int(self.run_script("extend", self._keys(rid, scopes), args)) == 1

    def snapshot(self, scope: str) -> ScopeState:
        keys = self._keys("", [ScopeLimit(scope)])[1:]
        return state_from(scope, self.run_script("snapshot", keys, [_SWEEP]).split())

    def ping(self) -> None:
        """Raise LedgerUnavailable unless the ledger can be used: the server answers, and runs
        a script on a probe key as every call does (so a user without permission to, or a
        Cluster node behind a plain URL, is not taken for a ledger that is back)."""
        try:
            self.client.ping()
        except self._errors as exc:
            raise self._unavailable(exc) from exc
        self.snapshot(CHECK_SCOPE)

    def check(self) -> list[str]:
        """Prove the ledger usable now, or raise LedgerUnavailable saying why in one line.

        Connects (TLS verified, user authenticated), refuses a Cluster node behind a plain URL
        (it would answer MOVED for most keys), and runs a script on a probe key the way every
        call does. Returns warnings about settings that put spend at risk (eviction).
        """
        self.ping()
        info = self._info()
        if str(info.get("cluster_enabled", "0")) == "1":
            raise LedgerUnavailable(
                f"Redis ledger {redacted(self.url).split('?', 1)[0]}: the server is a Redis "
                "Cluster node; use redis+cluster://host:port[,host:port...]"
            )
        return self._warnings(info)

    def _info(self) -> dict[str, Any]:
        try:
            return dict(self.client.info())
        except self._errors as exc:
            raise self._unavailable(exc) from exc

    def _warnings(self, info: dict[str, Any]) -> list[str]:
        policy = info.get("maxmemory_policy")
        if policy is not None and policy != "noeviction":
            return [
                f"Redis ledger {redacted(self.url).split('?', 1)[0]}: maxmemory-policy is "
                f"{policy}; an evicted counter is a budget silently reset: use noeviction"
            ]
        return []

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()
            client.connection_pool.disconnect()

    # -- asyncio protocol --------------------------------------------------------------------
    async def areserve(
        self,
        rid: str,
        scopes: Sequence[ScopeLimit],
        usd_micros: int,
        tokens: int,
        lease_s: float,
    ) -> Reservation:
        args = [*self.reserve_args(rid, scopes, usd_micros, tokens, lease_s), _SWEEP, specs(scopes)]
        reply = await self.arun_script("reserve", self._keys(rid, scopes), args)
        return reservation_from(scopes, usd_micros, tokens, reply)

    async def acommit(
        self, rid: str, usd_micros: int, tokens: int, scopes: Sequence[ScopeLimit] = ()
    ) -> CommitCode:
        args = self.settle_args(rid, usd_micros, tokens, scopes, "C")
        return CommitCode(int(await self.arun_script("settle", self._keys(rid, scopes), args)))

    async def arelease(self, rid: str, scopes: Sequence[ScopeLimit] = ()) -> CommitCode:
        args = self.settle_args(rid, 0, 0, scopes, "R")
        return CommitCode(int(await self.arun_script("settle", self._keys(rid, scopes), args)))


class _LoopClient:
    """One event loop's asyncio client, its closer, the task that prepares it, and a semaphore
    that makes coroutines wait for a connection rather than fail when more than the pool's size
    run at once."""

    __slots__ = ("client", "ready", "slots")

    def __init__(
        self, client: Any, slots: asyncio.Semaphore, ready: asyncio.Task[AsyncGenerator[None]]
    ) -> None:
        self.client = client
        self.slots = slots
        self.ready = ready  # its result, the closer, lives as long as this


def _retry_on() -> list[type[Exception]]:
    import redis.exceptions as rexc

    return [rexc.ConnectionError, rexc.TimeoutError]


async def _close_on_shutdown(
    client: Any, aclose: Callable[[Any], Awaitable[None]]
) -> AsyncGenerator[None]:
    try:
        yield
    finally:
        await aclose(client)
