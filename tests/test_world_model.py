"""The world-model ensemble, WorldModelEnv's safeguards, and MOMA-PPO on the coordination game."""

from pathlib import Path

import numpy as np
import offcoord
import pytest

torch = pytest.importorskip("torch")

import offcoord_agents  # noqa: E402
from offcoord_agents.world_model import WorldModel, WorldModelConfig, denormals_flushed, disagreement  # noqa: E402
from offcoord_agents.world_model_env import RolloutConfig, WorldModelEnv  # noqa: E402
from helpers import dataset_copy  # noqa: E402

SMALL_WM = WorldModelConfig(members=4, elites=3, hidden=(64, 64), max_steps=800, eval_every=200, patience=3)


@pytest.fixture(scope="module")
def reacher_model(tiny_datasets):
    ds = tiny_datasets["reacher2-leader-only"]
    return ds, WorldModel.fit(ds, SMALL_WM, seed=0, progress=False)


def test_fit_is_deterministic_and_reports_held_out_error(tiny_datasets, reacher_model):
    ds, model = reacher_model
    again = WorldModel.fit(ds, SMALL_WM, seed=0, progress=False)
    for k, v in model.state_dict().items():
        assert torch.equal(v, again.state_dict()[k]), k
    rep = model.report
    assert set(rep) >= {"state_rmse_normalized", "reward_rmse", "termination_accuracy", "elites"}
    assert len(rep["elites"]) == 3 and rep["state_rmse_normalized"] < 1.0  # better than predicting the mean change
    assert rep["termination_accuracy"] == 1.0  # the reacher never terminates


def test_a_fit_flushes_denormal_floats_and_restores_the_callers_setting(tiny_datasets, monkeypatch):
    # denormals slowed a long ant fit 4x (offcoord_agents.world_model.flushing_denormals)
    seen = []
    real_loss = WorldModel.loss
    monkeypatch.setattr(WorldModel, "loss", lambda self, *a: seen.append(denormals_flushed()) or real_loss(self, *a))
    config = WorldModelConfig(members=2, elites=1, hidden=(8,), max_steps=2)
    for before in (False, True):
        torch.set_flush_denormal(before)
        WorldModel.fit(tiny_datasets["reacher2-leader-only"], config, seed=0, progress=False)
        assert seen == [True, True] and denormals_flushed() == before  # on during the fit, the caller's after
        seen.clear()
    torch.set_flush_denormal(False)


def test_stacked_ensemble_equals_a_loop_over_members(reacher_model):
    _, model = reacher_model
    s, a = torch.randn(9, model.state_dim), torch.rand(9, model.joint_act_dim) * 2 - 1
    for x, y in zip(model.predict(s, a), model.predict(s, a, member_loop=True)):
        assert torch.allclose(x, y, atol=1e-5)
    e = model.elite_idx  # the elites alone (what rollouts use) are those members' rows of the full ensemble
    for x, y, z in zip(model.predict(s, a), model.predict(s, a, elites_only=True),
                       model.predict(s, a, member_loop=True, elites_only=True)):
        assert torch.allclose(x[e], y, atol=1e-5) and torch.allclose(y, z, atol=1e-5)


def test_the_inference_path_packs_weights_once_and_follows_every_change(reacher_model):
    """Without autograd the elites' weights are packed once and rows go in blocks: the numbers equal
    the autograd path's for several blocks, and an optimizer step or a reload is picked up."""
    import copy

    _, fitted = reacher_model
    model = copy.deepcopy(fitted)
    s, a = torch.randn(600, model.state_dim), torch.rand(600, model.joint_act_dim) * 2 - 1  # three blocks of 256

    def both():
        with torch.no_grad():
            fast = model.predict(s, a, elites_only=True)
        slow = model.predict(s, a, elites_only=True)  # autograd on: no packing, one block
        for x, y in zip(fast, slow):
            assert torch.allclose(x, y.detach(), atol=1e-5)
        return fast[0]

    before = both()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.loss(s[None].expand(model.net.members, -1, -1), a[None].expand(model.net.members, -1, -1),
               torch.zeros(model.net.members, 600, model.state_dim + 1), torch.zeros(model.net.members, 600)).backward()
    opt.step()
    after_step = both()
    assert not torch.allclose(before, after_step)
    model.load_state_dict(fitted.state_dict())
    assert torch.allclose(both(), before)


def test_save_and_load(reacher_model, tmp_path):
    _, model = reacher_model
    loaded = WorldModel.load(model.save(tmp_path / "wm.pt"))
    s = torch.zeros(5, model.state_dim)
    a = torch.zeros(5, model.joint_act_dim)
    for x, y in zip(model.predict(s, a), loaded.predict(s, a)):
        assert torch.equal(x, y)
    (tmp_path / "bad.pt").write_bytes(b"nope")
    with pytest.raises(RuntimeError, match="bad.pt.*corrupted"):
        WorldModel.load(tmp_path / "bad.pt")


def test_a_fit_is_shared_by_every_view_of_the_stored_data(tiny_datasets, tmp_path, monkeypatch):
    """The model sees global states only, so runs on other views of one stored copy load the first
    run's fit (same key: the data's digests, config, seed) instead of fitting again, from beside the
    dataset's store; another seed fits anew; a damaged shared copy is fit again, never an error."""
    import dataclasses
    import shutil

    from offcoord.data import open_dataset
    from offcoord_agents import world_model as wm

    tiny = tiny_datasets["reacher2-leader-only"]
    store = shutil.copytree(tiny.path, tmp_path / "root" / Path(tiny.path).name)  # a cache root of this test's own
    ds = open_dataset(store, tiny.card, tiny.id, tiny.manifest)
    card = dataclasses.replace(ds.card, datasets={**ds.card.datasets, "tiny-fo": "reacher2-fo"})
    fo = open_dataset(store, card, "tiny-fo", ds.manifest)
    assert fo.observations["agent_1"].shape[1] == 10 and ds.observations["agent_1"].shape[1] == 6
    fits = []
    real_fit = wm.WorldModel.fit
    monkeypatch.setattr(wm.WorldModel, "fit", lambda *a, **k: fits.append(1) or real_fit(*a, **k))
    cfg = dataclasses.replace(SMALL_WM, max_steps=200)

    first = wm.fit_or_load(ds, cfg, tmp_path / "a" / "world_model.pt", seed=0, progress=False)
    other_view = wm.fit_or_load(fo, cfg, tmp_path / "b" / "world_model.pt", seed=0, progress=False)
    assert len(fits) == 1 and (tmp_path / "b" / "world_model.pt").exists()
    assert_same_weights(first, other_view)
    wm.fit_or_load(fo, cfg, tmp_path / "c" / "world_model.pt", seed=1, progress=False)
    wm.fit_or_load(fo, cfg, None, seed=0, progress=False, shared=False)
    assert len(fits) == 3
    shared_copies = sorted((tmp_path / "root" / "world_models").glob("*.pt"))
    assert len(shared_copies) == 2
    for f in shared_copies:
        f.write_bytes(b"torn")
    again = wm.fit_or_load(fo, cfg, tmp_path / "d" / "world_model.pt", seed=0, progress=False)
    assert len(fits) == 4
    assert_same_weights(first, again)  # the refit is the same deterministic fit
    # A run directory saved by an earlier version (records the dataset id) is resumed, not refit.
    old = wm.WorldModel.load(tmp_path / "a" / "world_model.pt")
    old.report["fitted_on"] = {"dataset": ds.id, "transitions": len(ds), "seed": 0}
    old.save(tmp_path / "a" / "world_model.pt")
    wm.fit_or_load(ds, cfg, tmp_path / "a" / "world_model.pt", seed=0, progress=False)
    assert len(fits) == 4


def assert_same_weights(a, b):
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k


def test_disagreement_matches_its_definition():
    torch.manual_seed(0)
    ns, r = torch.randn(5, 3, 4), torch.randn(5, 3)
    eps_g, eps_r = disagreement(ns, r)
    for b in range(3):
        x = torch.cat([ns[:, b], r[:, b, None]], 1).numpy()
        assert eps_g[b].item() == pytest.approx(np.linalg.norm(np.cov(x, rowvar=False), "fro"), rel=1e-5)
        assert eps_r[b].item() == pytest.approx(np.var(r[:, b].numpy(), ddof=1), rel=1e-5)
    # in given units: each entry divided by its scale before the covariance; eps_r stays in reward units
    scale = torch.tensor([1.0, 2.0, 0.5, 4.0, 3.0])
    scaled_g, scaled_r = disagreement(ns, r, scale)
    for b in range(3):
        x = torch.cat([ns[:, b], r[:, b, None]], 1).numpy() / scale.numpy()
        assert scaled_g[b].item() == pytest.approx(np.linalg.norm(np.cov(x, rowvar=False), "fro"), rel=1e-5)
    assert torch.equal(scaled_r, eps_r)


def test_disagreement_units_normalized_by_default_and_raw_on_request(reacher_model):
    ds, model = reacher_model
    with pytest.raises(ValueError, match="disagreement_units"):
        RolloutConfig(disagreement_units="meters")
    assert RolloutConfig().disagreement_units == "normalized"
    starts = np.array(ds.states[:32])  # a writable copy for torch
    zeros = {a: np.zeros((32, 1), np.float32) for a in ds.agents}
    with torch.no_grad():
        ns, r, _, _ = model.predict(torch.as_tensor(starts), torch.zeros(32, model.joint_act_dim), clip=False)
    e = model.elite_idx
    for units, scale in (("normalized", model.out_std), ("raw", None)):
        env = WorldModelEnv(model, ds, RolloutConfig(horizon=2, disagreement_units=units), num_envs=32, seed=3)
        env.reset_batch(start_states=starts)
        _, _, _, _, info = env.step_batch(zeros)
        expected, _ = disagreement(ns[e], r[e], scale)
        assert np.allclose(info["eps_g"], expected.numpy(), rtol=1e-5)


def test_truncation_fires_out_of_distribution_only(reacher_model):
    ds, model = reacher_model
    generous = WorldModelEnv(model, ds, RolloutConfig(horizon=10, disagreement_threshold=50.0), num_envs=256, seed=0)
    generous.reset_batch()
    for _ in range(10):
        _, _, _, _, info = generous.step_batch({a: np.zeros((256, 1), np.float32) for a in ds.agents})
        assert not info["disagreement_cut"].any()
    env = WorldModelEnv(model, ds, RolloutConfig(horizon=10, disagreement_threshold=2.0), num_envs=64, seed=0)
    far = np.asarray(ds.states[:64]) + 20.0 * np.asarray(ds.states).std(0)  # far outside the data
    env.reset_batch(start_states=far)
    _, _, _, trunc, info = env.step_batch({a: np.zeros((64, 1), np.float32) for a in ds.agents})
    assert info["disagreement_cut"].mean() > 0.9 and trunc[info["disagreement_cut"]].all()


def test_a_halting_cut_ends_the_rollout_as_a_termination_with_the_pessimistic_reward(reacher_model):
    """``disagreement_cut="halt"`` (MOReL): the same rollouts are cut, but as terminations, each
    with ``halt_reward`` (by default r_min / (1 - gamma)); steps that are not cut are unchanged."""
    ds, model = reacher_model
    far = np.asarray(ds.states[:64]) + 20.0 * np.asarray(ds.states).std(0)
    zeros = {a: np.zeros((64, 1), np.float32) for a in ds.agents}
    steps = {}
    for cut in ("truncate", "halt"):
        env = WorldModelEnv(model, ds, RolloutConfig(disagreement_cut=cut, gamma=0.9), num_envs=64, seed=0)
        env.reset_batch(start_states=np.concatenate([far[:32], np.asarray(ds.states[:32])]))
        steps[cut] = env.step_batch(zeros)
    _, r_trunc, term_trunc, trunc_trunc, info = steps["truncate"]
    _, r_halt, term_halt, trunc_halt, info_halt = steps["halt"]
    cut = info["disagreement_cut"]
    assert cut[:32].mean() > 0.9 and not cut[32:].any() and np.array_equal(cut, info_halt["disagreement_cut"])
    assert trunc_trunc[cut].all() and not term_trunc[cut].any()
    assert term_halt[cut].all() and not trunc_halt[cut].any()
    assert np.allclose(r_halt[cut], float(model.reward_low[0]) / (1 - 0.9))
    assert np.array_equal(r_halt[~cut], r_trunc[~cut]) and np.array_equal(term_halt[~cut], term_trunc[~cut])
    fixed = WorldModelEnv(model, ds, RolloutConfig(disagreement_cut="halt", halt_reward=-7.0), num_envs=64, seed=0)
    fixed.reset_batch(start_states=far)
    _, r, _, _, info = fixed.step_batch(zeros)
    assert (r[info["disagreement_cut"]] == -7.0).all()
    with pytest.raises(ValueError, match="disagreement_cut"):
        RolloutConfig(disagreement_cut="stop")


def test_rollouts_end_by_the_tasks_termination_rule_on_the_unclipped_prediction(reacher_model):
    """The ant case: the policy jumps out of the healthy height, a rare event the learned head
    misses, and the bounding box would clip the jump away. Here the rule is "outside the box"."""
    ds, model = reacher_model
    assert ds.termination_rule is offcoord.make(ds.env_id).termination_rule  # the environment's own
    assert not ds.termination_rule(np.asarray(ds.states)).any()  # the reacher never terminates
    high = model.state_high.numpy()
    rule = lambda states: (states > high).any(-1)  # noqa: E731
    boxed = dataset_copy(ds, termination_rule=rule)
    far = np.asarray(ds.states[:64]) + 3.0 * np.asarray(ds.states).std(0)  # starts above the box
    zeros = {a: np.zeros((64, 1), np.float32) for a in ds.agents}
    env = WorldModelEnv(model, boxed, RolloutConfig(horizon=5, disagreement_threshold=1e9), num_envs=64, seed=0)
    env.reset_batch(start_states=far)
    _, _, term, trunc, info = env.step_batch(zeros)
    assert term.mean() > 0.5 and not (term & trunc).any()
    assert np.all(env.state_batch() <= high + 1e-6)  # clipped after the rule saw the prediction
    _, _, term2, _, info2 = env.step_batch(zeros)
    assert not term2[term].any() and not info2["active_before"][term].any()  # ended rollouts stay ended
    with pytest.raises(ValueError, match="termination"):
        RolloutConfig(termination="never")
    learned = WorldModelEnv(model, boxed, RolloutConfig(horizon=5, disagreement_threshold=1e9, termination="learned"),
                            num_envs=64, seed=0)
    learned.reset_batch(start_states=far)
    with torch.no_grad():
        _, _, _, done_p = model.predict(torch.as_tensor(far, dtype=torch.float32), torch.zeros(64, model.joint_act_dim))
    _, _, term, _, _ = learned.step_batch(zeros)
    assert not term.any() and (done_p < 0.5).all()  # the head: the reacher's data never terminates


def test_rollouts_clip_penalize_and_use_the_dataset_view(reacher_model):
    ds, model = reacher_model
    cfg = RolloutConfig(horizon=3, lambda_r=0.05, lambda_g=0.1)
    env = WorldModelEnv(model, ds, cfg, num_envs=128, seed=1)
    obs = env.reset_batch()
    assert obs["agent_0"].shape == (128, 8) and obs["agent_1"].shape == (128, 6)
    for t in range(3):
        acts = {a: np.random.default_rng(t).uniform(-1, 1, (128, 1)).astype(np.float32) for a in ds.agents}
        obs, r, term, trunc, info = env.step_batch(acts)
        states = env.state_batch()
        assert np.all(states >= model.state_low.numpy() - 1e-6) and np.all(states <= model.state_high.numpy() + 1e-6)
        expected = info["raw_reward"] - 0.05 * info["eps_r"] - 0.1 * info["eps_g"]
        alive = info["active_before"]
        assert np.allclose(r[alive], expected[alive], atol=1e-6)
        view = ds.view(states)
        assert all(np.array_equal(obs[a], view[a]) for a in ds.agents)
    assert trunc[alive].all()  # the horizon ends every rollout still running


def test_world_model_env_passes_the_pettingzoo_api(reacher_model):
    from pettingzoo.test import parallel_api_test

    ds, model = reacher_model
    parallel_api_test(WorldModelEnv(model, ds, RolloutConfig(horizon=5), seed=0), num_cycles=20)


def test_momappo_agrees_where_model_free_methods_fail(cache):
    """Coordination game, one seed per dataset here (the 5-seed table is in the slow test)."""
    cfg = dict(steps=30, eval_every=30, eval_episodes=2, hidden=(64, 64), rollouts=512, horizon=1,
               wm_hidden=(64, 64), wm_max_steps=1500, wm_eval_every=250)
    for dataset in ("coordination-neutral", "coordination-unfavorable"):
        policy = offcoord_agents.train("momappo", dataset, seed=0, config=cfg, progress=False)
        assert policy.meta["evals"][-1]["normalized_score"] >= 0.95, dataset


@pytest.mark.slow
def test_momappo_coordination_table_five_seeds(cache):
    cfg = dict(steps=30, eval_every=30, eval_episodes=2, hidden=(64, 64), rollouts=512, horizon=1,
               wm_hidden=(64, 64), wm_max_steps=1500, wm_eval_every=250)
    for dataset in ("coordination-favorable", "coordination-neutral", "coordination-unfavorable"):
        scores = [offcoord_agents.train("momappo", dataset, seed=s, config=cfg, progress=False).meta["evals"][-1]["normalized_score"]
                  for s in range(5)]
        assert min(scores) >= 0.95, (dataset, scores)


def test_momappo_memory_is_the_same_in_rollouts_and_at_execution(tiny_datasets, cache, tmp_path):
    """With ``memory``, an actor reads its own last k observations and actions: rollouts start with
    the dataset's real preceding steps (zeros before an episode's start), a saved policy keeps the
    memory across steps, ``reset`` empties it, and the file reloads into the same team."""
    from offcoord_agents.algos.momappo import MOMAPPO, MOMAPPOConfig
    from offcoord_agents.data import TaskSpec
    from offcoord_agents.policy import load_policy, push_history

    h = torch.zeros(2, 3 * 3)  # memory 3 of (2 obs + 1 action) values; most recent first, oldest dropped
    for t in (1.0, 2.0, 3.0, 4.0):
        h = push_history(h, torch.full((2, 2), t), torch.full((2, 1), -t))
    assert h[0].tolist() == [4, 4, -4, 3, 3, -3, 2, 2, -2]
    assert push_history(torch.zeros(2, 0), torch.ones(2, 2), torch.ones(2, 1)).shape == (2, 0)

    ds = tiny_datasets["reacher2-leader-only"]
    spec = TaskSpec.from_dataset(ds)
    cfg = MOMAPPOConfig(memory=2, rollouts=64, hidden=(32, 32), wm_hidden=(32, 32), wm_max_steps=200, wm_eval_every=100)
    algo = MOMAPPO(spec, cfg, torch.device("cpu"))
    algo.setup(ds)
    starts = np.asarray(ds.episode_starts)  # each episode's first row
    rows = np.array([starts[1], starts[1] + 1, starts[1] + 5])  # an episode's first, second and sixth step
    mem = algo._start_memory(rows)
    O, U = spec.max_obs_dim, spec.max_act_dim
    assert mem.shape == (2, 3, 2 * (O + U))
    assert not mem[:, 0].any()  # nothing precedes an episode's first step
    assert not mem[:, 1, O + U :].any()  # the second step has one predecessor
    prev = ds.batch(np.array([rows[2] - 1, rows[2] - 2]))
    for i, a in enumerate(ds.agents):
        d = spec.obs_dims[i]
        assert np.allclose(mem[i, 2, :d], prev.observations[a][0]) and np.allclose(mem[i, 2, O : O + 1], prev.actions[a][0])
        assert np.allclose(mem[i, 2, O + U : O + U + d], prev.observations[a][1])

    # In a rollout, step t+1's memory is step t's own observation and executed (clipped) action in
    # front of step t's memory, the oldest dropped: compare the actors' inputs step by step.
    inputs, executed = [], []
    real_dist_stats = algo._dist_stats

    def recording(obs, actions=None):
        out = real_dist_stats(obs, actions)
        inputs.append(obs.clone())
        executed.append(out[0].clamp(-1, 1) * algo.act_mask)
        return out

    algo._dist_stats = recording
    batch, stats = algo.collect()
    algo._dist_stats = real_dist_stats
    assert batch["obs"].shape[-1] == O + 2 * (O + U) and stats["rollout_steps"] > 1 and len(inputs) > 2
    for t in range(len(inputs) - 1):
        now, nxt = inputs[t], inputs[t + 1]
        assert torch.equal(nxt[..., O : O + O], now[..., :O]) and torch.equal(nxt[..., 2 * O : 2 * O + U], executed[t])
        assert torch.equal(nxt[..., 2 * O + U :], now[..., O : 2 * O + U])
    # the policy at execution builds the same layout from what it saw and did
    team = algo.policy()
    assert team.memory == 2
    obs, _ = (env := offcoord.make(ds.env_id)).reset(seed=3)
    first = {a: team[a](obs[a]) for a in ds.agents}
    for i, a in enumerate(ds.agents):
        block = team[a]._history[0, : O + U]
        assert np.allclose(block[: spec.obs_dims[i]], obs[a]) and np.allclose(block[O : O + spec.act_dims[i]], first[a])
        assert not block[spec.obs_dims[i] : O].any() and not team[a]._history[0, O + U :].any()
    again = {a: team[a](obs[a]) for a in ds.agents}  # same observation, now with one step of memory
    assert team["agent_0"]._history.abs().sum() > 0
    for p in team.values():
        p.reset()
    after_reset = {a: team[a](obs[a]) for a in ds.agents}
    assert all(np.array_equal(after_reset[a], first[a]) for a in ds.agents)
    assert not all(np.array_equal(again[a], first[a]) for a in ds.agents)  # the memory changed the action
    reloaded = load_policy(team.save(tmp_path / "policy.pt"))
    assert reloaded.memory == 2
    for a in ds.agents:
        assert np.array_equal(reloaded[a](obs[a]), first[a]) and np.array_equal(reloaded[a](obs[a]), again[a])
    assert np.isfinite(offcoord.evaluate(reloaded, ds.env_id, episodes=2, seed=0).mean_return)
    env.close()
    with pytest.raises(ValueError, match="memory needs continuous actions"):
        MOMAPPO(TaskSpec.from_dataset(tiny_datasets["coordination-game"]), MOMAPPOConfig(memory=1), torch.device("cpu"))
    with pytest.raises(ValueError, match="memory must be >= 0"):
        MOMAPPO(spec, MOMAPPOConfig(memory=-1), torch.device("cpu"))


def test_momappo_bc_init_starts_the_actors_on_the_data(tiny_datasets, cache):
    """``bc_init_steps``: before the first PPO iteration the actors are fit to the data's actions
    (each agent's own likelihood rises), deterministically from the run's seed; ``bc_weight`` adds
    the same loss to every PPO update; neither with memory. (Also: an update with
    ``value_normalization`` updates the critic's statistics, which are checkpointed.)"""
    from offcoord_agents.algos.momappo import MOMAPPO, MOMAPPOConfig
    from offcoord_agents.data import BatchSampler, TaskSpec

    ds = tiny_datasets["reacher2-leader-only"]
    spec = TaskSpec.from_dataset(ds)
    for bc in ({"bc_init_steps": 10}, {"bc_weight": 0.5}):
        with pytest.raises(ValueError, match="memory"):
            MOMAPPO(spec, MOMAPPOConfig(memory=2, **bc), torch.device("cpu"))
    held = BatchSampler(ds, spec, 512, seed=99).sample()

    def trained(bc_steps, bc_weight=0.0, **options):
        torch.manual_seed(0)
        cfg = MOMAPPOConfig(bc_init_steps=bc_steps, bc_weight=bc_weight, **options, rollouts=32, horizon=2, ppo_epochs=1, hidden=(32, 32),
                            wm_hidden=(32, 32), wm_max_steps=100, wm_eval_every=50)
        algo = MOMAPPO(spec, cfg, torch.device("cpu"))
        algo.setup(ds)
        before = algo.actor.log_prob(held.obs, held.actions, algo.act_mask).mean(1)
        metrics = algo.update(None, step=1)
        with torch.no_grad():
            return before, algo.actor.log_prob(held.obs, held.actions, algo.act_mask).mean(1), {**metrics, "algo": algo}

    before, after, metrics = trained(300)
    assert (after > before + 0.2).all() and "bc_loss" in metrics  # every agent, on held-out rows
    assert torch.equal(after, trained(300)[1])  # the same seed, the same clone
    _, no_bc, metrics = trained(0)
    assert (after > no_bc + 0.1).all() and "bc_loss" not in metrics  # (uniform-random data: a wide start is already close)
    _, anchored, _ = trained(0, bc_weight=5.0)  # the loss inside every PPO update pulls the same way
    assert (anchored > no_bc).all()
    _, _, metrics = trained(0, value_normalization=True)  # the critic's statistics are updated and checkpointed
    assert metrics["algo"].value_norm.debiasing_term > 0 and np.isfinite(metrics["value_loss"])
    assert "value_norm" in metrics["algo"].state_dict()


def test_momappo_standardizes_its_inputs_and_starts_at_the_given_std(tiny_datasets, cache, tmp_path):
    """``normalize_inputs``: the actors read observations (and remembered observations) standardized
    by the dataset's statistics, the critic the global state; a saved policy carries them.
    ``initial_std``: every agent starts with that standard deviation in every state."""
    from offcoord_agents.algos.momappo import MOMAPPO, MOMAPPOConfig
    from offcoord_agents.data import BatchSampler, TaskSpec, observation_stats, stack_agents, state_stats
    from offcoord_agents.policy import load_policy

    ds = tiny_datasets["reacher2-leader-only"]
    spec = TaskSpec.from_dataset(ds)
    O, U = spec.max_obs_dim, spec.max_act_dim
    torch.manual_seed(0)
    cfg = MOMAPPOConfig(normalize_inputs=True, initial_std=0.3, memory=2, rollouts=32, horizon=2, hidden=(32, 32),
                        wm_hidden=(32, 32), wm_max_steps=100, wm_eval_every=50)
    algo = MOMAPPO(spec, cfg, torch.device("cpu"))
    algo.setup(ds)
    mean, std = observation_stats(ds, spec)
    net = algo.actor.net
    assert net.input_mean.shape[-1] == O + 2 * (O + U)
    for k in range(3):  # the observation now, then each remembered [observation, action]
        at = 0 if k == 0 else O + (k - 1) * (O + U)
        assert torch.equal(net.input_mean[:, :, at : at + O], mean) and torch.equal(net.input_std[:, :, at : at + O], std)
        if k:
            assert not net.input_mean[:, :, at + O : at + O + U].any() and (net.input_std[:, :, at + O : at + O + U] == 1).all()
    s_mean, s_std = state_stats(ds)
    assert torch.equal(algo.critic.input_mean.reshape(-1), s_mean) and torch.equal(algo.critic.input_std.reshape(-1), s_std)

    obs = BatchSampler(ds, spec, 256, seed=1).sample().obs  # (A, B, O)
    with torch.no_grad():
        sigma = algo.actor.distribution(torch.cat([obs, torch.randn(*obs.shape[:2], 2 * (O + U))], -1)).stddev
    assert ((sigma - 0.3).abs() < 0.03)[algo.act_mask.expand_as(sigma) > 0].all()
    batch, stats = algo.collect()  # the rollouts run on the standardized actors
    assert stats["rollout_steps"] > 0 and torch.isfinite(batch["advantages"]).all()

    team = algo.policy()
    reloaded = load_policy(team.save(tmp_path / "policy.pt"))
    first = {a: reloaded[a](np.asarray(ds.observations[a][0])) for a in ds.agents}  # empty memory at a first step
    padded = torch.from_numpy(stack_agents({a: ds.observations[a][:1] for a in ds.agents}, spec.agents, O))
    with torch.no_grad():
        direct = algo.actor.deterministic(torch.cat([padded, torch.zeros(spec.n_agents, 1, 2 * (O + U))], -1))
    for i, a in enumerate(ds.agents):
        assert np.allclose(first[a], direct[i, 0, : spec.act_dims[i]].numpy(), atol=1e-6)

    for bad in (0.0, -1.0, 100.0):
        with pytest.raises(ValueError, match="initial_std"):
            MOMAPPO(spec, MOMAPPOConfig(initial_std=bad), torch.device("cpu"))
    with pytest.raises(ValueError, match="categorical"):
        MOMAPPO(TaskSpec.from_dataset(tiny_datasets["coordination-game"]), MOMAPPOConfig(initial_std=0.3), torch.device("cpu"))


def test_value_norm_tracks_its_targets_and_inverts():
    """MOMA-PPO's critic learns standardized values: the statistics are the targets' (debiased from
    the first update on) and normalize/denormalize are inverse, so GAE sees reward units."""
    from offcoord_agents.algos.momappo import ValueNorm

    norm = ValueNorm()
    torch.manual_seed(0)
    first = 300.0 + 20.0 * torch.randn(4096)  # a running ant's returns
    norm.update(first)
    mean, var = norm.stats()
    assert mean.item() == pytest.approx(first.mean().item(), rel=1e-4)
    assert var.sqrt().item() == pytest.approx(first.std().item(), rel=1e-2)
    z = norm.normalize(first)
    assert abs(z.mean().item()) < 1e-2 and z.std().item() == pytest.approx(1.0, rel=1e-2)
    assert torch.allclose(norm.denormalize(z), first, rtol=1e-5)
    for _ in range(10):
        norm.update(-5.0 + torch.randn(4096))  # later targets move the statistics
    assert norm.stats()[0].item() < first.mean().item()


def test_momappo_rollouts_go_on_across_iterations(tiny_datasets, cache):
    """``rollout_continuation=1``: every rollout that ran its whole horizon starts the next iteration
    from its last state; the ones a disagreement cut stopped restart from the data."""
    from offcoord_agents.algos.momappo import MOMAPPO, MOMAPPOConfig
    from offcoord_agents.data import TaskSpec

    ds = tiny_datasets["reacher2-leader-only"]
    spec = TaskSpec.from_dataset(ds)
    torch.manual_seed(0)
    cfg = MOMAPPOConfig(rollout_continuation=1.0, rollouts=64, horizon=3, hidden=(32, 32), wm_hidden=(32, 32),
                        wm_max_steps=100, wm_eval_every=50, disagreement_threshold=0.5)
    algo = MOMAPPO(spec, cfg, torch.device("cpu"))
    algo.setup(ds)
    algo.collect()
    carried, carried_states = algo.carried.clone(), algo.carried_states.clone()
    assert 0 < carried.sum() < len(carried)  # some rollouts were cut at this low threshold, some were not
    starts = []
    reset = algo.env.reset_batch
    algo.env.reset_batch = lambda **kw: (starts.append(kw.get("start_states")), reset(**kw))[1]
    algo.collect()
    given = torch.from_numpy(starts[-1])
    assert torch.equal(given[carried], carried_states[carried])
    data_rows = {tuple(row) for row in np.asarray(ds.states).round(5).tolist()}
    assert all(tuple(row) in data_rows for row in given[~carried].numpy().round(5).tolist())
    assert {"carried", "carried_states"} <= set(algo.state_dict())
    with pytest.raises(ValueError, match="memory"):
        MOMAPPO(spec, MOMAPPOConfig(rollout_continuation=0.5, memory=2), torch.device("cpu"))
