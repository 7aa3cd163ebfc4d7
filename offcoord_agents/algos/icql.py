"""ICQL: independent TD3 learners with the conservative Q-learning regularizer (Kumar et al., 2020).

Each agent's twin critic is pushed down on actions it samples (uniform random, and its current
policy's, with Gaussian noise, at o and o') and up on the dataset's action:
``alpha * (T * logsumexp_k((Q_i(o_i, a_k) - log p(a_k)) / T) - Q_i(o_i, a_i^data))``, where
``p`` is the density each sample was drawn from (CQL(H) with importance sampling, as in OMAR's code). The actor maximizes its own
critic (no behavior-cloning term). The networks, target and update schedule are ITD3+BC's.
Continuous actions only. OMAR builds on this module.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from offcoord_agents.algos.itd3bc import ITD3BC
from offcoord_agents.core import TrainConfig, optimize
from offcoord_agents.data import TorchBatch


@dataclass
class ICQLConfig(TrainConfig):
    cql_alpha: float = 1.0  # weight of the conservative regularizer
    cql_temperature: float = 1.0  # temperature T of the logsumexp
    cql_samples: int = 10  # sampled actions per source (random, pi(o), pi(o'))
    policy_delay: int = 2  # critic updates per actor update
    target_noise: float = 0.2  # target-policy smoothing noise std
    noise_clip: float = 0.5  # smoothing noise clip
    sample_noise: float = 0.1  # exploration noise on the policy's sampled actions
    normalize_observations: bool = True  # standardize observations with dataset statistics


class ICQL(ITD3BC):
    """ITD3+BC's networks, target and update schedule, with CQL's critic loss and a pure-Q actor."""

    name = "icql"
    Config = ICQLConfig

    def __init__(self, spec, config: ICQLConfig, device: torch.device):
        super().__init__(spec, config, device)
        act_dims = torch.tensor(spec.act_dims, dtype=torch.float32, device=device)
        self.uniform_log_density = (act_dims * math.log(0.5)).view(-1, 1, 1)  # uniform on [-1, 1]^U_i

    @staticmethod
    def sample_inputs(obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Critic inputs for ``K`` actions per observation: ``obs (A, B, O)``, ``actions (A, B, K, U)`` -> ``(A, B * K, O + U)``."""
        A, B, K, _ = actions.shape
        return torch.cat([obs.unsqueeze(2).expand(A, B, K, obs.shape[-1]), actions], -1).reshape(A, B * K, -1)

    def q_of_samples(self, obs: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Twin Q of ``K`` actions per observation: ``(A, B, K)`` each."""
        q1, q2 = self.critic(self.sample_inputs(obs, actions))
        return q1.view(actions.shape[:3]), q2.view(actions.shape[:3])

    def _sample_around_policy(self, obs: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``k`` noisy policy actions per observation and their log-density under the noise ``(A, B, k)``."""
        sigma = self.config.sample_noise
        with torch.no_grad():
            pi = self.actor(obs).unsqueeze(2)
        noise = torch.randn(*pi.shape[:2], k, pi.shape[-1], device=obs.device) * sigma
        mask = self.act_mask.unsqueeze(2)
        log_density = ((-0.5 * (noise / sigma) ** 2 - math.log(sigma) - 0.5 * math.log(2 * math.pi)) * mask).sum(-1)
        return (pi + noise).clamp(-1, 1) * mask, log_density

    def update_critic(self, batch: TorchBatch) -> dict[str, float]:
        cfg = self.config
        target = self.critic_target_value(batch)
        q1, q2 = self.critic(torch.cat([batch.obs, batch.actions], -1))
        td_loss = ((q1 - target) ** 2).mean(1).sum() + ((q2 - target) ** 2).mean(1).sum()

        A, B, U = batch.actions.shape
        k = cfg.cql_samples
        random_actions = (torch.rand(A, B, k, U, device=self.device) * 2 - 1) * self.act_mask.unsqueeze(2)
        random_log_density = self.uniform_log_density.expand(A, B, k)  # log 0.5^U_i per agent
        pi_actions, pi_log_density = self._sample_around_policy(batch.obs, k)
        next_actions, next_log_density = self._sample_around_policy(batch.next_obs, k)
        sampled = torch.cat([random_actions, pi_actions, next_actions], 2)
        log_density = torch.cat([random_log_density, pi_log_density, next_log_density], 2)
        s1, s2 = self.q_of_samples(batch.obs, sampled)
        s1, s2 = s1 - log_density, s2 - log_density
        T = cfg.cql_temperature
        cql = (T * torch.logsumexp(s1 / T, -1) - q1).mean(1).sum() + (T * torch.logsumexp(s2 / T, -1) - q2).mean(1).sum()
        loss = td_loss + cfg.cql_alpha * cql
        grad_norm = optimize(self.critic_opt, loss, self.critic.parameters(), cfg.grad_clip)
        return {"td_loss": td_loss.item(), "cql_loss": cql.item(), "q_mean": q1.mean().item(), "critic_grad_norm": grad_norm}

    def actor_loss(self, batch: TorchBatch) -> tuple[torch.Tensor, dict[str, float]]:
        pi = self.actor(batch.obs) * self.act_mask
        q = self.critic.q1(torch.cat([batch.obs, pi], -1))
        loss = -q.mean(1).sum()
        return loss, {"actor_loss": loss.item()}
