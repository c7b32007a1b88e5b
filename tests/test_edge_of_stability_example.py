"""examples/edge_of_stability.py: the physics of Cohen et al. (2021), Fig. 1, at small size.

Full-batch gradient descent on 128 digits with a tanh MLP: at each learning rate the
sharpness starts well below 2/lr, rises to it (progressive sharpening) and then stays
within 20% of it (the edge of stability), above it only transiently; alpha starts near -1
(small steps on a flat valley) and ends near 1 (each step crosses to the other side).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _example():
    path = ROOT / "examples" / "edge_of_stability.py"
    spec = importlib.util.spec_from_file_location("edge_of_stability", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("eos") / "edge.png"
    histories = _example().main((0.4, 0.6), steps=300, every=10, samples=128, out=out)
    return histories, out


@pytest.mark.parametrize("lr", [0.4, 0.6])
def test_sharpness_rises_to_two_over_lr_and_hovers_there(runs, lr: float) -> None:
    histories, _ = runs
    h = histories[lr]
    values = [v for _, v in h["sharpness"]]
    threshold = 2 / lr
    assert [s for s, _ in h["sharpness"]] == list(range(10, 301, 10))
    assert all(t == pytest.approx(threshold) for _, t in h["sharpness_threshold"])
    # Progressive sharpening: it starts well below 2/lr and reaches it.
    assert values[0] < 0.8 * threshold
    first = next(i for i, v in enumerate(values) if v >= threshold)
    # The edge of stability: over the last fifth, within 20% of 2/lr at every measurement.
    tail = values[-len(values) // 5 :]
    assert all(0.8 * threshold <= v <= 1.2 * threshold for v in tail), tail
    # Above 1.2 x 2/lr only transiently: a few measurements of the catapult after arrival.
    over = [v for v in values[first:] if v > 1.2 * threshold]
    assert len(over) <= 0.2 * len(values[first:]), values


@pytest.mark.parametrize("lr", [0.4, 0.6])
def test_alpha_goes_from_short_steps_to_the_other_side(runs, lr: float) -> None:
    histories, _ = runs
    alpha = [v for _, v in histories[lr]["alpha"]]
    assert [s for s, _ in histories[lr]["alpha"]] == list(range(10, 301, 10))
    tail = sorted(alpha[-len(alpha) // 5 :])
    # At the edge of stability the step lands across the valley: alpha hovers at 1.
    assert 0.7 <= tail[len(tail) // 2] <= 1.3, alpha
    if lr == 0.4:  # it reaches 2/lr late: before that, small steps well short of the minimum
        assert alpha[0] < -0.5, alpha


def test_the_loss_falls_and_the_figure_is_written(runs) -> None:
    histories, out = runs
    for h in histories.values():
        losses = [v for _, v in h["loss"]]
        assert len(losses) == 300 and losses[-1] < 0.2 * losses[0]
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
