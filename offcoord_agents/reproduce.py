"""Reproduce the paper's tables: algorithms x datasets x seeds, run resumably, printed beside the
paper's published numbers.

    offcoord-agents reproduce coordination --tier quick --out runs/reproduce

Each run writes ``<out>/<table>/<algorithm>/<dataset>/seed<k>/`` (``results.json``, metrics,
checkpoints); a finished run is skipped, an interrupted one resumes from its checkpoint. The
table (mean ± std over seeds of each run's last evaluation) is printed and written as Markdown
with the paper's number beside each cell, plus learning curves when matplotlib is installed.
"""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
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
}

# Budgets per tier: seeds, then per-algorithm config overrides ("*" applies to every algorithm).
_SMALL_MOMA = {"hidden": (64, 64), "wm_hidden": (64, 64), "rollouts": 512}
TIERS: dict[str, dict[str, dict[str, Any]]] = {
    "coordination": {
        "smoke": {"seeds": 2, "*": {"steps": 200, "eval_every": 200, "eval_episodes": 2, "hidden": (32, 32)},
                  "momappo": {**_SMALL_MOMA, "steps": 10, "eval_every": 10, "horizon": 1, "wm_max_steps": 500, "wm_eval_every": 100}},
        "quick": {"seeds": 5, "*": {"steps": 2000, "eval_every": 500, "eval_episodes": 5, "hidden": (64, 64)},
                  "momappo": {**_SMALL_MOMA, "steps": 30, "eval_every": 10, "horizon": 1, "wm_max_steps": 1500, "wm_eval_every": 250}},
        "paper": {"seeds": 5, "*": {"steps": 100_000, "eval_every": 10_000},
                  "momappo": {"steps": 200, "eval_every": 20, "horizon": 1}},
    },
    "reacher": {
        "smoke": {"seeds": 1, "*": {"steps": 300, "eval_every": 300, "eval_episodes": 2, "hidden": (32, 32)},
                  "momappo": {**_SMALL_MOMA, "steps": 5, "eval_every": 5, "wm_max_steps": 300, "wm_eval_every": 100}},
        "quick": {"seeds": 3, "*": {"steps": 20_000, "eval_every": 5_000},
                  "momappo": {"steps": 300, "eval_every": 50, "rollouts": 512, "wm_max_steps": 10_000}},
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


def plan(table: str, tier: str) -> list[Run]:
    """Every run of ``table`` at ``tier``; IQL (centralized) only where an agent sees the full state."""
    if table not in TABLES:
        raise ValueError(f"unknown table {table!r}; choose one of {sorted(TABLES)} (the ant table needs the ant datasets)")
    if tier not in TIERS[table]:
        raise ValueError(f"unknown tier {tier!r}; choose one of {sorted(TIERS[table])}")
    budget = TIERS[table][tier]
    runs = []
    for dataset in TABLES[table]["datasets"]:
        for algorithm in TABLES[table]["algorithms"]:
            if algorithm == "iql" and not (dataset.endswith("-fo") or dataset.startswith("coordination")):
                continue
            config = {**budget.get("*", {}), **budget.get(algorithm, {})}
            runs += [Run(table, algorithm, dataset, seed, config) for seed in range(budget["seeds"])]
    return runs


def execute(run: Run, out: Path) -> dict:
    """Train one run (resuming it if interrupted) and return its results (skipped when finished)."""
    import torch

    import offcoord_agents

    directory = run.directory(out)
    results = directory / "results.json"
    if results.exists():
        return json.loads(results.read_text())
    torch.set_num_threads(1)
    offcoord_agents.train(run.algorithm, run.dataset, seed=run.seed, config=run.config, out=directory, progress=False)
    return json.loads(results.read_text())


def _execute_args(args):
    return execute(*args)


def run_all(runs: list[Run], out: Path, backend: str = "local", workers: int | None = None, address: str | None = None,
            log=print) -> list[dict]:
    """Run everything on a process pool (``local``) or as Ray tasks (``ray``); same results either way."""
    import offcoord

    for dataset in sorted({r.dataset for r in runs}):
        offcoord.build(dataset)  # build each dataset once, before workers start (they would wait on its lock)
    todo = list(runs)
    results: list[dict] = []
    t0 = time.perf_counter()
    if backend == "local":
        workers = workers or os.cpu_count() or 1
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = {pool.submit(_execute_args, (r, out)): r for r in todo}
            for k, fut in enumerate(as_completed(futures), 1):
                r = futures[fut]
                res = fut.result()
                results.append(res)
                log(f"[{k}/{len(todo)}] {r.algorithm} {r.dataset} seed {r.seed}: "
                    f"{res['final'].get('normalized_score', float('nan')):.3f} ({time.perf_counter() - t0:.0f} s)")
    elif backend == "ray":
        try:
            import ray
        except ImportError:
            raise ImportError('the ray backend needs Ray: pip install -e ".[ray]"') from None
        ray.init(address=address, ignore_reinit_error=True, include_dashboard=False)
        remote = ray.remote(num_cpus=1)(execute)
        refs = [remote.remote(r, out) for r in todo]
        results = ray.get(refs)
    else:
        raise ValueError(f"unknown backend {backend!r}; choose local or ray")
    return results


def summarize(table: str, runs: list[Run], out: Path, tier: str) -> str:
    """The table in the paper's layout (rows: datasets, columns: algorithms), ours beside the paper's."""
    algos = TABLES[table]["algorithms"]
    lines = [f"# {table} table ({tier} tier)", "",
             "Normalized score of each run's last evaluation, mean ± std over seeds; the paper's number in brackets.", "",
             "| dataset | " + " | ".join(algos) + " |", "| --- |" + " --- |" * len(algos)]
    agreement_rows = []
    for dataset in TABLES[table]["datasets"]:
        cells, agree = [], []
        for algo in algos:
            scores, agreements = [], []
            for r in runs:
                if r.algorithm == algo and r.dataset == dataset and (r.directory(out) / "results.json").exists():
                    final = json.loads((r.directory(out) / "results.json").read_text())["final"]
                    scores.append(final.get("normalized_score", np.nan))
                    if "strategy_agreement" in final:
                        agreements.append(final["strategy_agreement"])
            paper = PAPER.get(table, {}).get(dataset, {}).get(algo)
            paper_txt = f" [{paper[0]:.2f} ± {paper[1]:.2f}]" if paper else " [–]"
            cells.append((f"{np.mean(scores):.2f} ± {np.std(scores):.2f}" if scores else "–") + paper_txt)
            agree.append(f"{np.mean(agreements):.2f}" if agreements else "–")
        lines.append(f"| {dataset} | " + " | ".join(cells) + " |")
        agreement_rows.append(f"| {dataset} | " + " | ".join(agree) + " |")
    lines += ["", "Strategy-agreement rate (mean over seeds) where the task defines it:", "",
              "| dataset | " + " | ".join(algos) + " |", "| --- |" + " --- |" * len(algos), *agreement_rows]
    text = "\n".join(lines) + "\n"
    (Path(out) / table).mkdir(parents=True, exist_ok=True)
    (Path(out) / table / "summary.md").write_text(text)
    _plot_curves(table, runs, out)
    return text


def _plot_curves(table: str, runs: list[Run], out: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    datasets = TABLES[table]["datasets"]
    fig, axes = plt.subplots(1, len(datasets), figsize=(5 * len(datasets), 3.5), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        for algo in TABLES[table]["algorithms"]:
            curves = []
            for r in runs:
                path = r.directory(out) / "results.json"
                if r.algorithm == algo and r.dataset == dataset and path.exists():
                    evals = json.loads(path.read_text())["evals"]
                    curves.append(([e["step"] for e in evals], [e.get("normalized_score", np.nan) for e in evals]))
            if curves:
                steps = curves[0][0]
                values = np.array([c[1] for c in curves if len(c[1]) == len(steps)])
                ax.plot(np.asarray(steps) / steps[-1], values.mean(0), label=algo)
        ax.set_title(dataset)
        ax.set_xlabel("fraction of training")
        ax.set_ylabel("normalized score")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(Path(out) / table / "learning_curves.png", dpi=100)
    plt.close(fig)
