"""Alpha, the effective relative step size: exact on quadratics, Cockpit's fit, a plain loop.

On a least-squares problem every per-sample loss is quadratic in the weights, so the
fit is exact whatever its weights: along the step ``d`` from gradient ``g`` with Hessian
``H``, alpha is ``-(d^T H d) / (g . d) - 1`` (for gradient descent ``lr g^T H g / |g|^2 - 1``:
-1 at lr 0, 0 at the minimum along the step, 1 at the edge of stability 2/lambda when
``g`` is the top eigenvector). Elsewhere alpha is checked against Cockpit's own
``_fit_quadratic`` / ``_get_alpha`` on the same observations and against per-sample
gradients from single-sample backward passes (``_helpers.plain_alpha``).
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from optiscope.batch_loss import as_batch_loss
from optiscope.instruments import Instruments
from optiscope.instruments._alpha import fit_alpha, step_alpha
from tests.instruments._helpers import data, mlp, plain_alpha, run_loop


def _regression(n: int = 32, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 4, generator=g)
    return X, X @ torch.randn(4, 1, generator=g) + 0.3 * torch.randn(n, 1, generator=g)


OPTIMIZERS = {
    "sgd": lambda p, lr: torch.optim.SGD(p, lr=lr),
    "momentum": lambda p, lr: torch.optim.SGD(p, lr=lr, momentum=0.9),
    "adam": lambda p, lr: torch.optim.Adam(p, lr=lr / 10),
}


@settings(max_examples=25, deadline=None)
@given(lr=st.floats(0.02, 1.2), kind=st.sampled_from(sorted(OPTIMIZERS)))
def test_exact_on_least_squares(lr, kind):
    X, y = _regression()
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    opt = OPTIMIZERS[kind](model.parameters(), lr)
    inst = Instruments(model, opt, ["alpha"], grad_tests_every=1, probe_batch=(X, y),
                       loss_fn=F.mse_loss)  # fmt: skip
    A = torch.cat([X, torch.ones(len(X), 1)], 1).double()
    H = 2 * A.T @ A / len(X)  # the Hessian of the mean squared error in (weight, bias)
    expected, conds = [], []
    for _ in range(4):

        def flat():
            return torch.cat([p.detach().reshape(-1) for p in model.parameters()]).double()

        w0 = flat()
        loss = F.mse_loss(model(X), y)
        loss.backward()
        g = torch.cat([p.grad.reshape(-1) for p in model.parameters()]).double()
        inst.after_backward(loss, batch_size=len(X))
        inst.before_step()
        opt.step()
        inst.after_step()
        opt.zero_grad()
        d = flat() - w0
        expected.append((-(d @ H @ d) / (g @ d) - 1).item())
        conds.append((g.norm() * d.norm() / (g @ d).abs()).item())
    inst.flush()
    got = [v for _, v in inst.history["alpha"]]
    assert [s for s, _ in inst.history["alpha"]] == [1, 2, 3, 4]
    # alpha + 1 divides by the slope g.d: float32 slopes carry an error of about 1e-7 of
    # |g||d|, so the relative error grows with |g||d| / |g.d| (1 for plain SGD; momentum
    # can turn a step almost orthogonal to the gradient).
    for a, e, cond in zip(got, expected, conds):
        assert a + 1 == pytest.approx(e + 1, rel=1e-4 * cond, abs=1e-6), (a, e, cond)


def test_gradient_descent_reads_the_edge_of_stability():
    """On a quadratic whose gradient is the top eigenvector, lr = 1/lambda steps to the
    minimum (alpha 0) and lr = 2/lambda to the other side (alpha 1)."""
    X = torch.tensor([[2.0, 0.0], [0.0, 1.0]]).repeat(4, 1)
    y = torch.zeros(8, 1)
    lam = 2 * 4.0 * 4 / 8  # 2 x^T x / n along the first coordinate
    for lr, want in ((1 / lam, 0.0), (2 / lam, 1.0), (0.5 / lam, -0.5)):
        model = torch.nn.Linear(2, 1, bias=False)
        with torch.no_grad():
            model.weight.copy_(torch.tensor([[1.0, 0.0]]))
        opt = torch.optim.SGD(model.parameters(), lr=lr)
        inst = Instruments(model, opt, ["alpha"], grad_tests_every=1, probe_batch=(X, y),
                           loss_fn=F.mse_loss)  # fmt: skip
        run_loop(model, opt, [(X, y)], inst, loss_fn=F.mse_loss)
        assert inst.values()["alpha"] == pytest.approx(want, abs=1e-5)


@settings(max_examples=200, deadline=None)
@given(
    t=st.floats(1e-4, 10.0),
    fs=st.lists(st.floats(-5, 5), min_size=2, max_size=2),
    dfs=st.lists(st.floats(-5, 5), min_size=2, max_size=2),
    var=st.lists(st.floats(1e-3, 1e2), min_size=4, max_size=4),
)
def test_fit_is_cockpits(t, fs, dfs, var):
    from cockpit.quantities.alpha import _fit_quadratic, _get_alpha

    # Where the fitted curvature is within rounding of 0 (a flat or linear fit), alpha is
    # rounding noise in either code: only well-posed fits are compared.
    phi = np.array([[1, 0, 0], [1, 1, 1], [0, 1, 0], [0, 1, 2]], dtype=np.float64)
    obs = np.array([*fs, dfs[0] * t, dfs[1] * t])
    w = 1 / np.array([var[0], var[1], var[2] * t * t, var[3] * t * t])
    _, b, c = np.linalg.solve(phi.T @ (w[:, None] * phi), phi.T @ (w * obs))
    assume(abs(c) > 1e-6 * (1 + np.abs(obs).max()) and abs(b) > 1e-6 * (1 + np.abs(obs).max()))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = _get_alpha(_fit_quadratic(t, fs, dfs, var[:2], var[2:]), t)

    def pair(v):
        return tuple(torch.tensor(x, dtype=torch.float64) for x in v)

    got = float(
        fit_alpha(
            torch.tensor(t, dtype=torch.float64), pair(fs), pair(dfs), pair(var[:2]), pair(var[2:])
        )
    )
    # Cockpit inverts the fit's normal matrix in x (conditioned like 1/t^4), optiscope
    # solves it in x / t: they agree to what Cockpit's matrix inverse keeps.
    assert got == pytest.approx(ref, rel=1e-4, abs=1e-4)


def test_no_step_zero_variance_and_a_concave_fit():
    one = torch.tensor(1.0)
    z = torch.tensor(0.0)
    # A zero step is -1 (Cockpit's value when the two points coincide).
    assert float(fit_alpha(z, (one, one), (-one, -one), (one, one), (one, one))) == -1.0
    # Still going downhill at the end, more steeply: a concave fit, logged as -1.
    assert float(fit_alpha(one, (one, z), (-one, -2 * one), (one, one), (one, one))) == -1.0
    # A flat line (no slope, no curvature; 0 / 0 in Cockpit): -1, never a NaN.
    assert float(fit_alpha(one, (z, z), (z, z), (one, one), (one, one))) == -1.0
    # A zero variance is ALPHA_EPS, as in Cockpit.
    from cockpit.quantities.alpha import _fit_quadratic, _get_alpha

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = _get_alpha(_fit_quadratic(0.5, [1.0, 0.6], [-1.0, 0.3], [0.0, 0.2], [0.1, 0.0]), 0.5)
    got = fit_alpha(torch.tensor(0.5), (one, torch.tensor(0.6)), (-one, torch.tensor(0.3)),
                    (z, torch.tensor(0.2)), (torch.tensor(0.1), z))  # fmt: skip
    assert float(got) == pytest.approx(ref, rel=1e-4)


@pytest.mark.parametrize("before_step", [True, False])
def test_any_optimizer_against_per_sample_gradients(before_step):
    """An MLP under Adam (Cockpit's fast path is SGD's): per step, alpha against the fit on
    single-sample backward passes, with or without before_step(), at grad_tests_every."""
    X, y = data(16)
    model = mlp()
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    inst = Instruments(model, opt, ["alpha"], grad_tests_every=2, probe_batch=(X, y),
                       loss_fn=F.cross_entropy)  # fmt: skip
    bl = as_batch_loss(F.cross_entropy)
    expected = {}

    def keep(step):
        if step % 2 == 0:
            expected[step] = plain_alpha(model, bl, (X, y), weights[-1])
        weights.append([p.detach().clone() for p in model.parameters()])

    weights = [[p.detach().clone() for p in model.parameters()]]
    run_loop(model, opt, [(X, y)] * 6, inst, before_step=before_step, hook=keep)
    inst.flush()
    got = dict(inst.history["alpha"])
    assert sorted(got) == [2, 4, 6]
    for step, want in expected.items():
        assert got[step] + 1 == pytest.approx(want + 1, rel=1e-4), step
    assert any(v > -0.9 for v in got.values())  # these steps are not vanishingly small


def test_step_alpha_leaves_the_model_alone():
    X, y = data(8)
    model = mlp()
    before = [p.detach().clone() - 0.01 for p in model.parameters()]
    state = copy.deepcopy(model.state_dict())
    names = [n for n, _ in model.named_parameters()]
    model.train()
    a = step_alpha(model, as_batch_loss(F.cross_entropy), (X, y), names, before)
    assert a.shape == () and torch.isfinite(a)
    assert model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k])
    with pytest.raises(ValueError, match="at least 2 samples"):
        step_alpha(model, as_batch_loss(F.cross_entropy), (X[:1], y[:1]), names, before)


def test_no_host_sync_before_the_flush(host_syncs):
    X, y = data(16)
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.3)
    inst = Instruments(model, opt, ["loss", "alpha"], grad_tests_every=1, probe_batch=(X, y),
                       loss_fn=F.cross_entropy)  # fmt: skip
    with host_syncs() as counts:
        run_loop(model, opt, [(X, y)] * 3, inst)
    assert sum(counts.values()) == 0
    with host_syncs() as counts:
        inst.flush()
    assert counts["tolist"] == 1 and sum(counts.values()) == 1
    assert len(inst.history["alpha"]) == 3


def test_with_per_sample_gradients_at_the_same_step_the_same_alpha():
    """With the gradient tests (or histograms) at the same step, the end of the step takes
    its slopes from their per-sample gradients instead of a second forward-mode pass: the
    same alpha, to float32 rounding."""
    X, y = data(16)
    alphas = []
    for quantities in (["alpha"], ["alpha", "grad_tests", "grad_hist"]):
        model = mlp()
        opt = torch.optim.Adam(model.parameters(), lr=0.05)
        inst = Instruments(model, opt, quantities, grad_tests_every=1, probe_batch=(X, y),
                           loss_fn=F.cross_entropy)  # fmt: skip
        run_loop(model, opt, [(X, y)] * 3, inst)
        inst.flush()
        alphas.append([v for _, v in inst.history["alpha"]])
    alone, shared = alphas
    assert len(alone) == 3
    assert np.array(shared) + 1 == pytest.approx(np.array(alone) + 1, rel=1e-5)
