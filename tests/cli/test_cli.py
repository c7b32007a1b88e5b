"""The ``optiscope`` command through real subprocesses, on a tiny config."""

from __future__ import annotations

import base64
import json
import math
import re
import sys
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from tests._processes import assert_worker_ok

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

COMMANDS = ["demo", "train", "lr-find", "landscape", "report"]
EXPECTED_FIGURES = {
    "schedule_comparison.png",
    "schedule_used.png",
    "lr_find.png",
    "training_curves.png",
    "landscape_1d.png",
    "landscape_contour.png",
    "landscape_surface.png",
    "landscape_surface.plotly.json",
    "trajectory_pca.png",
    "hessian_top_direction.png",
    "instruments_dashboard.png",
    "instruments_sharpness.png",
    "instruments_trace.png",
    "instruments_noise.png",
    "instruments_updates.png",
    "instruments_distance.png",
}

# Every instrument the 2-process run can have: per-step quantities on every rank, the
# noise scale from each rank's gradient against the all-reduced one (noise_source =
# "auto" finds DDP), probes and the history file on rank 0.
INSTRUMENTS = """
[instruments]
enabled = true
quantities = ["loss", "grad_norm", "layers", "distance", "noise_scale", "sharpness",
              "preconditioned_sharpness", "hessian_trace"]
sharpness_every = 4
"""


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def _steps(checkpoint: dict) -> dict[str, list]:
    """The per-step history of a trainer checkpoint as columns of Python values."""
    steps = checkpoint["history"]["steps"]
    if isinstance(steps, dict):  # stored as tensor columns
        return {k: v.tolist() if isinstance(v, torch.Tensor) else list(v) for k, v in steps.items()}
    return {k: [r[k] for r in steps] for k in steps[0]}


def _tags(page: str) -> list[tuple[str, dict]]:
    p = _Tags()
    p.feed(page)
    return p.tags


@pytest.fixture(scope="module")
def trained(cli, tmp_path_factory) -> SimpleNamespace:
    """One full tiny run (every stage on) under a hostile run name, with two processes.

    Started by torchrun (gloo), so the whole pipeline runs under DistributedDataParallel
    with the landscapes sharded across the ranks; the demo test covers one process.
    """
    root = tmp_path_factory.mktemp("trained")
    text = cli.replace_in(cli.tiny, 'name = "tiny"', f"name = {json.dumps(cli.hostile)}")
    config = cli.write_config(root, text + INSTRUMENTS)
    proc = cli.run(["train", "--config", str(config), "--out-dir", str(root / "runs")], nproc=2)
    return SimpleNamespace(proc=proc, config=config, root=root, run_dir=root / "runs" / cli.hostile)


# Each of the two ranks gets ceil(1438 / 2) = 719 samples: 6 batches of 128 per epoch.
STEPS_PER_EPOCH = 6


def test_train_writes_the_whole_run_directory(trained) -> None:
    assert_worker_ok(trained.proc.returncode, trained.proc.stderr)
    run = trained.run_dir
    assert trained.proc.stdout.strip().splitlines()[-1] == f"report: {run / 'report.html'}"
    for name in ("config.toml", "metrics.csv", "metrics.jsonl", "summary.json", "report.json"):
        assert (run / name).is_file(), name
    assert (run / "checkpoints" / "last.pt").is_file()
    assert (run / "checkpoints" / "best.pt").is_file()
    snaps = sorted(p.name for p in (run / "trajectory").glob("epoch_*.pt"))
    assert snaps == [f"epoch_{i:04d}.pt" for i in range(4)]
    assert EXPECTED_FIGURES <= {p.name for p in (run / "figures").iterdir()}
    summary = json.loads((run / "summary.json").read_text())
    assert summary["epochs"] == 3 and summary["optimizer steps"] == 3 * STEPS_PER_EPOCH
    assert summary["processes"] == 2
    assert 0.0 < summary["final val accuracy"] <= 1.0
    assert summary["top Hessian eigenvalue"] > 0
    layers = summary["per-layer Hessian"]
    assert list(layers) == ["0", "3"]  # the two Linear layers of the 64-16-10 MLP
    assert sum(size for _, _, size in layers.values()) == summary["parameters"] == 1210
    assert all(top > 0 and math.isfinite(trace) for top, trace, _ in layers.values())
    assert "LinearWarmup" in summary["schedule"] and "NormClip" in summary["clipping"]


def test_rank_0_writes_the_instruments_history_with_the_ddp_noise_scale(trained) -> None:
    assert_worker_ok(trained.proc.returncode, trained.proc.stderr)
    run = trained.run_dir
    h = json.loads((run / "instruments.json").read_text())["history"]
    n = 3 * STEPS_PER_EPOCH
    # Distance after the last step: |w_final - w_init| from last.pt and the epoch-0 snapshot.
    init = torch.load(run / "trajectory" / "epoch_0000.pt", weights_only=True)
    final = torch.load(run / "checkpoints" / "last.pt", weights_only=True)["model"]
    ref = torch.cat([(final[k] - v).flatten() for k, v in init.items()]).norm().item()
    assert h["distance"][-1] == [n, pytest.approx(ref, rel=1e-5)]
    assert [s for s, _ in h["loss"]] == list(range(1, n + 1))
    # The large batch is both ranks' 128 (the last of each epoch: 2 x 79 of 719 per rank).
    assert [v for _, v in h["batch_size"]] == ([256.0] * 5 + [158.0]) * 3
    assert len(h["noise_scale"]) == n and all(math.isfinite(v) for _, v in h["noise_scale"])
    assert [s for s, _ in h["sharpness"]] == list(range(4, n + 1, 4))
    assert [s for s, _ in h["preconditioned_sharpness"]] == list(range(4, n + 1, 4))
    summary = json.loads((run / "summary.json").read_text())
    assert summary["final distance from init"] == pytest.approx(ref, rel=1e-5)


def test_applied_learning_rates_and_clip_flags_follow_the_config(trained) -> None:
    from optiscope.run.build import build_schedule
    from optiscope.run.config import load_config

    assert_worker_ok(trained.proc.returncode, trained.proc.stderr)
    ckpt = torch.load(trained.run_dir / "checkpoints" / "last.pt", weights_only=True)
    steps = _steps(ckpt)
    n = STEPS_PER_EPOCH
    schedule = build_schedule(load_config(trained.run_dir / "config.toml"), n)
    # warmup_epochs = 1 became n warmup steps in front of a cosine over the other 2n.
    assert schedule.warmup_steps == n and schedule.after.T_max == 2 * n
    assert steps["step"] == list(range(3 * n))
    assert steps["lr"] == pytest.approx([schedule(k) for k in range(3 * n)], rel=1e-12)
    assert [bool(c) for c in steps["clipped"]] == [g > 1.0 for g in steps["grad_norm"]]


def test_report_has_every_figure_inline_and_escapes_the_name(trained, cli) -> None:
    assert_worker_ok(trained.proc.returncode, trained.proc.stderr)
    run = trained.run_dir
    page = (run / "report.html").read_text(encoding="utf-8")
    manifest = json.loads((run / "report.json").read_text())
    files = {Path(f["file"]).name for f in manifest["figures"]}
    assert files == EXPECTED_FIGURES
    assert not [n for n in manifest["notes"] if "skipped" in n]  # no stage was skipped
    imgs = [a["src"] for t, a in _tags(page) if t == "img"]
    pngs = [f for f in manifest["figures"] if f["kind"] == "image"]
    assert len(imgs) == len(pngs) == len(EXPECTED_FIGURES) - 1
    for src, fig in zip(imgs, pngs):
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]) == (run / fig["file"]).read_bytes()
    assert page.count('class="plotly-graph-div"') == 1
    for title in ("LR range test", "Training curves", "Training trajectory on the PCA plane"):
        assert title in page
    rows = ("Final validation accuracy", "Top Hessian eigenvalue", "Clipping", "Schedule",
            "Per-layer Hessian (top eigenvalue, trace)")  # fmt: skip
    for row in rows:
        assert f"<th>{row}</th>" in page
    assert cli.hostile not in page and "&lt;img src=x onerror=alert(1)&gt;&amp;" in page
    for tag, attrs in _tags(page):
        for key in ("src", "href"):
            assert not re.match(r"\s*(https?:)?//", attrs.get(key) or ""), (tag, attrs)
        assert "onerror" not in attrs


def test_report_loads_offline_in_headless_chromium(trained, cli) -> None:
    if cli.chromium is None:
        pytest.skip("chromium is not installed")
    assert_worker_ok(trained.proc.returncode, trained.proc.stderr)
    loaded, images, drawn, plots = cli.probe(trained.run_dir / "report.html")
    assert images == len(EXPECTED_FIGURES) - 1 and loaded == images
    assert plots == 1 and drawn == 1


def test_train_refuses_to_overwrite_and_resume_needs_a_run(trained, capsys, tmp_path) -> None:
    from optiscope.cli import main

    assert_worker_ok(trained.proc.returncode, trained.proc.stderr)
    base = ["train", "--config", str(trained.config)]
    assert main([*base, "--out-dir", str(trained.root / "runs")]) == 2
    assert "already holds a run; pass --resume" in capsys.readouterr().err
    assert main([*base, "--out-dir", str(tmp_path), "--resume"]) == 2
    assert "nothing to resume" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_report_command_rebuilds_the_page(trained, cli) -> None:
    assert_worker_ok(trained.proc.returncode, trained.proc.stderr)
    page = trained.run_dir / "report.html"
    before = page.read_text(encoding="utf-8")
    page.unlink()
    proc = cli.run(["report", str(trained.run_dir)])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"report: {page}"
    strip = re.compile(r"Generated [0-9: -]+ from")
    assert strip.sub("", page.read_text(encoding="utf-8")) == strip.sub("", before)


def test_landscape_command_recomputes_figures_for_a_checkpoint(trained, cli) -> None:
    assert_worker_ok(trained.proc.returncode, trained.proc.stderr)
    fig = trained.run_dir / "figures" / "landscape_contour.png"
    fig.unlink()
    proc = cli.run(
        [
            "landscape",
            "--config", str(trained.config),
            "--checkpoint", str(trained.run_dir / "checkpoints" / "best.pt"),
            "--out-dir", str(trained.root / "runs"),
        ]
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert fig.is_file()
    assert f"figure: {fig}" in proc.stdout
    assert f"report: {trained.run_dir / 'report.html'}" in proc.stdout


def test_landscape_rejects_corrupt_and_missing_checkpoints(trained, capsys, tmp_path) -> None:
    from optiscope.cli import main

    assert_worker_ok(trained.proc.returncode, trained.proc.stderr)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    not_weights = tmp_path / "numbers.pt"
    torch.save({"model": {"w": 1}}, not_weights)
    cases = [
        (garbage, "is not a readable checkpoint"),
        (not_weights, "holds no model weights"),
        (tmp_path / "missing.pt", "checkpoint not found"),
    ]
    for ckpt, message in cases:
        args = ["landscape", "--config", str(trained.config), "--checkpoint", str(ckpt)]
        assert main([*args, "--out", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err


CRASHY = """
import os
from torch import nn


class Counting(nn.Sequential):
    calls = 0

    def forward(self, x):
        if self.training:
            type(self).calls += 1
            if type(self).calls == int(os.environ.get("CRASH_AT_BATCH", "0")):
                raise KeyboardInterrupt  # what Ctrl-C in the middle of an epoch raises
        return super().forward(x)


def mlp(width=16):
    return Counting(nn.Linear(64, width), nn.ReLU(), nn.Dropout(0.2), nn.Linear(width, 10))
"""

LEAN = """
[report]
enabled = false
[lr_find]
enabled = false
[landscape]
enabled = false
[curvature]
enabled = false
"""


def test_resume_after_an_interruption_reproduces_the_run(
    cli, tmp_path, monkeypatch, capsys
) -> None:
    # In this process through the same entry point as the command (three runs in
    # subprocesses would spend most of their time importing torch and scikit-learn).
    import importlib

    from optiscope.cli import main

    (tmp_path / "crashy.py").write_text(CRASHY)
    monkeypatch.syspath_prepend(str(tmp_path))
    crashy = importlib.import_module("crashy")
    text = cli.replace_in(
        cli.tiny, 'name = "mlp"\nhidden = [16]\ndropout = 0.1', 'name = "crashy:mlp"'
    )
    text = text.split("[lr_find]")[0] + LEAN
    text = cli.replace_in(text, "[train]\n", "[train]\ncheckpoint_every_steps = 5\n")
    full = cli.write_config(
        tmp_path, cli.replace_in(text, 'name = "tiny"', 'name = "full"'), "a.toml"
    )
    cut = cli.write_config(
        tmp_path, cli.replace_in(text, 'name = "tiny"', 'name = "cut"'), "b.toml"
    )
    runs = ["--out-dir", str(tmp_path / "runs")]
    assert main(["train", "--config", str(full), *runs]) == 0
    # Interrupted in epoch 2 (batch 20 of 36), after the checkpoint at step 15.
    crashy.Counting.calls = 0
    monkeypatch.setenv("CRASH_AT_BATCH", "20")
    assert main(["train", "--config", str(cut), *runs]) == 130
    err = capsys.readouterr().err
    assert f"continue the run with: optiscope train --config {cut} --resume" in err
    monkeypatch.delenv("CRASH_AT_BATCH")
    assert main(["train", "--config", str(cut), *runs, "--resume"]) == 0
    a = torch.load(tmp_path / "runs" / "full" / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "runs" / "cut" / "checkpoints" / "last.pt", weights_only=True)
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert _steps(a) == _steps(b)
    summary = json.loads((tmp_path / "runs" / "cut" / "summary.json").read_text())
    assert summary["epochs"] == 3 and summary["optimizer steps"] == 36


def test_diverging_training_stops_with_one_line(cli, tmp_path, capsys) -> None:
    from optiscope.cli import main

    text = cli.tiny.split("[lr_find]")[0] + LEAN
    text = cli.replace_in(text, "lr = 0.01", "lr = 1e30")
    text = cli.replace_in(text, 'name = "norm"\nmax_norm = 1.0', 'name = "none"')
    text = cli.replace_in(text, "[train]\n", '[train]\nnonfinite = "raise"\n')
    config = cli.write_config(tmp_path, text)
    assert main(["train", "--config", str(config), "--out-dir", str(tmp_path / "runs")]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("optiscope: training stopped: non-finite")


def test_lr_find_command_with_an_import_path_model(cli, tmp_path) -> None:
    (tmp_path / "crashy.py").write_text(CRASHY)
    text = cli.replace_in(
        cli.tiny, 'name = "mlp"\nhidden = [16]\ndropout = 0.1', 'name = "crashy:mlp"\nwidth = 8'
    )
    config = cli.write_config(tmp_path, text)
    out = tmp_path / "lr.png"
    proc = cli.run(["lr-find", "--config", str(config), "--out", str(out)], extra_path=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = re.search(r"suggested lr: ([0-9.e+-]+)", proc.stdout)
    assert m and 1e-7 <= float(m.group(1)) <= 10.0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_demo_quick_run_prints_the_report_path(cli, tmp_path) -> None:
    proc = cli.run(["demo", "--out", str(tmp_path), "--name", "smoke", "--epochs", "2", "--quick"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = tmp_path / "smoke" / "report.html"
    assert proc.stdout.strip().splitlines()[-1] == f"report: {report}"
    figures = {p.name for p in (tmp_path / "smoke" / "figures").iterdir()}
    # The demo accumulates two micro-batches, which the noise scale reads.
    assert EXPECTED_FIGURES <= figures
    summary = json.loads((tmp_path / "smoke" / "summary.json").read_text())
    assert summary["final critical batch size"] is not None
    assert summary["epochs"] == 2 and "WarmupCosineSchedule" in summary["schedule"]
    # The README's listing of runs/demo/ is exactly what the demo writes.
    listed = set(_readme_run_dir_listing())
    written = {p.name + ("/" if p.is_dir() else "") for p in (tmp_path / "smoke").iterdir()}
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        listed.discard("tensorboard/")
    assert written == listed
    snaps = sorted(p.name for p in (tmp_path / "smoke" / "trajectory").iterdir())
    assert snaps == ["epoch_0000.pt", "epoch_0001.pt", "epoch_0002.pt"]
    checkpoints = {p.name for p in (tmp_path / "smoke" / "checkpoints").iterdir()}
    assert checkpoints == {"last.pt", "best.pt"}


def _readme_run_dir_listing() -> list[str]:
    text = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    block = text.split("```\nruns/demo/\n", 1)[1].split("```", 1)[0]
    return [line.split()[0] for line in block.splitlines() if line.strip()]


def test_demo_print_config_is_the_demo_and_a_valid_train_config(capsys) -> None:
    from optiscope.cli import main
    from optiscope.run.config import parse_config
    from optiscope.run.demo import demo_config

    assert main(["demo", "--print-config"]) == 0
    out = capsys.readouterr().out
    tomllib.loads(out)
    assert parse_config(out).to_dict() == demo_config().to_dict()


def test_examples_digits_toml_is_the_demo_under_another_name() -> None:
    from optiscope.run.config import load_config
    from optiscope.run.demo import demo_config

    example = load_config(Path(__file__).parents[2] / "examples" / "digits.toml").to_dict()
    demo = demo_config().to_dict()
    assert example["run"].pop("name") == "digits-mlp" and demo["run"].pop("name") == "demo"
    assert example == demo


def test_top_level_help_lists_every_command(cli) -> None:
    proc = cli.run(["--help"])
    assert proc.returncode == 0
    for name in [*COMMANDS, "schedules"]:
        if name == "schedules" and "schedules" not in proc.stdout:
            continue  # registered by the schedules area
        assert re.search(rf"^\s+{name}\b", proc.stdout, re.M), name


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_has_help(capsys, name: str) -> None:
    from optiscope.cli import main

    with pytest.raises(SystemExit) as info:
        main([name, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: optiscope {name}")
    assert "--config" in out or name in ("demo", "report")
