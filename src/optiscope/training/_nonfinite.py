"""Non-finite losses and gradients: detect, skip or raise, and give up after K in a row.

Unfused optimizers need the verdict on the host before ``step()`` (one value read per
optimizer step, as GradScaler does). Fused optimizers take it on the device as
``found_inf``; their skips are counted when the step values reach the host.
"""

from __future__ import annotations

import torch

from optiscope.training._metrics import StepRecord

__all__ = ["NonFiniteMixin"]


class NonFiniteMixin:
    """Bookkeeping of skipped steps (mixed into AdvancedTrainer)."""

    def _step_loss_sum(self) -> torch.Tensor:
        losses = self._buffer._losses
        return losses[0] if len(losses) == 1 else torch.stack(losses).sum()

    def _handle_nonfinite(self, epoch: int) -> None:
        step = self.global_step + self.skipped_steps
        if self.config.nonfinite == "raise":
            raise FloatingPointError(
                f"non-finite loss or gradient at optimizer step {step} (epoch {epoch}, "
                f"batch {self.batch_in_epoch}); use nonfinite='skip' to skip such steps"
            )
        self.skipped_steps += 1
        self.consecutive_skips += 1
        if self.consecutive_skips >= self.config.max_consecutive_skips:
            raise FloatingPointError(
                f"aborting: {self.consecutive_skips} consecutive optimizer steps had a "
                f"non-finite loss or gradient (last at step {step}, epoch {epoch}); lower the "
                "learning rate or check the data"
            )

    def _count_deferred_skips(self, records: list[StepRecord]) -> None:
        for r in records:
            if not r.skipped:
                self.consecutive_skips = 0
                continue
            self.global_step -= 1  # counted as applied when it was taken
            self.skipped_steps += 1
            self.consecutive_skips += 1
            if self.consecutive_skips >= self.config.max_consecutive_skips:
                raise FloatingPointError(
                    f"aborting: {self.consecutive_skips} consecutive optimizer steps had a "
                    f"non-finite loss or gradient (last at step {r.step}, epoch {r.epoch})"
                )
