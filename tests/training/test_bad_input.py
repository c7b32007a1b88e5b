"""Bad settings are clear errors before any training happens."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader, TensorDataset

from optiscope import AdvancedTrainer

_DATA = TensorDataset(torch.randn(16, 4), torch.randint(0, 3, (16,)))


def _trainer(**kwargs):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    return AdvancedTrainer(
        model,
        torch.optim.SGD(model.parameters(), lr=0.1),
        torch.nn.CrossEntropyLoss(),
        verbose=False,
        **kwargs,
    )


@settings(max_examples=30, deadline=None)
@given(
    precision=st.sampled_from(["32", "bf16", "16-mixed", "fp8", "64", ""]),
    accum=st.integers(-2, 3),
    nonfinite=st.sampled_from(["skip", "raise", "ignore", "warn"]),
)
def test_constructor_arguments(precision, accum, nonfinite):
    ok = precision in ("32", "bf16", "16-mixed") and accum >= 1 and nonfinite != "warn"
    if ok:
        assert _trainer(precision=precision, grad_accum_steps=accum, nonfinite=nonfinite)
    else:
        with pytest.raises(ValueError, match="precision|grad_accum_steps|nonfinite"):
            _trainer(precision=precision, grad_accum_steps=accum, nonfinite=nonfinite)


@settings(max_examples=30, deadline=None)
@given(
    epochs=st.integers(-2, 2),
    interval=st.sampled_from(["step", "epoch", "batch", ""]),
    max_norm=st.one_of(st.none(), st.just(float("nan")), st.floats(-1, 2)),
)
def test_train_arguments(epochs, interval, max_norm):
    t = _trainer()
    before = t.model.weight.detach().clone()
    loader = DataLoader(_DATA, batch_size=8)
    ok = epochs >= 1 and interval in ("step", "epoch") and (max_norm is None or max_norm > 0)
    if ok:
        t.train(loader, None, epochs, max_grad_norm=max_norm, scheduler_interval=interval)
        assert t.global_step == 2 * epochs
    else:
        with pytest.raises(ValueError, match="epochs|scheduler_interval|max_grad_norm"):
            t.train(loader, None, epochs, max_grad_norm=max_norm, scheduler_interval=interval)
        assert torch.equal(t.model.weight, before) and t.global_step == 0


def test_empty_loaders():
    t = _trainer()
    empty = DataLoader(TensorDataset(torch.empty(0, 4), torch.empty(0, dtype=torch.long)))
    with pytest.raises(ValueError, match="train_loader is empty"):
        t.train(empty, None, 1)
    with pytest.raises(ValueError, match="val_loader is empty"):
        t.train(DataLoader(_DATA, batch_size=8), empty, 1)
    assert t.global_step == 0


def test_wrong_kinds_are_type_errors():
    model = torch.nn.Linear(4, 3)
    with pytest.raises(TypeError, match="optimizer"):
        AdvancedTrainer(model, "sgd", torch.nn.CrossEntropyLoss())
    with pytest.raises(TypeError, match="model"):
        AdvancedTrainer("m", torch.optim.SGD(model.parameters(), lr=0.1), torch.nn.MSELoss())
    with pytest.raises(TypeError, match="grad_accum_steps"):
        _trainer(grad_accum_steps=2.0)
    with pytest.raises(TypeError, match="scheduler"):
        _trainer().train(DataLoader(_DATA, batch_size=8), None, 1, scheduler=object())


def test_scheduler_of_another_optimizer():
    t = _trainer()
    other = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    sch = torch.optim.lr_scheduler.StepLR(other, 1)
    with pytest.raises(ValueError, match="different optimizer"):
        t.train(DataLoader(_DATA, batch_size=8), None, 1, scheduler=sch)


def test_checkpoint_every_steps_needs_a_directory():
    with pytest.raises(ValueError, match="checkpoint_dir"):
        _trainer().train(DataLoader(_DATA, batch_size=8), None, 1, checkpoint_every_steps=2)


def test_resume_true_needs_a_directory():
    with pytest.raises(ValueError, match="resume=True needs checkpoint_dir"):
        _trainer().train(DataLoader(_DATA, batch_size=8), None, 1, resume=True)
