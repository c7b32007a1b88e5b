"""Lanczos tridiagonalisation with full reorthogonalisation, shared by eigen and density.

Full reorthogonalisation keeps every Lanczos vector, which costs ``m * n`` memory but is
what makes the Ritz values trustworthy in float32 (plain three-term Lanczos loses
orthogonality and reports ghost copies of the top eigenvalue). A breakdown (the Krylov
space is invariant, e.g. a Hessian with few distinct eigenvalues) restarts from a fresh
random vector orthogonal to the previous ones, decided on the device without a host sync.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["Lanczos", "rademacher"]


def rademacher(shape: tuple[int, ...], generator: torch.Generator, **kw) -> torch.Tensor:
    """Independent +-1 entries, drawn on the generator's device."""
    dtype = kw.get("dtype", torch.float32)
    draw = torch.randint(0, 2, shape, generator=generator, device=generator.device, dtype=dtype)
    return draw.mul_(2).sub_(1).to(**kw)


class Lanczos:
    """Incremental Lanczos on a symmetric operator; ``step()`` adds one Krylov vector.

    The vectors live in one preallocated ``(max_steps, n)`` buffer, so reorthogonalising
    reads it as a single matrix and nothing is re-stacked per step.
    """

    def __init__(
        self,
        matvec: Callable[[torch.Tensor], torch.Tensor],
        start: torch.Tensor,
        generator: torch.Generator,
        max_steps: int,
    ) -> None:
        self.matvec = matvec
        self.generator = generator
        self.n = start.numel()
        self.Q = start.new_empty((min(max_steps, self.n), self.n))
        self.Q[0] = start / torch.linalg.vector_norm(start)
        self.filled = 1  # rows of Q that hold a Lanczos vector
        self.alphas: list[torch.Tensor] = []
        self.betas: list[torch.Tensor] = []  # betas[j] couples Q[j] and Q[j + 1]
        # float32 reorthogonalisation leaves a residual of about eps * ||H q||; below a
        # small multiple of that the new direction is noise, i.e. a breakdown.
        self._thr = 100 * torch.finfo(start.dtype).eps

    @property
    def steps(self) -> int:
        return len(self.alphas)

    def step(self) -> None:
        """One Lanczos iteration: one Hessian-vector product and a reorthogonalisation."""
        if self.steps >= self.Q.shape[0]:
            raise RuntimeError("Lanczos has used all its preallocated steps")
        k = self.filled
        Q = self.Q[:k]
        q = Q[k - 1]
        w = self.matvec(q)
        w_norm = torch.linalg.vector_norm(w)
        self.alphas.append(torch.dot(q, w))
        if k == self.Q.shape[0]:
            # No room for another vector: keep only the residual norm for the error bound.
            for _ in range(2):
                w = w - (w @ Q.T) @ Q
            self.betas.append(torch.linalg.vector_norm(w))
            return
        # Reorthogonalise the new direction and a fresh random one together (one read of
        # Q serves both), twice ("twice is enough"); the fresh one replaces a direction
        # that vanished (a breakdown), decided on the device without a host sync.
        fresh = rademacher((self.n,), self.generator, dtype=q.dtype, device=q.device)
        W = torch.stack([w, fresh])
        for _ in range(2):
            W = W - (W @ Q.T) @ Q
        norms = torch.linalg.vector_norm(W, dim=1)
        beta = norms[0]
        ok = beta > self._thr * w_norm
        self.Q[k] = torch.where(ok, W[0] / torch.where(ok, beta, 1.0), W[1] / norms[1])
        self.filled = k + 1
        # A restart decouples the new block: the tridiagonal gets a zero there.
        self.betas.append(torch.where(ok, beta, torch.zeros_like(beta)))

    def tridiagonal(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(T, beta_last)`` on the host in float64 (one device-to-host copy)."""
        m = self.steps
        host = torch.stack(self.alphas + self.betas[:m]).to("cpu", torch.float64)
        a, b = host[:m], host[m:]
        T = torch.diag(a)
        if m > 1:
            T += torch.diag(b[: m - 1], 1) + torch.diag(b[: m - 1], -1)
        return T, b[m - 1]

    def basis(self) -> torch.Tensor:
        """The ``(m, n)`` Lanczos vectors of the completed steps (a view)."""
        return self.Q[: self.steps]
