"""An ensemble of probabilistic world models of the joint system, trained on an offline dataset.

Input: global state and joint action. Output per member: a Gaussian over the change of state and
the team reward (mean and log-std, the log-std softly bounded to [log_std_min, log_std_max]) and a
termination logit. All members are one stacked module (``nets.StackedMLP``): one ``bmm`` per
layer, never a loop over members. Trained with Gaussian NLL + BCE on independent minibatches per
member, early-stopped on a held-out split; the best ``elites`` members are kept for rollouts.

Reusable on its own::

    model = WorldModel.fit(dataset, WorldModelConfig(), seed=0)
    mean_next_state, reward, done_prob = model.predict(states, joint_actions)
    model.save("wm.pt"); WorldModel.load("wm.pt")
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import offcoord
import torch
from offcoord.fileio import file_lock, json_bytes, sha256_bytes
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from offcoord_agents.data import TaskSpec, joint_action_matrix
from offcoord_agents.nets import StackedMLP
from offcoord_agents.policy import atomic_torch_save, safe_torch_load


@dataclass
class WorldModelConfig:
    members: int = 7  # ensemble size
    elites: int = 5  # members kept (best held-out loss) for rollouts
    hidden: tuple[int, ...] = (200, 200, 200, 200)  # the public code's (1024,) * 4 is an option
    lr: float = 1e-3
    weight_decay: float = 1e-5
    batch_size: int = 256  # per member
    holdout_fraction: float = 0.1  # held-out split for early stopping and elite selection
    max_holdout: int = 10_000  # cap on held-out transitions evaluated
    eval_every: int = 500  # gradient steps between held-out evaluations
    patience: int = 5  # evaluations without improvement (>1%) of any member before stopping
    max_steps: int = 50_000  # hard cap on gradient steps
    log_std_min: float = -6.0
    log_std_max: float = 2.0
    termination_weight: float = 1.0  # weight of the BCE term


def denormals_flushed() -> bool:
    """Whether this thread's CPU math now treats denormal floats as zero."""
    return torch.tensor([1e-39]).mul(1.0).item() == 0.0


def flushing_denormals(fn):
    """Run ``fn`` with the CPU treating denormal floats (below 1.2e-38) as zero, then restore the
    caller's setting. A long fit drives some values there, and every operation on them takes a
    slow path: the ant's ensemble (``ant-full-replay-po``, 7 x 4x200) fell from about 20 to 4.9 fit
    steps per CPU-second by step 9,500 without flushing, and ran 36 per CPU-second at step 11,000
    with it. Results change only below that magnitude and stay deterministic. Scoped to the fit:
    the setting is per thread and would otherwise also change the caller's numpy and MuJoCo math."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        was_on = denormals_flushed()
        torch.set_flush_denormal(True)
        try:
            return fn(*args, **kwargs)
        finally:
            torch.set_flush_denormal(was_on)

    return wrapper


class WorldModel(nn.Module):
    """The ensemble plus the normalization and bounding-box statistics of its dataset."""

    def __init__(self, state_dim: int, joint_act_dim: int, config: WorldModelConfig):
        super().__init__()
        self.state_dim, self.joint_act_dim, self.config = state_dim, joint_act_dim, config
        out = 2 * (state_dim + 1) + 1  # mean and log-std of (delta state, reward), termination logit
        self.net = StackedMLP(config.members, state_dim + joint_act_dim, out, config.hidden)
        S1 = state_dim + 1
        # learned soft bounds of the log-std (as in MBPO/PETS), initialized at the configured limits
        self.max_log_std = nn.Parameter(torch.full((S1,), config.log_std_max))
        self.min_log_std = nn.Parameter(torch.full((S1,), config.log_std_min))
        for name, size in (("in_mean", state_dim + joint_act_dim), ("in_std", state_dim + joint_act_dim),
                           ("out_mean", S1), ("out_std", S1), ("state_low", state_dim), ("state_high", state_dim),
                           ("reward_low", 1), ("reward_high", 1)):
            self.register_buffer(name, torch.zeros(size) if "mean" in name or "low" in name else torch.ones(size))
        self.register_buffer("elite_idx", torch.arange(config.elites))
        self.report: dict = {}

    # ------------------------------------------------------------------ forward
    def _raw(self, states: torch.Tensor, joint_actions: torch.Tensor, member_loop: bool = False,
             members: torch.Tensor | None = None):
        """``states``/``joint`` of shape ``(M, B, .)`` (one batch per member) or ``(B, .)`` (shared by
        all members, or by ``members`` only) -> normalized means, log-stds, termination logits, each
        ``(M, B, .)``. ``member_loop`` runs the members one by one instead (same numbers; for
        benchmarks and tests)."""
        x = (torch.cat([states, joint_actions], -1) - self.in_mean) / self.in_std
        if member_loop:
            chosen = range(self.net.members) if members is None else members.tolist()
            out = torch.stack([self.net.member_forward(i, x if x.dim() == 2 else x[i]) for i in chosen])
        else:
            out = self.net(x) if x.dim() == 3 else self.net.forward_shared(x, members)
        S1 = self.state_dim + 1
        mean, log_std, logit = out[..., :S1], out[..., S1 : 2 * S1], out[..., -1]
        log_std = self.max_log_std - F.softplus(self.max_log_std - log_std)
        log_std = self.min_log_std + F.softplus(log_std - self.min_log_std)
        return mean, log_std, logit

    def predict(self, states: torch.Tensor, joint_actions: torch.Tensor, clip: bool = True, member_loop: bool = False,
                elites_only: bool = False):
        """Every member's (or, with ``elites_only``, every elite's) prediction for a batch ``(B, S)``/``(B, J)``.

        Returns ``(next_state_mean (M, B, S), reward_mean (M, B), std (M, B, S+1) in target units,
        done_prob (M, B))``; with ``clip`` the means are clipped to the dataset's bounding box.
        """
        members = self.elite_idx if elites_only else None  # rollouts use only the elites: skip the others
        mean, log_std, logit = self._raw(states, joint_actions, member_loop, members)  # one input for every member
        mean = mean * self.out_std + self.out_mean
        std = log_std.exp() * self.out_std
        next_state, reward = states + mean[..., :-1], mean[..., -1]
        if clip:
            next_state, reward = self.clip(next_state, reward)
        return next_state, reward, std, torch.sigmoid(logit)

    def clip(self, next_states: torch.Tensor, rewards: torch.Tensor):
        """Clip to the dataset's per-dimension bounding box (states and reward)."""
        next_states = torch.maximum(torch.minimum(next_states, self.state_high), self.state_low)
        return next_states, rewards.clamp(self.reward_low[0], self.reward_high[0])

    # ------------------------------------------------------------------ training
    @classmethod
    @flushing_denormals
    def fit(cls, ds: "offcoord.Dataset", config: WorldModelConfig | None = None, seed: int = 0,
            progress: bool | None = None, device: str | torch.device = "cpu") -> "WorldModel":
        """Train an ensemble on ``ds`` (deterministic given ``seed``) and select its elites. Runs
        with denormal floats flushed to zero (:func:`flushing_denormals`)."""
        config = config or WorldModelConfig()
        spec = TaskSpec.from_dataset(ds)
        gen = torch.Generator().manual_seed(seed)
        rng = np.random.default_rng(seed)
        states = torch.from_numpy(np.array(ds.states, dtype=np.float32))  # one copy out of the read-only memory map
        next_states = torch.from_numpy(np.array(ds.next_states, dtype=np.float32))
        joint = torch.from_numpy(joint_action_matrix(spec, ds.actions))
        rewards = torch.from_numpy(np.array(ds.rewards, dtype=np.float32))
        dones = torch.from_numpy(np.array(ds.terminations, dtype=np.float32))
        n = len(rewards)
        perm = torch.from_numpy(rng.permutation(n))
        n_hold = min(max(1, int(n * config.holdout_fraction)), config.max_holdout)
        hold, train = perm[:n_hold], perm[n_hold:]

        with torch.random.fork_rng(devices=[]):  # seeded initialization without touching the caller's RNG
            torch.manual_seed(seed)
            model = cls(spec.state_dim, spec.joint_act_dim, config).to(device)
        inputs = torch.cat([states, joint], -1)
        targets = torch.cat([next_states - states, rewards[:, None]], -1)
        with torch.no_grad():
            model.in_mean.copy_(inputs[train].mean(0))
            model.in_std.copy_(inputs[train].std(0).clamp_min(1e-6))
            model.out_mean.copy_(targets[train].mean(0))
            model.out_std.copy_(targets[train].std(0).clamp_min(1e-6))
            model.state_low.copy_(torch.minimum(states.min(0).values, next_states.min(0).values))
            model.state_high.copy_(torch.maximum(states.max(0).values, next_states.max(0).values))
            model.reward_low.fill_(float(rewards.min()))
            model.reward_high.fill_(float(rewards.max()))
        opt = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        M, B = config.members, config.batch_size
        best = torch.full((M,), float("inf"))
        best_state = {k: v.clone() for k, v in model.state_dict().items()}
        stale, step = 0, 0
        bar = tqdm(total=config.max_steps, desc="world model", disable=(not progress) if progress is not None else None,
                   mininterval=1.0, unit="step")
        while step < config.max_steps:
            idx = train[torch.randint(len(train), (M, B), generator=gen)]  # independent minibatches per member
            loss = model.loss(states[idx], joint[idx], targets[idx], dones[idx])
            opt.zero_grad(set_to_none=True)
            (loss + 0.01 * (model.max_log_std.sum() - model.min_log_std.sum())).backward()
            opt.step()
            step += 1
            bar.update(1)
            if step % config.eval_every == 0:
                held = model.holdout_losses(states[hold], joint[hold], targets[hold], dones[hold])
                improved = held < best * 0.99
                if improved.any():
                    best = torch.where(improved, held, best)
                    current = model.state_dict()
                    for k, v in current.items():  # keep each member's best weights
                        if v.dim() >= 1 and v.shape[0] == M and k.startswith("net."):
                            best_state[k][improved] = v[improved].clone()
                        elif not k.startswith("net."):
                            best_state[k] = v.clone()
                    stale = 0
                else:
                    stale += 1
                bar.set_postfix(holdout=float(best.min()))
                if stale >= config.patience:
                    break
        bar.close()
        model.load_state_dict(best_state)
        model.elite_idx.copy_(torch.argsort(best)[: config.elites].sort().values)
        model.report = model.error_report(states[hold], joint[hold], next_states[hold], rewards[hold], dones[hold])
        model.report.update({"steps": step, "holdout_loss_per_member": best.tolist(), "elites": model.elite_idx.tolist()})
        return model.eval()

    def loss(self, states, joint, targets, dones) -> torch.Tensor:
        """Gaussian NLL of the normalized (delta state, reward) + BCE of termination, summed over members."""
        mean, log_std, logit = self._raw(states, joint)
        z = (targets - self.out_mean) / self.out_std
        nll = (((z - mean) / log_std.exp()) ** 2 / 2 + log_std).mean((1, 2))
        bce = F.binary_cross_entropy_with_logits(logit, dones, reduction="none").mean(1)
        return (nll + self.config.termination_weight * bce).sum()

    @torch.no_grad()
    def holdout_losses(self, states, joint, targets, dones) -> torch.Tensor:
        """Per member: mean squared error of the normalized mean prediction + BCE (the elite criterion)."""
        M = self.net.members
        mean, _, logit = self._raw(states, joint)
        z = (targets - self.out_mean) / self.out_std
        mse = ((z - mean) ** 2).mean((1, 2))
        bce = F.binary_cross_entropy_with_logits(logit, dones.expand(M, -1), reduction="none").mean(1)
        return mse + self.config.termination_weight * bce

    @torch.no_grad()
    def error_report(self, states, joint, next_states, rewards, dones) -> dict:
        """Held-out error of the elites per output group (state in units of the data's std)."""
        ns, r, _, p = self.predict(states, joint)
        e = self.elite_idx
        state_std = (next_states - states).std(0).clamp_min(1e-6)
        return {
            "state_rmse_normalized": float((((ns[e] - next_states) / state_std) ** 2).mean().sqrt()),
            "reward_rmse": float(((r[e] - rewards) ** 2).mean().sqrt()),
            "reward_std_of_data": float(rewards.std()),
            "termination_accuracy": float(((p[e] > 0.5).float() == dones).float().mean()),
            "holdout_transitions": len(rewards),
        }

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        atomic_torch_save({"config": asdict(self.config), "state_dim": self.state_dim, "joint_act_dim": self.joint_act_dim,
                           "state_dict": self.state_dict(), "report": self.report}, Path(path))
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> "WorldModel":
        payload = safe_torch_load(Path(path), "world model", f"delete it and train again (rm {path})")
        cfg = payload["config"]
        cfg["hidden"] = tuple(cfg["hidden"])
        model = cls(payload["state_dim"], payload["joint_act_dim"], WorldModelConfig(**cfg))
        model.load_state_dict(payload["state_dict"])
        model.report = payload["report"]
        return model.eval()


def disagreement(next_state_means: torch.Tensor, reward_means: torch.Tensor,
                 scale: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The paper's uncertainty measures over the elites, per sample.

    ``eps_g``: Frobenius norm of the covariance across elites of ``[next-state mean, reward mean]``,
    each entry divided by ``scale`` (``S + 1`` values) when given; ``eps_r``: variance across elites
    of the reward mean (in reward units). Inputs ``(E, B, S)`` and ``(E, B)``.
    """
    x = torch.cat([next_state_means, reward_means.unsqueeze(-1)], -1)  # (E, B, S+1)
    if scale is not None:
        x = x / scale
    centered = x - x.mean(0, keepdim=True)
    cov = torch.einsum("ebi,ebj->bij", centered, centered) / max(1, x.shape[0] - 1)
    return torch.linalg.matrix_norm(cov), reward_means.var(0, unbiased=x.shape[0] > 1)


# Part of the shared cache's key: bump when a change to fitting or to the saved layout makes an
# earlier fit with the same configuration no longer what this code would produce.
WORLD_MODEL_FORMAT = 2  # 2: fits flush denormal floats
# The columns a fit reads; their content digests (in the dataset's manifest) identify the data.
_FIT_COLUMNS = ("states", "next_states", "actions", "rewards", "terminations")


def fit_or_load(ds: "offcoord.Dataset", config: WorldModelConfig, path: str | Path | None = None, seed: int = 0,
                progress: bool | None = None, shared: bool = True) -> WorldModel:
    """The world model of a training run: loaded from ``path`` when an earlier (interrupted) session of
    the run saved one there with the same configuration, otherwise fit on ``ds`` and saved to ``path``.

    A fit is a function of the data it reads, the configuration and the seed alone: the model sees
    global states and joint actions, never an agent's view. So with ``shared`` (the default) fitted
    models are also kept beside the dataset's store, in ``<its cache root>/world_models/``, keyed by
    the digests of those columns, the configuration, the seed and :data:`WORLD_MODEL_FORMAT`; a run
    on another view of the same stored copy (``reacher2-expert-fo``, ``-independent``,
    ``-leader-only``) loads the model instead of fitting it again, and a lock makes concurrent runs
    wait for one fit. A cached copy that is damaged or does not load is fit again.

    A file in ``path`` fit with another configuration, data or seed (a run restarted with
    ``--no-resume`` in the same directory) is replaced. Shared by every model-based algorithm
    (``momappo``, ``maiql-ft``).
    """
    path = Path(path) if path is not None else None
    fitted_on = {"data": ds.digest(_FIT_COLUMNS), "transitions": len(ds), "seed": seed}
    # Records written by earlier versions into a run directory (which pins its dataset) stay valid.
    earlier = ({"dataset": ds.id, "transitions": len(ds), "seed": seed},
               {"data": ds.card.sha256, "transitions": len(ds), "seed": seed}, None)
    # Fitting draws from torch's global generator and loading draws differently: fork it, so the
    # caller's random stream (its policy's samples) is the same whether the model was fit or loaded.
    with torch.random.fork_rng(devices=[]):
        model = _load_if_fitted_on(path, config, (fitted_on, *earlier))
        if model is not None:
            return model  # trained by an earlier, interrupted session of this run
        if shared and ds.path is not None:
            key = sha256_bytes(json_bytes({"fitted_on": fitted_on, "config": asdict(config), "format": WORLD_MODEL_FORMAT}))
            cached = Path(ds.path).parent / "world_models" / f"{key[:24]}.pt"
            with file_lock(cached.with_suffix(".lock")):
                model = _load_if_fitted_on(cached, config, (fitted_on,), unreadable_ok=True)
                if model is None:
                    model = _fit(ds, config, seed, progress, fitted_on)
                    model.save(cached)
        else:
            model = _fit(ds, config, seed, progress, fitted_on)
    if path is not None:
        model.save(path)
    return model


def _fit(ds, config: WorldModelConfig, seed: int, progress, fitted_on: dict) -> WorldModel:
    model = WorldModel.fit(ds, config, seed=seed, progress=progress)
    model.report["fitted_on"] = fitted_on
    return model


def _load_if_fitted_on(path: Path | None, config: WorldModelConfig, accepted: tuple,
                       unreadable_ok: bool = False) -> WorldModel | None:
    """The model saved at ``path`` if it was fit with ``config`` on one of the ``accepted`` records,
    else None. A damaged file raises, except with ``unreadable_ok`` (the shared cache, whose copy is
    simply fit again, also when an older layout no longer loads)."""
    if path is None or not path.exists():
        return None
    try:
        model = WorldModel.load(path)
    except Exception:
        if not unreadable_ok:
            raise
        return None
    same = asdict(model.config) == asdict(config) and model.report.get("fitted_on") in accepted
    return model if same else None


def world_model_config(cfg) -> WorldModelConfig:
    """The :class:`WorldModelConfig` named by an algorithm config's ``wm_*`` fields."""
    return WorldModelConfig(members=cfg.wm_members, elites=cfg.wm_elites, hidden=tuple(cfg.wm_hidden),
                            max_steps=cfg.wm_max_steps, eval_every=cfg.wm_eval_every, patience=cfg.wm_patience)
