"""Behaviors that work on any task (task-specific experts live next to their environment).

A behavior is what a card's ``generation.behavior`` names: an object with ``reset(rng, episode)``
at each episode start (``episode``: the episode's index in its segment) and
``act(state, rng) -> joint action``; optionally ``extra_columns`` (name -> dtype) and ``extras()``
for per-transition facts to store. A behavior without per-episode state may set ``batched = True``
and implement ``act_batch(states, rngs)`` (one generator per row, the same draws as ``act``): the
generator then steps several episodes side by side and evaluates it once per step for all.
"""

from __future__ import annotations

import numpy as np
from gymnasium import spaces


class UniformRandomBehavior:
    """Every agent acts uniformly at random in its action space (the D4RL "random" datasets)."""

    def __init__(self, env: str):
        from offcoord.registry import make

        e = make(env)
        self.layout = e.layout
        self.spaces = [e.action_space(a) for a in self.layout.agents]
        e.close()

    def reset(self, rng: np.random.Generator, episode: int = 0) -> None:
        pass

    def act(self, state: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        actions = {}
        for agent, space in zip(self.layout.agents, self.spaces):
            if isinstance(space, spaces.Discrete):
                actions[agent] = np.int64(space.start + rng.integers(space.n))
            else:
                actions[agent] = rng.uniform(space.low, space.high).astype(np.float32)
        return self.layout.join(actions)
