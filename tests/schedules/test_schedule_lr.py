"""ScheduleLR: a real torch LRScheduler driven by a closed-form schedule."""

from __future__ import annotations

import io
import warnings

import pytest
import torch
from torch.optim.lr_scheduler import LRScheduler

from optiscope.schedules import (
    CosineAnnealingScheduler,
    CosineAnnealingWarmRestarts,
    LinearWarmup,
    OneCycle,
    ScheduleLR,
    StepDecay,
    WarmupCosineSchedule,
    join,
)


def _two_group_optimizer(cls=torch.optim.SGD, **kw):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    groups = [
        {"params": model[0].parameters()},
        {"params": model[2].parameters(), "lr_scale": 0.1},
    ]
    return model, cls(groups, lr=1.0, **kw)


def _train(model, opt, sched, steps, seed=1):
    g = torch.Generator().manual_seed(seed)
    seen = []
    for _ in range(steps):
        x = torch.randn(16, 4, generator=g)
        y = torch.randn(16, 1, generator=g)
        seen.append([group["lr"] for group in opt.param_groups])
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()
        sched.step()
    return seen


class TestMultipleParamGroups:
    def test_is_a_torch_scheduler(self):
        _, opt = _two_group_optimizer()
        assert isinstance(ScheduleLR(opt, StepDecay()), LRScheduler)

    def test_lrs_equal_schedule_times_scale_at_every_step(self):
        model, opt = _two_group_optimizer()
        s = WarmupCosineSchedule(warmup_steps=5, total_steps=40, max_lr=0.05, min_lr=1e-4)
        sched = ScheduleLR(opt, s)
        seen = _train(model, opt, sched, 45)
        for k, (a, b) in enumerate(seen):
            assert a == s(k)
            assert b == s(k) * 0.1
        assert sched.get_last_lr() == [s(45), s(45) * 0.1]

    def test_one_schedule_per_group(self):
        model, opt = _two_group_optimizer()
        s0, s1 = StepDecay(0.1, 0.5, 3), CosineAnnealingWarmRestarts(0.2, 0.0, 4, 2)
        sched = ScheduleLR(opt, [s0, s1])
        seen = _train(model, opt, sched, 30)
        assert [a for a, _ in seen] == [s0(k) for k in range(30)]
        # lr_scale multiplies the group's own schedule too
        assert [b for _, b in seen] == [s1(k) * 0.1 for k in range(30)]

    def test_wrong_number_of_schedules(self):
        _, opt = _two_group_optimizer()
        with pytest.raises(ValueError, match="2 param groups"):
            ScheduleLR(opt, [StepDecay()])
        with pytest.raises(TypeError, match="schedule"):
            ScheduleLR(opt, lambda t: 0.1)
        with pytest.raises(TypeError, match="optimizer"):
            ScheduleLR(object(), StepDecay())

    def test_bad_lr_scale(self):
        p = torch.nn.Parameter(torch.zeros(1))
        opt = torch.optim.SGD([{"params": [p], "lr_scale": -1.0}], lr=0.1)
        with pytest.raises(ValueError, match="lr_scale"):
            ScheduleLR(opt, StepDecay())


class TestNoWarnings:
    def test_normal_loop_raises_no_warning(self):
        model, opt = _two_group_optimizer(torch.optim.AdamW)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            sched = ScheduleLR(
                opt, LinearWarmup(0.01, 5, after=CosineAnnealingScheduler(0.01, 0, 20))
            )
            _train(model, opt, sched, 10)
            sched.get_last_lr()
            sched.state_dict()


class TestNoHostSync:
    def test_step_makes_no_host_sync(self, host_syncs):
        model, opt = _two_group_optimizer(torch.optim.SGD, momentum=0.9)
        sched = ScheduleLR(opt, OneCycle(peak_lr=0.05, total_steps=50))
        x, y = torch.randn(8, 4), torch.randn(8, 1)
        with host_syncs() as counts:
            for _ in range(20):
                opt.zero_grad()
                torch.nn.functional.mse_loss(model(x), y).backward()
                opt.step()
                sched.step()
        assert sum(counts.values()) == 0, counts

    def test_tensor_lr_is_filled_in_place(self, host_syncs):
        # Optimizers with a tensor lr (capturable/compiled steps) keep the same tensor.
        p = torch.nn.Parameter(torch.ones(3))
        opt = torch.optim.Adam([p], lr=torch.tensor(1.0), foreach=False)
        lr_tensor = opt.param_groups[0]["lr"]
        s = CosineAnnealingWarmRestarts(0.1, 0.0, 4, 2)
        sched = ScheduleLR(opt, s)
        for _ in range(10):
            assert opt.param_groups[0]["lr"] is lr_tensor
            p.grad = torch.ones(3)
            opt.step()  # torch's non-capturable Adam reads a tensor lr with .item() itself
            with host_syncs() as counts:
                sched.step()
            assert sum(counts.values()) == 0, counts
        assert lr_tensor.item() == pytest.approx(s(10), rel=1e-6)  # float32 tensor


class TestStateDict:
    @pytest.mark.parametrize(
        "schedule",
        [
            WarmupCosineSchedule(5, 60, 0.05, 1e-4),
            OneCycle(peak_lr=0.05, total_steps=60),
            LinearWarmup(
                None, 4, start_lr=1e-3, after=CosineAnnealingWarmRestarts(0.05, 0.0, 5, 2)
            ),
        ],
        ids=["warmup_cosine", "one_cycle", "warmup_restarts"],
    )
    def test_resume_halfway_continues_identically(self, schedule):
        model, opt = _two_group_optimizer(torch.optim.SGD, momentum=0.9)
        sched = ScheduleLR(opt, schedule)
        full = _train(model, opt, sched, 60, seed=3)
        final = [p.detach().clone() for p in model.parameters()]

        model, opt = _two_group_optimizer(torch.optim.SGD, momentum=0.9)
        sched = ScheduleLR(opt, schedule)
        g = torch.Generator().manual_seed(3)
        first = []
        for _ in range(30):
            x, y = torch.randn(16, 4, generator=g), torch.randn(16, 1, generator=g)
            first.append([group["lr"] for group in opt.param_groups])
            opt.zero_grad()
            torch.nn.functional.mse_loss(model(x), y).backward()
            opt.step()
            sched.step()
        buf = io.BytesIO()
        torch.save(
            {"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict()}, buf
        )
        buf.seek(0)
        ckpt = torch.load(buf, weights_only=True)  # plain data only

        model2, opt2 = _two_group_optimizer(torch.optim.SGD, momentum=0.9)
        model2.load_state_dict(ckpt["model"])
        opt2.load_state_dict(ckpt["opt"])
        sched2 = ScheduleLR(opt2, schedule)
        sched2.load_state_dict(ckpt["sched"])
        assert sched2.last_epoch == 30
        assert sched2.get_last_lr() == sched.get_last_lr()
        rest = []
        for _ in range(30):
            x, y = torch.randn(16, 4, generator=g), torch.randn(16, 1, generator=g)
            rest.append([group["lr"] for group in opt2.param_groups])
            opt2.zero_grad()
            torch.nn.functional.mse_loss(model2(x), y).backward()
            opt2.step()
            sched2.step()
        assert first + rest == full
        for a, b in zip(model2.parameters(), final):
            assert torch.equal(a.detach(), b)

    def test_refuses_state_of_a_different_schedule(self):
        _, opt = _two_group_optimizer()
        state = ScheduleLR(opt, StepDecay(0.1, 0.5, 10)).state_dict()
        _, opt2 = _two_group_optimizer()
        other = ScheduleLR(opt2, StepDecay(0.1, 0.5, 20))
        with pytest.raises(ValueError, match="different schedule"):
            other.load_state_dict(state)
        with pytest.raises(ValueError, match="not a ScheduleLR state"):
            other.load_state_dict({"last_epoch": 3})

    def test_epoch_interval_semantics(self):
        # Stepped once per epoch, epoch e uses schedule(e).
        p = torch.nn.Parameter(torch.zeros(1))
        opt = torch.optim.SGD([p], lr=1.0)
        s = StepDecay(0.1, 0.5, 2)
        sched = ScheduleLR(opt, s)
        for epoch in range(6):
            assert opt.param_groups[0]["lr"] == s(epoch)
            for _ in range(3):  # batches
                opt.step()
            sched.step()


class TestDropIn:
    def test_inside_torch_sequential_lr(self):
        # torch's own composite restarts the second scheduler at the milestone.
        p = torch.nn.Parameter(torch.zeros(1))
        opt = torch.optim.SGD([p], lr=1.0)
        warm, cos = LinearWarmup(0.1, 5), CosineAnnealingScheduler(0.1, 0.0, 20)
        seq = torch.optim.lr_scheduler.SequentialLR(
            opt, [ScheduleLR(opt, warm), ScheduleLR(opt, cos)], milestones=[5]
        )
        expected = join([warm, cos], [5])
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            for k in range(25):
                assert opt.param_groups[0]["lr"] == pytest.approx(expected(k), rel=1e-15)
                opt.step()
                seq.step()
