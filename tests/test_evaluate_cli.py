"""offcoord.evaluate (the policy protocol) and the offcoord command line."""

import json

import numpy as np
import pytest

import offcoord
from offcoord.cli import main


def test_decentralized_policy_dict():
    always_right = {"agent_0": lambda obs: 1, "agent_1": lambda obs: 1}
    result = offcoord.evaluate(always_right, "coordination-game", episodes=5, seed=3)
    assert result.returns.tolist() == [1.0] * 5
    assert result.normalized_mean == 1.0
    assert result.seeds == (3, 4, 5, 6, 7)
    assert "normalized 1.000" in result.summary()


def test_joint_callable_and_reset_hook():
    class Miscoordinated:
        resets = 0

        def reset(self):
            self.resets += 1

        def __call__(self, obs):
            assert set(obs) == {"agent_0", "agent_1"}
            return {"agent_0": 0, "agent_1": 1}

    policy = Miscoordinated()
    result = offcoord.evaluate(policy, "coordination-game", episodes=4, env_kwargs={"horizon": 3})
    assert policy.resets == 4
    assert result.returns.tolist() == [0.0] * 4 and result.lengths.tolist() == [3] * 4
    assert result.normalized_scores is None  # another horizon: the card's references do not apply


def test_policy_errors_are_loud():
    with pytest.raises(ValueError, match="agent_1"):
        offcoord.evaluate({"agent_0": lambda o: 1, "agent_1": lambda o: 7}, "coordination-game")
    with pytest.raises(TypeError, match="policy must be"):
        offcoord.evaluate(42, "coordination-game")
    with pytest.raises(ValueError, match="agent_1"):  # a decentralized team missing an agent
        offcoord.evaluate({"agent_0": lambda o: 1}, "coordination-game")
    with pytest.raises(ValueError, match="episodes"):
        offcoord.evaluate({"agent_0": lambda o: 1, "agent_1": lambda o: 1}, "coordination-game", episodes=0)


def test_cli_list_info_generate_verify(cache, capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "coordination-game" in out and "coordination-neutral" in out and "not built" in out
    assert main(["generate", "coordination-neutral", "--quiet"]) == 0
    assert main(["info", "coordination-neutral"]) == 0
    info = json.loads(capsys.readouterr().out.split("\n", 1)[1])
    assert info["cached"] and info["statistics"]["episodes"] == 10_000
    assert info["reference_scores"] == {"min": 0.0, "max": 1.0}
    assert info["built_with"]["numpy_version"] == np.__version__ and info["built_with"]["mujoco_version"]
    assert main(["info", "coordination-neutral@300"]) == 0  # a size variant, spelled as `generate` takes it
    variant = json.loads(capsys.readouterr().out)
    assert variant["stored_copy"] == "coordination-neutral@300" and not variant["cached"]
    assert variant["generation"]["transitions"] == 300
    assert main(["verify", "all"]) == 0
    out = capsys.readouterr().out
    assert "coordination-neutral: ok" in out and "coordination-favorable: not built" in out


def test_cli_errors_exit_2_with_a_message(cache, capsys):
    assert main(["info", "coordination-nuetral"]) == 2
    assert "did you mean 'coordination-neutral'" in capsys.readouterr().err
    assert main(["verify", "coordination-neutral"]) == 2
    assert "offcoord generate coordination-neutral" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["generate"])
    for bad_size in ("coordination-neutral@abc", "coordination-neutral@0"):  # a clear error, not a traceback
        assert main(["info", bad_size]) == 2
        assert "offcoord: error:" in capsys.readouterr().err


def test_cli_export_minari(cache, capsys):
    pytest.importorskip("minari")
    assert main(["export-minari", "coordination-favorable", "--max-episodes", "50", "--quiet"]) == 0
    assert "offcoord/coordination-favorable-v0" in capsys.readouterr().out
    assert main(["export-minari", "coordination-favorable", "--max-episodes", "50", "--quiet"]) == 2
    assert main(["export-minari", "coordination-favorable", "--max-episodes", "50", "--quiet", "--force"]) == 0
