"""offcoord_agents: reference agents (MOMA-PPO and the paper's baselines) trained against offcoord's public API.

>>> import offcoord, offcoord_agents
>>> policy = offcoord_agents.train("ibc", "coordination-favorable", seed=0, config={"steps": 500})
>>> offcoord.evaluate(policy, "coordination-game").normalized_mean
1.0
"""

from __future__ import annotations

__version__ = "0.1.0"

from pathlib import Path
from typing import Any


def train(
    algorithm: str,
    dataset,
    *,
    seed: int = 0,
    steps: int | None = None,
    config: dict[str, Any] | None = None,
    out: str | Path | None = None,
    resume: bool = True,
    progress: bool | None = None,
    device: str | None = None,
    threads: int | None = None,
):
    """Train ``algorithm`` (see ``ALGORITHMS``) on an offline dataset; return the trained policy.

    ``dataset`` is a dataset id (``offcoord.list_datasets()``) or an ``offcoord.Dataset`` (for
    example one imported from Minari).
    ``config`` overrides the algorithm's defaults (its ``Config`` dataclass); ``steps`` is a
    shortcut for ``config["steps"]``. With ``out`` the run writes metrics, atomic checkpoints,
    ``policy.pt`` and ``results.json`` there, and resumes from its checkpoint if one exists.
    The returned policy plugs into ``offcoord.evaluate``; ``policy.meta["evals"]`` holds the
    evaluation history (the run's score is the last one).
    """
    from offcoord_agents.core import run_training
    from offcoord_agents.registry import algorithm_class

    config = dict(config or {})
    if steps is not None:
        config["steps"] = steps
    return run_training(algorithm_class(algorithm), dataset, seed=seed, config=config, out=out, resume=resume,
                        progress=progress, device=device, threads=threads)


def load_policy(path: str | Path, stochastic: bool = False, seed: int = 0):
    """Reload a policy saved by training (``<out>/policy.pt``); it plugs into ``offcoord.evaluate``."""
    from offcoord_agents.policy import load_policy as _load

    return _load(path, stochastic=stochastic, seed=seed)


def __getattr__(name):
    if name == "ALGORITHMS":
        from offcoord_agents.registry import ALGORITHMS

        return sorted(ALGORITHMS)
    raise AttributeError(name)
