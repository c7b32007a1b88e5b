"""The guide's schedule classes, verbatim minus plotting: the reference for exact values."""

import numpy as np


class StepDecay:
    def __init__(self, initial_lr=0.1, drop_rate=0.5, epochs_drop=10):
        self.initial_lr = initial_lr
        self.drop_rate = drop_rate
        self.epochs_drop = epochs_drop

    def get_lr(self, epoch):
        lr = self.initial_lr * (self.drop_rate ** np.floor(epoch / self.epochs_drop))
        return lr


class ExponentialDecay:
    def __init__(self, initial_lr=0.1, decay_rate=0.05):
        self.initial_lr = initial_lr
        self.decay_rate = decay_rate

    def get_lr(self, epoch):
        lr = self.initial_lr * np.exp(-self.decay_rate * epoch)
        return lr


class CosineAnnealingScheduler:
    def __init__(self, initial_lr=0.1, min_lr=0.0, T_max=100):
        self.initial_lr = initial_lr
        self.min_lr = min_lr
        self.T_max = T_max

    def get_lr(self, epoch):
        lr = (
            self.min_lr
            + (self.initial_lr - self.min_lr) * (1 + np.cos(np.pi * epoch / self.T_max)) / 2
        )
        return lr


class CosineAnnealingWarmRestarts:
    def __init__(self, initial_lr=0.1, min_lr=0.0, T_0=10, T_mult=2):
        self.initial_lr = initial_lr
        self.min_lr = min_lr
        self.T_0 = T_0
        self.T_mult = T_mult

    def get_lr(self, epoch):
        T_cur = epoch
        T_i = self.T_0
        while T_cur >= T_i:
            T_cur -= T_i
            T_i *= self.T_mult
        lr = self.min_lr + (self.initial_lr - self.min_lr) * (1 + np.cos(np.pi * T_cur / T_i)) / 2
        return lr


class LinearWarmup:
    def __init__(self, target_lr=0.1, warmup_steps=1000):
        self.target_lr = target_lr
        self.warmup_steps = warmup_steps

    def get_lr(self, step):
        if step < self.warmup_steps:
            lr = self.target_lr * (step / self.warmup_steps)
        else:
            lr = self.target_lr
        return lr


class WarmupCosineSchedule:
    def __init__(self, warmup_steps=1000, total_steps=10000, max_lr=0.001, min_lr=0.0):
        self.warmup_steps = warmup_steps
        self.total_steps = total_steps
        self.max_lr = max_lr
        self.min_lr = min_lr

    def get_lr(self, step):
        if step < self.warmup_steps:
            lr = self.max_lr * (step / self.warmup_steps)
        else:
            progress = (step - self.warmup_steps) / (self.total_steps - self.warmup_steps)
            lr = self.min_lr + (self.max_lr - self.min_lr) * 0.5 * (1.0 + np.cos(np.pi * progress))
        return lr


class WarmupOptimizer:
    def __init__(self, optimizer, warmup_steps, max_lr):
        self.optimizer = optimizer
        self.warmup_steps = warmup_steps
        self.max_lr = max_lr
        self.current_step = 0

    def step(self):
        self.current_step += 1
        if self.current_step <= self.warmup_steps:
            lr = self.max_lr * (self.current_step / self.warmup_steps)
        else:
            lr = self.max_lr
        for param_group in self.optimizer.param_groups:
            param_group["lr"] = lr
        self.optimizer.step()

    def zero_grad(self):
        self.optimizer.zero_grad()

    def get_lr(self):
        return self.optimizer.param_groups[0]["lr"]
