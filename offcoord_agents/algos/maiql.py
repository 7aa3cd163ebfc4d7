"""MA-IQL: multi-agent IQL, centralized training with decentralized execution.

Each agent has its own Q_i(o_i, a_i) (twin) and V_i(o_i); monotonic hypernetwork mixers on the
global state combine them into team values ``Q_tot(s, a) = mixQ(s, Q_1..Q_A)`` and
``V_tot(s) = mixV(s, V_1..V_A)``, trained with IQL's losses on the team reward. Each agent's actor
is fit by advantage-weighted regression of its own action on its own observation, weighted by the
team advantage ``Q_tot(s, a) - V_tot(s)`` of the joint action it was part of (the per-agent values
pass through two different nonlinear mixers, so ``Q_i - V_i`` alone has no common scale). The
state enters only the training weights: execution stays decentralized. Works for discrete and
continuous actions.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from offcoord_agents.algos.iql import expectile_loss
from offcoord_agents.core import Algorithm, TrainConfig, optimize, soft_update
from offcoord_agents.data import TaskSpec, TorchBatch
from offcoord_agents.nets import HyperMixer, StackedCategoricalActor, StackedGaussianActor, StackedMLP, StackedTwinCritic
from offcoord_agents.policy import TeamPolicy


@dataclass
class MAIQLConfig(TrainConfig):
    expectile: float = 0.7  # tau of the value's expectile regression
    temperature: float = 3.0  # beta of the advantage weights
    max_weight: float = 100.0  # advantage weights are clipped here
    mixer_embed: int = 32  # width of the mixers' hidden layer
    mixer_hyper_hidden: int = 64  # width of the hypernetworks that produce the mixing weights


class MAIQL(Algorithm):
    name = "maiql"
    Config = MAIQLConfig

    def __init__(self, spec: TaskSpec, config: MAIQLConfig, device: torch.device):
        super().__init__(spec, config, device)
        A, O, U, S = spec.n_agents, spec.max_obs_dim, spec.max_act_dim, spec.state_dim
        self.q = StackedTwinCritic(A, O + U, config.hidden).to(device)
        self.q_mixer = HyperMixer(S, A, config.mixer_embed, config.mixer_hyper_hidden).to(device)
        self.q_target = copy.deepcopy(self.q)
        self.q_mixer_target = copy.deepcopy(self.q_mixer)
        self.v = StackedMLP(A, O, 1, config.hidden).to(device)
        self.v_mixer = HyperMixer(S, A, config.mixer_embed, config.mixer_hyper_hidden).to(device)
        actor_cls = StackedCategoricalActor if spec.discrete else StackedGaussianActor
        self.actor = actor_cls(A, O, U, config.hidden).to(device)
        self.q_opt = torch.optim.Adam([*self.q.parameters(), *self.q_mixer.parameters()], lr=config.lr)
        self.v_opt = torch.optim.Adam([*self.v.parameters(), *self.v_mixer.parameters()], lr=config.lr)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=config.lr)
        self.act_mask = spec.act_mask().to(device)

    def _critic_input(self, batch: TorchBatch) -> torch.Tensor:
        actions = batch.actions
        if self.spec.discrete:
            actions = F.one_hot(actions, self.spec.max_act_dim).float() * self.act_mask
        return torch.cat([batch.obs, actions], -1)

    def update(self, batch: TorchBatch, step: int) -> dict[str, float]:
        cfg = self.config
        x = self._critic_input(batch)
        with torch.no_grad():
            q1_t, q2_t = self.q_target(x)
            q_i_t = torch.min(q1_t, q2_t)  # (A, B)
            q_tot_t = self.q_mixer_target(q_i_t, batch.states)
            v_next = self.v_mixer(self.v(batch.next_obs).squeeze(-1), batch.next_states)

        v_i = self.v(batch.obs).squeeze(-1)  # (A, B)
        v_tot = self.v_mixer(v_i, batch.states)
        v_loss = expectile_loss(q_tot_t - v_tot, cfg.expectile).mean()
        optimize(self.v_opt, v_loss, self.v_opt.param_groups[0]["params"], cfg.grad_clip)

        target = batch.rewards + cfg.gamma * (1 - batch.dones) * v_next
        q1, q2 = self.q(x)
        q_loss = ((self.q_mixer(q1, batch.states) - target) ** 2).mean() + ((self.q_mixer(q2, batch.states) - target) ** 2).mean()
        optimize(self.q_opt, q_loss, self.q_opt.param_groups[0]["params"], cfg.grad_clip)
        soft_update(self.q_target, self.q, cfg.tau)
        soft_update(self.q_mixer_target, self.q_mixer, cfg.tau)

        advantage = (q_tot_t - v_tot.detach()).unsqueeze(0)  # the team advantage, shared by every agent
        weights = torch.exp(cfg.temperature * advantage).clamp(max=cfg.max_weight)
        log_prob = self.actor.log_prob(batch.obs, batch.actions, self.act_mask)  # (A, B)
        actor_loss = -(weights * log_prob).mean(1).sum()
        optimize(self.actor_opt, actor_loss, self.actor.parameters(), cfg.grad_clip)
        return {"v_loss": v_loss.item(), "q_loss": q_loss.item(), "actor_loss": actor_loss.item(),
                "advantage_mean": advantage.mean().item()}

    def policy(self) -> TeamPolicy:
        return TeamPolicy(self.spec, self.actor, "categorical" if self.spec.discrete else "gaussian")
