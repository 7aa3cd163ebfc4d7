"""Dataset generation speed: transitions/s of building the reacher expert data (the scripted team
acting, MuJoCo stepping, columns written, checksummed) beside Gymnasium's own Reacher-v5 stepping
rate with random actions, measured in the same run.

    python -m benchmarks.bench_generation [--transitions 50000]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import gymnasium
import numpy as np

from offcoord.data.cards import card_from_bytes
from offcoord.data.generate import generate
from offcoord.registry import dataset_card


def gymnasium_rate(steps: int) -> float:
    env = gymnasium.make("Reacher-v5")
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, (steps, 2)).astype(np.float32)
    t0 = time.perf_counter()
    for a in actions:
        _, _, term, trunc, _ = env.step(a)
        if term or trunc:
            env.reset()
    return steps / (time.perf_counter() - t0)


def offcoord_rate(transitions: int, root: Path) -> float:
    card = dataset_card("reacher2-expert-fo")
    text = card.path.read_text().replace("transitions = 1_000_000", f"transitions = {transitions}")
    text = text[: text.index("[expected]")]  # the card's statistics are for the full million
    small = card_from_bytes(text.encode(), card.path)
    t0 = time.perf_counter()
    generate(small, root=root, progress=False)
    return transitions / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--transitions", type=int, default=50_000)
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="offcoord-gen-bench-"))
    try:
        gym = gymnasium_rate(args.transitions)
        ours = offcoord_rate(args.transitions, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"Gymnasium Reacher-v5, random actions, stepping only:  {gym:10,.0f} steps/s")
    print(f"offcoord reacher2-expert generation (act+step+write): {ours:10,.0f} transitions/s")
    print(f"ratio offcoord / Gymnasium stepping: {ours / gym:.2f}   (1M transitions: {1e6 / ours / 60:.1f} min;"
          f" target: minutes, not hours: {'PASS' if 1e6 / ours < 30 * 60 else 'FAIL'})")
    return [{"benchmark": "generation", "what": "reacher2-expert generation / Gymnasium Reacher-v5 stepping",
             "value": f"{ours / gym:.2f}x", "target": "(information)", "pass": None},
            {"benchmark": "generation", "what": "reacher2-expert: 1M transitions", "value": f"{1e6 / ours / 60:.1f} min",
             "target": "< 30 min", "pass": 1e6 / ours < 30 * 60}]


if __name__ == "__main__":
    main()
