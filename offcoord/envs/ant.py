"""The four-agent ant: one leg per agent on Gymnasium's MuJoCo Ant (the strategy-fine-tuning task).

Physics, reward, termination and the 1000-step time limit are those of Gymnasium's ``Ant-v5``
(the environment is wrapped, not re-implemented). The joint state is Ant-v5's 27-value
observation without contact forces (``include_cfrc_ext_in_observation=False``). Agents follow
MaMuJoCo's "Ant 4x2" partition: agent ``i`` actuates the hip and ankle of leg ``i + 1``.

Every index below is computed from the MuJoCo model *by joint name*: the Ant model's actuator
order (hip_4, ankle_4, hip_1, ankle_1, ...) differs from its joint order (hip_1, ankle_1, ...),
so positional pairing of actuators and observations is wrong.
"""

from __future__ import annotations

import os
from types import MappingProxyType

import gymnasium
import mujoco
import numpy as np

from offcoord.envs.base import JointLayout, ObservationView, OffcoordParallelEnv, box

GYM_ID = "Ant-v5"
HEALTHY_Z_RANGE = (0.2, 1.0)  # Ant-v5's default, passed explicitly: ``unhealthy`` below is the same rule
GYM_KWARGS = MappingProxyType({"include_cfrc_ext_in_observation": False, "max_episode_steps": 1000,
                               "healthy_z_range": HEALTHY_Z_RANGE})
MAX_EPISODE_STEPS = 1000
AGENTS = ("agent_0", "agent_1", "agent_2", "agent_3")
STATE_DIM = 27


def _ant_model() -> mujoco.MjModel:
    """The MuJoCo model Gymnasium's Ant-v5 loads (its default ``xml_file``)."""
    import gymnasium.envs.mujoco as gym_mujoco

    return mujoco.MjModel.from_xml_path(os.path.join(os.path.dirname(gym_mujoco.__file__), "assets", "ant.xml"))


def _name(model, obj, i) -> str:
    return mujoco.mj_id2name(model, obj, i)


def _state_names(model: mujoco.MjModel) -> tuple[str, ...]:
    """Name of every entry of Ant-v5's 27-value observation: ``qpos[2:]`` then ``qvel``.

    The root free joint contributes torso z and orientation quaternion (x and y are excluded)
    and torso linear and angular velocity; hinge joints contribute their angle and velocity.
    """
    qpos = [""] * model.nq
    qvel = [""] * model.nv
    for j in range(model.njnt):
        name = _name(model, mujoco.mjtObj.mjOBJ_JOINT, j)
        qa, da = model.jnt_qposadr[j], model.jnt_dofadr[j]
        if model.jnt_type[j] == mujoco.mjtJoint.mjJNT_FREE:
            qpos[qa : qa + 7] = ["torso x", "torso y", "torso z", "torso qw", "torso qx", "torso qy", "torso qz"]
            qvel[da : da + 6] = ["torso vx", "torso vy", "torso vz", "torso wx", "torso wy", "torso wz"]
        else:
            qpos[qa] = f"{name} angle"
            qvel[da] = f"{name} velocity"
    names = tuple(qpos[2:] + qvel)
    assert len(names) == STATE_DIM and all(names), names
    return names


def _leg_action_columns(model: mujoco.MjModel) -> dict[str, tuple[int, int]]:
    """Agent ``i`` -> (actuator index of ``hip_{i+1}``, of ``ankle_{i+1}``), via each actuator's joint."""
    joint_of_actuator = [
        _name(model, mujoco.mjtObj.mjOBJ_JOINT, model.actuator_trnid[k, 0]) for k in range(model.nu)
    ]
    return {
        a: (joint_of_actuator.index(f"hip_{i + 1}"), joint_of_actuator.index(f"ankle_{i + 1}"))
        for i, a in enumerate(AGENTS)
    }


_MODEL = _ant_model()
STATE_NAMES = _state_names(_MODEL)
"""Name of each of the 27 state entries (e.g. ``"hip_1 angle"``, ``"torso vz"``)."""
LAYOUT = JointLayout(agents=AGENTS, action_columns=_leg_action_columns(_MODEL), joint_action_dim=_MODEL.nu)
TORSO_NAMES = ("torso z", "torso qw", "torso qx", "torso qy", "torso qz",
               "torso vx", "torso vy", "torso vz", "torso wx", "torso wy", "torso wz")
LEG_NAMES = {
    a: (f"hip_{i + 1} angle", f"ankle_{i + 1} angle", f"hip_{i + 1} velocity", f"ankle_{i + 1} velocity")
    for i, a in enumerate(AGENTS)
}
# Ant-v5's default camera stays put and the running ant leaves the frame; render() re-aims it at the torso
CAMERA = MappingProxyType({"distance": 4.0, "elevation": -25.0})
del _MODEL


def _columns(names) -> np.ndarray:
    return np.array([STATE_NAMES.index(n) for n in names], dtype=np.intp)


# ---- fo: every agent sees the whole state
FO_VIEW = ObservationView.of_columns("fo", {a: tuple(range(STATE_DIM)) for a in AGENTS}, STATE_NAMES)

# ---- po: own leg's angles and velocities; agent_0 also the torso
PO_NAMES = {a: LEG_NAMES[a] + (TORSO_NAMES if a == "agent_0" else ()) for a in AGENTS}
PO_VIEW = ObservationView.of_columns("po", {a: _columns(PO_NAMES[a]) for a in AGENTS}, STATE_NAMES)

VIEWS = {"fo": FO_VIEW, "po": PO_VIEW}


def unhealthy(states: np.ndarray) -> np.ndarray:
    """Ant-v5's termination rule on a batch of states ``(..., 27)``: torso z outside
    ``HEALTHY_Z_RANGE`` or a non-finite entry (the environment's ``termination_rule``)."""
    states = np.asarray(states)
    z = states[..., 0]
    return ~np.isfinite(states).all(-1) | (z < HEALTHY_Z_RANGE[0]) | (z > HEALTHY_Z_RANGE[1])


class Ant4x2Env(OffcoordParallelEnv):
    """Four agents, one leg of the MuJoCo Ant each; the team is rewarded for running forward.

    ``offcoord.make("ant-po")``, ``offcoord.make("ant-fo", render_mode="rgb_array")``

    ## Agents and actions
    ``agent_0`` .. ``agent_3``; agent ``i`` controls leg ``i + 1`` with ``Box(-1, 1, (2,), float32)``:
    ``[hip_{i+1} torque, ankle_{i+1} torque]`` (MaMuJoCo's "Ant 4x2" partition). Legs 1-4 are
    numbered as in Ant-v5's XML; facing +x (the rewarded direction) they stand front left, back
    left, back right, front right. The joint action is the 8-value action of
    Gymnasium's Ant-v5 in its actuator order (hip_4, ankle_4, hip_1, ankle_1, hip_2, ankle_2,
    hip_3, ankle_3); ``layout.action_columns`` maps agents to it.

    ## State (``state()``, ``Box(-inf, inf, (27,), float32)``)
    Ant-v5's observation with ``include_cfrc_ext_in_observation=False`` (see ``STATE_NAMES``):
    | index | value |
    | --- | --- |
    | 0 | torso z |
    | 1-4 | torso orientation quaternion (w, x, y, z) |
    | 5-12 | joint angles: hip_1, ankle_1, hip_2, ankle_2, hip_3, ankle_3, hip_4, ankle_4 |
    | 13-15 | torso linear velocity (x, y, z) |
    | 16-18 | torso angular velocity (x, y, z) |
    | 19-26 | joint velocities, same joint order as 5-12 |

    ## Observation, ``observability="fo"`` (every agent, ``Box(-inf, inf, (27,))``)
    The whole state.

    ## Observation, ``observability="po"``
    | agent | shape | entries |
    | --- | --- | --- |
    | agent_i (i = 0..3) | 4 | hip_{i+1} angle, ankle_{i+1} angle, hip_{i+1} velocity, ankle_{i+1} velocity |
    | agent_0 (in addition, after its leg) | +11 = 15 | torso z, quaternion (w, x, y, z), linear velocity (x, y, z), angular velocity (x, y, z) |

    Only agent 0 knows where the body is and how fast it moves: the others must be steered.

    ## Reward and episode end
    Ant-v5's reward (forward velocity + healthy reward 1 - control cost - contact cost), one
    team reward given to every agent. The episode *terminates* when the ant is unhealthy
    (torso z outside [0.2, 1.0] or a non-finite state) and is *truncated* after 1000 steps.
    ``infos[agent]`` holds Ant-v5's info (reward terms, x/y position and velocity).

    ## Version history
    - v0 (offcoord 0.1.0): initial release (Gymnasium Ant-v5 physics).
    """

    metadata = {"name": "ant4x2_v0", "render_modes": ["rgb_array"], "render_fps": 20, "is_parallelizable": True}
    layout = LAYOUT
    max_episode_steps = MAX_EPISODE_STEPS
    termination_rule = staticmethod(unhealthy)

    def __init__(self, observability: str = "po", render_mode: str | None = None):
        if observability not in VIEWS:
            raise ValueError(f"observability must be one of {sorted(VIEWS)}, got {observability!r}")
        self.view = VIEWS[observability]
        super().__init__(render_mode=render_mode)
        self.observability = observability
        # Built per instance: a Box carries its own sampling RNG, which instances must not share.
        self.action_spaces = {a: box(2, -1.0, 1.0) for a in AGENTS}
        self.state_space = box(STATE_DIM)
        camera = {"default_camera_config": dict(CAMERA)} if render_mode else {}  # rendering only
        self._gym_env = gymnasium.make(GYM_ID, render_mode=render_mode, **GYM_KWARGS, **camera)
        # stepped without Gymnasium's wrappers (their checks cost about 5% here); the time limit is counted below
        self._ant = self._gym_env.unwrapped
        self._steps = 0
        self._state = np.zeros(STATE_DIM, dtype=np.float32)

    @property
    def gym_env(self) -> gymnasium.Env:
        """The wrapped Gymnasium ``Ant-v5`` (single agent, 8-value action)."""
        return self._gym_env

    def state(self) -> np.ndarray:
        return self._state.copy()

    def _reset_joint(self, seed, options):
        obs, _ = self._gym_env.reset(seed=seed, options=options)
        self._steps = 0
        self._state = np.asarray(obs, dtype=np.float32)

    def _step_joint(self, joint_action: np.ndarray):
        obs, reward, terminated, _, info = self._ant.step(joint_action)
        self._steps += 1
        self._state = np.asarray(obs, dtype=np.float32)
        return float(reward), bool(terminated), self._steps >= MAX_EPISODE_STEPS, info

    def render(self):
        if self.render_mode is None:
            gymnasium.logger.warn("render() called without a render_mode; pass render_mode='rgb_array' to make()")
            return None
        # Gymnasium forces its free camera on every frame (the model has no tracking camera): aim it at the torso
        viewer = self._ant.mujoco_renderer._get_viewer(self.render_mode)
        viewer.cam.lookat[:] = self._ant.data.body("torso").xpos
        return self._gym_env.render()

    def close(self):
        self._gym_env.close()


def measure_returns(team: str = "random", episodes: int = 100, seed: int = 0, deterministic: bool = True) -> np.ndarray:
    """Per-episode returns of a whole team in ``ant-fo``: how the ant cards' reference scores are measured.

    ``team="random"`` acts uniformly in [-1, 1]^8 (the reference minimum); otherwise ``team`` is a
    policy file (relative paths: the ``datasets_meta`` folder), acting deterministically (the
    evaluation protocol) unless ``deterministic=False``. Episode ``i`` is reset with seed
    ``seed + i``, like ``offcoord.evaluate``; random draws come from ``default_rng(seed)``. A
    policy's matrix products run on the reference BLAS kernels, as in dataset generation, so the
    returns are the same on any x86-64 CPU with AVX2 (see "Across machines" in docs/datasets.md).
    """
    task = (team, episodes, seed, deterministic)
    if team == "random":  # no matrix products: no worker process needed
        return _measure_returns(task)
    from offcoord.data.generate import call_with_reference_blas

    return call_with_reference_blas(_measure_returns, task)


def _measure_returns(task: tuple[str, int, int, bool]) -> np.ndarray:
    from offcoord.policies import PolicyBehavior

    team, episodes, seed, deterministic = task
    env = Ant4x2Env("fo")
    rng = np.random.default_rng(seed)
    behavior = None if team == "random" else PolicyBehavior(team, deterministic=deterministic)
    returns = np.zeros(episodes)
    try:
        for i in range(episodes):
            env.reset(seed=seed + i)
            done = False
            while not done:
                state = env.state()
                joint = rng.uniform(-1.0, 1.0, 8).astype(np.float32) if behavior is None else behavior.act(state, rng)
                reward, terminated, truncated, _ = env.step_joint(joint)
                returns[i] += reward
                done = terminated or truncated
    finally:
        env.close()
    return returns
