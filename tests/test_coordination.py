"""The coordination game: rules, horizons, datasets and their coverage."""

import numpy as np
import pytest

import offcoord


@pytest.mark.parametrize("a0,a1,reward", [(0, 0, 1.0), (1, 1, 1.0), (0, 1, 0.0), (1, 0, 0.0)])
def test_reward_is_one_when_actions_match(a0, a1, reward):
    env = offcoord.make("coordination-game")
    obs, _ = env.reset(seed=0)
    assert obs["agent_0"].tolist() == [0.0]
    _, rew, term, trunc, _ = env.step({"agent_0": a0, "agent_1": np.int64(a1)})
    assert rew == {"agent_0": reward, "agent_1": reward}
    assert all(term.values()) and not any(trunc.values())
    assert env.agents == []


def test_longer_horizon_observes_round_index():
    env = offcoord.make("coordination-game", horizon=4)
    obs, _ = env.reset()
    seen = [obs["agent_0"][0]]
    total = 0.0
    while env.agents:
        obs, rew, term, _, _ = env.step({"agent_0": 1, "agent_1": 1})
        seen.append(obs["agent_1"][0])
        total += rew["agent_0"]
    assert seen == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert total == 4.0


@pytest.mark.parametrize(
    "dataset_id,p0,p1",
    [("coordination-favorable", 0.9, 0.9), ("coordination-neutral", 0.5, 0.5), ("coordination-unfavorable", 0.9, 0.1)],
)
def test_coordination_datasets(cache, dataset_id, p0, p1):
    ds = offcoord.load_dataset(dataset_id, progress=False)
    assert len(ds) == 10_000 and ds.num_episodes == 10_000
    a0, a1 = ds.actions["agent_0"], ds.actions["agent_1"]
    # each agent's empirical right-probability matches the card within 4 standard errors
    for acts, p in ((a0, p0), (a1, p1)):
        assert abs(acts.mean() - p) < 4 * np.sqrt(p * (1 - p) / len(ds))
    # full coverage: every joint action present
    joint = set(map(tuple, ds.joint_actions.tolist()))
    assert joint == {(0, 0), (0, 1), (1, 0), (1, 1)}
    assert np.array_equal(ds.rewards, (a0 == a1).astype(np.float32))
    assert ds.terminations.all() and not ds.truncations.any()
    assert np.all(ds.next_observations["agent_0"] == 1.0)
    stats = ds.statistics
    assert stats["mean_return"] == pytest.approx(float(ds.rewards.mean()))


def test_normalized_score_is_the_coordination_rate():
    assert offcoord.normalized_score("coordination-game", 0.55) == pytest.approx(0.55)
    assert offcoord.normalized_score("coordination-neutral", [0, 1]).tolist() == [0.0, 1.0]
