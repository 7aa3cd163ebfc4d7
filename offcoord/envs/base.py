"""What every offcoord environment shares: the joint layout, observation views, action checks.

A task is stored once as a *joint* system (global state, joint action, team reward). Two small
objects describe how agents see it, and both the environment and the dataset use them:

- :class:`JointLayout`: which columns of the joint action each agent controls.
- :class:`ObservationView`: one observability setting, a function from a batch of global
  states to each agent's observation batch, plus the observation spaces.

Because an environment computes its observations by calling its view on the current state,
an environment and a dataset built with the same view can never disagree about what an agent sees.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv

from offcoord.errors import EpisodeOverError

AgentID = str


@dataclass(frozen=True)
class JointLayout:
    """How a joint action is split among agents.

    Attributes:
        agents: agent names in order.
        action_columns: for each agent, the columns of the joint action vector it controls.
            Continuous agents get a float vector of those columns; discrete agents
            (``discrete=True``) control exactly one integer column each.
        joint_action_dim: length of the joint action vector the simulator receives.
        discrete: whether actions are integers (``Discrete``) rather than floats (``Box``).
    """

    agents: tuple[AgentID, ...]
    action_columns: Mapping[AgentID, tuple[int, ...]]
    joint_action_dim: int
    discrete: bool = False

    def __post_init__(self):
        cols = sorted(c for a in self.agents for c in self.action_columns[a])
        if cols != list(range(self.joint_action_dim)):
            raise ValueError(f"agents' action columns {cols} must cover 0..{self.joint_action_dim - 1} exactly once")
        if self.discrete and any(len(self.action_columns[a]) != 1 for a in self.agents):
            raise ValueError("a discrete agent controls exactly one column")
        order = np.array([c for a in self.agents for c in self.action_columns[a]])  # agent-major -> joint column
        object.__setattr__(self, "_inverse_order", np.argsort(order))
        object.__setattr__(self, "_step_shapes", tuple((len(self.action_columns[a]),) for a in self.agents))

    def split(self, joint_actions: np.ndarray) -> dict[AgentID, np.ndarray]:
        """Joint actions ``(..., joint_action_dim)`` -> per-agent actions (a fancy-indexed copy)."""
        joint_actions = np.asarray(joint_actions)
        if self.discrete:
            return {a: joint_actions[..., self.action_columns[a][0]] for a in self.agents}
        return {a: joint_actions[..., list(self.action_columns[a])] for a in self.agents}

    def join(self, actions: Mapping[AgentID, np.ndarray], dtype=None) -> np.ndarray:
        """Per-agent actions (each with the same leading batch shape) -> joint action array."""
        if not self.discrete and dtype is None and all(
            np.shape(actions[a]) == shape for a, shape in zip(self.agents, self._step_shapes)
        ):  # one step's actions (the hot path of env.step): one concatenate, one permutation
            return np.concatenate([actions[a] for a in self.agents], dtype=np.float32)[self._inverse_order]
        first = np.asarray(actions[self.agents[0]])
        batch = first.shape if self.discrete else first.shape[:-1]
        dtype = dtype or (np.int64 if self.discrete else np.float32)
        out = np.empty(batch + (self.joint_action_dim,), dtype=dtype)
        for a in self.agents:
            cols = list(self.action_columns[a])
            out[..., cols] = np.asarray(actions[a])[..., None] if self.discrete else actions[a]
        return out


@dataclass(frozen=True)
class ObservationView:
    """One observability setting of a task.

    Attributes:
        name: the setting's name (``"fo"``, ``"po"``, ``"independent"``, ...).
        observe: ``states (N, state_dim) -> {agent: observations (N, obs_dim_agent)}``; pure,
            vectorized, float32. The environment calls it with ``N = 1``.
        observation_spaces: the per-agent ``Box`` spaces (built once; each env instance copies them).
        description: per agent, the names of the observation entries (used in docs and tests).
        columns: per agent, the state columns it sees, when the view is a column selection
            (every view of the built-in tasks is; see :meth:`of_columns`). Lets the environment
            observe one state without building a batch.
    """

    name: str
    observe: Callable[[np.ndarray], dict[AgentID, np.ndarray]]
    observation_spaces: Mapping[AgentID, spaces.Space]
    description: Mapping[AgentID, tuple[str, ...]] = field(default_factory=dict)
    columns: Mapping[AgentID, np.ndarray] | None = None

    @classmethod
    def of_columns(
        cls,
        name: str,
        columns: Mapping[AgentID, tuple[int, ...]],
        state_names: tuple[str, ...],
        observation_spaces: Mapping[AgentID, spaces.Space] | None = None,
    ) -> "ObservationView":
        """A view in which each agent sees some columns of the state, in the order given.

        Observation spaces default to unbounded ``Box`` es of the right length; the description
        names each entry after the state's.
        """
        index = {a: np.asarray(cols, dtype=np.intp) for a, cols in columns.items()}

        def observe(states: np.ndarray) -> dict[AgentID, np.ndarray]:
            return {a: states[:, cols] for a, cols in index.items()}  # fancy indexing copies

        return cls(
            name=name,
            observe=observe,
            observation_spaces=observation_spaces or {a: box(len(cols)) for a, cols in index.items()},
            description={a: tuple(state_names[i] for i in cols) for a, cols in index.items()},
            columns=index,
        )

    def __post_init__(self):
        if self.columns is not None:  # one gather per step, then a slice per agent (see observe_one)
            sizes = np.cumsum([0] + [len(c) for c in self.columns.values()])
            gather = np.concatenate(list(self.columns.values())).astype(np.intp)
            slices = {a: slice(int(lo), int(hi)) for a, lo, hi in zip(self.columns, sizes[:-1], sizes[1:])}
            object.__setattr__(self, "_gather", (gather, slices))

    def __call__(self, states: np.ndarray) -> dict[AgentID, np.ndarray]:
        states = np.asarray(states, dtype=np.float32)
        if states.ndim != 2:
            raise ValueError(f"a view takes a batch of states (N, state_dim); got shape {states.shape}")
        return self.observe(states)

    def observe_one(self, state: np.ndarray) -> dict[AgentID, np.ndarray]:
        """One state ``(state_dim,)`` -> each agent's observation (the environment's per-step path)."""
        state = np.asarray(state, dtype=np.float32)
        if self.columns is not None:  # the same selection as ``observe``, without a batch of one
            gather, slices = self._gather
            seen = state[gather]  # a fresh array: the agents' slices of it are theirs alone
            return {a: seen[sl] for a, sl in slices.items()}
        return {a: obs[0] for a, obs in self(state[None]).items()}


def never_terminates(states: np.ndarray) -> np.ndarray:
    """The termination rule of a task whose episodes only end by time limit."""
    return np.zeros(np.shape(states)[:-1], dtype=bool)


def box(n: int, low: float = -np.inf, high: float = np.inf) -> spaces.Box:
    return spaces.Box(low=low, high=high, shape=(n,), dtype=np.float32)


class OffcoordParallelEnv(ParallelEnv):
    """Base class for offcoord's PettingZoo ``ParallelEnv`` environments.

    Subclasses set ``layout``, ``view``, ``state_space`` and ``action_spaces`` in ``__init__``
    and implement ``_reset_joint(seed, options) -> None``, ``_step_joint(joint_action) ->
    (team_reward, terminated, truncated, info)`` and ``state()``. This class turns those into
    the PettingZoo API: per-agent dicts, action validation and the end-of-episode guard.
    """

    metadata: dict = {"render_modes": [], "is_parallelizable": True}
    layout: JointLayout
    view: ObservationView
    # The task's own termination rule where it is a function of the state reached: a batch of
    # global states (N, S) -> bool (N,), True where the episode terminates on reaching that state.
    # None where it is not (the coordination game ends after its rounds). World models use it on
    # their predicted states, as the dataset's views are used on them.
    termination_rule: Callable[[np.ndarray], np.ndarray] | None = None

    def __init__(self, render_mode: str | None = None):
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(
                f"render_mode={render_mode!r} is not supported; choose one of {self.metadata['render_modes']} or None"
            )
        self.render_mode = render_mode
        self.possible_agents = list(self.layout.agents)
        self.agents: list[AgentID] = []
        # copies: a space carries its own sampling RNG, which instances must not share
        self.observation_spaces = {a: copy.deepcopy(s) for a, s in self.view.observation_spaces.items()}
        self._episode_over = True
        self.last_joint_action: np.ndarray | None = None  # set by step(): the joint action sent to the simulator

    # PettingZoo asks that these return the same object on every call.
    def observation_space(self, agent: AgentID) -> spaces.Space:
        return self.observation_spaces[agent]

    def action_space(self, agent: AgentID) -> spaces.Space:
        return self.action_spaces[agent]

    def observe_state(self, state: np.ndarray) -> dict[AgentID, np.ndarray]:
        """Each agent's observation of one global state, through this environment's view."""
        return self.view.observe_one(state)

    def reset(self, seed: int | None = None, options: dict | None = None):
        self._reset_joint(seed, options)
        self.agents = list(self.possible_agents)
        self._episode_over = False
        observations = self.observe_state(self.state())
        return observations, {a: {} for a in self.agents}

    def step(self, actions: Mapping[AgentID, object]):
        if self._episode_over:
            raise EpisodeOverError("the episode is over (every agent terminated or truncated); call reset() first")
        agents = self.agents
        checked = self._coerce_actions(actions)
        joint = self.layout.join(checked)
        self._check_bounds(checked, joint)
        self.last_joint_action = joint  # what the simulator received (evaluation records it)
        reward, terminated, truncated, info = self._advance(joint)
        observations = self.observe_state(self.state())
        rewards = dict.fromkeys(agents, reward)  # _advance returns a float and bools
        terminations = dict.fromkeys(agents, terminated)
        truncations = dict.fromkeys(agents, truncated)
        infos = {a: info.copy() for a in agents}
        return observations, rewards, terminations, truncations, infos

    def step_joint(self, joint_action: np.ndarray) -> tuple[float, bool, bool, dict]:
        """Step with one joint action array; return ``(team_reward, terminated, truncated, info)``.

        The fast path for code that produces joint actions itself (dataset generation): one
        vectorized check of shape, finiteness and bounds instead of per-agent dictionaries.
        Observations are not computed; read ``state()`` and apply a view when needed.
        """
        if self._episode_over:
            raise EpisodeOverError("the episode is over (every agent terminated or truncated); call reset() first")
        joint = np.asarray(joint_action)
        low, high = self._joint_bounds()
        if joint.shape != low.shape:
            raise ValueError(f"joint action has shape {joint.shape}, expected {low.shape}")
        if self.layout.discrete and not np.issubdtype(joint.dtype, np.integer):
            raise ValueError(f"joint action must hold integers, got {joint.dtype}")
        if not (np.all(np.isfinite(joint)) and self._within_bounds(joint)):
            raise ValueError(f"joint action {joint.tolist()} has NaN/inf or lies outside [{low.tolist()}, {high.tolist()}]")
        return self._advance(joint)

    def _advance(self, joint: np.ndarray):
        reward, terminated, truncated, info = self._step_joint(joint)
        if terminated or truncated:
            self.agents = []
            self._episode_over = True
        return float(reward), bool(terminated), bool(truncated), info

    def _joint_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        if not hasattr(self, "_bounds"):
            lows, highs = {}, {}
            for a in self.possible_agents:
                space = self.action_spaces[a]
                if isinstance(space, spaces.Discrete):
                    lows[a], highs[a] = np.int64(space.start), np.int64(space.start + space.n - 1)
                else:
                    lows[a], highs[a] = space.low, space.high
            self._bounds = (self.layout.join(lows, dtype=np.float64), self.layout.join(highs, dtype=np.float64))
        return self._bounds

    def validate_actions(self, actions: Mapping[AgentID, object]) -> dict[AgentID, np.ndarray]:
        """Check one action per live agent against its space; raise ``ValueError`` naming the agent."""
        checked = self._coerce_actions(actions)
        self._check_bounds(checked, self.layout.join(checked))
        return checked

    def _coerce_actions(self, actions: Mapping[AgentID, object]) -> dict[AgentID, np.ndarray]:
        """The right agents, each action of the right type and shape (discrete actions fully checked)."""
        if type(actions) is not dict and not isinstance(actions, Mapping):  # the ABC check is slow: dicts skip it
            raise ValueError(f"actions must be a dict keyed by agent {self.agents}; got {type(actions).__name__}")
        if len(actions) != len(self.agents) or any(a not in actions for a in self.agents):
            missing = [a for a in self.agents if a not in actions]
            extra = [a for a in actions if a not in self.agents]
            raise ValueError(f"actions must have exactly the agents {self.agents}; missing {missing}, unexpected {extra}")
        if not hasattr(self, "_box_types"):  # agent -> (dtype, shape) of its Box, for the per-step fast path
            self._box_types = {a: (s.dtype, s.shape) for a, s in self.action_spaces.items() if type(s) is spaces.Box}
        checked = {}
        for a in self.agents:
            action, box_type = actions[a], self._box_types.get(a)
            # identity of the canonical dtype is the cheap test; any other spelling takes the full path
            if box_type is not None and type(action) is np.ndarray and action.dtype is box_type[0] and action.shape == box_type[1]:
                checked[a] = action  # already what the space holds (the common case); bounds are checked by the caller
            else:
                checked[a] = _coerce_action(a, action, self.action_spaces[a])
        return checked

    def _check_bounds(self, checked: Mapping[AgentID, np.ndarray], joint: np.ndarray) -> None:
        """Every agent's bounds in one vectorized pass; on failure, find the agent to name."""
        if self.layout.discrete:
            return
        if not self._within_bounds(joint):  # NaN fails it too: lands in the loop, which names the agent
            for a in self.agents:
                _check_box_bounds(a, checked[a], self.action_spaces[a])

    def _within_bounds(self, joint: np.ndarray) -> bool:
        """Every entry of a joint action inside its agent's bounds; False when any entry is NaN.

        The one bounds test of ``step`` and ``step_joint`` (both per-step paths). Bounds are kept
        as float32 (exact: Box spaces hold float32) and as two scalars when every column shares
        them; then a min and a max decide, and both are NaN if any entry is, failing the test.
        """
        if not hasattr(self, "_bounds32"):
            low, high = (b.astype(np.float32) for b in self._joint_bounds())
            uniform = (low == low[0]).all() and (high == high[0]).all()
            self._bounds32 = (low[0], high[0], True) if uniform else (low, high, False)
        low, high, uniform = self._bounds32
        if uniform:
            return bool(low <= joint.min() and joint.max() <= high)
        return bool((joint >= low).all() and (joint <= high).all())

    def close(self):
        pass


def _coerce_action(agent: AgentID, action: object, space: spaces.Space) -> np.ndarray:
    if isinstance(space, spaces.Discrete):
        arr = np.asarray(action)
        if arr.shape != () or not np.issubdtype(arr.dtype, np.integer) or not space.contains(arr.astype(space.dtype)):
            raise ValueError(
                f"agent {agent!r}: action {action!r} is not in {space} (expected one integer in "
                f"[{space.start}, {space.start + space.n - 1}])"
            )
        return arr.astype(np.int64)
    if isinstance(space, spaces.Box):
        try:
            with np.errstate(over="ignore"):  # a float too large for float32 becomes inf, caught by the bounds
                arr = np.asarray(action, dtype=space.dtype)
        except (TypeError, ValueError):
            raise ValueError(f"agent {agent!r}: action {action!r} is not numeric; expected {space}") from None
        if arr.shape != space.shape:
            raise ValueError(f"agent {agent!r}: action has shape {arr.shape}, expected {space.shape} for {space}")
        return arr
    raise TypeError(f"unsupported action space {space}")


def _check_box_bounds(agent: AgentID, arr: np.ndarray, space: spaces.Box) -> None:
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"agent {agent!r}: action {arr.tolist()} contains NaN or inf; expected {space}")
    if np.any(arr < space.low) or np.any(arr > space.high):
        raise ValueError(f"agent {agent!r}: action {arr.tolist()} is outside {space}; clip it to the bounds")
