"""OptiscopeCallback and ScheduleLR in a real ``lightning.Trainer`` on CPU, tiny GPT-2."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

pl = pytest.importorskip("lightning.pytorch")
pytest.importorskip("transformers")

from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

from optiscope.batch_loss import ModelLoss  # noqa: E402
from optiscope.clipping import AutoClip, NormClip  # noqa: E402
from optiscope.integrations.lightning import OptiscopeCallback, schedule_config  # noqa: E402
from optiscope.schedules import ScheduleLR, StepDecay, WarmupCosineSchedule  # noqa: E402
from tests.integrations._tiny import QUICK_ANALYSIS, Tokens, global_norm, tiny_gpt2  # noqa: E402

SCHEDULE = WarmupCosineSchedule(warmup_steps=3, total_steps=12, max_lr=3e-3, min_lr=1e-4)


class TinyLM(pl.LightningModule):
    """A Lightning module around a Hugging Face model that returns ``.loss``."""

    def __init__(self, schedule=SCHEDULE, interval: str = "step") -> None:
        super().__init__()
        self.model = tiny_gpt2()
        self.schedule, self.interval = schedule, interval

    def forward(self, **batch):
        return self.model(**batch)

    def training_step(self, batch, batch_idx):
        return self(**batch).loss

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=1.0)
        sched = schedule_config(opt, self.schedule, interval=self.interval)
        return {"optimizer": opt, "lr_scheduler": sched}


class Probe(pl.Callback):
    """Records, at ``on_before_optimizer_step``, the rate and the gradient norm it sees."""

    def __init__(self) -> None:
        self.lrs: list[float] = []
        self.norms: list[float] = []
        self.calls = 0

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.calls += 1
        self.lrs.append(optimizer.param_groups[0]["lr"])
        self.norms.append(global_norm(pl_module.parameters()))


def _trainer(tmp: Path, callbacks, **kw) -> pl.Trainer:
    opts = dict(accelerator="cpu", enable_progress_bar=False, enable_model_summary=False,
                enable_checkpointing=False, log_every_n_steps=1,
                logger=pl.loggers.CSVLogger(tmp, name="logs"))  # fmt: skip
    opts.update(kw)
    return pl.Trainer(callbacks=callbacks, **opts)


def _loader() -> DataLoader:
    return DataLoader(Tokens(24), batch_size=4)  # 6 optimizer steps per epoch


def _run(tmp: Path, epochs: int, ckpt: Path | None = None, save: Path | None = None):
    before, after = Probe(), Probe()
    cb = OptiscopeCallback(clipper=AutoClip(percentile=25.0, history_size=100),
                           instruments=["loss", "grad_norm", "distance"])  # fmt: skip
    module = TinyLM()
    trainer = _trainer(tmp, [before, cb, after, pl.callbacks.LearningRateMonitor()],
                       max_epochs=epochs)  # fmt: skip
    trainer.fit(module, _loader(), ckpt_path=ckpt)
    if save is not None:
        trainer.save_checkpoint(save)
    return module, cb, before, after, trainer


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pl")
    full = _run(tmp / "full", 2)
    half = _run(tmp / "half", 1, save=tmp / "half.ckpt")
    resumed = _run(tmp / "resumed", 2, ckpt=tmp / "half.ckpt")
    return {"full": full, "half": half, "resumed": resumed}


def test_schedule_gives_the_closed_form_at_every_step(runs):
    _, _, before, _, trainer = runs["full"]
    assert trainer.global_step == 12
    assert before.lrs == [SCHEDULE(k) for k in range(12)]


def test_learning_rate_monitor_logs_optiscope_values(runs):
    _, _, _, _, trainer = runs["full"]
    rows = list(csv.DictReader(open(Path(trainer.logger.log_dir) / "metrics.csv")))
    logged = {int(r["step"]): float(r["lr-AdamW"]) for r in rows if r.get("lr-AdamW")}
    assert sorted(logged) == list(range(12))
    assert logged == pytest.approx({k: SCHEDULE(k) for k in range(12)}, rel=1e-12)


def test_clipper_clips_to_its_threshold_and_records_it(runs):
    _, cb, before, after, _ = runs["full"]
    hist = cb.clip_history
    assert hist["step"] == list(range(12))
    pre = np.array(before.norms)
    # The clipper's record is the norm the optimizer step had before and after clipping.
    np.testing.assert_allclose(hist["grad_norm"], pre, rtol=1e-5)
    np.testing.assert_allclose(hist["clipped_norm"], after.norms, rtol=1e-5)
    # AutoClip's threshold: the 25th percentile of the norms so far (numpy as the reference).
    thresholds = np.array([np.percentile(pre[: k + 1], 25) for k in range(12)])
    np.testing.assert_allclose(after.norms, np.minimum(pre, thresholds), rtol=1e-5)
    clipped = np.array(hist["clipped"])
    assert clipped.sum() >= 3 and (~clipped).sum() >= 1
    np.testing.assert_array_equal(clipped, thresholds < pre + 1e-6)  # torch's coefficient rule


def test_clip_record_is_logged(runs):
    _, cb, _, _, trainer = runs["full"]
    rows = list(csv.DictReader(open(Path(trainer.logger.log_dir) / "metrics.csv")))
    logged = {int(r["step"]): float(r["optiscope/clip/clipped_norm"])
              for r in rows if r.get("optiscope/clip/clipped_norm")}  # fmt: skip
    # Logged at global_step after the step, i.e. step k's record under k + 1.
    record = cb.clip_history["clipped_norm"]
    assert logged == pytest.approx({k + 1: v for k, v in enumerate(record)})


def test_resume_from_a_lightning_checkpoint_is_exact(runs):
    full_module, full_cb, full_before, _, _ = runs["full"]
    res_module, res_cb, res_before, _, res_trainer = runs["resumed"]
    assert res_trainer.global_step == 12
    assert res_before.lrs == full_before.lrs[6:]
    for a, b in zip(full_module.parameters(), res_module.parameters()):
        assert torch.equal(a, b)
    # The clipper statistics and the record came back from the checkpoint.
    assert res_cb.clip_history == full_cb.clip_history
    sa, sb = full_cb.clipper.state_dict(), res_cb.clipper.state_dict()
    assert torch.equal(sa["history"], sb["history"]) and torch.equal(sa["count"], sb["count"])
    # So did the instruments: their history continues as if never interrupted.
    assert res_cb.instruments.step == 12
    assert res_cb.instruments.history == full_cb.instruments.history


def test_resume_with_another_clipper_setting_is_refused(runs, tmp_path):
    ckpt = tmp_path / "half.ckpt"
    runs["half"][4].save_checkpoint(ckpt)
    trainer = _trainer(tmp_path, [OptiscopeCallback()], max_epochs=2)
    with pytest.raises(ValueError, match="saved with a clipper"):
        trainer.fit(TinyLM(), _loader(), ckpt_path=ckpt)


def test_epoch_interval_uses_the_epoch_index(tmp_path):
    sched = StepDecay(initial_lr=0.1, drop_rate=0.5, epochs_drop=1)
    probe = Probe()
    trainer = _trainer(tmp_path, [probe, pl.callbacks.LearningRateMonitor()], max_epochs=3)
    trainer.fit(TinyLM(sched, interval="epoch"), DataLoader(Tokens(8), batch_size=4))
    assert probe.lrs == [sched(e) for e in (0, 0, 1, 1, 2, 2)]
    rows = list(csv.DictReader(open(Path(trainer.logger.log_dir) / "metrics.csv")))
    logged = [(int(r["step"]), float(r["lr-AdamW"])) for r in rows if r.get("lr-AdamW")]
    assert logged == [(0, sched(0)), (2, sched(1)), (4, sched(2))]  # once per epoch, at its start
    assert isinstance(trainer.lr_scheduler_configs[0].scheduler, ScheduleLR)
    assert trainer.lr_scheduler_configs[0].interval == "epoch"


LINEAR_SCHEDULE = StepDecay(initial_lr=0.01, drop_rate=0.5, epochs_drop=1)


class Linear(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Linear(8, 1)

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        return torch.nn.functional.mse_loss(self.net(batch[0]).float(), batch[1])

    def configure_optimizers(self):
        opt = torch.optim.SGD(self.parameters(), lr=0.01)
        return {"optimizer": opt, "lr_scheduler": schedule_config(opt, LINEAR_SCHEDULE)}


def _regression(n: int = 48, scale: float = 3.0) -> TensorDataset:
    g = torch.Generator().manual_seed(1)
    return TensorDataset(torch.randn(n, 8, generator=g), scale * torch.randn(n, 1, generator=g))


def test_accumulation_clips_once_per_optimizer_step(tmp_path):
    before, after = Probe(), Probe()
    cb = OptiscopeCallback(clipper=NormClip(0.1))
    trainer = _trainer(tmp_path, [before, cb, after], max_steps=4, accumulate_grad_batches=3)
    trainer.fit(Linear(), DataLoader(_regression(), batch_size=4))
    assert cb.clip_history["step"] == [0, 1, 2, 3] and before.calls == 4
    # The step-interval schedule advanced once per optimizer step, not per micro-batch.
    assert before.lrs == [LINEAR_SCHEDULE(k) for k in range(4)]
    np.testing.assert_allclose(after.norms, 0.1, rtol=1e-5)
    # Reference: the accumulated gradient of the first 3 micro-batches, by hand.
    ref = Linear()
    for x, y in list(DataLoader(_regression(), batch_size=4))[:3]:
        (torch.nn.functional.mse_loss(ref.net(x), y) / 3).backward()
    assert cb.clip_history["grad_norm"][0] == pytest.approx(global_norm(ref.parameters()), rel=1e-5)


def test_fp16_amp_clipper_sees_unscaled_gradients(tmp_path):
    from lightning.pytorch.plugins import MixedPrecision

    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    cb = OptiscopeCallback(clipper=NormClip(0.5), instruments=["loss", "grad_norm"])
    trainer = _trainer(tmp_path, [cb], max_steps=1, logger=False,
                       plugins=[MixedPrecision("16-mixed", "cpu", scaler=scaler)])  # fmt: skip
    trainer.fit(Linear(), DataLoader(_regression(scale=1.0), batch_size=8))
    assert scaler.get_scale() == 2.0**10  # the step was taken with scaled gradients
    ref = Linear()
    x, y = next(iter(DataLoader(_regression(scale=1.0), batch_size=8)))
    torch.nn.functional.mse_loss(ref.net(x), y).backward()
    # fp16 forward, fp32 reference: equal to fp16 precision, and 1024 times off if scaled.
    assert cb.clip_history["grad_norm"][0] == pytest.approx(global_norm(ref.parameters()), rel=1e-2)
    assert cb.clip_history["clipped_norm"][0] == pytest.approx(0.5, rel=1e-4)
    # The instruments got the loss unscaled and the gradients after unscaling and clipping.
    ref_loss = torch.nn.functional.mse_loss(ref.net(x), y).item()
    assert cb.instruments.history["loss"][0][1] == pytest.approx(ref_loss, rel=1e-2)
    assert cb.instruments.history["grad_norm"][0][1] == pytest.approx(0.5, rel=1e-4)


def test_gradient_clip_val_and_a_clipper_is_an_error(tmp_path):
    trainer = _trainer(tmp_path, [OptiscopeCallback(clipper="autoclip")], max_steps=1,
                       gradient_clip_val=1.0)  # fmt: skip
    with pytest.raises(ValueError, match="gradient_clip_val"):
        trainer.fit(Linear(), DataLoader(_regression(), batch_size=8))


class Snapshot(pl.Callback):
    """The module's state and the RNG state when training ends, before the analysis."""

    def on_train_end(self, trainer, pl_module) -> None:
        self.state = {k: v.clone() for k, v in pl_module.state_dict().items()}
        self.training = pl_module.training
        self.rng = torch.get_rng_state()


def test_analysis_writes_the_report_and_restores_the_module(tmp_path):
    snap = Snapshot()
    cb = OptiscopeCallback(clipper="autoclip", analysis=QUICK_ANALYSIS, run_dir=tmp_path / "run",
                           instruments={"quantities": ["loss", "distance", "sharpness", "alpha"],
                                        "sharpness_every": 2, "sharpness_iters": 5,
                                        "grad_tests_every": 2})  # fmt: skip
    module = TinyLM()
    trainer = _trainer(tmp_path, [snap, cb], max_steps=4)
    trainer.fit(module, _loader())
    assert cb.report_path == tmp_path / "run" / "report.html" and cb.report_path.is_file()
    page = cb.report_path.read_text()
    assert "Top Hessian eigenvalue" in page and "Lightning" in page and "AutoClip" in page
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert np.isfinite(summary["top Hessian eigenvalue"])
    assert (tmp_path / "run" / "figures" / "landscape_contour.png").is_file()
    assert "Sharpness against the stability threshold" in page
    assert "Distance from the initial weights" in page and "final sharpness" in page
    saved = json.loads((tmp_path / "run" / "instruments.json").read_text())["history"]
    assert saved["sharpness"] == [list(p) for p in cb.instruments.history["sharpness"]]
    assert [s for s, _ in saved["alpha"]] == [2, 4] and "Effective step size alpha" in page
    assert all(np.isfinite(v) and v >= -1 for _, v in saved["alpha"])
    after = module.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in snap.state.items())
    assert module.training == snap.training and torch.equal(torch.get_rng_state(), snap.rng)


def test_bad_arguments():
    with pytest.raises(TypeError, match="clipper"):
        OptiscopeCallback(clipper=1.0)
    with pytest.raises(ValueError, match="run_dir"):
        OptiscopeCallback(analysis=True)
    with pytest.raises(ValueError, match="plane_points"):
        OptiscopeCallback(analysis={"landscape": {"plane_points": 1}}, run_dir=".")
    with pytest.raises(ValueError, match="unknown"):
        OptiscopeCallback(instruments=["loss", "sharpnes"])
    with pytest.raises(ValueError, match="every"):
        OptiscopeCallback(instruments={"quantities": ["loss"], "every": 0})
    with pytest.raises(ValueError, match="set by the callback"):
        OptiscopeCallback(instruments={"loss_fn": torch.nn.MSELoss()})
    with pytest.raises(ValueError, match="interval"):
        schedule_config(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1), SCHEDULE,
                        interval="batch")  # fmt: skip


def test_instruments_equal_a_hand_written_loop(tmp_path):
    from optiscope.instruments import Instruments

    opts = dict(quantities=["loss", "grad_norm", "layers", "distance", "noise_scale",
                            "sharpness"], sharpness_every=3, sharpness_iters=8)  # fmt: skip
    cb = OptiscopeCallback(clipper=NormClip(1.0), instruments=opts)
    trainer = _trainer(tmp_path, [cb], max_steps=6, accumulate_grad_batches=2)
    trainer.fit(TinyLM(), _loader())
    # The same instruments, clipper, schedule and batches in a plain loop.
    module, batches = TinyLM(), list(_loader())
    opt = torch.optim.AdamW(module.parameters(), lr=1.0)
    sched, clip = ScheduleLR(opt, SCHEDULE), NormClip(1.0)
    inst = Instruments(module, opt, **opts, probe_batch=batches[0], batch_loss=ModelLoss(),
                       accumulation_steps=2)  # fmt: skip
    module.train()
    for step in range(6):
        for batch in (batches + batches)[2 * step : 2 * step + 2]:
            loss = module(**batch).loss
            (loss / 2).backward()
            inst.after_backward(loss, batch_size=4)
        clip(module.parameters())
        inst.before_step()
        opt.step()
        inst.after_step()
        opt.zero_grad()
        sched.step()
    inst.flush()
    got, want = cb.instruments.history, inst.history
    assert sorted(got) == sorted(want)
    assert {"noise_scale", "sharpness", "loss"} <= set(got)
    assert [s for s, _ in got["sharpness"]] == [3, 6]
    for key in want:
        assert [s for s, _ in got[key]] == [s for s, _ in want[key]], key
        np.testing.assert_allclose([v for _, v in got[key]], [v for _, v in want[key]],
                                   rtol=1e-5, atol=1e-7, err_msg=key)  # fmt: skip
    # ... and logged through the trainer's logger at their steps.
    rows = list(csv.DictReader(open(Path(trainer.logger.log_dir) / "metrics.csv")))
    logged = {int(r["step"]): float(r["optiscope/instruments/sharpness"])
              for r in rows if r.get("optiscope/instruments/sharpness")}  # fmt: skip
    assert logged == pytest.approx(dict(got["sharpness"]))


class ManualLinear(Linear):
    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False

    def training_step(self, batch, batch_idx):
        opt = self.optimizers()
        opt.zero_grad()
        self.manual_backward(torch.nn.functional.mse_loss(self.net(batch[0]), batch[1]))
        opt.step()


def test_manual_optimization_is_clipped_too(tmp_path):
    after = Probe()
    cb = OptiscopeCallback(clipper=NormClip(0.1))
    trainer = _trainer(tmp_path, [cb, after], max_steps=3, logger=False)
    trainer.fit(ManualLinear(), DataLoader(_regression(), batch_size=8))
    assert cb.clip_history["step"] == [0, 1, 2]
    np.testing.assert_allclose(after.norms, 0.1, rtol=1e-5)


def test_a_plain_module_with_a_target_loss(tmp_path):
    # Not a Hugging Face model: the analysis and the probes use loss_fn(model(x), y).
    cb = OptiscopeCallback(loss_fn=torch.nn.MSELoss(), analysis=QUICK_ANALYSIS,
                           run_dir=tmp_path / "run",
                           instruments={"quantities": ["loss", "sharpness"],
                                        "sharpness_every": 2})  # fmt: skip
    trainer = _trainer(tmp_path, [cb], max_steps=4, logger=False)
    module = Linear()
    trainer.fit(module, DataLoader(_regression(), batch_size=8))
    # MSE of a linear model: the Hessian is 2 X^T X / n, its top eigenvalue by numpy.
    x = next(iter(DataLoader(_regression(), batch_size=8)))[0]
    xb = torch.cat([x, torch.ones(8, 1)], dim=1).double()
    top = float(np.linalg.eigvalsh((2 * xb.T @ xb / 8).numpy())[-1])
    assert cb.instruments.history["sharpness"][-1][1] == pytest.approx(top, rel=1e-3)
    assert cb.report_path.is_file()


def test_a_second_fit_with_the_same_instruments_is_refused(tmp_path):
    cb = OptiscopeCallback(instruments=["loss"])
    _trainer(tmp_path, [cb], max_steps=1, logger=False).fit(Linear(), DataLoader(_regression()))
    with pytest.raises(ValueError, match="new OptiscopeCallback"):
        _trainer(tmp_path, [cb], max_steps=1, logger=False).fit(Linear(), DataLoader(_regression()))


def test_instruments_are_copied_at_log_points_and_logged_at_their_steps(tmp_path, monkeypatch):
    from optiscope.instruments import Instruments

    flushes = []
    flush = Instruments.flush
    monkeypatch.setattr(Instruments, "flush", lambda self: flushes.append(self.step) or flush(self))
    cb = OptiscopeCallback(instruments=["loss", "grad_norm"])
    trainer = _trainer(tmp_path, [cb], max_steps=6, log_every_n_steps=4)
    trainer.fit(Linear(), DataLoader(_regression(), batch_size=8))
    assert flushes == [4, 6]  # the log point at step 4 and the end of training
    rows = list(csv.DictReader(open(Path(trainer.logger.log_dir) / "metrics.csv")))
    logged = {int(r["step"]): float(r["optiscope/instruments/loss"])
              for r in rows if r.get("optiscope/instruments/loss")}  # fmt: skip
    # Copied at step 4 and at the end, each value under the step it was measured at.
    assert logged == pytest.approx(dict(cb.instruments.history["loss"]))
    assert sorted(logged) == [1, 2, 3, 4, 5, 6]
