"""``ScheduleLR``: any optiscope schedule as a real ``torch.optim.lr_scheduler.LRScheduler``."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from optiscope.schedules._base import Schedule

__all__ = ["ScheduleLR"]

# Attributes that describe the schedules; saved as plain data, not as objects.
_NOT_STATE = ("optimizer", "schedules")


class ScheduleLR(LRScheduler):
    """Drive an optimizer's learning rates with a closed-form :class:`Schedule`.

    After ``k`` calls to :meth:`step` every param group has
    ``lr = schedule(k) * group.get("lr_scale", 1.0)`` (or its own schedule when a list
    is given), so "update ``k`` uses ``schedule(k)``". The value is computed from the
    step, never from the previous lr, so there is no drift and resuming is exact. When
    the schedule cycles momentum (:class:`OneCycle`, :class:`CyclicLR`), ``momentum``
    or Adam's ``betas[0]`` is set too, like torch's ``OneCycleLR``.

    It is a plain ``LRScheduler``: ``get_last_lr()``, ``state_dict()``,
    ``load_state_dict()`` and ``step()`` behave as torch's, so it drops into Lightning,
    HF Trainer or a hand-written loop. The state dict holds only plain data (the
    schedules as :meth:`Schedule.config`), safe for ``torch.load(weights_only=True)``.

    Args:
        optimizer: The wrapped optimizer.
        schedule: One schedule for all groups, or a sequence with one per param group.
        last_epoch: Index of the last step taken; ``-1`` starts fresh. Prefer
            ``load_state_dict`` to resume.

    Raises:
        TypeError: ``optimizer`` is not an Optimizer or a schedule is not a Schedule.
        ValueError: Wrong number of schedules, ``last_epoch < -1``, a bad ``lr_scale``,
            or a momentum-cycling schedule on an optimizer without momentum.

    Example:
        >>> import torch
        >>> from optiscope.schedules import StepDecay
        >>> opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
        >>> sched = ScheduleLR(opt, StepDecay(0.1, 0.5, 2))
        >>> for _ in range(3):
        ...     opt.step()
        ...     sched.step()
        >>> sched.get_last_lr()
        [0.05]
    """

    def __init__(
        self,
        optimizer: Optimizer,
        schedule: Schedule | Sequence[Schedule],
        last_epoch: int = -1,
    ) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"optimizer must be a torch Optimizer, got {type(optimizer).__name__}")
        groups = optimizer.param_groups
        if isinstance(schedule, Schedule):
            schedules = [schedule] * len(groups)
        elif isinstance(schedule, Sequence) and not isinstance(schedule, (str, bytes)):
            schedules = list(schedule)
            if len(schedules) != len(groups):
                raise ValueError(
                    f"schedule: got {len(schedules)} schedules for {len(groups)} param groups; "
                    "give one schedule, or one per group"
                )
            for i, s in enumerate(schedules):
                if not isinstance(s, Schedule):
                    raise TypeError(f"schedule[{i}] must be a Schedule, got {type(s).__name__}")
        else:
            raise TypeError(f"schedule must be a Schedule or a list of them, got {schedule!r}")
        if isinstance(last_epoch, bool) or not isinstance(last_epoch, int) or last_epoch < -1:
            raise ValueError(f"last_epoch must be an integer >= -1, got {last_epoch!r}")
        for i, group in enumerate(groups):
            scale = group.get("lr_scale", 1.0)
            if isinstance(scale, bool) or not isinstance(scale, (int, float)):
                raise TypeError(f"param_groups[{i}]['lr_scale'] must be a number, got {scale!r}")
            if not (math.isfinite(scale) and scale >= 0):
                raise ValueError(
                    f"param_groups[{i}]['lr_scale'] must be finite and >= 0, got {scale!r}"
                )
        self.schedules = schedules
        # Momentum key per group: "betas" (Adam-like), "momentum" (SGD-like) or None.
        self._momentum_keys: list[str | None] = []
        for i, (s, group) in enumerate(zip(schedules, groups)):
            key = None
            if s.cycles_momentum:
                if "betas" in group:
                    key = "betas"
                elif "momentum" in group:
                    key = "momentum"
                else:
                    raise ValueError(
                        f"schedule {type(s).__name__} cycles momentum but param_groups[{i}] has "
                        "neither 'momentum' nor 'betas'; pass cycle_momentum=False"
                    )
            self._momentum_keys.append(key)
        if last_epoch != -1:
            # torch needs initial_lr to resume; the closed form does not use it.
            for group in groups:
                group.setdefault("initial_lr", group["lr"])
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:  # type: ignore[override]
        """Learning rates for the current step ``last_epoch`` (closed form)."""
        return self._get_closed_form_lr()

    def _get_closed_form_lr(self) -> list[float]:
        # last_epoch is an int >= 0 here, so the schedules' step check can be skipped.
        t = float(max(self.last_epoch, 0))
        groups = self.optimizer.param_groups
        for s, key, group in zip(self.schedules, self._momentum_keys, groups):
            if key is not None:
                m = s._momentum(t)
                if m is not None:
                    if key == "betas":
                        group["betas"] = (m, *group["betas"][1:])
                    else:
                        group["momentum"] = m
        return [float(s._value(t)) * g.get("lr_scale", 1.0) for s, g in zip(self.schedules, groups)]

    def state_dict(self) -> dict[str, Any]:
        """Plain-data state: step counters, last lrs and the schedules' configs."""
        state = {k: v for k, v in self.__dict__.items() if k not in _NOT_STATE}
        state["schedules"] = [s.config() for s in self.schedules]
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Resume from :meth:`state_dict`; the saved schedules must equal this one's.

        The param groups are set to the resumed step's rates (and momenta) right away.

        Raises:
            ValueError: The state is not a ScheduleLR state, or it was saved from a
                different schedule (or a different number of param groups).
        """
        if "schedules" not in state_dict or "last_epoch" not in state_dict:
            raise ValueError(
                "state_dict is not a ScheduleLR state (no 'schedules'/'last_epoch' entry)"
            )
        saved = state_dict["schedules"]
        mine = [s.config() for s in self.schedules]
        if saved != mine:
            raise ValueError(
                f"state_dict was saved from a different schedule: saved {saved}, this "
                f"scheduler has {mine}"
            )
        state = {k: v for k, v in state_dict.items() if k not in _NOT_STATE}
        self.__dict__.update(state)
        # Re-apply the closed form so the groups hold the resumed step's values whether
        # the optimizer state was loaded before or after this scheduler was built.
        for group, lr in zip(self.optimizer.param_groups, self._get_closed_form_lr()):
            if isinstance(group["lr"], torch.Tensor):
                group["lr"].fill_(lr)
            else:
                group["lr"] = lr
        self._last_lr = [
            g["lr"].clone() if isinstance(g["lr"], torch.Tensor) else g["lr"]
            for g in self.optimizer.param_groups
        ]
