"""Per-agent networks batched as one module: agent-stacked weights, one ``bmm`` per layer.

Every agent has its own parameters (no sharing), but all agents run in a single forward pass:
a layer's weight has shape ``(members, in, out)`` and inputs are laid out agent-major
``(members, batch, in)``. Agents whose observations are shorter than the longest are zero-padded;
the padded input rows then get zero gradient, which makes the stack exactly equivalent to
separate networks.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0


class StackedLinear(nn.Module):
    """``members`` independent linear layers applied with one batched matmul."""

    def __init__(self, members: int, in_features: int, out_features: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(members, in_features, out_features))
        self.bias = nn.Parameter(torch.empty(members, 1, out_features))
        # the same initialization as nn.Linear, member by member
        bound = 1.0 / math.sqrt(in_features)
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor, members: torch.Tensor | slice | None = None) -> torch.Tensor:
        """``(members, batch, in) -> (members, batch, out)``; with ``members`` (indices or a slice), only those layers."""
        if members is None:
            return torch.baddbmm(self.bias, x, self.weight)
        return torch.baddbmm(self.bias[members], x, self.weight[members])


class StackedMLP(nn.Module):
    """``members`` independent MLPs ``in_dim -> hidden... -> out_dim`` run as one module.

    ``input_mean``/``input_std`` (buffers, saved with the weights) standardize inputs, so a policy
    trained on normalized observations needs nothing else at execution.
    """

    def __init__(self, members: int, in_dim: int, out_dim: int, hidden: Sequence[int] = (256, 256)):
        super().__init__()
        dims = [in_dim, *hidden, out_dim]
        self.members = members
        self.layers = nn.ModuleList(StackedLinear(members, a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.register_buffer("input_mean", torch.zeros(members, 1, in_dim))
        self.register_buffer("input_std", torch.ones(members, 1, in_dim))

    def set_input_normalization(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.input_mean.copy_(mean.reshape(self.input_mean.shape))
        self.input_std.copy_(std.reshape(self.input_std.shape))

    def forward(self, x: torch.Tensor, members: torch.Tensor | slice | None = None) -> torch.Tensor:
        """``(members, batch, in) -> (members, batch, out)``; with ``members`` (indices or a slice), only those MLPs."""
        if members is None:
            x = (x - self.input_mean) / self.input_std
        else:
            x = (x - self.input_mean[members]) / self.input_std[members]
        for layer in self.layers[:-1]:
            x = F.relu(layer(x, members))
        return self.layers[-1](x, members)

    def forward_shared(self, x: torch.Tensor, members: torch.Tensor | None = None) -> torch.Tensor:
        """Every member (or only ``members``, indices) on the same input ``(batch, in)`` ->
        ``(len(members), batch, out)``.

        Without autograd (rollouts), the first layer is one wide GEMM against the members' weights
        side by side, the chosen members' weights are packed once and reused until a parameter
        changes, and rows go through in blocks whose activations stay in cache.
        """
        M = self.members if members is None else len(members)
        # With autograd (packed copies would not carry gradients) or per-member input normalization
        # (the members' inputs differ), the plain stacked forward on the broadcast input.
        if torch.is_grad_enabled() or self.input_mean.any() or (self.input_std != 1).any():
            return self(x.expand(M, *x.shape), members)
        (w0, b0), rest = self._packed(members)
        outs = []
        for rows in x.split(self.INFERENCE_BLOCK):
            h = torch.addmm(b0, rows, w0).relu_().view(len(rows), M, -1).transpose(0, 1).contiguous()
            for k, (w, b) in enumerate(rest):
                h = torch.baddbmm(b, h, w)
                if k < len(rest) - 1:
                    h = h.relu_()
            outs.append(h)
        return outs[0] if len(outs) == 1 else torch.cat(outs, 1)

    # Rows per block at inference: (members, 256, 200) activations fit in L2; measured faster than
    # one block from about 1,000 rows up and no slower below.
    INFERENCE_BLOCK = 256

    def _packed(self, members: torch.Tensor | None):
        """The weights of ``members`` as contiguous tensors (first layer side by side), rebuilt only
        when the members or any parameter change: optimizer steps, ``load_state_dict`` and ``.to``
        all bump a parameter's version counter or move it. (Writes through ``param.data`` do not;
        nothing here makes them.)"""
        key = (None if members is None else tuple(members.tolist()),
               tuple((p.data_ptr(), p._version) for p in self.parameters()))
        cached = getattr(self, "_packed_cache", None)
        if cached is None or cached[0] != key:
            index = slice(None) if members is None else members
            first = self.layers[0]
            w0 = first.weight[index].permute(1, 0, 2).reshape(first.weight.shape[1], -1).contiguous()
            b0 = first.bias[index].permute(1, 0, 2).reshape(1, -1).contiguous()
            rest = [(layer.weight[index].contiguous(), layer.bias[index].contiguous()) for layer in self.layers[1:]]
            cached = (key, ((w0, b0), rest))
            self._packed_cache = cached
        return cached[1]

    def member_forward(self, i: int, x: torch.Tensor) -> torch.Tensor:
        """Member ``i`` alone on ``(batch, in)``: what one agent computes at decentralized execution."""
        x = (x - self.input_mean[i]) / self.input_std[i]
        for k, layer in enumerate(self.layers):
            x = torch.addmm(layer.bias[i], x, layer.weight[i])
            if k < len(self.layers) - 1:
                x = F.relu(x)
        return x


def mlp(in_dim: int, out_dim: int, hidden: Sequence[int] = (256, 256)) -> nn.Sequential:
    """A plain MLP (centralized critics, mixers)."""
    layers: list[nn.Module] = []
    dims = [in_dim, *hidden]
    for a, b in zip(dims[:-1], dims[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    layers.append(nn.Linear(dims[-1], out_dim))
    return nn.Sequential(*layers)


class StackedDeterministicActor(nn.Module):
    """Deterministic per-agent actors ``a_i = tanh(f_i(o_i))`` (TD3 family)."""

    def __init__(self, n_agents: int, obs_dim: int, act_dim: int, hidden: Sequence[int] = (256, 256)):
        super().__init__()
        self.net = StackedMLP(n_agents, obs_dim, act_dim, hidden)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.net(obs))

    def act_one(self, i: int, obs: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.net.member_forward(i, obs))


def cloning_loss(actor: nn.Module, obs: torch.Tensor, actions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Behavior cloning: minus each agent's mean log-likelihood of its own data actions, summed over
    agents so they do not dilute each other (IBC's loss; MOMA-PPO's optional anchor to the data)."""
    return -actor.log_prob(obs, actions, mask).mean(1).sum()


class StackedGaussianActor(nn.Module):
    """Per-agent Gaussian actors with a tanh-bounded mean: ``N(tanh(mu_i(o_i)), sigma_i(o_i))``.

    The deterministic action is the mean (the evaluation protocol); log-probabilities of dataset
    actions in [-1, 1] are exact (no squashing correction needed), as in CORL's IQL.
    """

    def __init__(self, n_agents: int, obs_dim: int, act_dim: int, hidden: Sequence[int] = (256, 256)):
        super().__init__()
        self.act_dim = act_dim
        self.net = StackedMLP(n_agents, obs_dim, 2 * act_dim, hidden)

    def _split(self, out: torch.Tensor):
        mu, log_std = out.split(self.act_dim, dim=-1)
        return torch.tanh(mu), log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)

    @torch.no_grad()
    def set_initial_std(self, std: float) -> None:
        """Start every agent's standard deviation near ``std`` in every state: the log-std head's
        bias becomes ``log(std)`` and its weights are scaled down 100-fold."""
        if not 0 < std <= math.exp(LOG_STD_MAX):
            raise ValueError(f"initial_std must be in (0, {math.exp(LOG_STD_MAX):.2f}], got {std}")
        head = self.net.layers[-1]
        head.bias[..., self.act_dim :] = math.log(std)
        head.weight[..., self.act_dim :] *= 0.01

    def distribution(self, obs: torch.Tensor) -> torch.distributions.Normal:
        mean, log_std = self._split(self.net(obs))
        return torch.distributions.Normal(mean, log_std.exp())

    def log_prob(self, obs: torch.Tensor, actions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Sum over each agent's real action dims (``mask`` zeroes the padding): ``(agents, batch)``."""
        return (self.distribution(obs).log_prob(actions) * mask).sum(-1)

    def deterministic(self, obs: torch.Tensor) -> torch.Tensor:
        return self._split(self.net(obs))[0]

    def act_one(self, i: int, obs: torch.Tensor, generator: torch.Generator | None = None, stochastic: bool = False):
        mean, log_std = self._split(self.net.member_forward(i, obs))
        if not stochastic:
            return mean
        return (mean + log_std.exp() * torch.randn(mean.shape, generator=generator, device=mean.device)).clamp(-1.0, 1.0)


class StackedCategoricalActor(nn.Module):
    """Per-agent categorical actors over ``n_actions`` choices (padded choices are masked out)."""

    def __init__(self, n_agents: int, obs_dim: int, n_actions: int, hidden: Sequence[int] = (256, 256)):
        super().__init__()
        self.net = StackedMLP(n_agents, obs_dim, n_actions, hidden)

    def logits(self, obs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.net(obs).masked_fill(mask == 0, -1e9)

    def log_prob(self, obs: torch.Tensor, actions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        logp = F.log_softmax(self.logits(obs, mask), dim=-1)
        return logp.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)

    def act_one(self, i: int, obs: torch.Tensor, mask_i: torch.Tensor, generator=None, stochastic: bool = False):
        logits = self.net.member_forward(i, obs).masked_fill(mask_i == 0, -1e9)
        if not stochastic:
            return logits.argmax(-1)
        return torch.multinomial(F.softmax(logits, -1), 1, generator=generator).squeeze(-1)


class StackedTwinCritic(nn.Module):
    """Twin Q-functions per member, ``Q1_i, Q2_i (x_i)``, as one stacked MLP of ``2 * members``."""

    def __init__(self, members: int, in_dim: int, hidden: Sequence[int] = (256, 256)):
        super().__init__()
        self.members = members
        self.net = StackedMLP(2 * members, in_dim, 1, hidden)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x (members, batch, in)`` -> ``(q1, q2)`` each ``(members, batch)``."""
        q = self.net(x.repeat(2, 1, 1)).squeeze(-1)
        return q[: self.members], q[self.members :]

    def q1(self, x: torch.Tensor) -> torch.Tensor:
        """Only the first Q-function, ``(members, batch)``: the numbers of ``forward(x)[0]`` at half
        the cost (actor losses and OMAR's action search read Q1 alone)."""
        return self.net(x, slice(0, self.members)).squeeze(-1)


class HyperMixer(nn.Module):
    """QMIX's monotonic mixer: ``mix(s, x_1..x_A) = w2(s) . elu(W1(s) x + b1(s)) + b2(s)``, ``W >= 0``.

    Hypernetworks on the global state produce the mixing weights; their absolute value keeps the
    mix monotonic in every agent's value, so each agent's greedy action is consistent with the team's.
    """

    def __init__(self, state_dim: int, n_agents: int, embed: int = 32, hyper_hidden: int = 64):
        super().__init__()
        self.n_agents, self.embed = n_agents, embed
        self.w1 = nn.Sequential(nn.Linear(state_dim, hyper_hidden), nn.ReLU(), nn.Linear(hyper_hidden, n_agents * embed))
        self.b1 = nn.Linear(state_dim, embed)
        self.w2 = nn.Sequential(nn.Linear(state_dim, hyper_hidden), nn.ReLU(), nn.Linear(hyper_hidden, embed))
        self.b2 = nn.Sequential(nn.Linear(state_dim, hyper_hidden), nn.ReLU(), nn.Linear(hyper_hidden, 1))

    def forward(self, values: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        """``values (A, B)``, ``states (B, S)`` -> ``(B,)``."""
        batch = states.shape[0]
        w1 = self.w1(states).abs().view(batch, self.n_agents, self.embed)
        hidden = F.elu(torch.bmm(values.t().unsqueeze(1), w1).squeeze(1) + self.b1(states))
        w2 = self.w2(states).abs()
        return (hidden * w2).sum(-1) + self.b2(states).squeeze(-1)
