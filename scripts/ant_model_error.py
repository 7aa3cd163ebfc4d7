"""Where the ant's world model is wrong along a policy's own real trajectories (a diagnostic).

MOMA-PPO trusts its world model where the elites agree (``eps_g`` below the disagreement
threshold). This script asks whether that trust region holds the good policies: it runs a saved
team for real episodes of the dataset's environment and feeds every real (state, joint action)
to the elites of the world model a MOMA-PPO run on that dataset uses (the same configuration,
fit or loaded from the shared cache). Per policy it prints, over all real steps: ``eps_g`` as the
rollouts measure it (median, 90%, share past the threshold), the elites' mean error against the
simulator (next state, in standard deviations of the data's state change; reward), and the real
return. ``data`` in place of a policy measures the dataset's own transitions; a behavior's weights
(``ant-expert.npz``) measure the ant's expert, whose trajectories the data holds.

Then it runs each team in the world model itself, as MOMA-PPO's rollouts do (its cut rules,
penalty and HALT as ``--set`` configures them, over ``--model-steps`` steps): the objective PPO
climbs there. A team that walks well for real but scores low here cannot be found by any
optimizer of that objective.

    python scripts/ant_model_error.py runs/ant/sim/policy.pt runs/ant/halt ant-expert.npz data

It changes nothing; ``--set`` takes MOMA-PPO's world-model and rollout fields (``wm_max_steps=...``).
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np
import offcoord
import torch

from offcoord_agents.algos.momappo import MOMAPPO
from offcoord_agents.cli import _parse_set  # the CLI's own --set parser
from offcoord_agents.core import make_config
from offcoord_agents.data import TaskSpec, joint_action_matrix, stack_agents, unstack_actions
from offcoord_agents.policy import load_policy
from offcoord_agents.world_model import disagreement, fit_or_load, world_model_config
from offcoord_agents.world_model_env import WorldModelEnv


def model_errors(model, states: np.ndarray, joint: np.ndarray, next_states: np.ndarray, rewards: np.ndarray,
                 units: str = "normalized") -> dict:
    """``eps_g`` (in ``units``, as the rollouts measure it) and the elites' mean errors for a batch of
    real transitions."""
    with torch.no_grad():
        s, a = torch.as_tensor(states, dtype=torch.float32), torch.as_tensor(joint, dtype=torch.float32)
        ns, r, _, _ = model.predict(s, a, clip=False, elites_only=True)
        eps_g, _ = disagreement(ns, r, model.out_std if units == "normalized" else None)
        change_std = model.out_std[:-1]
        state_err = ((ns.mean(0) - torch.as_tensor(next_states)) / change_std).pow(2).mean(-1).sqrt()
        reward_err = (r.mean(0) - torch.as_tensor(rewards)).abs()
    return {"eps_g": eps_g.numpy(), "state_err": state_err.numpy(), "reward_err": reward_err.numpy()}


def team_actor(name: str, spec: TaskSpec, env_id: str):
    """``act(obs, states) -> {agent: (B, d) actions}`` for a batch of ``B`` rows (``obs``: ``{agent: (B, o)}``,
    ``states``: ``(B, 27)``), deterministic as in evaluation, for a saved team (``policy.pt`` or a run
    directory, without memory) or one of the ant's behavior policies (``ant-expert.npz``: the whole
    body from the global state, its joint action split into the legs)."""
    if name.endswith(".npz"):
        from offcoord.policies import PolicyBehavior

        env = offcoord.make(env_id)
        behavior, layout = PolicyBehavior(name, deterministic=True), env.layout
        env.close()  # only its action layout is needed
        return lambda obs, states: layout.split(behavior.policy.act(states, deterministic=True))
    team = load_policy(name if name.endswith(".pt") else f"{name}/policy.pt")
    if team.memory:
        raise ValueError(f"{name}: a team with memory needs its own history; this diagnostic acts without")

    def act(obs, states):
        with torch.no_grad():
            x = torch.from_numpy(stack_agents({a: np.asarray(o, np.float32) for a, o in obs.items()}, spec.agents,
                                              spec.max_obs_dim))
            out = team.actor.deterministic(x).numpy()
        return unstack_actions(spec, out)

    return act


def real_transitions(act, env_id: str, spec: TaskSpec, episodes: int, max_steps: int, seed: int):
    """Real episodes of a team (:func:`team_actor`): global states, joint actions, next states,
    rewards, and the episodes' returns."""
    env = offcoord.make(env_id)
    rows, returns = {k: [] for k in ("s", "a", "ns", "r")}, []
    for ep in range(episodes):
        obs, _ = env.reset(seed=seed + ep)
        total = 0.0
        for _ in range(max_steps):
            state = env.state()
            actions = {a: x[0] for a, x in act({a: o[None] for a, o in obs.items()}, state[None]).items()}
            obs, rewards, terms, truncs, _ = env.step(actions)
            reward = float(next(iter(rewards.values())))  # the team reward, the same for every agent
            rows["s"].append(state)
            rows["a"].append(joint_action_matrix(spec, {a: np.asarray(actions[a])[None] for a in spec.agents})[0])
            rows["ns"].append(env.state())
            rows["r"].append(reward)
            total += reward
            if any(terms.values()) or any(truncs.values()):
                break
        returns.append(total)
    env.close()
    return tuple(np.asarray(rows[k], np.float32) for k in ("s", "a", "ns", "r")), np.asarray(returns)


def model_rollouts(act, env: WorldModelEnv, steps: int, gamma: float, seed: int = 0) -> dict:
    """The team in the world model, as MOMA-PPO's rollouts see it: ``env.num_envs`` rollouts from dataset
    states for up to ``steps`` steps (the env's cut rules apply, its horizon is ``steps``). Returns the
    mean raw and penalized reward per step, the share of rollouts cut by disagreement and ended by
    the task's rule, the mean length, and the mean discounted penalized return."""
    obs = env.reset_batch(seed=seed)
    n = env.num_envs
    discounted, raw, penalized, cut, terminated = np.zeros(n), [], [], np.zeros(n, bool), np.zeros(n, bool)
    lengths = np.zeros(n)
    for t in range(steps):
        obs, rewards, terms, truncs, info = env.step_batch(act(obs, env.state_batch()))
        live = info["active_before"]
        discounted += gamma**t * rewards  # zero where inactive
        raw.append(info["raw_reward"][live])
        penalized.append(rewards[live])
        lengths += live
        cut |= info["disagreement_cut"]
        terminated |= terms & ~info["disagreement_cut"]
        if not (live & ~terms & ~truncs).any():
            break
    return {"raw": float(np.concatenate(raw).mean()), "penalized": float(np.concatenate(penalized).mean()),
            "cut": float(cut.mean()), "terminated": float(terminated.mean()), "length": float(lengths.mean()),
            "return": float(discounted.mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("policies", nargs="+", help="policy.pt files, run directories, behavior weights (ant-expert.npz), "
                        "or 'data'")
    parser.add_argument("--dataset", default="ant-full-replay-po")
    parser.add_argument("--seed", type=int, default=0, help="the world model's seed (a run's --seed)")
    parser.add_argument("--episodes", type=int, default=3)
    parser.add_argument("--max-steps", type=int, default=1000)
    parser.add_argument("--data-samples", type=int, default=20_000)
    parser.add_argument("--rollouts", type=int, default=1024, help="rollouts per team in the world model")
    parser.add_argument("--model-steps", type=int, default=10, help="their length (MOMA-PPO's horizon: 10)")
    parser.add_argument("--mean", action="store_true", help="step with the elites' means, not samples of their Gaussians")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()

    cfg = make_config(MOMAPPO, _parse_set(args.set))
    ds = offcoord.load_dataset(args.dataset)
    spec = TaskSpec.from_dataset(ds)
    model = fit_or_load(ds, world_model_config(cfg), seed=args.seed)
    print(f"threshold {cfg.disagreement_threshold}; errors: next state in std of the data's change, reward in reward units")
    print("| policy | real return | steps | eps_g median / 90% | past threshold | state error median / 90% | reward error median / 90% |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    actors = {name: None if name == "data" else team_actor(name, spec, ds.env_id) for name in args.policies}
    for name, act in actors.items():
        if act is None:
            idx = np.sort(np.random.default_rng(0).choice(len(ds), args.data_samples, replace=False))
            batch = (ds.states[idx], joint_action_matrix(spec, {a: ds.actions[a][idx] for a in spec.agents}),
                     ds.next_states[idx], ds.rewards[idx])
            ret = "–"
        else:
            batch, returns = real_transitions(act, ds.env_id, spec, args.episodes, args.max_steps, 20_000)
            ret = f"{returns.mean():.0f} ± {returns.std():.0f}"
        e = model_errors(model, *batch, units=cfg.disagreement_units)
        q = lambda x: f"{np.median(x):.3f} / {np.quantile(x, 0.9):.3f}"  # noqa: E731
        print(f"| {name} | {ret} | {len(batch[3])} | {q(e['eps_g'])} | {(e['eps_g'] > cfg.disagreement_threshold).mean():.1%} "
              f"| {q(e['state_err'])} | {q(e['reward_err'])} |")

    rollout = dataclasses.replace(cfg.rollout_config(), horizon=args.model_steps, sample=not args.mean)
    print(f"\nIn the world model: {args.rollouts} rollouts of up to {args.model_steps} steps from dataset states, "
          f"disagreement cut = {rollout.disagreement_cut} at {rollout.disagreement_threshold}, "
          f"{'mean' if args.mean else 'sampled'} next states")
    print("| team | reward per step: raw / penalized | cut by disagreement | ended by the task's rule | mean length | "
          "discounted penalized return |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, act in actors.items():
        if act is None:
            continue
        env = WorldModelEnv(model, ds, rollout, num_envs=args.rollouts, seed=args.seed)
        m = model_rollouts(act, env, args.model_steps, cfg.gamma)
        print(f"| {name} | {m['raw']:.2f} / {m['penalized']:.2f} | {m['cut']:.1%} | {m['terminated']:.1%} "
              f"| {m['length']:.1f} | {m['return']:.1f} |")


if __name__ == "__main__":
    main()
