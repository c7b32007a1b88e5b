"""The zoo itself: each member trains (its loss falls) in well under a second on CPU."""

from __future__ import annotations

import torch

from optiscope.batch_loss import as_batch_loss
from tests.zoo._registry import ZOO


def test_names_are_unique():
    assert len({m.name for m in ZOO}) == len(ZOO)


def test_member_trains_and_its_loss_falls(member):
    model = member.model()
    bl = as_batch_loss(member.loss_fn)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    loader = member.loader()
    first = sum(bl(model, b).item() for b in loader)
    for _ in range(8):
        for batch in loader:
            opt.zero_grad()
            bl(model, batch).backward()
            opt.step()
    last = sum(bl(model, b).item() for b in loader)
    assert last < 0.9 * first, (first, last)


def test_member_is_deterministic(member):
    a, b = member.model(), member.model()
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    bl = as_batch_loss(member.loss_fn)
    batch = member.batch()
    assert torch.equal(bl(a, batch), bl(b, batch))
    assert bl.size(batch) == member.batch_size
