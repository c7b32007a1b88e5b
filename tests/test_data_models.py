"""The bundled digits data and the built-in models."""

from __future__ import annotations

import pytest
import torch

from optiscope import digits_cnn, digits_loaders, digits_mlp, digits_tensors


def test_digits_tensors_shapes_and_scaling():
    X, y = digits_tensors(standardize=False)
    assert X.shape == (1797, 64) and y.shape == (1797,)
    assert float(X.min()) == 0.0 and float(X.max()) == 1.0
    assert set(y.unique().tolist()) == set(range(10))
    Xs, _ = digits_tensors()
    assert torch.allclose(Xs.mean(0), torch.zeros(64), atol=1e-6)
    Xi, _ = digits_tensors(image=True)
    assert Xi.shape == (1797, 1, 8, 8)


def test_digits_loaders_split_is_disjoint_and_reproducible():
    train, val = digits_loaders(batch_size=100, seed=3)
    assert len(train.dataset) + len(val.dataset) == 1797
    assert len(val.dataset) == round(1797 * 0.2)
    train2, val2 = digits_loaders(batch_size=100, seed=3)
    assert torch.equal(val.dataset.tensors[0], val2.dataset.tensors[0])
    x1 = next(iter(train))[0]
    x2 = next(iter(train2))[0]
    assert torch.equal(x1, x2)  # same seed, same shuffle
    tr_rows = {tuple(r.tolist()) for r in train.dataset.tensors[0][:200]}
    va_rows = {tuple(r.tolist()) for r in val.dataset.tensors[0]}
    assert len(tr_rows & va_rows) <= 5  # a few digits are exact duplicates in the raw data


@pytest.mark.parametrize(
    "kwargs, match",
    [({"batch_size": 0}, "batch_size"), ({"val_fraction": 1.0}, "val_fraction")],
)
def test_digits_loaders_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        digits_loaders(**kwargs)


def test_models_shapes_and_bad_input():
    assert digits_mlp()(torch.zeros(3, 64)).shape == (3, 10)
    assert digits_mlp((32,), dropout=0.0)(torch.zeros(3, 64)).shape == (3, 10)
    assert digits_cnn(4)(torch.zeros(3, 1, 8, 8)).shape == (3, 10)
    with pytest.raises(ValueError, match="dropout"):
        digits_mlp(dropout=1.0)
    with pytest.raises(ValueError, match="widths"):
        digits_mlp((0,))
    with pytest.raises(ValueError, match="channels"):
        digits_cnn(0)
