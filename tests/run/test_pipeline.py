"""The pipeline's own additions to training cost no host syncs per step."""

from __future__ import annotations

import torch

from optiscope.run.build import build_components
from optiscope.run.config import parse_config
from optiscope.run.pipeline import seed_everything
from optiscope.run.train import EpochPrinter
from optiscope.run.trajectory import TrajectoryRecorder

CONFIG = """
[data]
batch_size = 256
[model]
hidden = [8]
[clipping]
name = "norm"
max_norm = 1.0
[train]
epochs = 2
nonfinite = "ignore"
"""


def _count(host_syncs, callbacks) -> dict:
    from optiscope.schedules import ScheduleLR
    from optiscope.training import AdvancedTrainer

    seed_everything(0)
    cfg = parse_config(CONFIG)
    comps = build_components(cfg)
    trainer = AdvancedTrainer(
        comps.model, comps.optimizer, comps.loss_fn, verbose=False, progress_bar=False,
        log_interval=1000, nonfinite="ignore", callbacks=callbacks,
    )  # fmt: skip
    scheduler = ScheduleLR(comps.optimizer, comps.schedule)
    with host_syncs() as counts:
        trainer.train(
            comps.train_loader, comps.val_loader, 2, scheduler=scheduler, max_grad_norm=None,
            clipper=comps.clipper,
        )  # fmt: skip
    return dict(counts), [p.detach().clone() for p in comps.model.parameters()]


def test_recorder_and_printer_add_no_host_syncs(host_syncs, tmp_path) -> None:
    lines: list[str] = []
    base, w_base = _count(host_syncs, [])
    with_cbs, w_cbs = _count(
        host_syncs, [TrajectoryRecorder(tmp_path / "traj"), EpochPrinter(lines.append, 2)]
    )
    assert with_cbs == base
    assert len(lines) == 2 and lines[0].startswith("  epoch   1/2  train loss ")
    assert len(list((tmp_path / "traj").glob("epoch_*.pt"))) == 3
    # ... and they do not change the training either.
    assert all(torch.equal(a, b) for a, b in zip(w_base, w_cbs))


def test_only_a_missing_optional_package_becomes_a_note() -> None:
    import pytest

    from optiscope.run.analyse import Analysis
    from optiscope.run.figures import FigureSpec
    from optiscope.run.pipeline import _guarded

    out, lines = Analysis(), []

    def ok() -> Analysis:
        return Analysis([FigureSpec("t", "c", "f.png")], {"x": 1.0}, ["n"], 2.0)

    def no_plotly() -> Analysis:
        import plotly_that_is_not_installed  # noqa: F401

        raise AssertionError("unreachable")

    _guarded(out, "curvature", lines.append, ok)
    _guarded(out, "loss landscape", lines.append, no_plotly)
    assert [f.title for f in out.figures] == ["t"] and out.numbers == {"x": 1.0}
    note = "loss landscape skipped: the plotly_that_is_not_installed package is not installed"
    assert out.notes == ["n", note]
    assert lines == [f"  {note}"]

    # A bug (ours, or in the user's model) is not a note: it propagates with its traceback.
    def bug() -> Analysis:
        raise ValueError("directions do not span a plane")

    def our_missing_module() -> Analysis:
        import optiscope.no_such_module  # noqa: F401

        raise AssertionError("unreachable")

    def interrupted() -> Analysis:
        raise KeyboardInterrupt

    for fn, kind in ((bug, ValueError), (our_missing_module, ModuleNotFoundError),
                     (interrupted, KeyboardInterrupt)):  # fmt: skip
        with pytest.raises(kind):
            _guarded(out, "curvature", lines.append, fn)
    assert len(out.notes) == 2
