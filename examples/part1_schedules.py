"""Part 1 of the guide: learning-rate schedules, with `from optiscope import *`.

The guide's class definitions are replaced by the import; each `plot` writes a PNG into
the current directory instead of opening a window. Run: `python examples/part1_schedules.py`.
"""

import matplotlib

matplotlib.use("Agg")  # headless: figures are written, never shown

from optiscope import *

# Step 1: Step Decay
scheduler = StepDecay(initial_lr=0.1, drop_rate=0.5, epochs_drop=10)
scheduler.plot(epochs=50, path="step_decay.png")

# Step 2: Exponential Decay
scheduler = ExponentialDecay(initial_lr=0.1, decay_rate=0.05)
scheduler.plot(epochs=100, path="exponential_decay.png")

# Step 3: Cosine Annealing
scheduler = CosineAnnealingScheduler(initial_lr=0.1, min_lr=0.001, T_max=100)
scheduler.plot(epochs=100, path="cosine_annealing.png")

# Step 4: Cosine Annealing with Warm Restarts
scheduler = CosineAnnealingWarmRestarts(initial_lr=0.1, min_lr=0.001, T_0=10, T_mult=2)
scheduler.plot(epochs=100, path="cosine_warm_restarts.png")
print(describe(scheduler, 100))

# Step 5: Compare All Schedules (the guide saves this file name)
compare_schedules(epochs=100, path="lr_schedules_comparison.png")
print("wrote step_decay.png, exponential_decay.png, cosine_annealing.png,")
print("      cosine_warm_restarts.png, lr_schedules_comparison.png")
