"""Tiny real models and token data for the integration tests (built from configs, no download)."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

VOCAB = 64
SEQ = 8


class Tokens(Dataset):
    """Random token ids as HF-style dict samples: ``input_ids`` and ``labels``."""

    def __init__(self, n: int = 24, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(0, VOCAB, (n, SEQ), generator=g)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


def tiny_gpt2(seed: int = 0) -> torch.nn.Module:
    """A 2-layer GPT-2 with hidden size 32 (no dropout, so resumes are comparable)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=VOCAB, n_positions=16, n_embd=32, n_layer=2, n_head=2,
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                     bos_token_id=0, eos_token_id=0)  # fmt: skip
    model = GPT2LMHeadModel(cfg)
    # transformers 5.25 derives loss_type from the class name, which for GPT2LMHeadModel
    # matches no loss; the Trainer then counts num_items_in_batch over unshifted labels
    # and every loss and gradient comes out (T - 1) / T too small. Naming it fixes that.
    model.loss_type = "ForCausalLM"
    return model


def tiny_bert(seed: int = 0) -> torch.nn.Module:
    """A 2-layer BERT masked LM with hidden size 32 (no dropout)."""
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2,
                     num_attention_heads=2, intermediate_size=64, max_position_embeddings=16,
                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)  # fmt: skip
    return BertForMaskedLM(cfg)


def global_norm(params) -> float:
    """The 2-norm of all gradients, in float64 (an independent reference)."""
    grads = [p.grad.detach().double().flatten() for p in params if p.grad is not None]
    return float(torch.linalg.vector_norm(torch.cat(grads)))


# Analysis settings small enough for a test: one line, a 5x5 plane, a few iterations.
QUICK_ANALYSIS = {
    "landscape": {"num_directions": 1, "line_points": 5, "plane_points": 5, "surface": False},
    "curvature": {"max_iter": 5, "trace_samples": 2, "layerwise": False},
    "max_batches": 2,
    "name": "tiny",
}


def same_history(a: dict, b: dict) -> None:
    """Two instrument histories are equal, bit for bit (NaN equal to NaN)."""
    import numpy as np

    assert sorted(a) == sorted(b)
    for key in a:
        assert [s for s, _ in a[key]] == [s for s, _ in b[key]], key
        np.testing.assert_array_equal([v for _, v in a[key]], [v for _, v in b[key]], err_msg=key)
