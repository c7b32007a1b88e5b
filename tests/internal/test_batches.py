"""iter_batches(): one way to walk tensors or DataLoaders, with clear errors."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from optiscope._internal.batches import batch_size, iter_batches


def test_tensor_pair_is_one_batch():
    X, y = torch.randn(5, 3), torch.arange(5)
    batches = list(iter_batches(X, y))
    assert len(batches) == 1
    assert batches[0][0] is X and batches[0][1] is y


def test_dataloader_batches_and_max_batches():
    X, y = torch.randn(10, 3), torch.arange(10)
    loader = DataLoader(TensorDataset(X, y), batch_size=3)
    got = list(iter_batches(loader))
    assert [batch_size(b[0]) for b in got] == [3, 3, 3, 1]
    assert torch.equal(torch.cat([b[1] for b in got]), y)
    assert len(list(iter_batches(loader, max_batches=2))) == 2


@pytest.mark.parametrize(
    "call, err, match",
    [
        (lambda: list(iter_batches(torch.empty(0, 3))), ValueError, "empty"),
        (lambda: list(iter_batches([])), ValueError, "empty"),
        (lambda: list(iter_batches(torch.ones(3, 2), torch.ones(4))), ValueError, "length"),
        (lambda: list(iter_batches([torch.ones(2)], torch.ones(2))), TypeError, "targets"),
        (lambda: list(iter_batches([torch.ones(2)])), TypeError, "pair"),
        (lambda: list(iter_batches(torch.ones(2, 2), max_batches=0)), ValueError, "max_batches"),
    ],
)
def test_bad_input(call, err, match):
    with pytest.raises(err, match=match):
        call()
