"""InstrumentsCallback in the real AdvancedTrainer: values, accumulation, skips, resume."""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from optiscope import AdvancedTrainer, InstrumentsCallback, digits_mlp
from optiscope.instruments import QUANTITIES, Instruments
from tests.instruments._helpers import run_loop


def _problem(n=96, seed=0, dropout=0.1):
    g = torch.Generator().manual_seed(3)
    X, y = torch.randn(n, 64, generator=g), torch.randint(0, 10, (n,), generator=g)
    torch.manual_seed(seed)
    return digits_mlp(hidden=(16,), dropout=dropout), X, y


def _trainer(model, callbacks, accum=1, log_interval=3, sgd=False, **kw):
    if sgd:  # CPU Adam reads its step counter on the host (.item()) every step
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    else:
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    return AdvancedTrainer(
        model,
        opt,
        torch.nn.CrossEntropyLoss(),
        verbose=False,
        progress_bar=False,
        seed=5,
        log_interval=log_interval,
        callbacks=callbacks,
        grad_accum_steps=accum,
        **kw,
    )


def test_matches_a_hand_written_loop():
    model, X, y = _problem(dropout=0.0)
    ref_model, _, _ = _problem(dropout=0.0)
    loader = DataLoader(TensorDataset(X, y), batch_size=8)
    cb = InstrumentsCallback(
        quantities=["loss", "grad_norm", "layers", "distance", "noise_scale", "sharpness"],
        sharpness_every=3,
    )
    t = _trainer(model, [cb], accum=2)
    t.train(loader, None, 1, max_grad_norm=None)
    assert cb.instruments.noise_source == "micro_batches"
    opt = torch.optim.AdamW(ref_model.parameters(), lr=3e-3)
    inst = Instruments(
        ref_model,
        opt,
        cb.instruments.quantities,
        sharpness_every=3,
        probe_batch=(X[:8], y[:8]),
        loss_fn=torch.nn.CrossEntropyLoss(),
        accumulation_steps=2,
    )
    run_loop(ref_model, opt, [(X[i : i + 8], y[i : i + 8]) for i in range(0, 96, 8)], inst, accum=2)
    inst.flush()
    got = cb.history
    assert set(got) == set(inst.history)
    for key, pairs in inst.history.items():
        assert [s for s, _ in got[key]] == [s for s, _ in pairs], key
        for (_, a), (_, b) in zip(got[key], pairs):
            assert a == pytest.approx(b, rel=1e-5, abs=1e-7, nan_ok=True), key
    assert [s for s, _ in got["sharpness"]] == [3, 6]
    assert got["loss"][-1][0] == t.global_step == 6


def test_skipped_steps_are_forgotten():
    model, X, y = _problem()
    X = X.clone()
    X[16:24] = math.nan  # the third step's batch
    cb = InstrumentsCallback(quantities=["loss", "layers"])
    t = _trainer(model, [cb])
    t.train(DataLoader(TensorDataset(X, y), batch_size=8), None, 1)
    assert t.skipped_steps == 1 and cb.instruments.step == t.global_step == 11
    assert [s for s, _ in cb.history["loss"]] == list(range(1, 12))
    assert all(math.isfinite(v) for _, v in cb.history["layers/0.weight/update_norm"])


class _Stop(Exception):
    pass


class _StopAt:
    def __init__(self, k):
        self.k = k

    def on_step_end(self, trainer):
        if trainer.global_step == self.k:
            raise _Stop


@pytest.mark.parametrize("every", [None, 4], ids=["epoch-boundary", "mid-epoch"])
def test_resume_gives_the_same_history_bits(tmp_path, every):
    kwargs = dict(
        quantities=QUANTITIES,
        sharpness_every=2,
        grad_tests_every=3,
        sharpness_iters=8,
        noise_source="split",
    )
    model, X, y = _problem()
    loader = DataLoader(TensorDataset(X, y), batch_size=16, shuffle=True)  # 6 steps / epoch
    full = InstrumentsCallback(**kwargs)
    _trainer(model, [full]).train(loader, None, 3)

    model1, _, _ = _problem()
    cut = InstrumentsCallback(**kwargs)
    with pytest.raises(_Stop):
        _trainer(model1, [cut, _StopAt(10)]).train(
            loader, None, 3, checkpoint_dir=tmp_path, checkpoint_every_steps=every
        )
    torch.manual_seed(999)
    model2, _, _ = _problem(seed=42)
    resumed = InstrumentsCallback(**kwargs)
    _trainer(model2, [resumed]).train(loader, None, 3, checkpoint_dir=tmp_path, resume=True)
    assert resumed.history == full.history  # every (step, value) pair, bit for bit
    assert resumed.instruments.hvp_counts == full.instruments.hvp_counts
    assert len(full.history["sharpness"]) == 9 and "grad_tests/gsnr" in full.history


def test_no_host_sync_per_step(host_syncs):
    def syncs(n_batches):
        model, X, y = _problem(n=8 * n_batches)
        cb = InstrumentsCallback(quantities=["loss", "grad_norm", "layers", "distance"])
        t = _trainer(model, [cb], log_interval=10_000, nonfinite="ignore", sgd=True)
        loader = DataLoader(TensorDataset(X, y), batch_size=8)
        with host_syncs() as counts:
            t.train(loader, None, 1, max_grad_norm=None)
        assert len(cb.history["loss"]) == n_batches
        return counts

    few, many = syncs(4), syncs(16)
    assert few == many  # the same for 4 and 16 steps: none per step
    assert sum(many.values()) <= 8


def test_probe_is_the_first_training_batch():
    model, X, y = _problem(dropout=0.0)
    cb = InstrumentsCallback(quantities=["sharpness"], sharpness_every=100)
    t = _trainer(model, [cb])
    original = t.batch_loss
    t.train(DataLoader(TensorDataset(X, y), batch_size=8), None, 1)
    probe = cb.instruments.probe_batch
    assert torch.equal(probe[0], X[:8]) and torch.equal(probe[1], y[:8])
    assert t.batch_loss is original  # the capture put the trainer's loss back


def test_bad_arguments_fail_at_construction():
    with pytest.raises(ValueError, match="every"):
        InstrumentsCallback(every=0)
    with pytest.raises(ValueError, match="unknown quantity"):
        InstrumentsCallback(quantities=["sharpnes"])
    with pytest.raises(TypeError, match="model"):
        InstrumentsCallback(model=torch.nn.Linear(1, 1))


def test_grad_scaler_scale_is_taken_out():
    """16-mixed (autocast fp16 + GradScaler, here on the CPU): same noise scale as fp32."""
    histories = {}
    for precision in ("32", "16-mixed"):
        model, X, y = _problem(n=64, dropout=0.0)
        cb = InstrumentsCallback(quantities=["grad_norm", "noise_scale"])
        t = _trainer(model, [cb], accum=2, sgd=True, precision=precision)
        t.train(DataLoader(TensorDataset(X, y), batch_size=8), None, 1, max_grad_norm=None)
        histories[precision] = cb.history
    assert t.scaler is not None and t.scaler.get_scale() > 1000
    for key in ("grad_norm", "noise_scale/grad_sq", "noise_scale/trace"):
        fp32 = [v for _, v in histories["32"][key]]
        fp16 = [v for _, v in histories["16-mixed"][key]]
        assert fp16 == pytest.approx(fp32, rel=2e-2, abs=2e-3), key


def test_training_is_bit_identical_with_every_quantity_on():
    """Probes restore RNG (dropout draws), BatchNorm buffers, modes and gradients."""
    runs = []
    for callbacks in (
        [],
        [
            InstrumentsCallback(
                quantities=QUANTITIES, sharpness_every=2, grad_tests_every=2, noise_source="split"
            )
        ],
    ):
        model, X, y = _problem(dropout=0.3)
        t = _trainer(model, callbacks, accum=2)
        t.train(DataLoader(TensorDataset(X, y), batch_size=8, shuffle=True), None, 1)
        runs.append((model, list(t.grad_norms)))
    (a, norms_a), (b, norms_b) = runs
    assert norms_a == norms_b
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)


def _tensorboard_scalars(directory):
    """Every ``instruments/...`` scalar in the event files under ``directory``, read back by
    TensorBoard's own reader: tag -> [(step, value), ...] in file order."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = {}
    for path in sorted(directory.glob("events.out.tfevents.*")):
        acc = EventAccumulator(str(path), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            if tag.startswith("instruments/"):
                out.setdefault(tag, []).extend((e.step, e.value) for e in acc.Scalars(tag))
    return out


def test_instruments_reach_the_trainers_tensorboard_once_each_also_on_resume(tmp_path):
    pytest.importorskip("tensorboard")
    kwargs = dict(quantities=["loss", "layers", "sharpness", "alpha"], sharpness_every=2,
                  grad_tests_every=3, sharpness_iters=5)  # fmt: skip
    model, X, y = _problem(dropout=0.0)
    loader = DataLoader(TensorDataset(X, y), batch_size=16)  # 6 steps per epoch
    run = tmp_path / "run"
    first = InstrumentsCallback(**kwargs)
    t = _trainer(model, [first], log_interval=4, run_dir=run, tensorboard=True)
    t.train(loader, None, 1, checkpoint_dir=tmp_path / "ckpt")
    model2, _, _ = _problem(seed=7, dropout=0.0)
    second = InstrumentsCallback(**kwargs)
    t2 = _trainer(model2, [second], log_interval=4, run_dir=run, tensorboard=True)
    t2.train(loader, None, 2, checkpoint_dir=tmp_path / "ckpt", resume=True)
    logged = _tensorboard_scalars(run / "tensorboard")
    history = second.history
    assert [s for s, _ in history["alpha"]] == [3, 6, 9, 12]
    for key in ("loss", "sharpness", "alpha", "update_ratio", "layers/0.weight/update_ratio"):
        got = logged[f"instruments/{key}"]
        # Every measurement once, at its own step, across both runs' event files.
        assert [s for s, _ in got] == [s for s, _ in history[key]], key
        assert [v for _, v in got] == pytest.approx([v for _, v in history[key]], rel=1e-6), key


def test_no_tensorboard_no_history_reads_at_log_points(tmp_path):
    """Without a TensorBoard writer the callback only flushes at log points: the host side
    of the history (its arithmetic) waits until the history is read."""
    model, X, y = _problem(dropout=0.0)
    cb = InstrumentsCallback(quantities=["loss", "grad_norm"])
    t = _trainer(model, [cb], log_interval=2, tensorboard=False)
    t.train(DataLoader(TensorDataset(X, y), batch_size=16), None, 1)
    assert not t.logs_scalars and cb._logged == {}
    assert len(cb.instruments._rec.copied) == 6  # flushed, not yet turned into the history
    assert len(cb.history["loss"]) == 6
