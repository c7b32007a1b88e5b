"""A zoo of tiny but real architectures: every API that takes a model is tested on each.

Each member builds a seeded model, a small synthetic data set in the member's own batch
layout (tuples, several inputs, dict batches), and the ``loss_fn`` optiscope gets for it
(a ``loss_fn(output, target)``, or None when the model computes its own loss). A test
module parametrised over ``ZOO`` (the ``member`` fixture in ``conftest.py``) runs one API
on every member, so a new member or a new API gets the shared tests for free.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

__all__ = ["ZOO", "ZooMember", "member_names"]

VOCAB = 16
SEQ = 8
N = 48


# --- architectures ------------------------------------------------------------------
class Block(nn.Module):
    """A ResNet basic block: conv-BN-ReLU-conv-BN plus the identity, ReLU in place."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + x)


class TinyResNet(nn.Module):
    def __init__(self, classes: int = 4, c: int = 8) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True)
        )
        self.block = Block(c)
        self.head = nn.Linear(c, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.block(self.stem(x)).mean(dim=(2, 3)))


class EncoderClassifier(nn.Module):
    """Token classifier on ``nn.TransformerEncoder`` (fused attention kernels on CPU)."""

    def __init__(self, d: int = 16, classes: int = 3) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, d)
        layer = nn.TransformerEncoderLayer(
            d, nhead=2, dim_feedforward=2 * d, dropout=0.0, batch_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, num_layers=1, enable_nested_tensor=False)
        self.head = nn.Linear(d, classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.embed(tokens)).mean(dim=1))


class CausalLM(nn.Module):
    """Decoder-only LM: embedding, causal SDPA, LayerNorm, tied output weights."""

    def __init__(self, d: int = 16, heads: int = 2) -> None:
        super().__init__()
        self.heads = heads
        self.embed = nn.Embedding(VOCAB, d)
        self.pos = nn.Parameter(torch.randn(SEQ, d) * 0.02)
        self.ln1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.ln2 = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))
        self.ln_f = nn.LayerNorm(d)
        self.lm_head = nn.Linear(d, VOCAB, bias=False)
        self.lm_head.weight = self.embed.weight  # tied

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        b, t = tokens.shape
        x = self.embed(tokens) + self.pos[:t]
        q, k, v = self.qkv(self.ln1(x)).split(x.shape[-1], dim=-1)
        q, k, v = (z.view(b, t, self.heads, -1).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).reshape(b, t, -1))
        x = x + self.mlp(self.ln2(x))
        return self.lm_head(self.ln_f(x))


def next_token_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


class RNNClassifier(nn.Module):
    def __init__(self, features: int = 4, hidden: int = 12, classes: int = 3) -> None:
        super().__init__()
        self.lstm = nn.LSTM(features, hidden, batch_first=True)
        self.gru = nn.GRU(hidden, hidden, batch_first=True)
        self.head = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x)
        out, _ = self.gru(out)
        return self.head(out[:, -1])


@dataclass
class Output:
    """What a Hugging Face model returns: ``.loss`` and ``.logits`` (also by key)."""

    loss: torch.Tensor | None
    logits: torch.Tensor

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)


class HFStyleClassifier(nn.Module):
    """Takes ``input_ids``, ``attention_mask``, ``labels``; returns ``.loss`` and ``.logits``."""

    def __init__(self, d: int = 16, classes: int = 3) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, d)
        self.ln = nn.LayerNorm(d)
        self.dense = nn.Linear(d, d)
        self.classifier = nn.Linear(d, classes)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        labels: torch.Tensor | None = None,
    ) -> Output:
        h = self.ln(self.embed(input_ids))
        mask = attention_mask.unsqueeze(-1).to(h.dtype)
        pooled = (h * mask).sum(1) / mask.sum(1).clamp_min(1.0)
        logits = self.classifier(torch.tanh(self.dense(pooled)))
        loss = None if labels is None else F.cross_entropy(logits, labels)
        return Output(loss, logits)


class TwoInputNet(nn.Module):
    """A research-style model with two inputs: ``model(numeric, categorical)``."""

    def __init__(self, features: int = 5, classes: int = 3) -> None:
        super().__init__()
        self.embed = nn.Embedding(4, 3)
        self.fc = nn.Sequential(nn.Linear(features + 3, 16), nn.Tanh(), nn.Linear(16, classes))

    def forward(self, numeric: torch.Tensor, categorical: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.cat([numeric, self.embed(categorical)], dim=-1))


# --- data ---------------------------------------------------------------------------
class DictDataset(Dataset):
    """Dict samples; the default collate turns them into dict batches."""

    def __init__(self, **columns: torch.Tensor) -> None:
        self.columns = columns
        self.n = len(next(iter(columns.values())))

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[i] for k, v in self.columns.items()}


def _gen() -> torch.Generator:
    return torch.Generator().manual_seed(1234)


def _images() -> Dataset:
    g = _gen()
    x = torch.randn(N, 3, 8, 8, generator=g)
    y = (x[:, 0].mean(dim=(1, 2)) > 0).long() + 2 * (x[:, 1].mean(dim=(1, 2)) > 0).long()
    return TensorDataset(x, y)


def _token_classes() -> Dataset:
    g = _gen()
    tokens = torch.randint(0, VOCAB, (N, SEQ), generator=g)
    return TensorDataset(tokens, tokens[:, 0] % 3)


def _next_tokens() -> Dataset:
    g = _gen()
    start = torch.randint(0, VOCAB, (N, 1), generator=g)
    seq = (start + torch.arange(SEQ + 1)) % VOCAB  # a learnable counting pattern
    return TensorDataset(seq[:, :-1], seq[:, 1:])


def _sequences() -> Dataset:
    g = _gen()
    x = torch.randn(N, 6, 4, generator=g)
    return TensorDataset(x, (x[:, :, 0].sum(1) > 0).long() + (x[:, :, 1].sum(1) > 1).long())


def _dict_tokens() -> Dataset:
    g = _gen()
    ids = torch.randint(0, VOCAB, (N, SEQ), generator=g)
    lengths = torch.randint(3, SEQ + 1, (N,), generator=g)
    mask = (torch.arange(SEQ) < lengths[:, None]).long()
    return DictDataset(input_ids=ids, attention_mask=mask, labels=ids[:, 0] % 3)


def _regression() -> Dataset:
    g = _gen()
    x = torch.randn(N, 6, generator=g)
    return TensorDataset(x, (x[:, :1] * 0.7 - x[:, 1:2] ** 2 * 0.3))


def _binary() -> Dataset:
    g = _gen()
    x = torch.randn(N, 6, generator=g)
    return TensorDataset(x, (x[:, 0] + 0.5 * x[:, 1] > 0).float().unsqueeze(1))


def _two_inputs() -> Dataset:
    g = _gen()
    numeric = torch.randn(N, 5, generator=g)
    categorical = torch.randint(0, 4, (N,), generator=g)
    y = (numeric[:, 0] > 0).long() + (categorical > 1).long()
    return TensorDataset(numeric, categorical, y)


def _mlp(out: int) -> nn.Module:
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, out))


# --- registry -----------------------------------------------------------------------
@dataclass(frozen=True)
class ZooMember:
    """One architecture with its data, its loss and how its accuracy is scored.

    Attributes:
        name: Short id used in test ids.
        build: Returns a new model (call :meth:`model` for a seeded one).
        dataset: Returns the member's data set (deterministic).
        loss_fn: The ``loss_fn`` optiscope gets (None: the model computes its loss).
        task: ``"multiclass"``, ``"binary"`` or ``"regression"``.
        layout: ``"pair"`` (x, y), ``"multi"`` (x1, x2, y) or ``"dict"``.
        tags: Properties tests may select on (``"attention"``, ``"batchnorm"``, ...).
    """

    name: str
    build: Callable[[], nn.Module]
    dataset: Callable[[], Dataset]
    loss_fn: Callable[..., torch.Tensor] | None
    task: str
    layout: str = "pair"
    tags: frozenset[str] = field(default_factory=frozenset)
    batch_size: int = 16

    def model(self, seed: int = 0) -> nn.Module:
        torch.manual_seed(seed)
        return self.build()

    def loader(self, batch_size: int | None = None, shuffle: bool = False) -> DataLoader:
        return DataLoader(self.dataset(), batch_size=batch_size or self.batch_size, shuffle=shuffle)

    def batch(self) -> Any:
        """The first batch of :meth:`loader`."""
        return next(iter(self.loader()))

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The whole data set as ``(inputs, targets)`` tensors (pair layout only)."""
        if self.layout != "pair":
            return None
        ds = self.dataset()
        return ds.tensors[0], ds.tensors[1]  # type: ignore[attr-defined]


ZOO: tuple[ZooMember, ...] = (
    ZooMember(
        "resnet",
        TinyResNet,
        _images,
        nn.CrossEntropyLoss(),
        "multiclass",
        tags=frozenset({"conv", "batchnorm", "inplace"}),
    ),
    ZooMember(
        "encoder",
        EncoderClassifier,
        _token_classes,
        nn.CrossEntropyLoss(),
        "multiclass",
        tags=frozenset({"attention"}),
    ),
    ZooMember(
        "causal_lm",
        CausalLM,
        _next_tokens,
        next_token_loss,
        "multiclass",
        tags=frozenset({"attention", "tied", "token_level"}),
    ),
    ZooMember(
        "rnn",
        RNNClassifier,
        _sequences,
        nn.CrossEntropyLoss(),
        "multiclass",
        tags=frozenset({"recurrent"}),
    ),
    ZooMember(
        "hf_style",
        HFStyleClassifier,
        _dict_tokens,
        None,
        "multiclass",
        layout="dict",
        tags=frozenset({"dict", "model_loss"}),
    ),
    ZooMember("regression", lambda: _mlp(1), _regression, nn.MSELoss(), "regression"),
    ZooMember("binary", lambda: _mlp(1), _binary, nn.BCEWithLogitsLoss(), "binary"),
    ZooMember(
        "two_input", TwoInputNet, _two_inputs, nn.CrossEntropyLoss(), "multiclass", layout="multi"
    ),
)


def member_names() -> list[str]:
    return [m.name for m in ZOO]
