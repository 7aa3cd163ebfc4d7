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
