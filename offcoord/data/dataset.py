"""The dataset object users train on: columnar, memory-mapped, per-agent views computed lazily."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np

from offcoord.data.cards import Card
from offcoord.envs.base import JointLayout, ObservationView
from offcoord.fileio import json_bytes, sha256_bytes

# The store's column names (besides extra_<name>) and the attribute each is read through.
_COLUMNS = {"states": "states", "next_states": "next_states", "actions": "joint_actions", "rewards": "rewards",
            "terminations": "terminations", "truncations": "truncations", "episode_starts": "episode_starts"}


class _LazyAgentArrays(Mapping):
    """``{agent: array}`` whose arrays are computed on first access and then kept."""

    def __init__(self, agents: tuple[str, ...], compute):
        self._agents = agents
        self._compute = compute
        self._cache: dict[str, np.ndarray] | None = None

    def __getitem__(self, agent: str) -> np.ndarray:
        if agent not in self._agents:
            raise KeyError(f"unknown agent {agent!r}; agents are {list(self._agents)}")
        if self._cache is None:
            self._cache = self._compute()
        return self._cache[agent]

    def __iter__(self):
        return iter(self._agents)

    def __len__(self) -> int:
        return len(self._agents)

    def __repr__(self) -> str:
        return f"<per-agent arrays for {list(self._agents)}>"


@dataclass(frozen=True)
class Batch:
    """A batch of transitions: per-agent views plus the joint quantities centralized critics need."""

    observations: dict[str, np.ndarray]
    actions: dict[str, np.ndarray]
    next_observations: dict[str, np.ndarray]
    rewards: np.ndarray
    terminations: np.ndarray
    truncations: np.ndarray
    states: np.ndarray
    next_states: np.ndarray
    joint_actions: np.ndarray
    indices: np.ndarray


@dataclass(frozen=True)
class Episode:
    """One episode: slices (views, no copy) of the dataset's columns plus per-agent observations."""

    index: int
    start: int
    states: np.ndarray
    next_states: np.ndarray
    joint_actions: np.ndarray
    rewards: np.ndarray
    terminations: np.ndarray
    truncations: np.ndarray
    observations: dict[str, np.ndarray]
    next_observations: dict[str, np.ndarray]
    actions: dict[str, np.ndarray]
    extras: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.rewards)

    @property
    def total_reward(self) -> float:
        return float(np.sum(self.rewards, dtype=np.float64))


class Dataset:
    """An offline multi-agent dataset: one observability view of one stored copy.

    Joint columns (memory-mapped, read-only): ``states``, ``next_states``, ``joint_actions``,
    ``rewards``, ``terminations``, ``truncations``, ``episode_starts``, ``extras[name]``.
    Per-agent columns (``{agent: array}``, computed on first access through the environment's
    own view function): ``observations``, ``next_observations``; ``actions`` (the agent's columns
    of the joint action). ``sample`` computes views only for the sampled rows.

    ``termination_rule`` is the environment's own (see ``OffcoordParallelEnv.termination_rule``):
    a batch of global states -> which of them end an episode, or None where the task's termination
    is not a function of the state. A world model applies it to the states it predicts.
    """

    def __init__(
        self,
        id: str,
        env_id: str,
        card: Card,
        columns: Mapping[str, np.ndarray],
        layout: JointLayout,
        view: ObservationView,
        manifest: Mapping[str, Any],
        path: Path | None = None,
        termination_rule: Callable[[np.ndarray], np.ndarray] | None = None,
    ):
        self.id = id
        self.env_id = env_id
        self.card = card
        self.layout = layout
        self.view = view
        self.termination_rule = termination_rule
        self.manifest = dict(manifest)
        self.path = path
        self.agents = tuple(layout.agents)
        self.states = columns["states"]
        self.next_states = columns["next_states"]
        self.joint_actions = columns["actions"]
        self.rewards = columns["rewards"]
        self.terminations = columns["terminations"]
        self.truncations = columns["truncations"]
        self.episode_starts = columns["episode_starts"]
        self.extras = {k[len("extra_"):]: v for k, v in columns.items() if k.startswith("extra_")}
        self.observations = _LazyAgentArrays(self.agents, lambda: view(self.states))
        self.next_observations = _LazyAgentArrays(self.agents, lambda: view(self.next_states))
        self.actions = _LazyAgentArrays(self.agents, lambda: layout.split(self.joint_actions))

    def __len__(self) -> int:
        return len(self.rewards)

    def __repr__(self) -> str:
        return f"<offcoord.Dataset {self.id!r}: {len(self)} transitions, {self.num_episodes} episodes, agents {list(self.agents)}>"

    @property
    def num_episodes(self) -> int:
        return len(self.episode_starts)

    @property
    def episode_ends(self) -> np.ndarray:
        """Exclusive end index of each episode."""
        return np.append(np.asarray(self.episode_starts[1:]), len(self))

    @property
    def statistics(self) -> dict[str, Any]:
        return dict(self.manifest.get("statistics", {}))

    def column(self, name: str) -> np.ndarray:
        """A stored column by its name in the store (``states``, ``actions``, ``extra_<name>``, ...)."""
        if name in _COLUMNS:
            return getattr(self, _COLUMNS[name])
        if name.startswith("extra_") and name[len("extra_"):] in self.extras:
            return self.extras[name[len("extra_"):]]
        raise KeyError(f"{self.id} has no column {name!r}; it has {list(self.column_names)}")

    @property
    def column_names(self) -> tuple[str, ...]:
        return (*_COLUMNS, *(f"extra_{k}" for k in sorted(self.extras)))

    def digest(self, columns: "tuple[str, ...] | list[str] | None" = None) -> str:
        """A sha256 that changes whenever the data changes: of the named columns (default: all), in
        that order.

        For a stored dataset it is computed from the column files' sha256 in the store's manifest
        (nothing is read). A dataset built in memory without a manifest is hashed from its arrays'
        bytes instead, which gives another value for the same data: compare digests of the same kind.
        The card's hash does not do this job: a store rebuilt by another generator, or from retrained
        behavior weights, has the same card. Runs and world-model fits record this digest to tell.
        """
        names = tuple(columns) if columns is not None else tuple(sorted(self.column_names))
        recorded = self.manifest.get("columns", {})
        if all("sha256" in recorded.get(name, {}) for name in names):
            return sha256_bytes(json_bytes([recorded[name]["sha256"] for name in names]))
        return sha256_bytes(b"".join(np.ascontiguousarray(self.column(name)).tobytes() for name in names))

    def observation_space(self, agent: str):
        return self.view.observation_spaces[agent]

    def episode_returns(self) -> np.ndarray:
        from offcoord.data.generate import episode_returns

        return episode_returns(self.rewards, self.episode_starts)

    def sample(self, batch_size: int, rng: np.random.Generator | int | None = None) -> Batch:
        """``batch_size`` transitions drawn uniformly with replacement.

        ``rng`` is a ``numpy.random.Generator`` (or a seed); the same generator state gives the same batch.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if not isinstance(rng, np.random.Generator):
            rng = np.random.default_rng(rng)
        idx = np.sort(rng.integers(0, len(self), size=int(batch_size)))  # sorted reads are kinder to the page cache
        return self.batch(idx)

    def batch(self, indices: np.ndarray) -> Batch:
        """The transitions at ``indices`` as a :class:`Batch` (copies; the memory map is not modified)."""
        idx = np.asarray(indices)
        if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
            raise ValueError(f"indices must be a 1-D integer array, got {idx.dtype} with shape {idx.shape}")
        if len(idx) and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"indices must lie in [0, {len(self)}); got [{idx.min()}, {idx.max()}]")
        states = np.asarray(self.states[idx])
        next_states = np.asarray(self.next_states[idx])
        joint = np.asarray(self.joint_actions[idx])
        return Batch(
            observations=self.view(states),
            actions=self.layout.split(joint),
            next_observations=self.view(next_states),
            rewards=np.asarray(self.rewards[idx]),
            terminations=np.asarray(self.terminations[idx]),
            truncations=np.asarray(self.truncations[idx]),
            states=states,
            next_states=next_states,
            joint_actions=joint,
            indices=idx,
        )

    def episodes(self) -> Iterator[Episode]:
        """Iterate over episodes in order (slices of the memory map; per-agent views per episode)."""
        ends = self.episode_ends
        for i, (start, end) in enumerate(zip(np.asarray(self.episode_starts), ends)):
            start, end = int(start), int(end)
            joint = self.joint_actions[start:end]
            yield Episode(
                index=i,
                start=start,
                states=self.states[start:end],
                next_states=self.next_states[start:end],
                joint_actions=joint,
                rewards=self.rewards[start:end],
                terminations=self.terminations[start:end],
                truncations=self.truncations[start:end],
                observations=self.view(self.states[start:end]),
                next_observations=self.view(self.next_states[start:end]),
                actions=self.layout.split(joint),
                extras={k: v[start:end] for k, v in self.extras.items()},
            )
