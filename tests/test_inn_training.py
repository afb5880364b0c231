"""The INN training experiment (issue 9): methods, seeds, bootstrap intervals, goals, caching, bad input."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from thesislib.experiments import EXPERIMENTS, inn_training
from thesislib.results import check_keys, ratio_key

pytest.importorskip("thesislib.data")


@pytest.fixture(scope="module")
def tiny():
    s = dataclasses.replace(inn_training.settings("smoke"), ratios=(1.0, 0.5), seeds=2, scratch_steps=2, ft_steps=1,
                            test_images=128, bootstrap=100,
                            methods=("discrete", "inn", "inn_aa", "slimmable", "posthoc", "inn_ft", "obs_ft"))
    return s, inn_training.run(s, seed=0)


def test_registered():
    assert EXPERIMENTS["inn_training"] is inn_training
    from thesislib.reproduce import NOTEBOOKS

    assert "inn_training" in NOTEBOOKS


def test_every_method_width_and_seed_is_recorded(tiny):
    s, result = tiny
    assert result.seeds == [0, 1] and result.methods == list(s.methods)
    for m in s.methods:
        for r in s.ratios:
            rows = [x for x in result.records if x["method"] == m and x["ratio"] == r]
            assert sorted(x["seed"] for x in rows) == [0, 1]
            mean = sum(x["accuracy"] for x in rows) / 2
            k = ratio_key(r)
            assert result.accuracy[m][k] == pytest.approx(mean)
            assert result.ci_low[m][k] <= result.accuracy[m][k] <= result.ci_high[m][k]
            assert result.spread[m][k] >= 0 and result.macs[m][k] > 0
    # every method has the same architecture at the same width: the same MACs
    assert len({result.macs[m]["r0_5"] for m in s.methods}) == 1
    assert result.macs["inn"]["r0_5"] < result.macs["inn"]["r1"]


def test_steps_and_passes(tiny):
    s, result = tiny
    assert result.total_steps["discrete"] == s.scratch_steps * len(s.ratios)  # one network per width
    assert result.total_steps["inn"] == result.total_steps["slimmable"] == s.scratch_steps
    assert result.passes["slimmable"] == s.scratch_steps * (2 + s.random_widths)  # sandwich: 4 widths a step
    assert result.total_steps["obs_ft"] == s.ft_steps * sum(r < 1 for r in s.ratios)
    assert result.total_steps["inn_ft"] == s.ft_steps
    assert all(result.step_seconds[m] > 0 for m in ("discrete", "inn", "slimmable", "inn_ft", "obs_ft"))
    assert result.step_ratio_inn == pytest.approx(result.step_seconds["inn"] / result.step_seconds["discrete"])


def test_goals_follow_their_definition(tiny):
    _, result = tiny
    acc = result.accuracy
    assert result.goals["full_width"] == (acc["inn"]["r1"] >= acc["discrete"]["r1"] - 0.005)
    assert result.goals["half_width"] == (acc["inn"]["r0_5"] >= acc["inn"]["r1"] - 0.01)
    assert result.goals["beats_slimmable"] == all(acc["inn"][k] >= acc["slimmable"][k] for k in ("r1", "r0_5"))
    assert result.goals["fine_tuning"] == (acc["inn_ft"]["r1"] >= acc["obs_ft"]["r1"]
                                           and acc["inn_ft"]["r0_5"] >= acc["obs_ft"]["r0_5"]
                                           and result.total_steps["inn_ft"] < result.total_steps["obs_ft"])
    assert result.goals_met == sum(result.goals.values())
    lines = inn_training.goal_lines(result)
    assert len(lines) == result.goals_total and all(("met" in line) for line in lines)
    for low, high in result.goal_intervals.values():
        assert low <= high


def test_result_is_json_with_plain_keys(tiny):
    _, result = tiny
    data = result.to_dict()
    check_keys(data)
    json.dumps(data)
    assert "correct" not in data


def test_cached_networks_give_the_same_numbers(tiny):
    s, result = tiny
    again = inn_training.run(s, seed=0)  # every network from checkpoints/ this time
    assert again.accuracy == result.accuracy
    assert again.step_seconds == result.step_seconds  # measured when trained, stored with the network


def test_posthoc_is_the_full_discrete_network(tiny):
    _, result = tiny
    assert result.accuracy["posthoc"]["r1"] == pytest.approx(result.accuracy["discrete"]["r1"], abs=2 / 128)


def test_inn_trained_is_a_full_width_continuous_net(tiny):
    from thesislib.continuous import ContinuousNet

    s, _ = tiny
    net = inn_training.inn_trained("smoke", seed=0)
    assert isinstance(net, ContinuousNet) and not net.training
    assert net.widths == net.full_widths
    with pytest.raises(ValueError, match="'scratch' or 'checkpoint'"):
        inn_training.inn_trained("smoke", start="pretrained")


def test_bad_input():
    with pytest.raises(ValueError, match="valid: discrete, inn"):
        inn_training.check_methods(["inn", "magic"])
    with pytest.raises(ValueError, match="valid:"):
        inn_training.run(dataclasses.replace(inn_training.settings("smoke"), methods=("nope",)))
    with pytest.raises(ValueError, match="unknown scale"):
        inn_training.settings("tpu")
    with pytest.raises(ValueError, match="ratios must include 1.0"):
        inn_training.run(dataclasses.replace(inn_training.settings("smoke"), ratios=(0.5,)))
    with pytest.raises(ValueError, match="part must be"):
        inn_training.plot_accuracy(None, part="both")  # type: ignore[arg-type]


def test_plots_and_tables(tiny):
    _, result = tiny
    for part in ("scratch", "finetune"):
        fig = inn_training.plot_accuracy(result, part)
        assert len(fig.axes) == 2
        rows = inn_training.accuracy_rows(result, part)
        assert rows[-1]["method"] == "MMAC"
    assert {r["method"] for r in inn_training.steps_rows(result)} == set(result.methods)
    assert torch.is_tensor(result.correct["inn"][1.0])
