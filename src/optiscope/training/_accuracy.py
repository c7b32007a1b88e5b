"""Accuracy that is right for multi-class logits, a single binary logit, and regression."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["TASKS", "infer_task", "count_correct"]

TASKS = ("auto", "multiclass", "binary", "regression")

_REGRESSION_LOSSES = (nn.MSELoss, nn.L1Loss, nn.SmoothL1Loss, nn.HuberLoss, nn.GaussianNLLLoss)


def infer_task(loss_fn: object, output: torch.Tensor, target: torch.Tensor) -> str:
    """Decide how to score ``output`` against ``target`` (from the loss, then the shapes).

    CrossEntropy/NLL mean multi-class; BCE-with-logits a binary logit (BCELoss a
    probability, thresholded at 0.5); MSE-like losses regression (no accuracy). Other
    losses: integer targets with several outputs per sample are multi-class, integer
    targets with one output binary, float targets regression.
    """
    if isinstance(loss_fn, (nn.CrossEntropyLoss, nn.NLLLoss)):
        return "multiclass"
    if isinstance(loss_fn, nn.BCEWithLogitsLoss):
        return "binary"
    if isinstance(loss_fn, nn.BCELoss):
        return "binary_prob"
    if isinstance(loss_fn, _REGRESSION_LOSSES):
        return "regression"
    several = output.dim() >= 2 and output.shape[1] > 1
    if target.is_floating_point():
        # Class probabilities (soft labels) have the output's shape and several columns.
        if several and target.shape == output.shape:
            return "multiclass"
        return "regression"
    return "multiclass" if several else "binary"


def count_correct(output: torch.Tensor, target: torch.Tensor, task: str) -> torch.Tensor | None:
    """Number of correct predictions as a 0-d device tensor (None for regression)."""
    if task == "regression":
        return None
    if task == "multiclass":
        pred = output.argmax(dim=1)
        if target.is_floating_point() and target.shape == output.shape:
            target = target.argmax(dim=1)
        return (pred == target.reshape(pred.shape)).sum()
    threshold = 0.5 if task == "binary_prob" else 0.0
    pred = output.reshape(-1) > threshold
    return (pred == target.reshape(-1).to(torch.bool)).sum()
