"""Config schema: defaults, every kind of bad input named precisely, TOML round trip."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from optiscope.run.config import (
    Config,
    ConfigError,
    config_to_toml,
    load_config,
    parse_config,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def test_empty_config_is_all_defaults() -> None:
    cfg = parse_config("")
    assert cfg == Config()
    assert cfg.model.name == "mlp" and cfg.optimizer.name == "adamw"
    assert cfg.train.epochs == 10 and cfg.train.precision == "32"
    assert cfg.run_dir == Path("runs") / "run"


def test_values_are_read_and_open_tables_collect_parameters() -> None:
    cfg = parse_config(
        """
        [run]
        name = "exp1"
        out_dir = "out"
        [model]
        name = "cnn"
        channels = 8
        [schedule]
        name = "WarmupCosineSchedule"
        warmup_epochs = 1
        min_lr = 1e-5
        [clipping]
        name = "norm"
        max_norm = 0.5
        [optimizer]
        lr = 3
        betas = [0.8, 0.99]
        [landscape]
        alpha_range = [-2, 1.5]
        """
    )
    assert cfg.run_dir == Path("out") / "exp1"
    assert cfg.model.params == {"channels": 8}
    assert cfg.schedule.params == {"min_lr": 1e-5}
    assert cfg.schedule.warmup_epochs == 1.0 and isinstance(cfg.schedule.warmup_epochs, float)
    assert cfg.clipping.params == {"max_norm": 0.5}
    assert cfg.optimizer.lr == 3.0 and isinstance(cfg.optimizer.lr, float)
    assert cfg.optimizer.betas == [0.8, 0.99]
    assert cfg.landscape.alpha_range == [-2.0, 1.5]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[trian]\nepochs = 1", "unknown table 'trian' (did you mean 'train'?); allowed: run,"),
        ("[train]\nepoch = 1", "unknown key 'epoch' in [train] (did you mean 'epochs'?)"),
        ("[train]\nepochs = 0", "[train] epochs: must be an int >= 1, got 0"),
        ("[train]\nepochs = 2.5", "[train] epochs: must be an int >= 1, got 2.5"),
        ("[train]\nepochs = true", "[train] epochs: must be an int >= 1, got true"),
        ("[train]\nprecision = 'fp8'", "[train] precision: must be one of 32, bf16, 16-mixed"),
        ("[train]\nprecision = 16", "[train] precision: must be one of 32, bf16, 16-mixed"),
        ("[optimizer]\nname = 'adamx'", "[optimizer] name: must be one of adamw, adam, sgd"),
        ("[optimizer]\nlr = 0", "[optimizer] lr: must be a float > 0, got 0.0"),
        ("[optimizer]\nlr = nan", "[optimizer] lr: must be a float > 0, got nan"),
        ("[optimizer]\nlr = inf", "[optimizer] lr: must be a float > 0, got inf"),
        ("[optimizer]\nlr = '1e-3'", "[optimizer] lr: must be a float > 0, got '1e-3'"),
        ("[optimizer]\nbetas = [0.9]", "[optimizer] betas: must be two floats in [0, 1)"),
        ("[optimizer]\nbetas = [0.9, 1.0]", "[optimizer] betas: must be two floats in [0, 1)"),
        ("[data]\nval_fraction = 1.0", "[data] val_fraction: must be a float in (0, 1)"),
        ("[data]\nbatch_size = 0", "[data] batch_size: must be an int >= 1"),
        ("[data]\nname = 'mnist'", "[data] name: must be 'digits' or an import path"),
        ("[model]\nname = 'resnet'", "[model] name: must be 'mlp', 'cnn' or an import path"),
        ("[model]\nname = 'pkg.mod'", "[model] name: must be 'mlp', 'cnn' or an import path"),
        ('[model]\nname = "pkg.mod:f\\n"', "[model] name: must be 'mlp', 'cnn' or an import path"),
        ("[run]\nname = 'a/b'", "[run] name: must be a non-empty name without '/'"),
        ("[run]\nname = '..'", "[run] name: must be a non-empty name"),
        ("[run]\nname = ''", "[run] name: must be a non-empty name"),
        ("[run]\ndevice = 'tpu'", "[run] device: must be one of cpu, cuda, auto"),
        ("[schedule]\ninterval = 'batch'", "[schedule] interval: must be one of step, epoch"),
        ("[schedule]\nwarmup_epochs = -1", "[schedule] warmup_epochs: must be a float >= 0"),
        ("[landscape]\nalpha_range = [1, -1]", "[landscape] alpha_range: must be two floats"),
        ("[landscape]\nplane_points = 2", "[landscape] plane_points: must be an int >= 3"),
        ("[landscape]\nnormalization = 'x'", "[landscape] normalization: must be one of filter"),
        ("[lr_find]\nstart_lr = 1.0\nend_lr = 0.5", "[lr_find] end_lr: must be > start_lr"),
        ("[curvature]\ntop_k = 0", "[curvature] top_k: must be an int >= 1"),
        ("train = 3", "[train] must be a table, got 3"),
        ("[train\nepochs = 1", "invalid TOML"),
    ],
)
def test_bad_config_names_the_key_and_the_allowed_values(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(text, origin="run.toml")
    assert str(info.value).startswith("run.toml: ")
    assert message in str(info.value)
    assert "\n" not in str(info.value)  # one line on the command line


def test_parse_config_rejects_wrong_source_type() -> None:
    with pytest.raises(TypeError, match="TOML text or a dict"):
        parse_config(3)  # type: ignore[arg-type]


def test_load_config_file_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="config file not found"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "bin.toml"
    bad.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match="not a UTF-8 text file"):
        load_config(bad)
    ok = tmp_path / "ok.toml"
    ok.write_text("[train]\nepochs = 2\n")
    cfg = load_config(ok)
    assert cfg.train.epochs == 2 and cfg.source == "[train]\nepochs = 2\n"


_INT_KEYS = [
    ("train", "epochs", 1),
    ("train", "grad_accum_steps", 1),
    ("train", "log_interval", 1),
    ("data", "batch_size", 1),
    ("lr_find", "num_iter", 2),
    ("landscape", "line_points", 3),
    ("landscape", "num_directions", 1),
    ("curvature", "max_iter", 1),
    ("run", "seed", 0),
]


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(_INT_KEYS), st.integers(-(10**6), 10**6))
def test_int_keys_accept_exactly_their_range(spec, value) -> None:
    section, key, lo = spec
    text = f"[{section}]\n{key} = {value}"
    if value >= lo:
        assert getattr(getattr(parse_config(text), section), key) == value
    else:
        with pytest.raises(ConfigError, match=rf"\[{section}\] {key}: must be an int >= {lo}"):
            parse_config(text)


@settings(max_examples=60, deadline=None)
@given(st.floats(allow_nan=True, allow_infinity=True))
def test_learning_rate_accepts_exactly_positive_finite_floats(value: float) -> None:
    data = {"optimizer": {"lr": value}}
    if math.isfinite(value) and value > 0:
        assert parse_config(data).optimizer.lr == value
    else:
        with pytest.raises(ConfigError, match=r"\[optimizer\] lr: must be a float > 0"):
            parse_config(data)


_names = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="/\\\0"), min_size=1
).filter(lambda s: s not in (".", ".."))
_scalars = st.one_of(
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False),
    st.booleans(),
    st.text(st.characters(blacklist_categories=("Cs",))),
)


@settings(max_examples=60, deadline=None)
@given(_names, st.dictionaries(st.text(min_size=1, max_size=8), _scalars, max_size=4))
def test_config_to_toml_round_trips(name: str, extra: dict) -> None:
    extra = {k: v for k, v in extra.items() if k not in ("name", "params")}
    cfg = parse_config({"run": {"name": name}, "model": {"name": "mlp", **extra}})
    text = config_to_toml(cfg)
    tomllib.loads(text)  # valid TOML
    again = parse_config(text)
    assert again.run.name == name
    assert again.model.params == extra
    assert again.to_dict() == cfg.to_dict()


def test_the_example_config_lists_every_key_of_the_schema() -> None:
    import dataclasses

    from optiscope.run.schema import OPEN_SECTIONS, SECTIONS

    path = Path(__file__).parents[2] / "examples" / "digits.toml"
    example = tomllib.loads(path.read_text(encoding="utf-8"))
    assert list(example) == list(SECTIONS)
    for table, cls in SECTIONS.items():
        keys = {f.name for f in dataclasses.fields(cls)} - {"params"}
        if table in OPEN_SECTIONS:
            # The rest of an open table are the keyword arguments of what it names.
            assert keys <= set(example[table]), (table, keys - set(example[table]))
        else:
            assert set(example[table]) == keys, (table, keys ^ set(example[table]))
