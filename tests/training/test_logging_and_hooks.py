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
        def __init__(self, log_dir, **options):
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
    # The lists are read-only views of the one history.
    with pytest.raises(TypeError):
        t.grad_norms[0] = math.nan
    # Works on plain lists and with a non-finite norm in them.
    from types import SimpleNamespace

    plain = SimpleNamespace(
        train_losses=list(t.train_losses), val_losses=list(t.val_losses),
        learning_rates=list(t.learning_rates), grad_norms=[math.nan, *t.grad_norms[1:]],
    )  # fmt: skip
    assert plot_training_curves(plain).axes[2].get_yscale() == "log"


class _Recorder:
    """Records every hook with the trainer's counters; keeps a counter as its state."""

    def __init__(self):
        self.events, self.norms_before_step, self.calls = [], [], 0

    def _log(self, name, t):
        self.events.append((name, t.global_step, t.micro_batch))

    def on_train_start(self, t):
        self._log("train_start", t)

    def on_after_backward(self, t):
        self.calls += 1
        assert all(p.grad is not None for p in t.model.parameters())
        self._log("after_backward", t)

    def on_before_optimizer_step(self, t):
        grads = [p.grad.flatten() for p in t.model.parameters()]
        self.norms_before_step.append(float(torch.linalg.vector_norm(torch.cat(grads))))
        self._log("before_optimizer_step", t)

    def on_step_end(self, t):
        self._log("step_end", t)

    def on_log(self, t):
        self._log("log", t)

    def on_epoch_end(self, t):
        self._log("epoch_end", t)

    def on_train_end(self, t):
        self._log("train_end", t)

    def state_dict(self):
        return {"calls": self.calls}

    def load_state_dict(self, state):
        self.calls = state["calls"]


def test_hooks_order_micro_batches_and_final_gradients(make_model, digits_small):
    from torch.utils.data import DataLoader, TensorDataset

    X, y = digits_small
    loader = DataLoader(TensorDataset(X[:64], y[:64]), batch_size=16)  # 4 micro-batches
    m = make_model(dropout=0.0)
    rec = _Recorder()
    t = AdvancedTrainer(
        m, torch.optim.SGD(m.parameters(), lr=0.1), torch.nn.CrossEntropyLoss(),
        verbose=False, grad_accum_steps=2, log_interval=1, callbacks=[rec],
    )  # fmt: skip
    assert t.config.grad_accum_steps == 2
    t.train(loader, None, 1, max_grad_norm=0.05)
    names = [e[0] for e in rec.events]
    step = ["after_backward", "after_backward", "before_optimizer_step", "log", "step_end"]
    assert names == ["train_start", *step, *step, "epoch_end", "train_end"]
    # micro_batch is the index within the optimizer step; global_step counts applied steps.
    backward = [e[1:] for e in rec.events if e[0] == "after_backward"]
    assert backward == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert [e[1] for e in rec.events if e[0] == "step_end"] == [1, 2]
    # Gradients seen before the step are final: clipped to max_norm (measured norms larger).
    assert all(g > 0.05 for g in t.grad_norms)
    assert rec.norms_before_step == pytest.approx([0.05, 0.05], rel=1e-4)


def test_callback_state_is_saved_and_restored(make_model, make_loaders, tmp_path):
    train, val = make_loaders(64)
    m = make_model()
    rec = _Recorder()
    t = AdvancedTrainer(m, torch.optim.SGD(m.parameters(), lr=0.05), torch.nn.CrossEntropyLoss(),
                        verbose=False, callbacks=[rec])  # fmt: skip
    t.train(train, val, 1, checkpoint_dir=tmp_path)
    assert rec.calls == len(train)
    m2 = make_model()
    fresh = _Recorder()
    t2 = AdvancedTrainer(m2, torch.optim.SGD(m2.parameters(), lr=0.05),
                         torch.nn.CrossEntropyLoss(), verbose=False, callbacks=[fresh])  # fmt: skip
    t2.load_checkpoint(tmp_path / "last.pt")
    assert fresh.calls == len(train)
    t2.train(train, val, 2, checkpoint_dir=tmp_path, resume=True)
    assert fresh.calls == 2 * len(train)
