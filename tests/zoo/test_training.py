"""The trainer on every zoo member: it trains, validates right, checkpoints, resumes exactly."""

from __future__ import annotations

import math

import pytest
import torch

from optiscope import AdvancedTrainer
from optiscope.batch_loss import as_batch_loss, logits_of


class _Stop(Exception):
    pass


class _StopAt:
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, trainer) -> None:
        if trainer.global_step == self.step:
            raise _Stop


def _trainer(member, seed=0, **kwargs):
    model = member.model(seed)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    kwargs.setdefault("verbose", False)
    return AdvancedTrainer(model, opt, member.loss_fn, progress_bar=False, seed=5, **kwargs)


def _reference_validation(member, model):
    """Loss and accuracy by hand: sample-weighted mean loss, argmax / threshold accuracy."""
    bl = as_batch_loss(member.loss_fn)
    loss_sum = correct = scored = n = 0.0
    model.eval()
    with torch.no_grad():
        for batch in member.loader():
            ev = bl.evaluate(model, batch)
            loss_sum += float(ev.loss) * ev.size
            n += ev.size
            logits = logits_of(ev.output)
            if member.task == "multiclass":
                pred = logits.argmax(-1)
                correct += float((pred == ev.target).sum())
                scored += ev.target.numel()
            elif member.task == "binary":
                correct += float(((logits > 0).float() == ev.target).sum())
                scored += ev.target.numel()
    model.train()
    return loss_sum / n, (correct / scored if scored else None)


def test_trains_and_validates(member):
    t = _trainer(member)
    t.train(member.loader(shuffle=True), member.loader(), 3, max_grad_norm=5.0)
    assert len(t.train_losses) == 3 and all(math.isfinite(v) for v in t.train_losses)
    assert t.train_losses[-1] < t.train_losses[0]
    assert t.global_step == 3 * len(member.loader()) and len(t.grad_norms) == t.global_step
    loss, acc = _reference_validation(member, t.model)
    assert t.val_losses[-1] == pytest.approx(loss, rel=1e-5)
    if acc is None:
        assert t.val_accuracies[-1] is None
    else:
        assert t.val_accuracies[-1] == pytest.approx(acc, abs=1e-12)


def test_checkpoint_and_mid_epoch_resume_are_bit_exact(member, tmp_path):
    full = _trainer(member)
    full.train(member.loader(shuffle=True), member.loader(), 2)
    steps_per_epoch = len(member.loader())
    stop = steps_per_epoch + 1  # one step into the second epoch
    cut = _trainer(member, callbacks=[_StopAt(stop)])
    with pytest.raises(_Stop):
        cut.train(member.loader(shuffle=True), member.loader(), 2, checkpoint_dir=tmp_path,
                  checkpoint_every_steps=1)  # fmt: skip
    saved = torch.load(tmp_path / "last.pt", weights_only=True)
    assert saved["counters"]["global_step"] == stop and saved["counters"]["batch_in_epoch"] == 1
    assert set(saved["model"]) == set(member.model().state_dict())
    resumed = _trainer(member, seed=1)  # other initial weights: all must come from the file
    resumed.train(member.loader(shuffle=True), member.loader(), 2, checkpoint_dir=tmp_path,
                  resume=True)  # fmt: skip
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.grad_norms == full.grad_norms and resumed.val_losses == full.val_losses
