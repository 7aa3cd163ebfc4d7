"""MOMA-PPO speed: synthetic agent-transitions/s of ``WorldModelEnv`` with the stacked ensemble
against a loop over members (same model, same run), and the coordination table's wall clock
(3 datasets x 5 seeds, two worker processes on the two cores; the issue's bar: under 2 minutes).

    python -m benchmarks.bench_momappo [--skip-table]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import torch

COORD_CONFIG = dict(steps=30, eval_every=30, eval_episodes=2, hidden=(64, 64), rollouts=512, horizon=1,
                    wm_hidden=(64, 64), wm_max_steps=1500, wm_eval_every=250)


def _tiny_reacher_dataset(root):
    from offcoord.data import open_dataset
    from offcoord.data.cards import card_from_bytes
    from offcoord.data.generate import generate
    from offcoord.registry import dataset_card

    card = dataset_card("reacher2-expert-leader-only")
    text = card.path.read_text().replace("transitions = 1_000_000", "transitions = 5_000")
    small = card_from_bytes(text[: text.index("[expected]")].encode(), card.path)
    return open_dataset(generate(small, root=root, progress=False), small, "reacher2-expert-leader-only")


def env_throughput(seconds: float = 3.0) -> None:
    from offcoord_agents.world_model import WorldModel, WorldModelConfig
    from offcoord_agents.world_model_env import RolloutConfig, WorldModelEnv

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        ds = _tiny_reacher_dataset(tmp)
        model = WorldModel.fit(ds, WorldModelConfig(max_steps=200, eval_every=100), seed=0, progress=False)
        print("WorldModelEnv, 7-member ensemble 4x200, 1 thread (agent-transitions/s):")
        print(f"{'rollouts':>10}{'stacked':>14}{'member loop':>14}{'ratio':>8}   target > 1x")
        for n in (64, 1024):
            env = WorldModelEnv(model, ds, RolloutConfig(horizon=10**9, disagreement_threshold=float("inf")), num_envs=n, seed=0)
            actions = {a: np.zeros((n, 1), np.float32) for a in ds.agents}

            def rate(step_fn) -> float:
                env.reset_batch()
                step_fn()
                k, t0 = 0, time.perf_counter()
                while time.perf_counter() - t0 < seconds:
                    step_fn()
                    k += 1
                return k * n * len(ds.agents) / (time.perf_counter() - t0)

            batched = rate(lambda: env.step_batch(actions))
            stacked_predict = model.predict
            model.predict = lambda s, j, clip=True: stacked_predict(s, j, clip, member_loop=True)
            looped = rate(lambda: env.step_batch(actions))
            del model.predict  # back to the class's stacked predict
            print(f"{n:>10}{batched:>14,.0f}{looped:>14,.0f}{batched / looped:>7.2f}x   {'PASS' if batched > looped else 'FAIL'}")


def _coordination_run(args):
    dataset, seed = args
    import offcoord_agents

    torch.set_num_threads(1)
    policy = offcoord_agents.train("momappo", dataset, seed=seed, config=COORD_CONFIG, progress=False)
    return dataset, seed, policy.meta["evals"][-1]["normalized_score"]


def coordination_table() -> None:
    import offcoord

    jobs = [(d, s) for d in ("coordination-favorable", "coordination-neutral", "coordination-unfavorable") for s in range(5)]
    for d in {d for d, _ in jobs}:
        offcoord.build(d)  # build once, outside the timed table
    t0 = time.perf_counter()
    with ProcessPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        results = list(pool.map(_coordination_run, jobs))
    elapsed = time.perf_counter() - t0
    print(f"\nMOMA-PPO coordination table, 3 datasets x 5 seeds, {os.cpu_count()} workers: {elapsed:.0f} s "
          f"(target < 120 s: {'PASS' if elapsed < 120 else 'FAIL'})")
    for d in ("coordination-favorable", "coordination-neutral", "coordination-unfavorable"):
        scores = [r for dd, _, r in results if dd == d]
        print(f"  {d:<26} {np.mean(scores):.2f} ± {np.std(scores):.2f}   (paper 1.0 ± 0.0)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip-table", action="store_true")
    args = parser.parse_args()
    env_throughput()
    if not args.skip_table:
        coordination_table()


if __name__ == "__main__":
    main()
