"""offcoord-agents reproduce: the smoke tier of the coordination table, end to end."""

import json

import numpy as np
import pytest

pytest.importorskip("torch")

import offcoord_agents  # noqa: E402
from offcoord_agents.cli import main  # noqa: E402
from offcoord_agents.reproduce import PAPER, TABLES, datasets_needed, longest_first, plan, status_line, summarize  # noqa: E402


def test_plan_follows_the_paper_layout():
    runs = plan("reacher", "quick")
    assert {r.algorithm for r in runs if r.dataset == "reacher2-expert-fo"} >= {"iql", "momappo", "ibc"}
    assert not any(r.algorithm == "iql" and r.dataset != "reacher2-expert-fo" for r in runs)  # centralized: FO only
    assert len(plan("coordination", "quick")) == 4 * 3 * 5
    with pytest.raises(ValueError, match="unknown table"):
        plan("hopper", "smoke")
    with pytest.raises(ValueError, match="unknown tier"):
        plan("coordination", "huge")


def test_rows_and_columns_can_be_run_alone_and_the_table_shows_partial_cells(cache, tmp_path, capsys):
    po = plan("reacher", "quick", datasets=["reacher2-expert-independent"], algorithms=["momappo", "ibc"])
    assert {(r.dataset, r.algorithm) for r in po} == {("reacher2-expert-independent", a) for a in ("momappo", "ibc")}
    assert len(po) == 6 and all(r in plan("reacher", "quick") for r in po)  # the same runs as in the whole table
    with pytest.raises(ValueError, match=r"no datasets \['reacher2-expert-po'\]; choose from"):
        plan("reacher", "quick", datasets=["reacher2-expert-po"])
    assert main(["reproduce", "coordination", "--tier", "smoke", "--algorithms", "nope"]) == 2
    assert "no algorithms ['nope']" in capsys.readouterr().err
    assert main(["reproduce", "coordination", "--tier", "smoke", "--datasets", ","]) == 2  # not "everything"
    assert "give comma-separated names" in capsys.readouterr().err
    # The model-based runs go first (the longest), otherwise the plan's order.
    order = [po[i].algorithm for i in longest_first(po)]
    assert order == ["momappo"] * 3 + ["ibc"] * 3
    # One row run alone, one seed of it finished by hand: the whole table prints, that cell says so.
    out = tmp_path / "reproduce"
    assert main(["reproduce", "coordination", "--tier", "smoke", "--out", str(out), "--workers", "1",
                 "--datasets", "coordination-neutral", "--algorithms", "iql"]) == 0
    text = capsys.readouterr().out
    assert text.count("\n| coordination-") == 2 * 3  # every row of both tables, not just the one run
    assert "| coordination-favorable | – [1.00 ± 0.00] |" in text
    (out / "coordination" / "iql" / "coordination-neutral" / "seed1" / "results.json").unlink()
    assert "(1 of 2 seeds)" in summarize("coordination", plan("coordination", "smoke"), out, "smoke")


def test_ant_plan_without_training(tmp_path):
    algos = ["iql", "maiql", "maiql-ft", "matd3bc", "ibc", "itd3bc", "icql", "omar", "momappo"]
    datasets = [f"ant-{q}-{o}" for o in ("fo", "po") for q in ("random", "medium", "full-replay", "expert")]
    assert TABLES["ant"] == {"algorithms": algos, "datasets": datasets}
    per_seed = len(algos) * len(datasets) - 4  # centralized IQL on the four FO datasets only
    for tier, seeds in (("smoke", 1), ("quick", 2), ("paper", 5)):
        runs = plan("ant", tier)
        assert len(runs) == per_seed * seeds, tier
        assert {r.dataset for r in runs if r.algorithm == "iql"} == {d for d in datasets if d.endswith("-fo")}
        assert {r.algorithm for r in runs if r.dataset == "ant-expert-po"} == set(algos) - {"iql"}
        assert len(runs) == len({r.directory(tmp_path) for r in runs})  # no two runs share a directory
    smoke = plan("ant", "smoke")
    assert all(r.config["dataset_size"] == 20_000 for r in smoke)  # small variants, built in seconds
    assert datasets_needed(smoke) == [(d, 20_000) for d in sorted(datasets)]
    assert all("dataset_size" not in r.config for r in plan("ant", "paper"))  # the paper tier: the full datasets
    # The paper's numbers: every published cell is there, MA-TD3+BC has none, IQL none on PO.
    assert PAPER["ant"]["ant-full-replay-po"]["maiql-ft"] == (-0.07, 0.10)
    assert PAPER["ant"]["ant-expert-fo"]["momappo"] == (1.49, 0.01)
    assert sum(len(cells) for cells in PAPER["ant"].values()) == 8 * 4 + 7 * 4
    assert not any("matd3bc" in cells for cells in PAPER["ant"].values())
    # The table prints (every cell empty, the paper's beside it) before any run has finished.
    text = summarize("ant", smoke, tmp_path, "smoke")
    assert "| ant-random-po | – [–] | – [0.31 ± 0.00] |" in text
    assert text.count("\n| ant-") == 2 * len(datasets)


def test_status_line_says_where_the_unfinished_runs_are(tmp_path, capsys):
    runs = plan("ant", "quick", datasets=["ant-medium-po"], algorithms=["icql", "omar"])
    out = tmp_path / "reproduce"
    assert status_line(runs, [0, 1], out, 0.0).endswith(": 2 runs to finish; none has logged a step yet")
    directory = runs[1].directory(out)
    directory.mkdir(parents=True)
    (directory / "metrics.jsonl").write_text(
        '{"kind": "train", "step": 1000, "loss": 1.0}\n{"kind": "eval", "step": 2500, "normalized_score": 0.2}\n{"kind": "tr')
    line = status_line(runs, [0, 1, 2], out, 0.0)  # the half-written last line is passed over
    assert line.endswith(": 3 runs to finish; icql ant-medium-po seed 1 at step 2,500 of 10,000")
    assert main(["reproduce", "coordination", "--tier", "smoke", "--status-every", "0"]) == 2
    assert "--status-every got 0.0" in capsys.readouterr().err


def test_smoke_tier_runs_prints_and_skips_finished_runs(cache, tmp_path, capsys, monkeypatch):
    out = tmp_path / "reproduce"
    assert main(["reproduce", "coordination", "--tier", "smoke", "--out", str(out), "--workers", "2",
                 "--status-every", "0.2"]) == 0
    text = capsys.readouterr().out
    assert "runs to finish" in text  # a status line while the workers start
    assert "| coordination-unfavorable |" in text and "[1.00 ± 0.00]" in text  # the paper's numbers beside ours
    summary = (out / "coordination" / "summary.md").read_text()
    assert "momappo" in summary and "Strategy-agreement" in summary
    for figure in ("learning_curves.png", "scores.png"):
        assert (out / "coordination" / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", figure
    results = json.loads((out / "coordination" / "momappo" / "coordination-unfavorable" / "seed0" / "results.json").read_text())
    assert results["final"]["step"] == results["config"]["steps"] and "versions" in results
    mtime = (out / "coordination" / "ibc" / "coordination-neutral" / "seed1" / "results.json").stat().st_mtime_ns
    from offcoord_agents import reproduce

    def no_worker(*args, **kwargs):
        raise AssertionError("a finished run was sent to a worker")

    monkeypatch.setattr(reproduce, "_run_local", no_worker)  # finished runs are read once, by the driver
    assert main(["reproduce", "coordination", "--tier", "smoke", "--out", str(out), "--workers", "2"]) == 0
    again = capsys.readouterr().out
    assert again.count("seed") >= len(reproduce.plan("coordination", "smoke")) and text.split("| coordination-")[1:] == again.split("| coordination-")[1:]
    assert (out / "coordination" / "ibc" / "coordination-neutral" / "seed1" / "results.json").stat().st_mtime_ns == mtime


def test_every_tier_override_is_a_config_field_of_its_algorithm():
    import dataclasses

    from offcoord_agents.registry import algorithm_class

    for table in TABLES:
        for tier in ("smoke", "quick", "paper"):
            for r in plan(table, tier):
                fields = {f.name for f in dataclasses.fields(algorithm_class(r.algorithm).Config)}
                assert set(r.config) <= fields, (table, tier, r.algorithm, set(r.config) - fields)


@pytest.mark.parametrize("table", ["reacher", "ant"])
def test_smoke_tier_of_the_continuous_tables_runs_end_to_end(cache, tmp_path, table):
    """Every algorithm on every dataset of the table, at the smoke budget (small dataset variants):
    each run finishes with a normalized score, and the table prints every cell."""
    out = tmp_path / "reproduce"
    assert main(["reproduce", table, "--tier", "smoke", "--out", str(out), "--workers", "2"]) == 0
    runs = plan(table, "smoke")
    for r in runs:
        results = json.loads((r.directory(out) / "results.json").read_text())
        assert np.isfinite(results["final"]["normalized_score"]), r
    summary = (out / table / "summary.md").read_text().split("Strategy-agreement")[0]
    cells = len(TABLES[table]["datasets"]) * len(TABLES[table]["algorithms"])
    assert summary.count("| – [") == cells - len({(r.dataset, r.algorithm) for r in runs})  # only IQL off FO is empty


def test_a_finished_run_on_rebuilt_data_is_not_skipped_silently(cache, tmp_path):
    """``reproduce`` skips a finished run only if its recorded data digest is the store's now (or, for
    a run recorded before runs kept a digest, its card is the card now)."""
    from offcoord_agents.core import read_results, write_results
    from offcoord_agents.reproduce import Run, check_finished_runs, run_all

    run = Run("coordination", "ibc", "coordination-favorable", 0, {"steps": 5, "dataset_size": 200, "eval_episodes": 2})
    out = tmp_path / "out"
    offcoord_agents.train(run.algorithm, run.dataset, seed=0, config=run.config, out=run.directory(out), progress=False)
    check_finished_runs([run], out)  # the same data: skipped
    done = read_results(run.directory(out))
    write_results(run.directory(out), {**done, "reference_scores": [-1.0, 1.0]})  # as if the card's normalization changed
    with pytest.raises(ValueError, match=r"finished on other reference scores \(\[-1.0, 1.0\], not"):
        check_finished_runs([run], out)
    write_results(run.directory(out), {**done, "data_sha256": "0" * 64})  # as if the store was rebuilt since
    with pytest.raises(ValueError, match=f"finished on other data.*rm -r {run.directory(out)}"):
        run_all([run, Run("coordination", "ibc", "coordination-favorable", 1, run.config)], out)  # before any training
    assert not Run("coordination", "ibc", "coordination-favorable", 1, run.config).directory(out).exists()
    write_results(run.directory(out), {k: v for k, v in done.items() if k != "data_sha256"})  # an earlier version's run
    check_finished_runs([run], out)  # matched on the card, which is the same
    write_results(run.directory(out), {**{k: v for k, v in done.items() if k != "data_sha256"}, "card_sha256": "0" * 64})
    with pytest.raises(ValueError, match=f"another version of coordination-favorable's card.*rm -r {run.directory(out)}"):
        check_finished_runs([run], out)


def test_a_finished_run_with_another_config_is_not_skipped_silently(cache, tmp_path):
    """``reproduce`` skips a finished run only if it ran the configuration the table asks for now
    (another tier budget, or an option the run set otherwise); a field the record lacks (added to
    the algorithm since) counts as its default, which keeps the earlier behavior."""
    from offcoord_agents.core import read_results, write_results
    from offcoord_agents.reproduce import Run, check_finished_runs

    run = Run("coordination", "momappo", "coordination-favorable", 0,
              {"steps": 2, "dataset_size": 200, "eval_episodes": 2, "wm_max_steps": 50, "wm_eval_every": 25, "horizon": 1})
    out = tmp_path / "out"
    offcoord_agents.train(run.algorithm, run.dataset, seed=0, config=run.config, out=run.directory(out), progress=False)
    check_finished_runs([run], out)  # as asked: skipped
    done = read_results(run.directory(out))
    write_results(run.directory(out), {**done, "config": {**done["config"], "value_normalization": True}})
    with pytest.raises(ValueError, match=f"value_normalization differ.*rm -r {run.directory(out)}"):
        check_finished_runs([run], out)
    write_results(run.directory(out), {**done, "config": {k: v for k, v in done["config"].items() if k != "memory"}})
    check_finished_runs([run], out)  # written before `memory` existed: the same run
    with pytest.raises(ValueError, match="steps differ"):
        check_finished_runs([Run(run.table, run.algorithm, run.dataset, 0, {**run.config, "steps": 3})], out)


def test_the_summary_and_a_resume_leave_out_runs_made_for_another_configuration(cache, tmp_path):
    """A run another tier left in ``--out`` neither counts in the printed table nor is resumed from
    its checkpoint: the summary names it, and an unfinished one stops the command before any training."""
    from offcoord_agents.reproduce import Run, check_finished_runs, summarize

    config = {"steps": 5, "dataset_size": 200, "eval_episodes": 2}
    run = Run("coordination", "ibc", "coordination-favorable", 0, config)
    out = tmp_path / "out"
    offcoord_agents.train(run.algorithm, run.dataset, seed=0, config=run.config, out=run.directory(out), progress=False)
    asked = Run(run.table, run.algorithm, run.dataset, 0, {**config, "steps": 6})  # the same cell at another budget
    text = summarize("coordination", [asked], out, "quick")
    assert "| coordination-favorable | – [" in text and "Left out: 1 finished runs" in text and str(run.directory(out)) in text
    assert "coordination-favorable | 1.00" not in summarize("coordination", [asked], out, "quick")
    assert "Left out" not in summarize("coordination", [run], out, "quick")
    (run.directory(out) / "results.json").unlink()  # now an unfinished run whose checkpoint is another budget's
    with pytest.raises(ValueError, match=f"holds a checkpoint of a run on another configuration.*steps differ.*rm -r {run.directory(out)}"):
        check_finished_runs([asked], out)
    assert check_finished_runs([run], out) == {}  # its own budget: it resumes


def test_summary_figure_puts_each_cell_beside_the_paper(tmp_path):
    """The summary figure's bars are the table's cells (mean and std over the finished seeds' final
    scores) beside the paper's numbers; a cell with no finished run has only the paper's bar."""
    from offcoord_agents.reproduce import _plot_scores, score_bars

    runs = [r for r in plan("coordination", "smoke") if (r.dataset, r.algorithm) != ("coordination-unfavorable", "maiql")]
    records = [(r, {"final": {"normalized_score": float(r.seed)}, "evals": [{"step": 100, "normalized_score": float(r.seed)}]})
               for r in runs]  # seeds 0 and 1 score 0 and 1: each cell 0.5 ± 0.5
    bars = score_bars("coordination", records)
    assert bars["coordination-neutral", "ibc"] == {"ours": (0.5, 0.5), "paper": (0.55, 0.11)}
    assert bars["coordination-unfavorable", "maiql"] == {"ours": None, "paper": (0.0, 0.0)}
    assert len(bars) == len(TABLES["coordination"]["datasets"]) * len(TABLES["coordination"]["algorithms"])
    _plot_scores("coordination", bars, tmp_path)
    assert (tmp_path / "coordination" / "scores.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
