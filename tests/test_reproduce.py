"""offcoord-agents reproduce: the smoke tier of the coordination table, end to end."""

import json

import pytest

pytest.importorskip("torch")

from offcoord_agents.cli import main  # noqa: E402
from offcoord_agents.reproduce import plan  # noqa: E402


def test_plan_follows_the_paper_layout():
    runs = plan("reacher", "quick")
    assert {r.algorithm for r in runs if r.dataset == "reacher2-expert-fo"} >= {"iql", "momappo", "ibc"}
    assert not any(r.algorithm == "iql" and r.dataset != "reacher2-expert-fo" for r in runs)  # centralized: FO only
    assert len(plan("coordination", "quick")) == 4 * 3 * 5
    with pytest.raises(ValueError, match="unknown table"):
        plan("ant", "smoke")
    with pytest.raises(ValueError, match="unknown tier"):
        plan("coordination", "huge")


def test_smoke_tier_runs_prints_and_skips_finished_runs(cache, tmp_path, capsys):
    out = tmp_path / "reproduce"
    assert main(["reproduce", "coordination", "--tier", "smoke", "--out", str(out), "--workers", "2"]) == 0
    text = capsys.readouterr().out
    assert "| coordination-unfavorable |" in text and "[1.00 ± 0.00]" in text  # the paper's numbers beside ours
    summary = (out / "coordination" / "summary.md").read_text()
    assert "momappo" in summary and "Strategy-agreement" in summary
    results = json.loads((out / "coordination" / "momappo" / "coordination-unfavorable" / "seed0" / "results.json").read_text())
    assert results["final"]["step"] == results["config"]["steps"] and "versions" in results
    mtime = (out / "coordination" / "ibc" / "coordination-neutral" / "seed1" / "results.json").stat().st_mtime_ns
    assert main(["reproduce", "coordination", "--tier", "smoke", "--out", str(out), "--workers", "2"]) == 0
    assert (out / "coordination" / "ibc" / "coordination-neutral" / "seed1" / "results.json").stat().st_mtime_ns == mtime
