"""Faults: kill -9 at many points of generation, training and reproduction; damaged checkpoints,
policies and results files; a full disk during generation.

After every kill: nothing half-written is visible under a real name, a rerun completes, and its
results equal an uninterrupted run's. Every damaged file is an error naming it and the command that
repairs it (or, for a harmless bit flip, the same content). The default tests use a few kill points
each; ``-m slow`` loops over all of them, MOMA-PPO, and the whole coordination smoke tier.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from offcoord.data.cards import card_from_bytes
from offcoord.data.generate import generate
from offcoord.data.store import read_manifest, verify_store
from offcoord.fileio import CorruptedFileError, atomic_write_bytes, read_json

from helpers import TIMING

CARD = """
format_version = 1
id = "coordination-faults"
[datasets]
"coordination-faults" = "coordination-game"
[generation]
env = "coordination-game"
behavior = "coordination-bernoulli"
behavior_kwargs = {{ p_right = [0.3, 0.6] }}
transitions = {n}
seed = 0
[reference]
min_score = 0.0
max_score = 1.0
"""

# A hook installed in a child process: SIGKILL its whole process group at the n-th call of a function.
_KILL_HOOK = textwrap.dedent(
    """
    import os, signal

    def die():
        os.killpg(os.getpgrp(), signal.SIGKILL)

    def kill_at(owner, attr, n, when="after", match=None):
        fn, count = getattr(owner, attr), [0]
        def wrapped(*args, **kwargs):
            hit = match is None or match(*args, **kwargs)
            if hit:
                count[0] += 1
            if hit and count[0] == n and when == "before":
                die()
            out = fn(*args, **kwargs)
            if hit and count[0] == n:
                die()
            return out
        setattr(owner, attr, wrapped)

    def named(name):  # match os.replace / os.rename by the destination's file name
        return lambda src, dst, *a, **k: os.path.basename(str(dst)) == name
    """
)


def _run_killed(script: str, *args, timeout: float = 300) -> None:
    """Run ``script`` in a new process group; it must die by SIGKILL (its hook fired)."""
    proc = subprocess.run([sys.executable, "-c", _KILL_HOOK + textwrap.dedent(script), *map(str, args)],
                          start_new_session=True, timeout=timeout, capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, f"not killed (rc {proc.returncode}):\n{proc.stderr[-3000:]}"


def _tree(root: Path) -> dict[str, str]:
    """Every file under ``root`` (relative path -> sha256 of its bytes)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _visible(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if not p.name.startswith("."))


# ---------------------------------------------------------------------------------------------
# (a) dataset generation

_GEN_SCRIPT = """
    import sys
    import numpy as np
    import offcoord.data.generate
    from offcoord.data import store
    from offcoord.data.cards import parse_card
    gen = sys.modules["offcoord.data.generate"]
    card, root, point, force = parse_card(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4] == "1"
    if point == "allocate":        # after the third column file is allocated
        kill_at(np.lib.format, "open_memmap", 3)
    elif point == "writing":       # with every column allocated, before the episodes are written
        kill_at(gen, "_split_episodes", 1, "before")
    elif point == "checksum":      # while the columns are being checksummed
        kill_at(store, "sha256_file", 2)
    elif point == "manifest":      # manifest written, directory not yet renamed into place
        kill_at(store, "atomic_write_json", 1)
    elif point == "aside":         # --force: old copy moved aside, new one not yet renamed in
        kill_at(store.os, "rename", 2, "before")
    elif point == "published":     # new copy in place, old copy not yet deleted
        kill_at(store.shutil, "rmtree", 1, "before")
    gen.generate(card, root=root, force=force, progress=False)
"""


def _card(tmp_path: Path, n: int, name: str):
    path = tmp_path / name / "coordination-faults.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(CARD.format(n=n))
    return card_from_bytes(path.read_bytes(), path)


def _store_bytes(path: Path) -> dict[str, str]:
    return {k: v for k, v in _tree(path).items() if not k.startswith(".")}  # without the verification stamp


def _check_generation_kills(tmp_path, points):
    old_card, new_card = _card(tmp_path, 1000, "old"), _card(tmp_path, 3000, "new")
    reference = {"old": _store_bytes(generate(old_card, root=tmp_path / "ref-old", progress=False)),
                 "new": _store_bytes(generate(new_card, root=tmp_path / "ref-new", progress=False))}
    for point, force in points:
        root = tmp_path / f"cache-{point}-{force}"
        if force:
            generate(old_card, root=root, progress=False)
        _run_killed(_GEN_SCRIPT, new_card.path, root, point, int(force))
        target = root / "coordination-faults"
        # nothing half-written under the real name: no copy, or a complete one (old or new)
        assert _visible(root) in ([], ["coordination-faults"]), point
        if target.exists():
            verify_store(target, new_card.id, read_manifest(target, new_card.id), full=True)
            assert _store_bytes(target) in (reference["old"], reference["new"]), point
            if force and point != "published":
                assert _store_bytes(target) == reference["old"], point  # the old copy stays until the new one is whole
        elif force:  # only between the two renames: the old copy is hidden, and the next build puts it back
            assert point == "aside" and list(root.glob(".old-coordination-faults-*")), point
        # a rerun completes, cleans up, and gives the same bytes as an uninterrupted build
        path = generate(new_card, root=root, force=force, progress=False)
        assert _store_bytes(path) == reference["new"], point
        assert not list(root.glob(".tmp-*")) and not list(root.glob(".old-*")), point


def test_generation_killed_at_several_points(tmp_path):
    _check_generation_kills(tmp_path, [("allocate", False), ("writing", False), ("manifest", False),
                                       ("aside", True), ("published", True)])


@pytest.mark.slow
def test_generation_killed_at_every_point(tmp_path):
    points = ["allocate", "writing", "checksum", "manifest"]
    _check_generation_kills(tmp_path, [(p, f) for p in points for f in (False, True)] + [("aside", True), ("published", True)])


@pytest.mark.slow
def test_generation_killed_at_random_times(tmp_path):
    """SIGKILL a large build after random delays (parallel workers included)."""
    card = _card(tmp_path, 400_000, "big")
    small = _card(tmp_path, 2000, "small")
    reference = _store_bytes(generate(small, root=tmp_path / "ref", progress=False))
    script = "from offcoord.data.cards import parse_card\nfrom offcoord.data.generate import generate\nimport sys\n" \
             "generate(parse_card(sys.argv[1]), root=sys.argv[2], progress=False, workers=2)\n"
    rng = np.random.default_rng(0)
    for k, delay in enumerate(rng.uniform(0.3, 3.0, 5)):
        root = tmp_path / f"cache{k}"
        proc = subprocess.Popen([sys.executable, "-c", script, str(card.path), str(root)], start_new_session=True)
        time.sleep(delay)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        target = root / "coordination-faults"
        if target.exists():  # finished before the kill: it must be whole
            verify_store(target, card.id, read_manifest(target, card.id), full=True)
        path = generate(small, root=root, force=True, progress=False)
        assert _store_bytes(path) == reference
        assert not list(root.glob(".tmp-*")) and not list(root.glob(".old-*"))


# ---------------------------------------------------------------------------------------------
# A full disk during generation

def test_full_disk_during_generation_leaves_the_cache_as_it_was(cache, monkeypatch):
    import offcoord
    from offcoord.data import store

    offcoord.build("coordination-neutral", progress=False)
    before = _tree(cache)

    def enospc(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    reserve, calls = store.reserve_space, [0]

    def reserve_then_full(path):
        calls[0] += 1
        if calls[0] == 4:  # the fourth column no longer fits
            enospc()
        reserve(path)

    for name, fake in (("reserve_space", reserve_then_full), ("atomic_write_json", enospc), ("sha256_file", enospc)):
        with monkeypatch.context() as m:
            m.setattr(store, name, fake)
            with pytest.raises(OSError) as err:
                offcoord.build("coordination-neutral", force=True, progress=False)
        assert err.value.errno == errno.ENOSPC, name
        message = str(err.value)
        assert "no space left" in message and str(cache) in message and "offcoord generate coordination-neutral" in message
        assert _tree(cache) == before, name  # the old copy, and nothing else, byte for byte
    # on an empty cache: nothing is left behind either
    calls[0] = 0
    with monkeypatch.context() as m:
        m.setattr(store, "reserve_space", reserve_then_full)
        with pytest.raises(OSError, match="no space left"):
            offcoord.build("coordination-favorable", progress=False)
    assert {k: v for k, v in _tree(cache).items() if not k.startswith(".locks")} == \
        {k: v for k, v in before.items() if not k.startswith(".locks")}
    offcoord.verify_dataset("coordination-neutral")


def test_full_disk_during_an_atomic_write_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "results.json"
    target.write_text("old")

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError, match=r"no space left.*results.json") as err:
        atomic_write_bytes(target, b"new" * 1000)
    assert err.value.errno == errno.ENOSPC
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_reserve_space_turns_a_full_disk_into_enospc_not_sigbus(tmp_path, monkeypatch):
    """The columns' blocks are allocated up front: a memory-mapped write can no longer hit a full disk."""
    from offcoord.data.store import StoreWriter

    seen = []
    real = os.posix_fallocate
    monkeypatch.setattr(os, "posix_fallocate", lambda fd, off, n: (seen.append(n), real(fd, off, n)))
    with StoreWriter(tmp_path / "x", {"a": ((1000, 4), np.float32), "b": ((10,), np.int64)}) as w:
        w.arrays["a"][:] = 1.0
        w.commit({})
    assert seen == [(tmp_path / "x" / "a.npy").stat().st_size, (tmp_path / "x" / "b.npy").stat().st_size]


# ---------------------------------------------------------------------------------------------
# (b) training

torch = None


def _torch():
    global torch
    torch = pytest.importorskip("torch")
    return torch


_TRAIN_CONFIG = {"steps": 60, "eval_every": 20, "checkpoint_every": 20, "log_every": 10, "eval_episodes": 2, "hidden": (16, 16)}
_MOMA_CONFIG = {"steps": 6, "eval_every": 2, "checkpoint_every": 2, "log_every": 1, "eval_episodes": 2, "hidden": (16, 16),
                "wm_hidden": (16, 16), "rollouts": 64, "horizon": 1, "wm_max_steps": 60, "wm_eval_every": 20}

_TRAIN_SCRIPT = """
    import json, os, sys
    from pathlib import Path
    import offcoord_agents
    import offcoord_agents.core as core
    from offcoord.data import open_dataset
    from offcoord.data.cards import parse_card
    from offcoord.data.generate import generate

    card_path, root, algo, out, config, point = sys.argv[1:7]
    card = parse_card(card_path)
    ds = open_dataset(generate(card, root=root, progress=False), card, card.id)
    kind, _, arg = point.partition(":")
    if kind == "log":              # right after logging step N (past its last checkpoint)
        step = int(arg)
        kill_at(core._Logger, "log", 1, match=lambda self, kind, s, values: s == step)
    elif kind == "checkpoint":     # while writing the N-th checkpoint: temporary written, not yet renamed
        kill_at(os, "replace", int(arg), "before", match=named("checkpoint.pt"))
    elif kind == "written":        # right after the named file is in place (policy.pt, checksums.json, results.json)
        kill_at(os, "replace", 1, match=named(arg))
    elif kind == "worldmodel":     # while fitting MOMA-PPO's world model
        import offcoord_agents.world_model as wm
        kill_at(wm.WorldModel, "fit", 1, "before")
    config = {k: tuple(v) if isinstance(v, list) else v for k, v in json.loads(config).items()}  # as the test passes them
    offcoord_agents.train(algo, ds, seed=3, out=out, config=config, progress=False)
"""


@pytest.fixture(scope="module")
def train_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("train-data")
    card = _card(root, 400, "card")
    generate(card, root=root / "cache", progress=False)
    return card, root / "cache"


def _train(card, root, algo, out, config):
    import offcoord_agents
    from offcoord.data import open_dataset

    ds = open_dataset(generate(card, root=root, progress=False), card, card.id)
    return offcoord_agents.train(algo, ds, seed=3, out=out, config=config, progress=False)


def _check_run_dir_is_whole(out: Path) -> None:
    """Every file under its real name is complete (what a kill may leave: only hidden temporaries)."""
    from offcoord_agents.policy import safe_torch_load

    for name in ("checkpoint.pt", "policy.pt"):
        if (out / name).exists():
            safe_torch_load(out / name, name, "")
    if (out / "checksums.json").exists():
        read_json(out / "checksums.json", "", checksum=True)
    if (out / "results.json").exists():
        read_json(out / "results.json", "")
    for name in ("metrics.jsonl",):
        if (out / name).exists():
            text = (out / name).read_text()
            assert text.endswith("\n") and all(json.loads(line) for line in text.splitlines())


def _same_run(a: Path, b: Path) -> None:
    from offcoord_agents.core import read_results

    ra, rb = read_results(a), read_results(b)
    for timing in TIMING:
        ra.pop(timing)
        rb.pop(timing)
    assert ra == rb  # the same evaluations, config, versions
    pa = torch.load(a / "policy.pt", weights_only=False)["state_dict"]
    pb = torch.load(b / "policy.pt", weights_only=False)["state_dict"]
    assert all(torch.equal(pa[k], pb[k]) for k in pa)
    for name in ("metrics.jsonl", "eval.csv"):  # each step logged once, with the same numbers
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert not [p.name for p in b.iterdir() if p.name.endswith(".tmp")]  # the killed writers' temporaries are gone


def _check_training_kills(tmp_path, train_data, algo, config, points):
    _torch()
    card, root = train_data
    full = tmp_path / "full"
    _train(card, root, algo, full, config)
    for point in points:
        out = tmp_path / point.replace(":", "-").replace(".", "-")
        _run_killed(_TRAIN_SCRIPT, card.path, root, algo, out, json.dumps(config), point)
        if not point.startswith("written:results"):
            assert not (out / "results.json").exists(), point  # not finished: reproduce will not skip it
        _check_run_dir_is_whole(out)
        _train(card, root, algo, out, config)  # the same command again: resumes and completes
        _same_run(full, out)


def test_training_killed_at_several_points(tmp_path, train_data):
    _check_training_kills(tmp_path, train_data, "ibc", _TRAIN_CONFIG,
                          ["log:30", "checkpoint:2", "written:checksums.json"])


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["ibc", "maiql", "momappo"])
def test_training_killed_at_every_point(tmp_path, train_data, algo):
    config = _MOMA_CONFIG if algo == "momappo" else _TRAIN_CONFIG
    points = ["log:10", "log:30", "log:60", "checkpoint:1", "checkpoint:3", "written:policy.pt",
              "written:checksums.json", "written:results.json"]
    if algo == "momappo":  # (a kill between the world model's save and the first checkpoint: see below)
        points = ["worldmodel", "log:3", "checkpoint:2", "written:policy.pt", "written:checksums.json"]
    _check_training_kills(tmp_path, train_data, algo, config, points)


@pytest.mark.slow
def test_momappo_killed_before_its_first_checkpoint(tmp_path, train_data):
    _check_training_kills(tmp_path, train_data, "momappo", _MOMA_CONFIG, ["log:1"])


# ---------------------------------------------------------------------------------------------
# (c) reproduction

_REPRO_SCRIPT = """
    import os, sys
    from pathlib import Path
    import offcoord_agents.core as core
    from offcoord_agents import reproduce

    out, point, subset = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    runs = reproduce.plan("coordination", "smoke")
    if subset != "all":
        runs = [r for r in runs if r.seed == 0 and r.dataset == "coordination-favorable" and r.algorithm in subset.split(",")]
    kind, _, arg = point.partition(":")
    if kind == "results":          # right after the N-th run's results.json is in place (in the worker)
        kill_at(os, "replace", int(arg), match=named("results.json"))
    elif kind == "checkpoint":     # while the N-th checkpoint is being written (in the worker)
        kill_at(os, "replace", int(arg), "before", match=named("checkpoint.pt"))
    elif kind == "eval":           # right after the N-th evaluation is logged (in the worker)
        kill_at(core._Logger, "log", int(arg), match=lambda self, kind, s, v: kind == "eval")
    elif kind == "summary":        # while the table is being written (in the parent)
        kill_at(os, "replace", 1, "before", match=named("summary.md"))
    reproduce.run_all(runs, out, workers=1, log=lambda *a: None)
    reproduce.summarize("coordination", runs, out, "smoke")
"""


def _subset(names: str):
    from offcoord_agents.reproduce import plan

    runs = plan("coordination", "smoke")
    if names == "all":
        return runs
    return [r for r in runs if r.seed == 0 and r.dataset == "coordination-favorable" and r.algorithm in names.split(",")]


def _reproduce(out: Path, runs) -> None:
    from offcoord_agents.reproduce import run_all, summarize

    run_all(runs, out, workers=1, log=lambda *a: None)
    summarize("coordination", runs, out, "smoke")


def _comparable(run_dir: Path) -> dict:
    from offcoord_agents.core import read_results

    results = read_results(run_dir)
    for timing in TIMING:
        results.pop(timing)
    return results


def _check_reproduce_kills(tmp_path, names: str, points):
    _torch()
    runs = _subset(names)
    full = tmp_path / "full"
    _reproduce(full, runs)
    for point in points:
        out = tmp_path / point.replace(":", "-")
        _run_killed(_REPRO_SCRIPT, out, point, names)
        for r in runs:
            if r.directory(out).exists():
                _check_run_dir_is_whole(r.directory(out))
        summary = out / "coordination" / "summary.md"
        assert not summary.exists() or summary.read_text() == (full / "coordination" / "summary.md").read_text()
        _reproduce(out, runs)  # the same command again
        for r in runs:
            assert _comparable(r.directory(out)) == _comparable(r.directory(full)), (point, r)
        assert (out / "coordination" / "summary.md").read_text() == (full / "coordination" / "summary.md").read_text()


def test_reproduction_killed_at_several_points(cache, tmp_path):
    _check_reproduce_kills(tmp_path, "ibc,maiql", ["results:1", "checkpoint:2"])


@pytest.mark.slow
def test_reproduction_of_the_smoke_tier_killed_at_every_point(cache, tmp_path):
    _check_reproduce_kills(tmp_path, "all", ["eval:1", "results:3", "checkpoint:10", "eval:17", "results:23", "summary"])


# ---------------------------------------------------------------------------------------------
# Damaged checkpoints, policies and results files

def _flips(data: bytes, count: int, seed: int = 0):
    """``count`` single-bit flips spread over the whole file (each byte position at least once when it fits)."""
    rng = np.random.default_rng(seed)
    positions = np.linspace(0, len(data) - 1, count).astype(int)
    for pos, bit in zip(positions, rng.integers(0, 8, count)):
        damaged = bytearray(data)
        damaged[pos] ^= 1 << int(bit)
        yield int(pos), bytes(damaged)


def _equal(a, b) -> bool:
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    if torch is not None and isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, float) and np.isnan(a):
        return isinstance(b, float) and np.isnan(b)
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and np.array_equal(a, b)
    return a == b


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, train_data):
    _torch()
    out = tmp_path_factory.mktemp("finished") / "run"
    card, root = train_data
    _train(card, root, "ibc", out, _TRAIN_CONFIG)
    return out


def test_every_bit_flip_in_the_zip_directory_is_caught_or_harmless(tmp_path):
    """The zip's directory (record offsets, sizes, names) is outside every record's CRC-32: a flip
    there once made torch read other bytes for a tensor with every CRC passing. The sha256 sealed in
    the zip comment catches it."""
    from offcoord_agents.policy import atomic_torch_save, safe_torch_load

    torch = _torch()
    clean = {"w": torch.arange(64, dtype=torch.float32), "b": torch.ones(3, 5), "meta": {"seed": 1}}
    path = tmp_path / "f.pt"
    atomic_torch_save(clean, path)
    original = path.read_bytes()
    start = original.find(b"PK\x01\x02")  # the central directory, then its end record and the seal
    assert 0 < start < len(original) - 22
    caught = 0
    for pos in range(start, len(original)):
        for bit in (0, 3, 7):
            damaged = bytearray(original)
            damaged[pos] ^= 1 << bit
            path.write_bytes(bytes(damaged))
            try:
                loaded = safe_torch_load(path, "test file", "fix")
            except CorruptedFileError:
                caught += 1
            else:
                assert _equal(loaded, clean), f"a flip of bit {bit} at byte {pos} loaded silently as different content"
    assert caught > 0.9 * 3 * (len(original) - start)
    # The case the CRCs miss: the MS-DOS "directory" attribute set on a tensor's record makes torch
    # read that tensor as other bytes, while every record still passes its CRC-32.
    entry = original.find(b"PK\x01\x02")
    while original[entry + 46:entry + 46 + 13] != b"archive/data/":
        entry = original.find(b"PK\x01\x02", entry + 1)
    damaged = bytearray(original)
    damaged[entry + 38] |= 0x10
    path.write_bytes(bytes(damaged))
    with pytest.raises(CorruptedFileError, match="sha256 sealed"):
        safe_torch_load(path, "test file", "fix")
    path.write_bytes(original + b"\0" * 8)  # bytes appended after the seal
    with pytest.raises(CorruptedFileError, match="8 bytes appended after its sealed sha256"):
        safe_torch_load(path, "test file", "fix")
    torch.save(clean, path)  # a file written before the seal existed: CRC checks only
    assert _equal(safe_torch_load(path, "test file", "fix"), clean)


def test_every_bit_flip_of_a_policy_or_checkpoint_is_caught_or_harmless(finished_run, tmp_path):
    import offcoord_agents
    from offcoord_agents.policy import safe_torch_load

    for name, count in (("policy.pt", 600), ("checkpoint.pt", 600)):
        original = (finished_run / name).read_bytes()
        clean = safe_torch_load(finished_run / name, name, "")
        caught = 0
        target = tmp_path / name
        for pos, damaged in _flips(original, count):
            target.write_bytes(damaged)
            try:
                if name == "policy.pt":
                    loaded = offcoord_agents.load_policy(target)
                    same = _equal(loaded.actor.state_dict(), clean["state_dict"]) and loaded.meta == clean["meta"]
                else:
                    same = _equal(safe_torch_load(target, name, "the fix"), clean)
            except CorruptedFileError as e:
                assert str(target) in str(e) and e.path == target, pos
                caught += 1
            else:
                assert same, f"{name}: the bit flip at byte {pos} loaded silently as different content"
        # the rest fall in alignment padding and unchecked zip header fields: loaded as the same content (checked above)
        assert caught > 0.75 * count, (name, caught)
        for cut in (0, 10, len(original) // 2, len(original) - 1):  # truncations
            target.write_bytes(original[:cut])
            with pytest.raises(CorruptedFileError, match="truncated"):
                safe_torch_load(target, name, "fix")
    # the messages name the command that repairs the file
    target = tmp_path / "policy.pt"
    target.write_bytes((finished_run / "policy.pt").read_bytes()[:100])
    with pytest.raises(CorruptedFileError, match=r"policy.pt.*offcoord-agents train .* --out"):
        offcoord_agents.load_policy(target)


def test_a_damaged_checkpoint_stops_the_resume_with_the_fix_which_works(tmp_path, train_data):
    _torch()
    card, root = train_data
    import zipfile

    out = tmp_path / "run"
    config = {**_TRAIN_CONFIG, "steps": 40}
    _train(card, root, "ibc", out, config)
    ckpt = out / "checkpoint.pt"
    with zipfile.ZipFile(ckpt) as z:  # a bit inside the first tensor's data
        info = next(i for i in z.infolist() if "/data/" in i.filename)
    data = bytearray(ckpt.read_bytes())
    name_len, extra_len = np.frombuffer(bytes(data[info.header_offset + 26 : info.header_offset + 30]), "<u2")
    data[info.header_offset + 30 + int(name_len) + int(extra_len) + 5] ^= 0x04
    ckpt.write_bytes(bytes(data))
    with pytest.raises(CorruptedFileError) as err:
        _train(card, root, "ibc", out, config)
    assert str(ckpt) in str(err.value) and f"rm {ckpt}" in str(err.value)
    ckpt.unlink()  # the fix: restart from scratch
    _train(card, root, "ibc", out, config)
    full = tmp_path / "full"
    _train(card, root, "ibc", full, config)
    _same_run(full, out)


@pytest.mark.parametrize("name", ["results.json", "checksums.json", "metrics.jsonl", "eval.csv"])
def test_every_bit_flip_or_truncation_of_a_results_file_is_caught_or_harmless(finished_run, tmp_path, name):
    from offcoord_agents.core import read_results

    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    clean = read_results(run)
    original = (run / name).read_bytes()
    caught = 0
    for pos, damaged in _flips(original, min(400, len(original))):
        (run / name).write_bytes(damaged)
        try:
            got = read_results(run)
        except CorruptedFileError as e:
            assert e.path == run / name and "offcoord-agents" in e.fix and str(run) in e.fix, pos
            caught += 1
        else:
            assert _equal(got, clean), f"{name}: the bit flip at byte {pos} was read silently as different results"
    assert caught == min(400, len(original))  # every flip in a checksummed file is caught
    for cut in (0, 1, len(original) // 2, len(original) - 2):  # (without only its final newline, checksums.json reads the same)
        (run / name).write_bytes(original[:cut])
        with pytest.raises(CorruptedFileError, match=name):
            read_results(run)


def test_damaged_results_in_a_reproduction_are_named_and_the_fix_works(cache, tmp_path, capsys, monkeypatch):
    _torch()
    from offcoord_agents import reproduce
    from offcoord_agents.cli import main

    runs = _subset("ibc")
    out = tmp_path / "repro"
    _reproduce(out, runs)
    before = _comparable(runs[0].directory(out))
    results = runs[0].directory(out) / "results.json"
    text = results.read_text()
    results.write_text(text.replace('"step": 100', '"step": 101', 1))  # a valid JSON edit: a silent wrong number
    with pytest.raises(CorruptedFileError) as err:
        _reproduce(out, runs)
    message = str(err.value)
    assert str(results) in message and f"rm {results}" in message and "offcoord-agents reproduce" in message
    # the same error crosses a process pool (and Ray) intact
    again = pickle.loads(pickle.dumps(err.value))
    assert str(again) == message and again.path == results
    # the CLI turns it into an error line, exit code 2
    monkeypatch.setattr(reproduce, "plan", lambda table, tier, **filters: runs)
    assert main(["reproduce", "coordination", "--tier", "smoke", "--out", str(out), "--workers", "1"]) == 2
    assert str(results) in capsys.readouterr().err
    results.unlink()  # the fix named in the message, then the same command
    _reproduce(out, runs)
    assert _comparable(runs[0].directory(out)) == before


def test_damaged_logs_stop_the_resume_with_the_fix(tmp_path, train_data):
    _torch()
    card, root = train_data
    out = tmp_path / "run"
    config = {**_TRAIN_CONFIG, "steps": 40}
    _train(card, root, "ibc", out, config)
    log = out / "metrics.jsonl"
    log.write_bytes(log.read_bytes()[:-30])
    with pytest.raises(CorruptedFileError, match=rf"{log}.*truncated.*rm -r {out}"):
        _train(card, root, "ibc", out, config)
