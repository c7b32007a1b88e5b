"""LR range test: the schedule of learning rates, the smoothing, the rules, restore."""

from __future__ import annotations

import copy
import math
import random

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from scipy.ndimage import gaussian_filter1d

from optiscope import AdvancedTrainer, LRFindResult, lr_find
from optiscope.batch_loss import FunctionLoss
from optiscope.training._lr_find import smooth_losses, suggest


def _state(model, opt):
    return (
        [p.detach().clone() for p in model.parameters()],
        {k: v.clone() for k, v in model.state_dict().items()},
        copy.deepcopy(opt.state_dict()),
    )


def _trained_adam(make_model, make_loaders):
    model = make_model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    train, _ = make_loaders(32)
    for x, y in list(train)[:3]:  # some optimizer state worth restoring
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    model.eval()  # a mode to restore, too
    return model, opt, train


def _scripted(values):
    """A model and a BatchLoss whose losses are ``values``, one per call."""
    model = torch.nn.Linear(1, 1)
    it = iter(values)
    return model, FunctionLoss(lambda m, b: m.weight.sum() * 0.0 + next(it))


def test_values_and_restore(make_model, make_loaders):
    model, opt, train = _trained_adam(make_model, make_loaders)
    params, _, opt_state = _state(model, opt)
    torch.manual_seed(5)
    random.seed(5)
    expected_next = torch.rand(3)
    torch.manual_seed(5)
    res = lr_find(
        model, opt, torch.nn.CrossEntropyLoss(), train, start_lr=1e-5, end_lr=1.0, num_iter=25
    )
    assert isinstance(res, LRFindResult)
    # Restored exactly: parameters, mode, optimizer state (lr, moments, step), RNG.
    assert all(torch.equal(a, b) for a, b in zip(params, model.parameters()))
    assert not model.training
    assert opt.param_groups[0]["lr"] == 1e-3
    saved = opt.state_dict()["state"]
    for k, v in opt_state["state"].items():
        assert all(torch.equal(v[n], saved[k][n]) for n in v)
    assert torch.equal(torch.rand(3), expected_next)
    # Geometric learning rates from start to end.
    n = len(res.lrs)
    ref_lrs = [1e-5 * (1.0 / 1e-5) ** (i / 24) for i in range(n)]
    assert res.lrs == pytest.approx(ref_lrs, rel=1e-12)
    # The rules read the smoothed curve; suggestion_min is the min/10 rule.
    i_min = int(np.argmin(res.losses))
    assert res.suggestion_min == pytest.approx(res.lrs[i_min] / 10)
    assert res.suggestions["min/10"] == res.suggestion_min
    assert res.rule == "steepest" and res.suggestion == res.suggestions["steepest"]
    assert res.lrs[0] <= res.suggestion <= res.lrs[-1]


def test_smoothing_matches_scipy_inside_and_hand_values_at_the_ends():
    rng = np.random.default_rng(0)
    v = rng.normal(size=80).cumsum()
    ours = np.asarray(smooth_losses(list(v), sigma=3.0))
    # Away from the ends the kernel fits inside: scipy's Gaussian filter (truncated far
    # enough that the cut tails are below 1e-12).
    ref = gaussian_filter1d(v, 3.0, truncate=8.0)
    assert ours[25:55] == pytest.approx(ref[25:55], rel=1e-9, abs=1e-9)
    # At the ends the kernel is renormalised over the points that exist. By hand, for a
    # spike [0, 0, 3, 0, 0] and sigma 1: the weights are exp(-d^2 / 2), d = 0, 1, 2, ...
    spike = smooth_losses([0.0, 0.0, 3.0, 0.0, 0.0], sigma=1.0)
    w0, w1, w2 = 1.0, 0.6065306597126334, 0.1353352832366127
    w3, w4 = 0.011108996538242306, 0.00033546262790251185
    assert spike[2] == pytest.approx(3 * w0 / (w0 + 2 * w1 + 2 * w2), rel=1e-12)
    assert spike[0] == pytest.approx(3 * w2 / (w0 + w1 + w2 + w3 + w4), rel=1e-12)
    assert spike[1] == pytest.approx(3 * w1 / (w1 + w0 + w1 + w2 + w3), rel=1e-12)
    # Zero phase: a symmetric input gives a symmetric output, a constant stays constant.
    assert spike == pytest.approx(spike[::-1], rel=1e-12)
    assert smooth_losses([2.5] * 7, sigma=2.0) == pytest.approx([2.5] * 7, rel=1e-12)


def test_smoothing_leaves_out_non_finite_points():
    out = smooth_losses([1.0, 1.0, 1.0, float("inf")], sigma=1.0)
    assert out[:3] == pytest.approx([1.0, 1.0, 1.0]) and math.isnan(out[3])


def _sigmoid_curve(n=100, fastest=-3.0, rise=-1.0, low=-7):
    lrs = list(np.logspace(low, 1, n))
    x = np.log10(lrs)
    losses = 2.0 - 1.0 / (1 + np.exp(-4 * (x - fastest))) + np.where(x > rise, (x - rise) ** 2, 0)
    return lrs, list(losses)


@pytest.mark.parametrize("fastest", [-4.0, -3.0, -2.0])
def test_steepest_rule_finds_the_fastest_fall(fastest):
    # At the pace of lr_find's defaults (1e-7 to 10 in 100 steps) the rule reads the curve
    # as it is: the grid point nearest the fastest fall.
    lrs, losses = _sigmoid_curve(fastest=fastest, rise=fastest + 1.5)
    out = suggest(lrs, losses, "exp")
    step = 8 / 99  # decades between two points
    assert abs(math.log10(out["steepest"]) - fastest) <= step / 2 + 1e-9
    # The curve's minimum, in closed form, is where the rise's slope 2 (x - rise) meets
    # the sigmoid's; numerically it is the grid point of least loss.
    assert out["min/10"] == pytest.approx(lrs[int(np.argmin(losses))] / 10, rel=1e-12)


@pytest.mark.parametrize(("n", "low"), [(200, -7), (100, -6), (60, -5)])
def test_steepest_rule_reads_other_paces_at_the_default_pace(n, low):
    # A test growing the rate by r per step has done about r / (r - 1) steps of training
    # at the current rate; the rule rescales to the default pace r0 = 10 ** (8 / 99).
    lrs, losses = _sigmoid_curve(n=n, fastest=-3.0, rise=-1.5, low=low)
    r, r0 = lrs[1] / lrs[0], 10 ** (8 / 99)
    nearest = lrs[int(np.argmin(np.abs(np.log10(lrs) + 3.0)))]  # the sigmoid's fastest fall
    steepest = suggest(lrs, losses, "exp")["steepest"]
    assert steepest == pytest.approx(nearest * (r / (r - 1)) / (r0 / (r0 - 1)), rel=1e-12)


def test_steepest_rule_on_a_linear_schedule_uses_the_slope_per_unit_lr():
    lrs = list(np.linspace(0.01, 1.0, 100))
    # Loss 1 - tanh((lr - 0.3) / 0.05), rising after 0.6: falls fastest at lr = 0.3.
    losses = [1 - math.tanh((lr - 0.3) / 0.05) + max(0.0, lr - 0.6) ** 2 * 50 for lr in lrs]
    out = suggest(lrs, losses, "linear")
    assert abs(out["steepest"] - 0.3) <= 0.01 / 2 + 1e-9


def test_valley_rule_on_a_known_longest_descent():
    # Indices 0..19 rise from 0 to 0.1, 20..60 fall from 10 to 1, 61.. rise to 20: the
    # longest decreasing subsequence is 20..60 (41 points). fastai's valley: start =
    # end - length = 19, sections = (60 - 19) / 3, index = 19 + int(13.67) + int(6.83).
    losses = (
        list(np.linspace(0, 0.1, 20)) + list(np.linspace(10, 1, 41)) + list(np.linspace(2, 20, 19))
    )
    lrs = list(np.logspace(-6, 1, len(losses)))
    assert suggest(lrs, losses, "exp")["valley"] == lrs[19 + 13 + 6]


def test_valley_rule_leaves_out_the_first_tenth_as_fastai_does():
    # A descent in the first tenth (100 -> 91) is longer than the one at 40..47, but
    # fastai reads lrs[n // 10 : -5]: the valley lies in the later run.
    losses = [100.0 - i for i in range(10)] + [float(i) for i in range(10, 95)]
    losses[40:48] = [300.0 - k for k in range(8)]
    losses += [1000.0 + i for i in range(5)]
    lrs = list(np.logspace(-6, 1, len(losses)))
    index = lrs.index(suggest(lrs, losses, "exp")["valley"])
    assert 40 <= index <= 48


def test_a_rising_curve_has_no_steepest_point_and_falls_back_to_min_over_10():
    lrs = list(np.logspace(-3, 0, 30))
    losses = list(np.linspace(1.0, 3.0, 30))
    out = suggest(lrs, losses, "exp")
    assert out["steepest"] is None and out["min/10"] == pytest.approx(1e-4)
    model, bl = _scripted(losses)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    res = lr_find(model, opt, bl, [torch.zeros(1, 1)], start_lr=1e-3, end_lr=1.0, num_iter=30,
                  smooth_f=0.0, diverge_th=100.0)  # fmt: skip
    assert res.rule == "min/10" and res.suggestion == pytest.approx(1e-4)


def test_too_few_points_give_no_suggestion():
    assert suggest([1e-3, 1e-2], [1.0, 0.5], "exp") == dict.fromkeys(
        ("steepest", "valley", "min/10")
    )


def test_rule_chooses_the_suggestion(make_model, make_loaders):
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    train, _ = make_loaders(32)
    for rule in ("valley", "min/10"):
        res = lr_find(model, opt, torch.nn.CrossEntropyLoss(), train, num_iter=40, rule=rule)
        assert res.rule == rule and res.suggestion == res.suggestions[rule]


def test_stops_at_the_first_diverged_point_with_chunked_checks():
    # With smooth_f = 0 the running average is the loss itself: 1.0 for 14 steps, then
    # 9.0 > 5 x 1.0 at step 15 (not a multiple of the host-copy interval of 10).
    values = [1.0] * 15 + [9.0] + [1.0] * 30
    model, bl = _scripted(values)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    res = lr_find(model, opt, bl, [torch.zeros(1, 1)], num_iter=40, smooth_f=0.0)
    assert res.diverged and res.raw_losses == values[:16] and len(res.lrs) == 16


def test_stops_when_the_loss_diverges(make_model, make_loaders):
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    train, _ = make_loaders(32)
    res = lr_find(
        model, opt, torch.nn.CrossEntropyLoss(), train, start_lr=1e-3, end_lr=1e6, num_iter=60
    )
    assert res.diverged and len(res.lrs) < 60
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_host_copies_once_per_ten_steps(make_model, make_loaders, host_syncs):
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    train, _ = make_loaders(32)
    batches = list(train)  # a list: no sampler drawing indices through .tolist()
    with host_syncs() as counts:
        res = lr_find(model, opt, torch.nn.CrossEntropyLoss(), batches, start_lr=1e-5,
                      end_lr=1e-2, num_iter=40)  # fmt: skip
    assert len(res.lrs) == 40
    assert counts["tolist"] == 4 and sum(counts.values()) <= 8, counts


def test_restores_on_error(make_model, make_loaders):
    model, opt, train = _trained_adam(make_model, make_loaders)
    params, _, _ = _state(model, opt)
    calls = []

    def loss_fn(out, y):
        calls.append(1)
        if len(calls) == 4:
            raise RuntimeError("boom")
        return torch.nn.functional.cross_entropy(out, y)

    with pytest.raises(RuntimeError, match="boom"):
        lr_find(model, opt, loss_fn, train, num_iter=10)
    assert all(torch.equal(a, b) for a, b in zip(params, model.parameters()))
    assert opt.param_groups[0]["lr"] == 1e-3


def test_dict_batches_and_a_model_that_computes_its_loss():
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(3, 2)

        def forward(self, x, labels):
            return {"loss": torch.nn.functional.cross_entropy(self.fc(x), labels)}

    torch.manual_seed(0)
    net = Net()
    batches = [{"x": torch.randn(8, 3), "labels": torch.randint(0, 2, (8,))} for _ in range(4)]
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    res = lr_find(net, opt, None, batches, num_iter=20)
    assert len(res.raw_losses) == 20 and all(math.isfinite(v) for v in res.raw_losses)
    # The first loss is the model's own loss on the first batch, before any update.
    first = torch.nn.functional.cross_entropy(net.fc(batches[0]["x"]), batches[0]["labels"])
    assert res.raw_losses[0] == pytest.approx(float(first.detach()), rel=1e-6)


def test_trainer_method_and_plot(make_model, make_loaders, tmp_path):
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    train, _ = make_loaders(32)
    t = AdvancedTrainer(model, opt, torch.nn.CrossEntropyLoss(), verbose=False)
    res = t.lr_find(train, num_iter=40, mode="linear", start_lr=1e-4, end_lr=2.0)
    assert res.lrs[1] - res.lrs[0] == pytest.approx((2.0 - 1e-4) / 39)
    fig = res.plot(path=tmp_path / "lr.png")
    assert (tmp_path / "lr.png").exists() and fig.axes[0].get_xscale() == "linear"
    assert t.global_step == 0 and opt.param_groups[0]["lr"] == 0.1


def test_plot_marks_and_names_the_suggestion(make_model, make_loaders):
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    train, _ = make_loaders(32)
    res = lr_find(model, opt, torch.nn.CrossEntropyLoss(), train, num_iter=40)
    ax = res.plot().axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert f"suggestion (steepest): {res.suggestion:.2e}" in labels
    assert any(name in label for label in labels for name in ("valley", "min/10"))
    marked = [ln.get_xdata()[0] for ln in ax.get_lines() if ln.get_label().startswith("sugg")]
    assert marked == [res.suggestion] and "steepest" in ax.get_title()


def test_an_iterator_that_runs_out_is_a_value_error():
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    batches = iter([(torch.randn(4, 2), torch.randint(0, 2, (4,)))] * 3)
    with pytest.raises(ValueError, match="train_loader ran out"):
        lr_find(model, opt, torch.nn.CrossEntropyLoss(), batches, num_iter=5)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_empty_loader_is_a_value_error():
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="empty"):
        lr_find(model, opt, torch.nn.CrossEntropyLoss(), [], num_iter=5)


def _call(**kwargs):
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    data = [(torch.randn(4, 2), torch.randint(0, 2, (4,)))]
    args = {"model": model, "optimizer": opt, "loss_fn": torch.nn.CrossEntropyLoss(),
            "train_loader": data, "num_iter": 3} | kwargs  # fmt: skip
    return lr_find(**args)


@settings(max_examples=25, deadline=None)
@given(
    start=st.floats(-10, 10),
    end=st.floats(-10, 100),
    num_iter=st.integers(-3, 3),
    mode=st.sampled_from(["exp", "linear", "cos", ""]),
)
def test_bad_values_are_value_errors(start, end, num_iter, mode):
    ok = start > 0 and end > start and num_iter >= 2 and mode in ("exp", "linear")
    kwargs = {"start_lr": start, "end_lr": end, "num_iter": num_iter, "mode": mode}
    if ok:
        assert len(_call(**kwargs).lrs) <= num_iter
    else:
        with pytest.raises(ValueError, match="start_lr|end_lr|num_iter|mode"):
            _call(**kwargs)


@settings(max_examples=25, deadline=None)
@given(
    name=st.sampled_from(["smooth_f", "diverge_th", "rule", "start_lr", "end_lr"]),
    value=st.one_of(st.floats(allow_nan=True), st.sampled_from(["steep", "valley", "min"])),
)
def test_each_bad_value_names_its_parameter(name, value):
    # A finite end_lr near float32's max overflows inside the optimizer's own arithmetic,
    # which is torch's behaviour, not an argument check.
    assume(not (name == "end_lr" and isinstance(value, float) and 1e6 < value < math.inf))
    valid = {
        "smooth_f": isinstance(value, float) and 0 <= value < 1,
        "diverge_th": isinstance(value, float) and 1 < value < math.inf,
        "rule": value in ("valley",),
        "start_lr": isinstance(value, float) and 0 < value < 10,
        "end_lr": isinstance(value, float) and 1e-7 < value < math.inf,
    }[name]
    if valid:
        _call(**{name: value})
        return
    kind = TypeError if isinstance(value, str) != (name == "rule") else ValueError
    with pytest.raises(kind, match=name):
        _call(**{name: value})


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("model", "net"),
        ("optimizer", None),
        ("loss_fn", 3),
        ("start_lr", "1e-3"),
        ("end_lr", True),
        ("num_iter", 10.0),
        ("mode", 1),
        ("smooth_f", None),
        ("rule", None),
    ],
)
def test_wrong_kinds_are_type_errors_naming_the_parameter(name, value):
    with pytest.raises(TypeError, match=name):
        _call(**{name: value})


def test_a_batch_the_loss_cannot_read_is_a_type_error():
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(TypeError, match="labels"):
        lr_find(model, opt, torch.nn.CrossEntropyLoss(), [{"x": torch.randn(4, 2)}], num_iter=3)
