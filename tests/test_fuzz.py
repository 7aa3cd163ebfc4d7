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
    if text not in offcoord.list_datasets() and text not in offcoord.list_envs():  # env ids have reference scores too
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


# ---------------------------------------------------------------------------------------------
# Card files: random text, mutated real cards, and random field values. Every case ends in a
# CardError (naming the file) or a valid Card; never another exception or a silently odd card.

import json  # noqa: E402
import math  # noqa: E402
from pathlib import Path  # noqa: E402

from offcoord.errors import CardError  # noqa: E402

_CARD_PATH = Path("fuzzed-card.toml")
_REAL_CARDS = ["coordination-unfavorable", "reacher2-expert", "ant-full-replay", "ant-mixed"]


def _parse_card(data: bytes):
    """card_from_bytes, checked: a CardError naming the file, or a Card whose fields have their types."""
    from offcoord.data.cards import Card, card_from_bytes

    try:
        card = card_from_bytes(data, _CARD_PATH)
    except CardError as e:
        assert str(_CARD_PATH) in str(e)
        return None
    assert isinstance(card, Card)
    assert isinstance(card.id, str) and isinstance(card.description, str) and isinstance(card.env, str)
    assert card.datasets and all(isinstance(k, str) and isinstance(v, str) for k, v in card.datasets.items())
    assert isinstance(card.transitions, int) and card.transitions > 0 and isinstance(card.seed, int)
    assert math.isfinite(card.reference_min) and math.isfinite(card.reference_max) and card.reference_min != card.reference_max
    assert isinstance(card.expected, dict) and isinstance(card.behavior_kwargs, dict)
    assert isinstance(card.union, tuple) and all(isinstance(u, str) and u for u in card.union)
    if not card.union:
        assert sum(s.transitions for s in card.segments) == card.transitions
        assert all(isinstance(s.behavior, str) and isinstance(s.behavior_kwargs, dict) for s in card.segments)
    return card


def _real_card_bytes(card_id: str) -> bytes:
    from offcoord.data.cards import meta_dir

    return (meta_dir() / f"{card_id}.toml").read_bytes()


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return "{" + ", ".join(f"{json.dumps(str(k))} = {_toml_value(x)}" for k, x in v.items()) + "}"


def _to_toml(d: dict) -> str:
    lines = [f"{json.dumps(k)} = {_toml_value(v)}" for k, v in d.items() if not isinstance(v, dict)]
    for k, v in d.items():
        if isinstance(v, dict):
            lines.append(f"[{json.dumps(k)}]")
            lines += [f"{json.dumps(kk)} = {_toml_value(vv)}" for kk, vv in v.items()]
    return "\n".join(lines) + "\n"


_BASE_CARD = {
    "format_version": 1, "id": "fuzz", "datasets": {"fuzz": "coordination-game"},
    "generation": {"env": "coordination-game", "behavior": "uniform-random", "behavior_kwargs": {"env": "coordination-game"},
                   "transitions": 100, "seed": 0},
    "reference": {"min_score": 0.0, "max_score": 1.0},
}
_CARD_FIELDS = [("format_version",), ("id",), ("datasets",), ("description",), ("expected",), ("generation", "env"),
                ("generation", "behavior"), ("generation", "behavior_kwargs"), ("generation", "transitions"),
                ("generation", "seed"), ("generation", "union"), ("generation", "segments"), ("generation", "workers"),
                ("reference", "min_score"), ("reference", "max_score"), ("generation",), ("reference",)]
_toml_scalar = st.one_of(st.booleans(), st.integers(-(2**63), 2**63 - 1), st.floats(), st.text(max_size=8))
_toml_values = st.recursive(
    _toml_scalar,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=4), inner, max_size=3)),
    max_leaves=6,
)
# Values that are almost right: the shapes the fields take in real cards.
_near_values = st.one_of(
    st.lists(st.text(max_size=6), max_size=3),  # union
    st.lists(st.dictionaries(st.sampled_from(["behavior", "behavior_kwargs", "share", "x"]), _toml_scalar, max_size=3), max_size=3),
    st.dictionaries(st.text(max_size=6), st.text(max_size=6), max_size=3),  # datasets
    st.integers(-3, 3), st.floats(-2, 2), st.sampled_from([float("nan"), float("inf"), 0, 1, "", "coordination-game"]),
)


@settings(max_examples=500, deadline=None)
@given(changes=st.lists(st.tuples(st.sampled_from(_CARD_FIELDS), st.one_of(_toml_values, _near_values)), min_size=1, max_size=3))
def test_card_field_values(changes):
    d = json.loads(json.dumps(_BASE_CARD))
    for path, value in changes:
        target = d
        for key in path[:-1]:
            if not isinstance(target.get(key), dict):
                target[key] = {}
            target = target[key]
        target[path[-1]] = value
    _parse_card(_to_toml(d).encode())


@settings(max_examples=500, deadline=None)
@given(card_id=st.sampled_from(_REAL_CARDS), data=st.data())
def test_mutated_real_cards(card_id, data):
    text = bytearray(_real_card_bytes(card_id))
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(text) - 1))
        op = data.draw(st.sampled_from(["flip", "delete", "insert", "cut", "duplicate-line"]))
        if op == "flip":
            text[pos] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "delete":
            del text[pos : pos + data.draw(st.integers(1, 20))]
        elif op == "insert":
            text[pos:pos] = data.draw(st.sampled_from([b"=", b"[", b"]", b'"', b"\n", b"0", b"-", b"nan", b"{}", b"\x00", b"\xff"]))
        elif op == "cut":
            del text[pos:]
        else:
            start = text.rfind(b"\n", 0, pos) + 1
            end = text.find(b"\n", pos)
            text[start:start] = text[start : end + 1 if end >= 0 else len(text)]
        if not text:
            text = bytearray(b" ")
    _parse_card(bytes(text))


@settings(max_examples=300, deadline=None)
@given(data=st.one_of(st.binary(max_size=200), st.text(max_size=200).map(str.encode)))
def test_arbitrary_card_text(data):
    _parse_card(data)


def test_the_real_cards_parse():
    for card_id in _REAL_CARDS:
        assert _parse_card(_real_card_bytes(card_id)) is not None


# ---------------------------------------------------------------------------------------------
# step: missing or extra agents, non-dict actions


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(env_id=st.sampled_from(ENV_IDS), keep=st.lists(st.booleans(), min_size=4, max_size=4),
       extra=st.lists(st.one_of(st.text(max_size=8), st.integers(), st.none()), max_size=2),
       container=st.sampled_from(["dict", "list", "tuple", "array", "none"]))
def test_step_with_missing_or_extra_agents(env_id, keep, extra, container):
    env = _env(env_id)
    env.reset(seed=0)
    good = {a: env.action_space(a).sample() for a in env.agents}
    actions = {a: act for (a, act), k in zip(good.items(), keep) if k}
    for key in extra:
        if key not in env.agents:
            actions[key] = good[env.agents[0]]
    if container != "dict":
        actions = {"list": list, "tuple": tuple, "array": lambda v: np.array(list(v), dtype=object), "none": lambda v: None}[
            container](actions.values())
    before = env.state().copy()
    try:
        env.step(actions)
    except ValueError as e:
        assert np.array_equal(env.state(), before)  # refused: nothing changed
        assert str(e)
    else:  # accepted: exactly the live agents, no junk keys
        assert isinstance(actions, dict) and set(actions) == set(good)


# ---------------------------------------------------------------------------------------------
# load_dataset: arbitrary ids, "@size" spellings and size arguments (never builds anything here)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(dataset_id=st.one_of(st.text(max_size=30), st.sampled_from(offcoord.list_datasets()),
                            st.tuples(st.sampled_from(offcoord.list_datasets()), st.text(max_size=8)).map("@".join)),
       size=st.one_of(st.none(), junk, st.integers(-5, 10**7)))
def test_arbitrary_dataset_ids_and_sizes(tmp_path_factory, dataset_id, size):
    root = tmp_path_factory.getbasetemp() / "empty-cache"
    try:
        offcoord.load_dataset(dataset_id, size=size, root=root, auto_build=False)
    except UnknownIdError:
        assert dataset_id not in offcoord.list_datasets()
    except FileNotFoundError as e:  # a valid request for a dataset that is not built: names the command
        assert "offcoord generate" in str(e)
    except ValueError as e:  # a bad size, in either spelling
        assert "size" in str(e)
    else:
        raise AssertionError(f"{dataset_id!r} loaded from an empty cache")
    assert not root.exists() or not any(p for p in root.iterdir() if not p.name.startswith("."))


# ---------------------------------------------------------------------------------------------
# offcoord-agents arguments (training stubbed out: only argument handling and config checks run)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(argv=st.lists(st.sampled_from(["train", "evaluate", "reproduce", "list", "render", "ibc", "itd3bc", "nope",
                                      "coordination-favorable", "coordination", "--steps", "-3", "0", "5", "x", "--seed",
                                      "--set", "lr=1e-3", "hidden=(0,4)", "steps=nan", "batch_size=2.5", "bogus=1", "=", "normalize_observations=false", "normalize_observations=maybe",
                                      "--tier", "huge", "smoke", "--backend", "spark", "--episodes", "--out", "/nonexistent/p.pt",
                                      "--verbose", "--no-resume", "--threads"]), max_size=6))
def test_agents_cli_arguments(argv, monkeypatch):
    pytest.importorskip("torch")
    import offcoord_agents
    from offcoord_agents import reproduce
    from offcoord_agents.cli import main
    from offcoord_agents.core import make_config
    from offcoord_agents.registry import algorithm_class

    class Stub:
        meta = {"evals": [{"step": 1}]}

    def train(algorithm, dataset, seed=0, steps=None, config=None, **kwargs):
        config = {**(config or {}), **({"steps": steps} if steps is not None else {})}
        make_config(algorithm_class(algorithm), config)  # the real checks of names and values
        if dataset not in offcoord.list_datasets():
            offcoord.registry.dataset_card(dataset)  # the real unknown-id error
        return Stub()

    monkeypatch.setattr(offcoord_agents, "train", train)
    monkeypatch.setattr(reproduce, "run_all", lambda *a, **k: [])
    monkeypatch.setattr(reproduce, "summarize", lambda *a, **k: "")
    try:
        code = main(argv)
    except SystemExit as e:  # argparse usage errors
        code = e.code
    assert code in (0, 2)
