"""Bad input, fuzzed (hypothesis): every case ends in a documented error or a correct result,
never a crash inside NumPy/MuJoCo or a silent wrong answer."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import offcoord
from offcoord.errors import UnknownIdError

ENV_IDS = ["coordination-game", "reacher2-independent", "ant-po"]
_ENVS = {}

junk = st.one_of(
    st.none(), st.booleans(), st.integers(-10, 10), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=5), st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=4),
    st.lists(st.integers(-3, 3), max_size=3), st.just(np.array([np.nan, 0.0])), st.just(np.zeros((2, 2))),
)


def _env(env_id):
    if env_id not in _ENVS:
        _ENVS[env_id] = offcoord.make(env_id)
    return _ENVS[env_id]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(env_id=st.sampled_from(ENV_IDS), agent_index=st.integers(0, 3), action=junk)
def test_step_with_arbitrary_actions(env_id, agent_index, action):
    env = _env(env_id)
    env.reset(seed=0)
    agent = env.possible_agents[agent_index % len(env.possible_agents)]
    actions = {a: env.action_space(a).sample() for a in env.agents}
    actions[agent] = action
    before = env.state().copy()
    try:
        env.step(actions)
    except ValueError as e:
        assert agent in str(e)  # names the agent
        assert np.array_equal(env.state(), before)  # and changed nothing
    else:  # accepted: it must really be in the space
        space = env.action_space(agent)
        arr = np.asarray(action)
        assert space.contains(arr.astype(space.dtype) if arr.dtype != object else arr)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=30))
def test_arbitrary_ids(text):
    if text in offcoord.list_envs():
        offcoord.make(text)
    else:
        with pytest.raises(UnknownIdError):
            offcoord.make(text)
    if text not in offcoord.list_datasets():
        with pytest.raises(ValueError):
            offcoord.normalized_score(text, 0.0)


@settings(max_examples=100, deadline=None)
@given(kwargs=st.dictionaries(st.sampled_from(["horizon", "render_mode", "observability", "x"]), junk, max_size=2))
def test_arbitrary_make_kwargs(kwargs):
    for env_id in ("coordination-game", "reacher2-fo"):
        try:
            env = offcoord.make(env_id, **kwargs)
        except ValueError:
            continue
        env.reset(seed=0)  # whatever was accepted works


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory):
    from offcoord.data import open_dataset
    from offcoord.data.cards import card_from_bytes
    from offcoord.data.generate import generate

    text = """
format_version = 1
id = "fuzz"
[datasets]
"fuzz" = "coordination-game"
[generation]
env = "coordination-game"
behavior = "uniform-random"
behavior_kwargs = { env = "coordination-game" }
transitions = 200
seed = 0
[reference]
min_score = 0.0
max_score = 1.0
"""
    root = tmp_path_factory.mktemp("fuzz")
    card = card_from_bytes(text.encode(), root / "fuzz.toml")
    return open_dataset(generate(card, root=root, progress=False), card, "fuzz")


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch_size=junk, rng=st.one_of(st.none(), st.integers(0, 2**32 - 1)))
def test_sample_arguments(small_dataset, batch_size, rng):
    try:
        batch = small_dataset.sample(batch_size, rng)
    except ValueError as e:
        assert "batch_size" in str(e)
    else:
        assert len(batch.rewards) == batch_size and batch.indices.max() < len(small_dataset)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(argv=st.lists(st.sampled_from(["list", "info", "generate", "verify", "export-minari", "--force", "nope",
                                      "coordination-neutral", "--quiet", "--max-episodes", "-1", "x"]), max_size=4))
def test_cli_arguments(argv, tmp_path_factory, monkeypatch):
    from offcoord.cli import main

    monkeypatch.setenv("OFFCOORD_DATA_DIR", str(tmp_path_factory.mktemp("cli")))
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path_factory.mktemp("minari")))
    try:
        code = main(argv)
    except SystemExit as e:  # argparse usage errors
        code = e.code
    assert code in (0, 2)
