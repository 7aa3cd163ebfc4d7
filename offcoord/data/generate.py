"""Build a stored copy from its card: run the card's behavior in the real environment.

Deterministic: the card's seed fixes the behavior's random stream and every episode's reset seed,
so the same card gives the same bytes on one machine. Verified: the fresh data must match the
card's ``[expected]`` statistics before it is published into the cache.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from offcoord import __version__
from offcoord.fileio import cache_dir, file_lock
from offcoord.data.cards import Card
from offcoord.data.store import MANIFEST, StoreWriter, remove_stale_temporaries
from offcoord.errors import CardError, DatasetVerificationError


def store_path(card: Card, root: Path | None = None) -> Path:
    return Path(root or cache_dir()) / card.id


def lock_path(card: Card, root: Path | None = None) -> Path:
    return Path(root or cache_dir()) / ".locks" / f"{card.id}.lock"


def generate(card: Card, root: Path | None = None, force: bool = False, progress: bool | None = None) -> Path:
    """Build ``card``'s stored copy under the cache ``root`` (once, even with several processes).

    Returns the store directory. With ``force`` an existing copy is rebuilt and replaced
    atomically. ``progress=None`` shows a progress bar only on a terminal.
    """
    from offcoord.registry import make, make_behavior  # registry imports cards; avoid a cycle

    root = Path(root or cache_dir())
    target = store_path(card, root)
    with file_lock(lock_path(card, root)):
        remove_stale_temporaries(root, card.id)
        if target.exists() and (target / MANIFEST).exists() and not force:
            return target  # another process built it while we waited for the lock
        env = make(card.env)
        behavior = make_behavior(card.behavior, card.behavior_kwargs)
        layout = env.layout
        state_dim = int(np.prod(env.state_space.shape))
        n = card.transitions
        rng = np.random.default_rng(card.seed)
        extra_columns = getattr(behavior, "extra_columns", {})  # name -> dtype of per-transition facts
        columns = {
            "states": ((n, state_dim), np.float32),
            "next_states": ((n, state_dim), np.float32),
            "actions": ((n, layout.joint_action_dim), np.int64 if layout.discrete else np.float32),
            "rewards": ((n,), np.float32),
            "terminations": ((n,), np.bool_),
            "truncations": ((n,), np.bool_),
            "episode_starts": ((n,), np.int64),  # upper bound; truncated to the episode count below
            **{f"extra_{k}": ((n,), dtype) for k, dtype in extra_columns.items()},
        }
        with StoreWriter(target, columns) as writer, tqdm(
            total=n, desc=f"generating {card.id}", unit="transition", disable=_no_bar(progress), mininterval=0.5
        ) as bar:
            cols = writer.arrays
            t, episodes = 0, 0
            while t < n:
                env.reset(seed=int(rng.integers(2**31 - 1)))
                behavior.reset(rng)
                cols["episode_starts"][episodes] = t
                episodes += 1
                state = env.state()
                done = False
                start = t
                while not done and t < n:
                    joint = behavior.act(state, rng)
                    extras = behavior.extras() if extra_columns else {}  # facts about the action just chosen
                    reward, terminated, truncated, _ = env.step_joint(joint)
                    truncated = truncated and not terminated
                    next_state = env.state()
                    cols["states"][t] = state
                    cols["actions"][t] = joint
                    cols["rewards"][t] = reward
                    cols["next_states"][t] = next_state
                    cols["terminations"][t] = terminated
                    # the dataset's last episode is cut by the transition budget: mark it as a time limit
                    cols["truncations"][t] = truncated or (t == n - 1 and not terminated)
                    for k, v in extras.items():
                        cols[f"extra_{k}"][t] = v
                    done = terminated or truncated
                    state = next_state
                    t += 1
                bar.update(t - start)
            writer.truncate("episode_starts", episodes)
            joint_action_count = (
                int(np.prod([env.action_space(a).n for a in layout.agents])) if layout.discrete else None
            )
            stats = dataset_statistics(cols, joint_action_count)
            check_expected(card, stats)
            return writer.commit(
                {
                    "card_id": card.id,
                    "card_sha256": card.sha256,
                    "offcoord_version": __version__,
                    "numpy_version": np.__version__,
                    "platform": platform.platform(),
                    "statistics": stats,
                }
            )


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
