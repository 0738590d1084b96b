"""The context a server extracts from an incoming request's W3C baggage header, for tests."""

from __future__ import annotations

from opentelemetry import context, propagate


class inbound:  # lower-case: used like a function, as a context manager
    """Attach the context a server would extract from a request's ``baggage`` header."""

    def __init__(self, header: str) -> None:
        self.header = header

    def __enter__(self) -> None:
        self.token = context.attach(propagate.extract({"baggage": self.header}))

    def __exit__(self, *exc: object) -> None:
        context.detach(self.token)
