"""Hutchinson trace against the trace of the exact Hessian."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from optiscope.curvature import TraceResult, hessian_trace

from ._reference import assert_same_state, state_of


def test_within_three_standard_errors(classifier):
    p = classifier
    r = hessian_trace(p.model, p.loss_fn, p.X, p.y, max_iter=200, seed=0, method="hutchinson")
    assert isinstance(r, TraceResult) and r.samples.numel() == 200
    exact = float(p.H.trace())
    assert abs(r.trace - exact) <= 3 * r.stderr
    # The standard error is the textbook one, computed from the samples.
    assert r.trace == pytest.approx(float(r.samples.mean()))
    assert r.stderr == pytest.approx(float(r.samples.std()) / math.sqrt(200))


def test_probe_values_have_the_rademacher_variance(classifier):
    # Var[v^T H v] = 2 * sum_{i != j} H_ij^2 for Rademacher v: checks the probes really
    # are +-1 vectors (Gaussian probes would add 2 * sum_i H_ii^2).
    p = classifier
    r = hessian_trace(p.model, p.loss_fn, p.X, p.y, max_iter=400, seed=1, method="hutchinson")
    off = p.H - torch.diag(torch.diag(p.H))
    expected = 2 * float((off**2).sum())
    assert float(r.samples.var()) == pytest.approx(expected, rel=0.25)


def test_diagonal_hessian_is_exact_and_stops_early():
    model = nn.Linear(3, 1, bias=False)
    X = torch.diag(torch.tensor([1.0, 2.0, 3.0]))
    r = hessian_trace(model, F.mse_loss, X, torch.zeros(3, 1), seed=0, method="hutchinson")
    # H = (2/3) diag(1, 4, 9): every probe gives the trace, the stderr is 0.
    assert r.trace == pytest.approx(2 / 3 * 14, rel=1e-6) and r.stderr == 0.0
    assert r.samples.numel() == 10


def test_vmapped_and_single_probes_agree(classifier):
    p = classifier
    a = hessian_trace(p.model, p.loss_fn, p.X, p.y, max_iter=12, seed=3, probe_batch=1)
    b = hessian_trace(p.model, p.loss_fn, p.X, p.y, max_iter=12, seed=3, probe_batch=5)
    torch.testing.assert_close(a.samples, b.samples, rtol=1e-5, atol=1e-6)


def test_dataloader_and_determinism(classifier):
    p = classifier
    loader = DataLoader(TensorDataset(p.X, p.y), batch_size=25)
    a = hessian_trace(p.model, p.loss_fn, loader, max_iter=20, seed=4)
    b = hessian_trace(p.model, p.loss_fn, p.X, p.y, max_iter=20, seed=4)
    torch.testing.assert_close(a.samples, b.samples, rtol=1e-4, atol=1e-5)
    assert torch.equal(b.samples, hessian_trace(p.model, p.loss_fn, p.X, p.y, 20, seed=4).samples)


def test_model_restored(classifier):
    p = classifier
    before = state_of(p.model)
    hessian_trace(p.model, p.loss_fn, p.X, p.y, max_iter=5, seed=0)
    assert_same_state(before, state_of(p.model))


def test_a_single_probe_has_no_standard_error(mlp_2_10_1):
    p = mlp_2_10_1
    r = hessian_trace(p.model, p.loss_fn, p.X, p.y, max_iter=1, seed=0)
    assert r.samples.numel() == 1 and math.isnan(r.stderr)


@settings(max_examples=10, deadline=None)
@given(
    st.sampled_from(["max_iter", "probe_batch", "tol"]),
    st.integers(max_value=0),
)
def test_bad_input(name, value):
    model = nn.Linear(2, 1)
    with pytest.raises(ValueError, match=name):
        hessian_trace(model, F.mse_loss, torch.ones(3, 2), torch.ones(3, 1), **{name: value})


def test_host_copies_do_not_grow_with_batches(classifier, host_syncs):
    p = classifier
    counts = []
    for bs in (45, 9):
        loader = DataLoader(TensorDataset(p.X, p.y), batch_size=bs)
        with host_syncs() as c:
            hessian_trace(p.model, p.loss_fn, loader, max_iter=20, seed=0, probe_batch=10)
        counts.append(sum(c.values()) - c["item"])  # .item(): the DataLoader's own seed
    assert counts[0] == counts[1]


def test_numpy_integers_are_accepted(mlp_2_10_1):
    import numpy as np

    p = mlp_2_10_1
    a = hessian_trace(p.model, p.loss_fn, p.X, p.y, max_iter=np.int64(4), seed=np.int32(1))
    b = hessian_trace(p.model, p.loss_fn, p.X, p.y, max_iter=4, seed=1)
    assert torch.equal(a.samples, b.samples)
