"""Non-finite steps are skipped, raised or ignored; no host sync per step."""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from optiscope import AdvancedTrainer


def _nan_loader(digits_small, bad_batches, n_batches=6, bs=16):
    X, y = digits_small
    X = X[: n_batches * bs].clone()
    for b in bad_batches:
        X[b * bs, 0] = math.nan
    return DataLoader(TensorDataset(X, y[: n_batches * bs]), batch_size=bs, shuffle=False)


def test_nan_batch_is_skipped_and_counted(make_model, digits_small):
    loader = _nan_loader(digits_small, [2])
    m = make_model(dropout=0.0)
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    sch = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (1 + s))
    t = AdvancedTrainer(m, opt, torch.nn.CrossEntropyLoss(), verbose=False)
    t.train(loader, None, 1, scheduler=sch)
    assert t.skipped_steps == 1 and t.global_step == 5
    # The scheduler only advanced for applied updates.
    assert sch.last_epoch == 5
    assert [r.skipped for r in t.history] == [False, False, True, False, False, False]
    assert math.isnan(t.grad_norms[2]) and math.isnan(t.step_losses[2])
    assert all(torch.isfinite(p).all() for p in m.parameters())
    # The lr of the step after the skip is the one the skipped step would have used.
    assert t.learning_rates[3] == t.learning_rates[2]
    good = [v for i, v in enumerate(t.step_losses) if i != 2]
    assert t.train_losses[0] == pytest.approx(sum(good) / len(good), rel=1e-6)


def test_nonfinite_raise_names_the_step(make_model, digits_small):
    loader = _nan_loader(digits_small, [3])
    m = make_model(dropout=0.0)
    t = AdvancedTrainer(
        m,
        torch.optim.SGD(m.parameters(), lr=0.1),
        torch.nn.CrossEntropyLoss(),
        verbose=False,
        nonfinite="raise",
    )
    with pytest.raises(FloatingPointError, match="optimizer step 3"):
        t.train(loader, None, 1)
    assert t.global_step == 3
    assert all(torch.isfinite(p).all() for p in m.parameters())


def test_nonfinite_ignore_applies_the_update(make_model, digits_small):
    loader = _nan_loader(digits_small, [1])
    m = make_model(dropout=0.0)
    t = AdvancedTrainer(
        m,
        torch.optim.SGD(m.parameters(), lr=0.1),
        torch.nn.CrossEntropyLoss(),
        verbose=False,
        nonfinite="ignore",
    )
    t.train(loader, None, 1, max_grad_norm=None)
    assert t.skipped_steps == 0 and t.global_step == 6
    assert not all(torch.isfinite(p).all() for p in m.parameters())


def test_abort_after_consecutive_skips(make_model, digits_small):
    loader = _nan_loader(digits_small, range(6))
    m = make_model(dropout=0.0)
    t = AdvancedTrainer(
        m,
        torch.optim.SGD(m.parameters(), lr=0.1),
        torch.nn.CrossEntropyLoss(),
        verbose=False,
        max_consecutive_skips=3,
    )
    with pytest.raises(FloatingPointError, match="3 consecutive"):
        t.train(loader, None, 1)
    assert t.skipped_steps == 3 and t.global_step == 0


def _count_syncs(host_syncs, make_model, digits_small, n_batches, nonfinite, epochs=1):
    X, y = digits_small
    loader = DataLoader(
        TensorDataset(X[: n_batches * 8], y[: n_batches * 8]), batch_size=8, shuffle=True
    )
    m = make_model()
    opt = torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9)
    sch = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.99**s)
    t = AdvancedTrainer(
        m,
        opt,
        torch.nn.CrossEntropyLoss(),
        verbose=False,
        progress_bar=False,
        nonfinite=nonfinite,
        log_interval=10_000,
    )
    with host_syncs() as counts:
        t.train(loader, loader, epochs, scheduler=sch, max_grad_norm=1.0)
    assert len(t.grad_norms) == n_batches * epochs  # the values did reach the host
    return counts


def test_no_host_sync_per_step(host_syncs, make_model, digits_small):
    few = _count_syncs(host_syncs, make_model, digits_small, 4, "ignore")
    many = _count_syncs(host_syncs, make_model, digits_small, 24, "ignore")
    # Same number of syncs for 4 and 24 steps: all of them are at log points.
    assert few == many
    # What is left: DataLoader iterators (seed, permutation) and the epoch-end copies.
    assert sum(many.values()) <= 8


def test_skip_reads_one_value_per_step(host_syncs, make_model, digits_small):
    few = _count_syncs(host_syncs, make_model, digits_small, 4, "skip")
    many = _count_syncs(host_syncs, make_model, digits_small, 24, "skip")
    assert many["item"] - few["item"] == 20
    assert {k: v for k, v in few.items() if k != "item"} == {
        k: v for k, v in many.items() if k != "item"
    }


def test_log_interval_sets_the_number_of_copies(host_syncs, make_model, digits_small):
    X, y = digits_small
    loader = DataLoader(TensorDataset(X[:160], y[:160]), batch_size=8)
    m = make_model()
    t = AdvancedTrainer(
        m,
        torch.optim.SGD(m.parameters(), lr=0.05),
        torch.nn.CrossEntropyLoss(),
        verbose=False,
        progress_bar=False,
        nonfinite="ignore",
        log_interval=5,
    )
    with host_syncs() as counts:
        t.train(loader, None, 1)
    assert counts["tolist"] == 4  # 20 steps / 5, the epoch end has nothing left
    assert len(t.history) == 20


def test_fp16_overflow_is_skipped_and_lowers_the_scale(make_model, digits_small):
    loader = _nan_loader(digits_small, [1])
    m = make_model(dropout=0.0)
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    sch = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    t = AdvancedTrainer(m, opt, torch.nn.CrossEntropyLoss(), verbose=False, precision="16-mixed")
    start_scale = t.scaler.get_scale()
    t.train(loader, None, 1, scheduler=sch)
    assert t.history[1].skipped and t.skipped_steps >= 1
    assert t.global_step + t.skipped_steps == 6 and sch.last_epoch == t.global_step
    assert t.scaler.get_scale() < start_scale
    assert all(torch.isfinite(p).all() for p in m.parameters())


def test_fused_optimizer_skips_exactly(make_model, digits_small):
    # Fused and unfused optimizers skip the same way (one host read per step), so the
    # counters are exact at every step, not corrected later.
    seen = {}
    for fused in (False, True):
        loader = _nan_loader(digits_small, [2], n_batches=6, bs=8)
        m = make_model(dropout=0.0)
        opt = torch.optim.Adam(m.parameters(), lr=1e-2, fused=fused)

        class Steps:
            counters: list = seen.setdefault(fused, [])

            def on_step_end(self, t):
                self.counters.append((t.global_step, t.skipped_steps))

        t = AdvancedTrainer(m, opt, torch.nn.CrossEntropyLoss(), verbose=False,
                            progress_bar=False, log_interval=100, callbacks=[Steps()])  # fmt: skip
        t.train(loader, None, 1)
        assert t.skipped_steps == 1 and t.global_step == 5 and t.history[2].skipped
        assert all(float(s["step"]) == 5 for s in opt.state.values())
        seen[fused, "model"] = m
    assert seen[True] == seen[False] == [(1, 0), (2, 0), (2, 1), (3, 1), (4, 1), (5, 1)]
    for p1, p2 in zip(seen[True, "model"].parameters(), seen[False, "model"].parameters()):
        torch.testing.assert_close(p1, p2, rtol=1e-5, atol=1e-6)


def test_consecutive_skips_abort_with_exact_counters(make_model, digits_small):
    loader = _nan_loader(digits_small, range(6))
    m = make_model(dropout=0.0)
    opt = torch.optim.SGD(m.parameters(), lr=0.1, fused=True)
    t = AdvancedTrainer(
        m, opt, torch.nn.CrossEntropyLoss(), verbose=False, max_consecutive_skips=3, log_interval=2
    )
    with pytest.raises(FloatingPointError, match="3 consecutive"):
        t.train(loader, None, 1)
    assert t.skipped_steps == 3 and t.global_step == 0  # no update was ever applied
    assert all(torch.isfinite(p).all() for p in m.parameters())
