"""OptiscopeCallback, ScheduleLR and lr_find with a real Hugging Face ``Trainer``, tiny BERT."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from transformers import Trainer, TrainerCallback, TrainingArguments  # noqa: E402

from optiscope import lr_find  # noqa: E402
from optiscope.batch_loss import ModelLoss  # noqa: E402
from optiscope.clipping import AutoClip  # noqa: E402
from optiscope.integrations.transformers import STATE_NAME, OptiscopeCallback  # noqa: E402
from optiscope.schedules import ScheduleLR, WarmupCosineSchedule  # noqa: E402
from tests.integrations._tiny import (  # noqa: E402
    QUICK_ANALYSIS,
    Tokens,
    global_norm,
    same_history,
    tiny_bert,
    tiny_gpt2,
)

SCHEDULE = WarmupCosineSchedule(warmup_steps=3, total_steps=8, max_lr=3e-2, min_lr=1e-4)
QUANTITIES = ["loss", "grad_norm", "layers", "distance", "noise_scale"]


class Probe(TrainerCallback):
    """Records, at ``on_pre_optimizer_step``, the rate and the gradient norm it sees."""

    def __init__(self) -> None:
        self.lrs: list[float] = []
        self.norms: list[float] = []

    def on_pre_optimizer_step(self, args, state, control, model=None, optimizer=None, **kw):
        self.lrs.append(optimizer.param_groups[0]["lr"])
        self.norms.append(global_norm(model.parameters()))


def _args(out: Path, **kw) -> TrainingArguments:
    opts = dict(output_dir=str(out), max_steps=8, per_device_train_batch_size=4,
                gradient_accumulation_steps=2, max_grad_norm=0.0, logging_steps=1,
                save_strategy="no", report_to="none", use_cpu=True, dataloader_num_workers=0,
                disable_tqdm=True, seed=0, train_sampling_strategy="sequential")  # fmt: skip
    opts.update(kw)
    return TrainingArguments(**opts)


def _trainer(args: TrainingArguments, model_fn=tiny_gpt2, n: int = 32) -> Trainer:
    # GPT-2 divides its summed token loss by the Trainer's num_items_in_batch, as the
    # Trainer assumes of every model whose forward takes **kwargs; BertForMaskedLM takes
    # them but returns the micro-batch mean, so under accumulation its gradients come out
    # gradient_accumulation_steps times too large (transformers 5.25).
    model = model_fn()
    opt = torch.optim.AdamW(model.parameters(), lr=1.0)
    return Trainer(model=model, args=args, train_dataset=Tokens(n),
                   optimizers=(opt, ScheduleLR(opt, SCHEDULE)))  # fmt: skip


def _run(out: Path, resume: str | None = None):
    trainer = _trainer(_args(out, save_strategy="steps", save_steps=3))
    before, after = Probe(), Probe()
    trainer.add_callback(before)
    cb = OptiscopeCallback(clipper=AutoClip(percentile=25.0, history_size=100),
                           instruments=QUANTITIES).attach(trainer)  # fmt: skip
    trainer.add_callback(after)
    trainer.train(resume_from_checkpoint=resume)
    return trainer, cb, before, after


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("hf")
    full = _run(out)
    state_a = {k: v.clone() for k, v in full[0].model.state_dict().items()}
    resumed = _run(out, resume=str(out / "checkpoint-3"))  # mid-epoch
    return {"full": full, "full_state": state_a, "resumed": resumed, "out": out}


def test_schedule_steps_once_per_optimizer_step(runs):
    trainer, _, before, _ = runs["full"]
    # 8 optimizer steps of 2 micro-batches each: the scheduler stepped 8 times, not 16.
    assert trainer.state.global_step == 8 and trainer.lr_scheduler.last_epoch == 8
    assert before.lrs == [SCHEDULE(k) for k in range(8)]
    # The Trainer logs the rate of the step it just took.
    logged = {h["step"]: h["learning_rate"] for h in trainer.state.log_history
              if "learning_rate" in h}  # fmt: skip
    assert logged == {s: SCHEDULE(s - 1) for s in range(1, 9)}


def test_clipper_clips_to_its_threshold_and_records_it(runs):
    _, cb, before, after = runs["full"]
    hist = cb.clip_history
    assert hist["step"] == list(range(8))
    pre = np.array(before.norms)
    np.testing.assert_allclose(hist["grad_norm"], pre, rtol=1e-5)
    np.testing.assert_allclose(hist["clipped_norm"], after.norms, rtol=1e-5)
    thresholds = np.array([np.percentile(pre[: k + 1], 25) for k in range(8)])
    np.testing.assert_allclose(after.norms, np.minimum(pre, thresholds), rtol=1e-5)
    clipped = np.array(hist["clipped"])
    assert clipped.sum() >= 3 and (~clipped).sum() >= 1
    np.testing.assert_array_equal(clipped, thresholds < pre + 1e-6)


def test_clip_record_is_logged_with_trainer_log(runs):
    trainer, cb, _, _ = runs["full"]
    logged = {h["step"]: h["optiscope/clip/grad_norm"] for h in trainer.state.log_history
              if "optiscope/clip/grad_norm" in h}  # fmt: skip
    assert logged == pytest.approx({k + 1: v for k, v in enumerate(cb.clip_history["grad_norm"])})
    # The Trainer's own logs still happen at every logging step.
    assert sum("loss" in h for h in trainer.state.log_history) == 8


def test_resume_from_checkpoint_is_exact(runs):
    full, _, full_before, _ = runs["full"]
    resumed, res_cb, res_before, _ = runs["resumed"]
    assert (runs["out"] / "checkpoint-3" / STATE_NAME).is_file()
    assert resumed.state.global_step == 8
    assert res_before.lrs == full_before.lrs[3:] == [SCHEDULE(k) for k in range(3, 8)]
    after = resumed.model.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in runs["full_state"].items())
    assert res_cb.clip_history == runs["full"][1].clip_history
    sa, sb = runs["full"][1].clipper.state_dict(), res_cb.clipper.state_dict()
    assert torch.equal(sa["history"], sb["history"]) and torch.equal(sa["count"], sb["count"])
    assert res_cb.instruments.step == 8
    same_history(res_cb.instruments.history, runs["full"][1].instruments.history)


def test_instruments_equal_a_hand_written_loop(runs):
    from optiscope.instruments import Instruments

    trainer, cb, _, _ = runs["full"]
    # The same instruments, clipper, schedule and (sequential) batches in a plain loop.
    model = tiny_gpt2()
    opt = torch.optim.AdamW(model.parameters(), lr=1.0)
    sched, clip = ScheduleLR(opt, SCHEDULE), AutoClip(percentile=25.0, history_size=100)
    data = Tokens(32)
    batches = [{k: torch.stack([data[i][k] for i in range(j, j + 4)]) for k in data[0]}
               for j in range(0, 32, 4)]  # fmt: skip
    inst = Instruments(model, opt, QUANTITIES, probe_batch=batches[0], batch_loss=ModelLoss(),
                       accumulation_steps=2)  # fmt: skip
    model.train()
    for step in range(8):
        for batch in (batches + batches)[2 * step : 2 * step + 2]:
            loss = model(**batch).loss
            (loss / 2).backward()
            inst.after_backward(loss, batch_size=4)
        clip(model.parameters())
        inst.before_step()
        opt.step()
        inst.after_step()
        opt.zero_grad()
        sched.step()
    inst.flush()
    got, want = cb.instruments.history, inst.history
    assert sorted(got) == sorted(want) and {"noise_scale", "loss", "lr"} <= set(got)
    for key in want:
        assert [s for s, _ in got[key]] == [s for s, _ in want[key]] == list(range(1, 9)), key
        # The model divides its summed token loss by the whole step's token count, the
        # loop averages two micro-batch means: equal up to rounding.
        np.testing.assert_allclose([v for _, v in got[key]], [v for _, v in want[key]],
                                   rtol=1e-4, atol=1e-6, err_msg=key)  # fmt: skip
    logged = {
        h["step"]: h["optiscope/instruments/noise_scale"]
        for h in trainer.state.log_history
        if "optiscope/instruments/noise_scale" in h
    }
    assert logged == pytest.approx(dict(got["noise_scale"]))


def test_default_max_grad_norm_with_a_clipper_is_an_error(tmp_path):
    trainer = _trainer(_args(tmp_path, max_grad_norm=1.0, max_steps=1))
    OptiscopeCallback(clipper="zclip").attach(trainer)
    with pytest.raises(ValueError, match="max_grad_norm=0"):
        trainer.train()


def test_a_callback_that_is_not_attached_says_how(tmp_path):
    trainer = _trainer(_args(tmp_path, max_steps=1))
    trainer.add_callback(OptiscopeCallback(clipper="zclip"))
    with pytest.raises(ValueError, match="attach"):
        trainer.train()


class Snapshot(TrainerCallback):
    def on_train_end(self, args, state, control, model=None, **kw):
        self.state = {k: v.clone() for k, v in model.state_dict().items()}
        self.training = model.training
        self.rng = torch.get_rng_state()


def test_analysis_writes_the_report_and_restores_the_model(tmp_path):
    trainer = _trainer(_args(tmp_path / "out", max_steps=3), model_fn=tiny_bert)
    snap = Snapshot()
    trainer.add_callback(snap)
    cb = OptiscopeCallback(clipper="autoclip", analysis=QUICK_ANALYSIS, run_dir=tmp_path / "run",
                           instruments={"quantities": ["loss", "sharpness", "alpha"],
                                        "sharpness_every": 3, "sharpness_iters": 5,
                                        "grad_tests_every": 3},
                           ).attach(trainer)  # fmt: skip
    trainer.train()
    assert cb.report_path is not None and cb.report_path.is_file()
    page = cb.report_path.read_text()
    assert "Top Hessian eigenvalue" in page and "transformers" in page
    # Sharpness measured through SDPA attention too.
    assert "Sharpness against the stability threshold" in page
    assert (tmp_path / "run" / "instruments.json").is_file()
    # Alpha through SDPA attention as well (forward mode, on the math backend).
    alpha = json.loads((tmp_path / "run" / "instruments.json").read_text())["history"]["alpha"]
    assert [s for s, _ in alpha] == [3] and np.isfinite(alpha[0][1]) and alpha[0][1] >= -1
    assert "Effective step size alpha" in page
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    # Curvature through the default (SDPA) attention, no attn_implementation="eager".
    assert trainer.model.config._attn_implementation == "sdpa"
    assert np.isfinite(summary["top Hessian eigenvalue"])
    after = trainer.model.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in snap.state.items())
    assert trainer.model.training == snap.training
    assert torch.equal(torch.get_rng_state(), snap.rng)


def test_lr_find_on_an_hf_model_and_the_trainers_dataloader(tmp_path):
    trainer = _trainer(_args(tmp_path, max_steps=1))
    model, loader = trainer.model, trainer.get_train_dataloader()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    first = [b for b, _ in zip(loader, range(3))]
    torch.set_rng_state(rng)
    res = lr_find(model, opt, None, loader, start_lr=1e-4, end_lr=10.0, num_iter=20)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert opt.param_groups[0]["lr"] == 0.1 and res.suggestion is not None
    # Reference: the same three steps by hand on the same batches.
    ref = tiny_gpt2()
    ref.load_state_dict(before)
    ref.train()
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.1)
    for k, batch in enumerate(first):
        for g in ref_opt.param_groups:
            g["lr"] = res.lrs[k]
        ref_opt.zero_grad()
        loss = ref(**batch).loss
        loss.backward()
        ref_opt.step()
        assert res.raw_losses[k] == pytest.approx(loss.item(), rel=1e-6)


def test_fp16_gradients_are_unscaled_once_before_the_clipper():
    # accelerate keeps the GradScaler on its AcceleratedOptimizer (CUDA fp16 only, so the
    # scaler is built by hand here, on the CPU).
    from accelerate import Accelerator
    from accelerate.optimizer import AcceleratedOptimizer

    from optiscope.integrations.transformers import _unscale

    Accelerator(cpu=True)
    w = torch.nn.Parameter(torch.tensor([3.0, 4.0]))
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    opt = AcceleratedOptimizer(torch.optim.SGD([w], lr=0.1), device_placement=False,
                               scaler=scaler)  # fmt: skip
    scaler.scale((w**2).sum() / 2).backward()
    assert torch.equal(w.grad, torch.tensor([3072.0, 4096.0]))
    _unscale(opt)
    assert torch.equal(w.grad, torch.tensor([3.0, 4.0]))
    _unscale(opt)  # already unscaled (as after the Trainer's grad-norm measurement): no-op
    opt.step()
    assert torch.allclose(w.detach(), torch.tensor([2.7, 3.6]))


@pytest.mark.parametrize(("model_fn", "accum", "ratio"), [
    (tiny_bert, 2, 2.0),  # takes **kwargs, ignores num_items_in_batch: gradients x accum
    (lambda: _named_loss(tiny_gpt2(), None), 1, 7 / 8),  # unshifted count: (T - 1) / T
    (tiny_gpt2, 2, 1.0),  # loss_type named: the textbook mean
])  # fmt: skip
def test_transformers_own_gradient_scale(model_fn, accum, ratio, tmp_path):
    # Upstream behaviour the README warns about (transformers 5.25), measured: the
    # gradient the Trainer steps with against the gradient of the mean loss of its batch.
    probe = Probe()
    trainer = _trainer(_args(tmp_path, max_steps=1, gradient_accumulation_steps=accum),
                       model_fn=model_fn, n=4 * accum)  # fmt: skip
    ref = model_fn()
    trainer.add_callback(probe)
    trainer.train()
    data = Tokens(4 * accum)
    batch = {k: torch.stack([data[i][k] for i in range(4 * accum)]) for k in data[0]}
    ref(**batch).loss.backward()
    assert probe.norms[0] == pytest.approx(ratio * global_norm(ref.parameters()), rel=1e-4)


def _named_loss(model, loss_type):
    model.loss_type = loss_type
    return model
