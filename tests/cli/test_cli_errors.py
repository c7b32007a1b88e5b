"""Bad input on the command line: one clear line on stderr, exit code 2, no traceback.

The kinds of bad input the issue names (missing file, invalid TOML, unknown key, unknown
schedule, bad value, another model's checkpoint) run as real subprocesses, launched
together since each spends most of its time importing torch. The many finer cases go
through the same entry point, ``optiscope.cli.main``, in this process.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

# (case id, command line with {config}/{dir} placeholders, config text or None, message)
CASES = [
    ("missing-config", ["train", "--config", "{dir}/nope.toml"], None, "config file not found"),
    ("invalid-toml", ["train", "--config", "{config}"], "[train\nepochs = 3", "invalid TOML"),
    (
        "unknown-table",
        ["train", "--config", "{config}"],
        "[trainer]\nepochs = 1",
        "unknown table 'trainer' (did you mean 'train'?)",
    ),
    (
        "unknown-key",
        ["train", "--config", "{config}"],
        "[train]\nepoch = 3",
        "unknown key 'epoch' in [train] (did you mean 'epochs'?)",
    ),
    (
        "bad-value",
        ["train", "--config", "{config}"],
        "[optimizer]\nlr = -1",
        "[optimizer] lr: must be a float > 0, got -1.0",
    ),
    (
        "bad-choice",
        ["train", "--config", "{config}"],
        "[train]\nprecision = 'fp8'",
        "[train] precision: must be one of 32, bf16, 16-mixed, got 'fp8'",
    ),
    (
        "unknown-schedule",
        ["train", "--config", "{config}"],
        "[schedule]\nname = 'cosine_annealing'",
        "[schedule] name: unknown schedule 'cosine_annealing'; known: constant, cosine,",
    ),
    (
        "unknown-schedule-key",
        ["train", "--config", "{config}"],
        "[schedule]\nname = 'cosine'\ngamma = 0.5",
        "unknown key 'gamma' in [schedule] for cosine; allowed: name, initial_lr, min_lr, T_max",
    ),
    (
        "bad-schedule-value",
        ["train", "--config", "{config}"],
        "[schedule]\nname = 'cosine'\nmin_lr = -1.0",
        "[schedule] (cosine): ",
    ),
    (
        "warmup-too-long",
        ["train", "--config", "{config}"],
        "[train]\nepochs = 2\n[schedule]\nname = 'cosine'\nwarmup_epochs = 3",
        "[schedule] warmup_epochs: must be shorter than [train] epochs (2)",
    ),
    (
        "unknown-clipper",
        ["train", "--config", "{config}"],
        "[clipping]\nname = 'clip'",
        "[clipping] name: unknown clipper 'clip'",
    ),
    (
        "bad-clipper-value",
        ["train", "--config", "{config}"],
        "[clipping]\nname = 'norm'\nmax_norm = 0.0",
        "[clipping] (norm): ",
    ),
    (
        "unknown-model-key",
        ["train", "--config", "{config}"],
        "[model]\nname = 'mlp'\nwidth = 3",
        "unknown key 'width' in [model] for digits_mlp; allowed: name, hidden, dropout",
    ),
    (
        "missing-module",
        ["train", "--config", "{config}"],
        "[model]\nname = 'nosuchpkg.mod:make'",
        "[model] name: cannot import module 'nosuchpkg.mod'",
    ),
    (
        "missing-attribute",
        ["train", "--config", "{config}"],
        "[model]\nname = 'optiscope.models:nope'",
        "[model] name: module 'optiscope.models' has no attribute 'nope'",
    ),
    (
        "lr-find-missing-config",
        ["lr-find", "--config", "{dir}/nope.toml"],
        None,
        "config file not found",
    ),
    (
        "landscape-missing-checkpoint",
        ["landscape", "--config", "{config}", "--checkpoint", "{dir}/none.pt"],
        "",
        "checkpoint not found",
    ),
    ("report-missing-dir", ["report", "{dir}/no_run"], None, "run directory not found"),
    ("report-not-a-run", ["report", "{dir}"], None, "has no report.json"),
]

# argparse's own errors: usage plus one error line, still exit 2.
ARGPARSE_CASES = [
    ("train-without-config", ["train"], "the following arguments are required: --config"),
    (
        "resume-and-overwrite",
        ["train", "--config", "x", "--resume", "--overwrite"],
        "not allowed with argument",
    ),
    ("demo-bad-epochs", ["demo", "--epochs", "0"], "must be an int >= 1, got 0"),
    ("unknown-command", ["trian"], "invalid choice: 'trian'"),
]


# The kinds of bad input, each once through a real process.
SUBPROCESS_CASES = [
    "missing-config",
    "invalid-toml",
    "unknown-key",
    "unknown-schedule",
    "bad-value",
]


def _materialise(root, case: str, args: list[str], text: str | None) -> list[str]:
    d = root / case
    d.mkdir()
    config = d / "run.toml"
    if text is not None:
        config.write_text(text)
    return [a.format(config=config, dir=d) for a in args]


@pytest.fixture(scope="module")
def processes(cli, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("errors")
    by_case = {c[0]: c for c in CASES}
    jobs = {
        case: _materialise(root, case, by_case[case][1], by_case[case][2])
        for case in SUBPROCESS_CASES
    }
    jobs["unknown-command"] = ["trian"]
    # A checkpoint of a 24-unit MLP for a config that describes a 16-unit one.
    from optiscope.models import digits_mlp

    other = root / "other"
    other.mkdir()
    torch.save({"model": digits_mlp(hidden=[24]).state_dict()}, other / "ckpt.pt")
    (other / "run.toml").write_text("[model]\nname = 'mlp'\nhidden = [16]\n")
    jobs["other-model"] = [
        "landscape", "--config", str(other / "run.toml"),
        "--checkpoint", str(other / "ckpt.pt"), "--out", str(other / "out"),
    ]  # fmt: skip
    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = {case: pool.submit(cli.run, args, root) for case, args in jobs.items()}
        done = {case: f.result() for case, f in futures.items()}
    done["_root"] = root
    return done


def _check_one_line(returncode: int, stderr: str, message: str) -> None:
    assert returncode == 2, stderr[-2000:]
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("optiscope: error: ")
    assert message in lines[0]


@pytest.mark.parametrize("case", SUBPROCESS_CASES)
def test_bad_input_in_a_real_process_is_one_line_and_exit_2(processes, case: str) -> None:
    proc = processes[case]
    message = next(c[3] for c in CASES if c[0] == case)
    _check_one_line(proc.returncode, proc.stderr, message)
    assert proc.stdout == ""


def test_checkpoint_of_another_model_in_a_real_process(processes) -> None:
    proc = processes["other-model"]
    _check_one_line(
        proc.returncode, proc.stderr, "was saved from another model than [model] describes"
    )
    assert "shape mismatch 0.weight: (24, 64) vs (16, 64)" in proc.stderr


def test_unknown_command_in_a_real_process(processes) -> None:
    proc = processes["unknown-command"]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("usage: optiscope")
    assert "invalid choice: 'trian'" in proc.stderr


def test_a_bad_config_leaves_no_run_directory_behind(processes) -> None:
    # Config errors are raised before anything is written; out_dir defaults to ./runs,
    # relative to the working directory the commands ran in.
    assert all(processes[c].returncode == 2 for c in SUBPROCESS_CASES)
    assert not (processes["_root"] / "runs").exists()


@pytest.mark.parametrize(("case", "args", "text", "message"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_exit_2(
    tmp_path, monkeypatch, capsys, case: str, args: list[str], text: str | None, message: str
) -> None:
    from optiscope.cli import main

    monkeypatch.chdir(tmp_path)
    argv = _materialise(tmp_path, case, args, text)
    code = main(argv)
    out, err = capsys.readouterr()
    _check_one_line(code, err, message)
    assert out == ""
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    ("case", "args", "message"), ARGPARSE_CASES, ids=[c[0] for c in ARGPARSE_CASES]
)
def test_bad_arguments_exit_2_with_usage(capsys, case: str, args: list[str], message: str) -> None:
    from optiscope.cli import main

    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: optiscope")
    assert message in err


BUGGY_FACTORY = """
from torch import nn


def mlp():
    layer = nn.Linear(64, 10)
    return layer.no_such_method()  # a bug in the user's own code
"""


def test_a_bug_in_a_user_factory_shows_its_traceback(cli, tmp_path) -> None:
    (tmp_path / "buggy.py").write_text(BUGGY_FACTORY)
    config = cli.write_config(tmp_path, "[model]\nname = 'buggy:mlp'\n")
    proc = cli.run(["train", "--config", str(config)], cwd=tmp_path, extra_path=tmp_path)
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr and "buggy.py" in proc.stderr
    assert "AttributeError" in proc.stderr and "no_such_method" in proc.stderr
    assert not proc.stderr.startswith("optiscope: error:")


def test_an_internal_value_error_is_not_turned_into_bad_input(monkeypatch, tmp_path) -> None:
    # Only the project's InputError means bad input; a ValueError from inside optiscope
    # is a bug and must reach the user with its traceback, not as "error: ..., exit 2".
    import optiscope.run.pipeline as pipeline
    from optiscope.cli import main

    def broken(*args, **kwargs):
        raise ValueError("an internal bug")

    monkeypatch.setattr(pipeline, "train_run", broken)
    config = tmp_path / "run.toml"
    config.write_text("")
    with pytest.raises(ValueError, match="an internal bug"):
        main(["train", "--config", str(config)])
