"""Run costspan's benchmarks and print their tables.

scripts/dev.sh bench            # full run (a minute or two)
scripts/dev.sh bench --quick    # a smoke run: same code, few samples, numbers not meaningful
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import history
import lean
import ledger
import overhead
import pricing
import redis_fleet
import shared_ledgers
import startup


def main() -> int:
    parser = argparse.ArgumentParser(description="Run costspan's benchmarks.")
    parser.add_argument("--quick", action="store_true", help="few samples: checks the code runs")
    args = parser.parse_args()
    rounds, calls = (1, 5) if args.quick else (40, 60)
    print(f"instrumentation overhead per chat.completions.create ({rounds} rounds x {calls} calls)")
    print(overhead.table(overhead.measure(rounds, calls)))
    print()
    lean_rounds = 1 if args.quick else 30
    print(f"the leanest budgeted path ({lean_rounds} rounds x {calls} plain calls)")
    print(lean.table(lean.measure(lean_rounds, calls)))
    print()
    history_rounds, history_calls = (1, 3) if args.quick else (12, 20)
    print(f"budget cost vs history ({history_rounds} rounds x {history_calls} calls per cell)")
    print(history.table(history.measure(history_rounds, history_calls)))
    print()
    print("start-up and memory (fresh interpreters)")
    if args.quick:
        print(startup.table(startup.measure(imports=2, firsts=1, calls=500, budgets=200)))
    else:
        print(startup.table(startup.measure()))
    print()
    price_rounds, price_calls = (1, 20) if args.quick else (20, 500)
    print(f"pricing ({price_rounds} rounds x {price_calls} usages x {len(pricing.MODELS)} models)")
    print(pricing.table(pricing.measure(price_rounds, price_calls)))
    print()
    ledger_rounds, cycles = (1, 50) if args.quick else (20, 2000)
    print(f"budget ledger ({ledger_rounds} rounds x {cycles} reserve+commit cycles)")
    print(ledger.table(ledger.measure(ledger_rounds, cycles)))
    print()
    shared_cycles, shared_calls = (50, 10) if args.quick else (3000, 300)
    print(f"shared ledgers ({shared_cycles} cycles per thread, {shared_calls} calls per engine)")
    print(shared_ledgers.table(shared_ledgers.measure(shared_cycles, shared_calls)))
    print()
    fleet_cycles = 50 if args.quick else 1_500
    print(f"Redis fleet ({fleet_cycles} calls per thread on a local 3+3 cluster)")
    print(redis_fleet.table(redis_fleet.measure(fleet_cycles)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
