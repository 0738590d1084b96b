"""What a Redis failure means for the ledger: one line an operator can act on, never a password.

Every error that says "the store cannot be used right now" - a refused or dropped connection, a
timeout, a TLS handshake that fails verification, a wrong password, a missing ACL permission, a
cluster that is down or moving slots - becomes :class:`LedgerUnavailable`, so the fail mode
decides what the call does. Its message is one line: the URL without its password, then what
went wrong and, where it helps, what to change.

Errors that retrying cannot fix (authentication, certificate verification) are never retried:
:func:`retry_policy` stops redis-py from repeating a handshake that will fail the same way
(a wrong password would otherwise be sent ``retries + 1`` times per call).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import cache
from typing import Any, Final
from urllib.parse import parse_qsl, unquote, urlsplit

from costspan.ledgers._protocol import LedgerUnavailable

_SECRET_OPTIONS: Final = ("password", "ssl_password")
_VERIFY_REASON: Final = re.compile(r"certificate verify failed: ([^(]+?)\s*\(_ssl")


def redacted(url: str) -> str:
    """The URL without its password (it goes into logs and error messages).

    Also hides a password given as a query option (``password=``, ``ssl_password=``), and a
    password that was not percent-encoded (a ``/``, ``?`` or ``#`` in it ends the URL's
    authority early): everything up to the last ``@`` is hidden then.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    at = _misplaced_at(rest)
    if at is not None:
        return f"{scheme}://***{rest[at:]}"
    parts = urlsplit(url)
    out = url
    if parts.password is not None:
        user = f"{parts.username}:***@" if parts.username else ":***@"
        out = out.replace(parts.netloc, user + parts.netloc.rpartition("@")[2], 1)
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key in _SECRET_OPTIONS and value:
            out = re.sub(rf"([?&]{key}=)[^&#]*", r"\1***", out)
    return out


def misplaced_at(url: str) -> bool:
    """Whether the URL's host comes after its authority should have ended: a password with
    ``/``, ``?`` or ``#`` in it that was not percent-encoded."""
    return _misplaced_at(url.partition("://")[2]) is not None


_HOST_AFTER: Final = re.compile(r"@[^/?#@]+(?:/\d*)?(?:[?#]|$)")


def _misplaced_at(rest: str) -> int | None:
    """Where, in a URL after ``scheme://``, the real ``@host`` starts when it follows a
    ``/``, ``?`` or ``#`` (None: the URL is well formed in that respect)."""
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    found = None
    for match in _HOST_AFTER.finditer(rest, end):
        found = match.start()
    return found


def secrets_of(url: str) -> tuple[str, ...]:
    """The secrets a URL carries (to scrub them from any text that could leave the process)."""
    parts = urlsplit(url)
    found = [parts.password] if parts.password else []
    found += [v for k, v in parse_qsl(parts.query) if k in _SECRET_OPTIONS and v]

    return tuple({*found, *(unquote(s) for s in found)})


def is_permanent(exc: BaseException) -> bool:
    """An error that the same request will hit again at once: retrying only adds latency."""
    import redis.exceptions as e

    if isinstance(exc, e.AuthenticationError | e.AuthorizationError | e.NoPermissionError):
        return True
    text = str(exc)
    return isinstance(exc, e.ConnectionError) and (
        "certificate verify failed" in text
        or "CERTIFICATE_VERIFY_FAILED" in text
        or "Hostname mismatch" in text
        or "WRONG_VERSION_NUMBER" in text
    )


def unavailable_errors() -> tuple[type[BaseException], ...]:
    """Every redis-py error that means the store cannot be used now (not a bug, not bad input).

    BusyLoadingError (a restarting server loading its data) is a ConnectionError; ReadOnlyError
    is what a demoted primary answers after a failover; OutOfMemoryError a full noeviction
    server; NoPermissionError an ACL user that may not run the scripts; Cluster errors a cluster
    that is failing over, down, or not covering the slot (and MOVED reaching a plain client, which
    cannot follow it). After a timeout the script may have run: retries and replays are
    idempotent.
    """
    import redis.exceptions as e

    return (
        e.ConnectionError,
        e.TimeoutError,
        e.ReadOnlyError,
        e.OutOfMemoryError,
        e.NoPermissionError,
        e.ClusterError,
        e.AskError,
        e.TryAgainError,
        e.RedisClusterException,
        OSError,
    )


def explain(exc: BaseException, url: str, *, user: str | None = None) -> str:
    """One line saying what went wrong with the ledger at ``url``, without its password."""
    import redis.exceptions as e

    text = " ".join(str(exc).split()) or type(exc).__name__
    reason = _VERIFY_REASON.search(text)
    # The cluster client wraps a wrong password in "Redis Cluster cannot be connected...".
    auth = isinstance(exc, e.AuthenticationError) or "username-password pair" in text
    if auth:
        text = text.rpartition("reachable node: ")[2] or text
        if "NOAUTH" in text or "required" in text.lower():
            detail = "the server wants a password: redis://user:password@host:port/0"
        else:
            who = f"as {user!r}" if user else "as the default user"
            detail = f"authentication failed {who}: {text.rstrip('.')}"
    elif isinstance(exc, e.NoPermissionError):
        detail = (
            f"the Redis user may not run the ledger's commands ({text}); "
            "give it the ACL rules in docs/ledgers.md"
        )
    elif reason is not None:
        ca = dict(parse_qsl(urlsplit(url).query)).get("ssl_ca_certs")
        trusted = f"ssl_ca_certs={ca}" if ca else "the system's CAs (no ssl_ca_certs)"
        detail = (
            f"TLS certificate verification failed: {reason.group(1)} "
            f"(trusting {trusted}; ssl_ca_certs must name the CA that signed a valid server "
            "certificate)"
        )
    elif "Hostname mismatch" in text:
        detail = f"TLS: {text} (connect by a name the certificate lists)"
    elif "WRONG_VERSION_NUMBER" in text:
        detail = f"TLS handshake failed ({text}): is this port plain TCP? use redis://"
    elif isinstance(exc, e.MovedError):
        detail = (
            f"the server is a Redis Cluster node ({text}): "
            "use redis+cluster://host:port[,host:port...]"
        )
    elif "Cluster mode is not enabled" in text:
        detail = (
            f"{text} (a plain server? use redis://; or the ACL user may not run CLUSTER SLOTS: "
            "see docs/ledgers.md)"
        )
    elif isinstance(exc, e.TimeoutError):
        detail = f"{text} (raise the URL's timeout option if the server is just slow)"
    elif "reset by peer" in text and url.startswith("redis://"):
        detail = f"{text} (a TLS port? use rediss://)"
    else:
        detail = text
    # The URL without its query: certificate paths and options would drown the reason.
    message = f"Redis ledger {redacted(url).split('?', 1)[0]}: {detail}"
    for secret in secrets_of(url):
        message = message.replace(secret, "***")
    return message


def unavailable(exc: BaseException, url: str, *, user: str | None = None) -> LedgerUnavailable:
    """The LedgerUnavailable for ``exc`` (raise it ``from exc``)."""
    return LedgerUnavailable(explain(exc, url, user=user))


def _no_permanent(is_retryable: Callable[[Exception], bool] | None) -> Callable[[Exception], bool]:
    def retryable(error: Exception) -> bool:
        if is_permanent(error):
            return False
        return is_retryable is None or is_retryable(error)

    return retryable


def retry_policy(retries: int, *, asyncio: bool = False) -> Any:
    """redis-py's Retry (or its asyncio twin): ``retries`` immediate retries, none for errors
    that will not go away."""
    from redis.backoff import NoBackoff

    sync_class, async_class = _retry_classes()
    return (async_class if asyncio else sync_class)(NoBackoff(), retries)


@cache
def _retry_classes() -> tuple[type[Any], type[Any]]:
    # Made on first use: redis-py is an optional dependency, never imported by `import costspan`.
    from redis.asyncio.retry import Retry as AsyncRetry
    from redis.retry import Retry

    class NoPermanentRetry(Retry):
        """redis-py's ``Retry`` that gives up at once on an error retrying cannot fix."""

        def call_with_retry(
            self,
            do: Any,
            fail: Any,
            is_retryable: Callable[[Exception], bool] | None = None,
            with_failure_count: bool = False,
        ) -> Any:
            retryable = _no_permanent(is_retryable)
            return super().call_with_retry(do, fail, retryable, with_failure_count)

    class AsyncNoPermanentRetry(AsyncRetry):
        """The asyncio twin of ``NoPermanentRetry``."""

        async def call_with_retry(
            self,
            do: Any,
            fail: Any,
            is_retryable: Callable[[Exception], bool] | None = None,
            with_failure_count: bool = False,
        ) -> Any:
            retryable = _no_permanent(is_retryable)
            return await super().call_with_retry(do, fail, retryable, with_failure_count)

    return NoPermanentRetry, AsyncNoPermanentRetry
