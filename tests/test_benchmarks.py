"""The benchmark modules run (their speed targets are checked by ``python -m benchmarks``, not here)."""

import pytest


def test_bench_agents_skips_algorithms_without_dataset_batches(capsys):
    """MOMA-PPO trains on its own rollouts and has no batch update to time: the default run, which
    takes every registered algorithm, must report it as measured elsewhere instead of crashing."""
    pytest.importorskip("torch")
    from benchmarks import bench_agents

    rows = bench_agents.main(["--seconds", "0.01", "--algorithms", "momappo,ibc"])
    out = capsys.readouterr().out
    assert "momappo   (no dataset batches: see bench_momappo)" in out
    assert any(line.startswith("ibc ") for line in out.splitlines())
    assert [r["benchmark"] for r in rows] == ["agents", "agents"] and all(isinstance(r["pass"], bool) for r in rows)
