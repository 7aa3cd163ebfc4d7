"""The four-agent ant (ant-fo / ant-po), its numpy behavior policies and the SAC training script."""

import os
import subprocess
import sys
from pathlib import Path

import gymnasium
import mujoco
import numpy as np
import pytest
from pettingzoo.test import parallel_api_test

from helpers import load_script, rollout, same

import offcoord
from offcoord.envs import ant
from offcoord.policies import MLPPolicy, PolicyBehavior, load_policy

ROOT = Path(__file__).resolve().parent.parent
OBSERVABILITIES = ("fo", "po")


def _gym_ant(render_mode=None):
    return gymnasium.make("Ant-v5", include_cfrc_ext_in_observation=False, max_episode_steps=1000, render_mode=render_mode)


def _random_actions(env, rng, scale=1.0):
    return {a: (scale * rng.uniform(-1, 1, size=2)).astype(np.float32) for a in env.agents}


# ------------------------------------------------------------------------------ environment
@pytest.mark.parametrize("observability", OBSERVABILITIES)
def test_parallel_api(observability):
    parallel_api_test(offcoord.make(f"ant-{observability}"), num_cycles=30)


@pytest.mark.parametrize("observability", OBSERVABILITIES)
def test_spaces(observability):
    env = offcoord.make(f"ant-{observability}")
    obs, _ = env.reset(seed=0)
    assert env.possible_agents == ["agent_0", "agent_1", "agent_2", "agent_3"]
    assert env.state_space.shape == (27,) and env.state().dtype == np.float32
    dims = {"fo": [27, 27, 27, 27], "po": [15, 4, 4, 4]}[observability]
    for a, d in zip(env.possible_agents, dims):
        assert env.observation_space(a).shape == (d,) and obs[a].shape == (d,) and obs[a].dtype == np.float32
        assert env.action_space(a) == gymnasium.spaces.Box(-1, 1, (2,), np.float32)
        other = offcoord.make(f"ant-{observability}")
        assert env.view is other.view and env.observation_space(a) == other.observation_space(a)  # one view ...
        assert env.observation_space(a) is not other.observation_space(a)  # ... whose spaces each instance copies
    with pytest.raises(ValueError, match="observability"):
        offcoord.make("ant-fo", observability="partial")


def test_full_episode_determinism():
    """Same seed and actions: the same 1000-step episode, also after other episodes on the same env."""
    first = rollout(offcoord.make("ant-po"), seed=3, action_seed=11, scale=0.3)
    assert len(first) == 1001 and all(first[-1][5].values())  # ran to the time limit
    env = offcoord.make("ant-po")
    rollout(env, seed=8, action_seed=2)
    assert same(rollout(env, seed=3, action_seed=11, scale=0.3), first)


@pytest.mark.parametrize("scale", [0.3, 1.0], ids=["to-time-limit", "to-termination"])
def test_states_rewards_and_ends_are_gymnasium_ant_v5(scale):
    """Stepping ours and Gymnasium's Ant-v5 with the same seed and actions gives identical states."""
    ours, theirs = offcoord.make("ant-fo"), _gym_ant()
    rng = np.random.default_rng(5)
    obs, _ = ours.reset(seed=42)
    g_obs, _ = theirs.reset(seed=42)
    assert np.array_equal(ours.state(), g_obs.astype(np.float32))
    steps = 0
    while ours.agents:
        actions = _random_actions(ours, rng, scale)
        obs, rew, term, trunc, infos = ours.step(actions)
        g_obs, g_rew, g_term, g_trunc, g_info = theirs.step(ours.layout.join(actions))
        steps += 1
        assert np.array_equal(ours.state(), g_obs.astype(np.float32)), steps
        assert all(o.tolist() == g_obs.astype(np.float32).tolist() for o in obs.values())  # fo view = state
        assert set(rew.values()) == {float(g_rew)}
        assert set(term.values()) == {g_term} and set(trunc.values()) == {g_trunc}
        assert ours.termination_rule(ours.state()[None]).tolist() == [g_term]  # the rule world models use
        assert infos["agent_3"]["x_position"] == g_info["x_position"]
    assert g_term or g_trunc
    if scale == 0.3:
        assert steps == 1000 and g_trunc and not g_term
    else:
        assert g_term and steps < 1000


def test_joint_action_columns_drive_each_agents_own_leg_by_name():
    model = offcoord.make("ant-po").gym_env.unwrapped.model
    for i, agent in enumerate(ant.AGENTS):
        hip, ankle = ant.LAYOUT.action_columns[agent]
        assert model.joint(int(model.actuator_trnid[hip, 0])).name == f"hip_{i + 1}"
        assert model.joint(int(model.actuator_trnid[ankle, 0])).name == f"ankle_{i + 1}"
    # the actuator order is not the joint order: position-based pairing would be wrong
    assert ant.LAYOUT.action_columns["agent_0"] != (0, 1)


def test_joint_action_matches_mamujoco_ant_4x2():
    try:
        from gymnasium_robotics import mamujoco_v1
    except Exception as e:  # pragma: no cover - depends on the optional test dependency
        pytest.skip(f"gymnasium-robotics (MaMuJoCo) cannot be imported: {e!r}")
    # MaMuJoCo's Ant crashes with include_cfrc_ext_in_observation=False unless local_categories is given
    ma = mamujoco_v1.parallel_env(
        "Ant", "4x2", include_cfrc_ext_in_observation=False, local_categories=[["qpos", "qvel"], ["qpos"]]
    )
    assert ma.possible_agents == list(ant.AGENTS)
    rng = np.random.default_rng(0)
    for _ in range(20):
        actions = {a: rng.uniform(-1, 1, 2).astype(np.float32) for a in ant.AGENTS}
        np.testing.assert_array_equal(
            ant.LAYOUT.join(actions), ma.map_local_actions_to_global_action(actions).astype(np.float32)
        )
        split = ant.LAYOUT.split(ma.map_local_actions_to_global_action(actions))
        assert same({a: v.astype(np.float32) for a, v in split.items()}, actions)
    ma.close()


def test_po_view_is_each_agents_own_leg_by_joint_name():
    """Each po entry equals the MuJoCo joint value of the same name (read through mujoco's named access)."""
    env = offcoord.make("ant-po")
    env.reset(seed=1)
    rng = np.random.default_rng(1)
    for _ in range(30):
        obs, *_ = env.step(_random_actions(env, rng))
    data = env.gym_env.unwrapped.data
    f32 = lambda x: np.asarray(x, dtype=np.float32)  # noqa: E731
    for i, agent in enumerate(ant.AGENTS):
        hip, ankle = data.joint(f"hip_{i + 1}"), data.joint(f"ankle_{i + 1}")
        leg = f32([hip.qpos[0], ankle.qpos[0], hip.qvel[0], ankle.qvel[0]])
        np.testing.assert_array_equal(obs[agent][:4], leg)
        root = data.joint("root")
        torso = f32(np.concatenate([root.qpos[2:7], root.qvel[:6]]))
        if agent == "agent_0":
            assert obs[agent].shape == (15,)
            np.testing.assert_array_equal(obs[agent][4:], torso)
        else:
            assert obs[agent].shape == (4,)
        # nothing from another leg: no other joint's value appears in this agent's view
        others = [data.joint(f"{j}_{k}") for k in range(1, 5) if k != i + 1 for j in ("hip", "ankle")]
        other_values = f32([v for jt in others for v in (jt.qpos[0], jt.qvel[0])])
        assert not np.isin(obs[agent], other_values).any()
    # the descriptions name the same joints
    assert ant.PO_VIEW.description["agent_2"] == ("hip_3 angle", "ankle_3 angle", "hip_3 velocity", "ankle_3 velocity")
    assert ant.PO_VIEW.description["agent_0"][4:] == ant.TORSO_NAMES


def test_views_of_stored_states_match_the_environment():
    env = offcoord.make("ant-po")
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    states, observations = [], []
    for _ in range(10):
        obs, *_ = env.step(_random_actions(env, rng))
        states.append(env.state())
        observations.append(obs)
    batch = ant.PO_VIEW(np.stack(states))
    for a in ant.AGENTS:
        np.testing.assert_array_equal(batch[a], np.stack([o[a] for o in observations]))


def test_bad_actions_name_the_agent():
    env = offcoord.make("ant-fo")
    env.reset(seed=0)
    good = {a: np.zeros(2, np.float32) for a in env.agents}
    for bad in (np.zeros(3), np.full(2, 1.5), np.array([np.nan, 0.0]), "fast"):
        with pytest.raises(ValueError, match="agent_2"):
            env.step({**good, "agent_2": bad})


def test_rgb_array_render():
    env = offcoord.make("ant-fo", render_mode="rgb_array")
    env.reset(seed=0)
    try:
        frame = env.render()
    except Exception as e:  # no OpenGL backend on this machine
        pytest.skip(f"no OpenGL backend for MuJoCo rendering (MUJOCO_GL={os.environ.get('MUJOCO_GL')}): {e!r}")
    assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3 and frame.std() > 0
    env.close()
    with pytest.raises(ValueError, match="render_mode"):
        offcoord.make("ant-po", render_mode="human")


# --------------------------------------------------------------------------------- policies
def _random_params(rng, obs_dim=27, act_dim=8, hidden=16):
    def lin(i, o):
        return rng.normal(0, 0.5, (i, o)).astype(np.float32), rng.normal(0, 0.1, o).astype(np.float32)

    p = {}
    p["hidden_w0"], p["hidden_b0"] = lin(obs_dim, hidden)
    p["hidden_w1"], p["hidden_b1"] = lin(hidden, hidden)
    p["mean_w"], p["mean_b"] = lin(hidden, act_dim)
    p["logstd_w"], p["logstd_b"] = lin(hidden, act_dim)
    p.update(action_scale=np.ones(act_dim, np.float32), action_bias=np.zeros(act_dim, np.float32),
             log_std_min=np.float32(-5), log_std_max=np.float32(2))
    return p


def test_numpy_policy_shapes_and_sampling():
    rng = np.random.default_rng(0)
    policy = MLPPolicy(_random_params(rng))
    obs = rng.normal(size=(5, 27)).astype(np.float32)
    det = policy.act(obs, deterministic=True)
    assert det.shape == (5, 8) and det.dtype == np.float32 and np.all(np.abs(det) <= 1)
    np.testing.assert_array_equal(policy.act(obs[0], deterministic=True), det[0])
    for rows in (slice(0, 3), slice(2, 5), slice(1, 2)):  # the same bits in any batch (see MLPPolicy._heads)
        np.testing.assert_array_equal(policy.act(obs[rows], deterministic=True), det[rows])
    a1 = policy.act(obs, rng=np.random.default_rng(3))
    a2 = policy.act(obs, rng=np.random.default_rng(3))
    np.testing.assert_array_equal(a1, a2)
    assert not np.array_equal(a1, det) and np.all(np.abs(a1) <= 1)
    with pytest.raises(ValueError, match="rng"):
        policy.act(obs)
    with pytest.raises(ValueError, match=r"\(N, 27\)"):
        policy.act(np.zeros((2, 26)), deterministic=True)


def _load_training_script():
    return load_script("train_ant_sac")


def test_numpy_policy_matches_the_torch_actor(tmp_path):
    torch = pytest.importorskip("torch", reason="torch (the agents extra) is needed to compare with the trained actor")
    sac = _load_training_script()
    torch.manual_seed(0)
    actor = sac.Actor(27, 8, -np.ones(8), np.ones(8), hidden=64)
    with torch.no_grad():  # make the log-std head matter
        for p in actor.parameters():
            p.add_(0.3 * torch.randn_like(p))
    path = tmp_path / "actor.npz"
    sac.export_actor(actor, str(path), step=123, eval_return=4.5, cfg=sac.Config())
    policy = load_policy(path)
    assert policy.meta["train_step"] == 123 and policy.meta["obs_dim"] == 27
    obs = np.random.default_rng(0).normal(0, 2, (64, 27)).astype(np.float32)
    with torch.no_grad():
        mean, log_std = actor(torch.from_numpy(obs))
        det = actor.deterministic(torch.from_numpy(obs)).numpy()
    np_mean, np_log_std = policy.distribution(obs)
    np.testing.assert_allclose(np_mean, mean.numpy(), rtol=1e-5, atol=1e-5)
    # float32 sums in another order (torch's matrix product, numpy's per-row products); the log-std
    # head scales its tanh by 3.5 (half of [-5, 2]), so its rounding shows 3.5 times larger
    np.testing.assert_allclose(np_log_std, log_std.numpy(), rtol=1e-5, atol=5e-5)
    np.testing.assert_allclose(policy.act(obs, deterministic=True), det, rtol=1e-5, atol=1e-5)
    # a sampled numpy action is the torch squashing of the same noise
    eps = np.random.default_rng(9).standard_normal((64, 8), dtype=np.float32)
    expected = np.tanh(mean.numpy() + np.exp(log_std.numpy()) * eps)
    np.testing.assert_allclose(policy.act(obs, rng=np.random.default_rng(9)), expected, rtol=1e-5, atol=1e-5)


def test_policy_behavior_drives_the_joint_state(tmp_path):
    rng = np.random.default_rng(0)
    params = _random_params(rng)
    path = tmp_path / "p.npz"
    np.savez(path, **params, format_version=np.int64(1), train_step=np.int64(0))
    behavior = PolicyBehavior(str(path), deterministic=False)
    env = offcoord.make("ant-po")
    env.reset(seed=0)
    behavior.reset(rng)
    joint = behavior.act(env.state(), rng)
    assert joint.shape == (8,)
    env.step(env.layout.split(joint))


def test_import_offcoord_never_imports_torch():
    code = "import sys, offcoord, offcoord.policies, offcoord.envs.ant; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


# ------------------------------------------------------------------------- training script
def test_sac_training_script_checkpoints_and_resumes(tmp_path, capsys):
    """CleanRL-style smoke run of the script's command line (in-process: no second torch start-up):
    train, stop, resume where it stopped."""
    pytest.importorskip("torch", reason="the training script needs torch (the agents extra)")
    sac = _load_training_script()
    run = tmp_path / "run"
    common = ["--run-dir", str(run), "--learning-starts", "150", "--checkpoint-every", "100", "--eval-every", "200",
              "--eval-episodes", "1", "--log-every", "100", "--batch-size", "32", "--buffer-size", "150"]
    sac.main(common + ["--total-steps", "200"])
    first = capsys.readouterr().out
    assert "checkpoint at step 200" in first
    sac.main(common + ["--total-steps", "300", "--resume"])
    second = capsys.readouterr().out
    assert "resumed from" in second and "at step 200" in second
    assert "step 300" in second and "step 100 " not in second
    chunks = sorted(p.name for p in (run / "replay").iterdir())
    assert chunks == [f"chunk_{a:09d}_{a + 100:09d}.npz" for a in (0, 100, 200)]
    assert (run / "snapshots" / "actor_00000200.npz").exists() and (run / "snapshots" / "best.npz").exists()
    policy = load_policy(run / "snapshots" / "actor_00000200.npz")
    assert policy.obs_dim == 27 and policy.act_dim == 8
    lines = (run / "eval.csv").read_text().splitlines()
    assert lines[0].startswith("step,mean_return") and [ln.split(",")[0] for ln in lines[1:]] == ["200"]
    with pytest.raises(SystemExit, match="--fresh"):
        sac.main(common + ["--fresh"])
    # picking the dataset behaviors from the snapshots (one snapshot here: every pick is it)
    out = tmp_path / "picked"
    summary = sac.select_policies(str(run), str(out), curriculum=2, episodes=1, candidates=1)
    assert sorted(p.name for p in out.iterdir()) == [
        "ant-curriculum-00.npz", "ant-curriculum-01.npz", "ant-expert.npz", "ant-medium.npz", "ant-policies.json"]
    assert summary["policies"]["ant-expert"]["train_step"] == 200
    assert load_policy(out / "ant-expert.npz").meta["train_step"] == 200


def test_replay_chunks_rebuild_the_buffer_and_drop_chunks_written_after_the_checkpoint(tmp_path):
    pytest.importorskip("torch", reason="the training script needs torch (the agents extra)")
    sac = _load_training_script()
    rb = sac.ReplayBuffer(7, obs_dim=2, act_dim=1)
    for t in range(16):
        rb.add([t, -t], [t + 1, -t - 1], [t / 10], t, t % 5 == 0)
        if (t + 1) % 4 == 0:
            rb.save_chunk(str(tmp_path), t + 1 - 4, t + 1)
    # chunk [0, 4) is gone: neither the checkpoint at 16 nor the one at 12 needs it
    assert [(a, b) for _, a, b in sac.list_chunks(str(tmp_path))] == [(4, 8), (8, 12), (12, 16)]
    # the crash case: chunk [12, 16) was written but the checkpoint still says step 12
    restored = sac.ReplayBuffer(7, obs_dim=2, act_dim=1)
    restored.load_chunks(str(tmp_path), 12)
    assert restored.total == 12 and len(restored) == 7
    assert sorted(restored.obs[:, 0].tolist()) == list(range(5, 12))
    np.testing.assert_array_equal(restored.obs[12 % 7 - 1], [11, -11])
    np.testing.assert_array_equal(restored.rewards[[5 % 7, 10 % 7]], [5, 10])
    np.testing.assert_array_equal(restored.terminations[[5 % 7, 10 % 7, 6 % 7]], [1, 1, 0])
    assert [(a, b) for _, a, b in sac.list_chunks(str(tmp_path))] == [(4, 8), (8, 12)]
