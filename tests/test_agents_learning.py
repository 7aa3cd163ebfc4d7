"""Learning tests: fixed seeds, small budgets, real thresholds.

The coordination game shows the benchmark's point in miniature: behavior cloning agrees only when
the data already agrees, while centralized IQL always does.
"""

import pytest

torch = pytest.importorskip("torch")

import offcoord_agents  # noqa: E402

FAST = {"hidden": (64, 64), "eval_every": 500, "eval_episodes": 5}


def _score(algo, dataset, steps, seed=0):
    policy = offcoord_agents.train(algo, dataset, seed=seed, config={**FAST, "steps": steps}, progress=False)
    return policy.meta["evals"][-1]["normalized_score"]


def test_ibc_agrees_on_favorable_data(cache):
    assert _score("ibc", "coordination-favorable", 500) >= 0.95


def test_ibc_fails_on_unfavorable_data(cache):
    """The model-free failure the benchmark exists to show: each agent clones its own majority action."""
    assert _score("ibc", "coordination-unfavorable", 500) <= 0.1


def test_centralized_iql_agrees_on_unfavorable_data(cache):
    assert _score("iql", "coordination-unfavorable", 1000) >= 0.95


@pytest.mark.slow
def test_reacher_fo_ibc_and_itd3bc_learn(cache):
    """On the full-observation reacher data, BC and TD3+BC reach a clearly positive normalized score."""
    for algo in ("ibc", "itd3bc"):
        policy = offcoord_agents.train(algo, "reacher2-expert-fo", seed=0, progress=False,
                                       config={"steps": 20_000, "eval_every": 10_000, "eval_episodes": 10})
        assert policy.meta["evals"][-1]["normalized_score"] > 0.3, algo
