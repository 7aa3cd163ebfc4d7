"""The README's commands are the ones CI runs; the docs' example runs."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _readme_commands():
    return re.findall(r"```bash\n(.+?)\n```", (ROOT / "README.md").read_text())


def test_readme_has_two_commands_and_ci_runs_the_test_one():
    install_and_run, install_and_test = _readme_commands()[:2]
    assert "pip install" in install_and_run and "pip install" in install_and_test and "pytest" in install_and_test
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert install_and_test in ci_lines


def test_plug_in_example_runs_and_shows_the_agreement_failure(cache):
    import runpy

    module = runpy.run_path(str(ROOT / "docs" / "examples" / "independent_bc.py"))
    import offcoord

    scores = {
        d: offcoord.evaluate(module["train_independent_bc"](d), "coordination-game", episodes=5).normalized_mean
        for d in ("coordination-favorable", "coordination-unfavorable")
    }
    assert scores == {"coordination-favorable": 1.0, "coordination-unfavorable": 0.0}
