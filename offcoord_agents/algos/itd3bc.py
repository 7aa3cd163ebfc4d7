"""ITD3+BC: independent TD3+BC, one actor and one twin critic per agent (Fujimoto & Gu, 2021).

Every agent learns as if alone: its critic sees its own observation and action, its target
bootstraps through its own target actor. The actor maximizes its critic plus a behavior-cloning
term, ``-lambda * Q_i(o_i, pi_i(o_i)) + (pi_i(o_i) - a_i)^2`` with ``lambda = alpha / mean|Q_i|``.
Continuous actions only.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from offcoord_agents.core import Algorithm, TrainConfig, optimize, soft_update
from offcoord_agents.data import TaskSpec, TorchBatch, observation_stats, with_action_columns
from offcoord_agents.nets import StackedDeterministicActor, StackedTwinCritic
from offcoord_agents.policy import TeamPolicy


@dataclass
class ITD3BCConfig(TrainConfig):
    alpha: float = 2.5  # weight of the Q term against behavior cloning
    policy_delay: int = 2  # critic updates per actor (and target) update
    target_noise: float = 0.2  # std of the target-policy smoothing noise
    noise_clip: float = 0.5  # the smoothing noise is clipped to +-noise_clip
    normalize_observations: bool = True  # standardize observations with dataset statistics, as TD3+BC does


class ITD3BC(Algorithm):
    name = "itd3bc"
    Config = ITD3BCConfig
    supports_discrete = False

    def __init__(self, spec: TaskSpec, config: ITD3BCConfig, device: torch.device):
        super().__init__(spec, config, device)
        A, obs_dim, act_dim = spec.n_agents, spec.max_obs_dim, spec.max_act_dim
        self.actor = StackedDeterministicActor(A, obs_dim, act_dim, config.hidden).to(device)
        self.critic = StackedTwinCritic(A, obs_dim + act_dim, config.hidden).to(device)
        self.actor_target = copy.deepcopy(self.actor)
        self.critic_target = copy.deepcopy(self.critic)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=config.lr)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=config.lr)
        self.act_mask = spec.act_mask().to(device)  # zero on padded action dims
        self.act_dims = torch.tensor(spec.act_dims, dtype=torch.float32, device=device).unsqueeze(1)  # (A, 1)

    def setup(self, ds, workdir=None) -> None:
        if self.config.normalize_observations:
            mean, std = observation_stats(ds, self.spec)
            for net in (self.actor.net, self.actor_target.net):
                net.set_input_normalization(mean, std)
            # the critics take [obs, action]: normalize the observation part only
            c_mean, c_std = (x.repeat(2, 1, 1) for x in with_action_columns(mean, std, self.spec.max_act_dim))
            for net in (self.critic.net, self.critic_target.net):
                net.set_input_normalization(c_mean, c_std)

    def critic_target_value(self, batch: TorchBatch) -> torch.Tensor:
        """``r + gamma (1 - done) min Q'_i(o'_i, pi'_i(o'_i) + clipped noise)``, per agent ``(A, B)``."""
        cfg = self.config
        with torch.no_grad():
            noise = (torch.randn_like(batch.actions) * cfg.target_noise).clamp(-cfg.noise_clip, cfg.noise_clip)
            next_actions = ((self.actor_target(batch.next_obs) + noise).clamp(-1, 1)) * self.act_mask
            q1, q2 = self.critic_target(torch.cat([batch.next_obs, next_actions], -1))
            return batch.rewards + cfg.gamma * (1 - batch.dones) * torch.min(q1, q2)

    def update_critic(self, batch: TorchBatch) -> dict[str, float]:
        target = self.critic_target_value(batch)
        q1, q2 = self.critic(torch.cat([batch.obs, batch.actions], -1))
        loss = ((q1 - target) ** 2).mean(1).sum() + ((q2 - target) ** 2).mean(1).sum()
        grad_norm = optimize(self.critic_opt, loss, self.critic.parameters(), self.config.grad_clip)
        return {"critic_loss": loss.item(), "q_mean": q1.mean().item(), "critic_grad_norm": grad_norm}

    def actor_loss(self, batch: TorchBatch) -> tuple[torch.Tensor, dict[str, float]]:
        pi = self.actor(batch.obs) * self.act_mask
        q = self.critic.q1(torch.cat([batch.obs, pi], -1))  # (A, B)
        lmbda = self.config.alpha / q.abs().mean(1, keepdim=True).detach()  # per agent
        bc = ((pi - batch.actions) ** 2).sum(-1) / self.act_dims  # mean over each agent's real action dims
        loss = (-lmbda * q + bc).mean(1).sum()
        return loss, {"actor_loss": loss.item(), "bc_mse": bc.mean().item()}

    def update(self, batch: TorchBatch, step: int) -> dict[str, float]:
        metrics = self.update_critic(batch)
        if step % self.config.policy_delay == 0:
            loss, actor_metrics = self.actor_loss(batch)
            optimize(self.actor_opt, loss, self.actor.parameters(), self.config.grad_clip)
            soft_update(self.critic_target, self.critic, self.config.tau)
            soft_update(self.actor_target, self.actor, self.config.tau)
            metrics.update(actor_metrics)
        return metrics

    def policy(self) -> TeamPolicy:
        return TeamPolicy(self.spec, self.actor, "deterministic")
