"""Trained policies as ``offcoord.evaluate`` expects them, and their save/load format.

A decentralized policy is a mapping ``{agent: callable(obs) -> action}``; each callable runs only
its own agent's slice of the stacked actor on only its own observation, so no information can
leak between agents at execution. A centralized policy (IQL over the joint action) is one callable
``{agent: obs} -> {agent: action}`` that reads the global state from an all-observant view, and
says so with ``centralized = True``.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from offcoord.fileio import atomic_write_bytes, sha256_bytes
from torch import nn

from offcoord_agents import nets
from offcoord_agents.data import TaskSpec, split_joint_action

POLICY_FORMAT = 1


def push_history(history: torch.Tensor, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """An actor's short memory one step later: ``[obs, action]`` (padded to the team's widths) in
    front, the oldest step dropped. ``history`` holds ``memory * (obs width + action width)`` values
    in its last dimension, most recent first; with ``memory = 0`` it is empty and stays so.

    The one definition of the memory's layout: MOMA-PPO's synthetic rollouts and an agent's policy
    at execution both go through it."""
    if history.shape[-1] == 0:
        return history
    block = torch.cat([obs, actions], -1)
    return torch.cat([block, history[..., : history.shape[-1] - block.shape[-1]]], -1)


class AgentPolicy:
    """One agent's actor: observation (numpy) -> action (numpy, or int for discrete tasks).

    With a team ``memory`` the actor also reads this agent's own last ``memory`` observations and
    actions (:func:`push_history`); ``reset()`` (called by ``offcoord.evaluate`` before each
    episode) empties it."""

    def __init__(self, team: "TeamPolicy", index: int):
        self.team, self.index = team, index
        self.reset()

    def reset(self) -> None:
        spec = self.team.spec
        self._history = torch.zeros(1, self.team.memory * (spec.max_obs_dim + spec.max_act_dim), device=self.team.device)

    def __call__(self, obs) -> np.ndarray | int:
        spec = self.team.spec
        obs = np.asarray(obs, dtype=np.float32).reshape(-1)
        if obs.shape[0] != spec.obs_dims[self.index]:
            raise ValueError(
                f"{spec.agents[self.index]}'s policy was trained on {spec.obs_dims[self.index]}-value observations "
                f"({spec.env_id}), got {obs.shape[0]} values: evaluate it on an environment with the same view"
            )
        x = torch.zeros(1, spec.max_obs_dim, device=self.team.device)
        x[0, : spec.obs_dims[self.index]] = torch.from_numpy(obs)
        with torch.no_grad():
            out = self.team._act(self.index, torch.cat([x, self._history], -1))
        if self.team.memory:  # the action as executed, padded like the rollouts' (actor means lie in [-1, 1])
            self._history = push_history(self._history, x, out.clamp(-1, 1) * self.team.act_mask[self.index])
        out = out.cpu()
        if spec.discrete:
            return int(out[0])
        return out[0, : spec.act_dims[self.index]].numpy().astype(np.float32)


class TeamPolicy(Mapping):
    """Decentralized team policy: ``policy[agent](obs) -> action``. Deterministic unless ``stochastic``.

    ``memory``: steps of each agent's own past observations and actions its actor reads (0: none)."""

    centralized = False

    def __init__(self, spec: TaskSpec, actor: nn.Module, kind: str, stochastic: bool = False, seed: int = 0, meta=None,
                 memory: int = 0):
        if kind not in ("deterministic", "gaussian", "categorical"):
            raise ValueError(f"unknown actor kind {kind!r}")
        if memory and spec.discrete:
            raise ValueError("memory needs continuous actions (the discrete coordination game is one step long)")
        self.spec, self.actor, self.kind, self.stochastic = spec, actor.eval(), kind, stochastic
        self.meta, self.memory = dict(meta or {}), int(memory)
        self.device = next(actor.parameters()).device
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.act_mask = spec.act_mask().to(self.device)
        self._agents = {a: AgentPolicy(self, i) for i, a in enumerate(spec.agents)}

    def _act(self, i: int, obs: torch.Tensor) -> torch.Tensor:
        if self.kind == "deterministic":
            return self.actor.act_one(i, obs)
        if self.kind == "gaussian":
            return self.actor.act_one(i, obs, self.generator, self.stochastic)
        return self.actor.act_one(i, obs, self.act_mask[i, 0], self.generator, self.stochastic)

    def __getitem__(self, agent: str) -> AgentPolicy:
        return self._agents[agent]

    def __iter__(self):
        return iter(self._agents)

    def __len__(self) -> int:
        return len(self._agents)

    def save(self, path: str | Path) -> Path:
        kind = {"kind": self.kind, "centralized": False, "memory": self.memory}
        return _save(path, kind, self.spec, self.actor, self.meta)


class CentralizedPolicy:
    """A joint actor on the global state (read from ``agent_0``'s all-observant observation).

    Only valid where an agent observes the whole state (``*-fo`` tasks, the coordination game).
    """

    centralized = True

    def __init__(self, spec: TaskSpec, actor: nn.Module, kind: str, meta=None):
        self.spec, self.actor, self.kind = spec, actor.eval(), kind
        self.meta = dict(meta or {})

    def __call__(self, observations: dict) -> dict:
        spec = self.spec
        device = next(self.actor.parameters()).device
        obs = np.asarray(observations[spec.agents[0]], dtype=np.float32).reshape(-1)
        if obs.shape[0] != spec.state_dim:
            raise ValueError(f"this centralized policy needs {spec.agents[0]} to observe the {spec.state_dim}-value "
                             f"global state ({spec.env_id}); got {obs.shape[0]} values")
        state = torch.as_tensor(obs.reshape(1, 1, -1), device=device)
        with torch.no_grad():
            if self.kind == "categorical":  # one choice over the product of the agents' choices
                joint = int(self.actor.net(state)[0, 0].argmax())
                out = {}
                for a, n in zip(reversed(spec.agents), reversed(spec.act_dims)):
                    joint, out[a] = divmod(joint, n)
                return {a: out[a] for a in spec.agents}
            action = self.actor.deterministic(state)[0, 0].cpu().numpy().astype(np.float32)
        return split_joint_action(spec, action)

    def save(self, path: str | Path) -> Path:
        return _save(path, {"kind": self.kind, "centralized": True}, self.spec, self.actor, self.meta)


def _actor_config(actor: nn.Module) -> dict:
    first, last = actor.net.layers[0], actor.net.layers[-1]
    hidden = [layer.weight.shape[2] for layer in actor.net.layers[:-1]]
    return {"class": type(actor).__name__, "members": first.weight.shape[0], "in": first.weight.shape[1],
            "out": last.weight.shape[2], "hidden": hidden}


def _save(path, kind: dict, spec: TaskSpec, actor: nn.Module, meta: dict) -> Path:
    path = Path(path)
    cfg = _actor_config(actor)
    if cfg["class"] == "StackedGaussianActor":
        cfg["out"] //= 2
    payload = {"format": POLICY_FORMAT, **kind, "spec": spec.to_dict(), "actor": cfg,
               "state_dict": actor.state_dict(), "meta": meta}
    atomic_torch_save(payload, path)
    return path


def atomic_torch_save(obj, path: Path) -> None:
    """``torch.save`` into memory, sealed, then offcoord's atomic write (temporary file, fsync, rename).

    The file is torch's zip format (``torch.load`` reads it as usual) with a CRC-32 per record and,
    in the zip comment, the sha256 of everything before that comment (:func:`seal`). :func:`safe_torch_load`
    checks both, which ``torch.load`` itself does not.
    """
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(Path(path), seal(buf.getvalue()))


_SEAL = b"offcoord-sha256:"
_SEAL_LEN = len(_SEAL) + 64
_END_OF_CENTRAL_DIRECTORY = b"PK\x05\x06"


def seal(data: bytes) -> bytes:
    """Put the sha256 of the zip file into its (empty) comment. The per-record CRC-32s miss damage
    to the zip's own directory: a flipped bit in a record's attributes (the MS-DOS directory flag)
    makes torch read other bytes for that tensor while every CRC still passes."""
    if len(data) < 22 or data[-22:-18] != _END_OF_CENTRAL_DIRECTORY or data[-2:] != b"\0\0":
        return data  # not a plain zip ending without a comment: left as torch wrote it
    body = data[:-2] + _SEAL_LEN.to_bytes(2, "little")
    return body + _SEAL + sha256_bytes(body).encode()


def check_torch_file(data: bytes) -> None:
    """Raise if a torch zip file (its bytes) is truncated, does not match the sha256 sealed in it, or
    any record fails its CRC-32 (a flipped bit in the tensor data would otherwise load silently as a
    different number). Files written before the seal existed get the CRC checks only."""
    # The end record sits 22 bytes before the comment, which is at most 64 KiB long.
    end = data.rfind(_END_OF_CENTRAL_DIRECTORY, max(0, len(data) - 22 - 0xFFFF))
    if end >= 0 and (int.from_bytes(data[end + 20:end + 22], "little") == _SEAL_LEN
                     or data[end + 22:end + 22 + len(_SEAL)] == _SEAL):  # a sealed file
        extra = len(data) - (end + 22 + _SEAL_LEN)
        if extra:
            raise ValueError(f"the file is truncated: its sealed sha256 is cut short by {-extra} bytes" if extra < 0
                             else f"the file has {extra} bytes appended after its sealed sha256")
        if sha256_bytes(memoryview(data)[:-_SEAL_LEN]).encode() != data[-64:]:
            raise ValueError("the file does not match the sha256 sealed in its zip comment")
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        bad = z.testzip()
    if bad is not None:
        raise zipfile.BadZipFile(f"record {bad} fails its CRC-32 check")


def safe_torch_load(path: Path, what: str, fix: str):
    """Load a torch file; a truncated or corrupted file raises an error naming it and the fix."""
    from offcoord.fileio import CorruptedFileError

    try:
        data = Path(path).read_bytes()
        check_torch_file(data)
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)
    except FileNotFoundError:
        raise
    except Exception as e:  # zip/CRC/pickle errors of a damaged file
        raise CorruptedFileError(path, f"({what}) is corrupted or truncated ({type(e).__name__}: {e})", fix) from None


def load_policy(path: str | Path, stochastic: bool = False, seed: int = 0):
    """Reload a saved policy; it plugs straight into ``offcoord.evaluate``."""
    run = Path(path).parent
    payload = safe_torch_load(Path(path), "policy file",
                              f"rerun the command that wrote it: `offcoord-agents train ... --out {run}` resumes from its "
                              f"checkpoint.pt and writes it again (a run of `offcoord-agents reproduce`: rm {run / 'results.json'} first)")
    if payload.get("format") != POLICY_FORMAT:
        raise ValueError(f"{path}: policy format {payload.get('format')} is not {POLICY_FORMAT}")
    spec = TaskSpec.from_dict(payload["spec"])
    cfg = payload["actor"]
    actor = getattr(nets, cfg["class"])(cfg["members"], cfg["in"], cfg["out"], cfg["hidden"])
    actor.load_state_dict(payload["state_dict"])
    if payload["centralized"]:
        return CentralizedPolicy(spec, actor, payload["kind"], payload["meta"])
    return TeamPolicy(spec, actor, payload["kind"], stochastic=stochastic, seed=seed, meta=payload["meta"],
                      memory=payload.get("memory", 0))
