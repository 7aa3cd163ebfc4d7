"""The coordination game: the smallest strategy-agreement problem.

Two agents each pick left (0) or right (1); both get reward 1 when they pick the same side,
0 otherwise. Two equally good joint strategies exist (both left, both right), so agents trained
apart from data in which one agent mostly goes right and the other mostly goes left fail to agree.
"""

from __future__ import annotations

import numpy as np
from gymnasium import spaces

from offcoord.envs.base import JointLayout, ObservationView, OffcoordParallelEnv, box

AGENTS = ("agent_0", "agent_1")
LAYOUT = JointLayout(agents=AGENTS, action_columns={"agent_0": (0,), "agent_1": (1,)}, joint_action_dim=2, discrete=True)
STATE_DIM = 1


# The state is public, so the game has one setting: every agent sees the whole state.
FULL_VIEW = ObservationView.of_columns(
    "full", {a: (0,) for a in AGENTS}, ("round index / horizon",),
    observation_spaces={a: box(STATE_DIM, 0.0, 1.0) for a in AGENTS},
)


class CoordinationGameEnv(OffcoordParallelEnv):
    """Two agents, each choosing left or right; both are rewarded when their choices match.

    ``offcoord.make("coordination-game", horizon=1)``

    ## Agents and actions
    ``agent_0`` and ``agent_1``, each ``Discrete(2)``: 0 = left, 1 = right.

    ## Observation (both agents, ``Box(0, 1, (1,), float32)``)
    | index | value |
    | --- | --- |
    | 0 | round index divided by the horizon (0 in a one-shot game) |

    The global state (``state()``) is the same vector.

    ## Reward and episode end
    Team reward 1 when both actions match, else 0, given to both agents. The episode
    *terminates* after ``horizon`` rounds: the rounds are part of the game, not a time limit,
    so offline learners must not bootstrap past them. Return ranges from 0 to ``horizon``;
    normalized scores divide by ``horizon`` (the paper's "fraction of coordinated rounds").

    ## Version history
    - v0 (offcoord 0.1.0): initial release.
    """

    metadata = {"name": "coordination_game_v0", "render_modes": [], "is_parallelizable": True}
    layout = LAYOUT

    @property
    def max_episode_steps(self) -> int:
        return self.horizon
    view = FULL_VIEW

    def __init__(self, horizon: int = 1, render_mode: str | None = None):
        if isinstance(horizon, bool) or not isinstance(horizon, (int, np.integer)) or horizon < 1:
            raise ValueError(f"horizon must be a positive integer, got {horizon!r}")
        super().__init__(render_mode=render_mode)
        self.horizon = int(horizon)
        self.action_spaces = {a: spaces.Discrete(2) for a in AGENTS}
        self.state_space = box(STATE_DIM, 0.0, 1.0)
        self._round = 0

    @staticmethod
    def episode_strategies(states: np.ndarray, joint_actions: np.ndarray) -> dict[str, int]:
        """Each agent's strategy in one episode: the side it chose most often (0 = left, 1 = right)."""
        joint = np.asarray(joint_actions)
        return {a: int(2 * joint[:, i].sum() > len(joint)) for i, a in enumerate(AGENTS)}

    def state(self) -> np.ndarray:
        return np.array([self._round / self.horizon], dtype=np.float32)

    def _reset_joint(self, seed, options):
        # The game has no randomness; the seed is accepted for API compatibility.
        self._round = 0

    def _step_joint(self, joint_action: np.ndarray):
        reward = float(joint_action[0] == joint_action[1])
        self._round += 1
        return reward, self._round >= self.horizon, False, {}


class IndependentBernoulliBehavior:
    """Scripted data collector: each agent independently picks right with its own probability.

    ``p_right=[0.9, 0.1]`` is the unfavorable team (agent 0 mostly right, agent 1 mostly left).
    """

    def __init__(self, p_right: list[float]):
        self.p_right = np.asarray(p_right, dtype=np.float64)
        if self.p_right.shape != (len(AGENTS),) or np.any((self.p_right < 0) | (self.p_right > 1)):
            raise ValueError(f"p_right must hold {len(AGENTS)} probabilities in [0, 1], got {p_right!r}")

    def reset(self, rng: np.random.Generator, episode: int = 0) -> None:
        pass

    def act(self, state: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return (rng.random(len(AGENTS)) < self.p_right).astype(np.int64)

