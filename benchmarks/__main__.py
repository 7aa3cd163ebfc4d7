"""Run every benchmark in this folder: ``python -m benchmarks``."""

import importlib
import pkgutil
import sys
from pathlib import Path

if __name__ == "__main__":
    names = sorted(m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)]) if m.name.startswith("bench_"))
    for name in names:
        print(f"\n=== benchmarks.{name} ===", flush=True)
        module = importlib.import_module(f"benchmarks.{name}")
        sys.argv = [name]
        module.main()
