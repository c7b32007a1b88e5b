"""Part 3 of the guide: loss landscapes, with `from optiscope import *`.

The guide's three functions run as written (their definitions replaced by the import);
figures are written into the current directory instead of shown. Then, beyond the guide:
Li et al. 2018 filter-normalised planes around a digits MLP, the training trajectory on
the PCA plane, a sharpness summary, and a saved landscape.
Run: `python examples/part3_landscape.py`.
"""

import matplotlib

matplotlib.use("Agg")  # headless: figures are written, never shown

import matplotlib.pyplot as plt
import torch
import torch.nn as nn

from optiscope import *

torch.manual_seed(0)

# Step 1: 1D Loss Landscape (the guide's example)
model = nn.Sequential(nn.Linear(2, 10), nn.ReLU(), nn.Linear(10, 1))
X = torch.randn(100, 2)
y = (X[:, 0] + X[:, 1] > 0).float().unsqueeze(1)
loss_fn = nn.BCEWithLogitsLoss()
visualize_loss_1d(model, loss_fn, X, y, param_name="0.weight", param_index=0, path="loss_1d.png")

# Step 2: 2D Loss Landscape
visualize_loss_2d(
    model,
    loss_fn,
    X,
    y,
    param_name="0.weight",
    indices=(0, 1),
    alpha_range=(-0.5, 0.5),
    num_points=30,
    path="loss_2d.png",
)

# Step 3: Random Direction Visualization (filter-normalised, as in Li et al.)
visualize_loss_random_directions(
    model, loss_fn, X, y, num_directions=10, seed=0, path="loss_random_directions.png"
)

# Beyond the guide: train a digits MLP, keep a snapshot per epoch, look around the minimum.
X, y = digits_tensors()
train, val = slice(0, 1400), slice(1400, None)
net = digits_mlp((64, 32), dropout=0.1)
opt = torch.optim.Adam(net.parameters(), lr=3e-3)
ce = nn.CrossEntropyLoss()
snapshots = []
for _epoch in range(8):
    net.train()
    perm = torch.randperm(1400)
    for i in range(0, 1400, 64):
        idx = perm[i : i + 64]
        opt.zero_grad()
        ce(net(X[train][idx]), y[train][idx]).backward()
        opt.step()
    snapshots.append({k: v.clone() for k, v in net.state_dict().items()})

# 1-D lines along filter-normalised random directions, loss and accuracy.
fig, ax = plt.subplots(figsize=(8, 5))
for k, d in enumerate(landscape.random_directions(net, 3, seed=1)):
    ls = landscape.line(net, ce, X[val], y[val], direction=d, num_points=41)
    ls.plot(ax=ax, label=f"direction {k + 1}", path="digits_lines.png" if k == 2 else None)

# A filter-normalised plane: contour (direction 1 on x) and 3-D surface.
d1, d2 = landscape.random_directions(net, 2, seed=0)
plane = landscape.plane(
    net, ce, X[val], y[val], d1=d1, d2=d2, num_points=31, metrics=("loss", "accuracy")
)
plane.plot(path="digits_contour.png")
plane.plot_surface(path="digits_surface.png")
print("sharpness:", plane.sharpness(radius=0.5))

# The training trajectory on the PCA plane of the snapshots.
final = snapshots[-1]
p1, p2, explained = landscape.pca_directions(final, snapshots[:-1])
coords = landscape.project_trajectory(final, snapshots, p1, p2)
span = 1.2 * max(abs(coords).max(), 1e-3)
pca_plane = landscape.plane(
    net, ce, X[train], y[train], d1=p1, d2=p2, alpha_range=(-span, span), num_points=25
)
landscape.plot_trajectory(pca_plane, coords, explained=explained, path="digits_trajectory.png")
pca_plane.save("digits_pca_plane.npz")
print(f"PCA explained variance: {explained.round(3)}; {plane.metadata['method']} evaluation")
print(
    "wrote loss_1d.png, loss_2d.png, loss_random_directions.png, digits_lines.png, "
    "digits_contour.png, digits_surface.png, digits_trajectory.png, digits_pca_plane.npz"
)
