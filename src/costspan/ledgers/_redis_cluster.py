"""The Redis ledger on a Redis Cluster: the same keys and scripts, through redis-py's cluster
clients (sync and asyncio), which follow ``MOVED`` and ``ASK`` redirections and refresh the
slot map after a failover.

URL: ``redis+cluster://[user:password@]host:port[,host:port...][/0][?options]`` (``rediss+cluster``
for TLS). The nodes listed are only where the client starts: it discovers the others (and their
replicas) from the cluster itself, so one reachable node is enough, and listing two or three
keeps the ledger starting when one of them is down. Options are the single-server ones
(``ssl_ca_certs``...); a cluster has only database 0.

Retries stay bounded and safe: redis-py retries a cluster command after a connection error or
``CLUSTERDOWN`` (``retries`` times, after refreshing the slot map), and the scripts are
idempotent by reservation id, so a retried reserve holds once and a retried commit charges once
(unlike the ``INCRBYFLOAT`` retries that inflated LiteLLM's counters on ElastiCache).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

from costspan.ledgers._protocol import LedgerUnavailable
from costspan.ledgers._redis import POOL_SIZE, POOL_WAIT_S, RedisLedger
from costspan.ledgers._redis_errors import is_permanent, redacted, retry_policy

CLUSTER_SCHEMES: Final = ("redis+cluster", "rediss+cluster")
CLUSTER_OPTIONS: Final = frozenset(
    {
        "ssl_ca_certs",
        "ssl_ca_path",
        "ssl_ca_data",
        "ssl_certfile",
        "ssl_keyfile",
        "ssl_cert_reqs",
        "ssl_check_hostname",
        "ssl_ciphers",
        "ssl_min_version",
        "client_name",
        "health_check_interval",
        "socket_keepalive",
    }
)
"""The redis-py options a cluster URL may carry (both cluster clients accept them)."""


def cluster_nodes(url: str) -> list[tuple[str, int]]:
    """The ``host:port`` list of a cluster URL; ValueError names a bad entry."""
    netloc = urlsplit(url).netloc.rpartition("@")[2]
    nodes: list[tuple[str, int]] = []
    for item in netloc.split(","):
        entry = item.strip()
        if entry.startswith("["):  # [v6 address]:port
            host, _, rest = entry[1:].partition("]")
            port_text = rest[1:] if rest.startswith(":") else ""
        else:
            host, sep, port_text = entry.rpartition(":")
            if not sep:
                host, port_text = entry, ""
        if not host:
            raise ValueError(f"{entry!r} is not host:port")
        try:
            port = int(port_text) if port_text else 6379
        except ValueError:
            raise ValueError(f"{entry!r}: the port is not a number") from None
        if not 0 < port < 65536:
            raise ValueError(f"{entry!r}: the port must be 1-65535")
        nodes.append((host, port))
    return nodes


def cluster_settings(url: str) -> tuple[list[tuple[str, int]], dict[str, Any]]:
    """Startup nodes and the connection settings (user, password, TLS...) of a cluster URL."""
    parts = urlsplit(url)
    nodes = cluster_nodes(url)
    settings: dict[str, Any] = {}
    if parts.username:
        settings["username"] = unquote(parts.username)
    if parts.password:
        settings["password"] = unquote(parts.password)
    db = parts.path.strip("/")
    if db not in ("", "0"):
        raise ValueError("a Redis Cluster has only database 0")
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key not in CLUSTER_OPTIONS:
            raise ValueError(f"unknown option {key!r} for a cluster URL")
        settings[key] = _cluster_option(key, value)
    if parts.scheme.lower().startswith("rediss"):
        settings["ssl"] = True
    elif any(key.startswith("ssl_") for key in settings):
        raise ValueError("ssl_* options need rediss+cluster://")
    return nodes, settings


def _cluster_option(key: str, value: str) -> Any:
    if key in ("ssl_check_hostname", "socket_keepalive"):
        if value.lower() not in ("1", "0", "true", "false", "yes", "no"):
            raise ValueError(f"option {key}={value!r} is not a boolean")
        return value.lower() in ("1", "true", "yes")
    if key in ("health_check_interval", "ssl_min_version"):
        try:
            return int(value)
        except ValueError:
            raise ValueError(f"option {key}={value!r} is not a whole number") from None
    return value


def first_node_url(url: str) -> str:
    """The cluster URL as a one-node ``redis://`` (``rediss://``) URL for redis-py's parser."""
    parts = urlsplit(url)
    host, port = cluster_nodes(url)[0]
    userinfo = parts.netloc.rpartition("@")[0]
    scheme = "rediss" if parts.scheme.lower().startswith("rediss") else "redis"
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    netloc = f"{userinfo}@{where}" if userinfo else where
    return urlunsplit((scheme, netloc, "/0", parts.query, ""))


class RedisClusterLedger(RedisLedger):
    """The Redis ledger on a Redis Cluster (``redis+cluster://`` URL; see the module doc).

    Every key of a call shares the ``{ledger}`` hash tag, so each script runs on the one
    primary that owns that slot; ``SpreadLedger`` spreads scopes over every primary instead.
    """

    def __init__(self, url: str, **options: Any) -> None:
        super().__init__(url, **options)
        self.nodes, self._settings = cluster_settings(url)

    def _connect(self) -> Any:
        from redis import BlockingConnectionPool
        from redis.cluster import ClusterNode, RedisCluster

        # Made from a one-node URL so that redis-py builds each node's pool with the blocking
        # class: callers wait their turn rather than fail with "Too many connections" past its
        # size. The cluster client reads the slot map when made, so an unreachable cluster
        # raises here (LedgerUnavailable for the caller; the next call tries again).
        return RedisCluster(
            url=first_node_url(self.url),
            startup_nodes=[ClusterNode(h, p) for h, p in self.nodes[1:]],
            retry=retry_policy(self._retries),
            socket_timeout=self._timeout,
            socket_connect_timeout=self._timeout,
            connection_pool_class=BlockingConnectionPool,
            max_connections=POOL_SIZE,
            timeout=POOL_WAIT_S,
        )

    def _aconnect(self) -> Any:
        from redis.asyncio.cluster import ClusterNode, RedisCluster

        host, port = self.nodes[0]
        return RedisCluster(
            host=host,
            port=port,
            startup_nodes=[ClusterNode(h, p) for h, p in self.nodes[1:]],
            retry=retry_policy(self._retries, asyncio=True),
            socket_timeout=self._timeout,
            socket_connect_timeout=self._timeout,
            # Coroutines wait on the loop client's semaphore (POOL_SIZE), never on this.
            max_connections=POOL_SIZE,
            **self._settings,
        )

    def _run_waited(self, client: Any, name: str, keys: Sequence[str], args: Sequence[str]) -> Any:
        """The script and WAIT on one connection of the primary that owns the keys' slot: the
        cluster client would send WAIT elsewhere. A slot that moved (MOVED, ASK) refreshes the
        slot map and goes again (safe: the scripts are idempotent)."""
        import redis.exceptions as e

        failures = 0
        while True:
            node = client.get_node_from_key(keys[0])
            try:
                return self.waited(node.redis_connection, name, keys, args)
            except (e.AskError, e.TryAgainError, e.ConnectionError, e.TimeoutError) as exc:
                failures += 1
                if failures > self._retries + 1 or is_permanent(exc):
                    raise
                client.nodes_manager.initialize()

    async def _ainitialize(self, client: Any) -> None:
        # Read the slot map once, before any call: redis-py's asyncio cluster client otherwise
        # initialises on the first calls, and when many start at once the ones on the startup
        # node's connections fail ("Connection closed by server") as the map replaces them.
        await client.initialize()

    @staticmethod
    async def _aclose(client: Any) -> None:
        await client.aclose()

    def ping(self) -> None:
        """Raise LedgerUnavailable unless every primary answers and the ledger's slot runs a
        script on a probe key."""
        from redis.cluster import RedisCluster

        from costspan.ledgers._redis import CHECK_SCOPE

        try:
            self.client.ping(target_nodes=RedisCluster.PRIMARIES)
        except self._errors as exc:
            raise self._unavailable(exc) from exc
        self.snapshot(CHECK_SCOPE)

    def check(self) -> list[str]:
        """Prove the cluster usable (every primary answers, every slot is served, the scripts
        run on a probe key) or raise LedgerUnavailable saying why in one line."""
        self.ping()
        try:
            state = self.client.cluster_info().get("cluster_state")
        except self._errors as exc:
            raise self._unavailable(exc) from exc
        if state not in ("ok", b"ok"):
            raise LedgerUnavailable(
                f"Redis ledger {redacted(self.url).split('?', 1)[0]}: cluster_state is "
                f"{state!r}, not ok"
            )
        return self._warnings(self._info())

    def _info(self) -> dict[str, Any]:
        from redis.cluster import RedisCluster

        try:
            by_node = self.client.info("memory", target_nodes=RedisCluster.PRIMARIES)
        except self._errors as exc:
            raise self._unavailable(exc) from exc
        # One node's answer is a dict of fields; several nodes' a dict of dicts by node.
        values: Sequence[Any] = (
            list(by_node.values()) if all(isinstance(v, dict) for v in by_node.values()) else []
        )
        policies = {v.get("maxmemory_policy") for v in values} or {by_node.get("maxmemory_policy")}
        bad = sorted(str(p) for p in policies if p is not None and p != "noeviction")
        return {"maxmemory_policy": bad[0] if bad else "noeviction"}

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()
