"""Per-layer curvature against the diagonal blocks of the exact Hessian."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from optiscope.curvature import LayerCurvature, layerwise_curvature

from ._reference import assert_same_state, state_of


def _blocks(p, groups: dict[str, list[str]]) -> dict[str, torch.Tensor]:
    offsets, start = {}, 0
    for n, size in zip(p.names, p.sizes):
        offsets[n] = torch.arange(start, start + size)
        start += size
    out = {}
    for layer, names in groups.items():
        idx = torch.cat([offsets[n] for n in names])
        out[layer] = p.H[idx][:, idx]
    return out


def test_values_equal_the_blocks_of_the_exact_hessian(classifier):
    p = classifier
    before = state_of(p.model)
    res = layerwise_curvature(p.model, p.loss_fn, p.X, p.y, seed=0, trace_samples=200)
    assert list(res) == ["0", "2", "4"]
    blocks = _blocks(p, {k: v.params for k, v in res.items()})
    for layer, lc in res.items():
        assert isinstance(lc, LayerCurvature) and lc.converged
        B = blocks[layer]
        assert lc.num_params == B.shape[0]
        top = float(torch.linalg.eigvalsh(B)[-1])
        assert lc.top_eigenvalue == pytest.approx(top, rel=1e-3)
        assert abs(lc.trace - float(B.trace())) <= 3 * lc.trace_stderr
    assert_same_state(before, state_of(p.model))


def test_group_by_parameter(mlp_2_10_1):
    p = mlp_2_10_1
    res = layerwise_curvature(p.model, p.loss_fn, p.X, p.y, seed=1, group_by="parameter")
    assert list(res) == p.names
    blocks = _blocks(p, {n: [n] for n in p.names})
    for name, lc in res.items():
        top = float(torch.linalg.eigvalsh(blocks[name])[-1])
        assert lc.top_eigenvalue == pytest.approx(top, rel=1e-3, abs=1e-6)


def test_layer_traces_add_up_to_the_model_trace_estimate(classifier):
    # Same probes: the per-layer samples partition v^T H v minus the cross-block terms,
    # whose expectation is 0, so the sums agree within their joint error.
    p = classifier
    res = layerwise_curvature(p.model, p.loss_fn, p.X, p.y, seed=2, trace_samples=200)
    total = sum(lc.trace for lc in res.values())
    err = sum(lc.trace_stderr**2 for lc in res.values()) ** 0.5
    assert abs(total - float(p.H.trace())) <= 4 * err


def test_bad_input():
    args = (nn.Linear(2, 1), F.mse_loss, torch.ones(3, 2), torch.ones(3, 1))
    with pytest.raises(ValueError, match="group_by"):
        layerwise_curvature(*args, group_by="layer")
    with pytest.raises(ValueError, match="trace_samples"):
        layerwise_curvature(*args, trace_samples=1)
    with pytest.raises(ValueError, match="tol"):
        layerwise_curvature(*args, tol=0)
    with pytest.raises(TypeError, match="group_by"):
        layerwise_curvature(*args, group_by=None)
    with pytest.raises(TypeError, match="trace_samples"):
        layerwise_curvature(*args, trace_samples=20.0)
