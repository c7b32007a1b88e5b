"""Previews: describe() text, plots that return Figures and never block."""

from __future__ import annotations

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pytest

from optiscope.schedules import (
    SCHEDULES,
    CosineAnnealingWarmRestarts,
    LinearWarmup,
    OneCycle,
    Schedule,
    StepDecay,
    WarmupCosineSchedule,
    compare_schedules,
    describe,
    guide_schedules,
    plot_schedule,
)


def test_describe_warm_restarts():
    text = describe(CosineAnnealingWarmRestarts(0.1, 0.001, T_0=10, T_mult=2), 100)
    lines = text.splitlines()
    assert lines[0].startswith("CosineAnnealingWarmRestarts(") and "100 steps" in lines[0]
    assert "  peak: 0.1 at step 0" in lines
    assert "  restarts: steps 10, 30, 70" in lines
    s = CosineAnnealingWarmRestarts(0.1, 0.001, T_0=10, T_mult=2)
    low = int(np.argmin(s.values(100)))
    assert low == 69
    assert f"  minimum: {s(69):.6g} at step 69" in lines
    assert f"  last step 99: {s(99):.6g}" in lines


def test_describe_warmup_and_momentum():
    text = describe(WarmupCosineSchedule(10, 100, max_lr=0.1), 100)
    assert "  peak: 0.1 at step 10" in text.splitlines()
    assert "  warmup end: step 10" in text.splitlines()
    text = describe(OneCycle(peak_lr=0.1, total_steps=100), 100)
    assert "peak: 0.1 at step 29" in text
    assert "momentum: 0.85 .. 0.95" in text


def test_plot_returns_figure_and_marks_events(tmp_path):
    s = LinearWarmup(None, 10, after=CosineAnnealingWarmRestarts(0.1, 0.0, 10, 2))
    path = tmp_path / "s.png"
    fig = s.plot(100, path=str(path))
    assert isinstance(fig, matplotlib.figure.Figure)
    assert path.stat().st_size > 0
    ax = fig.axes[0]
    np.testing.assert_array_equal(ax.lines[0].get_ydata(), s.values(100))
    vlines = sorted(line.get_xdata()[0] for line in ax.lines[3:])
    assert vlines == [10, 20, 40, 80]  # warmup end, then restarts at 10, 30, 70 shifted by 10


def test_guide_plot_signatures_do_not_block(monkeypatch):
    monkeypatch.setattr(plt, "show", lambda *a, **k: pytest.fail("plt.show called"))
    assert isinstance(StepDecay().plot(epochs=50), matplotlib.figure.Figure)
    assert (
        len(LinearWarmup(0.001, 1000).plot(total_steps=5000).axes[0].lines[0].get_ydata()) == 5000
    )
    fig = WarmupCosineSchedule(warmup_steps=100, total_steps=1000).plot()
    assert len(fig.axes[0].lines[0].get_ydata()) == 1000


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_one_plot_signature_for_the_family(name):
    # No schedule overrides plot; what differs is data (default length, unit, title).
    assert SCHEDULES[name].plot is Schedule.plot, name


def test_plot_defaults_follow_the_guide_and_the_length():
    def drawn(fig):
        return len(fig.axes[0].lines[0].get_ydata()), fig.axes[0].get_xlabel()

    assert drawn(StepDecay().plot(marks=False)) == (100, "Epoch")  # the guide's epochs=100
    assert drawn(LinearWarmup().plot(marks=False)) == (5000, "Step")  # its total_steps=5000
    assert drawn(OneCycle(total_steps=40).plot(marks=False)) == (40, "Step")  # its length
    assert drawn(CosineAnnealingWarmRestarts().plot(12, marks=False)) == (12, "Epoch")
    assert StepDecay().plot(3).axes[0].get_title() == "Step Decay (drop=0.5, every 10 epochs)"
    with pytest.raises(TypeError, match="one of steps, epochs, total_steps"):
        StepDecay().plot(10, epochs=20)


def test_plot_into_given_axes_with_log_scale():
    fig, ax = plt.subplots()
    out = plot_schedule(StepDecay(), 30, ax=ax, yscale="log", marks=False)
    assert out is fig and ax.get_yscale() == "log" and len(ax.lines) == 1


def test_compare_schedules_default_is_the_guides_four(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fig = compare_schedules(epochs=100)
    assert list(tmp_path.iterdir()) == []  # nothing written without a path
    ax = fig.axes[0]
    assert [line.get_label() for line in ax.lines] == list(guide_schedules(100))
    assert ax.get_yscale() == "log"
    for line, s in zip(ax.lines, guide_schedules(100).values()):
        np.testing.assert_array_equal(line.get_ydata(), [s.get_lr(e) for e in range(100)])


def test_compare_any_dict_linear_with_path(tmp_path):
    path = tmp_path / "cmp.png"
    fig = compare_schedules(
        40, {"a": StepDecay(), "b": OneCycle(total_steps=40)}, yscale="linear", path=str(path)
    )
    assert path.exists() and fig.axes[0].get_yscale() == "linear"
    assert [line.get_label() for line in fig.axes[0].lines] == ["a", "b"]


def test_show_true_calls_show(monkeypatch):
    called = []
    monkeypatch.setattr(plt, "show", lambda *a, **k: called.append(1))
    StepDecay().plot(10, show=True)
    compare_schedules(10, show=True)
    assert called == [1, 1]
