"""TLS for the Redis tests: a throwaway CA, server certificates (a valid one and one that has
expired), a client certificate and an unrelated CA, made with ``openssl`` into a temporary
directory; and a redis-server that speaks only TLS (``--port 0 --tls-port P``) and wants a
client certificate signed by the CA, as managed services with mutual TLS do.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import redis

from tests.redis_server import RedisServer


@dataclass(frozen=True)
class Certificates:
    ca: Path
    other_ca: Path
    server_cert: Path
    server_key: Path
    expired_cert: Path
    client_cert: Path
    client_key: Path


def _openssl(*args: str | Path) -> None:
    binary = shutil.which("openssl")
    if binary is None:
        raise RuntimeError("openssl not found: install Debian's openssl package")
    subprocess.run([binary, *(str(a) for a in args)], check=True, capture_output=True, timeout=60)


def make_certificates(directory: Path) -> Certificates:
    """A CA, and certificates it signed for the server (valid; expired) and a client."""
    d = directory
    for ca in ("ca", "other-ca"):
        _openssl(
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-keyout", d / f"{ca}.key", "-out", d / f"{ca}.pem", "-subj", f"/CN=costspan {ca}",
        )  # fmt: skip
    (d / "server.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    for name, subject in (("server", "/CN=localhost"), ("client", "/CN=costspan-client")):
        _openssl(
            "req", "-newkey", "rsa:2048", "-nodes", "-keyout", d / f"{name}.key",
            "-out", d / f"{name}.csr", "-subj", subject,
        )  # fmt: skip
    sign = ["x509", "-req", "-CA", d / "ca.pem", "-CAkey", d / "ca.key", "-CAcreateserial"]
    _openssl(*sign, "-in", d / "server.csr", "-out", d / "server.pem", "-days", "1",
             "-extfile", d / "server.ext")  # fmt: skip
    # The same key and names, but the certificate ended yesterday.
    _openssl(*sign, "-in", d / "server.csr", "-out", d / "expired.pem", "-days", "-1",
             "-extfile", d / "server.ext")  # fmt: skip
    _openssl(*sign, "-in", d / "client.csr", "-out", d / "client.pem", "-days", "1")
    return Certificates(
        ca=d / "ca.pem",
        other_ca=d / "other-ca.pem",
        server_cert=d / "server.pem",
        server_key=d / "server.key",
        expired_cert=d / "expired.pem",
        client_cert=d / "client.pem",
        client_key=d / "client.key",
    )


class TlsRedisServer(RedisServer):
    """A redis-server on a TLS port only, presenting ``cert`` and requiring client certs."""

    def __init__(self, directory: Path, certs: Certificates, *, expired: bool = False) -> None:
        super().__init__(directory)
        self.certs = certs
        self.cert = certs.expired_cert if expired else certs.server_cert

    def args(self) -> list[str]:
        args = super().args()
        args[args.index("--port") + 1] = "0"  # no plain TCP at all
        return [
            *args,
            "--tls-port", str(self.port),
            "--tls-cert-file", str(self.cert),
            "--tls-key-file", str(self.certs.server_key),
            "--tls-ca-cert-file", str(self.certs.ca),
            "--tls-auth-clients", "yes",
        ]  # fmt: skip

    def client(self, **settings: Any) -> redis.Redis:
        # The administrator trusts whatever the server presents (the expired one included).
        return redis.Redis(
            port=self.port,
            ssl=True,
            ssl_cert_reqs="none",
            ssl_certfile=str(self.certs.client_cert),
            ssl_keyfile=str(self.certs.client_key),
            **settings,
        )

    def tls_url(
        self,
        user: str | None = None,
        password: str | None = None,
        *,
        ca: Path | None = None,
        trust: bool = True,
        client_cert: bool = True,
        scheme: str = "rediss",
        **options: str,
    ) -> str:
        """A ledger URL for this server: the CA to trust (none with ``trust`` false: the
        system's), the client certificate, a user."""
        query: dict[str, str] = {"ssl_ca_certs": str(ca or self.certs.ca)} if trust else {}
        if client_cert:
            query["ssl_certfile"] = str(self.certs.client_cert)
            query["ssl_keyfile"] = str(self.certs.client_key)
        query.update(options)
        auth = ""
        if password is not None:
            auth = f"{quote(user or '', safe='')}:{quote(password, safe='')}@"
        return f"{scheme}://{auth}127.0.0.1:{self.port}/0?{urlencode(query)}"

    @property
    def url(self) -> str:
        return self.tls_url()
