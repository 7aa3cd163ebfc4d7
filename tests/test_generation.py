"""Dataset generation: worker processes, behavior segments, unions of cards, size variants, and the
ant cards (D4RL-style random / medium / full-replay / expert / mixed)."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import offcoord
from offcoord.data import open_dataset
from offcoord.data.cards import card_from_bytes, load_cards, split_evenly
from offcoord.data.generate import REFERENCE_BLAS_CORE, _reference_blas_env, blas_core, generate
from offcoord.data.store import open_columns, read_manifest
from offcoord.policies import PolicyBehavior

ANT_FAMILIES = ("ant-random", "ant-medium", "ant-full-replay", "ant-expert", "ant-mixed")


def _card(tmp_path, body: str, id="gen-test"):
    text = textwrap.dedent(
        f"""
        format_version = 1
        id = "{id}"
        [datasets]
        "{id}" = "coordination-game"
        [reference]
        min_score = 0.0
        max_score = 1.0
        """
    ) + textwrap.dedent(body)
    path = tmp_path / f"{id}.toml"
    path.write_text(text)
    return card_from_bytes(text.encode(), path)


def _columns(path, card):
    return open_columns(path, card.id, read_manifest(path, card.id))


def _assert_same_columns(a, b):
    assert sorted(a) == sorted(b)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_bytes_do_not_depend_on_the_number_of_worker_processes(tmp_path):
    """Episodes draw from their own random streams: two worker processes (spawned, blocks handed out
    ahead) write exactly what one process writes, for a scripted stateful behavior and a batched policy."""
    reacher = card_from_bytes(
        offcoord.registry.dataset_card("reacher2-expert").path.read_bytes(), tmp_path / "reacher2-expert.toml"
    ).resized(1_275)  # 25 full episodes and a cut one
    # two and a half 1,000-step episodes: one worker steps them in waves of two, two workers one by
    # one, so the batched policy sees batches of other sizes (a row must not round differently)
    ant = load_cards()["ant-expert"].resized(2_500)
    for card in (reacher, ant):
        one = generate(card, root=tmp_path / "one", progress=False, workers=1)
        two = generate(card, root=tmp_path / "two", progress=False, workers=2)
        _assert_same_columns(_columns(one, card), _columns(two, card))
    cols = _columns(generate(reacher, root=tmp_path / "one"), reacher)
    assert len(cols["rewards"]) == 1_275 and len(cols["episode_starts"]) == 26
    assert cols["truncations"][-1] and cols["truncations"].sum() == 26  # 25 time limits + the cut
    # the scripted teams still alternate by episode index (even: clockwise)
    strategies = cols["extra_strategy"][cols["episode_starts"]]
    np.testing.assert_array_equal(strategies, np.arange(26) % 2)


needs_reference_blas = pytest.mark.skipif(not _reference_blas_env() or blas_core() is None,
                                          reason="needs numpy on OpenBLAS and an x86-64 CPU with AVX2 and FMA")


def _with_reference_blas(code: str, *argv: str) -> str:
    """Run ``code`` in a child process started with the reference (Haswell) kernels; its stdout."""
    child = subprocess.run(
        [sys.executable, "-c", "from offcoord.data.generate import blas_core; "
         f"assert blas_core() == {REFERENCE_BLAS_CORE!r}, blas_core(); " + code, *argv],
        env={**os.environ, "OPENBLAS_CORETYPE": REFERENCE_BLAS_CORE}, capture_output=True, text=True,
    )
    assert child.returncode == 0, child.stderr
    return child.stdout


@needs_reference_blas
def test_policy_data_is_built_with_the_reference_blas_kernels_on_any_x86_64_cpu(tmp_path):
    """A trained policy's matrix products follow OpenBLAS's kernels, which follow the CPU (AVX-512
    rounds otherwise than AVX2, and the ant's contacts amplify it). Generation pins the Haswell
    kernels, in-process or in workers, so the bytes are those of a process started with them."""
    card = load_cards()["ant-expert"].resized(1_200)
    _with_reference_blas("import sys; from offcoord.data.cards import load_cards; from offcoord.data.generate import generate; "
                         "generate(load_cards()['ant-expert'].resized(1_200), root=sys.argv[1], progress=False, workers=1)",
                         str(tmp_path / "pinned"))
    for workers in (1, 2):
        here = generate(card, root=tmp_path / f"w{workers}", progress=False, workers=workers)
        assert read_manifest(here, card.id)["blas_core"] == REFERENCE_BLAS_CORE
        _assert_same_columns(_columns(here, card), _columns(tmp_path / "pinned" / card.id, card))


@needs_reference_blas
def test_reference_returns_are_measured_with_the_reference_blas_kernels():
    """The ant cards' max_score comes from the expert policy's returns: measured here, they are
    those of a process started with the Haswell kernels, whatever kernels this process uses."""
    from offcoord.envs.ant import measure_returns

    pinned = _with_reference_blas("from offcoord.envs.ant import measure_returns; "
                                  "print(measure_returns('ant-expert.npz', episodes=2, seed=7).tolist())")
    assert measure_returns("ant-expert.npz", episodes=2, seed=7).tolist() == json.loads(pinned)  # exact, not close


def test_workers_do_not_rerun_the_callers_script_and_report_errors(tmp_path):
    """A user's script without a main guard builds with workers once (they are fresh interpreters that
    import offcoord only); an error inside a worker reaches the caller and nothing is cached."""
    script = tmp_path / "build.py"
    script.write_text(textwrap.dedent(f"""
        print("script body", flush=True)
        from offcoord.data.cards import load_cards
        from offcoord.data.generate import generate
        generate(load_cards()["ant-random"].resized(1_100), root={str(tmp_path / "c")!r}, progress=False, workers=2)
        """))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, check=True).stdout
    assert out.count("script body") == 1
    # a behavior made for another task: it is built fine, and fails at its first step, in a worker
    bad = card_from_bytes(
        load_cards()["ant-random"].path.read_bytes().replace(b'env = "ant-fo" }', b'env = "reacher2-fo" }'), tmp_path / "bad.toml"
    ).resized(1_100)
    with pytest.raises(ValueError, match=r"joint action has shape \(2,\), expected \(8,\)"):
        generate(bad, root=tmp_path / "bad", progress=False, workers=2)
    assert [p.name for p in (tmp_path / "bad").iterdir()] == [".locks"]  # nothing cached, no temporaries


def test_segments_take_their_shares_in_order_and_are_marked(tmp_path):
    card = _card(tmp_path, """
        [generation]
        env = "coordination-game"
        behavior = "coordination-bernoulli"
        transitions = 1000
        seed = 3
        [[generation.segments]]
        behavior_kwargs = { p_right = [1.0, 1.0] }
        [[generation.segments]]
        behavior_kwargs = { p_right = [0.0, 0.0] }
        share = 3
        """)
    assert [s.transitions for s in card.segments] == [250, 750]
    cols = _columns(generate(card, root=tmp_path / "c", progress=False), card)
    np.testing.assert_array_equal(cols["extra_segment"], np.repeat([0, 1], [250, 750]))
    np.testing.assert_array_equal(cols["actions"][:250], 1)
    np.testing.assert_array_equal(cols["actions"][250:], 0)
    # a smaller variant keeps the proportions and is the same recipe: its rows are the full copy's first episodes
    small = card.resized(100)
    assert [s.transitions for s in small.segments] == [25, 75] and small.id == "gen-test@100"
    scols = _columns(generate(small, root=tmp_path / "c", progress=False), small)
    np.testing.assert_array_equal(scols["actions"][:25], cols["actions"][:25])
    np.testing.assert_array_equal(scols["actions"][25:], cols["actions"][250:325])


def test_card_errors_for_segments_and_unions(tmp_path):
    base = """
        [generation]
        env = "coordination-game"
        behavior = "coordination-bernoulli"
        transitions = 10
        seed = 0
        """
    with pytest.raises(offcoord.errors.CardError, match="segments"):
        _card(tmp_path, base + "segments = 3\n")
    with pytest.raises(offcoord.errors.CardError, match=r"segments\[0\] has unknown fields \['weight'\]"):
        _card(tmp_path, base + "[[generation.segments]]\nweight = 2\n")
    with pytest.raises(offcoord.errors.CardError, match="share"):
        _card(tmp_path, base + "[[generation.segments]]\nshare = 0\n")
    union = _card(tmp_path, '[generation]\nenv = "coordination-game"\nunion = ["coordination-favorable", "nope"]\ntransitions = 10\nseed = 0\n')
    with pytest.raises(offcoord.errors.CardError, match="unknown cards.*nope"):
        generate(union, root=tmp_path / "u", progress=False)
    total = _card(tmp_path, '[generation]\nenv = "coordination-game"\nunion = ["coordination-favorable", "coordination-neutral"]\ntransitions = 10\nseed = 0\n')
    with pytest.raises(offcoord.errors.CardError, match="members' total 20000"):
        generate(total, root=tmp_path / "u", progress=False)


def test_a_union_refuses_a_member_built_from_an_older_card(tmp_path):
    """A union's recipe folds in its members' cards as they are now, so a cached member built from
    an earlier card must not be copied in; the error names the member and its rebuild command."""
    from offcoord.data.generate import store_path

    union = _card(tmp_path, '[generation]\nenv = "coordination-game"\nunion = ["coordination-favorable", "coordination-neutral"]\n'
                  'transitions = 20000\nseed = 0\n').resized(200)
    root = tmp_path / "cache"
    generate(union, root=root, progress=False)
    member = store_path(load_cards()["coordination-neutral"].resized(100), root)
    manifest = json.loads((member / "manifest.json").read_text())
    manifest["recipe_sha256"] = "0" * 64
    (member / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(offcoord.errors.DatasetCorruptedError,
                       match="gen-test@200 is made from coordination-neutral@100.*different version.*"
                             "offcoord generate coordination-neutral@100 --force"):
        generate(union, root=root, force=True, progress=False)


def test_size_variants(cache):
    ds = offcoord.load_dataset("coordination-neutral", size=300, progress=False)
    assert len(ds) == 300 and ds.id == "coordination-neutral" and ds.path.name == "coordination-neutral@300"
    assert len(offcoord.load_dataset("coordination-neutral@300")) == 300  # the CLI and cache spelling
    assert not (cache / "coordination-neutral").exists()  # the full copy was never built
    for bad in (0, -5, 2.5, True):
        with pytest.raises(ValueError, match="size"):
            offcoord.load_dataset("coordination-neutral", size=bad)
    with pytest.raises(ValueError, match="after '@'"):
        offcoord.load_dataset("coordination-neutral@lots")
    assert split_evenly(10, [1, 1, 1]) == [3, 3, 4]


def test_policy_behavior_batches_rows_like_single_calls():
    behavior = PolicyBehavior("ant-expert.npz", deterministic=False)
    states = np.random.default_rng(0).normal(size=(5, 27)).astype(np.float32)
    batch = behavior.act_batch(states, [np.random.default_rng(k) for k in range(5)])
    single = np.stack([behavior.act(s, np.random.default_rng(k)) for k, s in enumerate(states)])
    np.testing.assert_allclose(batch, single, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="one generator per row"):
        behavior.act_batch(states, [np.random.default_rng(0)])


# --------------------------------------------------------------------------------- ant cards
def test_ant_cards_list_both_views_and_reference_scores():
    cards = load_cards()
    for family in ANT_FAMILIES:
        card = cards[family]
        assert dict(card.datasets) == {f"{family}-fo": "ant-fo", f"{family}-po": "ant-po"}
        assert card.reference_min < 0 < card.reference_max
        assert offcoord.normalized_score(f"{family}-po", card.reference_max) == pytest.approx(1.0)
    assert len(cards["ant-full-replay"].segments) == 10
    assert [s.behavior_kwargs["weights"] for s in cards["ant-full-replay"].segments][-1] == "ant-curriculum-09.npz"
    assert cards["ant-mixed"].union == ("ant-random", "ant-medium", "ant-full-replay", "ant-expert")
    assert cards["ant-mixed"].transitions == sum(cards[m].transitions for m in cards["ant-mixed"].union)


def test_ant_mixed_is_the_union_of_its_members(cache):
    mixed = offcoord.load_dataset("ant-mixed-po", size=2_400, progress=False)
    assert len(mixed) == 2_400
    source = mixed.extras["source"]
    np.testing.assert_array_equal(source, np.repeat([0, 1, 2, 3], 600))
    start = 0
    for k, member in enumerate(("ant-random", "ant-medium", "ant-full-replay", "ant-expert")):
        part = offcoord.load_dataset(f"{member}-po", size=600, progress=False)
        np.testing.assert_array_equal(mixed.states[start : start + 600], part.states)
        np.testing.assert_array_equal(mixed.actions["agent_2"][start : start + 600], part.actions["agent_2"])
        start += 600
    # views come from the environment's own view function
    np.testing.assert_array_equal(mixed.observations["agent_1"], offcoord.make("ant-po").view(mixed.states)["agent_1"])
