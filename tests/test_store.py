"""The trajectory store: deterministic, atomic, verified generation; corruption is caught and named."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import offcoord
from offcoord.data.store import open_columns, read_manifest, verify_store
from offcoord.data.generate import generate
from offcoord.errors import CardError, DatasetCorruptedError, DatasetVerificationError

COLUMNS = ("states", "next_states", "actions", "rewards", "terminations", "truncations", "episode_starts")


def _load_columns(path, card):
    manifest = read_manifest(path, card.id)
    verify_store(path, card.id, manifest, full=True)
    return open_columns(path, card.id, manifest)


def test_same_seed_same_bytes_other_seed_other_data(tmp_path, make_card):
    card = make_card(transitions=2000, seed=3)
    a = generate(card, root=tmp_path / "a", progress=False)
    b = generate(card, root=tmp_path / "b", progress=False)
    for col in COLUMNS:
        assert (a / f"{col}.npy").read_bytes() == (b / f"{col}.npy").read_bytes(), col
    other = generate(make_card(id="coordination-other", transitions=2000, seed=4), root=tmp_path / "c", progress=False)
    assert not np.array_equal(np.load(a / "actions.npy"), np.load(other / "actions.npy"))


def test_last_episode_cut_by_budget_is_a_truncation(tmp_path):
    from offcoord.data.cards import card_from_bytes

    text = textwrap.dedent(
        """
        format_version = 1
        id = "reacher-cut"
        [datasets]
        "reacher-cut" = "reacher2-fo"
        [generation]
        env = "reacher2-fo"
        behavior = "uniform-random"
        behavior_kwargs = { env = "reacher2-fo" }
        transitions = 120
        seed = 0
        [reference]
        min_score = -40.0
        max_score = 0.0
        """
    )
    card = card_from_bytes(text.encode(), tmp_path / "reacher-cut.toml")
    cols = _load_columns(generate(card, root=tmp_path, progress=False), card)
    assert cols["episode_starts"].tolist() == [0, 50, 100]
    assert np.flatnonzero(cols["truncations"]).tolist() == [49, 99, 119]  # two time limits, one budget cut
    assert not cols["terminations"].any()
    # within an episode, next_states[t] == states[t + 1]
    assert np.array_equal(cols["next_states"][:49], cols["states"][1:50])


def test_generation_is_checked_against_the_card(tmp_path, make_card):
    card = make_card(transitions=500, expected="mean_return = 0.9\nmean_return_tolerance = 0.05\n")
    root = tmp_path / "cache"
    with pytest.raises(DatasetVerificationError, match="mean return"):
        generate(card, root=root, progress=False)
    assert [p.name for p in root.iterdir() if not p.name.startswith(".")] == []
    assert not list(root.glob(".tmp-*"))
    with pytest.raises(CardError, match="unknown"):
        generate(make_card(transitions=50, expected="mean_retrun = 0.5\n"), root=root, progress=False)
    with pytest.raises(DatasetVerificationError, match="coverage"):  # p=1: only (right, right) appears
        generate(make_card(transitions=50, p_right=(1.0, 1.0), expected="min_joint_action_count = 1\n"), root=root, progress=False)


def test_card_errors_name_the_file_and_field(tmp_path):
    from offcoord.data.cards import parse_card

    bad = tmp_path / "bad.toml"
    bad.write_text("format_version = 1\nid = 'bad'\n[datasets]\nbad='coordination-game'\n[generation]\nenv='x'\n[reference]\nmin_score=0\nmax_score=1\n")
    with pytest.raises(CardError, match=r"bad.toml.*generation.behavior"):
        parse_card(bad)
    bad.write_text("this is not toml ===")
    with pytest.raises(CardError, match="not valid TOML"):
        parse_card(bad)


@pytest.mark.parametrize("damage", ["truncate", "bitflip", "delete", "manifest"])
def test_corrupted_cache_is_detected_and_named(cache, damage):
    ds = offcoord.load_dataset("coordination-neutral", progress=False)
    path = ds.path
    del ds
    target = path / "rewards.npy"
    if damage == "truncate":
        with open(target, "r+b") as f:
            f.truncate(target.stat().st_size - 7)
    elif damage == "bitflip":
        data = bytearray(target.read_bytes())
        data[-3] ^= 0x10
        target.write_bytes(bytes(data))
    elif damage == "delete":
        target.unlink()
    else:
        target = path / "manifest.json"
        target.write_text(target.read_text()[:40])
    with pytest.raises(DatasetCorruptedError) as err:
        offcoord.load_dataset("coordination-neutral")
    assert str(target) in str(err.value)
    assert "offcoord generate coordination-neutral --force" in str(err.value)
    # the command named in the error repairs it
    from offcoord.cli import main

    assert main(["generate", "coordination-neutral", "--force", "--quiet"]) == 0
    assert len(offcoord.load_dataset("coordination-neutral")) == 10_000
    assert main(["verify", "coordination-neutral"]) == 0


def test_verify_rehashes_even_when_mtime_is_restored(cache):
    ds = offcoord.load_dataset("coordination-favorable", progress=False)
    target = ds.path / "actions.npy"
    st = target.stat()
    data = bytearray(target.read_bytes())
    data[-1] ^= 0x01
    target.write_bytes(bytes(data))
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    with pytest.raises(DatasetCorruptedError, match="checksum"):
        offcoord.verify_dataset("coordination-favorable")


def test_dataset_built_from_an_older_card_is_refused(cache):
    ds = offcoord.load_dataset("coordination-neutral", progress=False)
    manifest = json.loads((ds.path / "manifest.json").read_text())
    manifest["recipe_sha256"] = "0" * 64
    (ds.path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DatasetCorruptedError, match="different version of the card"):
        offcoord.load_dataset("coordination-neutral")


def test_a_copy_built_before_stores_recorded_their_recipe_is_refused_and_rebuilt(cache, capsys):
    """Such a copy came from an earlier generator whose random streams differ (found on a machine
    whose cached coordination and reacher data did not match a fresh build of the same card)."""
    from offcoord.cli import main

    ds = offcoord.load_dataset("coordination-neutral", progress=False)
    fresh = np.asarray(ds.joint_actions).copy()
    manifest = json.loads((ds.path / "manifest.json").read_text())
    del manifest["recipe_sha256"]
    (ds.path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DatasetCorruptedError, match="earlier version of offcoord.*offcoord generate coordination-neutral --force"):
        offcoord.load_dataset("coordination-neutral")
    assert main(["generate", "coordination-neutral", "--force"]) == 0  # the command the error names
    assert np.array_equal(offcoord.load_dataset("coordination-neutral").joint_actions, fresh)


def test_only_the_recipe_decides_whether_a_cached_copy_is_valid(tmp_path):
    """Editing a card's words, reference scores or expectations keeps its data; editing how it is made does not."""
    from offcoord.data.cards import card_from_bytes, recipe_key, weights_path

    text = offcoord.registry.dataset_card("coordination-neutral").path.read_text()
    card = card_from_bytes(text.encode(), tmp_path / "a.toml")
    reworded = text.replace("[reference]", "# a new comment\n[reference]").replace("min_score = 0.0", "min_score = 0.5")
    reworded = card_from_bytes(reworded.replace('description = "', 'description = "Reworded. ').encode(), tmp_path / "b.toml")
    assert reworded.sha256 != card.sha256 and recipe_key(reworded) == recipe_key(card)
    reseeded = card_from_bytes(text.replace("seed = 0", "seed = 1").encode(), tmp_path / "c.toml")
    assert recipe_key(reseeded) != recipe_key(card)
    assert recipe_key(card.resized(500)) not in (recipe_key(card), recipe_key(card.resized(501)))
    mixed = offcoord.registry.dataset_card("ant-mixed")
    assert recipe_key(mixed) != mixed.recipe_sha256  # folds in the members' recipes
    # a policy's weights are part of the recipe: new weights under the same file name are new data
    expert = offcoord.registry.dataset_card("ant-expert")
    weights = tmp_path / "ant-expert.npz"
    weights.write_bytes(weights_path("ant-expert.npz").read_bytes())
    here = card_from_bytes(expert.path.read_bytes().replace(b'"ant-expert.npz"', f'"{weights}"'.encode()),
                           tmp_path / "ant-expert.toml")
    same = recipe_key(here)
    weights.write_bytes(weights_path("ant-medium.npz").read_bytes())
    assert recipe_key(here) != same
    weights.write_bytes(weights_path("ant-expert.npz").read_bytes())
    assert recipe_key(here) == same  # the key follows the bytes, not the file's name or time


_KILL_SCRIPT = textwrap.dedent(
    """
    import sys
    from offcoord.data.cards import parse_card
    from offcoord.data.generate import generate
    generate(parse_card(sys.argv[1]), root=sys.argv[2], progress=False)
    """
)


def test_killed_generator_leaves_nothing_visible_and_rerun_completes(tmp_path, make_card):
    card = make_card(id="coordination-big", transitions=3_000_000)
    root = tmp_path / "cache"
    proc = subprocess.Popen([sys.executable, "-c", _KILL_SCRIPT, str(card.path), str(root)])
    try:
        deadline = time.time() + 60
        while time.time() < deadline and not list(root.glob(".tmp-*/states.npy")):
            time.sleep(0.1)
        time.sleep(1.0)  # let it write a while
        assert proc.poll() is None, "generator finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    visible = [p.name for p in root.iterdir() if not p.name.startswith(".")]
    assert visible == []  # no half-written dataset under its name
    assert list(root.glob(".tmp-*"))  # the partial work is only in a hidden temporary directory
    # a rerun (smaller card, same id) cleans up the dead generator's temporary and publishes a full copy
    small = make_card(id="coordination-big", transitions=1000)
    path = generate(small, root=root, progress=False)
    assert not list(root.glob(".tmp-*"))
    assert len(_load_columns(path, small)["rewards"]) == 1000


_CONCURRENT_SCRIPT = textwrap.dedent(
    """
    import sys, offcoord
    ds = offcoord.load_dataset("coordination-unfavorable", progress=False)
    print(len(ds), float(ds.rewards.mean()))
    """
)


def test_concurrent_loads_build_once(cache):
    env = {**os.environ, "OFFCOORD_DATA_DIR": str(cache)}
    procs = [subprocess.Popen([sys.executable, "-c", _CONCURRENT_SCRIPT], env=env, stdout=subprocess.PIPE, text=True) for _ in range(4)]
    outs = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert len(set(outs)) == 1 and outs[0].startswith("10000 ")
    assert not list(cache.glob(".tmp-*")) and not list(cache.glob(".old-*"))
    offcoord.verify_dataset("coordination-unfavorable")


def test_sample_and_views(cache):
    ds = offcoord.load_dataset("coordination-unfavorable", progress=False)
    b1 = ds.sample(256, np.random.default_rng(0))
    b2 = ds.sample(256, np.random.default_rng(0))
    assert np.array_equal(b1.indices, b2.indices)
    assert b1.rewards.shape == (256,) and b1.observations["agent_0"].shape == (256, 1)
    idx = b1.indices
    assert np.array_equal(b1.actions["agent_1"], ds.actions["agent_1"][idx])
    assert np.array_equal(b1.next_observations["agent_0"], ds.next_observations["agent_0"][idx])
    assert np.array_equal(b1.joint_actions[:, 0], b1.actions["agent_0"])
    assert not ds.states.flags.writeable  # memory-mapped read-only: training code cannot corrupt the cache
    for bad in (0, -3, 2.5, True, "8"):
        with pytest.raises(ValueError, match="batch_size"):
            ds.sample(bad, 0)
    with pytest.raises(IndexError):
        ds.batch(np.array([len(ds)]))
    with pytest.raises(KeyError, match="agent_2"):
        ds.observations["agent_2"]


def test_episodes_cover_the_dataset_in_order(cache):
    ds = offcoord.load_dataset("coordination-favorable", progress=False)
    episodes = list(ds.episodes())
    assert len(episodes) == ds.num_episodes
    assert sum(len(e) for e in episodes) == len(ds)
    assert np.allclose([e.total_reward for e in episodes], ds.episode_returns())
    e = episodes[17]
    assert np.array_equal(e.actions["agent_0"], ds.actions["agent_0"][e.start : e.start + len(e)])


def test_load_without_build_names_the_command(cache):
    with pytest.raises(FileNotFoundError, match="offcoord generate coordination-neutral"):
        offcoord.load_dataset("coordination-neutral", auto_build=False)


def test_minari_round_trip_of_float_actions_truncations_and_extras(tmp_path, cache):
    pytest.importorskip("minari")
    from offcoord.data import open_dataset
    from offcoord.data.cards import card_from_bytes
    from offcoord.data.minari_io import export_minari, import_minari

    card = offcoord.registry.dataset_card("reacher2-expert-leader-only")
    text = card.path.read_text().replace("transitions = 1_000_000", "transitions = 230")
    small = card_from_bytes(text[: text.index("[expected]")].encode(), card.path)
    ds = open_dataset(generate(small, root=tmp_path / "gen", progress=False), small, "reacher2-expert-leader-only")
    md = export_minari(ds)
    back = import_minari(md.spec.dataset_id, cache)
    for name in ("states", "next_states", "joint_actions", "rewards", "terminations", "truncations", "episode_starts"):
        a, b = getattr(ds, name), getattr(back, name)
        assert a.dtype == b.dtype and np.array_equal(a, b), name
    assert np.array_equal(back.extras["strategy"], ds.extras["strategy"]) and back.extras["strategy"].dtype == np.int8
    assert back.truncations.sum() == 5  # four 50-step time limits and the budget cut
    assert np.array_equal(back.observations["agent_1"], ds.observations["agent_1"])


def test_minari_round_trip_preserves_every_array(cache):
    pytest.importorskip("minari")
    import minari

    from offcoord.data.minari_io import export_minari, import_minari

    ds = offcoord.load_dataset("coordination-unfavorable", progress=False)
    n = 300  # Minari writes ~150 episodes/s; a slice keeps the test short
    md = export_minari(ds, max_episodes=n)
    assert md.storage.metadata["ref_min_score"] == 0.0 and md.storage.metadata["ref_max_score"] == 1.0
    assert md.total_steps == n and md.total_episodes == n
    ep = next(md.iterate_episodes())
    assert set(ep.observations) == {"agent_0", "agent_1", "state"}
    with pytest.raises(FileExistsError):
        export_minari(ds)
    back = import_minari(md.spec.dataset_id, cache)
    for name in ("states", "next_states", "joint_actions", "rewards", "terminations", "truncations", "episode_starts"):
        a, b = getattr(ds, name)[:n], getattr(back, name)
        assert a.dtype == b.dtype and np.array_equal(a, b), name
    assert np.array_equal(back.observations["agent_1"], ds.observations["agent_1"][:n])
    assert minari.get_normalized_score(md, np.array([1.0])) == pytest.approx(1.0)


def test_replacement_that_died_between_renames_is_recovered(cache):
    """--force moves the old copy aside, then renames the new one in; a crash between the two
    leaves only the hidden old copy, which the next load puts back (no rebuild needed)."""
    ds = offcoord.load_dataset("coordination-neutral", progress=False)
    path = ds.path
    del ds
    aside = path.parent / f".old-{path.name}-deadbeef"
    os.rename(path, aside)
    (path.parent / f".tmp-{path.name}-999999-cafebabe").mkdir()  # the new copy's temporary, its writer dead
    ds = offcoord.load_dataset("coordination-neutral", auto_build=True, progress=False)
    assert len(ds) == 10_000 and not aside.exists()
    assert not list(path.parent.glob(".tmp-*"))
    offcoord.verify_dataset("coordination-neutral")


def test_a_checksummed_json_read_and_written_back_stays_readable(tmp_path):
    """Writing back a loaded checksummed file (its old ``content_sha256`` included) replaces the
    checksum instead of hashing it in, so the new file reads back."""
    from offcoord.fileio import CHECKSUM_KEY, atomic_write_json, read_json

    path = tmp_path / "f.json"
    atomic_write_json(path, {"a": 1}, checksum=True)
    loaded = json.loads(path.read_text())
    atomic_write_json(path, {**loaded, "a": 2}, checksum=True)
    assert read_json(path, "rebuild it", checksum=True) == {"a": 2}
    assert CHECKSUM_KEY in json.loads(path.read_text())
