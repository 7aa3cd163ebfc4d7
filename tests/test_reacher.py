"""Two-agent reacher: API, determinism, views, Reacher-v5 parity, the experts, the dataset, rendering."""

import json
import os
import subprocess
import sys
import textwrap

import gymnasium
import numpy as np
import pytest
from pettingzoo.test import parallel_api_test

import offcoord
from offcoord.data import open_dataset
from offcoord.data.cards import parse_card
from offcoord.data.generate import generate
from offcoord.envs.reacher import (
    AGENTS,
    STATE_NAMES,
    VIEWS,
    ReacherExpertAgent,
    ReacherExpertBehavior,
    Reacher2Env,
    expert_policies,
    measure_returns,
)

ENV_IDS = ["reacher2-fo", "reacher2-independent", "reacher2-leader-only"]
OBSERVABILITY = {"reacher2-fo": "fo", "reacher2-independent": "independent", "reacher2-leader-only": "leader-only"}

# What each agent sees, written out by hand from the docs (docs/tasks/reacher.md and the class docstring).
DOCUMENTED_VIEWS = {
    "fo": {a: STATE_NAMES for a in AGENTS},
    "independent": {
        "agent_0": ("cos q0", "sin q0", "target x", "target y", "qvel0"),
        "agent_1": ("cos q1", "sin q1", "target x", "target y", "qvel1"),
    },
    "leader-only": {
        "agent_0": ("cos q0", "cos q1", "sin q0", "sin q1", "target x", "target y", "qvel0", "qvel1"),
        "agent_1": ("cos q0", "cos q1", "sin q0", "sin q1", "qvel0", "qvel1"),
    },
}


def _actions(rng):
    return {a: rng.uniform(-1, 1, 1).astype(np.float32) for a in AGENTS}


def _run_team(behavior, episodes, seed=0, env_id="reacher2-fo"):
    """Run a behavior in the env; return per-episode returns, shoulder net rotation, strategy id."""
    env = offcoord.make(env_id)
    rng = np.random.default_rng(seed)
    returns, rotations, strategies = [], [], []
    for i in range(episodes):
        env.reset(seed=seed + i)
        behavior.reset(rng)
        state, total, rotation = env.state(), 0.0, 0.0
        while env.agents:
            _, rewards, _, _, _ = env.step(env.layout.split(behavior.act(state, rng)))
            nxt = env.state()
            # unwrap the shoulder angle from cos/sin: per-step changes are far below π
            step = np.arctan2(nxt[2], nxt[0]) - np.arctan2(state[2], state[0])
            rotation += (step + np.pi) % (2 * np.pi) - np.pi
            state, total = nxt, total + rewards["agent_0"]
        returns.append(total)
        rotations.append(rotation)
        strategies.append(behavior.extras()["strategy"])
    return np.array(returns), np.array(rotations), np.array(strategies)


# --- the environment -----------------------------------------------------------------------------


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_pettingzoo_parallel_api(env_id):
    parallel_api_test(offcoord.make(env_id), num_cycles=60)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_full_episode_is_deterministic_and_truncated_at_50(env_id):
    def episode():
        env = offcoord.make(env_id)
        rng = np.random.default_rng(1)
        trace = [env.reset(seed=7)[0]]
        while env.agents:
            obs, rew, term, trunc, info = env.step(_actions(rng))
            trace.append((obs, rew, term, trunc, env.state()))
        return trace

    a, b = episode(), episode()
    assert len(a) == 51  # reset + 50 steps
    for x, y in zip(a, b):
        for xa, ya in zip(x if isinstance(x, tuple) else (x,), y if isinstance(y, tuple) else (y,)):
            if isinstance(xa, dict):
                assert xa.keys() == ya.keys()
                for k in xa:
                    assert np.array_equal(xa[k], ya[k])
            else:
                assert np.array_equal(xa, ya)
    for _, _, term, trunc, _ in a[1:-1]:
        assert not any(term.values()) and not any(trunc.values())
    _, _, term, trunc, _ = a[-1]
    assert not any(term.values()) and all(trunc.values())  # a time limit, never a termination


@pytest.mark.parametrize("observability", sorted(VIEWS))
def test_views_show_exactly_the_documented_entries(observability):
    env = Reacher2Env(observability)
    obs, _ = env.reset(seed=3)
    for _ in range(5):
        obs, *_ = env.step(_actions(np.random.default_rng(0)))
    state = env.state()
    for agent in AGENTS:
        names = DOCUMENTED_VIEWS[observability][agent]
        assert VIEWS[observability].description[agent] == names
        expected = np.array([state[STATE_NAMES.index(n)] for n in names], dtype=np.float32)
        assert obs[agent].dtype == np.float32
        assert np.array_equal(obs[agent], expected)
        assert env.observation_space(agent).shape == (len(names),)
    # the view is a pure vectorized function of a batch of states
    batch = np.random.default_rng(0).normal(size=(4, len(STATE_NAMES))).astype(np.float32)
    out = VIEWS[observability](batch)
    for agent in AGENTS:
        cols = [STATE_NAMES.index(n) for n in DOCUMENTED_VIEWS[observability][agent]]
        assert np.array_equal(out[agent], batch[:, cols])
    # leader-only: the follower never sees the target
    if observability == "leader-only":
        assert not {"target x", "target y"} & set(VIEWS[observability].description["agent_1"])


def test_spaces_are_shared_views_and_state_is_reacher_v5_observation():
    env1, env2 = Reacher2Env("independent"), Reacher2Env("independent")
    assert env1.view is env2.view  # views are built once; each instance copies the spaces (their RNGs)
    assert env1.observation_space("agent_0") == env2.observation_space("agent_0")
    assert env1.action_space("agent_0") is env1.action_space("agent_0")
    assert env1.action_space("agent_0").shape == (1,) and env1.state_space.shape == (10,)
    with pytest.raises(ValueError, match="observability"):
        Reacher2Env("partial")


@pytest.mark.parametrize("seed", [0, 123])
def test_joint_stepping_equals_gymnasium_reacher_v5(seed):
    """Same seed and same actions: identical states and rewards to Gymnasium's own Reacher-v5."""
    ours = offcoord.make("reacher2-fo")
    ref = gymnasium.make("Reacher-v5")
    obs_ref, _ = ref.reset(seed=seed)
    ours.reset(seed=seed)
    assert np.array_equal(ours.state(), obs_ref.astype(np.float32))
    rng = np.random.default_rng(seed)
    ref_truncated = False
    while ours.agents:
        joint = rng.uniform(-1, 1, 2).astype(np.float32)
        _, rewards, _, truncs, infos = ours.step({"agent_0": joint[:1], "agent_1": joint[1:]})
        obs_ref, reward_ref, term_ref, ref_truncated, info_ref = ref.step(joint)
        assert np.array_equal(ours.state(), obs_ref.astype(np.float32))
        assert rewards == {a: float(reward_ref) for a in AGENTS}
        assert infos["agent_0"]["reward_dist"] == info_ref["reward_dist"]
        assert not term_ref and all(truncs.values()) == ref_truncated
    assert ref_truncated  # both end after Reacher-v5's 50 steps


@pytest.mark.parametrize(
    "action, match",
    [
        (np.array([np.nan], np.float32), "NaN"),
        (np.array([0.1, 0.2], np.float32), "shape"),
        (np.float32(0.3), "shape"),
        (np.array([1.5], np.float32), "outside"),
        (np.array([-1.01], np.float32), "outside"),
        ("left", "numeric"),
    ],
)
def test_bad_actions_raise_naming_the_agent(action, match):
    env = offcoord.make("reacher2-independent")
    env.reset(seed=0)
    with pytest.raises(ValueError, match=match) as err:
        env.step({"agent_0": np.zeros(1, np.float32), "agent_1": action})
    assert "agent_1" in str(err.value)
    with pytest.raises(ValueError, match="agent_1"):  # a missing agent is named too
        env.step({"agent_0": np.zeros(1, np.float32)})


def test_render_without_render_mode_returns_none():
    env = offcoord.make("reacher2-fo")
    env.reset(seed=0)
    with pytest.warns(UserWarning, match="render_mode"):
        assert env.render() is None


_RENDER_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    try:  # is this GL backend usable at all on this machine?
        import mujoco
        ctx = mujoco.GLContext(16, 16)
        ctx.make_current()
        ctx.free()
    except Exception as e:
        print(json.dumps({"no_gl": repr(e)}))
        sys.exit(0)
    import offcoord
    env = offcoord.make("reacher2-leader-only", render_mode="rgb_array")
    plain = offcoord.make("reacher2-leader-only")
    env.reset(seed=0); plain.reset(seed=0)
    act = {"agent_0": np.array([0.5], np.float32), "agent_1": np.array([-0.5], np.float32)}
    for _ in range(10):
        env.step(act); plain.step(act)
    frame = env.render()
    r, g, b = (frame[..., i].astype(int) for i in range(3))
    env.close()
    print(json.dumps({
        "shape": list(frame.shape), "dtype": str(frame.dtype),
        "blue": int(((b > r + 40) & (b > g + 20)).sum()),     # the shoulder link (agent_0)
        "orange": int(((r > g + 40) & (g > b + 30)).sum()),   # the elbow link (agent_1)
        "same_physics": bool(np.array_equal(env.state(), plain.state())),
    }))
    """
)


@pytest.mark.parametrize("backend", ["egl", "osmesa"])
def test_rgb_array_frames_show_both_links_in_their_colours(backend):
    # A fresh interpreter per backend: MuJoCo picks its GL backend once, at import.
    env = {**os.environ, "MUJOCO_GL": backend, "PYOPENGL_PLATFORM": backend}
    proc = subprocess.run([sys.executable, "-c", _RENDER_SCRIPT], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if "no_gl" in result:
        pytest.skip(f"MUJOCO_GL={backend} is not available here: {result['no_gl']}")
    assert result["shape"] == [480, 480, 3] and result["dtype"] == "uint8"
    assert result["blue"] > 50 and result["orange"] > 50, result
    assert result["same_physics"]  # recolouring is visual only


# --- the experts ---------------------------------------------------------------------------------


@pytest.mark.parametrize("strategy, sign", [("clockwise", -1), ("counter-clockwise", 1)])
def test_each_expert_rotates_the_way_it_claims(strategy, sign):
    behavior = ReacherExpertBehavior(strategy=strategy, noise_std=0.1)  # the data's noise
    returns, rotations, strategies = _run_team(behavior, episodes=100, seed=0)
    assert np.all(strategies == ["clockwise", "counter-clockwise"].index(strategy))
    assert np.mean(np.sign(rotations) == sign) >= 0.95
    assert returns.mean() > -9.0  # it reaches the target (a random team scores about -43)


def test_alternating_mixture_records_its_strategy():
    behavior = ReacherExpertBehavior(strategy="alternate", noise_std=0.1)
    _, rotations, strategies = _run_team(behavior, episodes=20, seed=5)
    assert strategies.tolist() == [0, 1] * 10
    assert np.all(np.sign(rotations) == np.where(strategies == 0, -1, 1))


def test_shortest_direction_oracle_beats_both_experts():
    oracle = measure_returns("shortest", episodes=100, seed=0)
    for strategy in ("clockwise", "counter-clockwise"):
        expert = measure_returns(strategy, episodes=100, seed=0)  # same targets (same reset seeds)
        assert oracle.mean() > expert.mean() + 0.5, (strategy, oracle.mean(), expert.mean())


def test_decentralized_experts_score_one_and_disagreeing_team_scores_lower():
    """Each expert team alone normalizes to about 1; the clockwise shoulder with the
    counter-clockwise elbow misses the target: the agreement problem exists in the data."""
    cw = offcoord.evaluate(expert_policies("clockwise"), "reacher2-independent", episodes=60, seed=0)
    ccw = offcoord.evaluate(expert_policies("counter-clockwise"), "reacher2-independent", episodes=60, seed=0)
    mixed = offcoord.evaluate(
        expert_policies("clockwise", "counter-clockwise"), "reacher2-independent", episodes=60, seed=0
    )
    assert abs(cw.normalized_mean - 1) < 0.05 and abs(ccw.normalized_mean - 1) < 0.05
    assert mixed.normalized_mean < min(cw.normalized_mean, ccw.normalized_mean) - 0.1
    assert mixed.mean_return < min(cw.mean_return, ccw.mean_return) - 3.0


def test_expert_arguments_are_checked():
    with pytest.raises(ValueError, match="strategy"):
        ReacherExpertBehavior(strategy="left")
    with pytest.raises(ValueError, match="noise_std"):
        ReacherExpertBehavior(noise_std=-0.1)
    with pytest.raises(ValueError, match="elbow_strategy"):
        ReacherExpertBehavior(elbow_strategy="alternate")
    with pytest.raises(ValueError, match="target"):  # the follower cannot see the target in leader-only
        ReacherExpertAgent("agent_1", "clockwise", observability="leader-only")
    with pytest.raises(RuntimeError, match="reset"):
        ReacherExpertBehavior().act(np.zeros(10, np.float32), np.random.default_rng(0))


# --- the dataset ---------------------------------------------------------------------------------


def test_registered_card_and_behavior():
    card = offcoord.registry.dataset_card("reacher2-expert")
    assert dict(card.datasets) == {f"reacher2-expert-{o}": f"reacher2-{o}" for o in VIEWS}
    assert card.transitions == 1_000_000 and card.expected["episodes"] == 20_000
    assert card.reference_min < card.reference_max
    behavior = offcoord.registry.make_behavior(card.behavior, card.behavior_kwargs)
    assert isinstance(behavior, ReacherExpertBehavior) and behavior.strategy == "alternate"


def test_dataset_views_equal_what_the_environment_returned(tmp_path):
    """A small copy of the card; replaying an episode's actions reproduces its stored per-agent views."""
    text = (offcoord.registry.dataset_card("reacher2-expert").path).read_text()
    text = text.replace("transitions = 1_000_000", "transitions = 200")
    text = "\n".join(line for line in text.splitlines() if not line.startswith(("episodes", "mean_return")))
    path = tmp_path / "reacher2-expert.toml"
    path.write_text(text)
    card = parse_card(path)
    store = generate(card, root=tmp_path / "cache", progress=False)
    first_seed = int(np.random.default_rng(card.seed).integers(2**31 - 1))  # generate's first reset seed
    for dataset_id, env_id in card.datasets.items():
        ds = open_dataset(store, card, dataset_id)
        assert ds.num_episodes == 4 and len(ds) == 200
        assert ds.extras["strategy"].tolist() == [0] * 50 + [1] * 50 + [0] * 50 + [1] * 50
        env = offcoord.make(env_id)
        obs, _ = env.reset(seed=first_seed)
        for t in range(50):
            for a in AGENTS:
                assert np.array_equal(ds.observations[a][t], obs[a]), (dataset_id, t, a)
            obs, rewards, _, truncs, _ = env.step({a: ds.actions[a][t] for a in AGENTS})
            for a in AGENTS:
                assert np.array_equal(ds.next_observations[a][t], obs[a])
            assert ds.rewards[t] == np.float32(rewards["agent_0"])
        assert ds.truncations[49] and not env.agents


@pytest.mark.slow
def test_full_dataset_matches_its_card(tmp_path):
    """Generate the 1M-transition dataset (a few minutes) and check the card's expected statistics."""
    card = offcoord.registry.dataset_card("reacher2-expert")
    store = generate(card, root=tmp_path, progress=False)  # raises if [expected] does not match
    ds = open_dataset(store, card, "reacher2-expert-independent")
    assert np.mean(ds.extras["strategy"]) == 0.5
