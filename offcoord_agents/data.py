"""From an ``offcoord`` dataset to agent-stacked torch batches (public API only).

A batch is agent-major so it feeds :mod:`offcoord_agents.nets` directly: ``obs`` is
``(agents, batch, max_obs_dim)`` with each agent's observation zero-padded. Each batch is the only
copy made of the memory-mapped data: ``Dataset.sample`` reads just the sampled rows and computes
per-agent views just for them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import offcoord
import torch
from gymnasium import spaces


@dataclass(frozen=True)
class TaskSpec:
    """Shapes of a task as the agents see it, read from a dataset and its environment."""

    dataset_id: str
    env_id: str
    agents: tuple[str, ...]
    obs_dims: tuple[int, ...]
    act_dims: tuple[int, ...]  # continuous: action size; discrete: number of choices
    discrete: bool
    state_dim: int

    @property
    def n_agents(self) -> int:
        return len(self.agents)

    @property
    def max_obs_dim(self) -> int:
        return max(self.obs_dims)

    @property
    def max_act_dim(self) -> int:
        return max(self.act_dims)

    @property
    def joint_act_dim(self) -> int:
        """Width of the concatenated joint action (one-hot per agent for discrete tasks)."""
        return sum(self.act_dims)

    @classmethod
    def from_dataset(cls, ds: "offcoord.Dataset") -> "TaskSpec":
        env = offcoord.make(ds.env_id)
        action_spaces = [env.action_space(a) for a in ds.agents]
        env.close()
        discrete = isinstance(action_spaces[0], spaces.Discrete)
        for space in action_spaces:
            if discrete and not isinstance(space, spaces.Discrete):
                raise ValueError("mixed discrete and continuous agents are not supported")
            if not discrete and not (isinstance(space, spaces.Box) and np.all(space.low == -1) and np.all(space.high == 1)):
                raise ValueError(f"continuous actions must be Box(-1, 1); got {space}")
        return cls(
            dataset_id=ds.id,
            env_id=ds.env_id,
            agents=tuple(ds.agents),
            obs_dims=tuple(int(ds.observation_space(a).shape[0]) for a in ds.agents),
            act_dims=tuple(int(s.n) if discrete else int(s.shape[0]) for s in action_spaces),
            discrete=discrete,
            state_dim=int(ds.states.shape[1]),
        )

    def obs_mask(self) -> torch.Tensor:
        """``(agents, 1, max_obs_dim)``: 1 where an agent's observation has a real entry."""
        return _mask(self.obs_dims, self.max_obs_dim)

    def act_mask(self) -> torch.Tensor:
        """``(agents, 1, max_act_dim)``: 1 on each agent's real action dims (or choices)."""
        return _mask(self.act_dims, self.max_act_dim)

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.__dict__.items()}

    @classmethod
    def from_dict(cls, d: dict) -> "TaskSpec":
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def _mask(dims, width) -> torch.Tensor:
    mask = torch.zeros(len(dims), 1, width)
    for i, d in enumerate(dims):
        mask[i, :, :d] = 1.0
    return mask


@dataclass(frozen=True)
class TorchBatch:
    obs: torch.Tensor  # (A, B, max_obs) zero-padded
    next_obs: torch.Tensor  # (A, B, max_obs)
    actions: torch.Tensor  # (A, B, max_act) float, or (A, B) long for discrete
    joint_actions: torch.Tensor  # (B, joint_act_dim): concatenated (one-hot for discrete) for centralized critics
    rewards: torch.Tensor  # (B,)
    dones: torch.Tensor  # (B,) 1.0 where the episode terminated (no bootstrap); truncation still bootstraps
    states: torch.Tensor  # (B, state_dim)
    next_states: torch.Tensor  # (B, state_dim)


def stack_agents(per_agent: dict[str, np.ndarray], agents, width: int) -> np.ndarray:
    """``{agent: (B, d_i)}`` -> ``(A, B, width)`` float32, zero-padded."""
    first = per_agent[agents[0]]
    out = np.zeros((len(agents), first.shape[0], width), dtype=np.float32)
    for i, a in enumerate(agents):
        x = per_agent[a]
        out[i, :, : x.shape[-1]] = x
    return out


def unstack_actions(spec: TaskSpec, stacked) -> dict[str, np.ndarray]:
    """Inverse of :func:`stack_agents` for actions: ``(A, B, max_act_dim)`` (a NumPy array or a CPU
    tensor) -> ``{agent: (B, d_i)}``, the padding dropped; discrete agents' rows are returned as they are."""
    stacked = np.asarray(stacked)
    if stacked.shape[0] != spec.n_agents:
        raise ValueError(f"expected actions stacked over the {spec.n_agents} agents of {spec.env_id}, got shape {stacked.shape}")
    if spec.discrete:
        return {a: stacked[i] for i, a in enumerate(spec.agents)}
    return {a: stacked[i, :, :d] for i, (a, d) in enumerate(zip(spec.agents, spec.act_dims))}


def joint_action_matrix(spec: TaskSpec, actions: dict[str, np.ndarray]) -> np.ndarray:
    """Concatenate per-agent actions in agent order (one-hot for discrete agents): ``(B, joint_act_dim)``."""
    parts = []
    for a, d in zip(spec.agents, spec.act_dims):
        x = np.asarray(actions[a])
        parts.append(np.eye(d, dtype=np.float32)[x] if spec.discrete else x.astype(np.float32).reshape(len(x), -1))
    return np.concatenate(parts, axis=1)


def split_joint_action(spec: TaskSpec, joint: np.ndarray) -> dict[str, np.ndarray]:
    """Inverse of :func:`joint_action_matrix` for continuous agents: ``(..., joint_act_dim)`` -> ``{agent: (..., d_i)}``."""
    joint = np.asarray(joint)
    if spec.discrete or joint.shape[-1] != spec.joint_act_dim:
        raise ValueError(f"expected continuous joint actions of width {spec.joint_act_dim} for {spec.env_id}, "
                         f"got shape {joint.shape}")
    offsets = np.cumsum((0,) + tuple(spec.act_dims))
    return {a: joint[..., offsets[i] : offsets[i + 1]] for i, a in enumerate(spec.agents)}


def to_torch_batch(spec: TaskSpec, batch: "offcoord.Batch", device: torch.device | str = "cpu") -> TorchBatch:
    agents = spec.agents
    if spec.discrete:
        actions = torch.from_numpy(np.stack([np.asarray(batch.actions[a], dtype=np.int64) for a in agents]))
    else:
        actions = torch.from_numpy(stack_agents(batch.actions, agents, spec.max_act_dim))
    t = lambda x: torch.as_tensor(np.asarray(x, dtype=np.float32), device=device)  # noqa: E731
    return TorchBatch(
        obs=torch.from_numpy(stack_agents(batch.observations, agents, spec.max_obs_dim)).to(device),
        next_obs=torch.from_numpy(stack_agents(batch.next_observations, agents, spec.max_obs_dim)).to(device),
        actions=actions.to(device),
        joint_actions=t(joint_action_matrix(spec, batch.actions)),
        rewards=t(batch.rewards),
        dones=t(batch.terminations),
        states=t(batch.states),
        next_states=t(batch.next_states),
    )


class BatchSampler:
    """Uniform minibatches from a dataset, reproducible from a numpy ``Generator`` (saved in checkpoints)."""

    def __init__(self, ds: "offcoord.Dataset", spec: TaskSpec, batch_size: int, seed: int, device="cpu"):
        self.ds, self.spec, self.batch_size, self.device = ds, spec, batch_size, device
        self.rng = np.random.default_rng(seed)

    def sample(self) -> TorchBatch:
        return to_torch_batch(self.spec, self.ds.sample(self.batch_size, self.rng), self.device)

    def state_dict(self) -> dict:
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]


def _stats_rows(ds: "offcoord.Dataset", max_rows: int) -> np.ndarray:
    """A fixed sample of row indices (so reruns agree) for dataset statistics."""
    n = len(ds)
    return np.arange(n) if n <= max_rows else np.sort(np.random.default_rng(0).choice(n, max_rows, replace=False))


def state_stats(ds: "offcoord.Dataset", max_rows: int = 200_000) -> tuple[torch.Tensor, torch.Tensor]:
    """Global-state mean and std ``(state_dim,)`` (constant entries get std 1), for centralized critics."""
    states = np.asarray(ds.states[_stats_rows(ds, max_rows)], dtype=np.float64)
    mean, std = states.mean(0), states.std(0)
    std[std < 1e-6] = 1.0
    return torch.from_numpy(mean.astype(np.float32)), torch.from_numpy(std.astype(np.float32))


def observation_stats(ds: "offcoord.Dataset", spec: TaskSpec, max_rows: int = 200_000) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-agent observation mean and std ``(A, 1, max_obs_dim)`` from up to ``max_rows`` rows (fixed
    sample, so reruns agree); padding gets mean 0 and std 1, constant entries std 1."""
    obs = stack_agents(ds.batch(_stats_rows(ds, max_rows)).observations, spec.agents, spec.max_obs_dim)
    mean, std = obs.mean(1, keepdims=True), obs.std(1, keepdims=True)
    std[std < 1e-6] = 1.0
    mask = spec.obs_mask().numpy() > 0
    mean, std = np.where(mask, mean, 0.0), np.where(mask, std, 1.0)
    return torch.from_numpy(mean.astype(np.float32)), torch.from_numpy(std.astype(np.float32))


def with_action_columns(mean: torch.Tensor, std: torch.Tensor, act_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Observation statistics for inputs laid out as ``[observation, action]``: ``act_dim`` action
    columns appended with mean 0 and std 1 (actions already lie in [-1, 1])."""
    shape = (*mean.shape[:-1], act_dim)
    return torch.cat([mean, torch.zeros(shape)], -1), torch.cat([std, torch.ones(shape)], -1)
