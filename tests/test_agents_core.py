"""offcoord_agents' shared core: stacked networks, batches, policies, the training loop."""

import json
import signal
import subprocess
import sys
import textwrap

import mujoco
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import offcoord  # noqa: E402
import offcoord_agents  # noqa: E402
from offcoord.fileio import json_bytes, sha256_bytes  # noqa: E402
from offcoord_agents.data import BatchSampler, TaskSpec, joint_action_matrix, split_joint_action, stack_agents, unstack_actions  # noqa: E402
from offcoord_agents.nets import StackedGaussianActor, StackedMLP, StackedTwinCritic  # noqa: E402
from helpers import dataset_copy  # noqa: E402

SMALL = {"hidden": (32, 32), "eval_episodes": 2}


def test_stacked_mlp_equals_separate_networks_and_agents_are_independent():
    torch.manual_seed(0)
    net = StackedMLP(3, 5, 2, (16, 16))
    x = torch.randn(3, 7, 5)
    out = net(x)
    for i in range(3):
        assert torch.allclose(out[i], net.member_forward(i, x[i]), atol=1e-6)
    y = x.clone()
    y[1] += 10.0  # change only agent 1's input
    changed = net(y)
    assert torch.equal(changed[0], out[0]) and torch.equal(changed[2], out[2]) and not torch.equal(changed[1], out[1])


def test_twin_critic_q1_alone_gives_the_same_numbers_and_gradients():
    torch.manual_seed(0)
    critic = StackedTwinCritic(4, 17, (64, 64))
    x = torch.randn(4, 300, 17, requires_grad=True)
    full = critic(x)[0]
    (grad_full,) = torch.autograd.grad(full.sum(), x)
    alone = critic.q1(x)
    (grad_alone,) = torch.autograd.grad(alone.sum(), x)
    # bit for bit, so actor losses and OMAR's search train exactly as with both twins computed
    assert torch.equal(alone, full) and torch.equal(grad_alone, grad_full)


def test_zero_padding_gets_zero_gradient():
    net = StackedMLP(2, 4, 1, (8,))
    x = torch.randn(2, 5, 4)
    x[1, :, 3] = 0.0  # agent 1 has 3 real inputs, padded to 4
    net(x).sum().backward()
    assert torch.all(net.layers[0].weight.grad[1, 3] == 0)


def test_task_spec_and_batches(tiny_datasets):
    ds = tiny_datasets["reacher2-leader-only"]
    spec = TaskSpec.from_dataset(ds)
    assert spec.obs_dims == (8, 6) and spec.act_dims == (1, 1) and not spec.discrete and spec.state_dim == 10
    b = BatchSampler(ds, spec, 16, seed=0).sample()
    assert b.obs.shape == (2, 16, 8) and b.actions.shape == (2, 16, 1) and b.joint_actions.shape == (16, 2)
    assert torch.all(b.obs[1, :, 6:] == 0)  # agent 1's padding
    assert torch.equal(b.joint_actions[:, 1], b.actions[1, :, 0])
    disc = TaskSpec.from_dataset(tiny_datasets["coordination-game"])
    db = BatchSampler(tiny_datasets["coordination-game"], disc, 8, seed=0).sample()
    assert disc.discrete and db.actions.dtype == torch.int64 and db.joint_actions.shape == (8, 4)
    assert torch.all(db.joint_actions.sum(1) == 2)  # one-hot per agent


def test_split_joint_action_inverts_joint_action_matrix():
    spec = TaskSpec(dataset_id="x-v0", env_id="x", agents=("a", "b", "c"), obs_dims=(3, 3, 3), act_dims=(2, 1, 3), discrete=False, state_dim=5)
    actions = {"a": np.arange(8.0).reshape(4, 2), "b": np.arange(4.0).reshape(4, 1), "c": -np.arange(12.0).reshape(4, 3)}
    split = split_joint_action(spec, joint_action_matrix(spec, actions))
    assert list(split) == ["a", "b", "c"] and all(np.array_equal(split[k], v) for k, v in actions.items())
    assert np.array_equal(split_joint_action(spec, np.arange(6.0))["c"], [3.0, 4.0, 5.0])  # one action, no batch axis
    with pytest.raises(ValueError, match="width 6"):
        split_joint_action(spec, np.zeros((4, 5)))


def test_unstack_actions_inverts_stack_agents():
    spec = TaskSpec(dataset_id="x-v0", env_id="x", agents=("a", "b"), obs_dims=(3, 3), act_dims=(2, 1), discrete=False, state_dim=5)
    actions = {"a": np.arange(8.0).reshape(4, 2), "b": -np.arange(4.0).reshape(4, 1)}
    stacked = stack_agents(actions, spec.agents, spec.max_act_dim)
    back = unstack_actions(spec, torch.from_numpy(stacked))  # a tensor, as the training loops pass it
    assert list(back) == ["a", "b"] and all(np.array_equal(back[k], v) for k, v in actions.items())
    discrete = TaskSpec(dataset_id="y-v0", env_id="y", agents=("a", "b"), obs_dims=(1, 1), act_dims=(3, 3), discrete=True, state_dim=1)
    assert np.array_equal(unstack_actions(discrete, np.array([[0, 2], [1, 1]]))["b"], [1, 1])  # index rows as they are
    with pytest.raises(ValueError, match="2 agents"):
        unstack_actions(spec, np.zeros((3, 4, 2)))


def test_decentralized_policy_uses_only_its_own_observation(tiny_datasets):
    ds = tiny_datasets["reacher2-leader-only"]
    policy = offcoord_agents.train("ibc", ds, steps=5, config=SMALL, progress=False)
    assert not policy.centralized and set(policy) == {"agent_0", "agent_1"}
    o0 = np.ones(8, np.float32)
    a = policy["agent_0"](o0)
    assert a.shape == (1,) and a.dtype == np.float32 and -1 <= a[0] <= 1
    # the per-agent callable equals the stacked forward pass, whatever the other agent sees
    obs = torch.zeros(2, 1, 8)
    obs[0, 0] = torch.from_numpy(o0)
    for other in (torch.zeros(8), torch.randn(8) * 5):
        obs[1, 0, :6] = other[:6]
        with torch.no_grad():
            assert np.allclose(policy.actor.deterministic(obs)[0, 0].numpy(), a, atol=1e-6)


def test_saved_policy_reloads_and_evaluates_the_same(tiny_datasets, tmp_path):
    ds = tiny_datasets["reacher2-leader-only"]
    policy = offcoord_agents.train("itd3bc", ds, steps=20, config=SMALL, out=tmp_path / "run", progress=False)
    loaded = offcoord_agents.load_policy(tmp_path / "run" / "policy.pt")
    a = offcoord.evaluate(policy, "reacher2-leader-only", episodes=2, seed=1)
    b = offcoord.evaluate(loaded, "reacher2-leader-only", episodes=2, seed=1)
    assert np.array_equal(a.returns, b.returns)
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["algorithm"] == "itd3bc" and results["final"]["step"] == 20
    assert results["versions"]["mujoco"] == mujoco.__version__ and results["versions"]["torch"] == torch.__version__
    assert results["card_sha256"] == ds.card.sha256
    low, high = offcoord.reference_scores("reacher2-leader-only")
    assert results["reference_scores"] == [low, high]  # what its normalized scores divide by
    assert results["final"]["normalized_score"] == pytest.approx((results["final"]["mean_return"] - low) / (high - low))
    # a damaged policy file is named in the error, with the fix
    damaged = tmp_path / "damaged.pt"
    damaged.write_bytes((tmp_path / "run" / "policy.pt").read_bytes()[:200])
    with pytest.raises(RuntimeError, match="damaged.pt.*corrupted"):
        offcoord_agents.load_policy(damaged)


def test_td3_family_refuses_discrete_actions_and_iql_refuses_partial_observability(tiny_datasets):
    for algo in ("itd3bc", "icql", "omar", "matd3bc"):
        with pytest.raises(ValueError, match="continuous actions"):
            offcoord_agents.train(algo, tiny_datasets["coordination-game"], steps=1, progress=False)
    with pytest.raises(ValueError, match="centralized"):
        offcoord_agents.train("iql", tiny_datasets["reacher2-leader-only"], steps=1, progress=False)
    with pytest.raises(ValueError, match="unknown algorithm"):
        offcoord_agents.train("mappo", tiny_datasets["coordination-game"], steps=1)
    with pytest.raises(ValueError, match="unknown ibc option"):
        offcoord_agents.train("ibc", tiny_datasets["coordination-game"], config={"learning_rate": 1})


_TRAIN_SCRIPT = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    import offcoord_agents
    from offcoord.data import open_dataset
    from offcoord.data.cards import card_from_bytes
    from offcoord.data.generate import generate

    root = Path(sys.argv[1])
    text = "\\n".join([
        'format_version = 1', 'id = "tiny-resume"',
        '[datasets]', '"tiny-resume" = "reacher2-leader-only"',
        '[generation]', 'env = "reacher2-leader-only"', 'behavior = "uniform-random"',
        'behavior_kwargs = { env = "reacher2-leader-only" }', 'transitions = 500', 'seed = 0',
        '[reference]', 'min_score = -40.0', 'max_score = 0.0',
    ])
    card = card_from_bytes(text.encode(), root / "tiny-resume.toml")
    ds = open_dataset(generate(card, root=root / "cache", progress=False), card, "tiny-resume")
    if len(sys.argv) > 4:  # kill -9 this process right after it logs step N (past its last checkpoint)
        import os, signal
        import offcoord_agents.core as core
        kill_at, log = int(sys.argv[4]), core._Logger.log
        def log_then_die(self, kind, step, values):
            log(self, kind, step, values)
            if step == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
        core._Logger.log = log_then_die
    offcoord_agents.train(sys.argv[2], ds, seed=3, out=sys.argv[3],
                          config=dict(steps=300, hidden=(32, 32), eval_every=100, eval_episodes=2,
                                      checkpoint_every=50, log_every=25), progress=False)
    """
)


@pytest.mark.parametrize("algo", ["itd3bc", "maiql"])
def test_killed_run_resumes_to_the_same_numbers(tmp_path, algo):
    """kill -9 mid-run, rerun the same command: same evaluations, same weights as an uninterrupted run."""
    full, killed = tmp_path / "full", tmp_path / "killed"
    subprocess.run([sys.executable, "-c", _TRAIN_SCRIPT, str(tmp_path), algo, str(full)], check=True)
    # killed by SIGKILL at step 175: its last checkpoint is step 150, its log already holds step 175
    proc = subprocess.run([sys.executable, "-c", _TRAIN_SCRIPT, str(tmp_path), algo, str(killed), "175"])
    assert proc.returncode == -signal.SIGKILL
    assert not (killed / "results.json").exists()
    assert torch.load(killed / "checkpoint.pt", weights_only=False)["step"] == 150
    assert '"step": 175' in (killed / "metrics.jsonl").read_text()
    subprocess.run([sys.executable, "-c", _TRAIN_SCRIPT, str(tmp_path), algo, str(killed)], check=True)
    a = json.loads((full / "results.json").read_text())
    b = json.loads((killed / "results.json").read_text())
    assert a["evals"] == b["evals"]
    pa, pb = torch.load(full / "policy.pt", weights_only=False), torch.load(killed / "policy.pt", weights_only=False)
    for k in pa["state_dict"]:
        assert torch.equal(pa["state_dict"][k], pb["state_dict"][k]), k
    # the metrics log has each step once, even though the killed run may have logged past its checkpoint
    steps = [json.loads(line)["step"] for line in (killed / "metrics.jsonl").read_text().splitlines() if '"train"' in line]
    assert steps == sorted(set(steps)) and steps[-1] == 300


def test_a_long_run_also_checkpoints_by_the_clock_without_changing_its_numbers(tiny_datasets, tmp_path, monkeypatch):
    import offcoord_agents.core as core

    saved, save = [], core.atomic_torch_save
    monkeypatch.setattr(core, "atomic_torch_save", lambda obj, path: saved.append(obj["step"]) or save(obj, path))
    config = dict(steps=6, hidden=(16, 16), eval_every=6, eval_episodes=1, checkpoint_every=10**6)
    runs, default = {}, core.CHECKPOINT_SECONDS
    for seconds in (default, 0.0):  # the default, then a checkpoint after every step
        monkeypatch.setattr(core, "CHECKPOINT_SECONDS", seconds)
        saved.clear()
        offcoord_agents.train("ibc", tiny_datasets["reacher2-leader-only"], seed=0, config=config,
                              out=tmp_path / str(seconds), progress=False)
        runs[seconds] = (list(saved), torch.load(tmp_path / str(seconds) / "policy.pt", weights_only=False))
    assert runs[default][0] == [6] and runs[0.0][0] == [1, 2, 3, 4, 5, 6]
    a, b = runs[default][1]["state_dict"], runs[0.0][1]["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_refuses_a_different_run(tiny_datasets, tmp_path):
    ds = tiny_datasets["coordination-game"]
    offcoord_agents.train("ibc", ds, steps=10, config=SMALL, out=tmp_path, progress=False)
    with pytest.raises(ValueError, match=r"holds a run on another seed \(0, not 1\).*--no-resume"):
        offcoord_agents.train("ibc", ds, seed=1, steps=10, config=SMALL, out=tmp_path, progress=False)
    (tmp_path / "checkpoint.pt").write_bytes(b"garbage")
    with pytest.raises(RuntimeError, match="checkpoint.*corrupted"):
        offcoord_agents.train("ibc", ds, steps=10, config=SMALL, out=tmp_path, progress=False)


def _rebuilt(ds):
    """``ds`` as if its store had been rebuilt with other rewards: same id and card, other manifest digests."""
    manifest = json.loads(json.dumps(ds.manifest))
    manifest["columns"]["rewards"]["sha256"] = "0" * 64
    return dataset_copy(ds, np.array(ds.rewards) * 0.5, manifest)


def test_dataset_digest_follows_the_data_not_the_card(tiny_datasets):
    from offcoord_agents.world_model import _FIT_COLUMNS

    ds = tiny_datasets["coordination-game"]
    recorded = ds.manifest["columns"]
    assert set(ds.column_names) == set(recorded)
    assert ds.digest(["rewards"]) != ds.digest(["states"]) != ds.digest()
    assert ds.digest() == sha256_bytes(json_bytes([recorded[name]["sha256"] for name in sorted(recorded)]))
    # the world-model cache key's part: the formula earlier versions used, so their cached fits stay valid
    assert ds.digest(_FIT_COLUMNS) == sha256_bytes(json_bytes([recorded[n]["sha256"] for n in
                                                               ("states", "next_states", "actions", "rewards", "terminations")]))
    assert _rebuilt(ds).digest() != ds.digest() and _rebuilt(ds).digest(["states"]) == ds.digest(["states"])
    same, changed = dataset_copy(ds, manifest={}), dataset_copy(ds, np.array(ds.rewards) + 1.0, manifest={})  # no manifest: from the bytes
    assert same.digest() == dataset_copy(ds, np.array(ds.rewards), manifest={}).digest()
    assert changed.digest() != same.digest() and changed.digest(["states"]) == same.digest(["states"])
    with pytest.raises(KeyError, match="no column 'extra_nope'"):
        ds.column("extra_nope")


def test_resume_refuses_a_run_whose_data_was_rebuilt(tiny_datasets, tmp_path):
    """Same id, same card, other data (a store rebuilt by another generator): resuming would mix the
    two, so it stops with the choices; a checkpoint from before runs recorded their data resumes."""
    ds = tiny_datasets["reacher2-leader-only"]
    config = {**SMALL, "checkpoint_every": 5}
    offcoord_agents.train("ibc", ds, steps=10, config=config, out=tmp_path, progress=False)
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert ckpt["meta"]["data_sha256"] == ds.digest()
    offcoord_agents.train("ibc", dataset_copy(ds), steps=10, config=config, out=tmp_path, progress=False)  # the same data resumes
    with pytest.raises(ValueError, match="other data.*--no-resume"):
        offcoord_agents.train("ibc", _rebuilt(ds), steps=10, config=config, out=tmp_path, progress=False)
    with pytest.raises(ValueError, match=r"another seed \(0, not 3\)"):  # another seed as well: not blamed on the data
        offcoord_agents.train("ibc", _rebuilt(ds), seed=3, steps=10, config=config, out=tmp_path, progress=False)
    del ckpt["meta"]["data_sha256"]  # written by an earlier version
    ckpt["evals"] = [{**e, "mark": 1} for e in ckpt["evals"]]
    torch.save(ckpt, tmp_path / "checkpoint.pt")
    policy = offcoord_agents.train("ibc", ds, steps=10, config=config, out=tmp_path, progress=False)
    assert policy.meta["evals"] == ckpt["evals"]  # resumed from the checkpoint, not started over


def test_a_config_field_added_later_keeps_running_runs_resumable():
    """A checkpoint written before an option existed still matches a run that leaves the option at
    its default (the earlier behavior), and no longer matches one that sets it."""
    from offcoord_agents.core import run_difference

    defaults = {"steps": 100, "memory": 0}
    saved = {"algorithm": "momappo", "seed": 1, "config": {"steps": 100}}
    assert run_difference(saved, {"algorithm": "momappo", "seed": 1, "config": {"steps": 100, "memory": 0}}, defaults) is None
    assert run_difference(saved, {"algorithm": "momappo", "seed": 1, "config": {"steps": 100, "memory": 4}},
                          defaults) == "another configuration (memory differs)"
    assert run_difference(saved, {"algorithm": "momappo", "seed": 2, "config": {"steps": 100, "memory": 4}},
                          defaults) == "another seed (1, not 2)"  # the identity is named first
    assert run_difference({**saved, "config": {"steps": 100, "gone": 1}},  # a field this version no longer has
                          {"algorithm": "momappo", "seed": 1, "config": {"steps": 100, "memory": 0}},
                          defaults) == "another configuration (gone differs)"
    assert run_difference(saved, {"algorithm": "momappo", "seed": 1, "config": {"steps": (100,)}},
                          {"steps": (100,)}) == "another configuration (steps differs)"


def test_the_same_run_is_decided_by_the_data_digest_or_else_the_card():
    """Data digests decide when both sides have one; a record without one (an earlier version's) is
    compared on its card; a store that is not at hand is not compared."""
    from offcoord_agents.core import run_difference

    wanted = {"algorithm": "ibc", "dataset": "d", "seed": 0, "config": {"hidden": (8, 8)},
              "data_sha256": "a", "card_sha256": "c"}
    recorded = {**wanted, "config": {"hidden": [8, 8]}}  # as results.json holds it
    assert run_difference(recorded, wanted, {}) is None
    assert run_difference({**recorded, "card_sha256": "c2"}, wanted, {}) is None  # same data: a card's comments changed
    assert run_difference({**recorded, "data_sha256": "b"}, wanted, {}).startswith("other data: d's stored copy")
    earlier = {k: v for k, v in recorded.items() if k != "data_sha256"}
    assert run_difference(earlier, wanted, {}) is None
    assert run_difference({**earlier, "card_sha256": "c2"}, wanted, {}) == "another version of d's card"
    # the same data, normalized otherwise (a card's reference scores edited): its scores are on another scale
    assert run_difference({**recorded, "reference_scores": [0.0, 2.0]}, {**wanted, "reference_scores": (0.0, 1.0)},
                          {}) == "other reference scores ([0.0, 2.0], not [0.0, 1.0]): d's card changed how returns are normalized since"
    assert run_difference(recorded, {**wanted, "reference_scores": [0.0, 1.0]}, {}) is None  # recorded before runs kept them
    not_at_hand = {k: v for k, v in wanted.items() if k not in ("data_sha256", "card_sha256")}
    assert run_difference({**recorded, "data_sha256": "b", "card_sha256": "c2"}, not_at_hand, {}) is None


def test_cli_train_and_evaluate(tiny_datasets, tmp_path, cache, capsys):
    from offcoord_agents.cli import main

    out = tmp_path / "cli"
    assert main(["train", "ibc", "coordination-favorable", "--steps", "30", "--out", str(out), "--quiet",
                 "--set", "hidden=(16,16)", "--set", "eval_episodes=2"]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["final"]["step"] == 30
    assert main(["evaluate", str(out / "policy.pt"), "coordination-game", "--episodes", "3"]) == 0
    assert "coordination-game: return" in capsys.readouterr().out
    assert main(["train", "nope", "coordination-favorable"]) == 2
    assert main(["list"]) == 0


def test_config_is_validated_and_no_resume_starts_over(tiny_datasets, tmp_path):
    ds = tiny_datasets["coordination-game"]
    for bad in ({"eval_every": 0}, {"steps": -1}, {"hidden": "abc"}, {"hidden": (0, 4)}, {"lr": float("nan")}, {"batch_size": 2.5}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            offcoord_agents.train("ibc", ds, config=bad, progress=False)
    offcoord_agents.train("ibc", ds, steps=10, config=SMALL, out=tmp_path, progress=False)
    offcoord_agents.train("ibc", ds, seed=5, steps=10, config={**SMALL, "checkpoint_every": 1000, "eval_every": 1000},
                          out=tmp_path, resume=False, progress=False)
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=False)["meta"]["seed"] == 5


def test_switches_read_false_as_false_from_the_command_line():
    """``--set x=false`` arrives as the string "false", which Python reads as true: a switch takes
    true/false words in any case, 0/1 and bools, and refuses anything else by name."""
    from offcoord_agents.algos.itd3bc import ITD3BC
    from offcoord_agents.cli import _parse_set
    from offcoord_agents.core import make_config

    for word, value in (("false", False), ("False", False), ("no", False), ("0", False), ("true", True), ("TRUE", True),
                        ("1", True), ("yes", True)):
        assert make_config(ITD3BC, _parse_set([f"normalize_observations={word}"])).normalize_observations is value
    assert make_config(ITD3BC, {"normalize_observations": 0}).normalize_observations is False
    for bad in ("maybe", 2, 0.5, None):
        with pytest.raises(ValueError, match="normalize_observations must be true or false"):
            make_config(ITD3BC, {"normalize_observations": bad})


def test_policy_on_the_wrong_view_is_a_clear_error(tiny_datasets):
    policy = offcoord_agents.train("ibc", tiny_datasets["reacher2-leader-only"], steps=2, config=SMALL, progress=False)
    with pytest.raises(ValueError, match="agent_0.*8-value observations"):
        offcoord.evaluate(policy, "reacher2-independent", episodes=1)
    iql = offcoord_agents.train("iql", tiny_datasets["coordination-game"], steps=2, config=SMALL, progress=False)
    assert iql.centralized


def test_time_limit_stops_with_a_final_evaluation(tiny_datasets, tmp_path):
    ds = tiny_datasets["coordination-game"]
    policy = offcoord_agents.train("ibc", ds, steps=10_000, config={**SMALL, "time_limit_seconds": 0.0}, out=tmp_path,
                                   progress=False)
    assert [e["step"] for e in policy.meta["evals"]] == [1]
    assert json.loads((tmp_path / "results.json").read_text())["stopped_by_time_limit"] is True
    cpu = offcoord_agents.train("ibc", ds, steps=10_000, config={**SMALL, "cpu_time_limit_seconds": 0.0},
                                out=tmp_path / "cpu", progress=False)
    assert [e["step"] for e in cpu.meta["evals"]] == [1]
    results = json.loads((tmp_path / "cpu" / "results.json").read_text())
    assert results["stopped_by_time_limit"] is True and results["time_limit_reached"] == "cpu_time"
    assert results["train_cpu_seconds_this_session"] > 0
    assert json.loads((tmp_path / "results.json").read_text())["time_limit_reached"] == "wall_clock"
    # the same command again: the run is finished, so it is not resumed with a fresh budget
    again = offcoord_agents.train("ibc", ds, steps=10_000, config={**SMALL, "cpu_time_limit_seconds": 0.0},
                                  out=tmp_path / "cpu", progress=False)
    assert again.meta["evals"] == cpu.meta["evals"]
    assert json.loads((tmp_path / "cpu" / "results.json").read_text())["time_limit_reached"] == "cpu_time"
