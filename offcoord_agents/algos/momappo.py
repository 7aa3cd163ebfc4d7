"""MOMA-PPO: model-based offline multi-agent PPO (Barde et al., AAMAS 2024).

1. Fit an ensemble of probabilistic world models of the joint system on the dataset and keep the
   elites (``offcoord_agents.world_model``).
2. Repeat: start ``rollouts`` synthetic rollouts from dataset states, let the current
   decentralized actors act in the model (``WorldModelEnv``: clipping, disagreement truncation,
   uncertainty-penalized reward), and update the team with multi-agent PPO — decentralized
   Gaussian (or categorical) actors on each agent's own observation, one centralized critic on
   the global state, GAE, clipped surrogate and value losses, advantage normalization, and an
   entropy bonus whose weight adapts toward a target entropy (optionally, as in MAPPO, a critic
   on values standardized by running statistics of its targets: ``value_normalization``).

The agents meet each other through the model, which is what lets them agree on one strategy and
improve on the data together. One training "step" of this module is one PPO iteration.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from offcoord_agents.core import Algorithm, TrainConfig, optimize
from offcoord_agents.data import (BatchSampler, TaskSpec, observation_stats, stack_agents, state_stats, unstack_actions,
                                  with_action_columns)
from offcoord_agents.nets import StackedCategoricalActor, StackedGaussianActor, StackedMLP, cloning_loss
from offcoord_agents.policy import TeamPolicy, push_history
from offcoord_agents.world_model import WorldModel
from offcoord_agents.world_model_env import ModelBasedOptions, WorldModelEnv


@dataclass
class MOMAPPOConfig(TrainConfig, ModelBasedOptions):  # world-model and rollout fields: ModelBasedOptions
    steps: int = 2_000  # PPO iterations
    eval_every: int = 50
    checkpoint_every: int = 50
    log_every: int = 10
    rollouts: int = 1_024  # synthetic rollouts started per iteration
    ppo_epochs: int = 5  # passes over each iteration's rollouts
    minibatches: int = 4  # minibatches per pass
    clip: float = 0.2  # PPO ratio clip (and value clip)
    # Clip the critic's change per iteration to ``clip`` (in the critic's units), as MAPPO and
    # CleanRL do by default. In raw reward units it lets the critic move only 0.2 per iteration
    # toward returns in the hundreds (a running ant's), but without it the ant's critic diverged
    # (value loss 5.8e6 within 100 iterations, docs/results.md). False: a plain squared error.
    clip_value_loss: bool = True
    gae_lambda: float = 0.98  # as in the public code
    target_entropy_per_dim: float = -1.0  # continuous actions: nats per action dim the entropy weight aims at
    target_entropy_discrete: float = 0.1  # discrete actions: nats per agent
    initial_entropy_coef: float = 0.01
    # Steps of each agent's own past observations and actions its actor also reads (0: none). For
    # the PO settings: an agent that does not see its partner can infer some of it from its own
    # recent motion. Synthetic rollouts start with the dataset's real preceding steps as memory.
    memory: int = 0
    # MAPPO's ValueNorm: the critic predicts values standardized by running statistics of its
    # targets, and the value clip applies in those units (the clip of 0.2 per iteration otherwise
    # holds back a critic whose returns are in the hundreds, as a running ant's). Off by default:
    # on reacher2-expert-leader-only it learned more slowly (seed 0, 10-episode evaluations at
    # iterations 100-500: 0.904, 0.951, 0.948, 0.963, 0.947 against 0.928, 0.944, 0.940, 0.985,
    # 1.006 without it), and on the ant it did not change the outcome (docs/results.md).
    value_normalization: bool = False
    # Minibatches of behavior cloning (IBC's loss: each agent's likelihood of its own data actions)
    # before the first PPO iteration, so the actors start where the world model is trustworthy.
    # 0: the paper's randomly initialized actors. Not with ``memory``.
    bc_init_steps: int = 0
    # Weight of the same behavior-cloning loss, on a dataset minibatch, added to every PPO actor
    # update (as TD3+BC anchors TD3): keeps the actors near the data where the model is trusted.
    # 0: the paper's pure PPO.
    bc_weight: float = 0.0
    # Probability that a rollout which ran its whole horizon (no termination, no disagreement cut)
    # goes on from its last state in the next iteration instead of restarting from a dataset
    # state, as online PPO's rollouts go on across iterations. 0: the paper's, every rollout
    # starts from the data, so the team never meets the states its own policy reaches after
    # ``horizon`` steps. Not with ``memory``.
    rollout_continuation: float = 0.0
    # Standardize the actors' observations and the critic's global state with the dataset's mean and
    # std, as ITD3+BC and MAPPO's feature normalization do: the ant's velocities reach 5-11 where
    # its joint angles stay below 1.
    normalize_inputs: bool = False
    # The actors' starting standard deviation (the log-std head's bias; its weights are scaled
    # down so the start is the same in every state). None: the random head's, about 1 everywhere
    # (the ant's data actions have standard deviation 0.38).
    initial_std: float | None = None


class ValueNorm(torch.nn.Module):
    """Running mean and variance of the critic's targets, debiased (MAPPO's ``ValueNorm``)."""

    def __init__(self, beta: float = 0.99999, epsilon: float = 1e-5):
        super().__init__()
        self.beta, self.epsilon = beta, epsilon
        for name in ("running_mean", "running_mean_sq", "debiasing_term"):
            self.register_buffer(name, torch.zeros(()))

    def stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        d = self.debiasing_term.clamp_min(self.epsilon)
        mean, mean_sq = self.running_mean / d, self.running_mean_sq / d
        return mean, (mean_sq - mean**2).clamp_min(1e-2)

    @torch.no_grad()
    def update(self, targets: torch.Tensor) -> None:
        b = self.beta
        self.running_mean.mul_(b).add_(targets.mean() * (1 - b))
        self.running_mean_sq.mul_(b).add_((targets**2).mean() * (1 - b))
        self.debiasing_term.mul_(b).add_(1 - b)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        mean, var = self.stats()
        return (x - mean) / var.sqrt()

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        mean, var = self.stats()
        return x * var.sqrt() + mean


class MOMAPPO(Algorithm):
    name = "momappo"
    Config = MOMAPPOConfig
    uses_batches = False  # it trains on its own synthetic rollouts

    def __init__(self, spec: TaskSpec, config: MOMAPPOConfig, device: torch.device):
        super().__init__(spec, config, device)
        A, O, U = spec.n_agents, spec.max_obs_dim, spec.max_act_dim
        if config.memory < 0:
            raise ValueError(f"memory must be >= 0 steps, got {config.memory}")
        if config.memory and (config.bc_init_steps or config.bc_weight):
            raise ValueError("bc_init_steps and bc_weight clone single observations; they cannot be combined with memory")
        if not 0 <= config.rollout_continuation <= 1:
            raise ValueError(f"rollout_continuation is a probability, got {config.rollout_continuation}")
        if config.memory and config.rollout_continuation:
            raise ValueError("rollout_continuation cannot be combined with memory (a continued rollout has no dataset past)")
        if config.memory and spec.discrete:
            raise ValueError("memory needs continuous actions (the discrete coordination game is one step long)")
        actor_cls = StackedCategoricalActor if spec.discrete else StackedGaussianActor
        self.actor = actor_cls(A, O + config.memory * (O + U), U, config.hidden).to(device)
        if config.initial_std is not None:
            if spec.discrete:
                raise ValueError("initial_std applies to Gaussian actors; the coordination game's are categorical")
            self.actor.set_initial_std(config.initial_std)
        self.critic = StackedMLP(1, spec.state_dim, 1, config.hidden).to(device)
        self.value_norm = ValueNorm().to(device) if config.value_normalization else None
        self.log_entropy_coef = torch.nn.Parameter(torch.tensor(math.log(config.initial_entropy_coef)))
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=config.lr)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=config.lr)
        self.entropy_opt = torch.optim.Adam([self.log_entropy_coef], lr=config.lr)
        self.act_mask = spec.act_mask().to(device)
        if spec.discrete:
            self.target_entropy = torch.full((A,), config.target_entropy_discrete)
        else:
            self.target_entropy = torch.tensor(spec.act_dims, dtype=torch.float32) * config.target_entropy_per_dim
        self.world_model: WorldModel | None = None
        self.env: WorldModelEnv | None = None
        self.carried: torch.Tensor | None = None  # (N,) which rollouts go on next iteration (rollout_continuation)
        self.carried_states: torch.Tensor | None = None

    # ------------------------------------------------------------------ setup: the world model
    def setup(self, ds, workdir: Path | None = None) -> None:
        cfg = self.config
        self.env = cfg.world_model_env(ds, workdir, num_envs=cfg.rollouts)
        self.world_model = self.env.model
        self.dataset = ds
        if cfg.normalize_inputs:
            mean, std = observation_stats(ds, self.spec)
            step_mean, step_std = with_action_columns(mean, std, self.spec.max_act_dim)  # each remembered step
            self.actor.net.set_input_normalization(torch.cat([mean, step_mean.repeat(1, 1, cfg.memory)], -1),
                                                   torch.cat([std, step_std.repeat(1, 1, cfg.memory)], -1))
            self.critic.set_input_normalization(*state_stats(ds))
        # data minibatches for behavior cloning, reproducible from the run's seed (and checkpointed)
        self.bc_sampler = BatchSampler(ds, self.spec, cfg.batch_size, int(torch.initial_seed()) % 2**31, self.device)

    def state_dict(self):
        return {**super().state_dict(), "rollout_generator": self.env.generator.get_state(),
                "carried": self.carried, "carried_states": self.carried_states,
                "log_entropy_coef": self.log_entropy_coef.detach().clone(), "bc_sampler": self.bc_sampler.state_dict()}

    def load_state_dict(self, state) -> None:
        super().load_state_dict(state)
        self.env.generator.set_state(state["rollout_generator"])
        if "bc_sampler" in state:  # checkpoints from before behavior cloning existed never used it
            self.bc_sampler.load_state_dict(state["bc_sampler"])
        self.carried, self.carried_states = state.get("carried"), state.get("carried_states")
        with torch.no_grad():
            self.log_entropy_coef.copy_(state["log_entropy_coef"])

    def to_reward_units(self, critic_out: torch.Tensor) -> torch.Tensor:
        return self.value_norm.denormalize(critic_out) if self.value_norm is not None else critic_out

    # ------------------------------------------------------------------ acting
    def _dist_stats(self, obs: torch.Tensor, actions: torch.Tensor | None = None):
        """Sample (if ``actions`` is None) and return ``(actions, log_prob (A, B), entropy (A, B))``."""
        if self.spec.discrete:
            logits = self.actor.logits(obs, self.act_mask)
            dist = torch.distributions.Categorical(logits=logits)
            if actions is None:
                actions = dist.sample()
            return actions, dist.log_prob(actions), dist.entropy()
        dist = self.actor.distribution(obs)
        if actions is None:
            actions = dist.sample() * self.act_mask
        log_prob = (dist.log_prob(actions) * self.act_mask).sum(-1)
        entropy = (dist.entropy() * self.act_mask).sum(-1)
        return actions, log_prob, entropy

    def _to_env_actions(self, actions: torch.Tensor) -> dict[str, np.ndarray]:
        return unstack_actions(self.spec, actions if self.spec.discrete else actions.clamp(-1, 1))

    def _start_memory(self, starts: np.ndarray) -> torch.Tensor:
        """``(A, N, memory * (O + U))``: the steps that precede each start state in its dataset episode,
        most recent first, zeros before the episode's start (as at execution, after ``reset``)."""
        spec, ds = self.spec, self.dataset
        history = torch.zeros(spec.n_agents, len(starts), self.config.memory * (spec.max_obs_dim + spec.max_act_dim))
        episode_starts = np.asarray(ds.episode_starts)
        first = episode_starts[np.searchsorted(episode_starts, starts, side="right") - 1]  # of each start's episode
        for j in range(self.config.memory, 0, -1):  # oldest first: the most recent step ends up in front
            inside = (starts - j >= first)[None, :, None]
            prev = ds.batch(np.maximum(starts - j, first))
            obs = stack_agents(prev.observations, spec.agents, spec.max_obs_dim) * inside
            actions = stack_agents(prev.actions, spec.agents, spec.max_act_dim) * inside
            history = push_history(history, torch.from_numpy(obs), torch.from_numpy(actions))
        return history

    @torch.no_grad()
    def collect(self):
        """Synthetic rollouts with the current actors; returns flat tensors of the valid steps."""
        env, spec, cfg = self.env, self.spec, self.config
        obs = env.reset_batch()
        if self.carried is not None:  # rollout_continuation: some rollouts go on from where they stopped
            go_on = self.carried & (torch.rand(len(self.carried), generator=env.generator) < cfg.rollout_continuation)
            starts = torch.where(go_on[:, None], self.carried_states, torch.from_numpy(env.state_batch()))
            obs = env.reset_batch(start_states=starts.numpy())
        T, N = self.config.horizon, env.num_envs
        stopped = torch.zeros(N, dtype=torch.bool)  # by termination or a disagreement cut
        memory = self._start_memory(env.start_indices) if self.config.memory else torch.zeros(spec.n_agents, N, 0)
        buf = {k: [] for k in ("obs", "states", "actions", "logp", "rewards", "terms", "ends", "valid", "next_states")}
        raw, cuts = [], []
        for _ in range(T):
            own = torch.from_numpy(stack_agents(obs, spec.agents, spec.max_obs_dim))
            o = torch.cat([own, memory], -1)
            states = torch.from_numpy(env.state_batch())
            actions, logp, _ = self._dist_stats(o)
            obs, rewards, terms, truncs, info = env.step_batch(self._to_env_actions(actions))
            if self.config.memory:  # what each agent executed: its clipped action, padded
                memory = push_history(memory, own, actions.clamp(-1, 1) * self.act_mask)
            buf["obs"].append(o)
            buf["states"].append(states)
            buf["actions"].append(actions)
            buf["logp"].append(logp)
            buf["rewards"].append(torch.from_numpy(rewards))
            buf["terms"].append(torch.from_numpy(terms).float())
            buf["ends"].append(torch.from_numpy(terms | truncs).float())
            buf["valid"].append(torch.from_numpy(info["active_before"]))
            buf["next_states"].append(torch.from_numpy(env.state_batch()))
            raw.append(info["raw_reward"][info["active_before"]])
            cuts.append(info["disagreement_cut"].sum())
            stopped |= torch.from_numpy(terms | info["disagreement_cut"])
            if not info["active_before"].any():
                break
        if cfg.rollout_continuation:
            self.carried, self.carried_states = ~stopped, torch.from_numpy(env.state_batch())
        steps = len(buf["rewards"])
        stacked = {k: torch.stack(v) for k, v in buf.items()}  # (T, ...)
        critic_out = self.critic(stacked["states"].reshape(1, -1, spec.state_dim)).view(steps, N)
        values = self.to_reward_units(critic_out)
        next_values = self.to_reward_units(self.critic(stacked["next_states"].reshape(1, -1, spec.state_dim)).view(steps, N))
        advantages = torch.zeros(steps, N)
        gae = torch.zeros(N)
        gamma, lam = self.config.gamma, self.config.gae_lambda
        for t in reversed(range(steps)):
            # bootstrap through truncations (horizon, disagreement), not through terminations
            delta = stacked["rewards"][t] + gamma * next_values[t] * (1 - stacked["terms"][t]) - values[t]
            gae = delta + gamma * lam * (1 - stacked["ends"][t]) * gae
            advantages[t] = gae
        returns = advantages + values
        valid = stacked["valid"].reshape(-1)
        flat = lambda x: x.reshape(steps * N, *x.shape[2:])[valid]  # noqa: E731
        batch = {
            "obs": stacked["obs"].permute(0, 2, 1, 3).reshape(steps * N, spec.n_agents, -1)[valid],
            "actions": (stacked["actions"].permute(0, 2, 1) if spec.discrete else stacked["actions"].permute(0, 2, 1, 3))
            .reshape(steps * N, spec.n_agents, *(() if spec.discrete else (spec.max_act_dim,)))[valid],
            "logp": stacked["logp"].permute(0, 2, 1).reshape(steps * N, spec.n_agents)[valid],
            "states": flat(stacked["states"]),
            "advantages": flat(advantages),
            "returns": flat(returns),
            "critic_out": flat(critic_out),  # the critic's own units: the value clip's reference
        }
        stats = {"synthetic_reward": float(np.concatenate(raw).mean()) if raw else 0.0,
                 "penalized_reward": float(stacked["rewards"].reshape(-1)[valid].mean()),
                 "disagreement_cuts": float(np.sum(cuts)) / N, "rollout_steps": float(valid.sum()) / N}
        return batch, stats

    # ------------------------------------------------------------------ learning
    def bc_loss(self) -> torch.Tensor:
        """IBC's loss (:func:`~offcoord_agents.nets.cloning_loss`) on a dataset minibatch."""
        batch = self.bc_sampler.sample()
        return cloning_loss(self.actor, batch.obs, batch.actions, self.act_mask)

    def behavior_clone(self, steps: int) -> float:
        """Fit the actors to the dataset's actions by maximum likelihood; returns the last loss."""
        for _ in range(steps):
            loss = self.bc_loss()
            optimize(self.actor_opt, loss, self.actor.parameters(), self.config.grad_clip)
        return loss.item()

    def update(self, batch, step: int) -> dict[str, float]:
        cfg = self.config
        bc = {"bc_loss": self.behavior_clone(cfg.bc_init_steps)} if step == 1 and cfg.bc_init_steps else {}
        data, stats = self.collect()
        n = len(data["returns"])
        adv = (data["advantages"] - data["advantages"].mean()) / (data["advantages"].std() + 1e-8)
        mb = max(1, n // cfg.minibatches)
        metrics = {}
        for _ in range(cfg.ppo_epochs):
            order = torch.randperm(n)
            for start in range(0, n, mb):
                idx = order[start : start + mb]
                obs = data["obs"][idx].permute(1, 0, 2)  # (A, b, O)
                actions = data["actions"][idx].transpose(0, 1)
                _, logp, entropy = self._dist_stats(obs, actions)
                ratio = (logp - data["logp"][idx].t()).exp()  # (A, b)
                a = adv[idx].unsqueeze(0)
                surrogate = torch.min(ratio * a, ratio.clamp(1 - cfg.clip, 1 + cfg.clip) * a)
                coef = self.log_entropy_coef.exp().detach()
                actor_loss = -(surrogate.mean(1)).sum() - coef * entropy.mean(1).sum()
                if cfg.bc_weight:
                    actor_loss = actor_loss + cfg.bc_weight * self.bc_loss()
                optimize(self.actor_opt, actor_loss, self.actor.parameters(), cfg.grad_clip)

                v = self.critic(data["states"][idx].unsqueeze(0))[0, :, 0]
                v_old, ret = data["critic_out"][idx], data["returns"][idx]
                if self.value_norm is not None:  # targets in the critic's units (MAPPO: update, then normalize)
                    self.value_norm.update(ret)
                    ret = self.value_norm.normalize(ret)
                value_loss = (v - ret) ** 2
                if cfg.clip_value_loss:
                    v_clipped = v_old + (v - v_old).clamp(-cfg.clip, cfg.clip)
                    value_loss = torch.max(value_loss, (v_clipped - ret) ** 2)
                value_loss = 0.5 * value_loss.mean()
                optimize(self.critic_opt, value_loss, self.critic.parameters(), cfg.grad_clip)

                entropy_gap = (entropy.mean(1).detach() - self.target_entropy).mean()
                entropy_loss = self.log_entropy_coef * entropy_gap
                self.entropy_opt.zero_grad(set_to_none=True)
                entropy_loss.backward()
                self.entropy_opt.step()
        metrics.update(stats, **bc)
        metrics.update({"actor_loss": actor_loss.item(), "value_loss": value_loss.item(),
                        "entropy": entropy.mean().item(), "entropy_coef": self.log_entropy_coef.exp().item(),
                        "approx_kl": (data["logp"][idx].t() - logp).mean().item()})
        return metrics

    def policy(self) -> TeamPolicy:
        return TeamPolicy(self.spec, self.actor, "categorical" if self.spec.discrete else "gaussian",
                          memory=self.config.memory)

