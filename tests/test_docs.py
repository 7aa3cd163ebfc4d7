"""The docs site builds with `mkdocs build --strict`; the dataset pages come from the cards."""

import runpy
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytest.importorskip("mkdocs")


def test_site_builds_strict_with_every_page(tmp_path):
    site = tmp_path / "site"
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"), "-d", str(site)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for page in ("tasks/coordination", "tasks/reacher", "tasks/ant", "datasets", "plug_in", "agents", "reproduce",
                 "results", "videos", "datasets/coordination", "datasets/reacher2"):
        assert (site / page / "index.html").exists(), page
    index = (site / "index.html").read_text()
    assert 'href="agents/"' in index and 'href="datasets/reacher2/"' in index  # in the nav
    reacher = (site / "datasets" / "reacher2" / "index.html").read_text()
    assert "reacher2-expert-leader-only" in reacher and "-42.804" in reacher and "Expected statistics" in reacher
    videos = (site / "videos" / "index.html").read_text()
    for gif in ("reacher_expert_clockwise", "reacher_expert_counterclockwise", "reacher_mixed_team"):
        assert f"img/{gif}.gif" in videos
        assert (site / "img" / f"{gif}.gif").stat().st_size < 1_000_000
    assert not (site / "gen_dataset_pages.py").exists()


def test_dataset_page_generator_is_generic(make_card):
    gen = runpy.run_path(str(ROOT / "docs" / "gen_dataset_pages.py"))
    card = make_card(id="coordination-test", expected="episodes = 1000\n")
    text = gen["card_section"](card)
    assert "## `coordination-test`" in text and "| `coordination-test` | `coordination-game` |" in text
    assert "`coordination-bernoulli`" in text and "| episodes | 1,000 |" in text
    pages = gen["family_pages"]()
    assert {"datasets/coordination.md", "datasets/reacher2.md"} <= set(pages)
    assert all(f"## `{c}`" in pages["datasets/coordination.md"] for c in ("coordination-favorable", "coordination-unfavorable"))
