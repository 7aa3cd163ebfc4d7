"""What every algorithm shares: the config base, the algorithm interface and the training loop.

An algorithm module (``offcoord_agents/algos/*.py``) writes only its networks, its ``update`` and its
``policy``; this loop does the rest — sampling, periodic decentralized evaluation through
``offcoord.evaluate``, logging (JSONL + CSV, TensorBoard when installed), a progress bar, and atomic
checkpoints from which a killed run resumes and ends with the same numbers as an uninterrupted one.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import offcoord
import torch
from offcoord.fileio import CorruptedFileError, atomic_write_bytes, atomic_write_json, json_bytes, read_json, sha256_bytes
from torch import nn
from tqdm.auto import tqdm

from offcoord_agents.data import BatchSampler, TaskSpec, TorchBatch
from offcoord_agents.policy import atomic_torch_save, safe_torch_load


@dataclass
class TrainConfig:
    """Hyperparameters shared by every algorithm (defaults: the paper's public code)."""

    steps: int = 1_000_000  # gradient steps
    batch_size: int = 256
    gamma: float = 0.99  # discount
    tau: float = 0.005  # target-network Polyak rate
    lr: float = 3e-4  # Adam learning rate for every network
    hidden: tuple[int, ...] = (256, 256)  # hidden layer widths of every network
    grad_clip: float = 1.0  # gradient-norm clip
    eval_every: int = 10_000  # steps between evaluations (the last step is always evaluated)
    eval_episodes: int = 10  # episodes per evaluation, reset with seeds eval_seed + i
    eval_seed: int = 10_000  # evaluation seeds differ from training seeds by construction
    checkpoint_every: int = 10_000  # steps between atomic checkpoints
    log_every: int = 1_000  # steps between training-loss log lines
    time_limit_seconds: float | None = None  # stop (with a final evaluation) once training has run this long; for equal-wall-clock comparisons
    cpu_time_limit_seconds: float | None = None  # the same in this process's CPU time (all its threads): equal-compute comparisons on a loaded machine
    dataset_size: int | None = None  # train on a smaller variant of the dataset (offcoord.load_dataset(id, size=...)); None = the card's size


# Wall-clock seconds after which a run also checkpoints, whatever ``checkpoint_every`` says: a
# session that ends (or a killed job) then loses at most this much work. A quick-tier ICQL run
# checkpoints every 10,000 steps, which is its whole 40-minute run. Checkpoints only read the
# run's state, so when they happen does not change its numbers.
CHECKPOINT_SECONDS = 600.0


def pick_threads() -> int:
    """One torch thread per run: these networks are small (2x256), a second thread costs more in
    synchronization than it gains (measured: 9 ms vs 206 ms per IBC update with the other core busy),
    and parallel runs (``reproduce``) fill the cores instead."""
    return 1


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class Algorithm:
    """Base class. Subclasses set ``name``, ``Config``, build networks in ``__init__`` and implement
    ``update(batch, step) -> metrics`` and ``policy()``. Modules and optimizers assigned as attributes
    are checkpointed automatically."""

    name: ClassVar[str]
    Config: ClassVar[type] = TrainConfig
    centralized: ClassVar[bool] = False  # True: executed centrally (IQL over the joint action)
    supports_discrete: ClassVar[bool] = True
    supports_continuous: ClassVar[bool] = True
    uses_batches: ClassVar[bool] = True  # False: update() gets no dataset batch (model-based methods sample their own)

    def __init__(self, spec: TaskSpec, config: TrainConfig, device: torch.device):
        self.spec, self.config, self.device = spec, config, device
        if spec.discrete and not self.supports_discrete:
            raise ValueError(f"{self.name} needs continuous actions; {spec.dataset_id} has discrete actions (use ibc, iql or maiql)")
        if not spec.discrete and not self.supports_continuous:
            raise ValueError(f"{self.name} needs discrete actions; {spec.dataset_id} has continuous actions")

    def setup(self, ds: "offcoord.Dataset", workdir: Path | None = None) -> None:
        """Optional: look at the dataset once before training (e.g. observation statistics, a world
        model). Called on every start, resumed or not, before the checkpoint is loaded; ``workdir``
        (the run's ``--out``, or None) is where expensive results can be kept across sessions."""

    def update(self, batch: TorchBatch, step: int) -> dict[str, float]:
        raise NotImplementedError

    def policy(self):
        raise NotImplementedError

    def _stateful(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if isinstance(v, (nn.Module, torch.optim.Optimizer))}

    def state_dict(self) -> dict[str, Any]:
        return {k: v.state_dict() for k, v in self._stateful().items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for k, v in self._stateful().items():
            v.load_state_dict(state[k])


def soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    with torch.no_grad():
        for t, s in zip(target.parameters(), source.parameters()):
            t.lerp_(s, tau)


def optimize(optimizer: torch.optim.Optimizer, loss: torch.Tensor, params, clip: float) -> float:
    """One Adam step with gradient-norm clipping; returns the pre-clip gradient norm."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(params, clip)
    optimizer.step()
    return float(norm)


def _versions() -> dict[str, str]:
    import mujoco  # an offcoord dependency; with numpy's BLAS kernels it decides a rebuilt store's bytes
    import offcoord_agents

    return {"offcoord": offcoord.__version__, "offcoord_agents": offcoord_agents.__version__, "torch": torch.__version__,
            "numpy": np.__version__, "mujoco": mujoco.__version__, "python": platform.python_version()}


LOGS = ("metrics.jsonl", "eval.csv")
CHECKSUMS = "checksums.json"  # size and sha256 of results.json, policy.pt and the logs, written just before results.json


def _digests(directory: Path, names) -> dict[str, list]:
    out = {}
    for name in names:
        path = directory / name
        if path.exists():
            data = path.read_bytes()
            out[name] = [len(data), sha256_bytes(data)]
    return out


class _Logger:
    """JSONL of every record, a CSV of evaluations, TensorBoard scalars when tensorboard is installed."""

    def __init__(self, out: Path, resume_step: int | None, digests: dict | None = None):
        self.out = out
        self.jsonl = out / "metrics.jsonl"
        self.eval_csv = out / "eval.csv"
        if resume_step is None:
            for f in (self.jsonl, self.eval_csv):
                f.unlink(missing_ok=True)
        elif digests is not None:  # cut each log back to its checkpointed bytes, which must be intact
            self._restore(resume_step, digests)
        else:  # a checkpoint without digests (older versions): drop what was logged after it
            self._truncate(resume_step)
        self.tb = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(out / "tensorboard"))
        except Exception:  # tensorboard is optional
            self.tb = None

    def digests(self) -> dict[str, list]:
        """Sync the logs to disk and return their sizes and sha256 (stored in each checkpoint)."""
        for f in (self.jsonl, self.eval_csv):
            if f.exists():
                with open(f, "rb+") as fh:
                    os.fsync(fh.fileno())
        return _digests(self.out, LOGS)

    def _restore(self, step: int, digests: dict) -> None:
        fix = (f"its records up to step {step} cannot be recovered: restart the run from scratch "
               f"(rm -r {self.out}, or pass --no-resume / resume=False)")
        for path in (self.jsonl, self.eval_csv):
            recorded = digests.get(path.name)
            if recorded is None:  # nothing was logged there at checkpoint time
                path.unlink(missing_ok=True)
                continue
            size, sha = recorded
            if not path.exists():
                raise CorruptedFileError(path, f"is missing (checkpoint step {step} recorded {size} bytes)", fix)
            with open(path, "rb") as f:
                head = f.read(size)
            if len(head) < size:
                raise CorruptedFileError(path, f"is truncated ({len(head)} bytes, {size} at checkpoint step {step})", fix)
            if sha256_bytes(head) != sha:
                raise CorruptedFileError(path, f"does not match its checksum at checkpoint step {step} (corrupted)", fix)
            os.truncate(path, size)  # drop what a killed run logged after its checkpoint; it is redone identically

    def _truncate(self, step: int) -> None:
        if self.jsonl.exists():
            keep = [line for line in self.jsonl.read_text().splitlines() if line and json.loads(line)["step"] <= step]
            self.jsonl.write_text("".join(k + "\n" for k in keep))
        if self.eval_csv.exists():
            rows = list(csv.reader(self.eval_csv.read_text().splitlines()))
            keep = rows[:1] + [r for r in rows[1:] if int(r[0]) <= step]
            with open(self.eval_csv, "w", newline="") as f:
                csv.writer(f).writerows(keep)

    def log(self, kind: str, step: int, values: dict[str, float]) -> None:
        with open(self.jsonl, "a") as f:
            f.write(json.dumps({"kind": kind, "step": step, **values}) + "\n")
        if kind == "eval":
            new = not self.eval_csv.exists()
            with open(self.eval_csv, "a", newline="") as f:
                w = csv.writer(f)
                if new:
                    w.writerow(["step", *values])
                w.writerow([step, *values.values()])
        if self.tb is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)):
                    self.tb.add_scalar(f"{kind}/{k}", v, step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def evaluate_policy(policy, env_id: str, config: TrainConfig) -> dict[str, float]:
    result = offcoord.evaluate(policy, env_id, episodes=config.eval_episodes, seed=config.eval_seed)
    out = {"mean_return": result.mean_return, "std_return": result.std_return}
    if result.normalized_scores is not None:
        out["normalized_score"] = float(result.normalized_mean)
        out["normalized_std"] = float(np.std(result.normalized_scores))
    if result.strategy_agreement_rate is not None:
        out["strategy_agreement"] = result.strategy_agreement_rate
    return out


_SWITCH_WORDS = {"true": True, "yes": True, "on": True, "1": True, "false": False, "no": False, "off": False, "0": False}


def _switch(algo: str, name: str, value: Any) -> bool:
    """A boolean option's value from a bool, 0/1, or a word such as "false" (any case)."""
    word = str(value).strip().lower() if isinstance(value, (str, int)) else None
    if word not in _SWITCH_WORDS:
        raise ValueError(f"{algo} option {name} must be true or false, got {value!r}")
    return _SWITCH_WORDS[word]


def make_config(algo_cls, overrides: dict[str, Any] | None) -> TrainConfig:
    fields = {f.name: f for f in dataclasses.fields(algo_cls.Config)}
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(fields))
    if unknown:
        raise ValueError(f"unknown {algo_cls.name} option(s) {unknown}; options are {sorted(fields)}")
    for name, value in overrides.items():  # switches: "--set x=false" arrives as the string "false"
        if isinstance(fields[name].default, bool) and not isinstance(value, bool):
            overrides[name] = _switch(algo_cls.name, name, value)
    for name in ("hidden", "wm_hidden"):  # layer widths; lists (from JSON or --set) become tuples
        if name not in overrides:
            continue
        widths = overrides[name]
        if isinstance(widths, (str, bytes)) or not hasattr(widths, "__iter__") or not all(
            isinstance(h, int) and not isinstance(h, bool) and h > 0 for h in widths
        ):
            raise ValueError(f"{name} must be a sequence of positive integers such as (256, 256), got {widths!r}")
        overrides[name] = tuple(widths)
    config = algo_cls.Config(**overrides)
    for name in ("steps", "batch_size", "eval_every", "eval_episodes", "checkpoint_every", "log_every"):
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{algo_cls.name} option {name} must be a positive integer, got {value!r}")
    for name, value in asdict(config).items():
        if isinstance(value, float) and not np.isfinite(value):
            raise ValueError(f"{algo_cls.name} option {name} must be finite, got {value!r}")
    return config


def config_differences(saved: dict, config: dict, defaults: dict) -> list[str]:
    """The fields where a recorded config (a checkpoint's, a finished run's) differs from ``config``.
    A field the record lacks (added to the algorithm since) counts as its default: a new option's
    default keeps the earlier behavior, so adding one does not orphan running or finished runs."""
    gone = sorted(set(saved) - set(config))  # fields this version no longer has
    return gone + [k for k, v in config.items() if saved.get(k, defaults.get(k)) != v]


# A run's identity: a record that differs here is another run altogether, whatever its config or data.
RUN_IDENTITY = ("algorithm", "dataset", "env", "seed", "centralized")
OTHER_DATA = ("other data: {dataset}'s stored copy has changed since (regenerated from retrained behaviors, "
              "or rebuilt with another MuJoCo version: docs/datasets.md, 'Across machines')")


def reference_scores_of(id: str) -> list[float] | None:
    """The ``[min, max]`` returns a run's normalized scores divide by (:func:`offcoord.evaluate` on the
    environment ``id``, or a dataset ``id``'s card), or ``None`` where there is no normalized score."""
    try:
        return [float(x) for x in offcoord.reference_scores(id)]
    except ValueError:
        return None


def run_difference(recorded: dict, wanted: dict, defaults: dict) -> str | None:
    """How a recorded run (a checkpoint's metadata, or a finished run's ``results.json``) differs from
    the run ``wanted`` describes, as the end of a sentence "... a run on <difference>"; ``None`` when
    it is the same run. The one definition of "the same run", for resuming and for skipping.

    Compared in this order, and named by the first that differs (so another seed is not blamed on
    the data): the identity fields of :data:`RUN_IDENTITY` that ``wanted`` gives; the config
    (:func:`config_differences`, ``defaults`` standing in for fields the record lacks); the reference
    scores its evaluations were normalized by, when both sides have them (a card can change them and
    leave its data alone); then the data: its digest when both sides have one, otherwise the card's
    sha256 (a record from before runs kept a digest). Leave ``data_sha256``/``card_sha256`` out of
    ``wanted`` when the store is not at hand."""
    def plain(value):  # a checkpoint holds tuples where a results.json holds lists
        return json.loads(json.dumps(value))

    identity = [k for k in RUN_IDENTITY if k in wanted and recorded.get(k) != wanted[k]]
    if identity:
        return "another " + " and ".join(f"{k} ({recorded.get(k)!r}, not {wanted[k]!r})" for k in identity)
    changed = config_differences(plain(recorded["config"]), plain(wanted["config"]), plain(defaults))
    if changed:
        return f"another configuration ({', '.join(changed)} {'differ' if len(changed) > 1 else 'differs'})"
    scores = recorded.get("reference_scores"), wanted.get("reference_scores")
    if None not in scores and plain(scores[0]) != plain(scores[1]):
        return (f"other reference scores ({plain(scores[0])}, not {plain(scores[1])}): {recorded['dataset']}'s card "
                f"changed how returns are normalized since")
    if "data_sha256" in recorded and wanted.get("data_sha256") is not None:
        if recorded["data_sha256"] != wanted["data_sha256"]:
            return OTHER_DATA.format(dataset=recorded["dataset"])
    elif wanted.get("card_sha256") is not None and recorded.get("card_sha256", wanted["card_sha256"]) != wanted["card_sha256"]:
        return f"another version of {recorded['dataset']}'s card"
    return None


def run_training(
    algo_cls,
    dataset: "str | offcoord.Dataset",
    *,
    seed: int = 0,
    config: dict[str, Any] | None = None,
    out: str | Path | None = None,
    resume: bool = True,
    progress: bool | None = None,
    device: str | None = None,
    threads: int | None = None,
):
    """Train ``algo_cls`` on a dataset (an id, or an ``offcoord.Dataset``); return its policy.

    See :func:`offcoord_agents.train`.
    """
    torch.set_num_threads(threads or pick_threads())
    dev = torch.device(device) if device else pick_device()
    cfg = make_config(algo_cls, config)
    torch.manual_seed(seed)
    ds = offcoord.load_dataset(dataset, size=cfg.dataset_size) if isinstance(dataset, str) else dataset
    dataset_id = ds.id
    spec = TaskSpec.from_dataset(ds)
    algo = algo_cls(spec, cfg, dev)
    out_dir = Path(out) if out else None
    if out_dir:
        out_dir.mkdir(parents=True, exist_ok=True)
    env_id = ds.env_id
    run_meta = {"algorithm": algo_cls.name, "dataset": dataset_id, "env": env_id, "seed": seed,
                "config": asdict(cfg), "card_sha256": ds.card.sha256, "data_sha256": ds.digest(),
                "centralized": algo_cls.centralized, "reference_scores": reference_scores_of(env_id)}

    ckpt_path = out_dir / "checkpoint.pt" if out_dir else None
    ckpt = None
    if out_dir:
        if not resume:
            ckpt_path.unlink(missing_ok=True)  # a later resume must not pick up the run this one replaces
        if resume and ckpt_path.exists():
            ckpt = load_checkpoint(ckpt_path)
            difference = run_difference(ckpt["meta"], run_meta, asdict(algo_cls.Config()))
            if difference:
                raise ValueError(f"{out_dir} holds a run on {difference}; pass --no-resume to start over here, "
                                 f"or choose another --out")
    algo.setup(ds, out_dir)  # after the checks above: a model-based algorithm's setup fits its world model
    sampler = BatchSampler(ds, spec, cfg.batch_size, seed, dev)
    start, evals = 0, []
    out_of_time: str | None = None  # which budget stopped the run (a resumed run may have been stopped already)
    if out_dir:
        if ckpt is not None:
            algo.load_state_dict(ckpt["algo"])
            sampler.load_state_dict(ckpt["sampler"])
            torch.set_rng_state(ckpt["torch_rng"])
            if ckpt.get("cuda_rng") is not None and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(ckpt["cuda_rng"])
            start, evals = ckpt["step"], ckpt["evals"]
            out_of_time = ckpt.get("stopped_by")  # a run its time budget ended is finished: rerunning it trains no more
        logger = _Logger(out_dir, start if start else None, ckpt.get("logs") if start else None)
    else:
        logger = None

    last_checkpoint = time.perf_counter()

    def checkpoint(step: int) -> None:
        nonlocal last_checkpoint
        last_checkpoint = time.perf_counter()
        if ckpt_path is not None:
            atomic_torch_save({"step": step, "meta": run_meta, "algo": algo.state_dict(), "sampler": sampler.state_dict(),
                               "torch_rng": torch.get_rng_state(), "evals": evals, "stopped_by": out_of_time,
                               "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                               "logs": logger.digests()}, ckpt_path)

    disable_bar = (bool(os.environ.get("CI")) or None) if progress is None else not progress
    bar = tqdm(total=cfg.steps, initial=start, desc=f"{algo_cls.name} {dataset_id} seed {seed}", disable=disable_bar,
               mininterval=1.0, unit="step")
    t0, cpu0 = time.perf_counter(), time.process_time()
    try:
        for step in range(start + 1, (start if out_of_time else cfg.steps) + 1):
            metrics = algo.update(sampler.sample() if algo.uses_batches else None, step)
            bar.update(1)
            if cfg.time_limit_seconds is not None and time.perf_counter() - t0 >= cfg.time_limit_seconds:
                out_of_time = "wall_clock"
            elif cfg.cpu_time_limit_seconds is not None and time.process_time() - cpu0 >= cfg.cpu_time_limit_seconds:
                out_of_time = "cpu_time"
            if logger and step % cfg.log_every == 0:
                logger.log("train", step, metrics)
            if step % cfg.eval_every == 0 or step == cfg.steps or out_of_time:
                result = evaluate_policy(algo.policy(), env_id, cfg)
                evals.append({"step": step, **result})
                bar.set_postfix({k: round(v, 3) for k, v in result.items() if k in ("mean_return", "normalized_score")})
                if logger:
                    logger.log("eval", step, result)
            if (step % cfg.checkpoint_every == 0 or step == cfg.steps or out_of_time
                    or time.perf_counter() - last_checkpoint >= CHECKPOINT_SECONDS):
                checkpoint(step)
            if out_of_time:
                break
    finally:
        bar.close()
        if logger:
            logger.close()
    policy = algo.policy()
    policy.meta.update(run_meta)
    if out_dir:
        policy.save(out_dir / "policy.pt")
        final = evals[-1] if evals else {}
        results = {**run_meta, "versions": _versions(), "evals": evals, "final": final,
                   "train_seconds_this_session": time.perf_counter() - t0,
                   "train_cpu_seconds_this_session": time.process_time() - cpu0,
                   "stopped_by_time_limit": out_of_time is not None, "time_limit_reached": out_of_time}
        write_results(out_dir, results)
    policy.meta["evals"] = evals
    return policy


def load_checkpoint(path: Path) -> dict:
    """A run's ``checkpoint.pt``; damage raises an error naming it and the fix (restart the run)."""
    return safe_torch_load(path, "checkpoint", f"delete it to restart the run from scratch (rm {path}), "
                                               "then rerun the same command")


def write_results(out_dir: Path, results: dict) -> None:
    """``checksums.json`` (sizes and sha256 of the logs, policy.pt and the coming results.json),
    then ``results.json``: a finished run's files can be checked with :func:`read_results`."""
    data = json_bytes(results)
    files = _digests(out_dir, (*LOGS, "policy.pt"))
    files["results.json"] = [len(data), sha256_bytes(data)]
    atomic_write_json(out_dir / CHECKSUMS, {"files": files}, checksum=True)
    atomic_write_bytes(out_dir / "results.json", data)


def read_results(directory: str | Path) -> dict:
    """A finished run's ``results.json``, after checking it, its logs and its policy against
    ``checksums.json``; damage raises :class:`offcoord.fileio.CorruptedFileError` naming the file and the repair."""
    directory = Path(directory)
    results_path = directory / "results.json"
    rerun = (f"delete it and rerun the command that wrote the run: rm {results_path}, then the same "
             f"`offcoord-agents train ... --out {directory}` or `offcoord-agents reproduce ...` (it resumes from checkpoint.pt)")
    restart = (f"restart the run: rm -r {directory}, then rerun the same `offcoord-agents train ... --out {directory}` "
               f"or `offcoord-agents reproduce ...`")
    if not (directory / CHECKSUMS).exists():  # a run written before checksums.json existed
        return read_json(results_path, rerun)
    recorded = read_json(directory / CHECKSUMS, f"rm {directory / CHECKSUMS} {results_path}, then {rerun.split(', then ', 1)[1]}",
                         checksum=True)["files"]
    for name, (size, sha) in recorded.items():
        path = directory / name
        fix = restart if name in LOGS else rerun
        if not path.exists():
            raise CorruptedFileError(path, "is missing", fix)
        data = path.read_bytes()
        if len(data) != size:
            raise CorruptedFileError(path, f"is truncated or overwritten ({len(data)} bytes, {size} recorded in {CHECKSUMS})", fix)
        if sha256_bytes(data) != sha:
            raise CorruptedFileError(path, f"does not match its checksum in {CHECKSUMS} (corrupted)", fix)
    return read_json(results_path, rerun)
