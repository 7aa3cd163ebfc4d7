"""Helpers shared by the tests."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import offcoord
from gymnasium import spaces

# Fields of a run's results.json that are facts about the machine or the session, not the run:
# they may differ between two equal runs.
TIMING = ("train_seconds_this_session", "train_cpu_seconds_this_session")


def load_script(name: str):
    """Import ``scripts/<name>.py`` as a module (the scripts are not a package)."""
    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def dataset_copy(ds, rewards=None, manifest=None, termination_rule=None):
    """An in-memory copy of ``ds`` (same id and card), optionally with another reward column,
    manifest or termination rule (``None``: the dataset's own)."""
    columns = {name: ds.column(name) for name in ds.column_names}
    if rewards is not None:
        columns["rewards"] = rewards
    return offcoord.Dataset(ds.id, ds.env_id, ds.card, columns, ds.layout, ds.view, ds.manifest if manifest is None else manifest,
                            termination_rule=termination_rule or ds.termination_rule)


def rollout(env, seed, action_seed, scale=1.0):
    """One full episode with seeded random actions (continuous ones scaled toward 0 by ``scale``).

    Returns ``[(obs, state)]`` then one ``(actions, obs, state, rewards, terminations, truncations)`` per step.
    """
    rng = np.random.default_rng(action_seed)
    obs, _ = env.reset(seed=seed)
    trace = [(obs, env.state().copy())]
    while env.agents:
        actions = {}
        for a in env.agents:
            space = env.action_space(a)
            if isinstance(space, spaces.Discrete):
                actions[a] = int(rng.integers(space.n))
            else:
                actions[a] = (scale * rng.uniform(space.low, space.high)).astype(space.dtype)
        obs, rew, term, trunc, _ = env.step(actions)
        trace.append((actions, obs, env.state().copy(), rew, term, trunc))
    return trace


def same(a, b):
    """Deep equality of nested dicts/tuples/lists of arrays and numbers."""
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (tuple, list)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return np.array_equal(np.asarray(a), np.asarray(b))
