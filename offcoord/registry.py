"""Registered environments, behaviors and datasets, and the public lookup functions."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from offcoord.data.cards import Card, load_cards
from offcoord.errors import UnknownIdError


@dataclass(frozen=True)
class EnvSpec:
    """A registered environment id: the class (``"module:Class"``) and its constructor kwargs."""

    id: str
    entry_point: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    def load(self) -> Callable[..., Any]:
        module, name = self.entry_point.split(":")
        return getattr(importlib.import_module(module), name)


ENV_SPECS: dict[str, EnvSpec] = {}
# Behavior name -> "module:factory"; cards refer to behaviors by name.
BEHAVIORS: dict[str, str] = {}


def register_env(env_id: str, entry_point: str, **kwargs: Any) -> None:
    ENV_SPECS[env_id] = EnvSpec(env_id, entry_point, kwargs)


def register_behavior(name: str, entry_point: str) -> None:
    BEHAVIORS[name] = entry_point


register_behavior("uniform-random", "offcoord.behaviors:UniformRandomBehavior")
register_behavior("policy", "offcoord.policies:PolicyBehavior")
register_env("coordination-game", "offcoord.envs.coordination:CoordinationGameEnv")
register_behavior("coordination-bernoulli", "offcoord.envs.coordination:IndependentBernoulliBehavior")
register_behavior("reacher2-expert", "offcoord.envs.reacher:ReacherExpertBehavior")
for _obs in ("fo", "independent", "leader-only"):
    register_env(f"reacher2-{_obs}", "offcoord.envs.reacher:Reacher2Env", observability=_obs)
for _obs in ("fo", "po"):
    register_env(f"ant-{_obs}", "offcoord.envs.ant:Ant4x2Env", observability=_obs)


def env_spec(env_id: str) -> EnvSpec:
    if env_id not in ENV_SPECS:
        raise UnknownIdError("environment", env_id, ENV_SPECS)
    return ENV_SPECS[env_id]


def list_envs() -> list[str]:
    """Every registered environment id, sorted."""
    return sorted(ENV_SPECS)


def make(env_id: str, **kwargs: Any):
    """Create the PettingZoo ``ParallelEnv`` registered as ``env_id``.

    Keyword arguments override the registered defaults (``render_mode="rgb_array"``,
    ``horizon=3``, ...). Unknown ids raise ``ValueError`` listing the closest valid ids.
    """
    spec = env_spec(env_id)
    merged = {**spec.kwargs, **kwargs}
    try:
        return spec.load()(**merged)
    except TypeError as e:  # unknown keyword: name the environment and its id
        raise ValueError(f"cannot make {env_id!r} with {kwargs}: {e}") from None


def make_behavior(name: str, kwargs: Mapping[str, Any]):
    if name not in BEHAVIORS:
        raise UnknownIdError("behavior", name, BEHAVIORS)
    module, attr = BEHAVIORS[name].split(":")
    return getattr(importlib.import_module(module), attr)(**kwargs)


def _dataset_index() -> dict[str, Card]:
    index: dict[str, Card] = {}
    for card in load_cards().values():
        for dataset_id in card.datasets:
            index[dataset_id] = card
    return index


def list_datasets() -> list[str]:
    """Every dataset id (one per card and observability view), sorted."""
    return sorted(_dataset_index())


def dataset_card(dataset_id: str) -> Card:
    """The card that builds ``dataset_id`` (a dataset id, or a card id such as ``reacher2-expert``)."""
    index = _dataset_index()
    if dataset_id in index:
        return index[dataset_id]
    cards = load_cards()
    if dataset_id in cards:
        return cards[dataset_id]
    raise UnknownIdError("dataset", dataset_id, index)


def reference_scores(id: str) -> tuple[float, float]:
    """``(min, max)`` reference returns of a dataset id or an environment id.

    An environment's reference scores come from the cards of its datasets, which must agree.
    """
    index = _dataset_index()
    if id in index:
        card = index[id]
        return card.reference_min, card.reference_max
    if id in ENV_SPECS:
        refs = {(c.reference_min, c.reference_max) for c in index.values() if id in c.datasets.values()}
        if not refs:
            raise ValueError(f"no dataset card gives reference scores for environment {id!r}")
        if len(refs) > 1:
            raise ValueError(f"dataset cards disagree on the reference scores of {id!r}: {sorted(refs)}")
        return refs.pop()
    raise UnknownIdError("dataset", id, list(index) + list(ENV_SPECS))


def normalized_score(id: str, returns):
    """D4RL-style normalization: ``(returns - min) / (max - min)`` with the card's reference scores.

    ``id`` is a dataset id or an environment id. 0 is the reference minimum (a random policy,
    or no coordination in the coordination game) and 1 the reference expert. Accepts a number
    or an array and returns the same shape.
    """
    low, high = reference_scores(id)
    out = (np.asarray(returns, dtype=np.float64) - low) / (high - low)
    return float(out) if out.ndim == 0 else out


def _register_with_pettingzoo() -> None:
    """Make ``pettingzoo.make("parallel", "offcoord/<env-id>")`` work once offcoord is imported."""
    try:
        from pettingzoo import register
        from pettingzoo.env_registry.registration import parallel_registry
    except ImportError:  # older PettingZoo without a registry
        return
    for spec in ENV_SPECS.values():
        pz_id = f"offcoord/{spec.id}-v0"
        if pz_id not in parallel_registry:
            register("parallel", pz_id, entry_point=spec.entry_point, kwargs=dict(spec.kwargs))


_register_with_pettingzoo()
