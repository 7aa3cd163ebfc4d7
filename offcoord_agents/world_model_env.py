"""A learned world model as a PettingZoo ``ParallelEnv``: synthetic multi-agent rollouts with the
paper's safeguards, so any online MARL algorithm can train on an offline dataset.

- ``reset`` samples start states uniformly from the dataset;
- each step, a random elite predicts the next state, reward and termination, sampled from its
  Gaussian; predictions are clipped to the dataset's per-dimension bounding box;
- the reward is penalized ``r - lambda_r * eps_r - lambda_g * eps_g`` (see
  :func:`offcoord_agents.world_model.disagreement`, computed on the unclipped elite means; by
  default ``eps_g`` is measured in the model's normalized output units, see ``RolloutConfig``);
- a rollout is truncated at ``horizon`` steps **or** as soon as ``eps_g`` exceeds
  ``disagreement_threshold`` (the research code clamped eps before this test, so it never fired);
  with ``disagreement_cut="halt"`` that cut is a termination with a pessimistic reward instead;
- agents observe the predicted state through the task's own view (``dataset.view``), the same
  function the environment and the dataset use.

Batched: ``reset_batch``/``step_batch`` step ``num_envs`` rollouts at once (numpy in and out,
``{agent: (N, ...)}``); ended rollouts stay frozen until the next ``reset_batch``. The PettingZoo
methods ``reset``/``step`` are the single-rollout view of the same machinery.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import offcoord
import torch
from gymnasium import spaces
from pettingzoo import ParallelEnv

from offcoord_agents.data import TaskSpec, joint_action_matrix
from offcoord_agents.world_model import WorldModel, disagreement, fit_or_load, world_model_config


@dataclass
class RolloutConfig:
    horizon: int = 10  # rollout length k (1 for the one-step coordination game)
    disagreement_threshold: float = 2.0  # truncate when eps_g exceeds this
    lambda_r: float = 0.05  # reward-variance penalty weight
    lambda_g: float = 0.1  # joint-disagreement penalty weight
    sample: bool = True  # sample from the elite's Gaussian (False: use its mean)
    # "normalized": eps_g over [state change, reward] in the model's output units (each divided by
    # its standard deviation in the data), so one threshold means the same on every task.
    # "raw": the paper's, in the state's own units, where a fast body's velocities dominate.
    disagreement_units: str = "normalized"
    # "task": the task's own rule on the predicted state where it has one (the ant falls or jumps
    # out of its healthy height), else the learned head; "learned": the head, p > 0.5, always. The
    # head learns from rare events (290 terminations in ant-full-replay's 1M transitions) and
    # missed the jumps a policy learned to make; the bounding box then clipped them away. Elsewhere
    # the two agree: the coordination game has no such rule, and the reacher never terminates
    # (its fitted heads never pass p = 0.002 on its data), so runs made before this option match.
    termination: str = "task"
    # What a disagreement cut does. "truncate" (the paper's): the rollout stops and the learner
    # bootstraps from its own value estimate there, so leaving the data costs only the penalty.
    # "halt": MOReL's absorbing HALT state (Kidambi et al., 2020): the rollout ends as a
    # termination whose reward is ``halt_reward``, by default the data's lowest reward received for
    # ever, r_min / (1 - gamma): a lower bound on any return, so leaving the data is never worth it.
    disagreement_cut: str = "truncate"
    halt_reward: float | None = None
    gamma: float = 0.99  # the discount of the default halt_reward

    def __post_init__(self):
        if self.disagreement_units not in ("normalized", "raw"):
            raise ValueError(f"disagreement_units must be 'normalized' or 'raw', got {self.disagreement_units!r}")
        if self.disagreement_cut not in ("truncate", "halt"):
            raise ValueError(f"disagreement_cut must be 'truncate' or 'halt', got {self.disagreement_cut!r}")
        if not 0 <= self.gamma < 1:
            raise ValueError(f"gamma must be in [0, 1), got {self.gamma}")
        if self.termination not in ("task", "learned"):
            raise ValueError(f"termination must be 'task' or 'learned', got {self.termination!r}")


@dataclass
class ModelBasedOptions:
    """Config fields of every model-based algorithm (``momappo``, ``maiql-ft``): the ensemble, fit by
    :func:`offcoord_agents.world_model.fit_or_load`, and its synthetic rollouts. Mixed into their
    config dataclasses, so the defaults live here once."""

    # world model (offcoord_agents.world_model.WorldModelConfig)
    wm_members: int = 7
    wm_elites: int = 5
    wm_hidden: tuple[int, ...] = (200, 200, 200, 200)
    wm_max_steps: int = 50_000
    wm_eval_every: int = 500
    wm_patience: int = 5
    # synthetic rollouts (RolloutConfig)
    horizon: int = 10  # rollout length k (1 for the one-step coordination game)
    disagreement_threshold: float = 2.0
    lambda_r: float = 0.05
    lambda_g: float = 0.1
    disagreement_units: str = "normalized"  # or "raw" (the paper's); see RolloutConfig
    termination: str = "task"  # or "learned"; see RolloutConfig
    disagreement_cut: str = "truncate"  # or "halt" (MOReL's); see RolloutConfig
    halt_reward: float | None = None  # None: the data's lowest reward / (1 - gamma); see RolloutConfig

    def rollout_config(self, **kwargs) -> RolloutConfig:
        return RolloutConfig(horizon=self.horizon, disagreement_threshold=self.disagreement_threshold,
                             lambda_r=self.lambda_r, lambda_g=self.lambda_g,
                             disagreement_units=self.disagreement_units, termination=self.termination,
                             disagreement_cut=self.disagreement_cut, halt_reward=self.halt_reward,
                             gamma=getattr(self, "gamma", RolloutConfig.gamma), **kwargs)

    def world_model_env(self, ds: "offcoord.Dataset", workdir: Path | None, num_envs: int) -> "WorldModelEnv":
        """The run's world model, wrapped for ``num_envs`` batched rollouts. The model is fit on ``ds``,
        or loaded from ``workdir/world_model.pt`` where an interrupted session of this run saved it;
        both are seeded from torch's initial seed, so a run is reproducible from its seed alone."""
        seed = int(torch.initial_seed()) % 2**31
        path = Path(workdir) / "world_model.pt" if workdir else None
        model = fit_or_load(ds, world_model_config(self), path, seed=seed)
        return WorldModelEnv(model, ds, self.rollout_config(), num_envs=num_envs, seed=seed)


def draw_start_rows(dataset: "offcoord.Dataset", n: int, generator: torch.Generator) -> np.ndarray:
    """``n`` dataset rows drawn uniformly with replacement: the start states of ``n`` rollouts
    (sorted; the rollouts' order does not matter)."""
    return np.sort(torch.randint(len(dataset), (n,), generator=generator).numpy())


class WorldModelEnv(ParallelEnv):
    metadata = {"name": "offcoord_world_model_v0", "render_modes": [], "is_parallelizable": True}

    def __init__(self, model: WorldModel, dataset: "offcoord.Dataset", config: RolloutConfig | None = None,
                 num_envs: int = 1, seed: int | None = None):
        self.model, self.dataset, self.config = model, dataset, config or RolloutConfig()
        self.spec = TaskSpec.from_dataset(dataset)
        self.possible_agents = list(dataset.agents)
        self.agents: list[str] = []
        self.observation_spaces = {a: dataset.observation_space(a) for a in self.possible_agents}
        env = offcoord.make(dataset.env_id)
        self.action_spaces = {a: env.action_space(a) for a in self.possible_agents}
        env.close()
        self.state_space = spaces.Box(-np.inf, np.inf, (self.spec.state_dim,), np.float32)
        self.termination_rule = dataset.termination_rule if self.config.termination == "task" else None
        halt = self.config.halt_reward
        self.halt_reward = float(model.reward_low[0]) / (1 - self.config.gamma) if halt is None else float(halt)
        self.num_envs = num_envs
        self.generator = torch.Generator().manual_seed(seed if seed is not None else 0)
        self._states = torch.zeros(num_envs, self.spec.state_dim)
        self._active = torch.zeros(num_envs, dtype=torch.bool)
        self._t = 0
        self.start_indices: np.ndarray | None = None

    def observation_space(self, agent):
        return self.observation_spaces[agent]

    def action_space(self, agent):
        return self.action_spaces[agent]

    # ------------------------------------------------------------------ batched API
    def observe(self, states: torch.Tensor) -> dict[str, np.ndarray]:
        return self.dataset.view(states.numpy())

    def reset_batch(self, seed: int | None = None, start_states: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Start ``num_envs`` rollouts from dataset states drawn uniformly (or from ``start_states``)."""
        if seed is not None:
            self.generator.manual_seed(seed)
        self.start_indices = None  # dataset rows the rollouts start from (None for given start_states)
        if start_states is None:
            self.start_indices = draw_start_rows(self.dataset, self.num_envs, self.generator)
            start_states = self.dataset.states[self.start_indices]
        self._states = torch.as_tensor(np.asarray(start_states, dtype=np.float32)).clone()
        self.num_envs = len(self._states)
        self._active = torch.ones(self.num_envs, dtype=torch.bool)
        self._t = 0
        return self.observe(self._states)

    @torch.no_grad()
    def step_batch(self, actions: dict[str, np.ndarray]):
        """Step every active rollout; return ``(obs, rewards, terminations, truncations, infos)``.

        ``rewards`` are penalized; ``infos`` holds the raw reward, ``eps_g``, ``eps_r`` and which
        rollouts were cut by disagreement. Inactive rollouts get reward 0 and keep their state.
        """
        cfg = self.config
        joint = torch.from_numpy(joint_action_matrix(self.spec, {a: np.asarray(actions[a]) for a in self.possible_agents}))
        model = self.model
        ns_raw, r_raw, std, done_p = model.predict(self._states, joint, clip=False, elites_only=True)
        eps_g, eps_r = disagreement(ns_raw, r_raw, model.out_std if cfg.disagreement_units == "normalized" else None)
        n = self.num_envs
        pick = torch.randint(len(model.elite_idx), (n,), generator=self.generator)
        rows = torch.arange(n)
        next_state, reward = ns_raw[pick, rows], r_raw[pick, rows]
        if cfg.sample:
            noise = torch.randn(n, self.spec.state_dim + 1, generator=self.generator) * std[pick, rows]
            next_state, reward = next_state + noise[:, :-1], reward + noise[:, -1]
        if self.termination_rule is not None:  # on the state as predicted: the bounding box would hide a fall
            terminated = torch.from_numpy(np.asarray(self.termination_rule(next_state.numpy()), dtype=bool))
        else:
            terminated = done_p[pick, rows] > 0.5
        next_state, reward = model.clip(next_state, reward)
        self._t += 1
        cut = eps_g > cfg.disagreement_threshold
        penalized = reward - cfg.lambda_r * eps_r - cfg.lambda_g * eps_g
        if cfg.disagreement_cut == "halt":
            terminated = terminated | cut
            penalized = torch.where(cut, torch.tensor(self.halt_reward), penalized)
        truncated = ~terminated & (cut | (self._t >= cfg.horizon))
        active = self._active
        penalized = torch.where(active, penalized, torch.zeros(()))
        self._states = torch.where(active[:, None], next_state, self._states)
        terminated, truncated = terminated & active, truncated & active
        self._active = active & ~terminated & ~truncated
        infos = {"raw_reward": reward.numpy(), "eps_g": eps_g.numpy(), "eps_r": eps_r.numpy(),
                 "disagreement_cut": (cut & active).numpy(), "active_before": active.numpy()}
        return self.observe(self._states), penalized.numpy(), terminated.numpy(), truncated.numpy(), infos

    def state_batch(self) -> np.ndarray:
        return self._states.numpy().copy()

    # ------------------------------------------------------------------ PettingZoo API (one rollout)
    def reset(self, seed=None, options=None):
        self.num_envs = 1
        obs = self.reset_batch(seed=seed)
        self.agents = list(self.possible_agents)
        return {a: obs[a][0] for a in self.agents}, {a: {} for a in self.agents}

    def step(self, actions):
        if not self.agents:
            raise RuntimeError("the rollout is over; call reset() first")
        batch = {a: np.asarray(actions[a])[None] for a in self.possible_agents}
        obs, r, term, trunc, info = self.step_batch(batch)
        agents = self.agents
        if term[0] or trunc[0]:
            self.agents = []
        one = {k: v[0].item() for k, v in info.items()}
        return ({a: obs[a][0] for a in agents}, {a: float(r[0]) for a in agents}, {a: bool(term[0]) for a in agents},
                {a: bool(trunc[0]) for a in agents}, {a: dict(one) for a in agents})

    def state(self) -> np.ndarray:
        return self._states[0].numpy().copy()
