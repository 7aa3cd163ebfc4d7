"""Dataset store throughput: offcoord's columnar memory-mapped store vs Minari, in one run.

Synthetic reacher-shaped data (2 agents, 10-dim global state, 2-dim joint action, 50-step episodes)
is written and read back by both. Minari writes one HDF5 group per episode and is run on a slice
it finishes in about a minute; offcoord runs on the same slice (for the ratio) and on the full
1,000,000 transitions (the target: loading it takes well under a second).

    python -m benchmarks.bench_store [--transitions 1000000] [--minari-episodes 2000]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from offcoord.data import open_dataset
from offcoord.data.cards import card_from_bytes
from offcoord.data.store import StoreWriter, read_manifest, verify_store

EPISODE_LEN = 50
STATE_DIM = 10
ENV_ID = "reacher2-independent"
CARD = f"""
format_version = 1
id = "bench-reacher"
[datasets]
"bench-reacher" = "{ENV_ID}"
[generation]
env = "{ENV_ID}"
behavior = "synthetic"
transitions = 1
seed = 0
[reference]
min_score = -40.0
max_score = -4.0
"""


def synthetic(n_episodes: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    n = n_episodes * EPISODE_LEN
    states = rng.standard_normal((n, STATE_DIM), dtype=np.float32)
    truncations = np.zeros(n, bool)
    truncations[EPISODE_LEN - 1 :: EPISODE_LEN] = True
    return {
        "states": states,
        "next_states": np.roll(states, -1, axis=0),
        "actions": rng.uniform(-1, 1, (n, 2)).astype(np.float32),
        "rewards": rng.standard_normal(n, dtype=np.float32),
        "terminations": np.zeros(n, bool),
        "truncations": truncations,
        "episode_starts": np.arange(0, n, EPISODE_LEN, dtype=np.int64),
    }


def offcoord_write(data: dict[str, np.ndarray], root: Path) -> Path:
    with StoreWriter(root / "bench-reacher", {k: (v.shape, v.dtype) for k, v in data.items()}) as w:
        for k, v in data.items():
            w.arrays[k][:] = v
        return w.commit({"card_id": "bench-reacher", "statistics": {}})


def offcoord_load_and_read(path: Path, card) -> tuple[float, float, float]:
    """Seconds to open (memory-map + verify), to read every column and per-agent view, to iterate episodes."""
    t0 = time.perf_counter()
    manifest = read_manifest(path, card.id)
    verify_store(path, card.id, manifest)  # what load_dataset checks on every load
    ds = open_dataset(path, card, "bench-reacher", manifest)
    t1 = time.perf_counter()
    total = float(ds.rewards.sum()) + float(ds.states.sum()) + float(ds.next_states.sum()) + float(ds.joint_actions.sum())
    total += sum(float(o.sum()) for o in ds.observations.values())
    t2 = time.perf_counter()
    for ep in ds.episodes():
        total += float(ep.rewards[0])
    t3 = time.perf_counter()
    return t1 - t0, t2 - t1, t3 - t2


def minari_write_and_read(data: dict[str, np.ndarray], n_episodes: int, ds_view) -> tuple[float, float]:
    import minari
    from gymnasium import spaces
    from minari.data_collector import EpisodeBuffer

    obs_space = spaces.Dict({**ds_view.view.observation_spaces, "state": spaces.Box(-np.inf, np.inf, (STATE_DIM,), np.float32)})
    act_space = spaces.Dict({a: spaces.Box(-1, 1, (1,), np.float32) for a in ds_view.agents})
    t0 = time.perf_counter()
    buffers = []
    for e in range(n_episodes):
        s = slice(e * EPISODE_LEN, (e + 1) * EPISODE_LEN)
        states = np.concatenate([data["states"][s], data["next_states"][s][-1:]])
        obs = ds_view.view(states)
        acts = ds_view.layout.split(data["actions"][s])
        buffers.append(
            EpisodeBuffer(
                id=e, observations={**obs, "state": states}, actions=acts, rewards=data["rewards"][s],
                terminations=data["terminations"][s], truncations=data["truncations"][s], infos={},
            )
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        minari.create_dataset_from_buffers("bench/reacher-v0", buffers, observation_space=obs_space,
                                           action_space=act_space, author="bench", data_format="hdf5")
    t1 = time.perf_counter()
    md = minari.load_dataset("bench/reacher-v0")
    total = 0.0
    for ep in md.iterate_episodes():
        total += float(ep.rewards.sum()) + float(ep.observations["state"].sum())
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--transitions", type=int, default=1_000_000)
    parser.add_argument("--minari-episodes", type=int, default=2000)
    args = parser.parse_args(argv)
    card = card_from_bytes(CARD.encode(), Path("<benchmark card>"))
    tmp = Path(tempfile.mkdtemp(prefix="offcoord-bench-"))
    os.environ["MINARI_DATASETS_PATH"] = str(tmp / "minari")
    try:
        n_slice = args.minari_episodes
        slice_data = synthetic(n_slice)
        n_tr = n_slice * EPISODE_LEN

        t = time.perf_counter()
        path = offcoord_write(slice_data, tmp / "slice")
        ours_write = time.perf_counter() - t
        ours_open, ours_read, ours_iter = offcoord_load_and_read(path, card)
        ds_view = open_dataset(path, card, "bench-reacher")
        minari_write, minari_read = minari_write_and_read(slice_data, n_slice, ds_view)

        rows = [
            ("write", ours_write, minari_write),
            ("load + read every episode", ours_open + ours_iter, minari_read),
        ]
        print(f"\nslice: {n_slice:,} episodes of {EPISODE_LEN} steps = {n_tr:,} transitions (both libraries)")
        print(f"{'operation':<28}{'offcoord tr/s':>16}{'minari tr/s':>16}{'ratio':>10}   target")
        for name, ours, theirs in rows:
            print(f"{name:<28}{n_tr / ours:>16,.0f}{n_tr / theirs:>16,.0f}{theirs / ours:>9.1f}x   > 1x (faster than Minari)")

        n_full = args.transitions // EPISODE_LEN
        full = synthetic(n_full, seed=1)
        t = time.perf_counter()
        path = offcoord_write(full, tmp / "full")
        full_write = time.perf_counter() - t
        del full
        full_open, full_read, full_iter = offcoord_load_and_read(path, card)
        n = n_full * EPISODE_LEN
        print(f"\nfull: {n:,} transitions (offcoord only; Minari did not finish 20,000 episodes in 30 min)")
        print(f"  write (incl. sha256 of every column):   {full_write:7.2f} s  ({n / full_write:,.0f} tr/s)")
        print(f"  load (memory-map + size/stamp checks):  {full_open:7.3f} s   target < 1 s: {'PASS' if full_open < 1 else 'FAIL'}")
        print(f"  read every column + per-agent views:    {full_read:7.3f} s")
        print(f"  iterate {n_full:,} episodes:              {full_iter:7.2f} s")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    out = [{"benchmark": "store", "what": f"{name}, offcoord vs Minari ({n_tr:,} transitions)", "value": f"{theirs / ours:.1f}x",
            "target": "> 1x", "pass": theirs / ours > 1} for name, ours, theirs in rows]
    out.append({"benchmark": "store", "what": f"load {n:,} transitions (memory-map + checks)", "value": f"{full_open:.3f} s",
                "target": "< 1 s", "pass": full_open < 1})
    return out


if __name__ == "__main__":
    main()
