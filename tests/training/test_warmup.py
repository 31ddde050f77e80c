"""schedule.warmup_epochs: linear warm-up, then the schedule over the remaining epochs."""

from __future__ import annotations

import math

import pytest
import torch

from mpsctl.errors import RecipeError
from mpsctl.recipe import recipe_from_dict
from mpsctl.training.optim import make_optimizer, make_schedule


def _lrs(name: str, epochs: int, steps: int, warmup: int, **kwargs) -> list[float]:
    """The learning rate used by each batch of the run."""
    opt = make_optimizer([torch.nn.Parameter(torch.zeros(1))], "SGD", 0.1)
    schedule = make_schedule(opt, name, epochs, steps, warmup_epochs=warmup, **kwargs)
    seen = []
    for _ in range(epochs * steps):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        if schedule is not None and schedule.per_step:
            schedule.scheduler.step()
    return seen


@pytest.mark.parametrize("name", ["none", "cosine", "step"])
def test_linear_warmup_comes_first(name):
    lrs = _lrs(name, epochs=5, steps=4, warmup=2, step_size=1, gamma=0.5)
    # 2 epochs x 4 batches: lr/8, 2lr/8, ..., lr
    assert lrs[:8] == pytest.approx([0.1 * (i + 1) / 8 for i in range(8)])
    assert lrs[8] == pytest.approx(0.1)  # the schedule starts at the full rate


def test_after_warmup_the_schedule_spans_the_remaining_epochs():
    cosine = _lrs("cosine", epochs=5, steps=4, warmup=2)
    rest = 12  # 3 epochs x 4 batches
    assert cosine[8:] == pytest.approx(
        [0.05 * (1 + math.cos(math.pi * t / rest)) for t in range(rest)]
    )
    step = _lrs("step", epochs=5, steps=4, warmup=2, step_size=1, gamma=0.5)
    assert step[8:] == pytest.approx([0.1] * 4 + [0.05] * 4 + [0.025] * 4)
    assert _lrs("none", epochs=5, steps=4, warmup=2)[8:] == pytest.approx([0.1] * 12)


def test_no_warmup_keeps_the_plain_schedule():
    assert _lrs("none", epochs=2, steps=3, warmup=0) == pytest.approx([0.1] * 6)
    cosine = _lrs("cosine", epochs=2, steps=3, warmup=0)
    assert cosine[0] == pytest.approx(0.1) and cosine[-1] < cosine[0]


def test_warmup_with_onecycle_is_refused():
    with pytest.raises(RecipeError, match="warmup_epochs: onecycle has its own warm-up"):
        recipe_from_dict({"model": {"name": "mnist_cnn"}, "finetune": {"optimizer": {
            "schedule": {"name": "onecycle", "warmup_epochs": 1}}}})


def test_scheduler_state_survives_a_save(tmp_path):
    opt = make_optimizer([torch.nn.Parameter(torch.zeros(1))], "Adam", 0.1)
    schedule = make_schedule(opt, "cosine", 4, 2, warmup_epochs=1)
    for _ in range(3):
        opt.step()
        schedule.scheduler.step()
    torch.save(schedule.scheduler.state_dict(), tmp_path / "s.pt")
    again = make_schedule(make_optimizer([torch.nn.Parameter(torch.zeros(1))], "Adam", 0.1),
                          "cosine", 4, 2, warmup_epochs=1)
    again.scheduler.load_state_dict(torch.load(tmp_path / "s.pt", weights_only=True))
    assert again.scheduler.last_epoch == 3
    assert again.scheduler.get_last_lr() == pytest.approx(schedule.scheduler.get_last_lr())
