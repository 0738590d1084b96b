"""A TCP proxy on loopback that delays the replies to writes: a server that runs a command but
answers after the client's timeout (the case where a client cannot know whether a command ran).

Only replies to the commands named in ``slow`` are delayed, so that a client's connection
handshake still succeeds and the command itself really reaches the server on every attempt.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from types import TracebackType


class SlowProxy:
    def __init__(
        self, upstream_port: int, delay_s: float, slow: tuple[bytes, ...] = (b"INCRBY", b"EVAL")
    ) -> None:
        self.upstream_port = upstream_port
        self.delay_s = delay_s
        self.slow = slow
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._stop = threading.Event()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _accept(self) -> None:
        self._listener.settimeout(0.1)
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            with self._lock:
                self._sockets += [client, upstream]
            pending: list[bool] = []  # per request on this connection: delay its reply?
            threading.Thread(
                target=self._requests, args=(client, upstream, pending), daemon=True
            ).start()
            threading.Thread(
                target=self._replies, args=(upstream, client, pending), daemon=True
            ).start()

    def _requests(self, src: socket.socket, dst: socket.socket, pending: list[bool]) -> None:
        try:
            while data := src.recv(65536):
                pending.append(any(word in data.upper() for word in self.slow))
                dst.sendall(data)
        except OSError:
            pass
        finally:
            self._close(src, dst)

    def _replies(self, src: socket.socket, dst: socket.socket, pending: list[bool]) -> None:
        try:
            while data := src.recv(65536):
                if pending and pending.pop(0):
                    time.sleep(self.delay_s)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            self._close(src, dst)

    @staticmethod
    def _close(*sockets: socket.socket) -> None:
        for s in sockets:
            with contextlib.suppress(OSError):  # already closed by the other side
                s.shutdown(socket.SHUT_RDWR)

    def __enter__(self) -> SlowProxy:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._listener.close()
        self._thread.join()
        with self._lock:
            for s in self._sockets:
                s.close()
