"""MA-IQL-ft: the real/synthetic mixture, penalized synthetic rewards, resume, and the CLI on tiny budgets."""

import dataclasses
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import offcoord_agents  # noqa: E402
from offcoord_agents.algos.maiql_ft import MAIQLFT, real_count  # noqa: E402
from offcoord_agents.core import make_config  # noqa: E402
from offcoord_agents.data import BatchSampler, TaskSpec  # noqa: E402

SMALL = dict(hidden=(32, 32), batch_size=64, wm_members=3, wm_elites=2, wm_hidden=(32, 32), wm_max_steps=200,
             wm_eval_every=100, horizon=3, rollout_batch_size=40, synthetic_buffer_size=200)


@pytest.fixture(autouse=True)
def one_thread():
    """As ``run_training`` does: one torch thread (a second one fights the other core, 20x slower here)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _algo(ds, **overrides):
    torch.manual_seed(0)
    algo = MAIQLFT(TaskSpec.from_dataset(ds), make_config(MAIQLFT, {**SMALL, **overrides}), torch.device("cpu"))
    algo.setup(ds)
    return algo


def test_mixture_follows_the_buffer_sizes(tiny_datasets):
    assert real_count(256, 1000, 0) == 256 and real_count(256, 1000, 1000) == 128 and real_count(256, 3000, 1000) == 192
    ds = tiny_datasets["reacher2-leader-only"]  # 600 transitions
    algo = _algo(ds, steps=100, pretrain_fraction=0.1, rollout_every=5)
    real = BatchSampler(ds, algo.spec, 64, 0).sample()
    batch, n_real = algo.mix(real)
    assert n_real == 64 and batch is real  # empty synthetic buffer: all data
    algo.rollout()
    m = len(algo.buffer)
    assert 40 <= m <= 120  # every step of every running rollout, at most the horizon each
    batch, n_real = algo.mix(real)
    assert n_real == round(64 * 600 / (600 + m)) < 64 and batch.rewards.shape == (64,) and batch.obs.shape[1] == 64
    rows = {tuple(s) for s in real.states.tolist()}
    assert all(tuple(s) in rows for s in batch.states[:n_real].tolist())  # the head comes from the dataset batch
    # ... drawn from all of it, not its first rows: Dataset.sample sorts its rows by index, and a
    # store's order is not random (ant-full-replay's segments follow training)
    positions = dataclasses.replace(real, rewards=torch.arange(64, dtype=real.rewards.dtype))
    drawn = torch.cat([algo.mix(positions)[0].rewards[:n_real] for _ in range(50)])
    assert all(len(set(drawn[i:i + n_real].tolist())) == n_real for i in range(0, len(drawn), n_real))  # without repeats
    assert 29 < drawn.mean().item() < 34 and drawn.max().item() == 63  # uniform over the 64 rows: mean 31.5
    synthetic = {tuple(s) for s in algo.buffer.states[:m].tolist()}
    assert all(tuple(s) in synthetic for s in batch.states[n_real:].tolist())  # the tail comes from the buffer
    while len(algo.buffer) < algo.buffer.capacity:  # a full buffer: the share stops moving
        algo.rollout()
    metrics = algo.update(real, 12)  # a fine-tuning step
    assert metrics["synthetic_size"] == 200 and metrics["real_share"] == round(64 * 600 / 800) / 64
    assert all(np.isfinite(v) for v in metrics.values())
    assert "real_share" not in algo.update(real, 10)  # still pre-training: plain MA-IQL on dataset batches


def test_synthetic_transitions_carry_the_penalized_reward(tiny_datasets):
    ds = tiny_datasets["reacher2-leader-only"]
    algo = _algo(ds, lambda_r=0.5, lambda_g=1.0)
    seen, step_batch = [], algo.env.step_batch

    def recording(actions):
        out = step_batch(actions)
        seen.append((actions, *out))
        return out

    algo.env.step_batch = recording
    algo.rollout()
    expected_r, expected_done, expected_act = [], [], []
    for actions, _, r, term, _, info in seen:
        alive = info["active_before"]
        assert np.allclose(r[alive], (info["raw_reward"] - 0.5 * info["eps_r"] - 1.0 * info["eps_g"])[alive], atol=1e-6)
        expected_r.append(r[alive])
        expected_done.append(term[alive])
        expected_act.append(np.stack([actions[a] for a in ds.agents], 1)[alive])
    buf, n = algo.buffer, len(algo.buffer)
    assert n == sum(len(r) for r in expected_r)
    assert np.allclose(buf.rewards[:n].numpy(), np.concatenate(expected_r))  # WorldModelEnv's penalized reward, as stored
    assert (buf.rewards[:n].numpy() < np.concatenate([i["raw_reward"][i["active_before"]] for *_, i in seen])).all()
    assert np.array_equal(buf.dones[:n].numpy(), np.concatenate(expected_done).astype(np.float32))
    assert np.allclose(buf.actions[:n].numpy(), np.concatenate(expected_act))
    model = algo.world_model
    assert (buf.next_states[:n] >= model.state_low - 1e-6).all() and (buf.next_states[:n] <= model.state_high + 1e-6).all()
    batch = algo.sample_synthetic(32)  # observations are the dataset's own view of the synthetic states
    view = ds.view(batch.states.numpy())
    for i, a in enumerate(ds.agents):
        assert np.array_equal(batch.obs[i, :, : view[a].shape[1]].numpy(), view[a])


def test_interrupted_run_resumes_to_the_same_numbers(tiny_datasets, tmp_path, monkeypatch):
    ds = tiny_datasets["reacher2-leader-only"]
    cfg = dict(SMALL, steps=40, pretrain_fraction=0.25, rollout_every=8, eval_every=20, eval_episodes=1,
               checkpoint_every=10, log_every=5)
    full = offcoord_agents.train("maiql-ft", ds, config=cfg, out=tmp_path / "full", progress=False)
    update = MAIQLFT.update

    def crash(self, batch, step):
        if step == 25:
            raise KeyboardInterrupt  # a killed run: its last checkpoint is step 20, in the fine-tuning phase
        return update(self, batch, step)

    monkeypatch.setattr(MAIQLFT, "update", crash)
    with pytest.raises(KeyboardInterrupt):
        offcoord_agents.train("maiql-ft", ds, config=cfg, out=tmp_path / "killed", progress=False)
    monkeypatch.setattr(MAIQLFT, "update", update)
    resumed = offcoord_agents.train("maiql-ft", ds, config=cfg, out=tmp_path / "killed", progress=False)
    assert full.meta["evals"] == resumed.meta["evals"]
    for k, v in full.actor.state_dict().items():
        assert torch.equal(v, resumed.actor.state_dict()[k]), k
    a = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=False)["algo"]
    b = torch.load(tmp_path / "killed" / "checkpoint.pt", weights_only=False)["algo"]
    assert a["buffer"]["size"] > 0 and all(torch.equal(a["buffer"][k], b["buffer"][k]) for k in ("states", "rewards"))


def test_cli_trains_maiql_ft_on_a_dataset_id(cache, tmp_path, capsys):
    """CleanRL-style smoke run through the real CLI (discrete coordination game, horizon 1), which also learns."""
    from offcoord_agents.cli import main

    out = tmp_path / "run"
    args = ["train", "maiql-ft", "coordination-favorable", "--steps", "80", "--out", str(out), "--quiet"]
    for kv in ("hidden=(32,32)", "eval_episodes=2", "eval_every=40", "horizon=1", "rollout_every=10",
               "rollout_batch_size=64", "wm_hidden=(32,32)", "wm_max_steps=300", "wm_eval_every=100", "batch_size=64", "log_every=10"):
        args += ["--set", kv]
    assert main(args) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["final"]["step"] == 80 and line["final"]["normalized_score"] == 1.0
    assert (out / "world_model.pt").exists() and (out / "policy.pt").exists()
    logged = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert any(r.get("synthetic_size", 0) > 0 and r["real_share"] < 1 for r in logged if r["kind"] == "train")
