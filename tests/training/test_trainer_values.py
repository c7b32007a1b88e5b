"""The trainer does the same maths as a plain loop, and records what it did."""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from optiscope import AdvancedTrainer, NormClip


def _reference_run(model, loader, epochs, lr, max_norm, lam):
    """A hand-written loop: forward, backward, clip (torch), step, LambdaLR per step."""
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    sch = torch.optim.lr_scheduler.LambdaLR(opt, lam)
    norms, lrs, losses = [], [], []
    for _ in range(epochs):
        for x, y in loader:
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            lrs.append(opt.param_groups[0]["lr"])
            if max_norm is None:
                grads = [p.grad for p in model.parameters()]
                norms.append(
                    float(torch.linalg.vector_norm(torch.cat([g.flatten() for g in grads])))
                )
            else:
                norms.append(float(torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)))
            opt.step()
            sch.step()
            losses.append(float(loss.detach()))
    return norms, lrs, losses


@pytest.mark.parametrize("max_norm", [None, 0.5])
def test_matches_hand_written_loop(make_model, make_loaders, same_weights, max_norm):
    train, val = make_loaders(32, shuffle=False)

    def lam(s):
        return min(1.0, (s + 1) / 5)

    ref_model = make_model(dropout=0.0)
    norms, lrs, losses = _reference_run(ref_model, train, 2, 0.05, max_norm, lam)
    model = make_model(dropout=0.0)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    sch = torch.optim.lr_scheduler.LambdaLR(opt, lam)
    t = AdvancedTrainer(model, opt, torch.nn.CrossEntropyLoss(), verbose=False, log_interval=3)
    t.train(train, val, 2, scheduler=sch, max_grad_norm=max_norm)
    assert same_weights(model, ref_model)
    # Grad norms are recorded every step, with and without clipping (the guide's bug).
    assert t.grad_norms == pytest.approx(norms, rel=1e-5)
    assert t.learning_rates == pytest.approx(lrs, rel=1e-12)
    assert t.step_losses == pytest.approx(losses, rel=1e-6)
    assert t.global_step == len(losses) == sch.last_epoch
    n = len(train)
    sizes = [len(b[1]) for b in train]
    mean1 = sum(v * s for v, s in zip(losses[:n], sizes)) / sum(sizes)
    assert t.train_losses[0] == pytest.approx(mean1, rel=1e-6)
    if max_norm is not None:
        assert [r.clipped for r in t.history] == [v > max_norm for v in norms]


def test_clipper_argument_equals_max_grad_norm(make_model, make_loaders, same_weights):
    train, val = make_loaders(32)
    models = []
    for kwargs in ({"max_grad_norm": 0.3}, {"clipper": NormClip(0.3)}):
        m = make_model()
        opt = torch.optim.Adam(m.parameters(), lr=1e-2)
        t = AdvancedTrainer(m, opt, torch.nn.CrossEntropyLoss(), verbose=False, seed=3)
        torch.manual_seed(1)
        t.train(train, None, 1, **kwargs)
        models.append((m, t))
    assert same_weights(models[0][0], models[1][0])
    assert models[0][1].grad_norms == models[1][1].grad_norms
    assert [r.clipped for r in models[0][1].history] == [r.clipped for r in models[1][1].history]


def test_clipper_and_max_grad_norm_together_is_an_error(make_model, make_loaders):
    train, val = make_loaders(32)
    m = make_model()
    t = AdvancedTrainer(m, torch.optim.SGD(m.parameters(), lr=0.1), torch.nn.CrossEntropyLoss())
    with pytest.raises(ValueError, match="clipper"):
        t.train(train, val, 1, max_grad_norm=5.0, clipper=NormClip(1.0))


def test_epoch_interval_steps_once_per_epoch(make_model, make_loaders):
    train, val = make_loaders(32)
    m = make_model()
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    sch = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    t = AdvancedTrainer(m, opt, torch.nn.CrossEntropyLoss(), verbose=False)
    t.train(train, val, 3, scheduler=sch, scheduler_interval="epoch")
    n = len(train)
    assert t.learning_rates == pytest.approx([0.1] * n + [0.05] * n + [0.025] * n)
    assert sch.last_epoch == 3


def test_plateau_steps_on_validation_loss(make_model, make_loaders):
    train, val = make_loaders(32)
    m = make_model()
    opt = torch.optim.SGD(m.parameters(), lr=0.0)  # nothing improves after epoch 1
    sch = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, patience=0, factor=0.5)
    opt.param_groups[0]["lr"] = 0.0
    t = AdvancedTrainer(m, opt, torch.nn.CrossEntropyLoss(), verbose=False)
    t.train(train, val, 3, scheduler=sch, scheduler_interval="epoch")
    assert sch.best == min(t.val_losses)
    # lr 0 stays 0, but the plateau counter saw the epochs' validation losses.
    assert sch.last_epoch == 3


def test_plateau_with_step_interval_is_rejected(make_model, make_loaders):
    train, val = make_loaders(32)
    m = make_model()
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    sch = torch.optim.lr_scheduler.ReduceLROnPlateau(opt)
    t = AdvancedTrainer(m, opt, torch.nn.CrossEntropyLoss(), verbose=False)
    with pytest.raises(ValueError, match="scheduler_interval='epoch'"):
        t.train(train, val, 1, scheduler=sch)
    assert t.global_step == 0


def test_schedule_lr_steps_per_optimizer_step(make_model, make_loaders):
    from optiscope import ScheduleLR, WarmupCosineSchedule

    train, val = make_loaders(32)
    m = make_model()
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    total = 2 * len(train)
    schedule = WarmupCosineSchedule(warmup_steps=4, total_steps=total, max_lr=0.1, min_lr=0.001)
    sch = ScheduleLR(opt, schedule)
    t = AdvancedTrainer(m, opt, torch.nn.CrossEntropyLoss(), verbose=False)
    t.train(train, val, 2, scheduler=sch)
    # Update k uses schedule(k).
    assert t.learning_rates == pytest.approx([schedule(k) for k in range(total)], rel=1e-9)


def test_grad_accumulation_equals_large_batch(make_model, digits_small):
    X, y = digits_small
    X, y = X[:256], y[:256]
    results = []
    for bs, accum in ((64, 1), (16, 4)):
        m = make_model(dropout=0.0)
        opt = torch.optim.SGD(m.parameters(), lr=0.2, momentum=0.9)
        sch = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (1 + s))
        loader = DataLoader(TensorDataset(X, y), batch_size=bs, shuffle=False)
        t = AdvancedTrainer(
            m, opt, torch.nn.CrossEntropyLoss(), verbose=False, grad_accum_steps=accum
        )
        t.train(loader, None, 2, scheduler=sch, max_grad_norm=0.5)
        results.append((m, t, sch))
    (m1, t1, s1), (m2, t2, s2) = results
    assert t1.global_step == t2.global_step == 8  # optimizer steps, not micro-batches
    assert s1.last_epoch == s2.last_epoch == 8
    assert t2.grad_norms == pytest.approx(t1.grad_norms, rel=1e-5)
    assert t2.step_losses == pytest.approx(t1.step_losses, rel=1e-6)
    for p1, p2 in zip(m1.parameters(), m2.parameters()):
        torch.testing.assert_close(p1, p2, rtol=1e-5, atol=1e-6)


def test_accumulation_with_a_short_last_group(make_model, digits_small):
    # 5 micro-batches with accum 2: groups of 2, 2, 1; the last is scaled by 1/1.
    X, y = digits_small
    loader = DataLoader(TensorDataset(X[:80], y[:80]), batch_size=16)
    m = make_model(dropout=0.0)
    t = AdvancedTrainer(
        m,
        torch.optim.SGD(m.parameters(), lr=0.0),
        torch.nn.CrossEntropyLoss(),
        verbose=False,
        grad_accum_steps=2,
    )
    t.train(loader, None, 1, max_grad_norm=None)
    assert t.global_step == 3
    m.zero_grad()
    torch.nn.functional.cross_entropy(m(X[64:80]), y[64:80]).backward()
    ref = torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in m.parameters()]))
    assert t.grad_norms[-1] == pytest.approx(float(ref), rel=1e-5)


@pytest.mark.parametrize(
    ("loss_fn", "out_dim", "target_kind"),
    [
        (torch.nn.CrossEntropyLoss(), 3, "class"),
        (torch.nn.BCEWithLogitsLoss(), 1, "binary"),
        (torch.nn.MSELoss(), 1, "regression"),
    ],
)
def test_validation_accuracy_by_task(loss_fn, out_dim, target_kind):
    torch.manual_seed(0)
    X = torch.randn(50, 4)
    model = torch.nn.Linear(4, out_dim)
    if target_kind == "class":
        y = torch.randint(0, 3, (50,))
    else:
        y = torch.randint(0, 2, (50, 1)).float()
    loader = DataLoader(TensorDataset(X, y), batch_size=16)
    t = AdvancedTrainer(model, torch.optim.SGD(model.parameters(), lr=0.1), loss_fn, verbose=False)
    loss, acc = t.validate(loader)
    with torch.no_grad():
        out = model(X)
        ref_loss = float(loss_fn(out, y))
    assert loss == pytest.approx(ref_loss, rel=1e-6)
    if target_kind == "class":
        assert acc == pytest.approx(float((out.argmax(1) == y).float().mean()))
    elif target_kind == "binary":
        assert acc == pytest.approx(float(((out > 0).float() == y).float().mean()))
    else:
        assert acc is None
    assert t.val_losses == [loss] and t.val_accuracies == [acc]
    assert model.training  # mode restored


def test_bf16_autocast_runs_on_cpu(make_model, make_loaders):
    train, val = make_loaders(32)
    m = make_model()
    seen = []
    m[0].register_forward_hook(lambda mod, i, o: seen.append(o.dtype))
    t = AdvancedTrainer(
        m,
        torch.optim.Adam(m.parameters(), lr=1e-3),
        torch.nn.CrossEntropyLoss(),
        precision="bf16",
        verbose=False,
    )
    t.train(train, val, 1)
    assert torch.bfloat16 in seen
    assert all(math.isfinite(v) for v in t.step_losses + t.val_losses)
    assert m[0].weight.dtype == torch.float32  # master weights stay fp32


def test_fp16_mixed_uses_a_grad_scaler(make_model, make_loaders):
    train, val = make_loaders(64)
    m = make_model()
    t = AdvancedTrainer(
        m,
        torch.optim.Adam(m.parameters(), lr=1e-3),
        torch.nn.CrossEntropyLoss(),
        precision="16-mixed",
        verbose=False,
    )
    assert isinstance(t.scaler, torch.amp.GradScaler)
    t.train(train, None, 1, max_grad_norm=1.0)
    # Norms are recorded after unscale_: the same order of magnitude as fp32 norms.
    assert all(n < 100 for n in t.grad_norms if math.isfinite(n))
    assert t.global_step + t.skipped_steps == len(train)


def test_a_second_train_call_continues(make_model, make_loaders):
    train, val = make_loaders(64)
    m = make_model()
    opt = torch.optim.SGD(m.parameters(), lr=0.05)
    t = AdvancedTrainer(m, opt, torch.nn.CrossEntropyLoss(), verbose=False)
    t.train(train, val, 2, early_stopping_patience=1, monitor="train_loss")
    t.stop_training = True
    t.train(train, val, 1)
    assert t.epoch == 3 and len(t.train_losses) == 3 and t.global_step == 3 * len(train)


def test_standalone_train_epoch_uses_the_guide_signature(make_model, make_loaders):
    train, val = make_loaders(64)
    m = make_model()
    opt = torch.optim.SGD(m.parameters(), lr=0.05)
    sch = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5**s)
    t = AdvancedTrainer(m, opt, torch.nn.CrossEntropyLoss(), verbose=False)
    loss = t.train_epoch(train, 1, sch, max_grad_norm=None, log_interval=2)
    assert t.train_losses == [loss] and math.isfinite(loss)
    assert t.learning_rates == pytest.approx([0.05 * 0.5**k for k in range(len(train))])
    assert sch.last_epoch == len(train)
