"""scripts/ant_model_error.py: the world model's disagreement and error along real transitions (a diagnostic)."""

import numpy as np
import offcoord
import pytest

from helpers import load_script


@pytest.fixture(scope="module")
def script():
    pytest.importorskip("torch")
    return load_script("ant_model_error")


def test_model_errors_measure_what_the_rollouts_measure(script, cache, tmp_path):
    """``eps_g`` on real transitions is the one ``WorldModelEnv`` cuts on for the same state and action,
    and real episodes chain: each step's next state is the following step's state."""
    from offcoord_agents.data import TaskSpec, joint_action_matrix
    from offcoord_agents.policy import TeamPolicy
    from offcoord_agents.nets import StackedGaussianActor
    from offcoord_agents.world_model import WorldModel, WorldModelConfig
    from offcoord_agents.world_model_env import WorldModelEnv

    ds = offcoord.load_dataset("ant-full-replay-po", size=600, progress=False)
    spec = TaskSpec.from_dataset(ds)
    model = WorldModel.fit(ds, WorldModelConfig(members=3, elites=2, hidden=(16, 16), max_steps=20, eval_every=10), seed=0,
                           progress=False)
    rows = np.arange(0, 600, 7)
    batch = ds.batch(rows)
    joint = joint_action_matrix(spec, batch.actions)
    errors = script.model_errors(model, ds.states[rows], joint, ds.next_states[rows], ds.rewards[rows])
    env = WorldModelEnv(model, ds, num_envs=len(rows), seed=0)
    env.reset_batch(start_states=ds.states[rows])
    info = env.step_batch(batch.actions)[4]
    np.testing.assert_allclose(errors["eps_g"], info["eps_g"], rtol=1e-5)
    assert np.isfinite(errors["state_err"]).all() and (errors["reward_err"] >= 0).all()

    actor = StackedGaussianActor(spec.n_agents, spec.max_obs_dim, spec.max_act_dim, (8,))
    TeamPolicy(spec, actor, "gaussian").save(tmp_path / "policy.pt")
    act = script.team_actor(str(tmp_path), spec, ds.env_id)
    (s, a, ns, r), returns = script.real_transitions(act, ds.env_id, spec, episodes=2, max_steps=15, seed=5)
    assert s.shape == ns.shape == (len(r), spec.state_dim) and a.shape == (len(r), spec.joint_act_dim)
    assert len(returns) == 2 and np.isclose(returns.sum(), r.sum(), atol=1e-3)
    breaks = np.flatnonzero(np.abs(s[1:] - ns[:-1]).max(-1) > 0)  # the only break is between the episodes
    assert len(breaks) <= 1

    stats = script.model_rollouts(act, WorldModelEnv(model, ds, num_envs=32, seed=0), steps=5, gamma=0.99)
    assert 0 < stats["length"] <= 5 and 0 <= stats["cut"] <= 1 and np.isfinite(stats["return"])


def test_the_experts_real_steps_are_the_datas(script, cache):
    """The expert behavior acts through the legs' split of its joint action, and its joint actions are
    recorded in the model's order (agent by agent): replaying the first one by agent gives the
    recorded next state (the expert walks: about 4 reward per step)."""
    from offcoord_agents.data import TaskSpec, split_joint_action

    ds = offcoord.load_dataset("ant-full-replay-po", size=600, progress=False)
    spec = TaskSpec.from_dataset(ds)
    (s, a, ns, r), returns = script.real_transitions(script.team_actor("ant-expert.npz", spec, ds.env_id), ds.env_id, spec,
                                                     episodes=1, max_steps=60, seed=20_000)
    assert len(r) == 60 and r[20:].mean() > 2.5
    env = offcoord.make(ds.env_id)
    env.reset(seed=20_000)
    env.step(split_joint_action(spec, a[0]))
    np.testing.assert_allclose(env.state(), ns[0], atol=1e-6)
