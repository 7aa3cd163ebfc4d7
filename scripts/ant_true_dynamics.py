"""MOMA-PPO on the ant with the real simulator in place of the learned world model (a diagnostic).

Everything else is MOMA-PPO's as configured: ``rollouts`` rollouts of ``horizon`` steps start from
dataset states, the decentralized actors act, and the centralized critic bootstraps at the
horizon. Only the dynamics differ: each step sets MuJoCo to the rollout's state and steps Ant-v5
itself (its reward and termination), so there is no model error, no uncertainty penalty and no
disagreement cut. If the team does not improve here, the learner's side (short rollouts from the
data's states, the critic, PPO's settings) is what holds it back, not the world model.

    python scripts/ant_true_dynamics.py --out runs/ant/true_dynamics --set normalize_inputs=True \
        --set initial_std=0.38 --set rollout_continuation=0.9 --set clip_value_loss=False

(the run in docs/results.md that learns). ``--seed``, ``--steps`` and ``--set`` are those of
``offcoord-agents train momappo``, with a budget of 400 iterations; the dataset defaults to
``ant-full-replay-po``.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

import offcoord_agents
from offcoord.envs.ant import LAYOUT, STATE_DIM, Ant4x2Env
from offcoord_agents.algos.momappo import MOMAPPO
from offcoord_agents.cli import _parse_set  # the CLI's own --set parser
from offcoord_agents.world_model_env import draw_start_rows

N_QPOS = 13  # qpos[2:] (torso z, quaternion, 8 joint angles); the state's other 14 entries are qvel


class SimulatorRollouts:
    """``WorldModelEnv``'s batched interface (the part MOMA-PPO uses), stepped by Ant-v5 itself."""

    def __init__(self, dataset, horizon: int, num_envs: int, seed: int):
        self.dataset, self.horizon, self.num_envs = dataset, horizon, num_envs
        self.possible_agents = list(dataset.agents)
        self._env = Ant4x2Env("fo")
        self._env.reset(seed=seed)
        self._ant = self._env.gym_env.unwrapped
        self.generator = torch.Generator().manual_seed(seed)
        self.model = None  # no world model
        self.start_indices = None
        self._states = np.zeros((num_envs, STATE_DIM), np.float32)
        self._active = np.zeros(num_envs, bool)
        self._t = 0

    def reset_batch(self, start_states=None):
        self.start_indices = None
        if start_states is None:
            self.start_indices = draw_start_rows(self.dataset, self.num_envs, self.generator)
            start_states = self.dataset.states[self.start_indices]
        self._states = np.asarray(start_states, np.float32).copy()
        self._active = np.ones(self.num_envs, bool)
        self._t = 0
        return self.dataset.view(self._states)

    def state_batch(self) -> np.ndarray:
        return self._states.copy()

    def step_batch(self, actions):
        joint = LAYOUT.join({a: np.asarray(actions[a]) for a in self.possible_agents}, dtype=np.float64)
        n = self.num_envs
        rewards, terms = np.zeros(n, np.float32), np.zeros(n, bool)
        active = self._active.copy()
        for i in np.flatnonzero(active):
            s = self._states[i].astype(np.float64)
            self._ant.set_state(np.concatenate([[0.0, 0.0], s[:N_QPOS]]), s[N_QPOS:])
            obs, r, term, _, _ = self._ant.step(joint[i])
            self._states[i], rewards[i], terms[i] = obs, r, term
        self._t += 1
        truncs = active & ~terms & (self._t >= self.horizon)
        terms &= active
        self._active = active & ~terms & ~truncs
        infos = {"raw_reward": rewards, "disagreement_cut": np.zeros(n, bool), "active_before": active}
        return self.dataset.view(self._states), rewards, terms, truncs, infos


class TrueDynamicsMOMAPPO(MOMAPPO):
    name = "momappo"  # the same config and checkpoints; only the rollouts' dynamics differ

    def setup(self, ds, workdir=None):
        cfg, seed = self.config, int(torch.initial_seed()) % 2**31
        # MOMA-PPO builds its rollouts through this config hook; nothing is fit
        cfg.world_model_env = lambda ds, workdir, num_envs: SimulatorRollouts(ds, cfg.horizon, num_envs, seed)
        super().setup(ds, workdir)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="ant-full-replay-po")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--out", required=True)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    config = {"steps": args.steps, **_parse_set(args.set)}
    offcoord_agents.core.run_training(TrueDynamicsMOMAPPO, args.dataset, seed=args.seed, config=config,
                                      out=args.out, progress=False)


if __name__ == "__main__":
    main()
