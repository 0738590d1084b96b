"""The Redis ledger over TLS with an ACL user, as managed Redis runs it: a real redis-server
that speaks only TLS, wants a client certificate, and knows a least-privilege ACL user.

The right CA, client certificate and password work (sync, async, through COSTSPAN_LEDGER). A
wrong CA, an expired server certificate, a missing client certificate, a wrong password or a
missing permission are each one clear line from ``check_ledger()`` and ``costspan doctor``, and
at run time a LedgerUnavailable (the fail mode decides; ``closed`` refuses before sending).
The password never shows in errors, logs, reprs or spans; a wrong one is sent once, not once
per retry.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import openai
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import costspan
from costspan._runtime import runtime, set_ledger
from costspan.ledgers import (
    CommitCode,
    FailSafeLedger,
    LedgerUnavailable,
    RedisLedger,
    ScopeLimit,
)
from costspan.ledgers._open import check_ledger, parse_ledger_url
from costspan.ledgers._redis_errors import explain, redacted
from costspan.testing import OpenAICompatibleServer
from tests.conftest import USER
from tests.redis_cluster import LocalCluster
from tests.redis_tls import Certificates, TlsRedisServer, make_certificates

PASSWORD = "p@ss:w/rd s3cret!"  # characters that need quoting in a URL
LEDGER_RULES = [
    "~costspan:*", "resetchannels", "-@all", "+evalsha", "+eval", "+ping", "+info",
    "+hget", "+hmget", "+hset", "+hdel", "+hincrby", "+exists", "+zadd", "+zrem",
    "+zrangebyscore", "+expireat", "+pexpire", "+del", "+time",
]  # fmt: skip
"""The least a ledger user needs (docs/ledgers.md): its scripts, and what they call."""


@pytest.fixture(name="certs", scope="module")
def _certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("certs"))


@pytest.fixture(name="tls_server", scope="module")
def _tls_server(
    certs: Certificates, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TlsRedisServer]:
    with TlsRedisServer(tmp_path_factory.mktemp("tls"), certs) as server:
        with server.client() as admin:
            admin.execute_command("ACL", "SETUSER", "ledger", "on", f">{PASSWORD}", *LEDGER_RULES)
            admin.execute_command(
                "ACL", "SETUSER", "reader", "on", f">{PASSWORD}", "~costspan:*", "-@all",
                "+ping", "+info", "+hmget",
            )  # fmt: skip
        yield server


@pytest.fixture(name="expired_server", scope="module")
def _expired_server(
    certs: Certificates, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TlsRedisServer]:
    with TlsRedisServer(tmp_path_factory.mktemp("expired"), certs, expired=True) as server:
        yield server


@pytest.fixture(name="tls_cluster", scope="module")
def _tls_cluster(
    certs: Certificates, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalCluster]:
    """A 3-primary Redis Cluster speaking only TLS (clients, bus), with the ledger's ACL user
    on every node: the managed-cluster set-up (TLS + ACL + Cluster)."""
    with LocalCluster(tmp_path_factory.mktemp("tls-cluster"), tls=certs) as cluster:
        for port in cluster.ports:
            with cluster.node(port) as node:
                node.execute_command("ACL", "SETUSER", "ledger", "on", f">{PASSWORD}",
                                     *LEDGER_RULES, "+cluster|slots", "+cluster|info",
                                     "+command")  # fmt: skip
        yield cluster


def _acl_denials(server: TlsRedisServer, user: str) -> int:
    with server.client() as admin:
        entries: list[dict[str, Any]] = admin.acl_log()
        return sum(int(e["count"]) for e in entries if e["username"] == user)


def _refused(url: str) -> str:
    """check_ledger()'s one line for a URL, asserted to exist, be one line, hide the password."""
    problem = check_ledger(parse_ledger_url("COSTSPAN_LEDGER", url))
    assert problem is not None
    assert "\n" not in problem
    assert PASSWORD not in problem
    return problem


def test_tls_with_ca_client_certificate_and_acl_user(tls_server: TlsRedisServer) -> None:
    """The right CA, client certificate and credentials: every operation works, over TLS only,
    as the least-privilege user; the check passes without warnings."""
    url = tls_server.tls_url("ledger", PASSWORD)
    assert check_ledger(parse_ledger_url("COSTSPAN_LEDGER", url)) is None
    ledger = RedisLedger(url)
    scope = ScopeLimit("user:tls", cap_micros=10_000)
    assert ledger.reserve("t1", [scope], 8_000, 10, 60).granted
    assert not ledger.reserve("t2", [scope], 8_000, 10, 60).granted
    assert ledger.commit("t1", 5_000, 7, [scope]) is CommitCode.COMMITTED
    assert ledger.snapshot("user:tls").spent_micros == 5_000
    assert ledger.check() == []
    with tls_server.client() as admin:
        users = {c["user"] for c in admin.client_list() if c.get("user") != "default"}
    assert users == {"ledger"}
    ledger.close()


async def test_async_client_over_tls(tls_server: TlsRedisServer) -> None:
    """The asyncio client reads the same TLS options and credentials from the URL."""
    ledger = RedisLedger(tls_server.tls_url("ledger", PASSWORD))
    scope = ScopeLimit("user:tls-async", cap_micros=10_000)
    assert (await ledger.areserve("a1", [scope], 4_000, 1, 60)).granted
    assert await ledger.acommit("a1", 3_000, 1, [scope]) is CommitCode.COMMITTED
    assert ledger.snapshot("user:tls-async").spent_micros == 3_000
    ledger.close()


def test_verification_is_on_by_default(tls_server: TlsRedisServer) -> None:
    """Without ssl_ca_certs the system's CAs are the trust store: a private CA is refused."""
    problem = _refused(tls_server.tls_url("ledger", PASSWORD, trust=False))
    assert "TLS certificate verification failed" in problem
    assert "self-signed certificate in certificate chain" in problem


def test_wrong_ca_is_one_clear_line(tls_server: TlsRedisServer) -> None:
    """A CA that did not sign the server's certificate: refused, and said so."""
    problem = _refused(tls_server.tls_url("ledger", PASSWORD, ca=tls_server.certs.other_ca))
    assert "TLS certificate verification failed" in problem
    assert "ssl_ca_certs must name the CA" in problem
    assert problem.startswith("Redis ledger rediss://ledger:***@127.0.0.1:")


def test_expired_server_certificate_is_one_clear_line(expired_server: TlsRedisServer) -> None:
    """The server presents a certificate that ended yesterday: refused, and said so."""
    problem = _refused(expired_server.tls_url("ledger", PASSWORD))
    assert "TLS certificate verification failed: certificate has expired" in problem


def test_wrong_password_is_one_clear_line_sent_once(tls_server: TlsRedisServer) -> None:
    """A wrong password: one line naming the user, and one attempt however many retries."""
    before = _acl_denials(tls_server, "ledger")
    url = tls_server.tls_url("ledger", "not-the-password", retries="3")
    problem = _refused(url)
    assert "authentication failed as 'ledger'" in problem
    assert "not-the-password" not in problem
    assert _acl_denials(tls_server, "ledger") - before == 1


def test_missing_client_certificate_is_refused(tls_server: TlsRedisServer) -> None:
    """The server demands a client certificate: without one the ledger is unavailable."""
    problem = _refused(tls_server.tls_url("ledger", PASSWORD, client_cert=False))
    assert problem.startswith("Redis ledger rediss://ledger:***@")


def test_plain_url_to_a_tls_port_hints_at_rediss(tls_server: TlsRedisServer) -> None:
    """redis:// to a TLS-only port: unavailable, with a hint."""
    problem = _refused(f"redis://ledger:{quote(PASSWORD, safe='')}@127.0.0.1:{tls_server.port}")
    assert "rediss://" in problem


def test_missing_permission_is_one_clear_line(tls_server: TlsRedisServer) -> None:
    """A user without the scripting commands: unavailable (never a bug report), with the fix."""
    problem = _refused(tls_server.tls_url("reader", PASSWORD))
    assert "may not run the ledger's commands" in problem
    ledger = RedisLedger(tls_server.tls_url("reader", PASSWORD))
    with pytest.raises(LedgerUnavailable, match="no permissions to run the 'evalsha'"):
        ledger.commit("p", 1, 0, [ScopeLimit("x")])
    ledger.close()


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("ssl_ca_certs=/nonexistent/ca.pem", "ssl_ca_certs='/nonexistent/ca.pem': no such file"),
        ("ssl_certfile=/nonexistent/c.pem", "ssl_certfile='/nonexistent/c.pem': no such file"),
        ("ssl_cert_reqs=maybe", "ssl_cert_reqs must be one of none, optional, required"),
    ],
)
def test_tls_options_are_checked_when_configured(option: str, message: str) -> None:
    """A certificate file that is not there fails configure(), not the first call."""
    secret = quote(PASSWORD, safe="")
    with pytest.raises(ValueError, match=message):
        costspan.configure(ledger=f"rediss://u:{secret}@cache.example:6380/0?{option}")


def test_an_unencoded_password_is_refused_without_showing_it() -> None:
    """A password with / or ? in it, not percent-encoded, cuts the URL short: a clear error
    that shows no part of the password."""
    with pytest.raises(ValueError, match="percent-encode") as caught:
        parse_ledger_url("COSTSPAN_LEDGER", f"rediss://ledger:{PASSWORD}@cache:6380/0")
    assert "s3cret" not in str(caught.value)
    assert "p@ss" not in str(caught.value)
    with pytest.raises(ValueError, match="timeout='soon'") as caught:
        parse_ledger_url("COSTSPAN_LEDGER", "redis://u:hunter22@cache:6379/0?timeout=soon")
    assert "hunter22" not in str(caught.value)


def test_tls_options_need_rediss() -> None:
    """ssl_* options on a plain URL would be ignored (or break redis-py): refused."""
    with pytest.raises(ValueError, match="ssl_ca_certs needs TLS: use rediss://"):
        parse_ledger_url("COSTSPAN_LEDGER", "redis://cache:6379/0?ssl_ca_certs=/etc/ca.pem")


@pytest.mark.parametrize("layout", ["slot", "spread"])
async def test_a_tls_cluster_with_an_acl_user(tls_cluster: LocalCluster, layout: str) -> None:
    """rediss+cluster:// with the CA and an ACL user: sync and async, both layouts; the wrong
    CA is one clear line."""
    secret = quote(PASSWORD, safe="")
    url = tls_cluster.url.replace("rediss+cluster://", f"rediss+cluster://ledger:{secret}@")
    spec = parse_ledger_url("COSTSPAN_LEDGER", f"{url}&layout={layout}")
    assert check_ledger(spec) is None
    ledger = spec.open("closed")
    scope = ScopeLimit(f"user:tls-cluster-{layout}", cap_micros=10_000)
    assert ledger.reserve("c1", [scope], 6_000, 1, 60).granted
    assert not (await ledger.areserve("c2", [scope], 6_000, 1, 60)).granted
    assert await ledger.acommit("c1", 5_000, 1, [scope]) is CommitCode.COMMITTED
    assert ledger.snapshot(scope.key).spent_micros == 5_000
    ledger.close()
    problem = _refused(url.replace("/ca.pem", "/other-ca.pem"))
    assert "TLS certificate verification failed" in problem


# -- at run time: the fail mode decides, the password never leaks ---------------------------------
@pytest.mark.usefixtures("instrumented")
def test_closed_mode_refuses_before_sending_without_a_hang_or_a_leak(
    tls_server: TlsRedisServer,
    server: OpenAICompatibleServer,
    client: openai.OpenAI,
    span_exporter: InMemorySpanExporter,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """fail_mode=closed and a wrong password: BudgetUnavailable before anything is sent, at
    once; no password in the error, the span or the logs."""
    set_ledger(None)
    costspan.configure(ledger=tls_server.tls_url("ledger", "wrong-" + PASSWORD), fail_mode="closed")
    outcome: list[BaseException] = []

    def call() -> None:
        with costspan.budget(usd=1):
            try:
                client.chat.completions.create(model="gpt-4o-mini", messages=USER)
            except BaseException as exc:  # handed to the test thread
                outcome.append(exc)

    worker = threading.Thread(target=call)
    worker.start()
    worker.join(timeout=30)
    assert not worker.is_alive(), "the call hung on the ledger"
    (error,) = outcome
    assert isinstance(error, costspan.BudgetUnavailable)
    assert server.requests == []
    (span,) = span_exporter.get_finished_spans()
    texts = [str(error), repr(error), str(dict(span.attributes or {})), caplog.text]
    texts += [str(event.attributes) for event in span.events]
    texts.append(repr(runtime().ledger))
    for text in texts:
        assert PASSWORD not in text
        assert "s3cret" not in text
    assert "authentication failed as 'ledger'" in caplog.text
    ledger = runtime().ledger
    assert isinstance(ledger, FailSafeLedger)
    ledger._outbox.clear()  # nothing will come back for this outbox
    ledger.engine.close()
    set_ledger(None)


def test_doctor_reports_the_problem_in_one_line(tls_server: TlsRedisServer) -> None:
    """`costspan doctor` with a wrong password: exit 1, the reason on the ledger's line, no
    secret; with the right settings: the ledger answers."""
    cli = Path(sys.executable).with_name("costspan")
    env = {**os.environ, "COLUMNS": "200"}
    env["COSTSPAN_LEDGER"] = tls_server.tls_url("ledger", "wrong-" + PASSWORD)
    bad = subprocess.run(
        [cli, "doctor"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert bad.returncode == 1
    line = next(x for x in bad.stdout.splitlines() if "ledger" in x and "!!" in x)
    assert "authentication failed as 'ledger'" in line
    assert "s3cret" not in bad.stdout + bad.stderr
    env["COSTSPAN_LEDGER"] = tls_server.tls_url("ledger", PASSWORD)
    good = subprocess.run(
        [cli, "doctor"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert "answers in" in good.stdout, good.stdout


# -- redaction -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("rediss://u:pw@h:1/0", "rediss://u:***@h:1/0"),
        ("redis://:pw@h:1/0", "redis://:***@h:1/0"),
        ("redis://h:1/0?password=pw&db=0", "redis://h:1/0?password=***&db=0"),
        ("rediss://h:1/0?ssl_password=pw", "rediss://h:1/0?ssl_password=***"),
        ("redis+cluster://u:pw@a:1,b:2/0", "redis+cluster://u:***@a:1,b:2/0"),
        ("redis://h:1/0", "redis://h:1/0"),
    ],
)
def test_redacted_hides_every_password(url: str, shown: str) -> None:
    """Passwords in the user part and in query options are hidden; nothing else changes."""
    assert redacted(url) == shown


def test_error_text_is_scrubbed_of_the_password() -> None:
    """Even an error whose own text quoted the password (percent-encoded or not) shows ***."""
    url = "rediss://u:p%40ss@h:1/0"
    problem = explain(OSError("failed for p@ss and p%40ss"), url)
    assert "p@ss" not in problem
    assert "p%40ss" not in problem
    assert problem == "Redis ledger rediss://u:***@h:1/0: failed for *** and ***"


def test_repr_hides_the_password(tls_server: TlsRedisServer) -> None:
    """The engine and its fail-safe wrapper show the URL without the password."""
    ledger = parse_ledger_url("COSTSPAN_LEDGER", tls_server.tls_url("ledger", PASSWORD))
    opened = ledger.open("closed")
    assert PASSWORD not in repr(opened)
    assert "s3cret" not in repr(opened)
    assert "ledger:***@" in repr(opened)
    assert isinstance(opened, FailSafeLedger)
    opened.engine.close()


def test_configure_says_at_once_when_the_ledger_cannot_be_used(
    tls_server: TlsRedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """configure() with a wrong password: a one-line error soon after start-up (checked in the
    background, so start-up never waits on the network), naming the reason, not the password."""
    import time

    import costspan

    with caplog.at_level("ERROR", logger="costspan"):
        costspan.configure(ledger=tls_server.tls_url("ledger", "wrong-" + PASSWORD), outbox="off")
        deadline = time.monotonic() + 10
        while "cannot be used now" not in caplog.text:
            assert time.monotonic() < deadline, "no error was logged"
            time.sleep(0.05)
    (record,) = [r for r in caplog.records if "cannot be used now" in r.getMessage()]
    assert "authentication failed as 'ledger'" in record.getMessage()
    assert PASSWORD not in caplog.text
