"""Accuracy, one set of rules for the trainer, landscapes and the run report.

Multi-class logits (argmax over the last dimension, also token-level ``(B, T, C)``
logits against ``(B, T)`` labels), a single binary logit (> 0), a probability from
``BCELoss`` (> 0.5), and regression (no accuracy). Labels equal to ``ignore_index``
(-100, as in torch's cross-entropy and Hugging Face) are not scored. Counts are device
tensors, so scoring a batch never syncs the host.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["TASKS", "IGNORE_INDEX", "infer_task", "count_correct"]

# "binary_prob" is what "binary" means after a BCELoss: a probability thresholded at 0.5.
TASKS = ("auto", "multiclass", "binary", "binary_prob", "regression")
IGNORE_INDEX = -100

_REGRESSION_LOSSES = (nn.MSELoss, nn.L1Loss, nn.SmoothL1Loss, nn.HuberLoss, nn.GaussianNLLLoss)


def infer_task(loss_fn: object, output: torch.Tensor, target: torch.Tensor) -> str:
    """Decide how to score ``output`` against ``target`` (from the loss, then the shapes).

    CrossEntropy/NLL mean multi-class; BCE-with-logits a binary logit (BCELoss a
    probability, thresholded at 0.5); MSE-like losses regression (no accuracy). Other
    losses: integer targets with several outputs per sample are multi-class, integer
    targets with one output binary, float targets regression.

    Example:
        >>> import torch
        >>> infer_task(None, torch.zeros(4, 3), torch.zeros(4, dtype=torch.long))
        'multiclass'
        >>> infer_task(None, torch.zeros(2, 5, 7), torch.zeros(2, 5, dtype=torch.long))
        'multiclass'
        >>> infer_task(torch.nn.MSELoss(), torch.zeros(4, 1), torch.zeros(4, 1))
        'regression'
    """
    if isinstance(loss_fn, (nn.CrossEntropyLoss, nn.NLLLoss)):
        return "multiclass"
    if isinstance(loss_fn, nn.BCEWithLogitsLoss):
        return "binary"
    if isinstance(loss_fn, nn.BCELoss):
        return "binary_prob"
    if isinstance(loss_fn, _REGRESSION_LOSSES):
        return "regression"
    several = output.dim() >= 2 and output.shape[-1] > 1
    if target.is_floating_point():
        # Class probabilities (soft labels) have the output's shape and several columns.
        if several and target.shape == output.shape:
            return "multiclass"
        return "regression"
    return "multiclass" if several else "binary"


def count_correct(
    output: torch.Tensor, target: torch.Tensor, task: str
) -> tuple[torch.Tensor, torch.Tensor | int] | None:
    """``(correct, scored)`` predictions in a batch, or None where accuracy has no meaning.

    ``correct`` is a 0-d device tensor; ``scored`` is the number of labels that count
    (a device tensor when some may be ``IGNORE_INDEX``, else an int). None for
    regression, and for shapes that cannot be matched (then accuracy is skipped, never
    wrong).

    Example:
        >>> import torch
        >>> logits = torch.tensor([[[2.0, 0.0], [0.0, 1.0], [1.0, 0.0]]])
        >>> c, n = count_correct(logits, torch.tensor([[0, 0, -100]]), "multiclass")
        >>> int(c), int(n)
        (1, 2)
    """
    if task == "regression":
        return None
    if task == "multiclass":
        if target.is_floating_point() and target.shape == output.shape:
            target = target.argmax(dim=-1)
        lead = output.shape[:-1] if output.dim() >= 2 else output.shape
        if target.numel() != lead.numel():
            return None
        pred = output.argmax(dim=-1).reshape(-1)
        target = target.reshape(-1)
        if target.is_floating_point():
            return (pred == target).sum(), target.numel()
        keep = target != IGNORE_INDEX
        return ((pred == target) & keep).sum(), keep.sum()
    if output.numel() != target.numel():
        return None
    threshold = 0.5 if task == "binary_prob" else 0.0
    pred = output.reshape(-1) > threshold
    return (pred == target.reshape(-1).to(torch.bool)).sum(), target.numel()
