"""IBC: independent behavior cloning, one policy per agent from that agent's own data.

Each agent maximizes the likelihood of its own dataset actions given its own observations:
a Gaussian with a tanh-bounded mean for continuous actions, a categorical for discrete ones.
Decentralized by construction; it can only agree on a strategy if the data already does.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from offcoord_agents.core import Algorithm, TrainConfig, optimize
from offcoord_agents.data import TaskSpec, TorchBatch
from offcoord_agents.nets import StackedCategoricalActor, StackedGaussianActor, cloning_loss
from offcoord_agents.policy import TeamPolicy


@dataclass
class IBCConfig(TrainConfig):
    """Behavior cloning needs no discount or target networks; the shared defaults apply."""


class IBC(Algorithm):
    name = "ibc"
    Config = IBCConfig

    def __init__(self, spec: TaskSpec, config: IBCConfig, device: torch.device):
        super().__init__(spec, config, device)
        actor_cls = StackedCategoricalActor if spec.discrete else StackedGaussianActor
        self.actor = actor_cls(spec.n_agents, spec.max_obs_dim, spec.max_act_dim, config.hidden).to(device)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=config.lr)
        self.act_mask = spec.act_mask().to(device)

    def update(self, batch: TorchBatch, step: int) -> dict[str, float]:
        loss = cloning_loss(self.actor, batch.obs, batch.actions, self.act_mask)
        grad_norm = optimize(self.actor_opt, loss, self.actor.parameters(), self.config.grad_clip)
        return {"bc_loss": loss.item(), "grad_norm": grad_norm}

    def policy(self) -> TeamPolicy:
        return TeamPolicy(self.spec, self.actor, "categorical" if self.spec.discrete else "gaussian")
