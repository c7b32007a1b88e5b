"""The one way optiscope finishes a figure: save it if asked, show it only if asked."""

from __future__ import annotations

import os
from typing import Any


def finish_figure(fig: Any, path: str | os.PathLike | None = None, show: bool = False) -> Any:
    """Save ``fig`` to ``path`` (when given), show it (only when ``show``) and return it.

    Plots never block by default: pyplot's ``show`` waits for the window on interactive
    backends, so it runs only on request.
    """
    if path is not None:
        fig.savefig(path, dpi=150, bbox_inches="tight")
    if show:
        import matplotlib.pyplot

        matplotlib.pyplot.show()
    return fig
