"""Reproduce the paper's tables: algorithms x datasets x seeds, run resumably, printed beside the
paper's published numbers.

    offcoord-agents reproduce coordination --tier quick --out runs/reproduce
    offcoord-agents reproduce reacher --backend ray [--address HOST:PORT]

Each run writes ``<out>/<table>/<algorithm>/<dataset>/seed<k>/`` (``results.json``, metrics,
checkpoints); a finished run is skipped, an interrupted one resumes from its checkpoint. The
table (mean ± std over seeds of each run's last evaluation) is printed and written as Markdown
with the paper's number beside each cell, plus learning curves and a summary figure (each cell's
score beside the paper's) when matplotlib is installed.

Backends give the same results (every run is seeded and trains with one torch thread): ``local``
is a process pool with one worker per core; ``ray`` submits one Ray task per run, either to an
existing cluster (``address``) or to a local Ray started with one CPU per core.
"""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

# The paper's published normalized scores (Barde et al., AAMAS 2024), mean and std over seeds.
PAPER = {
    "coordination": {
        "coordination-favorable": {"iql": (1.0, 0.0), "maiql": (1.0, 0.0), "ibc": (1.0, 0.0), "momappo": (1.0, 0.0)},
        "coordination-neutral": {"iql": (1.0, 0.0), "maiql": (0.9, 0.1), "ibc": (0.55, 0.11), "momappo": (1.0, 0.0)},
        "coordination-unfavorable": {"iql": (1.0, 0.0), "maiql": (0.0, 0.0), "ibc": (0.0, 0.0), "momappo": (1.0, 0.0)},
    },
    "reacher": {
        "reacher2-expert-fo": {"iql": (1.07, 0.01), "maiql": (0.96, 0.05), "matd3bc": (1.04, 0.01), "ibc": (1.02, 0.01),
                               "itd3bc": (0.78, 0.00), "icql": (0.48, 0.06), "omar": (0.73, 0.01), "momappo": (1.07, 0.01)},
        "reacher2-expert-independent": {"maiql": (0.92, 0.04), "matd3bc": (0.59, 0.03), "ibc": (0.76, 0.04),
                                        "itd3bc": (0.30, 0.11), "icql": (0.46, 0.04), "omar": (0.45, 0.02), "momappo": (0.95, 0.06)},
        "reacher2-expert-leader-only": {"maiql": (0.80, 0.05), "matd3bc": (0.73, 0.02), "ibc": (0.84, 0.02),
                                        "itd3bc": (0.48, 0.04), "icql": (0.31, 0.05), "omar": (0.39, 0.02), "momappo": (1.00, 0.01)},
    },
    # The paper has no MA-TD3+BC column for the ant (we run it; its cells show "[–]"), and no IQL on PO.
    "ant": {
        "ant-random-fo": {"iql": (0.12, 0.00), "maiql": (0.28, 0.01), "maiql-ft": (0.28, 0.03), "ibc": (0.31, 0.00),
                          "itd3bc": (0.22, 0.02), "icql": (0.08, 0.00), "omar": (0.08, 0.00), "momappo": (0.52, 0.07)},
        "ant-medium-fo": {"iql": (0.97, 0.02), "maiql": (0.85, 0.02), "maiql-ft": (0.81, 0.02), "ibc": (0.84, 0.01),
                          "itd3bc": (1.04, 0.00), "icql": (0.88, 0.12), "omar": (1.10, 0.03), "momappo": (1.29, 0.06)},
        "ant-full-replay-fo": {"iql": (1.22, 0.02), "maiql": (0.77, 0.21), "maiql-ft": (0.95, 0.13), "ibc": (1.20, 0.01),
                               "itd3bc": (1.33, 0.01), "icql": (1.21, 0.02), "omar": (1.30, 0.00), "momappo": (1.42, 0.07)},
        "ant-expert-fo": {"iql": (1.26, 0.01), "maiql": (1.24, 0.00), "maiql-ft": (1.06, 0.07), "ibc": (1.24, 0.00),
                          "itd3bc": (1.25, 0.02), "icql": (0.73, 0.15), "omar": (1.16, 0.01), "momappo": (1.49, 0.01)},
        "ant-random-po": {"maiql": (0.31, 0.00), "maiql-ft": (0.34, 0.04), "ibc": (0.31, 0.00),
                          "itd3bc": (0.31, 0.00), "icql": (0.17, 0.02), "omar": (0.21, 0.02), "momappo": (0.42, 0.05)},
        "ant-medium-po": {"maiql": (0.14, 0.02), "maiql-ft": (0.11, 0.01), "ibc": (0.17, 0.01),
                          "itd3bc": (0.22, 0.05), "icql": (0.09, 0.02), "omar": (0.06, 0.01), "momappo": (0.54, 0.19)},
        "ant-full-replay-po": {"maiql": (0.18, 0.02), "maiql-ft": (-0.07, 0.10), "ibc": (0.21, 0.02),
                               "itd3bc": (0.20, 0.01), "icql": (0.09, 0.01), "omar": (0.11, 0.02), "momappo": (0.46, 0.10)},
        "ant-expert-po": {"maiql": (-0.16, 0.01), "maiql-ft": (-0.23, 0.02), "ibc": (0.05, 0.04),
                          "itd3bc": (0.16, 0.00), "icql": (0.11, 0.03), "omar": (0.10, 0.01), "momappo": (0.18, 0.00)},
    },
}

TABLES = {
    "coordination": {
        "algorithms": ["iql", "maiql", "ibc", "momappo"],
        "datasets": ["coordination-favorable", "coordination-neutral", "coordination-unfavorable"],
    },
    "reacher": {
        "algorithms": ["iql", "maiql", "matd3bc", "ibc", "itd3bc", "icql", "omar", "momappo"],
        "datasets": ["reacher2-expert-fo", "reacher2-expert-independent", "reacher2-expert-leader-only"],
    },
    "ant": {
        "algorithms": ["iql", "maiql", "maiql-ft", "matd3bc", "ibc", "itd3bc", "icql", "omar", "momappo"],
        "datasets": [f"ant-{quality}-{obs}" for obs in ("fo", "po") for quality in ("random", "medium", "full-replay", "expert")],
    },
}

# Budgets per tier: seeds, then per-algorithm config overrides ("*" applies to every algorithm).
_SMALL_MOMA = {"hidden": (64, 64), "wm_hidden": (64, 64), "rollouts": 512}
TIERS: dict[str, dict[str, dict[str, Any]]] = {
    "coordination": {
        "smoke": {"seeds": 2, "*": {"steps": 100, "eval_every": 100, "eval_episodes": 2, "hidden": (32, 32)},
                  "momappo": {**_SMALL_MOMA, "steps": 5, "eval_every": 5, "horizon": 1, "rollouts": 256,
                              "wm_max_steps": 200, "wm_eval_every": 100}},
        "quick": {"seeds": 5, "*": {"steps": 2000, "eval_every": 500, "eval_episodes": 5, "hidden": (64, 64)},
                  "momappo": {**_SMALL_MOMA, "steps": 30, "eval_every": 10, "horizon": 1, "wm_max_steps": 1500, "wm_eval_every": 250}},
        "paper": {"seeds": 5, "*": {"steps": 100_000, "eval_every": 10_000},
                  "momappo": {"steps": 200, "eval_every": 20, "horizon": 1}},
    },
    "reacher": {
        "smoke": {"seeds": 1, "*": {"dataset_size": 5_000, "steps": 300, "eval_every": 300, "eval_episodes": 2, "hidden": (32, 32)},
                  "momappo": {**_SMALL_MOMA, "steps": 5, "eval_every": 5, "wm_max_steps": 300, "wm_eval_every": 100}},
        # quick: the baselines are at their plateau by 10k steps (leader-only, 2,300 s runs: IBC
        # 0.93-0.97 and ITD3+BC 0.97-1.00 from 15k to 180k steps). MOMA-PPO still improves after
        # 1,000 PPO iterations, so it gets 2,000, with rollouts that go on past the horizon
        # (docs/results.md): about 1,300 CPU-seconds a run, less than one ICQL or OMAR run.
        "quick": {"seeds": 3, "*": {"steps": 10_000, "eval_every": 2_500},
                  "momappo": {"steps": 2_000, "eval_every": 100, "rollouts": 512, "wm_max_steps": 10_000,
                              "rollout_continuation": 0.9}},
        "paper": {"seeds": 5, "*": {"steps": 1_000_000, "eval_every": 10_000},
                  "momappo": {"steps": 3_000, "eval_every": 100}},
    },
    # 68 runs per seed (9 algorithms x 8 datasets, IQL on FO only). Ant episodes are 1,000 steps, so
    # evaluation is a large share of a small run. smoke: 20k-transition variants of the datasets
    # (built in seconds; offcoord.load_dataset(id, size=...)), a few hundred steps, one 1-episode
    # evaluation. quick: 200k-transition variants, 2 seeds. paper: the full datasets and the
    # reacher's step counts (1M gradient steps for the baselines, 3,000 MOMA-PPO iterations).
    "ant": {
        "smoke": {"seeds": 1, "*": {"dataset_size": 20_000, "steps": 100, "eval_every": 100, "eval_episodes": 1, "hidden": (32, 32)},
                  "momappo": {**_SMALL_MOMA, "steps": 3, "eval_every": 3, "horizon": 2, "rollouts": 256,
                              "wm_max_steps": 200, "wm_eval_every": 100},
                  "maiql-ft": {"wm_hidden": (64, 64), "wm_max_steps": 200, "wm_eval_every": 100, "horizon": 2,
                               "rollout_batch_size": 256, "rollout_every": 25}},
        "quick": {"seeds": 2, "*": {"dataset_size": 200_000, "steps": 10_000, "eval_every": 2_500, "eval_episodes": 3},
                  "momappo": {"steps": 100, "eval_every": 25, "rollouts": 1024, "wm_max_steps": 5_000},
                  "maiql-ft": {"wm_max_steps": 5_000, "rollout_every": 1_000}},
        "paper": {"seeds": 5, "*": {"steps": 1_000_000, "eval_every": 10_000},
                  "momappo": {"steps": 3_000, "eval_every": 100}},
    },
}


@dataclass(frozen=True)
class Run:
    table: str
    algorithm: str
    dataset: str
    seed: int
    config: dict

    def directory(self, out: Path) -> Path:
        return Path(out) / self.table / self.algorithm / self.dataset / f"seed{self.seed}"


def plan(table: str, tier: str, datasets: list[str] | None = None, algorithms: list[str] | None = None) -> list[Run]:
    """Every run of ``table`` at ``tier``; IQL (centralized) only where an agent sees the full state.
    ``datasets`` / ``algorithms`` keep only those rows / columns of the table (default: all)."""
    if table not in TABLES:
        raise ValueError(f"unknown table {table!r}; choose one of {sorted(TABLES)}")
    if tier not in TIERS[table]:
        raise ValueError(f"unknown tier {tier!r}; choose one of {sorted(TIERS[table])}")
    for kind, chosen in (("datasets", datasets), ("algorithms", algorithms)):
        unknown = sorted(set(chosen or ()) - set(TABLES[table][kind]))
        if unknown:
            raise ValueError(f"{table} table has no {kind} {unknown}; choose from {TABLES[table][kind]}")
    budget = TIERS[table][tier]
    runs = []
    for dataset in TABLES[table]["datasets"]:
        if datasets and dataset not in datasets:
            continue
        for algorithm in TABLES[table]["algorithms"]:
            if algorithms and algorithm not in algorithms:
                continue
            if algorithm == "iql" and not (dataset.endswith("-fo") or dataset.startswith("coordination")):
                continue
            config = {**budget.get("*", {}), **budget.get(algorithm, {})}
            runs += [Run(table, algorithm, dataset, seed, config) for seed in range(budget["seeds"])]
    return runs


def execute(run: Run, out: Path) -> dict:
    """Train one run (resuming it if interrupted) and return its results (read when finished)."""
    import torch

    import offcoord_agents

    from offcoord_agents.core import read_results

    directory = run.directory(out)
    results = directory / "results.json"
    if results.exists():
        return read_results(directory)  # checked: a damaged file is an error naming it and the repair
    torch.set_num_threads(1)
    offcoord_agents.train(run.algorithm, run.dataset, seed=run.seed, config=run.config, out=directory, progress=False)
    return read_results(directory)


class _Staleness:
    """Whether a run's record (its ``results.json``, or its checkpoint's metadata) is the run the table
    asks for now: the tier's configuration on the algorithm's current defaults, and the data its
    dataset's store holds now (:func:`offcoord_agents.core.run_difference`). A store that is not in this
    machine's cache is not compared: the run's workers build or find it. Stores are opened once."""

    def __init__(self):
        self.stores: dict[tuple, dict] = {}  # (dataset, size) -> its data digest and card sha256, or {}

    def __call__(self, run: Run, record: dict) -> str | None:
        """What differs, as the end of a sentence about the run; ``None`` when nothing does."""
        from offcoord_agents.core import make_config, reference_scores_of, run_difference
        from offcoord_agents.registry import algorithm_class

        algo_cls = algorithm_class(run.algorithm)
        config = make_config(algo_cls, run.config)
        wanted = {"algorithm": run.algorithm, "dataset": run.dataset, "seed": run.seed, "config": asdict(config),
                  "reference_scores": reference_scores_of(run.dataset)}
        defaults = asdict(algo_cls.Config())
        difference = run_difference(record, wanted, defaults)  # first without the store: it is opened only if needed
        if difference is None:
            difference = run_difference(record, {**wanted, **self._store(run.dataset, config.dataset_size)}, defaults)
        if difference and difference.startswith("another configuration"):
            return f"{difference}, as the tier's budget or {run.algorithm}'s defaults changed since"
        return difference

    def _store(self, dataset: str, size: int | None) -> dict:
        """The data digest and card sha256 of the cached store, or ``{}`` when it is not cached."""
        import offcoord

        if (dataset, size) not in self.stores:
            try:
                ds = offcoord.load_dataset(dataset, size=size, auto_build=False)
                self.stores[dataset, size] = {"data_sha256": ds.digest(), "card_sha256": ds.card.sha256}
            except FileNotFoundError:
                self.stores[dataset, size] = {}
        return self.stores[dataset, size]


def check_finished_runs(runs: list[Run], out: Path) -> dict[int, dict]:
    """Before anything starts: a finished run is skipped only if it is the run the table asks for
    now (:class:`_Staleness`), and an unfinished one resumes only from a checkpoint of that run;
    otherwise a clear error names the run directory to delete.

    Returns the finished runs' results by their index in ``runs``, read once."""
    stale = _Staleness()
    finished: dict[int, dict] = {}
    fix = "rerun the same command to train it as the table asks now"
    for i, run in enumerate(runs):
        directory = run.directory(out)
        if (directory / "results.json").exists():
            done = finished[i] = _read_results(directory)
            reason = stale(run, done)
            if reason:
                raise ValueError(f"{directory} finished on {reason}; rm -r {directory} and {fix}")
        elif (directory / "checkpoint.pt").exists():
            reason = stale(run, _checkpoint_meta(directory / "checkpoint.pt"))
            if reason:
                raise ValueError(f"{directory} holds a checkpoint of a run on {reason}; rm -r {directory} and {fix}")
    return finished


def _checkpoint_meta(path: Path) -> dict:
    from offcoord_agents.core import load_checkpoint

    return load_checkpoint(path)["meta"]


def _read_results(directory: Path) -> dict:
    from offcoord_agents.core import read_results

    return read_results(directory)


def _execute_args(args):
    return execute(*args)


def build_dataset(dataset: str, size: int | None = None) -> str:
    """Build (or find cached) one dataset, or its ``size``-transition variant. Safe to call from many
    processes at once: offcoord's build takes a file lock in the cache, so one builds and the rest wait."""
    import offcoord

    if size is None:
        offcoord.build(dataset, progress=False)
    else:
        offcoord.build(dataset, size=size, progress=False)
    return dataset


def datasets_needed(runs: list[Run]) -> list[tuple[str, int | None]]:
    """The distinct (dataset, size variant) pairs the runs train on, in a stable order."""
    return sorted({(r.dataset, r.config.get("dataset_size")) for r in runs}, key=lambda d: (d[0], d[1] or 0))


# Environment variables a Ray worker must see as the driver does: the dataset cache (else a worker
# would build into its own default cache dir) and the MuJoCo GL backend.
RAY_ENV_VARS = ("OFFCOORD_DATA_DIR", "MUJOCO_GL", "PYOPENGL_PLATFORM")


def ray_runtime_env() -> dict:
    """The ``runtime_env`` for Ray workers: this process's values of :data:`RAY_ENV_VARS` (those that are set)."""
    env_vars = {k: os.environ[k] for k in RAY_ENV_VARS if k in os.environ}
    env_vars.setdefault("OMP_NUM_THREADS", "1")
    return {"env_vars": env_vars}


def _log_result(log, k: int, n: int, r: Run, res: dict, t0: float) -> None:
    log(f"[{k}/{n}] {r.algorithm} {r.dataset} seed {r.seed}: "
        f"{res['final'].get('normalized_score', float('nan')):.3f} ({time.perf_counter() - t0:.0f} s)")


# How often a table that is still running says where its unfinished runs are: a quick-tier ant run
# takes up to 2.5 hours, and without this a log shows nothing between two runs' ends.
STATUS_SECONDS = 600.0


def last_logged_step(directory: Path) -> int | None:
    """The last step a run in ``directory`` has logged (training losses every ``log_every`` steps,
    evaluations every ``eval_every``), or ``None`` before its first line (or before it starts)."""
    try:
        lines = (directory / "metrics.jsonl").read_text().splitlines()
    except FileNotFoundError:
        return None
    for line in reversed(lines):
        try:
            return int(json.loads(line)["step"])
        except (ValueError, KeyError, TypeError):
            continue  # a line being written as we read
    return None


def status_line(runs: list[Run], unfinished: list[int], out: Path, t0: float) -> str:
    """One line on the runs still going: the last step each has logged, for those that have started."""
    from offcoord_agents.core import make_config
    from offcoord_agents.registry import algorithm_class

    started = []
    for i in unfinished:
        r = runs[i]
        step = last_logged_step(r.directory(out))
        if step is not None:
            total = make_config(algorithm_class(r.algorithm), r.config).steps
            started.append(f"{r.algorithm} {r.dataset} seed {r.seed} at step {step:,} of {total:,}")
    minutes = (time.perf_counter() - t0) / 60
    where = "; ".join(started) if started else "none has logged a step yet"
    return f"... {minutes:.0f} min: {len(unfinished)} runs to finish; {where}"


def run_all(runs: list[Run], out: Path, backend: str = "local", workers: int | None = None, address: str | None = None,
            log=print, status_every: float = STATUS_SECONDS) -> list[dict]:
    """Run everything on a process pool (``local``) or as Ray tasks (``ray``); same results either way.

    Results come back in the order of ``runs``. ``workers``: local processes, or the CPUs of a
    local Ray (default: one per core). ``address``: an existing Ray cluster to join (``ray``
    backend only; otherwise a fresh local Ray is started and shut down at the end). Every
    ``status_every`` seconds without a run finishing, ``log`` gets a :func:`status_line`.
    """
    out = Path(out)
    if backend not in ("local", "ray"):
        raise ValueError(f"unknown backend {backend!r}; choose local or ray")
    results = check_finished_runs(runs, out)  # finished runs are read here once, and not sent to a worker
    t0 = time.perf_counter()
    for k, i in enumerate(sorted(results), 1):
        _log_result(log, k, len(runs), runs[i], results[i], t0)
    pending = [i for i in longest_first(runs) if i not in results]
    if pending:
        (_run_local if backend == "local" else _run_ray)(runs, pending, results, out, workers, address, log, status_every)
    return [results[i] for i in range(len(runs))]


# Algorithms that fit a world model before training take several times longer than the others:
# starting them first keeps every worker busy until the end (longest-processing-time-first).
SLOW_ALGORITHMS = ("momappo", "maiql-ft")


def longest_first(runs: list[Run]) -> list[int]:
    """Indices of ``runs`` in submission order: the slow algorithms first, otherwise the plan's order."""
    return sorted(range(len(runs)), key=lambda i: runs[i].algorithm not in SLOW_ALGORITHMS)


def _run_local(runs: list[Run], pending: list[int], results: dict[int, dict], out: Path, workers: int | None,
               address: str | None, log, status_every: float) -> None:
    """Train ``runs[i]`` for ``i`` in ``pending`` on a process pool, adding each one's results to
    ``results``. (``address`` is the Ray backend's; both backends take the same arguments.)"""
    for dataset, size in datasets_needed([runs[i] for i in pending]):
        build_dataset(dataset, size)  # once, before the workers start (they would only wait on its lock)
    t0 = time.perf_counter()
    with ProcessPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        futures = {pool.submit(_execute_args, (runs[i], out)): i for i in pending}
        waiting = set(futures)
        while waiting:
            done, waiting = wait(waiting, timeout=status_every, return_when=FIRST_COMPLETED)
            if not done:
                log(status_line(runs, sorted(futures[f] for f in waiting), out, t0))
            for fut in done:
                i = futures[fut]
                results[i] = fut.result()
                _log_result(log, len(results), len(runs), runs[i], results[i], t0)


def _run_ray(runs: list[Run], pending: list[int], results: dict[int, dict], out: Path, workers: int | None,
             address: str | None, log, status_every: float) -> None:
    """:func:`_run_local` as Ray tasks (``address``: an existing cluster to join)."""
    try:
        import ray
    except ImportError:
        raise ImportError('the ray backend needs Ray: pip install -e ".[ray]"') from None
    import logging

    started = False
    if not ray.is_initialized():
        if address:  # join a running cluster: its nodes bring their own CPUs
            ray.init(address=address, logging_level=logging.WARNING)
        else:  # "local": a new Ray on this machine, even if another one is running here
            ray.init(address="local", num_cpus=workers or os.cpu_count() or 1, include_dashboard=False,
                     logging_level=logging.WARNING)
        started = True
    try:
        # One build task per dataset, first; a training task takes its dataset's build as an argument,
        # so Ray starts it only once the build is done. (On a multi-node cluster without a shared
        # cache, each node builds its own copy on first use, under the same file lock.)
        # The runtime_env goes on the tasks, so it applies also in a Ray the caller started.
        env = ray_runtime_env()
        build = ray.remote(num_cpus=1, runtime_env=env)(build_dataset)
        built = {key: build.remote(*key) for key in datasets_needed([runs[i] for i in pending])}
        train = ray.remote(num_cpus=1, runtime_env=env)(_execute_after_build)
        index = {train.remote(runs[i], str(out), built[(runs[i].dataset, runs[i].config.get("dataset_size"))]): i
                 for i in pending}
        waiting, t0 = list(index), time.perf_counter()
        while waiting:
            done, waiting = ray.wait(waiting, num_returns=1, timeout=status_every)
            if not done:  # (on a cluster without a shared disk, runs on other nodes show no steps here)
                log(status_line(runs, sorted(index[ref] for ref in waiting), out, t0))
                continue
            i = index[done[0]]
            results[i] = ray.get(done[0])
            _log_result(log, len(results), len(runs), runs[i], results[i], t0)
    finally:
        if started:
            ray.shutdown()


def _execute_after_build(run: Run, out: str, _built: str) -> dict:
    return execute(run, Path(out))


def _cell(records: list[tuple[Run, dict]], algorithm: str, dataset: str) -> list[dict]:
    """The results of one cell's counted runs."""
    return [record for r, record in records if r.algorithm == algorithm and r.dataset == dataset]


def summarize(table: str, runs: list[Run], out: Path, tier: str) -> str:
    """The table in the paper's layout (rows: datasets, columns: algorithms), ours beside the paper's.
    A run in ``out`` that is not the one the table asks for now (another tier's, or on other data)
    is left out and named below the table."""
    algos = TABLES[table]["algorithms"]
    stale, left_out, records = _Staleness(), [], []  # records: (run, its results.json) for each counted run, read once
    for r in runs:
        if (r.directory(out) / "results.json").exists():
            record = _read_results(r.directory(out))
            if stale(r, record):
                left_out.append(str(r.directory(out)))
            else:
                records.append((r, record))
    lines = [f"# {table} table ({tier} tier)", "",
             "Normalized score of each run's last evaluation, mean ± std over seeds; the paper's number in brackets.", "",
             "| dataset | " + " | ".join(algos) + " |", "| --- |" + " --- |" * len(algos)]
    agreement_rows = []
    bars = score_bars(table, records)
    for dataset in TABLES[table]["datasets"]:
        cells, agree = [], []
        for algo in algos:
            finals = [record["final"] for record in _cell(records, algo, dataset)]
            agreements = [final["strategy_agreement"] for final in finals if "strategy_agreement" in final]
            ours, paper = bars.get((dataset, algo), {}).get("ours"), bars.get((dataset, algo), {}).get("paper")
            paper_txt = f" [{paper[0]:.2f} ± {paper[1]:.2f}]" if paper else " [–]"
            planned = sum(r.algorithm == algo and r.dataset == dataset for r in runs)
            partial = f" ({len(finals)} of {planned} seeds)" if finals and len(finals) < planned else ""
            cells.append((f"{ours[0]:.2f} ± {ours[1]:.2f}{partial}" if ours else "–") + paper_txt)
            agree.append(f"{np.mean(agreements):.2f}" if agreements else "–")
        lines.append(f"| {dataset} | " + " | ".join(cells) + " |")
        agreement_rows.append(f"| {dataset} | " + " | ".join(agree) + " |")
    lines += ["", "Strategy-agreement rate (mean over seeds) where the task defines it:", "",
              "| dataset | " + " | ".join(algos) + " |", "| --- |" + " --- |" * len(algos), *agreement_rows]
    if left_out:
        lines += ["", f"Left out: {len(left_out)} finished runs made for another configuration or on other data "
                      "(`rm -r` them and rerun to train them as this tier asks):", "", *(f"- `{d}`" for d in left_out)]
    text = "\n".join(lines) + "\n"
    from offcoord.fileio import atomic_write_bytes

    atomic_write_bytes(Path(out) / table / "summary.md", text.encode())  # a killed run never leaves half a table
    _plot_curves(table, records, out)
    _plot_scores(table, bars, out)
    return text


def _pyplot():
    """matplotlib's pyplot on the Agg backend (no screen), or ``None`` when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def _grid(plt, table: str):
    """A figure with one panel per dataset of ``table`` (four to a row): the figure, its panels paired
    with their datasets, and its number of rows."""
    datasets = TABLES[table]["datasets"]
    ncols = min(4, len(datasets))
    nrows = -(-len(datasets) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.5 * ncols, 3.5 * nrows), squeeze=False)
    for ax in list(axes.flat)[len(datasets):]:
        ax.set_visible(False)
    for ax, dataset in zip(axes.flat, datasets):
        ax.set_title(dataset)
    return fig, list(zip(axes.flat, datasets)), nrows


def _save(plt, fig, nrows: int, path: Path) -> None:
    """One legend for all panels, below them; the PNG written atomically."""
    import io

    from offcoord.fileio import atomic_write_bytes

    legend = {}
    for ax in fig.axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(label, handle)
    if legend:
        fig.legend(list(legend.values()), list(legend), loc="lower center", ncol=len(legend), fontsize=8)
        fig.tight_layout(rect=(0, 0.08 / nrows, 1, 1))
    else:
        fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    atomic_write_bytes(path, buf.getvalue())
    plt.close(fig)


def _plot_curves(table: str, records: list[tuple[Run, dict]], out: Path) -> None:
    """Each cell's mean learning curve over its seeds, from the finished runs' ``records``."""
    plt = _pyplot()
    if not records or plt is None:
        return  # nothing finished yet, or no matplotlib: no figure
    fig, panels, nrows = _grid(plt, table)
    for ax, dataset in panels:
        for algo in TABLES[table]["algorithms"]:
            curves = [([e["step"] for e in record["evals"]], [e.get("normalized_score", np.nan) for e in record["evals"]])
                      for record in _cell(records, algo, dataset)]
            if curves:
                steps = curves[0][0]
                values = np.array([c[1] for c in curves if len(c[1]) == len(steps)])
                ax.plot(np.asarray(steps) / steps[-1], values.mean(0), label=algo)
        ax.set_xlabel("fraction of training")
        ax.set_ylabel("normalized score")
    _save(plt, fig, nrows, Path(out) / table / "learning_curves.png")


def score_bars(table: str, records: list[tuple[Run, dict]]) -> dict[tuple[str, str], dict]:
    """The bars of the summary figure, by (dataset, algorithm): ``ours`` (mean and std over the finished
    seeds' final normalized scores, as the table's cells) and ``paper`` (the paper's mean and std), each
    ``None`` where there is none."""
    bars = {}
    for dataset in TABLES[table]["datasets"]:
        for algo in TABLES[table]["algorithms"]:
            scores = [record["final"].get("normalized_score", np.nan) for record in _cell(records, algo, dataset)]
            paper = PAPER.get(table, {}).get(dataset, {}).get(algo)
            if scores or paper:
                bars[dataset, algo] = {"ours": (float(np.mean(scores)), float(np.std(scores))) if scores else None,
                                       "paper": tuple(paper) if paper else None}
    return bars


def _plot_scores(table: str, bars: dict[tuple[str, str], dict], out: Path) -> None:
    """The summary figure of ``score_bars``: per dataset, each algorithm's score (mean ± std over seeds)
    beside the paper's."""
    plt = _pyplot()
    if plt is None or not any(bar["ours"] for bar in bars.values()):
        return  # no matplotlib, or nothing finished yet: no figure
    algos = TABLES[table]["algorithms"]
    x = np.arange(len(algos))
    fig, panels, nrows = _grid(plt, table)
    for ax, dataset in panels:
        for offset, source, style in ((-0.2, "ours", {"color": "C0", "label": "ours (mean ± std over seeds)"}),
                                      (0.2, "paper", {"color": "0.75", "label": "paper"})):
            cells = [(i, bars[dataset, a][source]) for i, a in enumerate(algos) if bars.get((dataset, a), {}).get(source)]
            if cells:
                ax.bar([x[i] + offset for i, _ in cells], [c[0] for _, c in cells], width=0.4,
                       yerr=[c[1] for _, c in cells], capsize=2, **style)
        ax.axhline(0, color="black", linewidth=0.5)
        ax.set_xticks(x, algos, rotation=60, ha="right", fontsize=7)
        ax.set_ylabel("normalized score")
    _save(plt, fig, nrows, Path(out) / table / "scores.png")
