"""Decentralized evaluation of a team policy: the one protocol every algorithm is scored with.

The policy protocol (how any algorithm, in any framework, plugs in):

- a **mapping** ``{agent: callable}`` where each callable takes that agent's observation and
  returns that agent's action — decentralized execution is then guaranteed by construction; or
- one **callable** taking ``{agent: observation}`` and returning ``{agent: action}`` — for
  centralized baselines, which must say so.

If the policy (or a per-agent callable) has a ``reset()`` method it is called at the start of
every episode (for policies with memory). Actions are checked against the action spaces, so a
policy that emits NaN or a wrong shape fails loudly instead of being scored.

Scores follow the evaluation protocol of the docs: the caller passes deterministic policies
(Gaussian mean, categorical mode), episode ``i`` is reset with seed ``seed + i``, and returns are
normalized with the environment's reference scores.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np
from tqdm.auto import tqdm

from offcoord.registry import make, reference_scores


@dataclass(frozen=True)
class EvaluationResult:
    env_id: str
    returns: np.ndarray  # per-episode team return
    lengths: np.ndarray  # per-episode number of steps
    seeds: tuple[int, ...]
    normalized_scores: np.ndarray | None  # None where no card gives reference scores
    infos: list[dict[str, Any]] = field(default_factory=list, repr=False)  # last info of each episode
    strategies: list[dict[str, int]] | None = field(default=None, repr=False)  # per episode, where the task defines them
    trajectories: list[dict[str, np.ndarray]] | None = field(default=None, repr=False)  # with record=True

    @property
    def strategy_agreement_rate(self) -> float | None:
        """Fraction of episodes in which every agent followed the same strategy (None where undefined)."""
        if self.strategies is None:
            return None
        return float(np.mean([len(set(s.values())) == 1 for s in self.strategies]))

    @property
    def mean_return(self) -> float:
        return float(np.mean(self.returns))

    @property
    def std_return(self) -> float:
        return float(np.std(self.returns))

    @property
    def normalized_mean(self) -> float | None:
        return None if self.normalized_scores is None else float(np.mean(self.normalized_scores))

    def summary(self) -> str:
        norm = "" if self.normalized_mean is None else f", normalized {self.normalized_mean:.3f}"
        agree = "" if self.strategies is None else f", strategy agreement {self.strategy_agreement_rate:.2f}"
        return f"{self.env_id}: return {self.mean_return:.3f} ± {self.std_return:.3f} over {len(self.returns)} episodes{norm}{agree}"


def _as_team_policy(policy) -> tuple[Callable[[dict], dict], list[Callable[[], None]]]:
    if isinstance(policy, Mapping):
        per_agent = dict(policy)
        resets = [p.reset for p in per_agent.values() if hasattr(p, "reset")]
        return (lambda obs: {a: per_agent[a](o) for a, o in obs.items()}), resets
    if callable(policy):
        return policy, [policy.reset] if hasattr(policy, "reset") else []
    raise TypeError(
        "policy must be a callable {agent: obs} -> {agent: action}, or a dict {agent: callable obs -> action}; "
        f"got {type(policy).__name__}"
    )


def evaluate(
    policy,
    env_id: str,
    episodes: int = 10,
    seed: int = 0,
    env_kwargs: Mapping[str, Any] | None = None,
    progress: bool | None = False,
    record: bool = False,
) -> EvaluationResult:
    """Run ``episodes`` episodes of ``policy`` on ``env_id`` and return returns and normalized scores.

    Each agent's action is computed from that agent's observation only when ``policy`` is a dict
    of per-agent callables (decentralized execution). Normalized scores use the reference scores
    of the registered environment; with ``env_kwargs`` that change the task (e.g. another
    horizon) they may not apply, so they are omitted.

    Where the task defines agents' strategies (the coordination game, the reacher), the result
    also holds each episode's strategies and the **strategy-agreement rate**. ``record=True``
    keeps every episode's global states and joint actions in ``result.trajectories``.
    """
    if isinstance(episodes, bool) or not isinstance(episodes, (int, np.integer)) or episodes < 1:
        raise ValueError(f"episodes must be a positive integer, got {episodes!r}")
    act, resets = _as_team_policy(policy)
    env = make(env_id, **(env_kwargs or {}))
    if isinstance(policy, Mapping) and set(policy) != set(env.possible_agents):
        env.close()
        raise ValueError(f"the policy dict has agents {sorted(policy)}, but {env_id!r} has agents {env.possible_agents}")
    classify = getattr(env, "episode_strategies", None)
    keep = record or classify is not None
    returns, lengths, infos, seeds = [], [], [], tuple(int(seed) + i for i in range(int(episodes)))
    strategies, trajectories = [], []
    try:
        for ep_seed in tqdm(seeds, desc=f"evaluating on {env_id}", disable=not progress):
            for reset in resets:
                reset()
            obs, _ = env.reset(seed=ep_seed)
            total, steps, info = 0.0, 0, {}
            states, joint = [env.state()], []
            while env.agents:
                obs, rewards, _, _, step_infos = env.step(act(obs))
                if keep:  # the step validated the actions; keep the joint action it sent and the new state
                    joint.append(env.last_joint_action)
                    states.append(env.state())
                total += rewards[env.possible_agents[0]]  # team reward: every agent gets the same
                info = step_infos.get(env.possible_agents[0], {})
                steps += 1
            returns.append(total)
            lengths.append(steps)
            infos.append(info)
            if keep:
                trajectory = {"states": np.asarray(states), "joint_actions": np.asarray(joint)}
                if classify is not None:
                    strategies.append(classify(trajectory["states"], trajectory["joint_actions"]))
                if record:
                    trajectories.append(trajectory)
    finally:
        env.close()
    returns_arr = np.asarray(returns, dtype=np.float64)
    normalized = None
    if not env_kwargs:
        try:
            low, high = reference_scores(env_id)
            normalized = (returns_arr - low) / (high - low)
        except ValueError:
            normalized = None
    return EvaluationResult(env_id, returns_arr, np.asarray(lengths), seeds, normalized, infos,
                            strategies if classify is not None else None, trajectories if record else None)
