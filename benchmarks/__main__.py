"""Run every benchmark in this folder, then print one table: ``python -m benchmarks [--quick]``.

Each ``benchmarks/bench_*.py`` stays runnable alone (``python -m benchmarks.bench_store``); its
``main(argv)`` prints its own details and returns its rows (ratio or value against a peer measured
in the same run, the target it must beat, PASS/FAIL). ``--quick`` passes small sizes so the whole
report takes a few minutes (the ratios are noisier; the absolute targets are extrapolated).
``--only store,ant`` runs a subset.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import time
import traceback
from pathlib import Path

# Small sizes for --quick: the same measurements on less data / shorter timing windows.
QUICK = {
    "bench_agents": ["--seconds", "1", "--algorithms", "itd3bc"],
    "bench_ant": ["--steps", "3000", "--transitions", "10000"],
    "bench_generation": ["--transitions", "5000"],
    "bench_memory": ["--size", "20000", "--moma-steps", "2", "--moma-rollouts", "256", "--moma-wm-steps", "100"],
    "bench_momappo": ["--skip-table", "--seconds", "1", "--wm-steps", "100", "--fit-steps", "4000"],
    "bench_store": ["--transitions", "200000", "--minari-episodes", "200"],
}


def format_table(rows: list[dict]) -> str:
    header = ("benchmark", "measurement (ours vs the peer measured in the same run)", "result", "target", "")
    body = [(r["benchmark"], r["what"], r["value"], r["target"],
             "PASS" if r["pass"] is True else "FAIL" if r["pass"] is False else "-") for r in rows]
    widths = [max(len(str(x[i])) for x in [header, *body]) for i in range(5)]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    out = [line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, body)]
    passed = sum(r["pass"] is True for r in rows)
    failed = sum(r["pass"] is False for r in rows)
    out.append(f"\n{passed} PASS, {failed} FAIL")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes: the whole report in a few minutes")
    parser.add_argument("--only", default=None, help="comma-separated benchmark names (store, ant, memory, ...)")
    args = parser.parse_args(argv)
    names = sorted(m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)]) if m.name.startswith("bench_"))
    if args.only:
        wanted = {n if n.startswith("bench_") else f"bench_{n}" for n in args.only.split(",")}
        names = [n for n in names if n in wanted]
    rows: list[dict] = []
    for name in names:
        print(f"\n=== benchmarks.{name} ===", flush=True)
        t0 = time.perf_counter()
        try:
            module = importlib.import_module(f"benchmarks.{name}")
            rows += module.main(QUICK.get(name, []) if args.quick else []) or []
        except Exception as e:  # one broken benchmark must not hide the others' rows
            traceback.print_exc()
            rows.append({"benchmark": name.removeprefix("bench_"), "what": f"did not run: {type(e).__name__}: {e}"[:90],
                         "value": "-", "target": "-", "pass": False})
        print(f"({time.perf_counter() - t0:.0f} s)", flush=True)
    print(f"\n=== speed report{' (--quick)' if args.quick else ''} ===\n")
    print(format_table(rows))
    return rows


if __name__ == "__main__":
    main()
