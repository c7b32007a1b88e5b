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
    """Independent +-1 entries (drawn on the generator's device, then moved)."""
    draw = torch.randint(0, 2, shape, generator=generator, device=generator.device)
    return (draw * 2 - 1).to(**kw)


class Lanczos:
    """Incremental Lanczos on a symmetric operator; ``step()`` adds one Krylov vector."""

    def __init__(
        self,
        matvec: Callable[[torch.Tensor], torch.Tensor],
        start: torch.Tensor,
        generator: torch.Generator,
    ) -> None:
        self.matvec = matvec
        self.generator = generator
        self.n = start.numel()
        self.q = [start / torch.linalg.vector_norm(start)]
        self.alphas: list[torch.Tensor] = []
        self.betas: list[torch.Tensor] = []  # betas[j] couples q[j] and q[j + 1]
        # float32 reorthogonalisation leaves a residual of about eps * ||H q||; below a
        # small multiple of that the new direction is noise, i.e. a breakdown.
        self._thr = 100 * torch.finfo(start.dtype).eps

    @property
    def steps(self) -> int:
        return len(self.alphas)

    def step(self) -> None:
        """One Lanczos iteration: one Hessian-vector product and a reorthogonalisation."""
        q = self.q[-1]
        w = self.matvec(q)
        w_norm = torch.linalg.vector_norm(w)
        alpha = torch.dot(q, w)
        self.alphas.append(alpha)
        Q = torch.stack(self.q)
        # Classical Gram-Schmidt twice ("twice is enough") against every previous vector.
        for _ in range(2):
            w = w - Q.T @ (Q @ w)
        beta = torch.linalg.vector_norm(w)
        self.betas.append(beta)
        if len(self.q) >= self.n:
            return  # the Krylov space is the whole space: no further direction exists
        ok = beta > self._thr * w_norm
        fresh = rademacher((self.n,), self.generator, dtype=q.dtype, device=q.device)
        for _ in range(2):
            fresh = fresh - Q.T @ (Q @ fresh)
        fresh = fresh / torch.linalg.vector_norm(fresh)
        self.q.append(torch.where(ok, w / torch.where(ok, beta, 1.0), fresh))
        # A restart decouples the new block: the tridiagonal gets a zero there.
        self.betas[-1] = torch.where(ok, beta, torch.zeros_like(beta))

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
        """The ``(m, n)`` Lanczos vectors of the completed steps."""
        return torch.stack(self.q[: self.steps])
