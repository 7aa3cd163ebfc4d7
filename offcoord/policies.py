"""Trained behavior policies evaluated with numpy (``offcoord`` never imports torch).

A policy file is a small float32 ``.npz`` exported by ``scripts/train_ant_sac.py``
(``export_actor``): a 2-hidden-layer ReLU MLP with a mean head and a log-std head, i.e. the SAC
actor's tanh-squashed Gaussian. Layers are stored as ``y = x @ W + b`` with ``W`` of shape
``(in, out)``:

| key | meaning |
| --- | --- |
| ``hidden_w0, hidden_b0, hidden_w1, hidden_b1`` | hidden layers (ReLU) |
| ``mean_w, mean_b`` | mean head (pre-tanh) |
| ``logstd_w, logstd_b`` | log-std head, squashed into ``[log_std_min, log_std_max]`` by ``tanh`` |
| ``action_scale, action_bias`` | ``action = tanh(u) * action_scale + action_bias`` |
| ``obs_dim, act_dim, activation, env_id, algorithm, train_step, train_seed, eval_return, format_version`` | metadata |

>>> policy = load_policy("datasets_meta/ant-expert.npz")           # doctest: +SKIP
>>> policy.act(states, deterministic=True)                          # doctest: +SKIP
>>> policy.act(states, rng=np.random.default_rng(0))                # sampled  # doctest: +SKIP
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

FORMAT_VERSION = 1
_LAYERS = ("hidden_w0", "hidden_b0", "hidden_w1", "hidden_b1", "mean_w", "mean_b", "logstd_w", "logstd_b")


class MLPPolicy:
    """A tanh-squashed Gaussian MLP policy (a SAC actor) evaluated with numpy, on a batch of rows.

    ``act(obs)`` takes ``(obs_dim,)`` or ``(N, obs_dim)`` observations and returns float32
    actions of the matching shape: the deterministic action ``tanh(mean)`` (scaled) with
    ``deterministic=True``, else ``tanh(mean + std * eps)`` with ``eps`` drawn from ``rng``.
    A row's action is the same bits whatever batch it comes in.
    """

    def __init__(self, params: dict[str, np.ndarray], meta: dict | None = None):
        missing = [k for k in _LAYERS + ("action_scale", "action_bias", "log_std_min", "log_std_max") if k not in params]
        if missing:
            raise ValueError(f"policy parameters are missing {missing}")
        self.params = {k: np.asarray(v, dtype=np.float32) for k, v in params.items()}
        self.meta = dict(meta or {})
        self.obs_dim = int(self.params["hidden_w0"].shape[0])
        self.act_dim = int(self.params["mean_w"].shape[1])
        self.log_std_min = float(self.params["log_std_min"])
        self.log_std_max = float(self.params["log_std_max"])

    def _heads(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # One vector-matrix product per row, never a matrix product over the batch: on some CPUs
        # BLAS rounds a row of a batch differently from the same row alone or in a batch of another
        # size (OpenBLAS on an AMD EPYC: about 1e-7), so a dataset's episodes, stepped in waves,
        # would depend on how they were grouped (and on the number of worker processes).
        p = self.params
        mean = np.empty((len(obs), self.act_dim), np.float32)
        pre_log_std = np.empty((len(obs), self.act_dim), np.float32)
        for i, row in enumerate(obs):
            h = np.maximum(row @ p["hidden_w0"] + p["hidden_b0"], 0.0)
            h = np.maximum(h @ p["hidden_w1"] + p["hidden_b1"], 0.0)
            mean[i] = h @ p["mean_w"] + p["mean_b"]
            pre_log_std[i] = h @ p["logstd_w"] + p["logstd_b"]
        log_std = np.tanh(pre_log_std)
        log_std = self.log_std_min + 0.5 * (self.log_std_max - self.log_std_min) * (log_std + 1.0)
        return mean, log_std

    def distribution(self, obs) -> tuple[np.ndarray, np.ndarray]:
        """Pre-tanh Gaussian ``(mean, log_std)`` of a batch of observations."""
        obs = self._check(obs)
        return self._heads(obs)

    def act(self, obs, rng: np.random.Generator | None = None, deterministic: bool = False) -> np.ndarray:
        obs = np.asarray(obs, dtype=np.float32)
        single = obs.ndim == 1
        mean, log_std = self._heads(self._check(obs))
        if deterministic:
            u = mean
        else:
            if rng is None:
                raise ValueError("a sampled action needs rng=np.random.Generator (or pass deterministic=True)")
            u = mean + np.exp(log_std) * rng.standard_normal(mean.shape, dtype=np.float32)
        action = (np.tanh(u) * self.params["action_scale"] + self.params["action_bias"]).astype(np.float32)
        return action[0] if single else action

    def act_rows(self, obs, rngs: list[np.random.Generator], deterministic: bool = False) -> np.ndarray:
        """Like ``act`` on a batch, but row ``i`` draws its noise from its own ``rngs[i]`` (one stream per episode)."""
        mean, log_std = self._heads(self._check(obs))
        if deterministic:
            u = mean
        else:
            if len(rngs) != len(mean):
                raise ValueError(f"need one generator per row: {len(rngs)} generators for {len(mean)} rows")
            eps = np.stack([rng.standard_normal(self.act_dim, dtype=np.float32) for rng in rngs])
            u = mean + np.exp(log_std) * eps
        return (np.tanh(u) * self.params["action_scale"] + self.params["action_bias"]).astype(np.float32)

    def _check(self, obs) -> np.ndarray:
        obs = np.asarray(obs, dtype=np.float32)
        if obs.ndim == 1:
            obs = obs[None]
        if obs.ndim != 2 or obs.shape[1] != self.obs_dim:
            raise ValueError(f"observations must have shape (N, {self.obs_dim}) or ({self.obs_dim},); got {obs.shape}")
        return obs

    def __repr__(self) -> str:
        step = self.meta.get("train_step")
        ret = self.meta.get("eval_return")
        return f"MLPPolicy(obs_dim={self.obs_dim}, act_dim={self.act_dim}, train_step={step}, eval_return={ret})"


def load_policy(path: str | os.PathLike) -> MLPPolicy:
    """Load an exported actor ``.npz`` (see the module docstring for the format)."""
    path = Path(path)
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    version = int(arrays.get("format_version", -1))
    if version != FORMAT_VERSION:
        raise ValueError(f"{path}: policy format_version {version}, this offcoord reads {FORMAT_VERSION}")
    meta = {k: v.item() for k, v in arrays.items() if v.ndim == 0 and k not in ("log_std_min", "log_std_max")}
    return MLPPolicy({k: v for k, v in arrays.items() if k not in meta}, meta)


class PolicyBehavior:
    """Data-collection behavior for dataset cards: a policy file acting on the joint state.

    ``weights`` is a path (relative paths are resolved against the ``datasets_meta`` folder);
    ``deterministic=False`` samples actions (the D4RL recipe). Implements the behavior protocol
    of ``offcoord.data.generate``: ``reset(rng)`` and ``act(state, rng) -> joint action``. The
    policy's action order is the joint action order (Gymnasium's actuator order).
    """

    def __init__(self, weights: str, deterministic: bool = False):
        from offcoord.data.cards import weights_path  # the same lookup the card's recipe key hashes

        self.policy = load_policy(weights_path(weights))
        self.deterministic = bool(deterministic)

    batched = True  # no per-episode state: the generator evaluates one batch for many episodes
    uses_blas = True  # matrix products: the generator pins the BLAS kernels so the bytes match across CPUs

    def reset(self, rng: np.random.Generator, episode: int = 0) -> None:
        pass

    def act(self, state: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return self.policy.act(state, rng=rng, deterministic=self.deterministic)

    def act_batch(self, states: np.ndarray, rngs: list[np.random.Generator]) -> np.ndarray:
        """Actions for a batch of states; row ``i`` draws its noise from ``rngs[i]`` exactly as ``act`` would."""
        return self.policy.act_rows(states, rngs, deterministic=self.deterministic)

