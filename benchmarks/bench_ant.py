"""The four-agent ant: environment steps/s beside its peers, and dataset generation speed.

Stepping (one process, random actions drawn beforehand, resets included): our ``ant-po``
(per-agent dict actions in, per-agent observations out) beside Gymnasium's single-agent
``Ant-v5`` (the same physics) and MaMuJoCo's ``Ant 4x2`` (gymnasium-robotics, if installed).
Target: ours >= 0.9x Gymnasium.

Generation: ``ant-expert`` (the SAC expert sampled, batched numpy inference, worker processes)
at a reduced size, in transitions/s, and what that means for the card's 1,000,000 transitions.
Target: a 1M-transition dataset in under 10 minutes on 2 cores.

    python -m benchmarks.bench_ant [--steps 20000] [--transitions 100000] [--workers N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import gymnasium
import numpy as np

import offcoord
from offcoord.data.cards import load_cards
from offcoord.data.generate import generate


def _timed_loop(reset, step, actions) -> float:
    reset()
    t0 = time.perf_counter()
    for a in actions:
        if step(a):
            reset()
    return len(actions) / (time.perf_counter() - t0)


def gymnasium_rate(actions: np.ndarray) -> float:
    env = gymnasium.make("Ant-v5", include_cfrc_ext_in_observation=False, max_episode_steps=1000)
    env.reset(seed=0)

    def step(a):
        _, _, term, trunc, _ = env.step(a)
        return term or trunc

    return _timed_loop(lambda: env.reset(), step, actions)


def offcoord_rate(actions: np.ndarray) -> float:
    env = offcoord.make("ant-po")
    per_agent = [env.layout.split(a) for a in actions]  # agents act with their own slices
    env.reset(seed=0)

    def step(a):
        env.step(a)
        return not env.agents

    return _timed_loop(lambda: env.reset(), step, per_agent)


def mamujoco_rate(actions: np.ndarray) -> float | None:
    try:
        from gymnasium_robotics import mamujoco_v1
    except ImportError:
        return None
    # its Ant crashes with include_cfrc_ext_in_observation=False unless local_categories is given
    env = mamujoco_v1.parallel_env("Ant", "4x2", include_cfrc_ext_in_observation=False, max_episode_steps=1000,
                                   local_categories=[["qpos", "qvel"], ["qpos"]])
    env.reset(seed=0)
    per_agent = [env.map_global_action_to_local_actions(a) for a in actions]

    def step(a):
        env.step(a)
        return not env.agents

    return _timed_loop(lambda: env.reset(), step, per_agent)


def generation_rate(transitions: int, workers: int | None) -> tuple[float, int]:
    card = load_cards()["ant-expert"].resized(transitions)
    root = Path(tempfile.mkdtemp(prefix="offcoord-ant-gen-"))
    try:
        t0 = time.perf_counter()
        generate(card, root=root, progress=True, workers=workers)
        return transitions / (time.perf_counter() - t0), workers or os.cpu_count() or 1
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--transitions", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=None, help="generation processes (default: every core)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating measurement rounds (the median ratio is reported)")
    args = parser.parse_args(argv)
    actions = np.random.default_rng(0).uniform(-1, 1, (max(1, args.steps // args.rounds), 8)).astype(np.float32)
    # Alternate short rounds and take the median ratio: one long measurement each swings by 30%
    # on a shared VM (CPU frequency, neighbours), which no fixed order of the peers averages out.
    rates = [(gymnasium_rate(actions), offcoord_rate(actions), mamujoco_rate(actions)) for _ in range(args.rounds)]
    gym = float(np.median([g for g, _, _ in rates]))
    ours = gym * float(np.median([o / g for g, o, _ in rates]))
    mamujoco = None if rates[0][2] is None else ours / float(np.median([o / m for _, o, m in rates]))
    print(f"Gymnasium Ant-v5 (single agent):      {gym:8,.0f} steps/s (median of {args.rounds} rounds)")
    print(f"offcoord ant-po (4 agents, dicts):    {ours:8,.0f} steps/s   median ratio {ours / gym:.2f}x Gymnasium "
          f"(per round: {', '.join(f'{o / g:.2f}' for g, o, _ in rates)}; target >= 0.9x: {'PASS' if ours >= 0.9 * gym else 'FAIL'})")
    if mamujoco is not None:
        print(f"MaMuJoCo Ant 4x2 (4 agents, dicts):   {mamujoco:8,.0f} steps/s   offcoord / MaMuJoCo {ours / mamujoco:.2f}x (median)")
    else:
        print("MaMuJoCo Ant 4x2: gymnasium-robotics not installed (pip install gymnasium-robotics)")
    rows = [{"benchmark": "ant", "what": "ant-po steps/s / Gymnasium Ant-v5", "value": f"{ours / gym:.2f}x",
             "target": ">= 0.9x", "pass": ours >= 0.9 * gym}]
    if mamujoco is not None:
        rows.append({"benchmark": "ant", "what": "ant-po steps/s / MaMuJoCo Ant 4x2", "value": f"{ours / mamujoco:.2f}x",
                     "target": ">= 0.9x", "pass": ours >= 0.9 * mamujoco})
    if args.transitions > 0:
        rate, workers = generation_rate(args.transitions, args.workers)
        minutes = 1e6 / rate / 60
        print(f"ant-expert generation, {workers} worker(s): {rate:8,.0f} transitions/s -> 1M transitions in {minutes:.1f} min "
              f"(target < 10 min: {'PASS' if minutes < 10 else 'FAIL'}); offcoord / Gymnasium stepping {rate / gym:.2f}x")
        rows.append({"benchmark": "ant", "what": f"ant-expert generation, {workers} worker(s): 1M transitions",
                     "value": f"{minutes:.1f} min", "target": "< 10 min", "pass": minutes < 10})
    return rows


if __name__ == "__main__":
    main()
