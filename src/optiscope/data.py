"""Small real data for demos, examples, tests and benchmarks: scikit-learn's bundled digits.

``load_digits`` ships inside scikit-learn (1,797 8x8 grey images of the digits 0-9), so
nothing is downloaded at run time. scikit-learn is an optional extra (``optiscope[data]``).
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, TensorDataset

__all__ = ["digits_tensors", "digits_loaders"]


def digits_tensors(
    *, standardize: bool = True, image: bool = False, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor]:
    """All 1,797 digits as ``(X, y)`` tensors.

    Args:
        standardize: Centre each feature (subtract its mean over the data set), which is
            what lets a small MLP reach > 95% validation accuracy in seconds. Pixels are
            scaled from [0, 16] to [0, 1] either way.
        image: Return ``X`` as ``(N, 1, 8, 8)`` images instead of ``(N, 64)`` vectors.
        dtype: Floating dtype of ``X``; ``y`` is int64 class labels.

    Returns:
        ``(X, y)`` with ``X`` of shape ``(1797, 64)`` (or ``(1797, 1, 8, 8)``).

    Raises:
        ImportError: scikit-learn is not installed (``pip install optiscope[data]``).

    Example:
        >>> X, y = digits_tensors()
        >>> tuple(X.shape), int(y.max())
        ((1797, 64), 9)
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the digits data set needs scikit-learn: pip install 'optiscope[data]'"
        ) from e
    bunch = load_digits()
    X = torch.as_tensor(bunch.data, dtype=dtype) / 16.0
    if standardize:
        X = X - X.mean(dim=0, keepdim=True)
    y = torch.as_tensor(bunch.target, dtype=torch.int64)
    if image:
        X = X.reshape(-1, 1, 8, 8)
    return X, y


def digits_loaders(
    batch_size: int = 64,
    *,
    val_fraction: float = 0.2,
    seed: int = 0,
    image: bool = False,
    shuffle: bool = True,
) -> tuple[DataLoader, DataLoader]:
    """Train and validation DataLoaders over the digits, split reproducibly by ``seed``.

    Args:
        batch_size: Samples per batch (>= 1).
        val_fraction: Share of samples held out for validation, in (0, 1).
        seed: Seeds both the split and the training loader's shuffling.
        image: Yield ``(B, 1, 8, 8)`` images instead of ``(B, 64)`` vectors.
        shuffle: Shuffle the training loader each epoch.

    Returns:
        ``(train_loader, val_loader)``.

    Raises:
        ValueError: ``batch_size < 1`` or ``val_fraction`` outside (0, 1).

    Example:
        >>> train, val = digits_loaders(batch_size=128)
        >>> len(train.dataset) + len(val.dataset)
        1797
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction!r}")
    X, y = digits_tensors(image=image)
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(y), generator=g)
    n_val = max(1, round(len(y) * val_fraction))
    val_idx, train_idx = perm[:n_val], perm[n_val:]
    train = TensorDataset(X[train_idx], y[train_idx])
    val = TensorDataset(X[val_idx], y[val_idx])
    loader_gen = torch.Generator().manual_seed(seed)
    return (
        DataLoader(train, batch_size=batch_size, shuffle=shuffle, generator=loader_gen),
        DataLoader(val, batch_size=batch_size),
    )
