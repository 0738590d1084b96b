"""The Redis ledger on a real local Redis Cluster (3 primaries): URL forms, redirections
followed (MOVED, ASK and TRYAGAIN while the ledger's slot migrates), scripts the nodes forgot,
an unreachable cluster, an ACL user, and the mistake the issue reported: a plain ``redis://``
URL naming a cluster node, which must never let a call through unmetered.

The engine protocol, budget and concurrency suites run on the cluster too (ENGINES).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest
import redis

import costspan
from costspan._runtime import runtime, set_ledger
from costspan.ledgers import CommitCode, FailSafeLedger, LedgerUnavailable, ScopeLimit
from costspan.ledgers._open import check_ledger, parse_ledger_url
from costspan.ledgers._redis import script_sha
from costspan.ledgers._redis_cluster import RedisClusterLedger, cluster_nodes
from costspan.testing import OpenAICompatibleServer
from tests.conftest import USER
from tests.processes import free_port, wait_until
from tests.redis_cluster import LocalCluster

LEDGER_KEY = "costspan:{ledger}:c:x"  # any key of the default layout: they share one slot


@pytest.fixture(name="cluster")
def _cluster(redis_cluster: LocalCluster) -> LocalCluster:
    redis_cluster.flush()
    return redis_cluster


@pytest.fixture(autouse=True)
def _no_configured_ledger() -> Iterator[None]:
    set_ledger(None)
    yield
    set_ledger(None)


def _other_primary(cluster: LocalCluster) -> int:
    owner = cluster.primary_of(LEDGER_KEY)
    return next(p for p in cluster.primaries_ports() if p != owner)


# -- URLs ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("url", "nodes"),
    [
        ("redis+cluster://10.0.0.1:7000,10.0.0.2:7001", [("10.0.0.1", 7000), ("10.0.0.2", 7001)]),
        ("rediss+cluster://u:p@cache.example/0", [("cache.example", 6379)]),
        ("redis+cluster://[::1]:7000,[fd00::2]", [("::1", 7000), ("fd00::2", 6379)]),
    ],
)
def test_cluster_url_forms(url: str, nodes: list[tuple[str, int]]) -> None:
    """Several startup nodes, the default port, IPv6 literals."""
    assert cluster_nodes(url) == nodes
    assert parse_ledger_url("COSTSPAN_LEDGER", url).engine == "redis"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis+cluster://a:1,b:2/3", "only database 0"),
        ("redis+cluster://a:1,b:x", "'b:x': the port is not a number"),
        ("redis+cluster://a:1,:2", "is not host:port"),
        ("redis+cluster://a:99999", "the port must be 1-65535"),
        ("redis+cluster://a:1?decode_responses=1", "unknown option 'decode_responses'"),
        ("redis+cluster://a:1?ssl_ca_certs=/etc/ca.pem", "ssl_\\* options need rediss"),
        ("redis+cluster://u:secret@a:1?layout=diagonal", "layout must be one of slot, spread"),
        ("redis+cluster://a:1?lease=limit:*:", "lease applies to layout=spread"),
        ("redis+cluster://a:1?prefix=x{y}", "prefix must not contain"),
    ],
)
def test_bad_cluster_urls_are_clear_errors(url: str, message: str) -> None:
    """Mistakes in a cluster URL fail when configured, without the password."""
    with pytest.raises(ValueError, match=message) as caught:
        parse_ledger_url("COSTSPAN_LEDGER", url)
    assert "secret" not in str(caught.value)


# -- redirections --------------------------------------------------------------------------------
def test_moved_is_followed_from_any_node(cluster: LocalCluster) -> None:
    """The URL names only a node that does not own the ledger's slot: MOVED is followed."""
    url = f"redis+cluster://127.0.0.1:{_other_primary(cluster)}"
    ledger = RedisClusterLedger(url)
    scope = ScopeLimit("user:moved", cap_micros=1_000)
    assert ledger.reserve("m1", [scope], 600, 0, 60).granted
    assert not ledger.reserve("m2", [scope], 600, 0, 60).granted
    assert ledger.commit("m1", 500, 0, [scope]) is CommitCode.COMMITTED
    assert ledger.snapshot("user:moved").spent_micros == 500
    assert ledger.check() == []
    ledger.close()


async def test_scripts_a_node_forgot_are_sent_again(cluster: LocalCluster) -> None:
    """SCRIPT FLUSH on every node (a restart, a new primary): the next call answers NOSCRIPT,
    sends the source with EVAL, and the node knows the script again."""
    ledger = RedisClusterLedger(cluster.url)
    scope = ScopeLimit("user:noscript", cap_micros=10_000)
    assert ledger.reserve("n1", [scope], 1_000, 0, 60).granted
    for port in cluster.primaries_ports():
        with cluster.node(port) as node:
            node.script_flush()
    assert ledger.commit("n1", 700, 0, [scope]) is CommitCode.COMMITTED
    for port in cluster.primaries_ports():
        with cluster.node(port) as node:
            node.script_flush()
    assert (await ledger.areserve("n2", [scope], 1_000, 0, 60)).granted
    assert await ledger.acommit("n2", 300, 0, [scope]) is CommitCode.COMMITTED
    assert ledger.snapshot("user:noscript").spent_micros == 1_000
    with cluster.node(cluster.primary_of(LEDGER_KEY)) as owner:
        assert owner.script_exists(script_sha("settle")) == [True]
    ledger.close()


def _migrate_slot(cluster: LocalCluster, slot: int, source: int, target: int) -> None:
    """Move one slot the way redis-cli --cluster reshard does, a few keys at a time."""
    with cluster.node(source) as src, cluster.node(target) as dst:
        src_id, dst_id = src.cluster("MYID"), dst.cluster("MYID")
        dst.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", src_id)
        src.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", dst_id)
        while keys := src.execute_command("CLUSTER GETKEYSINSLOT", slot, 5):
            src.execute_command("MIGRATE", "127.0.0.1", target, "", 0, 5000, "KEYS", *keys)
            time.sleep(0.002)  # calls run meanwhile, on keys on either side
        for port in cluster.primaries_ports():
            with cluster.node(port) as node:
                node.execute_command("CLUSTER SETSLOT", slot, "NODE", dst_id)


def test_a_migrating_slot_loses_and_doubles_nothing(cluster: LocalCluster) -> None:
    """The ledger's slot moves to another primary while 4 threads reserve and commit: the
    client follows ASK, TRYAGAIN and MOVED (retrying idempotent scripts), and every counter is
    the exact sum of what was committed."""
    ledger = RedisClusterLedger(cluster.url, timeout_s=5.0, retries=3)
    scope = ScopeLimit("user:migrating", cap_micros=10**12)
    committed: list[int] = []
    failures: list[BaseException] = []
    stop = threading.Event()
    lock = threading.Lock()

    def work(n: int) -> None:
        i = 0
        while not stop.is_set() or i < 20:
            rid = f"mig-{n}-{i}"
            try:
                if ledger.reserve(rid, [scope], 100, 1, 60).granted:
                    assert ledger.commit(rid, 40 + n, 1, [scope]) in (
                        CommitCode.COMMITTED,
                        CommitCode.DUPLICATE,
                    )
                    with lock:
                        committed.append(40 + n)
            except BaseException as exc:  # collected for the assertion below
                failures.append(exc)
                return
            i += 1

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    source = cluster.primary_of(LEDGER_KEY)
    with cluster.node(source) as node:
        slot = int(node.cluster("KEYSLOT", LEDGER_KEY))
        node.config_resetstat()
    wait_until(lambda: len(committed) > 100, "calls before the migration", 30)
    target = _other_primary(cluster)
    with cluster.node(target) as node:
        node.config_resetstat()
    _migrate_slot(cluster, slot, source, target)
    stop.set()
    for t in threads:
        t.join()
    assert failures == []
    # The redirections really happened (the servers count the errors they answered).
    errors: dict[str, int] = {}
    for port in (source, target):
        with cluster.node(port) as node:
            for name, stats in node.info("errorstats").items():
                errors[name] = errors.get(name, 0) + int(stats["count"])
    assert errors.get("errorstat_MOVED", 0) > 0
    assert errors.get("errorstat_ASK", 0) + errors.get("errorstat_TRYAGAIN", 0) > 0
    assert cluster.primary_of(LEDGER_KEY) != source
    state = ledger.snapshot("user:migrating")
    assert (state.spent_micros, state.calls, state.held_micros) == (
        sum(committed),
        len(committed),
        0,
    )
    ledger.close()


# -- the wrong client, and no cluster at all -----------------------------------------------------
@pytest.mark.usefixtures("instrumented")
def test_a_plain_url_to_a_cluster_node_never_sends_unmetered(
    cluster: LocalCluster, client: openai.OpenAI, server: OpenAICompatibleServer
) -> None:
    """The issue's case: redis:// naming a cluster node, COSTSPAN_FAIL_MODE=closed and a tiny
    per-user cap. Through a node that does not own the slot every call is refused (MOVED is
    "unavailable", never "unmetered"); the node that owns it works, and doctor's check says to
    use redis+cluster:// either way."""
    for port, sent_at_most in ((_other_primary(cluster), 0), (cluster.primary_of(LEDGER_KEY), 1)):
        cluster.flush()
        url = f"redis://127.0.0.1:{port}/0"
        problem = check_ledger(parse_ledger_url("COSTSPAN_LEDGER", url))
        assert problem is not None
        assert "use redis+cluster://" in problem
        set_ledger(None)
        costspan.configure(ledger=url, fail_mode="closed", limits="user.id $0.0001/day")
        before = len(server.requests)
        outcomes: list[str] = []
        with costspan.tags({"user.id": "alice"}):
            for _ in range(4):
                try:
                    client.chat.completions.create(
                        model="gpt-4o-mini",
                        messages=USER,
                        max_completion_tokens=100,
                        extra_headers={"x-costspan-test-output-tokens": "100"},
                    )
                    outcomes.append("sent")
                except costspan.BudgetUnavailable:
                    outcomes.append("unavailable")
                except costspan.BudgetExceeded:
                    outcomes.append("refused")
        assert len(server.requests) - before == outcomes.count("sent") <= sent_at_most
        ledger = runtime().ledger
        assert isinstance(ledger, FailSafeLedger)
        ledger._outbox.clear()  # nothing to replay into a ledger this test abandons
        ledger.engine.close()


def test_an_unreachable_cluster_is_one_line_and_no_hang() -> None:
    """No node answers: a one-line check, LedgerUnavailable at run time (the fail mode)."""
    url = f"redis+cluster://127.0.0.1:{free_port()},127.0.0.1:{free_port()}"
    problem = check_ledger(parse_ledger_url("COSTSPAN_LEDGER", url))
    assert problem is not None
    assert problem.startswith(f"Redis ledger {url}: ")
    assert "\n" not in problem
    ledger = RedisClusterLedger(url)
    with pytest.raises(LedgerUnavailable):
        ledger.reserve("r", [ScopeLimit("s", cap_micros=1)], 1, 0, 60)
    ledger.close()


# -- an ACL user on every node -------------------------------------------------------------------
CLUSTER_RULES = [
    "~costspan:*", "resetchannels", "-@all", "+evalsha", "+eval", "+ping", "+info",
    "+hget", "+hmget", "+hset", "+hdel", "+hincrby", "+exists", "+zadd", "+zrem",
    "+zrangebyscore", "+expireat", "+pexpire", "+del", "+time",
    "+cluster|slots", "+cluster|info", "+command",
]  # fmt: skip
"""The ledger user's rules on a cluster (docs/ledgers.md): the single-server ones, and what the
cluster client reads when it starts (the slot map, the command table)."""


@pytest.mark.parametrize("layout", ["slot", "spread"])
async def test_an_acl_user_on_every_node(cluster: LocalCluster, layout: str) -> None:
    """The documented ACL rules are enough on a cluster, sync and async, in both layouts; a
    user without CLUSTER SLOTS gets a hint instead of redis-py's misleading message."""
    for port in cluster.ports:
        with cluster.node(port) as node:
            node.execute_command("ACL", "SETUSER", "ledger", "reset", "on", ">pw", *CLUSTER_RULES)
            node.execute_command("ACL", "SETUSER", "bare", "reset", "on", ">pw", "~*", "+@all",
                                 "-cluster")  # fmt: skip
    spec = parse_ledger_url(
        "COSTSPAN_LEDGER", cluster.url.replace("//", "//ledger:pw@") + f"?layout={layout}"
    )
    assert check_ledger(spec) is None
    ledger: Any = spec.open("closed")
    scope = ScopeLimit("user:acl", cap_micros=1_000)
    assert ledger.reserve("a1", [scope], 500, 0, 60).granted
    assert await ledger.acommit("a1", 400, 0, [scope]) is CommitCode.COMMITTED
    assert ledger.snapshot("user:acl").spent_micros == 400
    ledger.close()
    bare = check_ledger(parse_ledger_url("L", cluster.url.replace("//", "//bare:pw@")))
    assert bare is not None
    assert "may not run CLUSTER SLOTS" in bare


def test_a_wrong_password_on_a_cluster_is_one_line_sent_once(cluster: LocalCluster) -> None:
    """The cluster client wraps a wrong password in its own error: still one line saying so,
    and one attempt per startup node it tries (discovery), never one per retry."""
    for port in cluster.ports:
        with cluster.node(port) as node:
            node.execute_command("ACL", "SETUSER", "ledger", "reset", "on", ">pw", *CLUSTER_RULES)
            node.acl_log_reset()
    url = cluster.url.replace("//", "//ledger:not-pw@") + "?retries=3"
    problem = check_ledger(parse_ledger_url("COSTSPAN_LEDGER", url))
    assert problem is not None
    assert "authentication failed as 'ledger'" in problem
    assert "not-pw" not in problem
    denied = 0
    for port in cluster.ports:
        with cluster.node(port) as node:
            entries: list[dict[str, Any]] = node.acl_log()
            denied += sum(int(e["count"]) for e in entries if e["username"] == "ledger")
    assert denied == len(cluster_nodes(url)) == 2


def test_the_cluster_client_is_redis_py_s(cluster: LocalCluster) -> None:
    """The engine's client is redis-py's cluster client, which knows every primary."""
    ledger = RedisClusterLedger(cluster.url)
    assert isinstance(ledger.client, redis.RedisCluster)
    primaries = {n.port for n in ledger.client.get_primaries()}
    assert primaries == set(cluster.primaries_ports())
    ledger.close()
