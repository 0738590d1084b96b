"""Generates docs/api.md from costspan's public names, their signatures and docstrings.

    python tools/api_docs.py          # rewrite docs/api.md
    python tools/api_docs.py --check  # exit 1 if docs/api.md is out of date

tests/test_api_docs.py checks that the committed page equals this output, so a changed signature
or docstring cannot leave the reference behind.
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

import costspan

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "api.md"

GROUPS = (
    (
        "Instrumenting",
        ("instrument", "uninstrument", "configure", "OpenAIInstrumentor", "CostSpanProcessor"),
    ),
    (
        "Attribution and budgets",
        ("tags", "budget", "Budget", "BudgetExceeded", "BudgetUnavailable", "estimate", "Estimate"),
    ),
    ("Prices", ("UnpricedModelWarning", "UnpricedModelError")),
    (
        "Spend records and reports",
        ("report", "Report", "ReportRow", "SpendRecord", "dropped_records"),
    ),
)

HEADER = """# API reference

Everything public is importable from `costspan` and listed in `costspan.__all__` (plus
`costspan.__version__`); modules whose names start with `_` may change without notice. This page is
generated from the code's own signatures and docstrings by `tools/api_docs.py` (a test fails when
it falls behind). Settings accepted by `instrument()` and `configure()` are described in
[configuration.md](configuration.md), span attributes and metrics in [spans.md](spans.md), budget
actions in [budgets.md](budgets.md), reports in [reports.md](reports.md).
"""


def _signature(obj: object) -> str | None:
    if inspect.isclass(obj) and issubclass(obj, Warning):
        return None  # warnings take a message, like any exception
    try:
        return str(inspect.signature(obj)).replace("'", "")  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def render() -> str:
    documented = [name for _, names in GROUPS for name in names]
    public = [name for name in costspan.__all__ if name != "__version__"]
    if sorted(documented) != sorted(public):
        raise SystemExit(f"tools/api_docs.py GROUPS and costspan.__all__ differ: {documented}")
    parts = [HEADER]
    for title, names in GROUPS:
        parts.append(f"## {title}\n")
        for name in names:
            obj = getattr(costspan, name)
            kind = "class" if inspect.isclass(obj) else "function"
            parts.append(f"### `{name}` ({kind})\n")
            signature = _signature(obj)
            if signature is not None:
                parts.append(f"```text\n{name}{signature}\n```\n")
            doc = inspect.getdoc(obj) or ""
            # Args:/Raises: sections keep their layout as preformatted text.
            summary, _, rest = doc.partition("\n\n")
            parts.append(summary.strip() + "\n")
            if rest.strip():
                parts.append(f"```text\n{rest.strip()}\n```\n")
    return "\n".join(parts)


def main(argv: list[str]) -> int:
    text = render()
    if argv[1:] == ["--check"]:
        if PAGE.read_text() != text:
            print(f"{PAGE} is out of date: run python tools/api_docs.py", file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(text)
    print(f"wrote {PAGE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
