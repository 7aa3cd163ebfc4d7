"""Gradient updates per second of every algorithm on the four-agent ant shapes, and the cost of
four agents relative to one: our ITD3+BC update (4 agents, stacked) against a single-agent TD3+BC
update of the same network size, and against a Python loop over 4 separate single-agent updates.

    python -m benchmarks.bench_agents [--seconds 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
from torch import nn
from torch.nn import functional as F

from offcoord_agents.core import optimize, soft_update
from offcoord_agents.data import TaskSpec, TorchBatch
from offcoord_agents.registry import ALGORITHMS, algorithm_class

B = 256
ANT_PO = TaskSpec("bench", "ant-po", ("agent_0", "agent_1", "agent_2", "agent_3"), (15, 4, 4, 4), (2, 2, 2, 2), False, 27)
COORD = TaskSpec("bench", "coordination-game", ("agent_0", "agent_1"), (1, 1), (2, 2), True, 1)


def synthetic_batch(spec: TaskSpec) -> TorchBatch:
    g = torch.Generator().manual_seed(0)
    A, O, U = spec.n_agents, spec.max_obs_dim, spec.max_act_dim
    obs = torch.randn(A, B, O, generator=g) * spec.obs_mask()
    if spec.discrete:
        actions = torch.randint(0, U, (A, B), generator=g)
        joint = torch.cat([F.one_hot(actions[i], U).float() for i in range(A)], -1)
    else:
        actions = (torch.rand(A, B, U, generator=g) * 2 - 1) * spec.act_mask()
        joint = actions.permute(1, 0, 2).reshape(B, -1)
    return TorchBatch(obs, obs.roll(1, 1), actions, joint, torch.randn(B, generator=g), torch.zeros(B),
                      torch.randn(B, spec.state_dim, generator=g), torch.randn(B, spec.state_dim, generator=g))


def rate(fn, seconds: float) -> float:
    for _ in range(5):  # warm-up
        fn()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        fn()
        n += 1
    return n / (time.perf_counter() - t0)


class SingleAgentTD3BC:
    """A plain single-agent TD3+BC update (CORL-style nn.Linear networks) of the same width."""

    def __init__(self, obs_dim: int, act_dim: int, hidden=(256, 256)):
        def net(i, o, out_act=None):
            layers, d = [], i
            for h in hidden:
                layers += [nn.Linear(d, h), nn.ReLU()]
                d = h
            layers.append(nn.Linear(d, o))
            if out_act:
                layers.append(out_act)
            return nn.Sequential(*layers)

        self.actor = net(obs_dim, act_dim, nn.Tanh())
        self.q1, self.q2 = net(obs_dim + act_dim, 1), net(obs_dim + act_dim, 1)
        self.actor_t, self.q1_t, self.q2_t = copy.deepcopy(self.actor), copy.deepcopy(self.q1), copy.deepcopy(self.q2)
        self.a_opt = torch.optim.Adam(self.actor.parameters(), lr=3e-4)
        self.critic_params = [*self.q1.parameters(), *self.q2.parameters()]
        self.c_opt = torch.optim.Adam(self.critic_params, lr=3e-4)
        self.step = 0

    def update(self, obs, act, rew, next_obs, done):
        self.step += 1
        with torch.no_grad():
            noise = (torch.randn_like(act) * 0.2).clamp(-0.5, 0.5)
            na = (self.actor_t(next_obs) + noise).clamp(-1, 1)
            x = torch.cat([next_obs, na], -1)
            y = rew + 0.99 * (1 - done) * torch.min(self.q1_t(x), self.q2_t(x)).squeeze(-1)
        x = torch.cat([obs, act], -1)
        loss = ((self.q1(x).squeeze(-1) - y) ** 2).mean() + ((self.q2(x).squeeze(-1) - y) ** 2).mean()
        optimize(self.c_opt, loss, self.critic_params, 1.0)
        if self.step % 2 == 0:
            pi = self.actor(obs)
            q = self.q1(torch.cat([obs, pi], -1))
            a_loss = -(2.5 / q.abs().mean().detach()) * q.mean() + ((pi - act) ** 2).mean()
            optimize(self.a_opt, a_loss, self.actor.parameters(), 1.0)
            for t, s in ((self.q1_t, self.q1), (self.q2_t, self.q2), (self.actor_t, self.actor)):
                soft_update(t, s, 0.005)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0, help="measuring time per entry")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--algorithms", default=None, help="comma-separated subset (default: every algorithm; itd3bc is always run)")
    args = parser.parse_args(argv)
    names = sorted(ALGORITHMS) if args.algorithms is None else sorted(set(args.algorithms.split(",")) | {"itd3bc"})
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"batch {B}, hidden 256x256, torch {torch.__version__}, {args.threads} thread(s)")
    print(f"{'algorithm':<10}{'task shape':<22}{'updates/s':>12}")
    rates = {}
    for name in names:
        cls = algorithm_class(name)
        if not cls.uses_batches:  # trains on its own synthetic rollouts: bench_momappo measures it
            print(f"{name:<10}{'(no dataset batches: see bench_momappo)':<34}")
            continue
        spec = ANT_PO if not cls.centralized else TaskSpec("bench", "ant-fo", ANT_PO.agents, (27,) * 4, (2,) * 4, False, 27)
        if not cls.supports_continuous:
            spec = COORD
        algo = cls(spec, cls.Config(), torch.device("cpu"))
        batch = synthetic_batch(spec)
        step = iter(range(1, 10**9))
        rates[name] = rate(lambda: algo.update(batch, next(step)), args.seconds)
        print(f"{name:<10}{spec.env_id + ' (' + str(spec.n_agents) + ' agents)':<22}{rates[name]:>12.1f}")

    single = SingleAgentTD3BC(27, 8)
    b = synthetic_batch(ANT_PO)
    obs27 = torch.randn(B, 27)
    single_rate = rate(lambda: single.update(obs27, b.joint_actions, b.rewards, obs27, b.dones), args.seconds)
    loop = [SingleAgentTD3BC(o, 2) for o in ANT_PO.obs_dims]
    loop_rate = rate(lambda: [s.update(b.obs[i, :, : ANT_PO.obs_dims[i]], b.actions[i], b.rewards,
                                       b.next_obs[i, :, : ANT_PO.obs_dims[i]], b.dones) for i, s in enumerate(loop)],
                     args.seconds)
    ratio = single_rate / rates["itd3bc"]
    print(f"\nsingle-agent TD3+BC (27-dim obs, 8-dim action): {single_rate:8.1f} updates/s")
    print(f"loop over 4 separate single-agent TD3+BC:       {loop_rate:8.1f} updates/s")
    print(f"ITD3+BC, 4 agents stacked:                      {rates['itd3bc']:8.1f} updates/s")
    print(f"time per update, 4 stacked agents / 1 agent:     {ratio:6.2f}x   target < 1.5x: {'PASS' if ratio < 1.5 else 'FAIL'}")
    print(f"time per update, 4-agent loop / 4 stacked:       {rates['itd3bc'] / loop_rate:6.2f}x   (> 1x: stacking pays)")
    return [{"benchmark": "agents", "what": "ITD3+BC update time, 4 stacked agents / single-agent TD3+BC",
             "value": f"{ratio:.2f}x", "target": "< 1.5x", "pass": ratio < 1.5},
            {"benchmark": "agents", "what": "ITD3+BC updates/s, 4 stacked agents / loop over 4 TD3+BC",
             "value": f"{rates['itd3bc'] / loop_rate:.2f}x", "target": "> 1x", "pass": rates["itd3bc"] > loop_rate}]


if __name__ == "__main__":
    main()
