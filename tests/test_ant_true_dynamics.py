"""scripts/ant_true_dynamics.py: MOMA-PPO's rollouts stepped by the real Ant-v5 (a diagnostic)."""

import numpy as np
import offcoord
import pytest

from helpers import load_script


@pytest.fixture(scope="module")
def script():
    pytest.importorskip("torch")
    return load_script("ant_true_dynamics")


def test_simulator_rollouts_replay_the_datasets_own_steps(script, cache):
    """From a dataset state with the dataset's action, one step gives the stored next state and reward:
    the state is put back into MuJoCo correctly (x and y dropped, as the reward does not use them)."""
    ds = offcoord.load_dataset("ant-full-replay-po", size=600, progress=False)
    env = script.SimulatorRollouts(ds, horizon=1, num_envs=64, seed=3)
    env.reset_batch()
    rows = env.start_indices
    batch = ds.batch(rows)
    _, rewards, terms, truncs, info = env.step_batch(batch.actions)
    np.testing.assert_allclose(env.state_batch(), ds.next_states[rows], atol=2e-3)
    # the reward's forward velocity is the torso's x displacement / 0.05 s, so the float32 state's
    # rounding, through the contacts, shows 20x larger there
    reward_error = np.abs(rewards - ds.rewards[rows])
    assert reward_error.max() < 0.05 and np.median(reward_error) < 1e-3, reward_error
    np.testing.assert_array_equal(terms, ds.terminations[rows])
    assert (truncs | terms).all() and info["active_before"].all()  # horizon 1: every rollout ends
    assert not env._active.any()


def test_momappo_trains_on_the_simulator(script, cache, tmp_path):
    """Two PPO iterations end to end, with the team evaluated in the real environment."""
    ds = offcoord.load_dataset("ant-full-replay-po", size=600, progress=False)
    config = {"steps": 2, "rollouts": 16, "horizon": 3, "hidden": (16, 16), "eval_every": 2, "eval_episodes": 1}
    import offcoord_agents

    offcoord_agents.core.run_training(script.TrueDynamicsMOMAPPO, ds, seed=0, config=config, out=tmp_path / "run",
                                      progress=False)
    results = (tmp_path / "run" / "results.json").read_text()
    assert "normalized_score" in results
    assert not (tmp_path / "run" / "world_model.pt").exists()  # nothing was fit
