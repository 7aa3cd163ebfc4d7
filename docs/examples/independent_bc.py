"""Plug in your own algorithm: independent behavior cloning on the coordination game, numpy only.

Uses nothing but offcoord's public API: load a dataset, fit one policy per agent from that
agent's own observations and actions, hand the per-agent policies to offcoord.evaluate
(decentralized execution). Run it: ``python docs/examples/independent_bc.py``.
"""

import numpy as np

import offcoord


def train_independent_bc(dataset_id: str) -> dict:
    ds = offcoord.load_dataset(dataset_id)
    policies = {}
    for agent in ds.agents:
        actions = np.asarray(ds.actions[agent])  # this agent's own actions only
        counts = np.bincount(actions, minlength=2)
        best = int(np.argmax(counts))  # the mode: deterministic evaluation, as the protocol asks
        policies[agent] = lambda obs, best=best: best
    return policies


if __name__ == "__main__":
    for dataset_id in ("coordination-favorable", "coordination-neutral", "coordination-unfavorable"):
        policy = train_independent_bc(dataset_id)
        result = offcoord.evaluate(policy, "coordination-game", episodes=10, seed=0)
        print(f"{dataset_id:<26} normalized score {result.normalized_mean:.2f}")
