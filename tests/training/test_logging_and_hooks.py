"""metrics.csv/jsonl, callbacks, the progress bar, TensorBoard and the curves figure."""

from __future__ import annotations

import csv
import json
import math

import matplotlib.figure
import pytest
import torch

from optiscope import AdvancedTrainer, plot_training_curves


def _run(make_model, make_loaders, tmp_path, **kwargs):
    m = make_model()
    opt = torch.optim.SGD(m.parameters(), lr=0.05)
    sch = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    train, val = make_loaders(64)  # 5 batches per epoch
    t = AdvancedTrainer(
        m,
        opt,
        torch.nn.CrossEntropyLoss(),
        verbose=False,
        run_dir=tmp_path,
        log_interval=2,
        **kwargs,
    )
    t.train(train, val, 2, scheduler=sch, scheduler_interval="epoch", max_grad_norm=0.2)
    return t


def test_metrics_files_hold_what_the_trainer_recorded(make_model, make_loaders, tmp_path):
    t = _run(make_model, make_loaders, tmp_path)
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    steps = [r for r in rows if r["kind"] == "step"]
    epochs = [r for r in rows if r["kind"] == "epoch"]
    assert [float(r["loss"]) for r in steps] == pytest.approx(t.step_losses, rel=1e-12)
    assert [float(r["grad_norm"]) for r in steps] == pytest.approx(t.grad_norms, rel=1e-12)
    assert [float(r["lr"]) for r in steps] == [0.05] * 5 + [0.025] * 5
    assert [r["clipped"] == "True" for r in steps] == [g > 0.2 for g in t.grad_norms]
    assert [float(r["val_loss"]) for r in epochs] == pytest.approx(t.val_losses)
    assert [float(r["train_loss"]) for r in epochs] == pytest.approx(t.train_losses)
    lines = [json.loads(x) for x in open(tmp_path / "metrics.jsonl")]
    assert [x["grad_norm"] for x in lines if x["kind"] == "step"] == pytest.approx(t.grad_norms)
    assert [x["val_accuracy"] for x in lines if x["kind"] == "epoch"] == t.val_accuracies


def test_callbacks_see_each_epoch(make_model, make_loaders, tmp_path):
    class Snapshots:
        def __init__(self):
            self.events, self.weights = [], []

        def on_train_start(self, trainer):
            self.events.append("start")
            self.weights.append(trainer.model[0].weight.detach().clone())

        def on_epoch_end(self, trainer):
            self.events.append(f"epoch{trainer.epoch}")
            self.weights.append(trainer.model[0].weight.detach().clone())

        def on_train_end(self, trainer):
            self.events.append("end")

    cb = Snapshots()
    t = _run(make_model, make_loaders, tmp_path, callbacks=[cb])
    assert cb.events == ["start", "epoch1", "epoch2", "end"]
    assert torch.equal(cb.weights[-1], t.model[0].weight)
    assert not torch.equal(cb.weights[0], cb.weights[1])


def test_progress_bar_shows_loss_lr_and_norm(make_model, make_loaders, tmp_path, capsys):
    _run(make_model, make_loaders, tmp_path, progress_bar=True)
    err = capsys.readouterr().err
    assert "epoch 2/2" in err and "grad_norm=" in err and "lr=" in err and "loss=" in err


def test_tensorboard_scalars(make_model, make_loaders, tmp_path):
    pytest.importorskip("tensorboard")
    _run(make_model, make_loaders, tmp_path, tensorboard=True)
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))


def test_tensorboard_scalars_match_the_history(make_model, make_loaders, tmp_path, monkeypatch):
    # A stand-in SummaryWriter, so the logging path is checked without tensorboard.
    import sys
    import types

    calls = []

    class FakeWriter:
        def __init__(self, log_dir):
            calls.append(("init", log_dir))

        def add_scalar(self, tag, value, step):
            calls.append((tag, value, step))

        def flush(self):
            pass

        def close(self):
            calls.append(("close",))

    fake = types.ModuleType("torch.utils.tensorboard")
    fake.SummaryWriter = FakeWriter
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", fake)
    t = _run(make_model, make_loaders, tmp_path, tensorboard=True)
    assert calls[0] == ("init", str(tmp_path / "tensorboard")) and calls[-1] == ("close",)
    norms = [(v, s) for tag, v, s in (c for c in calls if len(c) == 3) if tag == "train/grad_norm"]
    assert norms == [(g, i) for i, g in enumerate(t.grad_norms)]
    val = [v for tag, v, s in (c for c in calls if len(c) == 3) if tag == "epoch/val_loss"]
    assert val == t.val_losses


def test_tensorboard_missing_is_a_clear_error(make_model, make_loaders, tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name.startswith("torch.utils.tensorboard"):
            raise ImportError("no tensorboard")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(ImportError, match="optiscope\\[tensorboard\\]"):
        _run(make_model, make_loaders, tmp_path, tensorboard=True)


def test_training_curves_figure(make_model, make_loaders, tmp_path):
    t = _run(make_model, make_loaders, tmp_path)
    fig = t.plot_training_curves(path=tmp_path / "curves.png")
    assert isinstance(fig, matplotlib.figure.Figure) and (tmp_path / "curves.png").exists()
    ax = fig.axes[0]
    assert list(ax.lines[0].get_ydata()) == t.train_losses
    assert list(fig.axes[1].lines[0].get_ydata()) == t.learning_rates
    assert list(fig.axes[2].lines[0].get_ydata()) == t.grad_norms
    # Works on plain lists and with a non-finite norm in them.
    t.grad_norms[0] = math.nan
    assert plot_training_curves(t).axes[2].get_yscale() == "log"
