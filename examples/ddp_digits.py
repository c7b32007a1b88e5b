"""Data-parallel training of the digits MLP with torchrun (gloo on CPU, NCCL on GPUs).

Run: ``torchrun --nproc_per_node 2 examples/ddp_digits.py --epochs 3 --out runs/ddp``

Every process runs this same script. The trainer sees the initialised process group,
wraps the model in DistributedDataParallel, gives each rank its shard of the training
set (same batch size), steps the schedule once per optimizer step, all-reduces the
logged losses, and only rank 0 prints, writes metrics and checkpoints. Each rank prints
a checksum of its final weights: they are identical, as DDP promises.
"""

from __future__ import annotations

import argparse
import gc
import os

import torch
import torch.distributed as dist

from optiscope import AdvancedTrainer, ScheduleLR, WarmupCosineSchedule, digits_loaders, digits_mlp


def main() -> None:
    parser = argparse.ArgumentParser(description="DDP training of the digits MLP")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--out", default="runs/ddp")
    args = parser.parse_args()

    use_cuda = torch.cuda.is_available()
    dist.init_process_group("nccl" if use_cuda else "gloo")
    try:
        train(args, use_cuda)
    finally:
        # The trainer's DDP wrapper holds the process group. It went with train()'s frame
        # (collected here, as it sits in reference cycles), so the group is torn down now
        # and not at interpreter exit, where gloo can abort while stopping its threads.
        gc.collect()
        dist.destroy_process_group()


def train(args: argparse.Namespace, use_cuda: bool) -> None:
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if use_cuda else "cpu")
    torch.set_num_threads(1)
    torch.manual_seed(0)  # DDP broadcasts rank 0's weights anyway; this keeps runs repeatable

    train_loader, val_loader = digits_loaders(batch_size=64, seed=0)
    model = digits_mlp()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    # Each rank sees 1/world of the data, so an epoch has that many optimizer steps.
    steps_per_epoch = -(-len(train_loader.dataset) // world // train_loader.batch_size)
    total = steps_per_epoch * args.epochs
    scheduler = ScheduleLR(
        optimizer,
        WarmupCosineSchedule(
            warmup_steps=steps_per_epoch, total_steps=total, max_lr=3e-3, min_lr=1e-5
        ),
    )
    trainer = AdvancedTrainer(
        model,
        optimizer,
        torch.nn.CrossEntropyLoss(),
        device=device,
        run_dir=args.out,
        verbose=rank == 0,
        progress_bar=False,
        seed=0,
    )
    trainer.train(train_loader, val_loader, args.epochs, scheduler=scheduler, max_grad_norm=1.0)

    checksum = sum(p.detach().double().sum().item() for p in model.parameters())
    print(
        f"rank {rank}/{world}: steps={trainer.global_step} lr={scheduler.get_last_lr()[0]:.3e} "
        f"train_loss={trainer.train_losses[-1]:.6f} val_acc={trainer.val_accuracies[-1]:.4f} "
        f"checksum={checksum:.12e}",
        flush=True,
    )


if __name__ == "__main__":
    main()
