"""The benchmark's own lens on coordination: did the agents follow the same strategy?

Tasks with several equally good joint strategies define, per episode, which strategy each agent
followed (the coordination game: the side it chose; the reacher: which of the target's two arm
poses, elbow bent clockwise or counter-clockwise, the shoulder and the elbow went for). The **strategy-agreement rate** is the fraction of evaluation
episodes in which all agents followed the same one. A team can score well on average while
agreeing rarely (each expert alone takes the long way round half the time); agreement separates
"good at the task" from "coordinated".
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from offcoord.evaluation import evaluate


def strategy_agreement_rate(
    policy, env_id: str, episodes: int = 10, seed: int = 0, env_kwargs: Mapping[str, Any] | None = None
) -> float:
    """Evaluate ``policy`` (the :func:`offcoord.evaluate` protocol) and return its strategy-agreement rate.

    Raises ``ValueError`` for tasks that define no strategies.
    """
    result = evaluate(policy, env_id, episodes=episodes, seed=seed, env_kwargs=env_kwargs)
    if result.strategy_agreement_rate is None:
        raise ValueError(f"{env_id!r} defines no agent strategies; strategy agreement is defined for the coordination game and the reacher")
    return result.strategy_agreement_rate


def dataset_strategy_agreement(ds) -> float | None:
    """Strategy-agreement rate of the behavior in a dataset (episode by episode), or None if undefined."""
    from offcoord.registry import make

    env = make(ds.env_id)
    classify = getattr(env, "episode_strategies", None)
    env.close()
    if classify is None:
        return None
    agree = []
    for ep in ds.episodes():
        states = np.concatenate([ep.states, ep.next_states[-1:]])
        agree.append(len(set(classify(states, ep.joint_actions).values())) == 1)
    return float(np.mean(agree))
