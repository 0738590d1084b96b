"""Start Arize Phoenix on 127.0.0.1 only, for the optional Phoenix tier.

Phoenix binds its OTLP gRPC server to every interface ("[::]"); the tests must stay on
loopback, so the gRPC server factory is wrapped to rewrite that address before Phoenix starts.
Host, ports and working directory come from PHOENIX_* environment variables.
"""

from __future__ import annotations

import sys
from typing import Any

import grpc.aio

_make_server = grpc.aio.server


def _loopback_server(*args: Any, **kwargs: Any) -> Any:
    server = _make_server(*args, **kwargs)
    bind = server.add_insecure_port
    server.add_insecure_port = lambda address: bind(address.replace("[::]", "127.0.0.1"))
    return server


grpc.aio.server = _loopback_server

if __name__ == "__main__":
    from phoenix.server.main import main  # pyright: ignore[reportMissingImports]

    sys.argv = ["phoenix", "serve"]
    main()
