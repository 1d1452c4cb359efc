"""method.lr_schedule: the Keras / hypercl step and plateau schedules, per task; plateau reads validation only."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from hyperdgm import config_check
from hyperdgm.data.benchmarks import Benchmark, Task, TaskData
from hyperdgm.errors import ConfigError
from hyperdgm.lr_schedule import LRSchedule
from hyperdgm.methods import build_method
from hyperdgm.methods.base import Method
from hyperdgm.scenarios import make_scenario
from hyperdgm.trainer import Trainer

from .helpers import assert_resume_equals_uninterrupted, quick_cfg


def keras_lr(epoch: int, lr: float = 1e-3) -> float:
    """``lr_schedule`` of the Keras CIFAR-10 ResNet example, as written there."""
    if epoch > 180:
        lr *= 0.5e-3
    elif epoch > 160:
        lr *= 1e-3
    elif epoch > 120:
        lr *= 1e-2
    elif epoch > 80:
        lr *= 1e-1
    return lr


def _opt(lr: float) -> torch.optim.Optimizer:
    return torch.optim.Adam([nn.Parameter(torch.zeros(2))], lr=lr)


def test_step_schedule_is_the_keras_formula():
    hnet, emb = _opt(1e-3), _opt(1e-4)  # both of HNET's optimizers, each from its own base lr
    s = LRSchedule("step")
    s.start([hnet, emb])
    lrs = []
    for _ in range(200):
        lrs.append(s.lrs)
        for opt in (hnet, emb):  # a training epoch, then the schedule
            opt.step()
        s.epoch_end()
    for e in (0, 80, 81, 100, 120, 121, 160, 161, 180, 181, 199):
        assert lrs[e][0] == pytest.approx(keras_lr(e), rel=1e-12), e
        assert lrs[e][1] == pytest.approx(keras_lr(e, 1e-4), rel=1e-12), e


def test_schedule_restarts_at_the_base_lr_with_each_task():
    """An optimizer kept across tasks (three-scenarios methods) does not carry the last task's decay."""
    opt = _opt(1e-3)
    s = LRSchedule({"name": "step", "milestones": [0, 1], "factors": [0.5, 0.1]})
    s.start([opt])
    for _ in range(2):
        opt.step()
        s.epoch_end()
    assert s.lrs == [pytest.approx(1e-4)]
    s.start([opt])
    assert s.lrs == [pytest.approx(1e-3)]


def test_plateau_reduces_after_patience_evaluations_without_improvement():
    opt = _opt(1e-3)
    s = LRSchedule({"name": "plateau", "patience": 3})
    s.start([opt])
    lrs = []
    for acc in (50.0, 60.0, 60.0, 59.0, 58.0, 70.0, 70.0, 70.0, 70.0):
        s.epoch_end(acc)
        lrs.append(s.lrs[0])
    down = 1e-3 * math.sqrt(0.1)
    # 60 improves; 60, 59, 58: three evaluations without improvement -> reduced after the third
    assert lrs[:4] == [pytest.approx(1e-3)] * 4 and lrs[4] == pytest.approx(down)
    # 70 improves, then three more without: reduced again
    assert lrs[5:8] == [pytest.approx(down)] * 3 and lrs[8] == pytest.approx(down * math.sqrt(0.1))
    floor = LRSchedule({"name": "plateau", "patience": 1, "min_lr": 5e-4})
    floor.start([opt])
    for _ in range(4):
        floor.epoch_end(1.0)
    assert floor.lrs == [pytest.approx(5e-4)]
    with pytest.raises(ValueError, match="validation"):
        floor.epoch_end(None)


@pytest.mark.parametrize("spec,match", [("cosine", "one of none, step, plateau"),
                                        ({"name": "step", "patience": 2}, "unknown parameter"),
                                        ({"name": "step", "milestones": [5, 1]}, "ascending"),
                                        ({"name": "plateau", "patience": 0}, "patience >= 1")])
def test_bad_schedule_is_one_clear_error(spec, match):
    with pytest.raises(ValueError, match=match):
        LRSchedule(spec)


# -- the trainer: plateau on the validation split, never the test split ------------------------------
class Scripted(Method):
    """A method whose accuracy after ``k`` finished epochs is scripted per split: val sample ``i`` (pixel
    value ``i``) and test sample ``i`` (pixel ``100 + i``) are right iff ``i < script[k]``."""

    name = "scripted"
    scenarios = frozenset({"cl1"})
    lr_schedulable = True

    def __init__(self, val_script: list[int], test_script: list[int]) -> None:
        super().__init__({"lr_schedule": {"name": "plateau", "patience": 2}})
        self.scripts = {"val": val_script, "test": test_script}
        self.w = nn.Parameter(torch.zeros(1))

    def begin_task(self, task) -> None:
        super().begin_task(task)
        self.opt = torch.optim.SGD([self.w], lr=0.1)
        self.steps, self.per_epoch = 0, self.task_schedule(task)[1]

    def scheduled_optimizers(self):
        return [self.opt]

    def step(self, x, y, task_id):
        self.steps += 1
        return {"loss": torch.zeros(())}

    @torch.no_grad()
    def predict(self, x, task_id=None):
        pix = (x[:, 0, 0, 0] * 255).round().long()
        split = "val" if bool((pix < 100).all()) else "test"
        right = (pix % 100) < self.scripts[split][self.steps // self.per_epoch]
        return torch.stack([right.float(), (~right).float()], 1)  # every label is 0

    def param_counts(self):
        return {"trainable": 1, "target": 1, "compression_ratio": 1.0}


def _scripted_benchmark(with_val: bool = True) -> Benchmark:
    pixels = torch.cat([torch.full((20,), 200), torch.arange(10), 100 + torch.arange(10)]).to(torch.uint8)
    x = pixels.view(-1, 1, 1, 1).expand(-1, 1, 2, 2).contiguous()
    zeros = torch.zeros(10, dtype=torch.long)
    task = Task(id=0, name="scripted", classes=[0, 1],
                train=TaskData(x, torch.zeros(20, dtype=torch.long), torch.arange(20)),
                val=TaskData(x, zeros, torch.arange(20, 30)) if with_val else None,
                test=TaskData(x, zeros, torch.arange(30, 40)), input_shape=(1, 2, 2), permutation=None,
                dataset="mnist", normalize="unit", pad=None, augment=False)
    return Benchmark(name="scripted", tasks=[task], n_classes_per_task=[2], seed=0)


def _final_lr(val_script: list[int], test_script: list[int]) -> tuple[float, float]:
    m = Scripted(val_script, test_script)
    tr = Trainer(m, _scripted_benchmark(), make_scenario("cl1", [2]), seed=0,
                 cfg={"epochs": 5, "batch_size": 10, "progress": False, "checkpoint": False})
    res = tr.fit()
    return m.opt.param_groups[0]["lr"], res.R[0, 0]


def test_plateau_follows_validation_accuracy_not_test():
    """5 epochs, patience 2: four epoch ends (none after the last). Where validation stalls and test
    rises, the lr falls after the third; where validation rises and test stalls, it stays."""
    lr, final_test = _final_lr(val_script=[0, 5, 5, 5, 5, 5], test_script=[0, 1, 2, 3, 4, 6])
    assert lr == pytest.approx(0.1 * math.sqrt(0.1))
    assert final_test == pytest.approx(60.0)  # R itself still comes from the test split
    lr, _ = _final_lr(val_script=[0, 1, 2, 3, 4, 6], test_script=[0, 5, 5, 5, 5, 5])
    assert lr == pytest.approx(0.1)


def test_plateau_without_a_validation_split_is_refused(data_root, tmp_path):
    with pytest.raises(ConfigError, match="plateau follows validation accuracy: set benchmark.val_size"):
        Trainer(Scripted([0], [0]), _scripted_benchmark(with_val=False), make_scenario("cl1", [2]),
                cfg={"progress": False})
    with pytest.raises(ConfigError, match="plateau follows validation accuracy: set benchmark.val_size"):
        config_check.validate(quick_cfg(data_root, tmp_path, "method.lr_schedule=plateau"))
    config_check.validate(quick_cfg(data_root, tmp_path, "method.lr_schedule=plateau", "benchmark.val_size=50"))
    with pytest.raises(ValueError, match="dgm has no optimizer"):  # a ConfigError (exit 2) in a run
        build_method({"name": "dgm", "lr_schedule": "step"})


# -- resume ---------------------------------------------------------------------------------------------
# quick_cfg: 600 training samples, batch 64 -> 10 iterations per epoch, 6 epochs per task
STEP = "method.lr_schedule={name:step,milestones:[1,3],factors:[0.5,0.1]}"


def test_resume_equals_uninterrupted_with_a_step_schedule_on_a_kept_optimizer(data_root, tmp_path):
    assert_resume_equals_uninterrupted(data_root, tmp_path, "method=finetune", "+method.keep_optimizer=true",
                                       "scenario=cl1", "tracking=none", STEP)


def test_resume_equals_uninterrupted_with_a_plateau_schedule_on_hnet(data_root, tmp_path):
    assert_resume_equals_uninterrupted(
        data_root, tmp_path, "method=hnet", "scenario=cl1", "tracking=none", "benchmark.val_size=100",
        "method.lr_schedule={name:plateau,patience:1}", "method.hnet.chunk_size=4000", "method.hnet.hidden=[20]",
        "method.hnet.chunk_emb_size=16", "method.hnet.task_emb_size=16")
