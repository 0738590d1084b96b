"""Who instruments openai under ``opentelemetry-instrument``, worked out as the launcher does it.

The launcher (``opentelemetry.instrumentation.auto_instrumentation._load``) runs every
``opentelemetry_instrumentor`` entry point that ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS`` does not
name (``*`` names all) and whose package's ``instruments`` requirements are installed. The
official OpenAI instrumentation (``opentelemetry-instrumentation-genai-openai``, and the older
``openai-v2``), OpenLLMetry's and OpenInference's all register ``openai``; with costspan's
``costspan_openai`` next to one of them every call would be traced twice.

costspan's distro runs before the instrumentors load: unless
``COSTSPAN_OTHER_OPENAI_INSTRUMENTORS=keep``, it adds the other instrumentors of openai to
``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS`` (:func:`to_disable`), so each call gets one span, from
costspan. It does so only when costspan's own instrumentor will load; a user who disabled
``costspan_openai`` keeps the other one (whose spans ``CostSpanProcessor`` prices, charges and
gates). ``costspan doctor`` reports the same decision from the same functions.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib import metadata
from typing import Final

from costspan._config import COSTSPAN_OTHER_OPENAI_INSTRUMENTORS, parse_other_instrumentors

COSTSPAN_INSTRUMENTOR: Final = "costspan_openai"
DISABLED: Final = "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS"
DISTRO: Final = "costspan"


def entry_points(group: str) -> list[metadata.EntryPoint]:
    """The entry points of ``group`` in the order the launcher sees them."""
    return list(metadata.entry_points(group=group))


def disabled(env: Mapping[str, str]) -> list[str]:
    """The names ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS`` disables, as the launcher splits it."""
    raw = env.get(DISABLED, "")
    return [name.strip() for name in raw.split(",")] if raw else []


def instruments_openai(ep: metadata.EntryPoint) -> bool:
    """An instrumentor of openai: registered as ``openai`` (the convention), or its package's
    ``instruments`` extra (what the launcher checks) requires openai."""
    if ep.name == "openai":
        return True
    from packaging.requirements import InvalidRequirement, Requirement

    for line in (ep.dist.requires or []) if ep.dist is not None else []:
        try:
            req = Requirement(line)
        except InvalidRequirement:
            continue
        marker = req.marker
        if req.name.lower() != "openai" or marker is None:
            continue
        if marker.evaluate({"extra": "instruments"}) or marker.evaluate(
            {"extra": "instruments-any"}
        ):
            return True
    return False


def conflicts(ep: metadata.EntryPoint) -> bool:
    """Whether the launcher skips ``ep`` because the library it instruments is missing or out
    of its range."""
    from opentelemetry.instrumentation.dependencies import get_dist_dependency_conflicts

    return ep.dist is not None and get_dist_dependency_conflicts(ep.dist) is not None


def keeps_others(env: Mapping[str, str]) -> bool:
    """``COSTSPAN_OTHER_OPENAI_INSTRUMENTORS=keep`` (a bad value counts as the default)."""
    raw = env.get(COSTSPAN_OTHER_OPENAI_INSTRUMENTORS)
    if raw is None:
        return False
    try:
        return parse_other_instrumentors(COSTSPAN_OTHER_OPENAI_INSTRUMENTORS, raw) == "keep"
    except ValueError:
        return False


def to_disable(env: Mapping[str, str]) -> list[str]:
    """The instrumentors of openai besides costspan's that costspan's distro disables: those
    the launcher would load, when costspan's own will load too and nobody asked to keep them."""
    off = disabled(env)
    if "*" in off or keeps_others(env):
        return []
    found = [ep for ep in entry_points("opentelemetry_instrumentor") if instruments_openai(ep)]
    ours = [ep for ep in found if ep.name == COSTSPAN_INSTRUMENTOR]
    if not ours or COSTSPAN_INSTRUMENTOR in off or any(conflicts(ep) for ep in ours):
        return []
    names = [
        ep.name
        for ep in found
        if ep.name != COSTSPAN_INSTRUMENTOR and ep.name not in off and not conflicts(ep)
    ]
    return list(dict.fromkeys(names))


def with_others_disabled(env: Mapping[str, str]) -> tuple[str, list[str]] | None:
    """The value costspan's distro gives ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS`` and the names
    it adds; None when it leaves the variable alone."""
    names = to_disable(env)
    if not names:
        return None
    kept = [name for name in disabled(env) if name]
    return ",".join([*kept, *names]), names
