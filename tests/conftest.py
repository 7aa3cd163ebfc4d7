import os
import textwrap
from pathlib import Path

import pytest

os.environ.setdefault("MUJOCO_GL", "egl")


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
