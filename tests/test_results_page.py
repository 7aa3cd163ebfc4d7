"""The score tables in `docs/results.md` agree with the run results committed under `results/reproduce`.

The docs' tables are copies of what `offcoord-agents reproduce` summarizes, in the paper's column
names; this keeps every filled cell, every bracketed paper number and every bold mark honest, and
the ant section's run count and per-seed evaluations too.
"""

import os
import re
from pathlib import Path

import numpy as np
import pytest

from offcoord_agents.core import read_results
from offcoord_agents.reproduce import PAPER, TABLES, TIERS

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "results" / "reproduce"
PAGE = ROOT / "docs" / "results.md"

# The paper's column names, as the docs print them, for `reproduce`'s algorithm keys.
COLUMN = {"IQL": "iql", "MA-IQL": "maiql", "MA-IQL-ft": "maiql-ft", "MA-TD3+BC": "matd3bc", "IBC": "ibc",
          "ITD3+BC": "itd3bc", "ICQL": "icql", "OMAR": "omar", "MOMA-PPO": "momappo"}
CELL = re.compile(r"^(\*\*)?(?P<ours>–|[−\d.]+ ± [\d.]+)(\*\*)? \[(?P<paper>–|[−\d.]+)\]$|^–$")


def _number(x: float) -> str:
    return f"{x:.2f}".replace("-", "−")


def short_names(table: str) -> dict[str, str]:
    """`table`'s datasets by the names the docs' rows give them: without their common prefix."""
    datasets = TABLES[table]["datasets"]
    prefix = os.path.commonprefix(datasets)
    return {d.removeprefix(prefix): d for d in datasets}


def table_rows(lines: list[str], header: int) -> list[list[str]]:
    """The cells of the Markdown table whose header is `lines[header]`, row by row."""
    rows = []
    for row in lines[header + 2:]:
        if not row.startswith("| "):
            break
        rows.append(row.strip("| ").split(" | "))
    return rows


def score_table(table: str) -> tuple[list[str], dict[str, list[str]]]:
    """The first table on the page with the paper's column names and exactly `table`'s datasets as rows
    (written without their common prefix): its columns as algorithm keys, and its cells by dataset."""
    rows = short_names(table)
    lines = PAGE.read_text().splitlines()
    for i, line in enumerate(lines):
        if line.startswith("| dataset | ") and i + 2 < len(lines) and lines[i + 2].split(" | ")[0][2:] in rows:
            names = line.strip("| ").split(" | ")[1:]
            if not all(name in COLUMN for name in names):
                continue
            columns = [COLUMN[name] for name in names]
            cells = {rows[parts[0]]: parts[1:] for parts in table_rows(lines, i)}
            if set(cells) == set(rows.values()):
                return columns, cells
    raise AssertionError(f"no {table} score table in {PAGE}")


def committed_runs(table: str, algorithm: str, dataset: str) -> list[dict]:
    """The results of the runs committed for one cell, in seed order."""
    runs = sorted((RESULTS / table / algorithm / dataset).glob("seed*/results.json"))
    return [read_results(p.parent) for p in runs]


def committed_scores(table: str, algorithm: str, dataset: str) -> list[float]:
    return [run["final"]["normalized_score"] for run in committed_runs(table, algorithm, dataset)]


@pytest.mark.parametrize("table", ["reacher", "ant"])
def test_score_table_matches_committed_results_and_paper(table):
    columns, cells = score_table(table)
    assert sorted(columns) == sorted(TABLES[table]["algorithms"])
    seeds = TIERS[table]["quick"]["seeds"]  # the docs' tables are the quick tier's
    checked = 0
    for dataset, row in cells.items():
        assert len(row) == len(columns), dataset
        means = {}
        for algorithm, cell in zip(columns, row):
            match = CELL.match(cell)
            assert match, f"{dataset} {algorithm}: unreadable cell {cell!r}"
            paper = PAPER[table][dataset].get(algorithm)
            if match["paper"] is not None:
                assert match["paper"] == ("–" if paper is None else _number(paper[0])), f"{dataset} {algorithm}: paper number"
            scores = committed_scores(table, algorithm, dataset)
            ours = match["ours"]
            if table == "ant":  # every ant run is committed: a cell is filled exactly when its seeds are
                assert (ours not in (None, "–")) == (len(scores) == seeds), f"{dataset} {algorithm}: {cell!r}, {len(scores)} seeds"
            if ours not in (None, "–"):
                means[algorithm] = float(ours.split(" ± ")[0].replace("−", "-"))
            if len(scores) == seeds:
                assert ours == f"{_number(np.mean(scores))} ± {_number(np.std(scores))}", f"{dataset} {algorithm}"
                checked += 1
        for algorithm, cell in zip(columns, row):  # bold marks the row's highest mean, every one of a tie
            if algorithm in means:
                assert cell.startswith("**") == (means[algorithm] == max(means.values())), f"{dataset} {algorithm}: bold"
    assert checked >= (50 if table == "ant" else 7)


def test_ant_run_count_in_prose_matches_committed_runs():
    stated = re.search(r"All (\d+) finished runs are kept in `results/reproduce/ant`", PAGE.read_text())
    assert stated, "the ant section no longer states its run count"
    assert int(stated[1]) == len(list((RESULTS / "ant").glob("*/*/seed*/results.json")))


CURVES_HEADER = "| dataset | algorithm | seed 0 | seed 1 |"


def test_ant_seed_curves_match_committed_runs():
    """The ant section's per-seed table lists, for each algorithm it covers, every committed run, and
    each run's evaluations as its `results.json` holds them."""
    lines = PAGE.read_text().splitlines()
    assert CURVES_HEADER in lines, "the ant section no longer has its per-seed table"
    datasets = short_names("ant")
    listed = set()
    for short, name, *seeds in table_rows(lines, lines.index(CURVES_HEADER)):
        algorithm, dataset = COLUMN[name], datasets[short]
        runs = committed_runs("ant", algorithm, dataset)
        assert len(runs) == len(seeds), f"{dataset} {algorithm}: {len(runs)} committed seeds"
        for cell, run in zip(seeds, runs):
            assert cell == " → ".join(_number(e["normalized_score"]) for e in run["evals"]), f"{dataset} {algorithm} seed {run['seed']}"
        listed.add((algorithm, dataset))
    # no committed run of an algorithm the table covers is left out
    committed = {(algorithm, p.parent.parent.name) for algorithm in {a for a, _ in listed}
                 for p in (RESULTS / "ant" / algorithm).glob("*/seed*/results.json")}
    assert not committed - listed, f"committed runs missing from the table: {sorted(committed - listed)}"
