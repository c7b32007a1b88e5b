"""Part 2 of the guide: learning-rate warmup, with `from optiscope import *`.

The guide's class definitions are replaced by the import; figures are written into the
current directory instead of shown. Run: `python examples/part2_warmup.py`.
"""

import matplotlib

matplotlib.use("Agg")  # headless: figures are written, never shown

import matplotlib.pyplot as plt
import torch.nn as nn
import torch.optim as optim

from optiscope import *

# Step 1: Linear Warmup
warmup = LinearWarmup(target_lr=0.001, warmup_steps=1000)
warmup.plot(total_steps=5000, path="linear_warmup.png")

# Step 2: Warmup + Cosine Decay
scheduler = WarmupCosineSchedule(warmup_steps=1000, total_steps=10000, max_lr=0.001, min_lr=1e-5)
scheduler.plot(path="warmup_cosine.png")

# Step 3: Warmup Implementation in Optimizer
model = nn.Linear(10, 1)
base_optimizer = optim.Adam(model.parameters())
optimizer = WarmupOptimizer(base_optimizer, warmup_steps=1000, max_lr=0.001)

# Track LRs during training
lrs = []
for step in range(5000):  # noqa: B007 - the guide's loop, kept as written
    optimizer.zero_grad()
    # ... forward pass, backward pass ...
    optimizer.step()
    lrs.append(optimizer.get_lr())

plt.figure(figsize=(10, 4))
plt.plot(lrs)
plt.xlabel("Step")
plt.ylabel("Learning Rate")
plt.title("Learning Rate with Warmup During Training")
plt.grid(True, alpha=0.3)
plt.savefig("warmup_optimizer.png", dpi=100, bbox_inches="tight")

# Beyond the guide: warmup on any schedule, driven by a standard torch scheduler.
schedule = LinearWarmup(
    None, 500, start_lr=1e-5, after=CosineAnnealingWarmRestarts(0.001, 1e-5, T_0=1000, T_mult=2)
)
optimizer = optim.AdamW(model.parameters(), lr=1.0)
lr_scheduler = ScheduleLR(optimizer, schedule)
seen = []
for _ in range(4000):
    optimizer.step()
    lr_scheduler.step()
    seen.append(lr_scheduler.get_last_lr()[0])
assert seen[-1] == schedule(4000)
print(describe(schedule, 4000))
schedule.plot(4000, path="warmup_restarts.png")
print("wrote linear_warmup.png, warmup_cosine.png, warmup_optimizer.png, warmup_restarts.png")
