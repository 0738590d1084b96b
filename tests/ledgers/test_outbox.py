"""The durable outbox: settlements a shared ledger could not take survive the process.

The headline test kills (SIGKILL) a process that made paid calls while Redis was down, brings
Redis back, and checks that the next process to open the ledger replays exactly that spend.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from decimal import Decimal
from pathlib import Path

from costspan._money import micros
from costspan.ledgers import CommitCode, FailSafeLedger, RedisLedger, ScopeLimit, SQLiteLedger
from costspan.ledgers._open import parse_ledger_url
from costspan.ledgers._outbox import MAX_ATTEMPTS, Entry, Outbox, summary
from tests.processes import free_port
from tests.redis_server import RedisServer

SCOPE = (ScopeLimit("limit:*:d1", cap_micros=10_000_000),)


def _entry(rid: str, usd: int = 100) -> Entry:
    return Entry(rid, usd, 5, SCOPE, release=False)


def test_two_processes_never_replay_the_same_entry_at_once(tmp_path: Path) -> None:
    """Entries are claimed in order; a second replayer gets the next one, not the same; a
    claim left by a dead replayer is taken over after a while."""
    path = tmp_path / "outbox.db"
    first, second = Outbox(path, "redis://x#costspan"), Outbox(path, "redis://x#costspan")
    for rid in ("a", "b", "c"):
        first.put(_entry(rid))
    claimed_a = first.claim()
    claimed_b = second.claim()
    assert claimed_a is not None
    assert claimed_b is not None
    assert (claimed_a[1].rid, claimed_b[1].rid) == ("a", "b")
    assert claimed_a[1] == _entry("a")  # the scopes and amounts come back as written
    first.done(claimed_a[0])
    assert first.counts()[0] == 2
    other_ledger = Outbox(path, "sqlite:///elsewhere.db")
    assert other_ledger.claim() is None  # entries belong to their own ledger


def test_a_rejected_entry_is_set_aside_not_dropped(tmp_path: Path) -> None:
    """An entry the store keeps rejecting stops blocking the others after MAX_ATTEMPTS and
    stays in the file, counted as dead, for `costspan doctor`."""
    box = Outbox(tmp_path / "outbox.db", "redis://x#costspan")
    box.put(_entry("bad", 700))
    for _ in range(MAX_ATTEMPTS):
        claimed = box.claim()
        assert claimed is not None
        box.failed(claimed[0], "ResponseError: WRONGTYPE")
    assert box.claim() is None
    assert box.counts() == (0, 1, 0)
    assert summary(tmp_path / "outbox.db") == [("redis://x#costspan", 0, 1, 0)]


def test_an_unwritable_outbox_falls_back_to_memory(tmp_path: Path) -> None:
    """If the outbox file cannot be written, settlements still wait (in memory), and the
    ledger says so; nothing raises into the call."""
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    dead = f"redis://127.0.0.1:{free_port()}/0"
    ledger = FailSafeLedger(RedisLedger(dead), "open", outbox=Outbox(blocker / "o.db", "x"))
    ledger.reserve("r", SCOPE, 10, 0, 60)
    assert ledger.commit("r", 10, 0, SCOPE) is CommitCode.QUEUED
    assert ledger.queued == 1
    ledger.engine.close()


def test_an_sqlite_ledger_outage_is_replayed_from_the_outbox(tmp_path: Path) -> None:
    """The SQLite engine too: a commit it could not take (another process holds the database
    locked past the busy timeout) is replayed by the next ledger that opens the file."""
    db = tmp_path / "ledger.db"
    box = tmp_path / "outbox.db"
    spec = parse_ledger_url("url", f"sqlite://{db}?busy_timeout=0.2")
    ledger = spec.open("local", box)
    assert isinstance(ledger, FailSafeLedger)
    assert ledger.reserve("r1", SCOPE, 500, 5, 60).granted
    locker = sqlite3.connect(db, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    try:
        assert ledger.commit("r1", 400, 5, SCOPE) is CommitCode.QUEUED
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    assert summary(box)[0][1] == 1
    ledger.engine.close()  # this process dies; its prober would otherwise replay it
    reopened = spec.open("local", box)
    deadline = time.monotonic() + 15
    while reopened.snapshot(SCOPE[0].key).spent_micros != 400:
        assert time.monotonic() < deadline, "the outbox was never replayed"
        time.sleep(0.05)
    assert all(live == 0 for _, live, _, _ in summary(box))
    assert SQLiteLedger(db).snapshot(SCOPE[0].key).calls == 1
    reopened.close()


_CHILD = textwrap.dedent(
    """
    import json, sys, threading
    import openai
    import costspan
    from costspan import _runtime
    from costspan.testing import OpenAICompatibleServer

    costspan.instrument()
    with OpenAICompatibleServer() as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="k", max_retries=0)
        hello = [{"role": "user", "content": "hi"}]
        client.chat.completions.create(model="gpt-4o-mini", messages=hello)
        print("ready", flush=True)
        sys.stdin.readline()  # the parent stops Redis now
        def calls(n):
            for i in range(6):
                client.chat.completions.create(
                    model="gpt-4o-mini", messages=[{"role": "user", "content": f"{n} call {i}"}]
                )
        threads = [threading.Thread(target=calls, args=(n,)) for n in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        records = _runtime.runtime().recorder.buffer.records()
        print(json.dumps([str(r.usd) for r in records[1:]]), flush=True)
        print(_runtime.runtime().ledger.queued, flush=True)
        sys.stdin.readline()  # never answered: SIGKILLed here, mid-outage
    """
)


def test_spend_paid_during_an_outage_survives_a_sigkill(tmp_path: Path) -> None:
    """The fail-safe issue's scenario: two threads make paid calls while Redis is down, the
    process is SIGKILLed before Redis returns. A new process that opens the ledger replays the
    outage spend, exactly once."""
    state = tmp_path / "state"
    with RedisServer(tmp_path, aof=True) as server:
        env = {
            **os.environ,
            "XDG_STATE_HOME": str(state),
            "COSTSPAN_LEDGER": server.url,
            "COSTSPAN_LIMITS": "* $10/day",
            "COSTSPAN_FAIL_MODE": "local",
            "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "openai",
        }
        env.pop("COSTSPAN_OUTBOX", None)
        with subprocess.Popen(
            [sys.executable, "-c", _CHILD],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        ) as child:
            assert child.stdout is not None
            assert child.stdin is not None
            assert child.stdout.readline().strip() == "ready"
            with server.client() as client:
                before = {k: client.hgetall(k) for k in client.keys("*:c:*")}
            server.stop()
            child.stdin.write("go\n")
            child.stdin.flush()
            costs = [Decimal(c) for c in json.loads(child.stdout.readline())]
            queued = int(child.stdout.readline())
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=10)
        assert len(costs) == 12
        assert queued == 12
        outage = sum(micros(c) for c in costs)
        assert summary(state / "costspan" / "outbox.db")[0][1:] == (12, 0, outage)

        server.start()
        ledger = parse_ledger_url("url", server.url).open("local", state / "costspan" / "outbox.db")
        assert isinstance(ledger, FailSafeLedger)
        deadline = time.monotonic() + 20
        while ledger.queued:
            assert time.monotonic() < deadline, "the outbox was never replayed"
            time.sleep(0.05)
        (key,) = before
        with server.client() as client:
            spent_before = int(before[key][b"s"])
            assert int(client.hget(key, "s") or 0) == spent_before + outage
        # A second replay of the same entries (another process, the same file) charges nothing.
        again = parse_ledger_url("url", server.url).open("local", state / "costspan" / "outbox.db")
        assert isinstance(again, FailSafeLedger)
        assert again.queued == 0
        ledger.close()
        again.close()


def test_every_spelling_of_a_server_finds_the_same_outbox_entries() -> None:
    """A process that names the same Redis another way (localhost or 127.0.0.1, the default
    port or database written or not, another password, options, the nodes of a cluster in
    another order) replays what the previous one left."""
    same = [
        "redis://127.0.0.1:6379/0",
        "redis://localhost",
        "redis://LOCALHOST:6379/",
        "redis://:secret@127.0.0.1:6379/0?timeout=0.5",
        "redis://user:other@[::1]:6379/0",
    ]
    assert len({parse_ledger_url("url", url).identity for url in same}) == 1
    cluster = ["redis+cluster://b:7001,a:7000/0", "redis+cluster://a:7000,b:7001"]
    assert len({parse_ledger_url("url", url).identity for url in cluster}) == 1
    assert parse_ledger_url("url", "redis://127.0.0.1:6379/1").identity not in {
        parse_ledger_url("url", same[0]).identity
    }
