"""Two-agent reacher: Gymnasium's MuJoCo Reacher arm, split between a shoulder agent and an elbow agent.

The strategy-agreement task with continuous control. The physics, reset distribution and reward
are exactly Gymnasium's ``Reacher-v5`` (this module drives its simulator); only the action is
split: ``agent_0`` torques the shoulder (``joint0``), ``agent_1`` the elbow (``joint1``).

Every target can be reached two ways: the shoulder turning clockwise with the elbow bent one way,
or counter-clockwise with the elbow bent the other way. The expert data mixes a clockwise team and
a counter-clockwise team (:class:`ReacherExpertBehavior`), so each expert takes the long way round
half the time, and a shoulder that learned one team's habit paired with an elbow that learned the
other's misses the target.

Also here: the three observation views (shared with the datasets), the scripted experts, and
:func:`expert_policies`, the same experts as per-agent policies for ``offcoord.evaluate``.
"""

from __future__ import annotations

import math
from typing import Mapping

import gymnasium
import numpy as np
from gymnasium import spaces

from offcoord.envs.base import JointLayout, ObservationView, OffcoordParallelEnv, box, never_terminates

AGENTS = ("agent_0", "agent_1")
LAYOUT = JointLayout(agents=AGENTS, action_columns={"agent_0": (0,), "agent_1": (1,)}, joint_action_dim=2)
MAX_EPISODE_STEPS = 50  # Reacher-v5's registered time limit

# The global state is Reacher-v5's observation, entry for entry.
STATE_NAMES = (
    "cos q0",  # shoulder angle
    "cos q1",  # elbow angle (relative to the upper arm)
    "sin q0",
    "sin q1",
    "target x",
    "target y",
    "qvel0",  # shoulder angular velocity (rad/s)
    "qvel1",  # elbow angular velocity (rad/s)
    "fingertip x - target x",
    "fingertip y - target y",
)
STATE_DIM = len(STATE_NAMES)
COS0, COS1, SIN0, SIN1, TX, TY, VEL0, VEL1 = range(8)

# Link colours in rendered frames (RGBA): each agent's link in its own colour.
LINK_COLOURS = {"agent_0": (0.15, 0.35, 0.85, 1.0), "agent_1": (1.0, 0.55, 0.0, 1.0)}  # blue shoulder, orange elbow
LINK_GEOMS = {"agent_0": "link0", "agent_1": "link1"}


# --- Observation views ----------------------------------------------------------------------------
# Every view selects columns of the state, kept in state order, so a view is a column index per agent.


def _column_view(name: str, columns: Mapping[str, tuple[int, ...]]) -> ObservationView:
    # Unbounded like Reacher-v5's own observation space.
    return ObservationView.of_columns(name, columns, STATE_NAMES)


FO_VIEW = _column_view("fo", {a: tuple(range(STATE_DIM)) for a in AGENTS})
INDEPENDENT_VIEW = _column_view(
    "independent",
    {"agent_0": (COS0, SIN0, TX, TY, VEL0), "agent_1": (COS1, SIN1, TX, TY, VEL1)},
)
LEADER_ONLY_VIEW = _column_view(
    "leader-only",
    {"agent_0": (COS0, COS1, SIN0, SIN1, TX, TY, VEL0, VEL1), "agent_1": (COS0, COS1, SIN0, SIN1, VEL0, VEL1)},
)
VIEWS = {v.name: v for v in (FO_VIEW, INDEPENDENT_VIEW, LEADER_ONLY_VIEW)}


class Reacher2Env(OffcoordParallelEnv):
    """The MuJoCo Reacher arm with one agent per joint; both are rewarded for bringing the fingertip to the target.

    ``offcoord.make("reacher2-fo")``, ``offcoord.make("reacher2-independent")``,
    ``offcoord.make("reacher2-leader-only", render_mode="rgb_array")``

    ## Agents and actions
    ``agent_0`` torques the shoulder (``joint0``), ``agent_1`` the elbow (``joint1``); each action is
    ``Box(-1, 1, (1,), float32)``, the joint action ``[agent_0, agent_1]`` is Reacher-v5's action.

    ## Global state (``state()``, ``Box(-inf, inf, (10,), float32)``)
    Reacher-v5's observation: angles in radians measured counter-clockwise seen from above
    (``q1`` relative to the upper arm), velocities in rad/s, positions in metres.

    | index | value |
    | --- | --- |
    | 0, 1 | cos q0, cos q1 |
    | 2, 3 | sin q0, sin q1 |
    | 4, 5 | target x, y |
    | 6, 7 | qvel0, qvel1 |
    | 8, 9 | fingertip − target, x and y |

    ## Observations (``Box(-inf, inf, (n,), float32)``; entries keep state order)
    ``observability="fo"`` (``reacher2-fo``): both agents see the whole state (n = 10).

    ``observability="independent"`` (``reacher2-independent``): each agent sees its own joint and the target (n = 5).

    | index | agent_0 | agent_1 |
    | --- | --- | --- |
    | 0 | cos q0 | cos q1 |
    | 1 | sin q0 | sin q1 |
    | 2 | target x | target x |
    | 3 | target y | target y |
    | 4 | qvel0 | qvel1 |

    ``observability="leader-only"`` (``reacher2-leader-only``): both agents see both joints; only
    ``agent_0`` (the leader) sees the target (n = 8 for agent_0, 6 for agent_1).

    | index | agent_0 | agent_1 |
    | --- | --- | --- |
    | 0 | cos q0 | cos q0 |
    | 1 | cos q1 | cos q1 |
    | 2 | sin q0 | sin q0 |
    | 3 | sin q1 | sin q1 |
    | 4 | target x | qvel0 |
    | 5 | target y | qvel1 |
    | 6 | qvel0 | |
    | 7 | qvel1 | |

    ## Reward and episode end
    Reacher-v5's reward, given to both agents: ``-|fingertip - target| - |action|^2`` (joint
    action, control weight 1). Reset as Reacher-v5: arm angles uniform in [-0.1, 0.1], target
    uniform in the disc of radius 0.2. The episode never terminates; it is *truncated* after 50
    steps (a time limit: offline learners may bootstrap past it). ``info`` holds ``reward_dist``
    and ``reward_ctrl``.

    ## Rendering
    ``render_mode="rgb_array"``: 480×480 RGB frames from MuJoCo's offscreen renderer, the
    shoulder link blue and the elbow link orange. Headless machines need ``MUJOCO_GL=egl``
    (or ``osmesa``) set before MuJoCo is imported; see ``docs/tasks/reacher.md``.

    ## Version history
    - v0 (offcoord 0.1.0): initial release (Gymnasium Reacher-v5 physics).
    """

    metadata = {"name": "reacher2_v0", "render_modes": ["rgb_array"], "is_parallelizable": True, "render_fps": 50}
    layout = LAYOUT
    max_episode_steps = MAX_EPISODE_STEPS
    termination_rule = staticmethod(never_terminates)

    @staticmethod
    def episode_strategies(states: np.ndarray, joint_actions: np.ndarray) -> dict[str, int]:
        """Each agent's rotation strategy in one episode; see :func:`episode_strategies`."""
        return episode_strategies(states, joint_actions)

    def __init__(self, observability: str = "fo", render_mode: str | None = None):
        if observability not in VIEWS:
            raise ValueError(f"observability must be one of {sorted(VIEWS)}, got {observability!r}")
        self.view = VIEWS[observability]
        super().__init__(render_mode=render_mode)
        self.observability = observability
        # Built per instance: a Box carries its own sampling RNG, which instances must not share.
        self.action_spaces = {a: box(1, -1.0, 1.0) for a in AGENTS}
        self.state_space = box(STATE_DIM)
        # The registered Reacher-v5 without its wrappers: the same simulator, reset and reward;
        # this class counts the 50 steps itself.
        self._sim = gymnasium.make("Reacher-v5", render_mode=render_mode).unwrapped
        model = self._sim.model
        for agent, geom in LINK_GEOMS.items():
            model.geom_rgba[model.geom(geom).id] = LINK_COLOURS[agent]  # visual only: no effect on physics
        self._state = np.zeros(STATE_DIM, dtype=np.float32)
        self._steps = 0

    def state(self) -> np.ndarray:
        return self._state.copy()

    def _reset_joint(self, seed, options):
        obs, _ = self._sim.reset(seed=seed, options=options)
        self._state = np.asarray(obs, dtype=np.float32)
        self._steps = 0

    def _step_joint(self, joint_action: np.ndarray):
        obs, reward, _, _, info = self._sim.step(joint_action)
        self._state = np.asarray(obs, dtype=np.float32)
        self._steps += 1
        info = {"reward_dist": float(info["reward_dist"]), "reward_ctrl": float(info["reward_ctrl"])}
        return float(reward), False, self._steps >= MAX_EPISODE_STEPS, info

    def render(self):
        if self.render_mode is None:
            gymnasium.logger.warn("render() called without a render_mode; make the env with render_mode='rgb_array'")
            return None
        return self._sim.render()

    def close(self):
        self._sim.close()


# --- Scripted experts -------------------------------------------------------------------------------
# Inverse kinematics gives each joint a goal angle; a PD controller drives it there. The shoulder
# may only turn one way, so its goal is "the IK angle reached by turning clockwise" (or
# counter-clockwise): the goal is fixed at the episode's first step as an unwrapped angle, and the
# controller tracks its unwrapped position by summing the small per-step angle changes.

UPPER_ARM = 0.1  # reacher.xml: shoulder -> elbow
FOREARM = 0.11  # reacher.xml: elbow -> fingertip
ELBOW_GOAL_LIMIT = 2.9  # the elbow joint stops at ±3.0 rad; aim just inside it

STRATEGIES = ("clockwise", "counter-clockwise")  # the recorded strategy id is the index here
CLOCKWISE, COUNTER_CLOCKWISE = 0, 1
_DIRECTION = (-1.0, 1.0)  # sign of each strategy's rotation (angles grow counter-clockwise)


def inverse_kinematics(target_xy: np.ndarray, direction: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Joint angles ``(q0, q1)`` putting the fingertip on each target, elbow bent in ``direction`` (±1).

    Vectorized over a batch: ``target_xy`` ``(N, 2)``, ``direction`` ``(N,)``. ``q0`` is in
    ``(-2π, 2π)``, not wrapped. Targets closer than about 0.027 m to the shoulder would need the
    elbow beyond ±2.9 rad; they get the pose with the elbow at ±2.9 rad.
    """
    x, y = target_xy[..., 0], target_xy[..., 1]
    cos_elbow = (x * x + y * y - UPPER_ARM**2 - FOREARM**2) / (2 * UPPER_ARM * FOREARM)
    q1 = direction * np.minimum(np.arccos(np.clip(cos_elbow, -1.0, 1.0)), ELBOW_GOAL_LIMIT)
    q0 = np.arctan2(y, x) - np.arctan2(FOREARM * np.sin(q1), UPPER_ARM + FOREARM * np.cos(q1))
    return q0, q1


def directed_travel(delta: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """The rotation that turns an angle by ``delta`` (mod 2π) going only one way.

    In ``(-2π, 0]`` for ``direction = -1`` (clockwise), in ``[0, 2π)`` for ``+1`` (counter-clockwise).
    """
    ccw = np.mod(delta, 2 * np.pi)
    ccw = np.where(ccw >= 2 * np.pi, 0.0, ccw)  # np.mod(-1e-17, 2π) rounds to 2π; keep [0, 2π)
    cw = np.where(ccw > 0, ccw - 2 * np.pi, 0.0)  # (-2π, 0]
    return np.where(direction > 0, ccw, cw)


# PD gains (action per radian, action per rad/s, action limit), tuned by coordinate search on the
# mean return of the two deterministic teams. Reacher's control cost (weight 1) makes slow, smooth
# moves pay, hence the low action limits; see docs/tasks/reacher.md.
SHOULDER_GAINS = (0.325, 0.061, 0.278)
ELBOW_GAINS = (0.305, 0.048, 0.269)


class _JointExpert:
    """PD control of one joint towards its inverse-kinematics goal, for one episode at a time.

    The goal is computed at the episode's first step (the target does not move). The shoulder's
    goal is an *unwrapped* angle reached by turning only in the team's direction; its position is
    tracked by summing the per-step angle changes, so a small overshoot is corrected by a small
    step back instead of another full turn. The elbow's range is ±3 rad, so its angle needs no
    unwrapping.
    """

    def __init__(self, joint: int):
        self.joint = joint
        self.reset()

    def reset(self) -> None:
        self._goal: float | None = None
        self._position = 0.0
        self._last_angle = 0.0

    def action(self, angle: float, velocity: float, target_xy: np.ndarray, direction: float) -> float:
        """Unclipped PD action; ``direction`` is -1 (clockwise team) or +1 (counter-clockwise team)."""
        if self._goal is None:
            q0, q1 = inverse_kinematics(target_xy, direction)
            self._position = self._last_angle = angle
            if self.joint == 0:
                self._goal = angle + float(directed_travel(q0 - angle, direction))
            else:
                self._goal = float(q1)
        elif self.joint == 0:
            # One step turns the shoulder far less than π, so the wrapped change is the true change.
            self._position += (angle - self._last_angle + math.pi) % (2 * math.pi) - math.pi
            self._last_angle = angle
        else:
            self._position = angle
        kp, kd, limit = SHOULDER_GAINS if self.joint == 0 else ELBOW_GAINS
        return min(max(kp * (self._goal - self._position) - kd * velocity, -limit), limit)


def _direction(strategy: str) -> float:
    return _DIRECTION[STRATEGIES.index(strategy)]


class ReacherExpertBehavior:
    """Scripted expert team for data generation: IK + PD on each joint, one rotation direction per episode.

    Registered as behavior ``"reacher2-expert"``; a card's ``behavior_kwargs`` are the keyword
    arguments. ``act`` reads the global state and returns the joint action ``[shoulder, elbow]``.

    Args:
        strategy: ``"clockwise"`` (the shoulder turns clockwise, the elbow bends clockwise:
            q1 < 0), ``"counter-clockwise"`` (the mirror team), ``"alternate"`` (the expert
            mixture: episode k of a run is clockwise for even k, counter-clockwise for odd k, so
            both strategies are exactly balanced in any even number of episodes), or
            ``"shortest"`` (an oracle team that takes, per target, whichever of the two turns the
            shoulder less: what a well-coordinated team can learn from the mixture).
        noise_std: standard deviation of the Gaussian noise added to each action before
            clipping, so the data is stochastic like a trained policy's.
        elbow_strategy: give the elbow a fixed habit (``"clockwise"`` or ``"counter-clockwise"``)
            whatever the shoulder does: ``strategy="clockwise", elbow_strategy="counter-clockwise"``
            is a miscoordinated team, for diagnostics. ``None`` (default): the elbow follows the shoulder.

    ``extras()["strategy"]`` is the shoulder's direction in the current episode: 0 = clockwise,
    1 = counter-clockwise.
    """

    extra_columns = {"strategy": np.int8}

    def __init__(self, strategy: str = "alternate", noise_std: float = 0.0, elbow_strategy: str | None = None):
        choices = STRATEGIES + ("alternate", "shortest")
        if strategy not in choices:
            raise ValueError(f"strategy must be one of {choices}, got {strategy!r}")
        if elbow_strategy is not None and elbow_strategy not in STRATEGIES:
            raise ValueError(f"elbow_strategy must be None or one of {STRATEGIES}, got {elbow_strategy!r}")
        if isinstance(noise_std, bool) or not isinstance(noise_std, (int, float)) or not noise_std >= 0:
            raise ValueError(f"noise_std must be a non-negative number, got {noise_std!r}")
        self.strategy = strategy
        self.elbow_strategy = elbow_strategy
        self.noise_std = float(noise_std)
        self._episodes = 0
        self._current: int | None = None  # this episode's strategy id
        self._started = False
        self._joints = (_JointExpert(0), _JointExpert(1))

    def reset(self, rng: np.random.Generator, episode: int | None = None) -> None:
        """Start an episode; ``episode`` (its index in the dataset) picks the team under ``"alternate"``
        (even: clockwise); without it the behavior counts its own resets."""
        if self.strategy == "alternate":
            self._current = (self._episodes if episode is None else episode) % 2
        elif self.strategy in STRATEGIES:
            self._current = STRATEGIES.index(self.strategy)
        else:
            self._current = None  # "shortest": chosen at the first step, when the target is known
        self._episodes += 1
        self._started = True
        for joint in self._joints:
            joint.reset()

    def act(self, state: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if not self._started:
            raise RuntimeError("call reset(rng) at the start of each episode before act()")
        s = np.asarray(state, dtype=np.float64)
        target = s[TX : TY + 1]
        q0, q1 = math.atan2(s[SIN0], s[COS0]), math.atan2(s[SIN1], s[COS1])
        if self._current is None:  # the oracle picks the direction that turns the shoulder less
            travel = [abs(float(directed_travel(inverse_kinematics(target, d)[0] - q0, d))) for d in _DIRECTION]
            self._current = int(np.argmin(travel))
        direction = _DIRECTION[self._current]
        elbow_direction = direction if self.elbow_strategy is None else _direction(self.elbow_strategy)
        action = np.array(
            [
                self._joints[0].action(q0, s[VEL0], target, direction),
                self._joints[1].action(q1, s[VEL1], target, elbow_direction),
            ]
        )
        action += self.noise_std * rng.standard_normal(2)  # drawn even at noise 0: one RNG stream per card
        return np.clip(action, -1.0, 1.0).astype(np.float32)

    def extras(self) -> dict[str, int]:
        return {"strategy": int(self._current)}


# Entries of an agent's own observation that its expert needs: own joint angle and velocity, target.
_JOINT_INPUTS = {
    "agent_0": ("cos q0", "sin q0", "qvel0", "target x", "target y"),
    "agent_1": ("cos q1", "sin q1", "qvel1", "target x", "target y"),
}


class ReacherExpertAgent:
    """One agent of an expert team as a decentralized policy: its own observation -> its action.

    For ``offcoord.evaluate`` (a dict of these is a team; ``reset()`` is called every episode).
    Deterministic (no noise), as the evaluation protocol asks. Needs an observation holding the
    agent's own joint and the target: every view except ``agent_1`` in ``leader-only``.
    """

    def __init__(self, agent: str, strategy: str, observability: str = "independent"):
        if agent not in AGENTS:
            raise ValueError(f"agent must be one of {AGENTS}, got {agent!r}")
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
        if observability not in VIEWS:
            raise ValueError(f"observability must be one of {sorted(VIEWS)}, got {observability!r}")
        names = VIEWS[observability].description[agent]
        missing = [n for n in _JOINT_INPUTS[agent] if n not in names]
        if missing:
            raise ValueError(f"{agent} does not observe {missing} in the {observability!r} view; its expert needs them")
        self.agent, self.strategy, self.observability = agent, strategy, observability
        self._index = [names.index(n) for n in _JOINT_INPUTS[agent]]
        self._direction = _direction(strategy)
        self._joint = _JointExpert(AGENTS.index(agent))

    def reset(self) -> None:
        self._joint.reset()

    def __call__(self, observation: np.ndarray) -> np.ndarray:
        cos, sin, velocity, tx, ty = (float(observation[i]) for i in self._index)
        a = self._joint.action(math.atan2(sin, cos), velocity, np.array([tx, ty]), self._direction)
        return np.array([min(max(a, -1.0), 1.0)], dtype=np.float32)


def expert_policies(shoulder: str, elbow: str | None = None, observability: str = "independent") -> dict:
    """A decentralized expert team for ``offcoord.evaluate``: ``{agent: ReacherExpertAgent}``.

    ``expert_policies("clockwise")`` is the clockwise team; ``expert_policies("clockwise",
    "counter-clockwise")`` pairs the clockwise shoulder with the counter-clockwise elbow (the
    team that fails to agree).
    """
    return {
        "agent_0": ReacherExpertAgent("agent_0", shoulder, observability),
        "agent_1": ReacherExpertAgent("agent_1", elbow or shoulder, observability),
    }


def measure_returns(team: str = "alternate", episodes: int = 1000, seed: int = 0, **behavior_kwargs) -> np.ndarray:
    """Per-episode returns of a scripted team in ``reacher2-fo``: how the card's reference scores are measured.

    ``team="random"`` acts uniformly in [-1, 1]² (the reference minimum); any other value is a
    :class:`ReacherExpertBehavior` strategy (``"alternate"`` is the reference maximum), with
    ``behavior_kwargs`` passed on (noise-free by default, as the evaluation protocol asks).
    Episode ``i`` is reset with seed ``seed + i``, like ``offcoord.evaluate``; actions draw from
    ``numpy.random.default_rng(seed)``.
    """
    env = Reacher2Env("fo")
    rng = np.random.default_rng(seed)
    behavior = None if team == "random" else ReacherExpertBehavior(strategy=team, **behavior_kwargs)
    returns = np.zeros(episodes)
    try:
        for i in range(episodes):
            env.reset(seed=seed + i)
            if behavior is not None:
                behavior.reset(rng)
            while env.agents:
                state = env.state()
                joint = rng.uniform(-1.0, 1.0, 2).astype(np.float32) if behavior is None else behavior.act(state, rng)
                _, rewards, _, _, _ = env.step(LAYOUT.split(joint))
                returns[i] += rewards["agent_0"]
    finally:
        env.close()
    return returns


def episode_strategies(states: np.ndarray, joint_actions: np.ndarray) -> dict[str, int]:
    """Which of the two arm configurations each agent went for in one episode (0 = the clockwise
    team's, elbow bent clockwise; 1 = the counter-clockwise team's).

    ``states`` is the episode's ``(T + 1, 10)`` global states. Every target is reached by two poses
    (:func:`inverse_kinematics`): elbow bent clockwise (``q1 < 0``) with the shoulder at one angle,
    or bent counter-clockwise with the shoulder at another. The elbow's strategy is the bend it ends
    in; the shoulder's is the pose whose shoulder angle is nearer its final angle. A team *agrees*
    when both name the same pose: that is what reaching the target needs (the clockwise shoulder
    with the counter-clockwise elbow misses it). The way the shoulder turned to get there is not
    part of it: a team that takes the shorter turn and meets in one pose agrees.
    """
    states = np.asarray(states, dtype=np.float64)
    last = states[-1]
    q0_end = math.atan2(last[SIN0], last[COS0])
    q1_end = math.atan2(last[SIN1], last[COS1])
    q0_poses, _ = inverse_kinematics(np.repeat(last[None, TX : TY + 1], 2, axis=0), np.array(_DIRECTION, dtype=np.float64))
    distance = np.abs((q0_poses - q0_end + np.pi) % (2 * np.pi) - np.pi)
    return {"agent_0": int(np.argmin(distance)), "agent_1": int(q1_end > 0)}
