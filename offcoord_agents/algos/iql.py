"""IQL over the joint action, executed centrally: the strategy-agreement upper bound.

Implicit Q-Learning (Kostrikov et al., 2022) as a single agent whose observation is the global
state and whose action is the joint action. Because one actor chooses for everybody, agreement
is free; what remains is fine-tuning. Only valid where an agent observes the whole state (FO tasks
and the coordination game): the policy reads the state from ``agent_0``'s observation and says
``centralized = True``.

- value: expectile regression ``L_tau(min Q'(s, a) - V(s))``
- critic: ``(r + gamma (1 - done) V(s') - Q_k(s, a))^2`` for both twins
- actor: advantage-weighted regression, weights ``exp(beta (Q' - V))`` clipped at ``max_weight``
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch

from offcoord_agents.core import Algorithm, TrainConfig, optimize, soft_update
from offcoord_agents.data import TaskSpec, TorchBatch
from offcoord_agents.nets import StackedCategoricalActor, StackedGaussianActor, StackedMLP, StackedTwinCritic
from offcoord_agents.policy import CentralizedPolicy


@dataclass
class IQLConfig(TrainConfig):
    expectile: float = 0.7  # tau of the value's expectile regression
    temperature: float = 3.0  # beta of the advantage weights
    max_weight: float = 100.0  # advantage weights are clipped here


def expectile_loss(diff: torch.Tensor, expectile: float) -> torch.Tensor:
    weight = torch.where(diff > 0, expectile, 1 - expectile)
    return weight * diff**2


class IQL(Algorithm):
    name = "iql"
    Config = IQLConfig
    centralized = True

    def __init__(self, spec: TaskSpec, config: IQLConfig, device: torch.device):
        super().__init__(spec, config, device)
        S = spec.state_dim
        self.q = StackedTwinCritic(1, S + spec.joint_act_dim, config.hidden).to(device)
        self.q_target = copy.deepcopy(self.q)
        self.v = StackedMLP(1, S, 1, config.hidden).to(device)
        if spec.discrete:  # one categorical over the product of the agents' choices
            self.n_joint = int(np.prod(spec.act_dims))
            self.actor = StackedCategoricalActor(1, S, self.n_joint, config.hidden).to(device)
        else:
            self.actor = StackedGaussianActor(1, S, spec.joint_act_dim, config.hidden).to(device)
        self.q_opt = torch.optim.Adam(self.q.parameters(), lr=config.lr)
        self.v_opt = torch.optim.Adam(self.v.parameters(), lr=config.lr)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=config.lr)

    def setup(self, ds, workdir=None) -> None:
        batch = ds.batch(np.arange(min(len(ds), 1000)))
        if not np.array_equal(batch.observations[ds.agents[0]], batch.states):
            raise ValueError(f"iql is centralized: it needs {ds.agents[0]} to observe the full state, which "
                             f"{ds.id} does not (use an -fo dataset or the coordination game)")

    def _joint_index(self, batch: TorchBatch) -> torch.Tensor:
        index = torch.zeros_like(batch.actions[0])
        for i, n in enumerate(self.spec.act_dims):
            index = index * n + batch.actions[i]
        return index

    def update(self, batch: TorchBatch, step: int) -> dict[str, float]:
        cfg = self.config
        s, s2 = batch.states.unsqueeze(0), batch.next_states.unsqueeze(0)
        sa = torch.cat([s, batch.joint_actions.unsqueeze(0)], -1)
        with torch.no_grad():
            q_t = torch.min(*self.q_target(sa))[0]  # (B,)
            v_next = self.v(s2)[0, :, 0]
        v = self.v(s)[0, :, 0]
        adv = q_t - v
        v_loss = expectile_loss(adv, cfg.expectile).mean()
        optimize(self.v_opt, v_loss, self.v.parameters(), cfg.grad_clip)

        target = batch.rewards + cfg.gamma * (1 - batch.dones) * v_next
        q1, q2 = self.q(sa)
        q_loss = ((q1[0] - target) ** 2).mean() + ((q2[0] - target) ** 2).mean()
        optimize(self.q_opt, q_loss, self.q.parameters(), cfg.grad_clip)
        soft_update(self.q_target, self.q, cfg.tau)

        weights = torch.exp(cfg.temperature * adv.detach()).clamp(max=cfg.max_weight)
        if self.spec.discrete:
            mask = torch.ones(1, 1, self.n_joint, device=self.device)
            log_prob = self.actor.log_prob(s, self._joint_index(batch).unsqueeze(0), mask)[0]
        else:
            log_prob = self.actor.log_prob(s, batch.joint_actions.unsqueeze(0), torch.ones(1, device=self.device))[0]
        actor_loss = -(weights * log_prob).mean()
        optimize(self.actor_opt, actor_loss, self.actor.parameters(), cfg.grad_clip)
        return {"v_loss": v_loss.item(), "q_loss": q_loss.item(), "actor_loss": actor_loss.item(), "v_mean": v.mean().item()}

    def policy(self) -> CentralizedPolicy:
        return CentralizedPolicy(self.spec, self.actor, "categorical" if self.spec.discrete else "gaussian")
