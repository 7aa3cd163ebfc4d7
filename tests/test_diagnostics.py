"""Strategy agreement: the benchmark's own lens on coordination."""

import numpy as np
import pytest

import offcoord
from offcoord.diagnostics import dataset_strategy_agreement, strategy_agreement_rate
from offcoord.envs.reacher import episode_strategies, expert_policies


def test_expert_teams_agree_and_the_mixed_team_does_not():
    for strategy in ("clockwise", "counter-clockwise"):
        assert strategy_agreement_rate(expert_policies(strategy), "reacher2-independent", episodes=10) == 1.0
    mixed = offcoord.evaluate(expert_policies("clockwise", "counter-clockwise"), "reacher2-independent", episodes=10)
    assert mixed.strategy_agreement_rate == 0.0
    assert [s["agent_0"] for s in mixed.strategies] == [0] * 10 and [s["agent_1"] for s in mixed.strategies] == [1] * 10


def test_coordination_agreement_is_the_coordination_rate():
    both_right = {"agent_0": lambda o: 1, "agent_1": lambda o: 1}
    assert strategy_agreement_rate(both_right, "coordination-game", episodes=3) == 1.0
    opposite = offcoord.evaluate({"agent_0": lambda o: 1, "agent_1": lambda o: 0}, "coordination-game", episodes=3)
    assert opposite.strategy_agreement_rate == 0.0 and opposite.normalized_mean == 0.0


def test_record_keeps_trajectories_and_ant_has_no_strategies():
    r = offcoord.evaluate(expert_policies("clockwise"), "reacher2-fo", episodes=2, record=True)
    assert r.trajectories[0]["states"].shape == (51, 10) and r.trajectories[0]["joint_actions"].shape == (50, 2)
    assert episode_strategies(r.trajectories[1]["states"], r.trajectories[1]["joint_actions"]) == r.strategies[1]
    if "ant-fo" in offcoord.list_envs():
        pytest.importorskip("offcoord.envs.ant")
        with pytest.raises(ValueError, match="defines no agent strategies"):
            strategy_agreement_rate({a: (lambda o: np.zeros(2, np.float32)) for a in ("agent_0", "agent_1", "agent_2", "agent_3")},
                                    "ant-fo", episodes=1, env_kwargs=None)


def test_dataset_agreement_of_the_expert_mixture(tmp_path):
    from offcoord.data import open_dataset
    from offcoord.data.cards import card_from_bytes, parse_card
    from offcoord.data.generate import generate

    card = parse_card(offcoord.registry.dataset_card("reacher2-expert-fo").path)
    text = card.path.read_text().replace("transitions = 1_000_000", "transitions = 2_000")
    text = text[: text.index("[expected]")]
    small = card_from_bytes(text.encode(), card.path)
    ds = open_dataset(generate(small, root=tmp_path, progress=False), small, "reacher2-expert-fo")
    assert dataset_strategy_agreement(ds) >= 0.95  # each expert team agrees with itself
    assert set(np.unique(ds.extras["strategy"])) == {0, 1}
