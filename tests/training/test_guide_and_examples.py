"""The guide's Part 5 runs unchanged; the examples run; the DDP example under torchrun."""

from __future__ import annotations

import importlib.util
import re
import socket
import subprocess
import sys
from pathlib import Path

import matplotlib.figure
import pytest
from tests._processes import assert_worker_ok

ROOT = Path(__file__).resolve().parents[2]


def test_guide_complete_training_example(capsys, tmp_path, monkeypatch):
    # The guide's code, verbatim apart from the imports (its AdvancedTrainer comes from
    # optiscope); only the epoch count is lowered to fit the test budget.
    import numpy as np
    import torch
    import torch.nn as nn
    import torch.optim as optim
    from torch.utils.data import DataLoader, TensorDataset

    from optiscope import AdvancedTrainer

    monkeypatch.chdir(tmp_path)
    epochs = 3

    def complete_training_example():
        model = nn.Sequential(
            nn.Linear(784, 256),
            nn.ReLU(),
            nn.Dropout(0.2),
            nn.Linear(256, 128),
            nn.ReLU(),
            nn.Dropout(0.2),
            nn.Linear(128, 10),
        )
        train_data = TensorDataset(torch.randn(1000, 784), torch.randint(0, 10, (1000,)))
        val_data = TensorDataset(torch.randn(200, 784), torch.randint(0, 10, (200,)))
        train_loader = DataLoader(train_data, batch_size=32, shuffle=True)
        val_loader = DataLoader(val_data, batch_size=32)
        optimizer = optim.AdamW(model.parameters(), lr=0.001, weight_decay=0.01)
        total_steps = len(train_loader) * 20  # 20 epochs
        warmup_steps = len(train_loader) * 2  # 2 epochs warmup
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer,
            lr_lambda=lambda step: min(
                (step + 1) / warmup_steps,
                0.5 * (1.0 + np.cos(np.pi * (step - warmup_steps) / (total_steps - warmup_steps))),
            ),
        )
        trainer = AdvancedTrainer(
            model=model, optimizer=optimizer, loss_fn=nn.CrossEntropyLoss(), device="cpu"
        )
        trainer.train(
            train_loader=train_loader,
            val_loader=val_loader,
            epochs=epochs,
            scheduler=scheduler,
            max_grad_norm=1.0,
        )
        fig = trainer.plot_training_curves()
        return trainer, fig, warmup_steps

    torch.manual_seed(0)
    trainer, fig, warmup = complete_training_example()
    out = capsys.readouterr().out
    assert "Training for 3 epochs" in out and out.count("Epoch 3 Summary") == 1
    assert isinstance(fig, matplotlib.figure.Figure)
    assert len(trainer.train_losses) == len(trainer.val_losses) == 3
    assert len(trainer.grad_norms) == len(trainer.learning_rates) == 3 * 32
    # The LambdaLR is stepped per optimizer step: step k uses lambda(k) * 1e-3.
    assert trainer.learning_rates[:3] == pytest.approx([1e-3 * (k + 1) / warmup for k in range(3)])
    assert not list(tmp_path.iterdir())  # nothing saved unless a path is given


def _load_example(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", ROOT / "examples" / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_part5_example_on_digits(tmp_path, capsys):
    example = _load_example("part5_trainer.py")
    trainer = example.main(epochs=2, out=tmp_path)
    assert trainer.val_accuracies[-1] > 0.6
    for name in (
        "metrics.csv",
        "metrics.jsonl",
        "last.pt",
        "best.pt",
        "lr_find.png",
        "training_curves.png",
    ):
        assert (tmp_path / name).exists(), name
    assert "LR range test" in capsys.readouterr().out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_ddp_example_under_torchrun(tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--nnodes",
        "1",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(_free_port()),
        str(ROOT / "examples" / "ddp_digits.py"),
        "--epochs",
        "2",
        "--out",
        str(tmp_path),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert_worker_ok(proc.returncode, proc.stdout[-2000:] + proc.stderr)
    lines = re.findall(
        r"rank (\d)/2: steps=(\d+) .* train_loss=(\S+) .* checksum=(\S+)", proc.stdout
    )
    assert sorted(r for r, *_ in lines) == ["0", "1"]
    # 1,438 training digits / 2 ranks / batch 64 -> 12 optimizer steps per epoch.
    assert {s for _, s, _, _ in lines} == {"24"}
    # All-reduced train loss and DDP-synchronised weights agree across ranks.
    assert len({loss for *_, loss, _ in lines}) == 1
    assert len({c for *_, c in lines}) == 1
    # Only rank 0 logs: one header, 24 step rows and 2 epoch rows.
    rows = (tmp_path / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("kind,") and len(rows) == 1 + 24 + 2
    assert proc.stdout.count("Epoch 2 Summary") == 1
