"""OMAR: offline multi-agent RL with actor rectification (Pan et al., 2022) — ICQL plus action search.

The critics are ICQL's. Each actor is pulled toward the best action a zeroth-order search finds
on its own critic, instead of following only the critic's (often poor) local gradient:
``(1 - c) * (-Q_i(o_i, pi_i(o_i))) + c * ||pi_i(o_i) - a*_i||^2`` with ``c = omar_coefficient``.
The search is the cross-entropy method: sample actions from ``N(mu, sigma)``, keep the elites,
refit, repeat; ``a*`` is the best of the searched action and the policy's own.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from offcoord_agents.algos.icql import ICQL, ICQLConfig
from offcoord_agents.data import TorchBatch


@dataclass
class OMARConfig(ICQLConfig):
    omar_coefficient: float = 0.9  # c: weight of the pull toward the searched action
    cem_iterations: int = 2  # cross-entropy-method iterations
    cem_mean: float = 0.0  # initial search mean
    cem_std: float = 2.0  # initial search std
    cem_samples: int = 20  # actions sampled per iteration
    cem_elites: int = 5  # best samples kept to refit the search distribution


class OMAR(ICQL):
    name = "omar"
    Config = OMARConfig

    def search_actions(self, obs: torch.Tensor) -> torch.Tensor:
        """Cross-entropy search on each agent's critic: ``obs (A, B, O)`` -> best actions ``(A, B, U)``."""
        cfg = self.config
        A, B, _ = obs.shape
        U = self.spec.max_act_dim
        mask = self.act_mask.unsqueeze(2)
        mu = torch.full((A, B, 1, U), cfg.cem_mean, device=obs.device)
        std = torch.full((A, B, 1, U), cfg.cem_std, device=obs.device)
        with torch.no_grad():
            for _ in range(cfg.cem_iterations):
                samples = (mu + std * torch.randn(A, B, cfg.cem_samples, U, device=obs.device)).clamp(-1, 1) * mask
                q = self.critic.q1(self.sample_inputs(obs, samples)).view(A, B, -1)  # (A, B, K)
                elite_idx = q.topk(cfg.cem_elites, dim=-1).indices
                elites = samples.gather(2, elite_idx.unsqueeze(-1).expand(-1, -1, -1, U))
                mu, std = elites.mean(2, keepdim=True), elites.std(2, keepdim=True) + 1e-6
            best = samples.gather(2, q.argmax(-1, keepdim=True).unsqueeze(-1).expand(-1, -1, -1, U)).squeeze(2)
            best_q = q.max(-1).values
            pi = self.actor(obs) * self.act_mask
            pi_q = self.critic.q1(torch.cat([obs, pi], -1))
            return torch.where((best_q > pi_q).unsqueeze(-1), best, pi)

    def actor_loss(self, batch: TorchBatch) -> tuple[torch.Tensor, dict[str, float]]:
        c = self.config.omar_coefficient
        target_actions = self.search_actions(batch.obs)
        pi = self.actor(batch.obs) * self.act_mask
        q = self.critic.q1(torch.cat([batch.obs, pi], -1))
        rectify = ((pi - target_actions) ** 2).sum(-1) / self.act_dims
        loss = ((1 - c) * -q + c * rectify).mean(1).sum()
        return loss, {"actor_loss": loss.item(), "rectify_mse": rectify.mean().item()}
