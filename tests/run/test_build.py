"""Building a run from a config: schedules, optimizer, data, model, weights, figures."""

from __future__ import annotations

import math
import sys
import types
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from optiscope.run.build import (
    batches_per_epoch,
    build_clipper,
    build_data,
    build_loss,
    build_model,
    build_optimizer,
    build_schedule,
)
from optiscope.run.config import ConfigError, parse_config


def _cfg(text: str):
    return parse_config(text)


def _guide_warmup_cosine(t, warmup, total, peak, floor):
    # The guide's WarmupCosineSchedule.get_lr, written out.
    if t < warmup:
        return peak * t / warmup
    progress = (t - warmup) / (total - warmup)
    return floor + (peak - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


class TestSchedule:
    def test_warmup_cosine_gets_lengths_and_peak_from_the_run(self) -> None:
        cfg = _cfg(
            "[optimizer]\nlr = 0.2\n[train]\nepochs = 3\n"
            "[schedule]\nname = 'warmup_cosine'\nwarmup_epochs = 0.5\nmin_lr = 1e-3"
        )
        s = build_schedule(cfg, steps_per_epoch=10)
        want = [_guide_warmup_cosine(t, 5, 30, 0.2, 1e-3) for t in range(30)]
        assert [s(t) for t in range(30)] == pytest.approx(want, rel=1e-12, abs=0)

    def test_a_schedule_without_warmup_gets_one_in_front(self) -> None:
        cfg = _cfg(
            "[optimizer]\nlr = 0.1\n[train]\nepochs = 3\n"
            "[schedule]\nname = 'cosine'\nwarmup_epochs = 1\nmin_lr = 0.01"
        )
        s = build_schedule(cfg, steps_per_epoch=4)
        for t in range(12):
            if t < 4:
                want = 0.1 * t / 4
            else:
                want = 0.01 + 0.09 * (1 + math.cos(math.pi * (t - 4) / 8)) / 2
            assert s(t) == pytest.approx(want, rel=1e-12, abs=1e-15), t

    def test_epoch_interval_counts_epochs(self) -> None:
        cfg = _cfg(
            "[optimizer]\nlr = 0.1\n[train]\nepochs = 10\n"
            "[schedule]\nname = 'step_decay'\ninterval = 'epoch'\nepochs_drop = 3"
        )
        s = build_schedule(cfg, steps_per_epoch=50)
        assert [s(e) for e in (0, 2, 3, 9)] == pytest.approx([0.1, 0.1, 0.05, 0.0125])

    def test_keys_the_user_gives_win(self) -> None:
        cfg = _cfg(
            "[optimizer]\nlr = 0.1\n[train]\nepochs = 2\n"
            "[schedule]\nname = 'cosine'\ninitial_lr = 0.5\nT_max = 7"
        )
        s = build_schedule(cfg, steps_per_epoch=10)
        assert s.initial_lr == 0.5 and s.T_max == 7

    def test_constant_takes_the_optimizer_lr(self) -> None:
        s = build_schedule(_cfg("[optimizer]\nlr = 0.03"), steps_per_epoch=5)
        assert s(0) == s(49) == 0.03

    def test_warmup_as_long_as_training_is_refused(self) -> None:
        cfg = _cfg("[train]\nepochs = 2\n[schedule]\nname = 'cosine'\nwarmup_epochs = 2")
        with pytest.raises(ConfigError, match="warmup_epochs: must be shorter"):
            build_schedule(cfg, steps_per_epoch=3)


@pytest.mark.parametrize(("accum", "steps"), [(1, 12), (2, 6), (5, 3), (12, 1), (50, 1)])
def test_steps_per_epoch_counts_the_partial_last_group(accum: int, steps: int) -> None:
    from optiscope.run.build import build_components

    cfg = _cfg(
        f"[data]\nbatch_size = 128\n[model]\nhidden = [4]\n[train]\ngrad_accum_steps = {accum}"
    )
    assert build_components(cfg).steps_per_epoch == steps


def test_optimizer_matches_the_config_and_spares_biases_from_decay() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    cfg = _cfg("[optimizer]\nname = 'adamw'\nlr = 0.02\nweight_decay = 0.1\nbetas = [0.8, 0.95]")
    opt = build_optimizer(cfg, model)
    assert isinstance(opt, torch.optim.AdamW)
    decay, no_decay = opt.param_groups
    assert [p.shape for p in decay["params"]] == [torch.Size([3, 4])]
    assert len(no_decay["params"]) == 3  # linear bias, norm weight and bias
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert decay["lr"] == 0.02 and decay["betas"] == (0.8, 0.95)
    sgd = build_optimizer(_cfg("[optimizer]\nname = 'sgd'\nmomentum = 0.5\nnesterov = true"), model)
    assert sgd.param_groups[0]["momentum"] == 0.5 and sgd.param_groups[0]["nesterov"]
    with pytest.raises(ConfigError, match=r"\[optimizer\] \(sgd\)"):
        build_optimizer(_cfg("[optimizer]\nname = 'sgd'\nmomentum = 0.0\nnesterov = true"), model)


def test_model_is_seeded_and_cnn_gets_image_data() -> None:
    a = build_model(_cfg("[run]\nseed = 3"))
    b = build_model(_cfg("[run]\nseed = 3"))
    c = build_model(_cfg("[run]\nseed = 4"))
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))
    assert not torch.equal(next(a.parameters()), next(c.parameters()))
    train, _ = build_data(_cfg("[model]\nname = 'cnn'\nchannels = 4\n[data]\nbatch_size = 7"))
    x, y = next(iter(train))
    assert x.shape == (7, 1, 8, 8) and y.shape == (7,)


@pytest.fixture
def factories(monkeypatch):
    mod = types.ModuleType("opti_factories")
    calls = {}

    def loaders(batch_size, seed, scale=1.0):
        calls["loaders"] = (batch_size, seed, scale)
        data = torch.utils.data.TensorDataset(torch.randn(20, 3) * scale, torch.zeros(20).long())
        dl = torch.utils.data.DataLoader(data, batch_size=batch_size)
        return dl, dl

    def bad_loaders():
        return "nope"

    def net(width=2):
        return torch.nn.Linear(3, width)

    def frozen():
        return torch.nn.Linear(3, 2).requires_grad_(False)

    mod.loaders, mod.bad_loaders, mod.net, mod.frozen, mod.not_callable = (
        loaders, bad_loaders, net, frozen, 3
    )  # fmt: skip
    monkeypatch.setitem(sys.modules, "opti_factories", mod)
    return calls


def test_import_path_factories_get_their_keys(factories) -> None:
    cfg = _cfg(
        "[run]\nseed = 9\n[data]\nname = 'opti_factories:loaders'\nbatch_size = 5\nscale = 2.0"
        "\n[model]\nname = 'opti_factories:net'\nwidth = 4"
    )
    train, _ = build_data(cfg)
    assert factories["loaders"] == (5, 9, 2.0) and len(train) == 4
    assert build_model(cfg).out_features == 4


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[data]\nname = 'opti_factories:bad_loaders'", "must return (train_loader, val_loader)"),
        ("[data]\nname = 'opti_factories:loaders'\ncolour = 1", "unknown key 'colour' in [data]"),
        ("[data]\nimage = 'yes'\nzoom = 2", "unknown key 'zoom' in [data] for digits"),
        ("[model]\nname = 'opti_factories:frozen'", "no trainable parameters"),
        ("[model]\nname = 'opti_factories:not_callable'", "is not callable"),
        ("[clipping]\nname = 'none'\nmax_norm = 1.0", "set name to a clipper"),
        ("[clipping]\nname = 'zclip'\nz = 1", "unknown key 'z' in [clipping] for zclip"),
        ("[train]\nloss = 'torch.nn:NoSuchLoss'", "has no attribute 'NoSuchLoss'"),
    ],
)
def test_bad_factories_name_the_key(factories, text: str, message: str) -> None:
    cfg = _cfg(text)
    with pytest.raises(ConfigError) as info:
        build_data(cfg)
        build_model(cfg)
        build_clipper(cfg)
        build_loss(cfg)
    assert message in str(info.value)


def test_an_error_inside_a_user_factory_shows_its_own_traceback(factories) -> None:
    # A factory that fails is the user's code failing, not a bad config key: torch's own
    # error comes through unchanged instead of becoming a one-line ConfigError.
    cfg = _cfg("[model]\nname = 'opti_factories:net'\nwidth = -1")
    with pytest.raises(RuntimeError, match="negative dimension") as info:
        build_model(cfg)
    assert not isinstance(info.value, ConfigError)


def test_a_bad_value_for_optiscope_own_objects_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"\[model\] \(digits_mlp\): dropout must be in"):
        build_model(_cfg("[model]\nname = 'mlp'\ndropout = 1.5"))
    with pytest.raises(ConfigError, match=r"\[optimizer\] \(sgd\): Nesterov"):
        build_optimizer(_cfg("[optimizer]\nname = 'sgd'\nmomentum = 0.0\nnesterov = true"),
                        torch.nn.Linear(2, 2))  # fmt: skip


def test_loss_model_means_the_model_computes_its_own() -> None:
    assert build_loss(_cfg("[train]\nloss = 'model'")) is None


def test_clipper_and_loss_by_name() -> None:
    from optiscope.clipping import NormClip, ZClip

    assert build_clipper(_cfg("")) is None
    clipper = build_clipper(_cfg("[clipping]\nname = 'norm'\nmax_norm = 2.0"))
    assert isinstance(clipper, NormClip) and clipper.max_norm == 2.0
    assert isinstance(build_clipper(_cfg("[clipping]\nname = 'ZClip'")), ZClip)
    assert isinstance(build_loss(_cfg("[train]\nloss = 'mse'")), torch.nn.MSELoss)
    fn = build_loss(_cfg("[train]\nloss = 'torch.nn.functional:cross_entropy'"))
    assert fn is torch.nn.functional.cross_entropy


def test_batches_per_epoch_matches_a_distributed_sampler(monkeypatch) -> None:
    import torch.distributed as dist
    from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

    data = TensorDataset(torch.zeros(1438, 1))
    for drop_last in (False, True):
        loader = DataLoader(data, batch_size=128, drop_last=drop_last)
        assert batches_per_epoch(loader) == len(loader)
        for world in (2, 3):
            monkeypatch.setattr(dist, "is_initialized", lambda: True)
            monkeypatch.setattr(dist, "get_world_size", lambda w=world: w)
            sharded = DataLoader(
                data,
                batch_size=128,
                drop_last=drop_last,
                sampler=DistributedSampler(data, num_replicas=world, rank=0),
            )
            assert batches_per_epoch(loader) == len(sharded)
            monkeypatch.undo()


def test_load_weights_accepts_checkpoints_and_state_dicts(tmp_path) -> None:
    from optiscope.run.pipeline import load_weights

    src, dst = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    torch.save({"kind": "x", "model": src.state_dict()}, tmp_path / "ckpt.pt")
    load_weights(dst, tmp_path / "ckpt.pt")
    assert torch.equal(src.weight, dst.weight) and torch.equal(src.bias, dst.bias)
    torch.save(torch.nn.Linear(3, 2).state_dict(), tmp_path / "plain.pt")
    load_weights(dst, tmp_path / "plain.pt")
    assert not torch.equal(src.weight, dst.weight)
    torch.save({"model": torch.nn.Linear(4, 2).state_dict()}, tmp_path / "other.pt")
    before = dst.weight.clone()
    with pytest.raises(ConfigError, match=r"shape mismatch weight: \(2, 4\) vs \(2, 3\)"):
        load_weights(dst, tmp_path / "other.pt")
    assert torch.equal(dst.weight, before)


def test_evaluation_data_concatenates_the_split() -> None:
    from optiscope.run.analyse import evaluation_data

    train, _ = build_data(_cfg("[data]\nbatch_size = 100"))
    X, y = evaluation_data(train)
    assert X.shape == (1438, 64) and y.shape == (1438,)
    X4, _ = evaluation_data(train, max_batches=4)
    assert X4.shape == (400, 64)


def test_trajectory_recorder_saves_every_k_epochs(tmp_path) -> None:
    from optiscope.run.trajectory import TrajectoryRecorder, load_trajectory

    model = torch.nn.Linear(2, 1)
    trainer = SimpleNamespace(model=model, epoch=0)
    rec = TrajectoryRecorder(tmp_path, every=2)
    rec.on_train_start(trainer)
    for epoch in range(1, 6):
        with torch.no_grad():
            model.weight.fill_(float(epoch))
        trainer.epoch = epoch
        rec.on_epoch_end(trainer)
    states = load_trajectory(tmp_path)
    assert [float(s["weight"][0, 0]) for s in states[1:]] == [2.0, 4.0]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "epoch_0000.pt", "epoch_0002.pt", "epoch_0004.pt"
    ]  # fmt: skip
    # Resumed inside the first epoch: the initial snapshot on disk is kept.
    first = load_trajectory(tmp_path)[0]["weight"].clone()
    rec.on_train_start(SimpleNamespace(model=torch.nn.Linear(2, 1), epoch=0, global_step=3))
    assert torch.equal(load_trajectory(tmp_path)[0]["weight"], first)
    with pytest.raises(ValueError, match="every must be an int >= 1"):
        TrajectoryRecorder(tmp_path, every=0)
    assert load_trajectory(tmp_path / "missing") == []


def test_training_curves_mark_exactly_the_clipped_steps() -> None:
    from optiscope.run.figures import training_curves_figure

    rng = np.random.default_rng(0)
    norms = rng.uniform(0.2, 2.0, 30)
    history = [
        SimpleNamespace(step=i, epoch=1 + i // 10, loss=1.0 / (i + 1), grad_norm=float(n),
                        lr=0.1, clipped=bool(n > 1.0), skipped=False)
        for i, n in enumerate(norms)
    ]  # fmt: skip
    fig = training_curves_figure(history, [0.5, 0.3, 0.2], [0.6, 0.4, 0.3], [0.8, 0.9, None],
                                 clip_threshold=1.0)  # fmt: skip
    ax = fig.axes[3]
    (points,) = ax.collections
    np.testing.assert_array_equal(points.get_offsets()[:, 0], np.flatnonzero(norms > 1.0))
    assert ax.get_lines()[-1].get_ydata()[0] == 1.0  # the threshold line
    # Epoch means are drawn at the step that ends each epoch.
    assert list(fig.axes[0].get_lines()[1].get_xdata()) == [10, 20, 30]
    with pytest.raises(ValueError, match="history is empty"):
        training_curves_figure([], [], [], [])


def test_steps_per_epoch_is_what_the_trainer_takes() -> None:
    from optiscope.run.build import build_components
    from optiscope.training import AdvancedTrainer

    cfg = _cfg("[data]\nbatch_size = 128\n[model]\nhidden = [4]\n[train]\ngrad_accum_steps = 5")
    comps = build_components(cfg)
    trainer = AdvancedTrainer(
        comps.model, comps.optimizer, comps.loss_fn, grad_accum_steps=5, verbose=False,
        progress_bar=False,
    )  # fmt: skip
    trainer.train(comps.train_loader, None, 1, max_grad_norm=None)
    assert trainer.global_step == comps.steps_per_epoch == 3
