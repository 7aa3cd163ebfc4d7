"""MA-IQL-ft: MA-IQL trained on the dataset, then fine-tuned on world-model rollouts.

The paper's "MAIQL-ft" baseline (the ant table's column beside MA-IQL): it asks whether giving a
model-free CTDE learner the same synthetic data as MOMA-PPO is enough to fix coordination.

1. Pre-training: the first ``pretrain_fraction`` of the ``steps`` are plain MA-IQL
   (:mod:`offcoord_agents.algos.maiql`) on dataset batches.
2. The world model is MOMA-PPO's (an ensemble fit on the dataset, elites kept; see
   :func:`offcoord_agents.world_model.fit_or_load`, cached as ``world_model.pt`` in ``--out``).
3. Fine-tuning: every ``rollout_every`` steps, ``rollout_batch_size`` rollouts start from dataset
   states and run for up to ``horizon`` steps with the *current* MA-IQL actors (sampling from
   them) in :class:`~offcoord_agents.world_model_env.WorldModelEnv` — the very rollout path of
   MOMA-PPO: predictions clipped to the data's bounding box, reward penalized
   ``r - lambda_r * eps_r - lambda_g * eps_g``, rollouts truncated at the horizon or when the
   elites disagree past ``disagreement_threshold``. Each transition enters a FIFO synthetic replay
   buffer of ``synthetic_buffer_size``; terminations stop bootstrapping, truncations do not.
4. Every fine-tuning batch mixes both sources as the public code's "finetuning" mixture does: a
   share ``N_data / (N_data + N_synthetic)`` of the batch (rounded) comes from the dataset, the
   rest from the synthetic buffer, so the synthetic share grows as the buffer fills. The MA-IQL
   update itself is unchanged.

Execution stays decentralized: the policy is MA-IQL's per-agent actors. The synthetic buffer, the
rollout generators and the world model are part of the checkpoint/work directory, so a killed run
resumes to the same numbers. One training step is one MA-IQL gradient step (rollouts included).
With ``time_limit_seconds``, choose ``steps`` so that fine-tuning is reached within the budget.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from offcoord_agents.algos.maiql import MAIQL, MAIQLConfig
from offcoord_agents.data import TaskSpec, TorchBatch, joint_action_matrix, stack_agents, unstack_actions
from offcoord_agents.world_model import WorldModel
from offcoord_agents.world_model_env import ModelBasedOptions, WorldModelEnv


@dataclass
class MAIQLFTConfig(MAIQLConfig, ModelBasedOptions):  # world-model and rollout fields: ModelBasedOptions, as momappo
    # fine-tuning schedule
    pretrain_fraction: float = 0.5  # share of `steps` that are plain MA-IQL on the dataset before fine-tuning starts
    rollout_every: int = 1_000  # fine-tuning steps between rounds of synthetic rollouts (the first fine-tuning step starts one)
    rollout_batch_size: int = 2_048  # rollouts started from dataset states per round
    synthetic_buffer_size: int = 200_000  # capacity of the synthetic replay buffer (oldest transitions leave first)
    rollout_stochastic: bool = True  # actors sample their actions in rollouts (False: Gaussian mean / categorical mode)


class SyntheticBuffer:
    """FIFO replay buffer of world-model transitions: global states, padded joint actions, penalized
    rewards, terminations. Observations are not stored: they are the dataset's view of the states,
    computed for the sampled rows only."""

    def __init__(self, spec: TaskSpec, capacity: int):
        self.spec, self.capacity = spec, capacity
        A, U, S = spec.n_agents, spec.max_act_dim, spec.state_dim
        self.states = torch.zeros(capacity, S)
        self.next_states = torch.zeros(capacity, S)
        self.actions = torch.zeros(capacity, A, dtype=torch.long) if spec.discrete else torch.zeros(capacity, A, U)
        self.rewards = torch.zeros(capacity)
        self.dones = torch.zeros(capacity)
        self.ptr, self.size = 0, 0

    def __len__(self) -> int:
        return self.size

    def add(self, states, actions, rewards, dones, next_states) -> None:
        """Append ``n`` transitions (``actions`` batch-major ``(n, A, ...)``); beyond capacity the oldest go."""
        n = len(rewards)
        if n > self.capacity:  # only the newest fit
            states, actions, rewards, dones, next_states = (x[-self.capacity :] for x in (states, actions, rewards, dones, next_states))
            n = self.capacity
        idx = (self.ptr + torch.arange(n)) % self.capacity
        self.states[idx], self.next_states[idx], self.actions[idx] = states, next_states, actions
        self.rewards[idx], self.dones[idx] = rewards, dones
        self.ptr, self.size = (self.ptr + n) % self.capacity, min(self.size + n, self.capacity)

    def state_dict(self) -> dict:
        n = self.size
        return {"ptr": self.ptr, "size": n, "states": self.states[:n].clone(), "next_states": self.next_states[:n].clone(),
                "actions": self.actions[:n].clone(), "rewards": self.rewards[:n].clone(), "dones": self.dones[:n].clone()}

    def load_state_dict(self, state: dict) -> None:
        n = state["size"]
        for k in ("states", "next_states", "actions", "rewards", "dones"):
            getattr(self, k)[:n] = state[k]
        self.ptr, self.size = state["ptr"], n


def real_count(batch_size: int, n_data: int, n_synthetic: int) -> int:
    """Dataset rows in a mixed batch: the share ``n_data / (n_data + n_synthetic)`` of ``batch_size``, rounded."""
    return int(round(batch_size * n_data / (n_data + n_synthetic)))


def _cat(real: TorchBatch, synthetic: TorchBatch) -> TorchBatch:
    agent_major = ("obs", "next_obs", "actions")  # (A, B, ...): concatenate along the batch dimension 1
    return TorchBatch(**{k: torch.cat([getattr(real, k), getattr(synthetic, k)], 1 if k in agent_major else 0)
                         for k in TorchBatch.__dataclass_fields__})


class MAIQLFT(MAIQL):
    name = "maiql-ft"
    Config = MAIQLFTConfig

    def __init__(self, spec: TaskSpec, config: MAIQLFTConfig, device: torch.device):
        super().__init__(spec, config, device)
        if not 0.0 <= config.pretrain_fraction <= 1.0:
            raise ValueError(f"maiql-ft option pretrain_fraction must lie in [0, 1], got {config.pretrain_fraction!r}")
        for name in ("rollout_every", "rollout_batch_size", "synthetic_buffer_size", "horizon"):
            value = getattr(config, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"maiql-ft option {name} must be a positive integer, got {value!r}")
        self.pretrain_steps = int(round(config.pretrain_fraction * config.steps))
        self.buffer = SyntheticBuffer(spec, config.synthetic_buffer_size)
        self.generator = torch.Generator().manual_seed(int(torch.initial_seed()) % 2**31 + 1)  # rollout actions, synthetic rows
        self.rollout_stats: dict[str, float] = {}
        self.world_model: WorldModel | None = None
        self.env: WorldModelEnv | None = None
        self.dataset = None

    # ------------------------------------------------------------------ setup: MOMA-PPO's world model
    def setup(self, ds, workdir: Path | None = None) -> None:
        cfg = self.config
        self.dataset = ds
        self.env = cfg.world_model_env(ds, workdir, num_envs=cfg.rollout_batch_size)
        self.world_model = self.env.model

    def state_dict(self):
        return {**super().state_dict(), "rollout_generator": self.env.generator.get_state(),
                "generator": self.generator.get_state(), "buffer": self.buffer.state_dict(),
                "rollout_stats": dict(self.rollout_stats)}

    def load_state_dict(self, state) -> None:
        super().load_state_dict(state)
        self.env.generator.set_state(state["rollout_generator"])
        self.generator.set_state(state["generator"])
        self.buffer.load_state_dict(state["buffer"])
        self.rollout_stats = dict(state["rollout_stats"])

    # ------------------------------------------------------------------ synthetic rollouts
    @torch.no_grad()
    def _act(self, obs: torch.Tensor) -> torch.Tensor:
        """The current actors on agent-stacked observations: ``(A, N, U)`` in [-1, 1] (padding 0) or ``(A, N)`` choices."""
        cfg, g = self.config, self.generator
        if self.spec.discrete:
            logits = self.actor.logits(obs, self.act_mask).cpu()
            if not cfg.rollout_stochastic:
                return logits.argmax(-1)
            probs = torch.softmax(logits, -1)
            return torch.multinomial(probs.reshape(-1, probs.shape[-1]), 1, generator=g).view(probs.shape[:-1])
        dist = self.actor.distribution(obs)
        mean, std = dist.mean.cpu(), dist.stddev.cpu()
        actions = mean + std * torch.randn(mean.shape, generator=g) if cfg.rollout_stochastic else mean
        return actions.clamp(-1.0, 1.0) * self.act_mask.cpu()

    @torch.no_grad()
    def rollout(self) -> dict[str, float]:
        """One round: ``rollout_batch_size`` rollouts with the current actors, every step of every
        running rollout into the synthetic buffer."""
        env, spec = self.env, self.spec
        obs = env.reset_batch()  # start states drawn uniformly from the dataset
        raw, penalized, cuts, added = [], [], 0, 0
        for _ in range(self.config.horizon):
            states = torch.from_numpy(env.state_batch())
            o = torch.from_numpy(stack_agents(obs, spec.agents, spec.max_obs_dim)).to(self.device)
            actions = self._act(o)
            obs, rewards, terms, truncs, info = env.step_batch(unstack_actions(spec, actions))
            alive = torch.from_numpy(info["active_before"])
            self.buffer.add(states[alive], actions.transpose(0, 1)[alive], torch.from_numpy(rewards)[alive],
                            torch.from_numpy(terms)[alive].float(), torch.from_numpy(env.state_batch())[alive])
            raw.append(info["raw_reward"][info["active_before"]])
            penalized.append(rewards[info["active_before"]])
            cuts += int(info["disagreement_cut"].sum())
            added += int(alive.sum())
            if not (info["active_before"] & ~terms & ~truncs).any():
                break
        n = env.num_envs
        return {"synthetic_reward": float(np.concatenate(raw).mean()), "penalized_reward": float(np.concatenate(penalized).mean()),
                "disagreement_cuts": cuts / n, "rollout_steps": added / n}

    def sample_synthetic(self, n: int) -> TorchBatch:
        """``n`` transitions drawn uniformly from the synthetic buffer, observed through the dataset's view."""
        spec, buf, dev = self.spec, self.buffer, self.device
        idx = torch.randint(len(buf), (n,), generator=self.generator)
        states, next_states, actions = buf.states[idx], buf.next_states[idx], buf.actions[idx].transpose(0, 1)
        view = self.dataset.view
        return TorchBatch(
            obs=torch.from_numpy(stack_agents(view(states.numpy()), spec.agents, spec.max_obs_dim)).to(dev),
            next_obs=torch.from_numpy(stack_agents(view(next_states.numpy()), spec.agents, spec.max_obs_dim)).to(dev),
            actions=actions.to(dev),
            joint_actions=torch.from_numpy(joint_action_matrix(spec, unstack_actions(spec, actions))).to(dev),
            rewards=buf.rewards[idx].to(dev),
            dones=buf.dones[idx].to(dev),
            states=states.to(dev),
            next_states=next_states.to(dev),
        )

    def mix(self, real: TorchBatch) -> tuple[TorchBatch, int]:
        """The fine-tuning batch: ``real_count(...)`` rows of the dataset batch drawn at random, then synthetic rows."""
        size = real.rewards.shape[0]
        n_real = real_count(size, len(self.dataset), len(self.buffer))
        if n_real == size:
            return real, n_real
        # Not the first rows: offcoord's Dataset.sample returns its rows sorted by index, and a
        # store's order is not random (ant-full-replay's segments follow training), so a head would
        # see only the data's start.
        keep = torch.randperm(size, generator=self.generator)[:n_real].to(real.rewards.device)
        head = TorchBatch(**{k: (v[:, keep] if k in ("obs", "next_obs", "actions") else v[keep])
                             for k, v in vars(real).items()})
        return _cat(head, self.sample_synthetic(size - n_real)), n_real

    # ------------------------------------------------------------------ learning
    def update(self, batch: TorchBatch, step: int) -> dict[str, float]:
        if step <= self.pretrain_steps:
            return super().update(batch, step)  # plain MA-IQL
        if (step - self.pretrain_steps - 1) % self.config.rollout_every == 0:
            self.rollout_stats = self.rollout()
        batch, n_real = self.mix(batch)
        metrics = super().update(batch, step)
        return {**metrics, **self.rollout_stats, "real_share": n_real / batch.rewards.shape[0],
                "synthetic_size": float(len(self.buffer))}
