"""A clipper applied once per optimizer step, with its record kept on the device.

Both integrations call :meth:`ClipStep.clip` where the framework has the final, unscaled
gradients of an optimizer step (Lightning's ``on_before_optimizer_step``, the Hugging Face
Trainer's ``on_pre_optimizer_step``). The :class:`~optiscope.clipping.ClipResult` of each
step stays on the device until :meth:`ClipStep.flush`, the one host copy at a log point.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from optiscope.clipping import Clipper, ClipResult, get_clipper

__all__ = ["ClipStep", "as_clipper"]

# The keys a flush logs, under the integration's prefix.
KEYS = ("grad_norm", "clipped_norm", "clip_coef", "clipped_fraction", "clipped_steps")


def as_clipper(clipper: Any) -> Clipper | None:
    """A clipper object from a clipper, a registry name, ``{"name": ..., **params}`` or None.

    Raises:
        TypeError: ``clipper`` is none of these.
        ValueError: An unknown name or a bad parameter (from :func:`get_clipper`).

    Example:
        >>> as_clipper("zclip")
        ZClip(alpha=0.97, z_thresh=2.5, warmup_steps=25, max_grad_norm=1.0, clip_option='adaptive_scaling', norm_type=2.0)
    """  # noqa: E501
    if clipper is None or isinstance(clipper, Clipper):
        return clipper
    if isinstance(clipper, str):
        return get_clipper(clipper)
    if isinstance(clipper, dict) and isinstance(clipper.get("name"), str):
        params = {k: v for k, v in clipper.items() if k != "name"}
        return get_clipper(clipper["name"], **params)
    raise TypeError(
        "clipper must be an optiscope clipper (ZClip(), AutoClip(), AGC(), ...), a registry "
        f"name such as 'zclip', a dict with a 'name' key, or None; got {type(clipper).__name__}"
    )


class ClipStep:
    """Clip once per optimizer step and keep what each call did until a log point.

    Args:
        clipper: The optiscope clipper.

    Example:
        >>> import torch
        >>> from optiscope.clipping import NormClip
        >>> w = torch.nn.Parameter(torch.zeros(2))
        >>> clip = ClipStep(NormClip(1.0))
        >>> w.grad = torch.tensor([3.0, 4.0]); _ = clip.clip(7, [w])
        >>> flushed = clip.flush(); flushed["grad_norm"], flushed["clipped_steps"]
        (5.0, 1)
    """

    def __init__(self, clipper: Clipper) -> None:
        self.clipper = clipper
        self._pending: list[tuple[int, ClipResult]] = []
        # Host record, filled at flushes: step -> (pre-clip norm, post-clip norm, clipped).
        self.history: dict[str, list[Any]] = {"step": [], "grad_norm": [], "clipped_norm": [],
                                              "clipped": []}  # fmt: skip
        self.clipped_steps = 0
        self.steps = 0

    @torch.no_grad()
    def clip(self, step: int, parameters: Iterable[torch.Tensor]) -> ClipResult:
        """Clip the gradients of ``parameters`` in place for optimizer step ``step``."""
        params = [p for p in parameters if p.grad is not None]
        result = self.clipper(params)
        self._pending.append((int(step), result))
        return result

    def flush(self) -> dict[str, float]:
        """Copy the pending results to the host (one copy) and return the log values.

        Returns:
            The last step's ``grad_norm`` (before clipping), ``clipped_norm`` and
            ``clip_coef``, the share of steps since the last flush that were clipped, and
            the total of clipped steps. Empty when no step was clipped since the last flush.
        """
        if not self._pending:
            return {}
        steps = [s for s, _ in self._pending]
        results = [r for _, r in self._pending]
        device = results[0].total_norm.device
        table = torch.stack([
            torch.stack([r.total_norm.float().to(device), r.clipped_norm.float().to(device),
                         r.clip_coef.float().to(device), r.clipped.float().to(device)])
            for r in results
        ]).cpu().tolist()  # fmt: skip
        self._pending.clear()
        for s, (norm, clipped_norm, _, flag) in zip(steps, table):
            self.history["step"].append(s)
            self.history["grad_norm"].append(norm)
            self.history["clipped_norm"].append(clipped_norm)
            self.history["clipped"].append(bool(flag))
        flags = [row[3] for row in table]
        self.clipped_steps += int(sum(flags))
        self.steps += len(flags)
        last = table[-1]
        return {
            "grad_norm": last[0],
            "clipped_norm": last[1],
            "clip_coef": last[2],
            "clipped_fraction": sum(flags) / len(flags),
            "clipped_steps": self.clipped_steps,
        }

    def state_dict(self) -> dict[str, Any]:
        """The clipper's state and the record (flushes first), plain data and tensors."""
        self.flush()
        return {
            "clipper": self.clipper.state_dict(),
            "history": {k: list(v) for k, v in self.history.items()},
            "clipped_steps": self.clipped_steps,
            "steps": self.steps,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output (the clipper checks its configuration)."""
        self.clipper.load_state_dict(state["clipper"])
        self.history = {k: list(v) for k, v in state["history"].items()}
        self.clipped_steps = int(state["clipped_steps"])
        self.steps = int(state["steps"])
        self._pending.clear()
