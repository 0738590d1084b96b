"""A real local Redis Cluster for tests: N primaries (and optional replicas) on loopback, each a
redis-server with its own free port and directory, joined with ``redis-cli --cluster create``;
optionally TLS only (clients, cluster bus and replication), with the tests' CA.

Failover is real too: :meth:`LocalCluster.failover` runs ``CLUSTER FAILOVER`` on a replica (the
coordinated manual failover: the primary stops taking writes until its replica has caught up,
then they swap roles) and :meth:`LocalCluster.kill` SIGKILLs a node (the replica takes over
after ``cluster-node-timeout``; writes it had not received yet are lost, as in production).
"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path
from types import TracebackType
from typing import Any

import redis
import redis.exceptions

from tests.processes import free_port, stop, wait_until
from tests.redis_server import redis_binary
from tests.redis_tls import Certificates

NODE_TIMEOUT_MS = 1000


class LocalCluster:
    """Start and stop a local Redis Cluster; fail primaries over."""

    def __init__(
        self,
        directory: Path,
        *,
        primaries: int = 3,
        replicas: int = 0,
        tls: Certificates | None = None,
    ) -> None:
        self.directory = directory
        self.primaries = primaries
        self.replicas = replicas
        self.tls = tls
        self.ports = [free_port() for _ in range(primaries * (1 + replicas))]
        # The cluster bus port is the data port + 10000 unless set: set it to a free one too.
        self.bus_ports = {port: free_port() for port in self.ports}
        self.processes: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def url(self) -> str:
        """A cluster URL naming the first two nodes (the client discovers the rest); with TLS,
        ``rediss+cluster://`` trusting the test CA."""
        nodes = f"127.0.0.1:{self.ports[0]},127.0.0.1:{self.ports[1]}"
        if self.tls is None:
            return f"redis+cluster://{nodes}"
        return f"rediss+cluster://{nodes}?ssl_ca_certs={self.tls.ca}"

    def node(self, port: int) -> redis.Redis:
        """An administrator's client to one node."""
        if self.tls is not None:
            return redis.Redis(
                port=port, socket_timeout=5, socket_connect_timeout=1, ssl=True,
                ssl_ca_certs=str(self.tls.ca),
            )  # fmt: skip
        return redis.Redis(port=port, socket_timeout=5, socket_connect_timeout=1)

    def _start_node(self, port: int) -> None:
        folder = self.directory / str(port)
        folder.mkdir(parents=True, exist_ok=True)
        args = [
            redis_binary(),
            "--bind", "127.0.0.1",
            "--port", str(port),
            "--dir", str(folder),
            "--cluster-enabled", "yes",
            "--cluster-port", str(self.bus_ports[port]),
            "--cluster-config-file", str(folder / "nodes.conf"),
            "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
            "--save", "",
            "--appendonly", "no",
            "--maxmemory-policy", "noeviction",
            "--repl-diskless-sync-delay", "0",  # replicas sync at once, not after 5 s
        ]  # fmt: skip
        if self.tls is not None:  # TLS only: clients, the cluster bus and replication
            args[args.index("--port") + 1] = "0"
            args += [
                "--tls-port", str(port), "--tls-cluster", "yes", "--tls-replication", "yes",
                "--tls-cert-file", str(self.tls.server_cert),
                "--tls-key-file", str(self.tls.server_key),
                "--tls-ca-cert-file", str(self.tls.ca), "--tls-auth-clients", "no",
            ]  # fmt: skip
        self.processes[port] = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    def start(self) -> LocalCluster:
        try:
            self._create()
        except BaseException:
            self.stop()  # no node outlives a cluster that failed to form
            raise
        return self

    def _create(self) -> None:
        for port in self.ports:
            self._start_node(port)
        for port in self.ports:
            wait_until(lambda p=port: self._answers(p), f"redis-server on {port}", 10)
        tls = [] if self.tls is None else ["--tls", "--cacert", str(self.tls.ca)]
        command = [
            redis_binary("redis-cli"), *tls,
            "--cluster", "create",
            *(f"127.0.0.1:{p}" for p in self.ports),
            "--cluster-replicas", str(self.replicas),
            "--cluster-yes",
        ]  # fmt: skip
        create = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
        if create.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed: {create.stdout[-2000:]}")
        wait_until(self.healthy, "the cluster to be ok on every node", 30)

    def _answers(self, port: int) -> bool:
        try:
            with self.node(port) as client:
                return bool(client.ping())
        except redis.exceptions.ConnectionError:
            return False

    def healthy(self) -> bool:
        """Every live node says cluster_state:ok and every replica is in sync."""
        for port in self.processes:
            try:
                with self.node(port) as client:
                    if client.cluster("INFO").get("cluster_state") != "ok":
                        return False
                    replication = client.info("replication")
                    if (
                        replication["role"] == "slave"
                        and replication.get("master_link_status") != "up"
                    ):
                        return False
            except redis.exceptions.ConnectionError:
                return False
        return True

    def roles(self) -> dict[int, str]:
        """Each live node's role: ``master`` or ``slave``."""
        out: dict[int, str] = {}
        for port in self.processes:
            with self.node(port) as client:
                out[port] = str(client.info("replication")["role"])
        return out

    def primary_of(self, key: str) -> int:
        """The port of the primary that owns ``key``'s slot now."""
        with self.node(next(iter(self.processes))) as client:
            slot = int(client.cluster("KEYSLOT", key))
            slots: list[Any] = client.execute_command("CLUSTER SLOTS")  # pyright: ignore[reportAssignmentType]
            for start, end, primary, *_ in slots:
                if start <= slot <= end:
                    return int(primary[1])
        raise AssertionError(f"no primary serves {key!r}")

    def replica_of(self, primary: int) -> int:
        with self.node(primary) as client:
            replication = client.info("replication")
        for i in range(int(replication["connected_slaves"])):
            entry = replication[f"slave{i}"]
            return int(entry["port"])
        raise AssertionError(f"{primary} has no replica")

    def failover(self, primary: int) -> int:
        """A manual failover of ``primary`` to its replica; returns the new primary's port."""
        replica = self.replica_of(primary)
        with self.node(replica) as client:
            client.execute_command("CLUSTER FAILOVER")
        wait_until(lambda: self.roles().get(replica) == "master", "the replica to take over", 30)
        wait_until(self.healthy, "the cluster to be ok after the failover", 30)
        return replica

    def kill(self, port: int) -> None:
        """SIGKILL one node (no chance to flush or hand over)."""
        process = self.processes.pop(port)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)

    def restart(self, port: int) -> None:
        """Start a killed node again: it rejoins (as a replica of whoever took over)."""
        self._start_node(port)
        wait_until(lambda: self._answers(port), f"redis-server on {port}", 10)
        wait_until(self.healthy, "the cluster to be ok with the node back", 60)

    def flush(self) -> None:
        """Delete every key on every primary (a shared session cluster, fresh for a test)."""
        for port, role in self.roles().items():
            if role == "master":
                with self.node(port) as client:
                    client.flushall()

    def primaries_ports(self) -> list[int]:
        return [port for port, role in self.roles().items() if role == "master"]

    def stop(self) -> None:
        for process in self.processes.values():
            stop(process)
        self.processes.clear()

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
