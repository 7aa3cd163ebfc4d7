import os
import textwrap
from pathlib import Path

import pytest

os.environ.setdefault("MUJOCO_GL", "egl")

try:  # CI runs the same fuzz cases every time (a red build must be reproducible); locally they vary
    from hypothesis import settings

    settings.register_profile("ci", derandomize=True, print_blob=True)
    if os.environ.get("CI"):
        settings.load_profile("ci")
except ImportError:  # pragma: no cover - hypothesis is in the dev extra
    pass


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """An empty dataset cache for one test (never the user's cache)."""
    root = tmp_path / "cache"
    monkeypatch.setenv("OFFCOORD_DATA_DIR", str(root))
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    return root


@pytest.fixture
def make_card(tmp_path):
    """Write a coordination-game card with the given fields into a temp dir and parse it."""
    from offcoord.data.cards import parse_card

    def _make(id="coordination-test", transitions=1000, p_right=(0.5, 0.5), seed=0, expected="", horizon_env="coordination-game"):
        path = tmp_path / "cards" / f"{id}.toml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            textwrap.dedent(
                f"""
                format_version = 1
                id = "{id}"
                [datasets]
                "{id}" = "{horizon_env}"
                [generation]
                env = "{horizon_env}"
                behavior = "coordination-bernoulli"
                behavior_kwargs = {{ p_right = [{p_right[0]}, {p_right[1]}] }}
                transitions = {transitions}
                seed = {seed}
                [reference]
                min_score = 0.0
                max_score = 1.0
                [expected]
                """
            )
            + textwrap.dedent(expected)
        )
        return parse_card(path)

    return _make


@pytest.fixture(scope="session")
def tiny_datasets(tmp_path_factory):
    """Small uniform-random datasets on a continuous task with unequal observation sizes
    (reacher2-leader-only: 8 and 6 values) and on the coordination game, built once per session."""
    from offcoord.data import open_dataset
    from offcoord.data.cards import card_from_bytes
    from offcoord.data.generate import generate

    root = tmp_path_factory.mktemp("tiny")
    out = {}
    for env_id, n in (("reacher2-leader-only", 600), ("coordination-game", 400)):
        card_id = f"tiny-{env_id}"
        text = textwrap.dedent(
            f"""
            format_version = 1
            id = "{card_id}"
            [datasets]
            "{card_id}" = "{env_id}"
            [generation]
            env = "{env_id}"
            behavior = "uniform-random"
            behavior_kwargs = {{ env = "{env_id}" }}
            transitions = {n}
            seed = 0
            [reference]
            min_score = -40.0
            max_score = 0.0
            """
        )
        card = card_from_bytes(text.encode(), root / f"{card_id}.toml")
        path = generate(card, root=root, progress=False)
        out[env_id] = open_dataset(path, card, card_id)
    return out
