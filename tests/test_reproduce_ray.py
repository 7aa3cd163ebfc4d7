"""offcoord-agents reproduce --backend ray: the coordination smoke table as Ray tasks on a local Ray,
with the same results as the local backend; the dataset cache reaches the workers."""

import json
import os
import shutil
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("ray")

from offcoord_agents.cli import main  # noqa: E402
from offcoord_agents.reproduce import plan, ray_runtime_env  # noqa: E402

from helpers import TIMING  # noqa: E402



def _comparable(path: Path) -> dict:
    results = json.loads(path.read_text())
    for key in TIMING:
        results.pop(key, None)
    return results


def test_runtime_env_carries_the_dataset_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("OFFCOORD_DATA_DIR", str(tmp_path / "somewhere"))
    monkeypatch.setenv("MUJOCO_GL", "osmesa")
    env_vars = ray_runtime_env()["env_vars"]
    assert env_vars["OFFCOORD_DATA_DIR"] == str(tmp_path / "somewhere") and env_vars["MUJOCO_GL"] == "osmesa"
    monkeypatch.delenv("OFFCOORD_DATA_DIR")
    assert "OFFCOORD_DATA_DIR" not in ray_runtime_env()["env_vars"]  # unset: each node's default cache


def test_ray_smoke_table_equals_the_local_backend(cache, tmp_path, capsys, monkeypatch):
    out = tmp_path / "ray"
    # The workers must use this test's cache: only the runtime_env can tell them (a Ray started
    # before this test would not see the variable), so make the driver's value the only one.
    assert os.environ["OFFCOORD_DATA_DIR"] == str(cache)
    assert main(["reproduce", "coordination", "--tier", "smoke", "--out", str(out), "--backend", "ray", "--workers", "2",
                 "--status-every", "0.5"]) == 0
    text = capsys.readouterr().out
    assert "| coordination-unfavorable |" in text and "[1.00 ± 0.00]" in text
    assert "runs to finish" in text  # a status line while the Ray workers start
    runs = plan("coordination", "smoke")
    assert all((r.directory(out) / "results.json").exists() for r in runs)
    # Each dataset was built once, into this test's cache (the workers saw OFFCOORD_DATA_DIR), and
    # MOMA-PPO's world models were fit there once per dataset and seed (3 x 2).
    stores = sorted(p.name for p in cache.iterdir() if not p.name.startswith("."))
    assert stores == ["coordination-favorable", "coordination-neutral", "coordination-unfavorable", "world_models"]
    assert len(list((cache / "world_models").glob("*.pt"))) == 6
    assert not [p for p in cache.rglob("*") if p.name.endswith(".tmp") or ".partial" in p.name]

    # The local backend on a copy of the output with one run of every algorithm deleted: it skips
    # the finished runs, trains those four in its process pool, and must write the same files and
    # the same table (only the timing may differ).
    local = tmp_path / "local"
    shutil.copytree(out, local)
    redo = [r for r in runs if r.dataset == "coordination-neutral" and r.seed == 1]
    assert len(redo) == 4
    for r in redo:
        shutil.rmtree(r.directory(local))
    assert main(["reproduce", "coordination", "--tier", "smoke", "--out", str(local), "--workers", "2"]) == 0
    for r in runs:
        assert _comparable(r.directory(local) / "results.json") == _comparable(r.directory(out) / "results.json"), r
    summary = (out / "coordination" / "summary.md").read_text()
    assert (local / "coordination" / "summary.md").read_text() == summary
    assert summary.startswith("# coordination table (smoke tier)") and "Strategy-agreement" in summary
    assert (out / "coordination" / "learning_curves.png").exists()


@pytest.mark.slow
def test_address_joins_a_running_cluster(cache, tmp_path, capsys, monkeypatch):
    """`--address` joins a cluster started by `ray start` (here a one-node head on this machine)."""
    # Ray >= 2.5x enables token authentication by default; this throwaway cluster and its driver opt out
    # (a real cluster's driver needs the cluster's token instead).
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    import signal
    import socket
    import subprocess
    import sys
    import time

    with socket.socket() as s:  # a free port for the head's GCS
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ray_cli = Path(sys.executable).with_name("ray")
    head = subprocess.Popen([str(ray_cli), "start", "--head", "--block", f"--port={port}", "--num-cpus=2",
                             "--include-dashboard=false", "--disable-usage-stats"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        time.sleep(8)  # let the head come up
        assert head.poll() is None, "ray start --head exited"
        out = tmp_path / "cluster"
        argv = ["reproduce", "coordination", "--tier", "smoke", "--out", str(out), "--backend", "ray", "--address", f"127.0.0.1:{port}"]
        assert main(argv) == 0
        assert all((r.directory(out) / "results.json").exists() for r in plan("coordination", "smoke"))
        assert sorted(p.name for p in cache.iterdir() if not p.name.startswith(".")) == [
            "coordination-favorable", "coordination-neutral", "coordination-unfavorable", "world_models"]
    finally:
        os.killpg(head.pid, signal.SIGTERM)  # only the head we started (its own process group)
        head.wait(timeout=60)
