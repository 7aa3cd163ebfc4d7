"""Every registered environment id goes through the same API tests (PettingZoo's and ours)."""

import numpy as np
import pytest
from gymnasium import spaces
from pettingzoo.test import parallel_api_test

import offcoord
from offcoord.errors import EpisodeOverError

from helpers import rollout, same

ENV_IDS = offcoord.list_envs()


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_pettingzoo_parallel_api(env_id):
    env = offcoord.make(env_id)
    parallel_api_test(env, num_cycles=60)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_spaces_are_built_once_and_state_matches_space(env_id):
    env = offcoord.make(env_id)
    obs, _ = env.reset(seed=0)
    for a in env.possible_agents:
        assert env.observation_space(a) is env.observation_space(a)
        assert env.action_space(a) is env.action_space(a)
        assert env.observation_space(a).contains(obs[a]), (a, obs[a])
    assert env.state().shape == env.state_space.shape
    # the observation is the view of the state: the one place views are defined
    for a, o in env.observe_state(env.state()).items():
        assert np.array_equal(o, obs[a])
    # every instance has its own spaces: a space carries its sampling RNG, and seeding one
    # environment's spaces must not move another's samples
    other = offcoord.make(env_id)
    spaces_of = lambda e: [e.state_space] + [s for a in e.possible_agents for s in (e.observation_space(a), e.action_space(a))]
    assert not {id(s) for s in spaces_of(env)} & {id(s) for s in spaces_of(other)}
    a = env.possible_agents[0]
    env.action_space(a).seed(1)
    first = env.action_space(a).sample()
    env.action_space(a).seed(1)
    other.action_space(a).sample()
    assert np.array_equal(env.action_space(a).sample(), first)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_full_episode_determinism(env_id):
    """Same seed and same actions give the same episode to the last step (PettingZoo's seed test stops after one)."""
    first = rollout(offcoord.make(env_id), seed=123, action_seed=7)
    second = rollout(offcoord.make(env_id), seed=123, action_seed=7)
    assert len(first) > 1
    assert same(first, second)
    # and the env's own reset with the same seed replays it too
    env = offcoord.make(env_id)
    rollout(env, seed=5, action_seed=1)
    assert same(rollout(env, seed=123, action_seed=7), first)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_step_after_episode_end_is_an_error(env_id):
    env = offcoord.make(env_id)
    rollout(env, seed=0, action_seed=0)
    assert env.agents == []
    with pytest.raises(EpisodeOverError, match="reset"):
        env.step({a: env.action_space(a).sample() for a in env.possible_agents})


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_bad_actions_name_the_agent_and_the_space(env_id):
    env = offcoord.make(env_id)
    env.reset(seed=0)
    agent = env.possible_agents[-1]
    good = {a: env.action_space(a).sample() for a in env.agents}
    space = env.action_space(agent)
    if isinstance(space, spaces.Discrete):
        bad_values = [space.n, -1, 0.5, np.nan, [0, 1], True, "left"]
    else:
        bad_values = [
            np.full(space.shape, np.nan), np.full(space.shape, np.inf), np.zeros(space.shape[0] + 1),
            np.full(space.shape, 2.0), np.zeros((1,) + space.shape), "x", None,
        ]
    for bad in bad_values:
        with pytest.raises(ValueError, match=agent):
            env.step({**good, agent: bad})
    with pytest.raises(ValueError, match="missing"):
        env.step({a: v for a, v in good.items() if a != agent})
    with pytest.raises(ValueError, match="unexpected"):
        env.step({**good, "intruder": good[agent]})
    # the rejected steps changed nothing: the episode is still at its start
    state = env.state().copy()
    env.reset(seed=0)
    assert np.array_equal(state, env.state())


def test_unknown_ids_suggest_close_matches():
    with pytest.raises(ValueError, match="reacher2-leader-only"):
        offcoord.make("reacher2-leaderonly")
    # a card id names a store with several views, so loading one asks which (building it does not)
    with pytest.raises(offcoord.UnknownIdError, match="'reacher2-expert' is a dataset card.*'reacher2-expert-fo'.*load one"):
        offcoord.load_dataset("reacher2-expert", auto_build=False)
    with pytest.raises(ValueError, match="coordination-unfavorable"):
        offcoord.load_dataset("coordination-unfavourable")
    with pytest.raises(ValueError, match="did you mean"):
        offcoord.normalized_score("ant-expert-p0", 1.0)


def test_bad_make_kwargs_are_value_errors():
    with pytest.raises(ValueError, match="coordination-game"):
        offcoord.make("coordination-game", nonsense=1)
    for horizon in (0, -1, 1.5, True, "3"):
        with pytest.raises(ValueError, match="horizon"):
            offcoord.make("coordination-game", horizon=horizon)
    with pytest.raises(ValueError, match="render_mode"):
        offcoord.make("coordination-game", render_mode="human")


def test_registered_with_pettingzoo():
    import pettingzoo

    env = pettingzoo.make("parallel", "offcoord/coordination-game-v0", horizon=3)
    assert env.horizon == 3
    assert env.possible_agents == ["agent_0", "agent_1"]


def test_join_takes_one_step_or_a_batch_never_a_mix_up():
    """The one-step fast path of ``layout.join`` is only for one action per agent: a batch of
    one-dimensional actions is refused, not concatenated into one joint action."""
    layout = offcoord.make("reacher2-fo").layout
    step = layout.join({"agent_0": np.array([0.25], np.float32), "agent_1": np.array([-0.5], np.float32)})
    assert step.shape == (layout.joint_action_dim,) and sorted(step.tolist()) == [-0.5, 0.25]
    batch = layout.join({a: np.full((5, 1), i, np.float32) for i, a in enumerate(layout.agents)})
    assert batch.shape == (5, layout.joint_action_dim)
    with pytest.raises(ValueError):
        layout.join({"agent_0": np.zeros(5, np.float32), "agent_1": np.ones(5, np.float32)})
