"""The guide's ``WarmupOptimizer``: an optimizer wrapper that warms the learning rate up."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch.optim import Optimizer

from optiscope._internal.checks import check_lr, check_real
from optiscope.schedules._warmup import LinearWarmup

__all__ = ["WarmupOptimizer"]


class WarmupOptimizer:
    """Wrap an optimizer and ramp its learning rate linearly up to ``max_lr``.

    Update ``k`` (1-based) uses ``max_lr * k / warmup_steps`` while
    ``k <= warmup_steps`` and ``max_lr`` afterwards, as in the guide: that is
    ``LinearWarmup(max_lr, warmup_steps)(k)``, which it evaluates. Differences from
    the guide: arguments are validated (``warmup_steps = 0`` means no warmup, never a
    division by zero), ``step(closure)`` forwards the closure and its loss, and
    ``state_dict``/``load_state_dict`` include the step counter. For new code prefer
    :class:`ScheduleLR` with :class:`LinearWarmup`, which works with any schedule.

    Args:
        optimizer: The torch optimizer to drive.
        warmup_steps: Number of warmup updates, ``>= 0``.
        max_lr: Rate after warmup, ``>= 0``.

    Raises:
        TypeError: ``optimizer`` is not a torch Optimizer.
        ValueError: ``warmup_steps`` or ``max_lr`` is negative, NaN or infinite.

    Example:
        >>> import torch
        >>> opt = WarmupOptimizer(torch.optim.SGD([torch.zeros(1, requires_grad=True)]), 4, 0.1)
        >>> for _ in range(2):
        ...     opt.zero_grad()
        ...     opt.step()
        >>> opt.get_lr()
        0.05
    """

    def __init__(self, optimizer: Optimizer, warmup_steps: float, max_lr: float):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"optimizer must be a torch Optimizer, got {type(optimizer).__name__}")
        self.optimizer = optimizer
        self.warmup_steps = check_real("warmup_steps", warmup_steps, low=0.0)
        self.max_lr = check_lr("max_lr", max_lr)
        self.current_step = 0
        self._warmup = LinearWarmup(self.max_lr, self.warmup_steps)

    def lr_at(self, step: int) -> float:
        """The rate of update ``step`` (1-based): ``LinearWarmup(max_lr, warmup_steps)(step)``."""
        return self._warmup(step)

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Set the warmup rate on every group, then take the optimizer step.

        Returns:
            Whatever the wrapped ``optimizer.step`` returns (the closure's loss).
        """
        self.current_step += 1
        lr = self.lr_at(self.current_step)
        for param_group in self.optimizer.param_groups:
            param_group["lr"] = lr
        return self.optimizer.step(closure) if closure is not None else self.optimizer.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear the gradients of the wrapped optimizer."""
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def get_lr(self) -> float:
        """The learning rate of the first param group (the one the last step used)."""
        return self.optimizer.param_groups[0]["lr"]

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        """The wrapped optimizer's param groups."""
        return self.optimizer.param_groups

    def state_dict(self) -> dict[str, Any]:
        """The wrapped optimizer's state plus the warmup step counter."""
        return {"optimizer": self.optimizer.state_dict(), "current_step": self.current_step}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        if not isinstance(state_dict, dict) or "current_step" not in state_dict:
            raise ValueError("state_dict is not a WarmupOptimizer state (no 'current_step')")
        self.optimizer.load_state_dict(state_dict["optimizer"])
        self.current_step = int(state_dict["current_step"])
