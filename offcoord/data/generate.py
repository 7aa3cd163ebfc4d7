"""Build a stored copy from its card: run the card's behavior in the real environment.

Deterministic: the card's seed fixes the behavior's random stream and every episode's reset seed,
so the same card gives the same bytes on one machine. Verified: the fresh data must match the
card's ``[expected]`` statistics before it is published into the cache.

Across machines, a behavior that multiplies matrices (a trained policy) would otherwise follow
the CPU: OpenBLAS picks its kernels at run time, and the ant's chaotic contacts turn a last-bit
difference into other episodes (measured: the AVX-512 kernels and the AVX2 ones build different
ant datasets from the same card). Such behaviors therefore run where OpenBLAS uses its Haswell
(AVX2 + FMA) kernels, the reference build's: in worker processes started with
``OPENBLAS_CORETYPE=Haswell`` on any x86-64 CPU that has them.
"""

from __future__ import annotations

import collections
import itertools
import os
import platform
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from offcoord import __version__
from offcoord.fileio import cache_dir, file_lock
from offcoord.data.cards import Card, recipe_key
from offcoord.data.store import MANIFEST, StoreWriter, read_manifest, rebuild_hint, remove_stale_temporaries, verify_store
from offcoord.errors import CardError, DatasetCorruptedError, DatasetVerificationError


def store_path(card: Card, root: Path | None = None) -> Path:
    return Path(root or cache_dir()) / card.id


def lock_path(card: Card, root: Path | None = None) -> Path:
    return Path(root or cache_dir()) / ".locks" / f"{card.id}.lock"


BLOCK_TRANSITIONS = 16_384  # episodes are handed to workers in blocks of about this many transitions
WAVE = 16  # episodes a worker steps side by side when the behavior acts on a batch of states
PARALLEL_FROM = 50_000  # smaller datasets are generated in-process (starting workers costs seconds)


def generate(
    card: Card, root: Path | None = None, force: bool = False, progress: bool | None = None, workers: int | None = None
) -> Path:
    """Build ``card``'s stored copy under the cache ``root`` (once, even with several processes).

    Returns the store directory. With ``force`` an existing copy is rebuilt and replaced
    atomically. ``progress=None`` shows a progress bar only on a terminal. ``workers`` processes
    generate episodes in parallel (default: the card's ``generation.workers``, else
    ``$OFFCOORD_GENERATION_WORKERS``, else every core for datasets of ``PARALLEL_FROM``
    transitions or more); the bytes do not depend on it.
    """
    root = Path(root or cache_dir())
    target = store_path(card, root)
    with file_lock(lock_path(card, root)):
        remove_stale_temporaries(root, card.id)
        if target.exists() and (target / MANIFEST).exists() and not force:
            return target  # another process built it while we waited for the lock
        if card.union:
            return _generate_union(card, root, target, progress, workers)
        return _generate_segments(card, target, progress, _pick_workers(card, workers))


def checked_manifest(card: Card, path: Path, full: bool = False) -> dict[str, Any]:
    """The manifest of the store at ``path`` once it is known to hold ``card``'s data as the card is
    now, whole (sizes always, checksums when ``full`` or a file changed); otherwise
    :class:`DatasetCorruptedError` naming the store and the command that rebuilds it."""
    manifest = read_manifest(path, card.id)
    built_from = manifest.get("recipe_sha256")
    if not built_from:  # written before stores recorded their recipe, by a generator with other random streams
        raise DatasetCorruptedError(
            f"{path} was built by an earlier version of offcoord (its manifest records no recipe), whose "
            f"generator drew other random streams: its episodes differ from the card's; {rebuild_hint(card.id)}"
        )
    if built_from != recipe_key(card):
        raise DatasetCorruptedError(
            f"{path} was built from a different version of the card {card.path}; {rebuild_hint(card.id)}"
        )
    verify_store(path, card.id, manifest, full=full)
    return manifest


REFERENCE_BLAS_CORE = "Haswell"  # the OpenBLAS kernels the published datasets were generated with


def blas_core() -> str | None:
    """The OpenBLAS kernel set ("core") numpy uses in this process, e.g. ``"Haswell"`` or
    ``"SkylakeX"``; None where numpy's BLAS is not an OpenBLAS this can ask (e.g. macOS's Accelerate)."""
    import ctypes

    try:
        with open("/proc/self/maps") as maps:
            libraries = sorted({line.split()[-1] for line in maps if "openblas" in line.lower() and "/" in line})
    except OSError:
        return None
    for library in libraries:
        try:
            lib = ctypes.CDLL(library)
        except OSError:
            continue
        for symbol in ("scipy_openblas_get_corename64_", "scipy_openblas_get_corename", "openblas_get_corename64_",
                       "openblas_get_corename"):
            getter = getattr(lib, symbol, None)
            if getter is not None:
                getter.restype = ctypes.c_char_p
                return getter().decode()
    return None


def _reference_blas_env() -> dict[str, str]:
    """Environment for a worker process that should use the reference BLAS kernels: empty where the
    CPU cannot run them (not x86-64, no AVX2 or FMA) or where the user chose a core type."""
    if "OPENBLAS_CORETYPE" in os.environ or platform.machine().lower() not in ("x86_64", "amd64"):
        return {}
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            flags = next((line.split(":", 1)[1].split() for line in cpuinfo if line.startswith("flags")), [])
    except OSError:
        return {}
    return {"OPENBLAS_CORETYPE": REFERENCE_BLAS_CORE} if {"avx2", "fma"} <= set(flags) else {}


def call_with_reference_blas(fn, task):
    """``fn(task)`` with numpy's matrix products on the reference BLAS kernels: here when this
    process already uses them (or the CPU cannot), else in one worker process started with them.
    ``fn`` must be a module-level function (it is pickled by reference)."""
    worker_env = _reference_blas_env()
    if not worker_env or blas_core() == REFERENCE_BLAS_CORE:
        return fn(task)
    worker = _Worker(worker_env)
    try:
        worker.send((fn, task))
        return worker.receive()
    finally:
        worker.stop()


def _pick_workers(card: Card, workers: int | None) -> int:
    if workers is None:
        workers = card.workers or os.environ.get("OFFCOORD_GENERATION_WORKERS") or None
    if workers is None:
        return (os.cpu_count() or 1) if card.transitions >= PARALLEL_FROM else 1
    try:
        workers = int(workers)
    except ValueError:
        raise ValueError(f"generation workers must be a positive integer, got {workers!r}") from None
    if workers < 1:
        raise ValueError(f"generation workers must be a positive integer, got {workers}")
    return workers


def _version_of(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def _manifest(card: Card, stats: dict[str, Any], blas_core_used: str | None) -> dict[str, Any]:
    check_expected(card, stats)
    return {
        "card_id": card.id,
        "card_sha256": card.sha256,
        "recipe_sha256": recipe_key(card),
        "offcoord_version": __version__,
        "numpy_version": np.__version__,
        "mujoco_version": _version_of("mujoco"),
        "blas_core": blas_core_used,  # with the MuJoCo version, what decides the bytes across machines
        "platform": platform.platform(),
        "statistics": stats,
    }


def _column_table(env, n: int, extra_columns: dict[str, Any]) -> dict[str, tuple[tuple[int, ...], Any]]:
    layout = env.layout
    state_dim = int(np.prod(env.state_space.shape))
    return {
        "states": ((n, state_dim), np.float32),
        "next_states": ((n, state_dim), np.float32),
        "actions": ((n, layout.joint_action_dim), np.int64 if layout.discrete else np.float32),
        "rewards": ((n,), np.float32),
        "terminations": ((n,), np.bool_),
        "truncations": ((n,), np.bool_),
        "episode_starts": ((n,), np.int64),  # upper bound; truncated to the episode count below
        **{f"extra_{k}": ((n,), dtype) for k, dtype in extra_columns.items()},
    }


def _joint_action_count(env) -> int | None:
    layout = env.layout
    return int(np.prod([env.action_space(a).n for a in layout.agents])) if layout.discrete else None


def _layout(card: Card, extra_columns: dict[str, Any]) -> tuple[dict, int, int | None]:
    """What a store of ``card`` needs from its environment's spaces: the column table, the episode
    horizon and the joint-action count. The environment is made for this only, and closed."""
    from offcoord.registry import make  # registry imports cards; avoid a cycle

    env = make(card.env)
    try:
        return (_column_table(env, card.transitions, extra_columns), int(getattr(env, "max_episode_steps", 1000)),
                _joint_action_count(env))
    finally:
        env.close()


def _generate_segments(card: Card, target: Path, progress: bool | None, workers: int) -> Path:
    """Run each segment's behavior for its share of transitions, episodes in parallel, in order."""
    from offcoord.registry import make_behavior  # registry imports cards; avoid a cycle

    behaviors = [make_behavior(seg.behavior, seg.behavior_kwargs) for seg in card.segments]
    extra_columns: dict[str, Any] = {}
    for behavior in behaviors:  # behaviors may record per-transition facts (name -> dtype)
        extra_columns.update(getattr(behavior, "extra_columns", {}))
    if len(card.segments) > 1:
        extra_columns["segment"] = np.int16  # which segment (e.g. curriculum checkpoint) acted
    worker_env = _reference_blas_env() if any(getattr(b, "uses_blas", False) for b in behaviors) else {}
    here = blas_core()
    in_process = workers == 1 and (not worker_env or here == REFERENCE_BLAS_CORE)
    blas_core_used = here if in_process else worker_env.get("OPENBLAS_CORETYPE", here)
    columns, horizon, joint_action_count = _layout(card, extra_columns)
    with StoreWriter(target, columns) as writer, tqdm(
        total=card.transitions, desc=f"generating {card.id}", unit="transition", disable=_no_bar(progress),
        mininterval=0.5, smoothing=0.05,
    ) as bar:
        cols = writer.arrays
        t, episodes = 0, 0
        for s, seg in enumerate(card.segments):
            if seg.transitions == 0:
                continue
            # blocks of about BLOCK_TRANSITIONS, fewer when the segment is small (the last block's excess is wasted)
            block = max(1, min(BLOCK_TRANSITIONS, -(-seg.transitions // workers)) // horizon)
            blocks = ((card, s, first, block) for first in itertools.count(0, block))  # episodes first .. first + block - 1
            end = t + seg.transitions
            for result in _map_ordered(_run_block, blocks, workers, in_process, worker_env):
                for ep in _split_episodes(result):
                    m = min(len(ep["rewards"]), end - t)
                    cols["episode_starts"][episodes] = t
                    episodes += 1
                    for name in ("states", "next_states", "actions", "rewards", "terminations"):
                        cols[name][t : t + m] = ep[name][:m]
                    # an episode cut by the segment's budget ends there: mark it as a time limit
                    cols["truncations"][t : t + m] = ep["truncations"][:m]
                    cols["truncations"][t + m - 1] |= not ep["terminations"][m - 1] and t + m == end
                    for k in ep["extras"]:
                        cols[f"extra_{k}"][t : t + m] = ep["extras"][k][:m]
                    if "segment" in extra_columns:
                        cols["extra_segment"][t : t + m] = s
                    t += m
                    bar.update(m)
                    if t == end:
                        break
                if t == end:
                    break
        writer.truncate("episode_starts", episodes)
        stats = dataset_statistics(cols, joint_action_count)
        return writer.commit(_manifest(card, stats, blas_core_used))


def _map_ordered(fn, tasks, workers: int, in_process: bool = True, worker_env: dict[str, str] | None = None):
    """``map(fn, tasks)`` over a lazy, endless ``tasks``: in this process if ``workers`` is 1 and
    ``in_process``, else a few tasks ahead in ``workers`` worker processes (``worker_env`` added to
    their environment). Results come back in task order; abandoning the iterator stops the workers.

    The workers are fresh interpreters (``python -c``) that import only offcoord, not the caller's
    ``__main__``: multiprocessing's spawn and forkserver would re-run a user's script without an
    ``if __name__ == "__main__"`` guard in every worker, and fork would copy a parent's threads
    (torch, tqdm) into children half-initialized.
    """
    if workers <= 1 and in_process:
        yield from map(fn, tasks)
        return
    pool = [_Worker(worker_env or {}) for _ in range(workers)]
    pending: collections.deque = collections.deque()  # (worker, task) in task order
    try:
        for k, task in enumerate(tasks):
            worker = pool[k % workers]  # round robin: each worker answers its own tasks in order
            worker.send((fn, task))
            pending.append(worker)
            if len(pending) > workers:  # one task queued per busy worker
                yield pending.popleft().receive()
    finally:
        for worker in pool:
            worker.stop()


def _frame(data: bytes) -> bytes:
    return len(data).to_bytes(8, "little") + data


def _read_frame(stream) -> bytes | None:
    head = stream.read(8)
    if len(head) < 8:
        return None
    size = int.from_bytes(head, "little")
    data = stream.read(size)
    return data if len(data) == size else None


_WORKER_BOOT = (
    "import json, os, sys; sys.path[:0] = json.loads(os.environ['OFFCOORD_WORKER_PATH']); "
    "from offcoord.data.generate import _worker_main; _worker_main()"
)


class _Worker:
    """One generation worker process; tasks and results are length-prefixed pickles over its pipes."""

    def __init__(self, extra_env: dict[str, str]):
        import json
        import subprocess
        import sys

        env = {**os.environ, **extra_env, "OFFCOORD_WORKER_PATH": json.dumps([p for p in sys.path if p])}
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            env.setdefault(var, "1")  # one process per core already; BLAS threads on top only oversubscribe
        self.proc = subprocess.Popen([sys.executable, "-c", _WORKER_BOOT], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)

    def send(self, job) -> None:
        import pickle

        self.proc.stdin.write(_frame(pickle.dumps(job, protocol=pickle.HIGHEST_PROTOCOL)))
        self.proc.stdin.flush()

    def receive(self):
        import pickle

        data = _read_frame(self.proc.stdout)
        if data is None:
            raise RuntimeError(f"a dataset generation worker died (exit code {self.proc.wait()}); nothing was cached")
        ok, value = pickle.loads(data)
        if not ok:
            raise value
        return value

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()  # it may be in the middle of a block nobody needs any more
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()
            except OSError:
                pass


def _worker_main() -> None:
    """Loop of a worker process: read ``(fn, task)``, answer ``(True, fn(task))`` or ``(False, error)``."""
    import pickle
    import sys
    import traceback

    channel_in = sys.stdin.buffer
    channel_out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # stray prints from libraries must not corrupt the channel
    while (data := _read_frame(channel_in)) is not None:
        fn, task = pickle.loads(data)
        try:
            answer = (True, fn(task))
        except BaseException as e:  # noqa: BLE001 - handed to the parent, which raises it
            if hasattr(e, "add_note"):  # Python 3.11+
                e.add_note("in a dataset generation worker:\n" + traceback.format_exc())
            try:
                pickle.dumps(e)
                answer = (False, e)
            except Exception:
                answer = (False, RuntimeError(f"{type(e).__name__}: {e}\n{traceback.format_exc()}"))
        channel_out.write(_frame(pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL)))
        channel_out.flush()


_RUNNERS: dict[tuple[str, int], "_BlockRunner"] = {}


def _run_block(task) -> dict[str, Any]:
    """Generate episodes ``first .. first + count - 1`` of one segment (in a worker or in-process)."""
    card, segment, first, count = task
    key = (recipe_key(card), segment)  # the recipe covers the behavior's weights too, the card's bytes do not
    if key not in _RUNNERS:
        _RUNNERS.clear()
        _RUNNERS[key] = _BlockRunner(card, segment)
    return _RUNNERS[key].run(first, count)


class _BlockRunner:
    """Episodes of one segment. Episode ``e`` of segment ``s`` draws everything random (its reset
    seed, the behavior's noise) from ``default_rng([card.seed, s, e])``, so the data does not depend
    on how episodes are spread over workers or stepped side by side."""

    def __init__(self, card: Card, segment: int):
        from offcoord.registry import make, make_behavior

        self.card, self.segment = card, segment
        seg = self.seg = card.segments[segment]
        self.behaviors = [make_behavior(seg.behavior, seg.behavior_kwargs)]
        self.envs = [make(card.env)]
        self.slots = WAVE if getattr(self.behaviors[0], "batched", False) else 1

    def run(self, first: int, count: int) -> dict[str, Any]:
        from offcoord.registry import make, make_behavior

        while len(self.envs) < min(self.slots, count):  # made on first need: small blocks use one
            self.envs.append(make(self.card.env))
            self.behaviors.append(make_behavior(self.seg.behavior, self.seg.behavior_kwargs))
        episodes = []
        for wave in range(first, first + count, len(self.envs)):
            episodes += self._wave(range(wave, min(wave + len(self.envs), first + count)))
        return _join_episodes(episodes)

    def _wave(self, indices) -> list[dict[str, Any]]:
        rngs = [np.random.default_rng([self.card.seed, self.segment, e]) for e in indices]
        envs, behaviors = self.envs[: len(rngs)], self.behaviors[: len(rngs)]
        limit = self.seg.transitions  # no episode is stored beyond its segment's budget: stop stepping there
        records = []
        for env, behavior, rng, e in zip(envs, behaviors, rngs, indices):
            env.reset(seed=int(rng.integers(2**31 - 1)))
            behavior.reset(rng, episode=e)
            records.append({k: [] for k in ("states", "actions", "rewards", "terminations", "truncations", "next_states")})
            records[-1]["extras"] = {k: [] for k in getattr(behavior, "extra_columns", {})}
        alive = list(range(len(rngs)))
        states = [env.state() for env in envs]
        while alive:
            if self.slots > 1:
                joints = behaviors[0].act_batch(np.stack([states[i] for i in alive]), [rngs[i] for i in alive])
            else:
                joints = [behaviors[i].act(states[i], rngs[i]) for i in alive]
            still = []
            for i, joint in zip(alive, joints):
                rec = records[i]
                extras = behaviors[i].extras() if rec["extras"] else {}  # facts about the action just chosen
                reward, terminated, truncated, _ = envs[i].step_joint(joint)
                next_state = envs[i].state()
                for name, value in (("states", states[i]), ("actions", joint), ("rewards", reward),
                                    ("terminations", terminated), ("truncations", truncated and not terminated),
                                    ("next_states", next_state)):
                    rec[name].append(value)
                for k, v in extras.items():
                    rec["extras"][k].append(v)
                states[i] = next_state
                if not (terminated or truncated) and len(rec["rewards"]) < limit:
                    still.append(i)
            alive = still
        return records


def _join_episodes(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Concatenate per-step lists into arrays (one pickle per block, not per step)."""
    out: dict[str, Any] = {"lengths": np.array([len(r["rewards"]) for r in records], dtype=np.int64)}
    for name in ("states", "actions", "rewards", "terminations", "truncations", "next_states"):
        out[name] = np.concatenate([np.asarray(r[name]) for r in records])
    out["extras"] = {k: np.concatenate([np.asarray(r["extras"][k]) for r in records]) for k in records[0]["extras"]}
    return out


def _split_episodes(block: dict[str, Any]):
    bounds = np.concatenate([[0], np.cumsum(block["lengths"])])
    for a, b in zip(bounds[:-1], bounds[1:]):
        yield {
            **{k: v[a:b] for k, v in block.items() if k not in ("lengths", "extras")},
            "extras": {k: v[a:b] for k, v in block["extras"].items()},
        }


def _generate_union(card: Card, root: Path, target: Path, progress: bool | None, workers: int | None) -> Path:
    """Concatenate the stored copies of the member cards (each built first if missing)."""
    from offcoord.data.cards import load_cards, split_evenly
    from offcoord.data.store import open_columns

    cards = load_cards()
    unknown = [u for u in card.union if u not in cards]
    if unknown:
        raise CardError(f"dataset card {card.path}: generation.union names unknown cards {unknown}")
    members = [cards[u] for u in card.union]
    if card.is_variant:
        members = [m.resized(n) for m, n in zip(members, split_evenly(card.transitions, [m.transitions for m in members]))]
    elif sum(m.transitions for m in members) != card.transitions:
        raise CardError(
            f"dataset card {card.path}: generation.transitions {card.transitions} must be the members' total "
            f"{sum(m.transitions for m in members)}"
        )
    sources, cores = [], set()
    for m in members:
        path = generate(m, root=root, progress=progress, workers=workers)
        try:  # a cached member may predate its card's last change; the union's recipe assumes the card as it is now
            manifest = checked_manifest(m, path, full=True)
        except DatasetCorruptedError as e:
            raise DatasetCorruptedError(f"{card.id} is made from {m.id}, and {e}; then rerun this command") from e
        sources.append(open_columns(path, m.id, manifest))
        cores.add(manifest.get("blas_core") or "unknown")  # members built before manifests recorded it: unknown
    common = set.intersection(*(set(src) for src in sources))
    extra_columns = {k[len("extra_"):]: sources[0][k].dtype for k in sorted(common) if k.startswith("extra_")}
    extra_columns["source"] = np.int8  # index of the member in generation.union
    columns, _, joint_action_count = _layout(card, extra_columns)
    columns["episode_starts"] = ((sum(len(src["episode_starts"]) for src in sources),), np.int64)
    with StoreWriter(target, columns) as writer:
        cols = writer.arrays
        t, e = 0, 0
        for k, src in enumerate(sources):
            n, ne = len(src["rewards"]), len(src["episode_starts"])
            for name in columns:
                if name == "episode_starts":
                    cols[name][e : e + ne] = src[name] + t
                elif name == "extra_source":
                    cols[name][t : t + n] = k
                else:
                    cols[name][t : t + n] = src[name]
            t, e = t + n, e + ne
        stats = dataset_statistics(cols, joint_action_count)
        return writer.commit(_manifest(card, stats, ", ".join(sorted(cores))))


def _no_bar(progress: bool | None) -> bool | None:
    if progress is None:
        return None if not os.environ.get("CI") else True
    return not progress


def episode_returns(rewards: np.ndarray, episode_starts: np.ndarray) -> np.ndarray:
    """Sum of rewards per episode (vectorized; episodes are contiguous)."""
    if len(episode_starts) == 0:
        return np.zeros(0)
    return np.add.reduceat(np.asarray(rewards, dtype=np.float64), np.asarray(episode_starts))


def dataset_statistics(cols: dict[str, np.ndarray], joint_action_count: int | None = None) -> dict[str, Any]:
    """Summary statistics recorded in the manifest; ``joint_action_count`` (discrete tasks) adds coverage."""
    returns = episode_returns(cols["rewards"], cols["episode_starts"])
    stats: dict[str, Any] = {
        "transitions": int(len(cols["rewards"])),
        "episodes": int(len(returns)),
        "mean_return": float(returns.mean()),
        "std_return": float(returns.std()),
        "min_return": float(returns.min()),
        "max_return": float(returns.max()),
        "terminations": int(np.count_nonzero(cols["terminations"])),
        "truncations": int(np.count_nonzero(cols["truncations"])),
    }
    if joint_action_count is not None:
        stats["possible_joint_actions"] = joint_action_count
        joint, counts = np.unique(np.asarray(cols["actions"]), axis=0, return_counts=True)
        stats["joint_action_counts"] = {",".join(map(str, j)): int(c) for j, c in zip(joint.tolist(), counts)}
    return stats


def check_expected(card: Card, stats: dict[str, Any]) -> None:
    """Compare fresh statistics with the card's ``[expected]`` table; raise on any mismatch."""
    if card.is_variant:
        return  # a resized copy has its own statistics; the card's expectations are for its full size
    exp = dict(card.expected)
    problems = []
    if "episodes" in exp and stats["episodes"] != exp.pop("episodes"):
        problems.append(f"episodes {stats['episodes']} != expected {card.expected['episodes']}")
    if "mean_return" in exp:
        target, tol = exp.pop("mean_return"), exp.pop("mean_return_tolerance", 0.0)
        if abs(stats["mean_return"] - target) > tol:
            problems.append(f"mean return {stats['mean_return']:.4f} not within {tol} of {target}")
    if "min_joint_action_count" in exp:
        need = exp.pop("min_joint_action_count")
        if "possible_joint_actions" not in stats:
            raise CardError(f"dataset card {card.path}: min_joint_action_count applies to discrete tasks only")
        counts = stats.get("joint_action_counts", {})
        if len(counts) < stats.get("possible_joint_actions", 0) or min(counts.values()) < need:
            problems.append(f"joint action coverage {counts} has fewer than {need} of some joint action")
    if exp:
        raise CardError(f"dataset card {card.path}: unknown [expected] fields {sorted(exp)}")
    if problems:
        raise DatasetVerificationError(
            f"dataset {card.id} does not match its card {card.path}: " + "; ".join(problems) + ". Nothing was cached."
        )
