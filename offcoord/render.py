"""Videos of a team on a task: roll a policy out with ``render_mode="rgb_array"`` and write a GIF
(Pillow) or an MP4 (imageio-ffmpeg), like the paper's illustrative rollouts.

    offcoord render reacher2-fo --policy expert-clockwise --out clockwise.gif
    offcoord render reacher2-independent --policy expert-mixed --out mixed.gif   # a team that disagrees

>>> from offcoord.render import make_policy, render
>>> render("reacher2-fo", make_policy("reacher2-fo", "expert"), "expert.gif", episodes=2)  # doctest: +SKIP

A policy follows :func:`offcoord.evaluate`'s protocol (a dict ``{agent: callable(observation)}``,
or one callable ``{agent: obs} -> {agent: action}``; ``reset()`` is called every episode; episode
``i`` is reset with seed ``seed + i``). Named policies come from :data:`POLICIES` (register more
with :func:`register_policy`); any other name ``NAME`` is the behavior of the task's dataset card
``<task>-NAME`` (e.g. ``ant-expert`` once its card exists), acting on the global state as it did
when the dataset was made. ``random`` works on every task.

Rendering needs an OpenGL context: headless Linux uses EGL, else OSMesa (``MUJOCO_GL``; set it
yourself to choose). Pillow is needed for GIFs (``pip install pillow``; the ``agents`` extra has it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from offcoord.registry import make

# (task, name) -> factory(env_id, seed) -> policy. Task "*" applies to every task.
POLICIES: dict[tuple[str, str], Callable[[str, int], Any]] = {}


def register_policy(task: str, name: str, factory: Callable[[str, int], Any]) -> None:
    """Make ``--policy name`` available for ``task`` (``"reacher2"``, ``"ant"``, ... or ``"*"`` for all):
    ``factory(env_id, seed)`` returns a policy in :func:`offcoord.evaluate`'s protocol."""
    POLICIES[(task, name)] = factory


def task_of(env_id: str) -> str:
    """``"reacher2-leader-only"`` -> ``"reacher2"``; ``"coordination-game"`` -> ``"coordination"``."""
    return env_id.split("-", 1)[0]


def policy_names(env_id: str) -> list[str]:
    """The policy names :func:`make_policy` accepts for ``env_id``."""
    from offcoord.data.cards import load_cards

    task = task_of(env_id)
    names = {name for (t, name) in POLICIES if t in (task, "*")}
    names |= {card_id[len(task) + 1:] for card_id, card in load_cards().items() if card_id.startswith(task + "-") and card.behavior}
    return sorted(names)


def make_policy(env_id: str, name: str, seed: int = 0):
    """The policy called ``name`` on ``env_id`` (see the module docstring)."""
    from offcoord.data.cards import load_cards
    from offcoord.registry import env_spec

    env_spec(env_id)  # an unknown environment id fails here, listing close matches
    task = task_of(env_id)
    for key in ((task, name), ("*", name)):
        if key in POLICIES:
            return POLICIES[key](env_id, seed)
    card = load_cards().get(f"{task}-{name}")
    if card is not None and card.behavior:
        from offcoord.registry import make_behavior

        return StateTeam(make_behavior(card.behavior, card.behavior_kwargs), seed)
    raise ValueError(f"no policy {name!r} for {env_id}; choose one of {policy_names(env_id)}")


class StateTeam:
    """A joint behavior (``reset(rng)``, ``act(state, rng) -> joint action``; the dataset cards'
    behaviors) as a team policy: it acts on the environment's global state, so it is centralized."""

    def __init__(self, behavior, seed: int = 0):
        self.behavior, self.rng, self.env = behavior, np.random.default_rng(seed), None

    def bind(self, env) -> None:
        self.env = env

    def reset(self) -> None:
        self.behavior.reset(self.rng)

    def __call__(self, observations: Mapping[str, Any]) -> dict:
        return self.env.layout.split(self.behavior.act(self.env.state(), self.rng))


class ViewTeam:
    """A decentralized team whose agents observe as in another view of the same task (``env_id``):
    each agent still acts on its own observation of that view. For scripted experts that need an
    input the rendered view hides (the reacher's follower has no target in ``leader-only``)."""

    def __init__(self, team: Mapping[str, Callable], env_id: str):
        self.team, self.view_env_id, self.view = dict(team), env_id, None

    def bind(self, env) -> None:
        probe = make(self.view_env_id)  # for its view (how each agent observes a state), not to step
        try:
            self.env, self.view = env, probe.view
        finally:
            probe.close()

    def reset(self) -> None:
        for p in self.team.values():
            if hasattr(p, "reset"):
                p.reset()

    def __call__(self, observations: Mapping[str, Any]) -> dict:
        seen = self.view.observe_one(self.env.state())
        return {agent: policy(seen[agent]) for agent, policy in self.team.items()}


class AlternatingTeam:
    """Episode ``i`` is played by ``teams[i % len(teams)]`` (the reacher data's expert mixture); each
    team is a policy in :func:`offcoord.evaluate`'s protocol."""

    def __init__(self, teams: Sequence[Any]):
        self.teams, self.episode = list(teams), -1

    def bind(self, env) -> None:
        for team in self.teams:
            if hasattr(team, "bind"):
                team.bind(env)

    @property
    def current(self):
        return self.teams[max(self.episode, 0) % len(self.teams)]

    def reset(self) -> None:
        self.episode += 1
        team = self.current
        for p in (team.values() if isinstance(team, Mapping) else [team]):
            if hasattr(p, "reset"):
                p.reset()

    def __call__(self, observations: Mapping[str, Any]) -> dict:
        team = self.current
        if isinstance(team, Mapping):
            return {agent: team[agent](obs) for agent, obs in observations.items()}
        return team(observations)


def _reacher_experts(shoulder: str | None, elbow: str | None = None):
    def factory(env_id: str, seed: int):
        from offcoord.envs.reacher import expert_policies

        observability = env_id[len("reacher2-"):]
        direct = observability != "leader-only"  # in leader-only the follower does not see the target

        def team(s, e=None):
            t = expert_policies(s, e, observability if direct else "independent")
            return t if direct else ViewTeam(t, "reacher2-independent")

        if shoulder is None:  # the data's mixture: clockwise team, then counter-clockwise team, ...
            return AlternatingTeam([team("clockwise"), team("counter-clockwise")])
        return team(shoulder, elbow)

    return factory


def _random(env_id: str, seed: int):
    from offcoord.behaviors import UniformRandomBehavior

    return StateTeam(UniformRandomBehavior(env_id), seed)


register_policy("*", "random", _random)
register_policy("reacher2", "expert", _reacher_experts(None))
register_policy("reacher2", "expert-clockwise", _reacher_experts("clockwise"))
register_policy("reacher2", "expert-counterclockwise", _reacher_experts("counter-clockwise"))
# The clockwise shoulder with the counter-clockwise elbow: each agent is an expert, the team fails.
register_policy("reacher2", "expert-mixed", _reacher_experts("clockwise", "counter-clockwise"))


# --- OpenGL ------------------------------------------------------------------------------------

_PROBE = (
    "import mujoco, sys\n"
    "ctx = mujoco.GLContext(16, 16); ctx.make_current(); ctx.free()\n"
)


def ensure_gl() -> str | None:
    """Choose MuJoCo's OpenGL backend before the first frame: ``$MUJOCO_GL`` if set; else, on
    Linux, EGL if a context can be made, else OSMesa (each probed in a fresh interpreter, since
    PyOpenGL binds to one platform per process). Returns the backend (None: MuJoCo's default)."""
    if os.environ.get("MUJOCO_GL"):
        return os.environ["MUJOCO_GL"]
    if not sys.platform.startswith("linux"):
        return None  # macOS and Windows: MuJoCo's own default (glfw / cgl / wgl)
    errors = {}
    for backend in ("egl", "osmesa"):
        env = {**os.environ, "MUJOCO_GL": backend, "PYOPENGL_PLATFORM": backend}
        proc = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, timeout=120)
        if proc.returncode == 0:
            os.environ["MUJOCO_GL"] = backend
            os.environ.setdefault("PYOPENGL_PLATFORM", backend)
            return backend
        errors[backend] = (proc.stderr.strip().splitlines() or ["failed"])[-1]
    raise RuntimeError(
        "no OpenGL context for rendering: tried MUJOCO_GL=egl and MUJOCO_GL=osmesa "
        f"({json.dumps(errors)}); install EGL (apt-get install libegl1 libgl1-mesa-dri) or OSMesa (libosmesa6)"
    )


# --- rollouts and frames -----------------------------------------------------------------------


def has_frames(env_id: str) -> bool:
    env = make(env_id)
    try:
        return "rgb_array" in env.metadata.get("render_modes", [])
    finally:
        env.close()


def rollout_frames(env_id: str, policy, episodes: int = 1, seed: int = 0, max_steps: int | None = None,
                   every: int = 1) -> list[np.ndarray]:
    """RGB frames (``uint8``, H×W×3) of ``episodes`` episodes of ``policy`` on ``env_id``: the frame
    after each reset and after every ``every``-th step; at most ``max_steps`` steps per episode."""
    from offcoord.evaluation import _as_team_policy

    if isinstance(episodes, bool) or not isinstance(episodes, (int, np.integer)) or episodes < 1:
        raise ValueError(f"episodes must be a positive integer, got {episodes!r}")
    if every < 1:
        raise ValueError(f"every must be a positive integer, got {every!r}")
    if not has_frames(env_id):
        raise ValueError(f"{env_id} has no rgb_array rendering (it has no picture: nothing moves); "
                         "render a MuJoCo task instead (reacher2-*, ant-*)")
    ensure_gl()
    env = make(env_id, render_mode="rgb_array")
    if isinstance(policy, Mapping) and set(policy) != set(env.possible_agents):
        env.close()
        raise ValueError(f"the policy dict has agents {sorted(policy)}, but {env_id!r} has agents {env.possible_agents}")
    if hasattr(policy, "bind"):
        policy.bind(env)
    act, resets = _as_team_policy(policy)
    frames = []
    try:
        for episode in range(int(episodes)):
            for reset in resets:
                reset()
            obs, _ = env.reset(seed=int(seed) + episode)
            frames.append(np.asarray(env.render()))
            steps = 0
            while env.agents and (max_steps is None or steps < max_steps):
                obs, *_ = env.step(act(obs))
                steps += 1
                if steps % every == 0:
                    frames.append(np.asarray(env.render()))
    finally:
        env.close()
    return frames


def _pillow():
    try:
        from PIL import Image, ImageDraw
    except ImportError:
        raise ImportError("writing GIFs needs Pillow: pip install pillow") from None
    return Image, ImageDraw


def write_frames(frames: Sequence[np.ndarray], path: str | os.PathLike, fps: float = 25.0, size: int | None = None,
                 label: str | None = None, crop: Sequence[float] | None = None) -> Path:
    """Write RGB frames to ``path``: a looping GIF (Pillow), or an MP4 when ``path`` ends in ``.mp4``
    (imageio-ffmpeg). ``crop``: keep the box ``(left, top, right, bottom)``, as fractions of the
    frame; ``size``: then scale so the longer side is ``size`` pixels; ``label``: text drawn in the
    top-left corner of every frame."""
    if not len(frames):
        raise ValueError("no frames to write")
    Image, ImageDraw = _pillow()
    path = Path(path)
    images = []
    for frame in frames:
        image = Image.fromarray(np.asarray(frame, dtype=np.uint8)).convert("RGB")
        if crop is not None:
            left, top, right, bottom = crop
            if not 0 <= left < right <= 1 or not 0 <= top < bottom <= 1:
                raise ValueError(f"crop must be fractions 0 <= left < right <= 1, 0 <= top < bottom <= 1; got {crop}")
            w, h = image.size
            image = image.crop((round(left * w), round(top * h), round(right * w), round(bottom * h)))
        if size is not None and max(image.size) != size:
            scale = size / max(image.size)
            image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.LANCZOS)
        if label:
            ImageDraw.Draw(image).text((4, 2), label, fill=(255, 255, 255), stroke_width=2, stroke_fill=(0, 0, 0))
        images.append(image)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".mp4":
        try:
            import imageio.v2 as imageio
            import imageio_ffmpeg  # noqa: F401
        except ImportError:
            raise ImportError("writing MP4 needs imageio-ffmpeg: pip install imageio-ffmpeg (or write a .gif)") from None
        with imageio.get_writer(path, fps=fps, macro_block_size=1) as writer:
            for image in images:
                writer.append_data(np.asarray(image))
        return path
    if path.suffix.lower() != ".gif":
        raise ValueError(f"write a .gif or an .mp4, not {path.suffix or 'a file without extension'} ({path})")
    images[0].save(path, save_all=True, append_images=images[1:], duration=max(20, round(1000 / fps)), loop=0,
                   optimize=True, disposal=1)
    return path


def render(env_id: str, policy, out: str | os.PathLike, episodes: int = 1, seed: int = 0, max_steps: int | None = None,
           every: int = 1, size: int | None = None, fps: float | None = None, label: str | None = None,
           crop: Sequence[float] | None = None) -> Path:
    """Roll ``policy`` out on ``env_id`` and write the frames to ``out`` (see :func:`write_frames`).
    ``fps`` defaults to real time (the environment's ``render_fps`` / ``every``)."""
    frames = rollout_frames(env_id, policy, episodes=episodes, seed=seed, max_steps=max_steps, every=every)
    if fps is None:
        env = make(env_id)
        fps = float(env.metadata.get("render_fps", 25)) / every
        env.close()
    return write_frames(frames, out, fps=fps, size=size, label=label, crop=crop)


def add_render_arguments(parser) -> None:
    """The frame options shared by ``offcoord render`` and ``offcoord-agents render``."""
    parser.add_argument("--out", default=None, help="output file: .gif (Pillow) or .mp4 (imageio-ffmpeg)")
    parser.add_argument("--episodes", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0, help="episode i is reset with seed + i")
    parser.add_argument("--max-steps", type=int, default=None, help="stop each episode after this many steps")
    parser.add_argument("--every", type=int, default=1, help="keep every N-th frame (smaller files)")
    parser.add_argument("--size", type=int, default=None, help="scale frames to this many pixels (longer side)")
    parser.add_argument("--fps", type=float, default=None, help="frames per second (default: real time)")
    parser.add_argument("--crop", default=None, metavar="L,T,R,B", help="keep this box of each frame (fractions, e.g. 0.1,0.2,0.9,0.8)")
    parser.add_argument("--label", default=None, help="text drawn on every frame")


def render_from_args(env_id: str, policy, args) -> Path:
    crop = None if args.crop is None else tuple(float(x) for x in args.crop.split(","))
    if crop is not None and len(crop) != 4:
        raise ValueError(f"--crop takes four fractions L,T,R,B; got {args.crop!r}")
    return render(env_id, policy, args.out, episodes=args.episodes, seed=args.seed, max_steps=args.max_steps,
                  every=args.every, size=args.size, fps=args.fps, label=args.label, crop=crop)
