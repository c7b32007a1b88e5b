"""Built-in models sized for the digits data: an MLP and a small CNN with BatchNorm."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

__all__ = ["digits_mlp", "digits_cnn"]


def digits_mlp(
    hidden: Sequence[int] = (256, 128),
    *,
    dropout: float = 0.1,
    in_features: int = 64,
    num_classes: int = 10,
) -> nn.Sequential:
    """A ReLU MLP ``64 -> hidden... -> 10`` with dropout after each hidden layer.

    Args:
        hidden: Widths of the hidden layers (each >= 1).
        dropout: Dropout probability in [0, 1).
        in_features: Input width (64 for 8x8 digits).
        num_classes: Number of output logits.

    Returns:
        The ``nn.Sequential`` model.

    Raises:
        ValueError: A width < 1 or ``dropout`` outside [0, 1).

    Example:
        >>> sum(p.numel() for p in digits_mlp().parameters())
        50826
    """
    if any(int(h) < 1 for h in hidden) or in_features < 1 or num_classes < 1:
        raise ValueError(f"layer widths must be >= 1, got hidden={tuple(hidden)!r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
    layers: list[nn.Module] = []
    width = in_features
    for h in hidden:
        layers += [nn.Linear(width, int(h)), nn.ReLU()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        width = int(h)
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


def digits_cnn(channels: int = 16, *, num_classes: int = 10) -> nn.Sequential:
    """A small CNN for ``(B, 1, 8, 8)`` digits: two conv-BatchNorm-ReLU blocks and a head.

    Args:
        channels: Channels of the first conv block (the second has twice as many).
        num_classes: Number of output logits.

    Returns:
        The ``nn.Sequential`` model.

    Raises:
        ValueError: ``channels < 1``.

    Example:
        >>> import torch
        >>> digits_cnn()(torch.zeros(2, 1, 8, 8)).shape
        torch.Size([2, 10])
    """
    if channels < 1:
        raise ValueError(f"channels must be >= 1, got {channels!r}")
    c = channels
    return nn.Sequential(
        nn.Conv2d(1, c, 3, padding=1),
        nn.BatchNorm2d(c),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(c, 2 * c, 3, padding=1),
        nn.BatchNorm2d(2 * c),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(2 * c, num_classes),
    )
