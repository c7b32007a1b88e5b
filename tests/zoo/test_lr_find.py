"""lr_find on every zoo member: a finite suggestion in the swept range, nothing changed."""

from __future__ import annotations

import copy
import math

import torch

from optiscope import lr_find
from optiscope.batch_loss import as_batch_loss


def _snapshot(model, opt):
    return (
        {k: v.clone() for k, v in model.state_dict().items()},
        [(p.requires_grad, None if p.grad is None else p.grad.clone()) for p in model.parameters()],
        [m.training for m in model.modules()],
        copy.deepcopy(opt.state_dict()),
    )


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def test_lr_find_on_every_member(member):
    model = member.model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loader = member.loader()
    bl = as_batch_loss(member.loss_fn)
    for batch in list(loader)[:2]:  # optimizer moments and a gradient worth restoring
        opt.zero_grad()
        bl(model, batch).backward()
        opt.step()
    model.eval()
    before = _snapshot(model, opt)
    torch.manual_seed(7)
    expected = torch.rand(2)
    torch.manual_seed(7)

    res = lr_find(model, opt, member.loss_fn, loader, start_lr=1e-5, end_lr=1.0, num_iter=30)

    assert res.suggestion is not None and math.isfinite(res.suggestion), res.suggestions
    assert res.lrs[0] <= res.suggestion <= res.lrs[-1]
    assert res.rule == "steepest"
    assert all(math.isfinite(v) for v in res.raw_losses[:-1])
    assert _same(_snapshot(model, opt), before)
    assert torch.equal(torch.rand(2), expected)
