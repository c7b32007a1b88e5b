"""Loss landscapes (Li et al. 2018): directions, fast batched evaluation, results, plots.

Use as a module::

    from optiscope import landscape
    d1, d2 = landscape.random_directions(model, 2, seed=0)
    ls = landscape.plane(model, loss_fn, X, y, d1=d1, d2=d2, num_points=31)
    ls.plot(); ls.plot_surface(); ls.save("plane.npz")
"""

from optiscope.landscape._choice import GridSettings
from optiscope.landscape._directions import (
    Direction,
    axis_direction,
    find_parameter,
    orthogonalize,
    random_direction,
    random_directions,
)
from optiscope.landscape._engine import evaluate_points
from optiscope.landscape._evaluate import grid_coordinates, line, plane
from optiscope.landscape._guide import (
    visualize_loss_1d,
    visualize_loss_2d,
    visualize_loss_random_directions,
)
from optiscope.landscape._plots import (
    plot_contour,
    plot_line,
    plot_surface,
    plot_trajectory,
    to_html,
)
from optiscope.landscape._result import Landscape
from optiscope.landscape._sharpness import Sharpness, sharpness
from optiscope.landscape._trajectory import (
    PCADirections,
    interpolation_direction,
    pca_directions,
    project_trajectory,
)

__all__ = [
    "Direction",
    "PCADirections",
    "axis_direction",
    "find_parameter",
    "interpolation_direction",
    "orthogonalize",
    "pca_directions",
    "project_trajectory",
    "random_direction",
    "random_directions",
    "evaluate_points",
    "GridSettings",
    "grid_coordinates",
    "line",
    "plane",
    "visualize_loss_1d",
    "visualize_loss_2d",
    "visualize_loss_random_directions",
    "plot_contour",
    "plot_line",
    "plot_surface",
    "plot_trajectory",
    "to_html",
    "Landscape",
    "Sharpness",
    "sharpness",
]
