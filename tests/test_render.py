"""offcoord render / offcoord-agents render: GIFs of experts, random teams and saved agents."""

import os
import subprocess
import sys

import numpy as np
import pytest

import offcoord
from offcoord import render as R
from offcoord.cli import main as offcoord_main

PIL = pytest.importorskip("PIL.Image")


@pytest.fixture(scope="module")
def gl():
    """Skip (only) where no OpenGL context can be made with this session's MUJOCO_GL."""
    proc = subprocess.run([sys.executable, "-c", R._PROBE], env={**os.environ, "PYOPENGL_PLATFORM": os.environ.get("MUJOCO_GL", "egl")},
                          capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        pytest.skip(f"no OpenGL context with MUJOCO_GL={os.environ.get('MUJOCO_GL')}: {proc.stderr.strip()[-300:]}")


def _gif(path):
    image = PIL.open(path)
    frames = []
    for i in range(image.n_frames):
        image.seek(i)
        frames.append(np.asarray(image.convert("RGB")))
    return frames


def test_reacher_expert_gif_from_the_cli(gl, tmp_path, capsys):
    out = tmp_path / "expert.gif"
    assert offcoord_main(["render", "reacher2-fo", "--policy", "expert-clockwise", "--max-steps", "9", "--out", str(out)]) == 0
    frames = _gif(out)
    assert len(frames) == 10 and frames[0].shape == (480, 480, 3)  # the reset frame + 9 steps
    assert not np.array_equal(frames[0], frames[-1])  # the arm moved
    assert str(out) in capsys.readouterr().out


def test_random_team_gif_small_and_labelled(gl, tmp_path):
    out = R.render("reacher2-independent", R.make_policy("reacher2-independent", "random"), tmp_path / "random.gif",
                   episodes=2, max_steps=4, size=96, crop=(0.1, 0.2, 0.9, 0.8), label="random")
    frames = _gif(out)
    assert len(frames) == 2 * 5 and frames[0].shape == (72, 96, 3)


def test_leader_only_experts_act_like_in_the_full_view(gl):
    # The follower sees no target in leader-only: its expert observes the independent view instead,
    # so the same team on the same seeds draws the same frames in every view.
    fo = R.rollout_frames("reacher2-fo", R.make_policy("reacher2-fo", "expert-mixed"), max_steps=6)
    lo = R.rollout_frames("reacher2-leader-only", R.make_policy("reacher2-leader-only", "expert-mixed"), max_steps=6)
    assert len(fo) == 7 and all(np.array_equal(a, b) for a, b in zip(fo, lo))


def test_the_expert_mixture_alternates_per_episode():
    team = R.make_policy("reacher2-fo", "expert")
    team.reset()
    first = team.current
    team.reset()
    assert team.current is not first and team.current["agent_0"].strategy == "counter-clockwise"


def test_envs_without_frames_fail_clearly(tmp_path, capsys):
    assert offcoord_main(["render", "coordination-game", "--policy", "random", "--out", str(tmp_path / "x.gif")]) == 2
    err = capsys.readouterr().err
    assert "coordination-game has no rgb_array rendering" in err
    assert not (tmp_path / "x.gif").exists()


def test_unknown_policy_lists_the_choices(capsys):
    assert offcoord_main(["render", "reacher2-fo", "--policy", "expert-sideways", "--out", "x.gif"]) == 2
    assert "expert-counterclockwise" in capsys.readouterr().err
    assert offcoord_main(["render", "reacher2-fo", "--list"]) == 0
    assert capsys.readouterr().out.split() == ["expert", "expert-clockwise", "expert-counterclockwise", "expert-mixed", "random"]
    # Any dataset card's behavior is a policy of its task (ant's behavior policies plug in this way).
    assert "unfavorable" in R.policy_names("coordination-game")


def test_write_frames_formats_and_missing_pillow(tmp_path, monkeypatch):
    frames = [np.full((40, 60, 3), v, np.uint8) for v in (0, 128, 255)]
    assert len(_gif(R.write_frames(frames, tmp_path / "a.gif", size=30))) == 3
    with pytest.raises(ValueError, match=r"\.gif or an \.mp4"):
        R.write_frames(frames, tmp_path / "a.avi")
    with pytest.raises(ValueError, match="no frames"):
        R.write_frames([], tmp_path / "b.gif")
    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(ImportError, match="pip install pillow"):
        R.write_frames(frames, tmp_path / "c.gif")


def test_mp4_when_imageio_ffmpeg_is_installed(tmp_path):
    pytest.importorskip("imageio_ffmpeg")
    frames = [np.full((32, 32, 3), v, np.uint8) for v in range(0, 250, 25)]
    assert R.write_frames(frames, tmp_path / "a.mp4", fps=10).stat().st_size > 0


def test_gl_backend_choice(monkeypatch):
    monkeypatch.setenv("MUJOCO_GL", "osmesa")
    assert R.ensure_gl() == "osmesa"  # the user's choice is kept
    monkeypatch.delenv("MUJOCO_GL")
    monkeypatch.delenv("PYOPENGL_PLATFORM", raising=False)
    monkeypatch.setattr(sys, "platform", "linux")
    tried = []

    def fake_run(cmd, env, **kw):  # EGL missing, OSMesa present
        tried.append(env["MUJOCO_GL"])
        return subprocess.CompletedProcess(cmd, 0 if env["MUJOCO_GL"] == "osmesa" else 1, "", "no EGL display")

    monkeypatch.setattr(R.subprocess, "run", fake_run)
    assert R.ensure_gl() == "osmesa" and tried == ["egl", "osmesa"]
    assert os.environ["MUJOCO_GL"] == "osmesa" and os.environ["PYOPENGL_PLATFORM"] == "osmesa"
    monkeypatch.delenv("MUJOCO_GL")
    monkeypatch.setattr(R.subprocess, "run", lambda cmd, env, **kw: subprocess.CompletedProcess(cmd, 1, "", "nope"))
    with pytest.raises(RuntimeError, match="libegl1"):
        R.ensure_gl()


def test_saved_agent_gif(gl, tiny_datasets, tmp_path, capsys):
    pytest.importorskip("torch")
    import offcoord_agents
    from offcoord_agents.cli import main as agents_main

    run = tmp_path / "run"
    offcoord_agents.train("ibc", tiny_datasets["reacher2-leader-only"], seed=0, steps=5,
                          config={"eval_every": 5, "eval_episodes": 1, "hidden": (16, 16)}, out=run, progress=False)
    out = tmp_path / "agent.gif"
    assert agents_main(["render", str(run), "--out", str(out), "--max-steps", "9", "--every", "3", "--size", "120"]) == 0
    frames = _gif(out)
    assert len(frames) == 4 and frames[0].shape == (120, 120, 3)
    assert "reacher2-leader-only" in capsys.readouterr().out
    assert agents_main(["render", str(tmp_path / "nowhere"), "--out", str(out)]) == 2
    assert offcoord.list_envs()  # offcoord untouched by the agents' render
