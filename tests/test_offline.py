"""Pricing and token counting need no network: no price download, no tokenizer download."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

# Installed before anything else runs: every connection not to 127.0.0.1 fails, and so does
# every DNS lookup, as on a machine with no network.
BLOCK_NETWORK = textwrap.dedent(
    """
    import socket

    LOOPBACK = ("127.0.0.1", "localhost")
    _real_getaddrinfo = socket.getaddrinfo
    _real_connect = socket.socket.connect

    def _getaddrinfo(host, *args, **kwargs):
        if host not in LOOPBACK:
            raise OSError(f"network access to {host} blocked by the test")
        return _real_getaddrinfo(host, *args, **kwargs)

    def _connect(self, address):
        if isinstance(address, tuple) and address[0] not in LOOPBACK:
            raise OSError(f"network access to {address[0]} blocked by the test")
        return _real_connect(self, address)

    socket.getaddrinfo = _getaddrinfo
    socket.socket.connect = _connect
    """
)

APP = textwrap.dedent(
    """
    import socket
    try:
        socket.create_connection(("openaipublic.blob.core.windows.net", 443), timeout=2)
        raise SystemExit("the network was not blocked")
    except OSError:
        pass

    import openai
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    import costspan
    from costspan import _tokens
    from costspan.testing import OpenAICompatibleServer

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    costspan.instrument(tracer_provider=provider, inject_stream_usage=False)
    with OpenAICompatibleServer() as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="k", max_retries=0)
        list(client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}], stream=True))
    (span,) = exporter.get_finished_spans()
    assert span.attributes["costspan.usage.estimated"] is True
    assert span.attributes["gen_ai.usage.cost.amount"] > 0
    assert _tokens.count_text("hello world", "gpt-4") == 2
    print("offline ok")
    """
)


def test_pricing_and_tokenizing_work_with_the_network_blocked(tmp_path: Path) -> None:
    """A fresh process with no tokenizer cache and no network prices an estimated stream."""
    (tmp_path / "sitecustomize.py").write_text(BLOCK_NETWORK)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),  # nothing cached yet
        "HOME": str(tmp_path),
    }
    env.pop("TIKTOKEN_CACHE_DIR", None)
    result = subprocess.run(
        [sys.executable, "-c", APP],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "offline ok" in result.stdout
    assert list((tmp_path / "cache" / "costspan" / "tiktoken").iterdir())
