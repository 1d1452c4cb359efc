"""Scenario label/head mapping and the refusal of impossible combinations."""
import pytest
import torch

from hyperdgm.methods import build_method
from hyperdgm.scenarios import ScenarioError, make_scenario

K = (2, 2, 2)  # three tasks of two classes


def test_outputs_per_scenario():
    assert make_scenario("cl1", K).n_outputs() == 6  # multi-head: one 2-way head per task
    assert make_scenario("cl2", K).n_outputs() == 2  # shared head
    assert make_scenario("cl3", K).n_outputs() == 6  # every class
    assert make_scenario("cil", (1,) * 10).n_outputs() == 10


def test_heads_and_targets():
    logits = torch.arange(6.0).repeat(4, 1)  # [4, 6], column c holds value c
    y = torch.tensor([0, 1, 1, 0])
    cl1 = make_scenario("cl1", K)
    assert cl1.head(logits, 2, 3).tolist()[0] == [4.0, 5.0]  # task 2's head
    assert torch.equal(cl1.target(y, 2), y)
    cl2 = make_scenario("cl2", K)
    assert cl2.head(logits, 2, 3).shape == (4, 6)  # a cl2 net has only the shared head
    assert torch.equal(cl2.target(y, 2), y)
    cl3 = make_scenario("cl3", K)
    assert cl3.head(logits, 0, 2).tolist()[0] == [0.0, 1.0, 2.0, 3.0]  # classes seen after 2 tasks
    assert cl3.target(y, 1).tolist() == [2, 3, 3, 2]
    with pytest.raises(ScenarioError):
        cl1.head(logits, None, 3)


def test_uneven_tasks_offsets():
    s = make_scenario("cl3", (10, 10, 5))
    assert s.offsets == (0, 10, 20)
    assert s.target(torch.tensor([4]), 2).item() == 24


def test_bad_combinations_refused():
    with pytest.raises(ScenarioError, match="does not support scenario 'cl1'"):
        make_scenario("cl1", K).check("only3", {"cl3"})
    with pytest.raises(ScenarioError, match="at least 2 classes"):
        make_scenario("cl2", (1,) * 10).check("finetune", {"cl2"})
    with pytest.raises(ScenarioError, match="unknown scenario"):
        make_scenario("cl4", K)
    with pytest.raises(ValueError, match="unknown method"):
        build_method({"name": "nope"})
