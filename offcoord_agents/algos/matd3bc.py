"""MA-TD3+BC: centralized twin critic on the global state and joint action, decentralized actors.

The critic ``Q(s, a_1..a_A)`` is trained on the team reward with TD3's clipped double-Q target,
bootstrapping through every agent's target actor. Each actor ``pi_i(o_i)`` maximizes the critic
with the other agents' current actions plugged in, plus its own behavior-cloning term (TD3+BC's
``lambda = alpha / mean|Q|``). Execution is decentralized: an actor sees only its observation.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from offcoord_agents.algos.itd3bc import ITD3BCConfig
from offcoord_agents.core import Algorithm, optimize, soft_update
from offcoord_agents.data import TaskSpec, TorchBatch, observation_stats, state_stats
from offcoord_agents.nets import StackedDeterministicActor, StackedTwinCritic
from offcoord_agents.policy import TeamPolicy


@dataclass
class MATD3BCConfig(ITD3BCConfig):
    """Same fields as ITD3+BC; only the critic changes (centralized)."""


class MATD3BC(Algorithm):
    name = "matd3bc"
    Config = MATD3BCConfig
    supports_discrete = False

    def __init__(self, spec: TaskSpec, config: MATD3BCConfig, device: torch.device):
        super().__init__(spec, config, device)
        A, O, U = spec.n_agents, spec.max_obs_dim, spec.max_act_dim
        self.actor = StackedDeterministicActor(A, O, U, config.hidden).to(device)
        self.critic = StackedTwinCritic(1, spec.state_dim + spec.joint_act_dim, config.hidden).to(device)
        self.actor_target = copy.deepcopy(self.actor)
        self.critic_target = copy.deepcopy(self.critic)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=config.lr)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=config.lr)
        self.act_mask = spec.act_mask().to(device)
        self.act_dims = torch.tensor(spec.act_dims, dtype=torch.float32, device=device).unsqueeze(1)  # (A, 1)
        # positions of the real action dims in the flattened (agent, dim) layout: the joint action
        self.joint_columns = self.act_mask.squeeze(1).flatten().nonzero().squeeze(-1)

    def setup(self, ds, workdir=None) -> None:
        if self.config.normalize_observations:
            mean, std = observation_stats(ds, self.spec)
            for net in (self.actor.net, self.actor_target.net):
                net.set_input_normalization(mean, std)
            # the critic takes [state, joint action]: normalize the state part
            s_mean, s_std = state_stats(ds)
            J = self.spec.joint_act_dim
            c_mean = torch.cat([s_mean, torch.zeros(J)]).view(1, 1, -1).repeat(2, 1, 1)
            c_std = torch.cat([s_std, torch.ones(J)]).view(1, 1, -1).repeat(2, 1, 1)
            for net in (self.critic.net, self.critic_target.net):
                net.set_input_normalization(c_mean, c_std)

    def joint(self, per_agent: torch.Tensor) -> torch.Tensor:
        """``(A, B, U)`` -> ``(B, joint_act_dim)`` in agent order (as ``TorchBatch.joint_actions``)."""
        return per_agent.permute(1, 0, 2).reshape(per_agent.shape[1], -1)[:, self.joint_columns]

    def q(self, critic, states: torch.Tensor, joint_actions: torch.Tensor):
        q1, q2 = critic(torch.cat([states, joint_actions], -1).unsqueeze(0))
        return q1[0], q2[0]

    def update(self, batch: TorchBatch, step: int) -> dict[str, float]:
        cfg = self.config
        with torch.no_grad():
            noise = (torch.randn_like(batch.actions) * cfg.target_noise).clamp(-cfg.noise_clip, cfg.noise_clip)
            next_actions = (self.actor_target(batch.next_obs) + noise).clamp(-1, 1) * self.act_mask
            target = batch.rewards + cfg.gamma * (1 - batch.dones) * torch.min(
                *self.q(self.critic_target, batch.next_states, self.joint(next_actions))
            )
        q1, q2 = self.q(self.critic, batch.states, batch.joint_actions)
        critic_loss = ((q1 - target) ** 2).mean() + ((q2 - target) ** 2).mean()
        optimize(self.critic_opt, critic_loss, self.critic.parameters(), cfg.grad_clip)
        metrics = {"critic_loss": critic_loss.item(), "q_mean": q1.mean().item()}

        if step % cfg.policy_delay == 0:
            pi = self.actor(batch.obs) * self.act_mask
            q = self.q(self.critic, batch.states, self.joint(pi))[0]
            lmbda = cfg.alpha / q.abs().mean().detach()
            bc = (((pi - batch.actions) ** 2).sum(-1) / self.act_dims).mean(1).sum()
            actor_loss = -lmbda * q.mean() + bc
            optimize(self.actor_opt, actor_loss, self.actor.parameters(), cfg.grad_clip)
            soft_update(self.critic_target, self.critic, cfg.tau)
            soft_update(self.actor_target, self.actor, cfg.tau)
            metrics.update({"actor_loss": actor_loss.item(), "bc_mse": bc.item()})
        return metrics

    def policy(self) -> TeamPolicy:
        return TeamPolicy(self.spec, self.actor, "deterministic")
