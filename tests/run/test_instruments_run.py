"""The ``[instruments]`` table: validated, built into the trainer, drawn in the report."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from optiscope.run.build import build_components
from optiscope.run.config import ConfigError, config_to_toml, parse_config
from optiscope.run.dynamics import instruments_callback, probe_batch, resolve_noise_source
from optiscope.run.pipeline import train_run

README = Path(__file__).parents[2] / "README.md"

# A run with only training on: the digits MLP 64-8-10 without dropout, plain SGD at a
# constant rate (threshold exactly 2/lr), 12 batches of 120 samples per epoch.
SMALL = """\
[run]
name = "inst"
threads = 1

[data]
batch_size = 120

[model]
hidden = [8]
dropout = 0.0

[optimizer]
name = "sgd"
lr = 0.05
momentum = 0.0
weight_decay = 0.0

[schedule]
name = "constant"

[train]
epochs = 1

[lr_find]
enabled = false

[landscape]
enabled = false

[curvature]
enabled = false
"""


def _config(tmp_path: Path, extra: str = "", text: str = SMALL):
    tables = parse_config(text + extra).to_dict()
    tables["run"]["out_dir"] = str(tmp_path)
    return parse_config(tables)


# --- parse and validate ---------------------------------------------------------------
def test_the_table_is_off_by_default_and_reads_every_key() -> None:
    assert parse_config("").instruments.enabled is False
    cfg = parse_config(
        '[instruments]\nenabled = true\nquantities = ["loss", "sharpness"]\nevery = 2\n'
        'sharpness_every = 8\ngrad_tests_every = 4\nnoise_source = "split"\n'
        "probe_batch_size = 32\ntrace_samples = 3\n"
    )
    i = cfg.instruments
    assert (i.enabled, i.quantities) == (True, ["loss", "sharpness"])
    assert (i.every, i.sharpness_every) == (2, 8)
    assert (i.grad_tests_every, i.noise_source, i.probe_batch_size) == (4, "split", 32)
    assert i.trace_samples == 3
    assert parse_config(config_to_toml(cfg)).to_dict() == cfg.to_dict()


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('quantities = ["sharpnes"]', "unknown quantity 'sharpnes' in [instruments] quantities "
         "(did you mean 'sharpness'?)"),
        ('quantities = "loss"', "[instruments] quantities: must be a non-empty list of names"),
        ("quantities = [1]", "[instruments] quantities: must be a non-empty list of names"),
        ('quantities = ["loss", "loss"]', "[instruments] quantities: 'loss' is listed twice"),
        ("quantities = []", "[instruments] quantities: must name at least one quantity"),
        ("every = 0", "[instruments] every: must be an int >= 1"),
        ("sharpness_every = 0", "[instruments] sharpness_every: must be an int >= 1, got 0"),
        ("grad_tests_every = -3", "[instruments] grad_tests_every: must be an int >= 1"),
        ("trace_samples = 1", "[instruments] trace_samples: must be an int >= 2, got 1"),
        ("probe_batch_size = -1", "[instruments] probe_batch_size: must be an int >= 0"),
        ("hist_bins = 0", "[instruments] hist_bins: must be an int >= 1 (bins of grad_hist)"),
        ("hist_bins_2d = [40]", "[instruments] hist_bins_2d: must be two ints >= 1"),
        ("hist_bins_2d = [40, 0]", "[instruments] hist_bins_2d: must be two ints >= 1"),
        ("hist_bins_2d = [40, 2.5]", "[instruments] hist_bins_2d: must be two ints >= 1"),
        ('hist_bins_2d = ["a", 3]', "[instruments] hist_bins_2d: must be two ints >= 1"),
        ("hist_range = -0.5", "[instruments] hist_range: must be a number >= 0"),
        ('hist_range = "auto"', "[instruments] hist_range: must be a number >= 0"),
        ('noise_source = "rank"', "[instruments] noise_source: must be one of auto, "
         "micro_batches, ddp, split, got 'rank'"),
        ('quantities = ["noise_scale"]\nnoise_source = "micro_batches"',
         "'micro_batches' needs [train] grad_accum_steps > 1"),
        ("enabled = 1", "[instruments] enabled: must be true or false, got 1"),
        ("evry = 1", "unknown key 'evry' in [instruments] (did you mean 'every'?)"),
    ],
)  # fmt: skip
def test_bad_values_name_the_key(table: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        on = "" if table.startswith("enabled") else "enabled = true\n"
        parse_config(f"[instruments]\n{on}{table}\n")
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_a_bad_table_is_one_line_and_exit_2_from_the_command(tmp_path, capsys) -> None:
    from optiscope.cli import main

    path = tmp_path / "run.toml"
    path.write_text('[instruments]\nenabled = true\nquantities = ["hessian"]\n')
    assert main(["train", "--config", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown quantity 'hessian' in [instruments] quantities" in err[0]
    assert not (tmp_path / "runs").exists()


# --- build ------------------------------------------------------------------------------
def test_no_callback_when_off_and_the_table_when_on(tmp_path) -> None:
    assert instruments_callback(_config(tmp_path), build_components(_config(tmp_path))) is None
    cfg = _config(tmp_path, '[instruments]\nenabled = true\nquantities = ["loss", "layers"]\n'
                  "every = 3\nsharpness_every = 5\n")  # fmt: skip
    cb = instruments_callback(cfg, build_components(cfg))
    assert cb.kwargs["quantities"] == ("loss", "layers")
    assert (cb.kwargs["every"], cb.kwargs["sharpness_every"]) == (3, 5)


def test_noise_source_auto_takes_what_the_run_has() -> None:
    accum = parse_config("[train]\ngrad_accum_steps = 4")
    assert resolve_noise_source(accum, world=1) == "micro_batches"
    assert resolve_noise_source(accum, world=2) == "micro_batches"
    assert resolve_noise_source(parse_config(""), world=2) == "ddp"
    assert resolve_noise_source(parse_config(""), world=1) == "split"
    with pytest.raises(ConfigError, match=r"'ddp' needs several processes"):
        resolve_noise_source(parse_config('[instruments]\nnoise_source = "ddp"'), world=1)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('[instruments]\nenabled = true\nquantities = ["preconditioned_sharpness"]\n',
         "'preconditioned_sharpness' needs [optimizer] name = 'adam' or 'adamw'"),
        ('[instruments]\nenabled = true\nquantities = ["noise_scale"]\nnoise_source = "ddp"\n',
         "[instruments] noise_source: 'ddp' needs several processes"),
    ],
)  # fmt: skip
def test_what_the_run_cannot_measure_is_a_config_error_before_anything_is_written(
    tmp_path, extra: str, message: str
) -> None:
    cfg = _config(tmp_path, extra)
    with pytest.raises(ConfigError) as info:
        train_run(cfg, echo=lambda s: None)
    assert message in str(info.value)
    assert not cfg.run_dir.exists()


def test_sharpness_on_a_model_without_trainable_parameters_is_refused(tmp_path) -> None:
    cfg = _config(tmp_path, '[instruments]\nenabled = true\nquantities = ["sharpness"]\n')
    comps = build_components(cfg)
    comps.model.requires_grad_(False)
    with pytest.raises(ConfigError, match=r"\[instruments\] quantities: .* no(ne)?"):
        instruments_callback(cfg, comps)


def test_the_probe_batch_is_the_first_samples_and_draws_no_random_number(tmp_path) -> None:
    comps = build_components(_config(tmp_path))
    state = torch.get_rng_state()
    x, y = probe_batch(comps, 50)
    assert torch.equal(torch.get_rng_state(), state)
    ds = comps.train_loader.dataset
    expected = [ds[i] for i in range(50)]
    assert torch.equal(x, torch.stack([e[0] for e in expected]))
    assert torch.equal(y, torch.stack([torch.as_tensor(e[1]) for e in expected]))


# --- train -> instruments.json -> report ------------------------------------------------
def _flat(state: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([v.flatten().double() for v in state.values()])


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    """One epoch of 12 steps with every cheap quantity, sharpness every 4 steps on a
    probe batch of 200 samples, and the noise scale from two micro-batches of 60."""
    root = tmp_path_factory.mktemp("inst")
    extra = (
        '[instruments]\nenabled = true\nquantities = ["loss", "grad_norm", "layers", '
        '"distance", "noise_scale", "sharpness", "hessian_trace", "grad_tests", "grad_hist", '
        '"grad_hist_2d", "alpha"]\nsharpness_every = 4\n'
        "grad_tests_every = 6\nprobe_batch_size = 200\nhist_bins = 24\nhist_bins_2d = [12, 30]\n"
        "hist_per_layer = true\n"
    )
    text = SMALL.replace("[train]\nepochs = 1", "[train]\nepochs = 1\ngrad_accum_steps = 2")
    text = text.replace("batch_size = 120", "batch_size = 60")
    cfg = _config(root, extra, text)
    result = train_run(cfg, echo=lambda s: None)
    history = json.loads((result.run_dir / "instruments.json").read_text())
    return cfg, result, history


def test_distance_and_sharpness_match_references_from_the_run_directory(measured) -> None:
    cfg, result, saved = measured
    h = saved["history"]
    run = result.run_dir
    # Distance: |w_final - w_init| from the trainer's checkpoint and the epoch-0 snapshot.
    init = torch.load(run / "trajectory" / "epoch_0000.pt", weights_only=True)
    final = torch.load(run / "checkpoints" / "last.pt", weights_only=True)["model"]
    ref = (_flat({k: final[k] for k in init}) - _flat(init)).norm().item()
    assert h["distance"][-1][0] == 12 and h["distance"][-1][1] == pytest.approx(ref, rel=1e-5)
    # Sharpness at step 12 (the final weights): the exact Hessian's top eigenvalue on the
    # probe batch (the first 200 training samples).
    assert [s for s, _ in h["sharpness"]] == [4, 8, 12]
    comps = build_components(cfg)
    comps.model.load_state_dict(final)
    x, y = probe_batch(comps, 200)
    names = [n for n, _ in comps.model.named_parameters()]
    shapes = [p.shape for p in comps.model.parameters()]
    flat0 = torch.cat([p.detach().flatten() for p in comps.model.parameters()])

    def loss(flat: torch.Tensor) -> torch.Tensor:
        parts, i = {}, 0
        for n, s in zip(names, shapes):
            parts[n] = flat[i : i + s.numel()].view(s)
            i += s.numel()
        out = torch.func.functional_call(comps.model, parts, (x.double(),))
        return torch.nn.functional.cross_entropy(out, y)

    H = torch.autograd.functional.hessian(loss, flat0.double())
    exact = torch.linalg.eigvalsh(H)
    # Lanczos stops at the instruments' default tolerance (1e-3 on the settling Ritz value);
    # a wrong probe batch or wrong weights would be off by far more than this.
    assert h["sharpness"][-1][1] == pytest.approx(exact[-1].item(), rel=5e-3)
    assert all(v == pytest.approx(2 / 0.05) for _, v in h["sharpness_threshold"])
    # The Hessian trace at the same step: the exact trace within 4 standard errors.
    assert [s for s, _ in h["hessian_trace"]] == [4, 8, 12]
    err = h["hessian_trace/stderr"][-1][1]
    assert 0 < err and abs(h["hessian_trace"][-1][1] - torch.trace(H).item()) <= 4 * err
    assert result.summary["final Hessian trace"] == h["hessian_trace"][-1][1]
    assert len(saved["hvp_counts"]) == 3 and all(c >= 1 for c in saved["hvp_counts"])


def test_noise_scale_reads_the_micro_batches(measured) -> None:
    _, _, saved = measured
    h = saved["history"]
    # 1,438 training samples in micro-batches of 60 (the last of 58): 12 steps of two.
    assert [s for s, _ in h["batch_size"]] == list(range(1, 13))
    assert [v for _, v in h["batch_size"]] == [120.0] * 11 + [118.0]
    assert len(h["noise_scale"]) == 12
    assert all(v is None or math.isfinite(v) for _, v in h["noise_scale"])


def test_the_report_shows_the_figures_with_captions_and_the_summary_rows(measured) -> None:
    _, result, saved = measured
    run = result.run_dir
    manifest = json.loads((run / "report.json").read_text())
    by_file = {Path(f["file"]).name: f for f in manifest["figures"]}
    for name in ("instruments_dashboard.png", "instruments_sharpness.png",
                 "instruments_noise.png", "instruments_updates.png",
                 "instruments_distance.png"):  # fmt: skip
        assert name in by_file and (run / "figures" / name).read_bytes()[:4] == b"\x89PNG"
    assert "2/lr" in by_file["instruments_sharpness.png"]["caption"]
    assert "critical batch size" in by_file["instruments_noise.png"]["caption"]
    assert "batch size this run used (120)" in by_file["instruments_noise.png"]["caption"]
    assert "every 6 optimizer steps" in by_file["instruments_grad_tests.png"]["caption"]
    assert "4 optimizer steps" in by_file["instruments_trace.png"]["caption"]
    assert (run / "figures" / "instruments_grad_tests.png").read_bytes()[:4] == b"\x89PNG"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["final sharpness"] == pytest.approx(saved["history"]["sharpness"][-1][1])
    page = (run / "report.html").read_text(encoding="utf-8")
    assert "<th>Sharpness vs its threshold (final)</th>" in page
    assert "<th>Final distance from init</th>" in page
    assert "<th>Gradient tests (final): norm, inner product, orthogonality, GSNR</th>" in page
    assert "<th>Early-stopping criterion, CABS batch size (final; for plain SGD)</th>" in page
    assert "<th>Hessian trace of the probe batch (final)</th>" in page


def test_gradient_tests_run_at_their_own_interval(measured) -> None:
    _, result, saved = measured
    h = saved["history"]
    for key in ("norm_test", "inner_product_test", "orthogonality_test", "gsnr",
                "early_stopping", "cabs"):  # fmt: skip
        assert [s for s, _ in h[f"grad_tests/{key}"]] == [6, 12], key
    assert result.summary["final norm test"] == h["grad_tests/norm_test"][-1][1]
    # At step 12 both the gradient tests and the trace ran: the TIC, mean |g_i|^2 / tr(H).
    assert [s for s, _ in h["tic"]] == [12] and result.summary["final TIC"] == h["tic"][0][1]
    assert h["tic"][0][1] > 0


def test_the_gradient_histograms_in_the_json_and_the_report(measured) -> None:
    cfg, result, saved = measured
    hists = saved["histograms"]
    model = build_components(cfg).model
    names = [n for n, _ in model.named_parameters()]
    per_tensor = [f"{k}/{n}" for k in ("grad_hist", "grad_hist_2d") for n in names]
    assert sorted(hists) == sorted(["grad_hist", "grad_hist_2d", *per_tensor])
    assert [h["step"] for h in hists["grad_hist"]] == [6, 12]  # at grad_tests_every
    # hist_per_layer: each tensor's counts on the shared bins, adding up to the total.
    for kind in ("grad_hist", "grad_hist_2d"):
        for i in range(2):
            parts = [np.asarray(hists[f"{kind}/{n}"][i]["counts"]) for n in names]
            assert np.array_equal(sum(parts), np.asarray(hists[kind][i]["counts"])), kind
    # The digits MLP 64-8-10 has 610 parameters; the probe batch is 200 samples.
    numel = sum(p.numel() for p in model.parameters())
    for h in hists["grad_hist"]:
        assert len(h["counts"]) == 24 and len(h["edges"][0]) == 25
        assert sum(h["counts"]) == 200 * numel
    last = hists["grad_hist_2d"][-1]
    assert [len(row) for row in last["counts"]] == [30] * 12  # hist_bins_2d
    assert sum(map(sum, last["counts"])) == 200 * numel
    # The parameter axis spans +-max |w| of the final weights.
    final = torch.load(result.run_dir / "checkpoints" / "last.pt", weights_only=True)["model"]
    top = max(v.abs().max().item() for v in final.values())
    assert last["edges"][1][-1] == pytest.approx(top, rel=1e-6)
    manifest = json.loads((result.run_dir / "report.json").read_text())
    by_file = {Path(f["file"]).name: f for f in manifest["figures"]}
    fig = by_file["instruments_grad_hist.png"]
    assert "every 6 optimizer steps" in fig["caption"]
    assert (result.run_dir / "figures" / "instruments_grad_hist.png").read_bytes()[:4] == b"\x89PNG"
    assert "Per-sample gradient histograms" in (result.run_dir / "report.html").read_text()
    fig = by_file["instruments_grad_hist_layers.png"]
    assert fig["title"] == "Per-sample gradient histograms of each parameter tensor"


def test_alpha_in_the_json_the_summary_and_the_report(measured) -> None:
    _, result, saved = measured
    alpha = saved["history"]["alpha"]
    assert [s for s, _ in alpha] == [6, 12]  # at grad_tests_every
    assert all(math.isfinite(v) and v >= -1 for _, v in alpha)
    assert result.summary["final alpha"] == alpha[-1][1]
    manifest = json.loads((result.run_dir / "report.json").read_text())
    fig = {Path(f["file"]).name: f for f in manifest["figures"]}["instruments_alpha.png"]
    assert fig["title"] == "Effective step size alpha"
    assert "every 6 optimizer steps" in fig["caption"]
    assert (result.run_dir / "figures" / "instruments_alpha.png").read_bytes()[:4] == b"\x89PNG"


def test_without_instruments_the_report_has_none_of_their_figures(tmp_path) -> None:
    result = train_run(_config(tmp_path), echo=lambda s: None)
    assert result.report_path is not None and result.report_path.is_file()
    assert not (result.run_dir / "instruments.json").exists()
    assert not list((result.run_dir / "figures").glob("instruments_*"))
    assert "final sharpness" not in result.summary


# --- the README's example runs ------------------------------------------------------------
def test_the_readme_instruments_example_runs(tmp_path, monkeypatch, capsys) -> None:
    text = README.read_text(encoding="utf-8").split("## Training dynamics (instruments)", 1)[1]
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {"__name__": "readme"})
    out = capsys.readouterr().out
    m = re.search(r"^16 sharpness (\S+) vs (\S+),", out, re.M)
    # SGD with momentum 0.9 at lr 0.05: the threshold is (2 + 2 * 0.9) / 0.05.
    assert m and float(m.group(1)) > 0 and float(m.group(2)) == pytest.approx(76, rel=1e-3)
    for name in ("sharpness.png", "dashboard.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"


def test_a_resumed_run_continues_the_history_exactly(tmp_path) -> None:
    extra = (
        '[instruments]\nenabled = true\nquantities = ["loss", "layers", "distance", '
        '"sharpness", "grad_hist", "alpha"]\nsharpness_every = 5\ngrad_tests_every = 7\n'
    )
    two = SMALL.replace("epochs = 1", "epochs = 2")
    straight = train_run(_config(tmp_path / "a", extra, two), echo=lambda s: None)
    train_run(_config(tmp_path / "b", extra), echo=lambda s: None)
    resumed = train_run(_config(tmp_path / "b", extra, two), resume=True, echo=lambda s: None)
    a = json.loads((straight.run_dir / "instruments.json").read_text())
    b = json.loads((resumed.run_dir / "instruments.json").read_text())
    assert [s for s, _ in a["history"]["distance"]] == list(range(1, 25))
    assert [h["step"] for h in a["histograms"]["grad_hist"]] == [7, 14, 21]
    assert [s for s, _ in a["history"]["alpha"]] == [7, 14, 21]
    assert a == b
