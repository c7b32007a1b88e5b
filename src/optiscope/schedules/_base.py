"""The :class:`Schedule` base class: a pure, closed-form function of the step."""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from optiscope._internal.checks import check_lr, check_step

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["Schedule", "Constant"]


class Schedule:
    """A learning-rate schedule: ``lr = schedule(t)`` for a step (or fractional epoch) ``t >= 0``.

    Subclasses validate their arguments in ``__init__``, store them under the parameter's
    own name (that is what :meth:`config` reads) and implement ``_value(t)`` for a float
    ``t`` that is already checked. They name the parameters behind :attr:`peak` and
    :attr:`length` in ``peak_param`` / ``length_param`` (or override the properties), and
    adjust :meth:`plot` through data (``unit``, ``plot_steps``, ``_plot_title``), never
    by overriding it. Nothing is counted inside a schedule: the caller passes the step,
    so resuming is just passing a later step.

    Example:
        >>> from optiscope.schedules import StepDecay
        >>> s = StepDecay(initial_lr=0.1, drop_rate=0.5, epochs_drop=10)
        >>> s(25), s.get_lr(9)
        (0.025, 0.1)
        >>> s.values(3).tolist()
        [0.1, 0.1, 0.1]
        >>> s.peak, s.length
        (0.1, None)
    """

    #: Whether :meth:`get_momentum` returns values (``ScheduleLR`` then sets momentum).
    cycles_momentum: bool = False
    #: The constructor parameter that sets :attr:`peak` (a config that leaves it out
    #: gets the optimizer's lr), or None when no single parameter does.
    peak_param: ClassVar[str | None] = None
    #: The constructor parameter that sets :attr:`length` (a config that leaves it out
    #: gets the run's length), or None when no single parameter does.
    length_param: ClassVar[str | None] = None
    #: What a step is called on plots' x axis (the guide's decays count epochs).
    unit: ClassVar[str] = "Step"
    #: Steps :meth:`plot` draws by default; None means :attr:`length` (100 if unbounded).
    plot_steps: ClassVar[int | None] = None

    def _value(self, t: float) -> float:
        raise NotImplementedError

    def _momentum(self, t: float) -> float | None:
        return None

    def get_lr(self, t: float) -> float:
        """The learning rate at step ``t``.

        Args:
            t: Step or epoch, a finite real number ``>= 0`` (fractions allowed).

        Returns:
            The learning rate as a Python float.

        Raises:
            TypeError: ``t`` is not a real number.
            ValueError: ``t`` is negative, NaN or infinite.
        """
        return float(self._value(check_step(t)))

    def __call__(self, t: float) -> float:
        return self.get_lr(t)

    def get_momentum(self, t: float) -> float | None:
        """The momentum (or Adam's ``beta1``) at step ``t``, or None if not cycled."""
        return self._momentum(check_step(t))

    def values(self, steps: int | Iterable[float] | np.ndarray) -> np.ndarray:
        """Learning rates for many steps at once.

        Args:
            steps: A count ``n`` (steps ``0..n-1``) or an array of steps.

        Returns:
            A float64 array of the same length as the steps.

        Raises:
            ValueError: A step is negative or not finite, or the count is negative.
        """
        ts = _steps_array(steps)
        return np.array([float(self._value(float(t))) for t in ts], dtype=np.float64)

    def momenta(self, steps: int | Iterable[float] | np.ndarray) -> np.ndarray | None:
        """Momentum values for many steps, or None when the schedule does not cycle it."""
        if not self.cycles_momentum:
            return None
        return np.array([self._momentum(float(t)) for t in _steps_array(steps)])

    def events(self, total_steps: int) -> list[tuple[float, str]]:
        """Notable steps below ``total_steps`` (warmup end, restarts, milestones) with labels."""
        return []

    def plot(
        self,
        steps: int | None = None,
        *,
        ax: Axes | None = None,
        path: str | None = None,
        show: bool = False,
        yscale: str = "linear",
        marks: bool = True,
        title: str | None = None,
        xlabel: str | None = None,
        epochs: int | None = None,
        total_steps: int | None = None,
    ) -> Figure:
        """Draw the schedule over its first ``steps`` steps and return the Figure (never blocks).

        One signature for every schedule. ``epochs=`` and ``total_steps=`` are the guide's
        spellings of ``steps`` (``StepDecay(...).plot(epochs=50)``,
        ``LinearWarmup(...).plot(total_steps=5000)``); give at most one of the three.

        Args:
            steps: Number of steps to draw (``0..steps-1``); None draws the class's
                default (:attr:`plot_steps`, else :attr:`length`, else 100).
            ax: Axes to draw into; a new figure is created when None.
            path: Save the figure there when given.
            show: Show the figure (pyplot ``show``) (blocks on interactive backends).
            yscale: ``"linear"`` or ``"log"``.
            marks: Mark the peak, the minimum and :meth:`events`.
            title: Title; defaults to the guide's title for the guide's classes, else the
                schedule's repr.
            xlabel: Label of the x axis; defaults to :attr:`unit`.
            epochs: The guide's name for ``steps`` on its epoch-based schedules.
            total_steps: The guide's name for ``steps`` on :class:`LinearWarmup`.

        Returns:
            The matplotlib Figure.

        Raises:
            TypeError: More than one of ``steps``, ``epochs``, ``total_steps`` given.
            ValueError: ``steps < 1`` or an unknown ``yscale``.

        Example:
            >>> from optiscope.schedules import StepDecay
            >>> fig = StepDecay().plot(epochs=50, marks=False)
            >>> len(fig.axes[0].lines[0].get_ydata()), fig.axes[0].get_xlabel()
            (50, 'Epoch')
        """
        from optiscope.schedules._plot import plot_schedule

        given = [n for n, v in (("steps", steps), ("epochs", epochs), ("total_steps", total_steps))
                 if v is not None]  # fmt: skip
        if len(given) > 1:
            raise TypeError(f"plot takes one of steps, epochs, total_steps; got {given}")
        n = steps if steps is not None else epochs if epochs is not None else total_steps
        return plot_schedule(
            self,
            self._default_plot_steps() if n is None else n,
            ax=ax,
            path=path,
            show=show,
            yscale=yscale,
            marks=marks,
            title=self._plot_title() if title is None else title,
            xlabel=self.unit if xlabel is None else xlabel,
        )

    def _default_plot_steps(self) -> int:
        if self.plot_steps is not None:
            return self.plot_steps
        length = self.length
        return 100 if length is None else max(1, math.ceil(length))

    def _plot_title(self) -> str:
        return repr(self)

    @property
    def peak(self) -> float:
        """The peak rate: the highest rate the schedule is built to reach.

        For a decay that is its start; for warmup schedules the rate at the end of the
        warmup; for cycles the top of the (first) cycle.
        """
        if self.peak_param is None:
            raise NotImplementedError(f"{type(self).__name__} must define peak")
        return float(getattr(self, self.peak_param))

    @property
    def length(self) -> float | None:
        """The schedule's natural length in steps, or None when it never ends.

        From this step on the rate no longer changes (the decay has ended, the warmup is
        over, the last cycle is done). None for schedules that change forever (step and
        exponential decay, unlimited restarts and cycles, inverse square root) or are
        constant throughout.
        """
        return None if self.length_param is None else getattr(self, self.length_param)

    def config(self) -> dict[str, Any]:
        """The schedule as plain data: ``{"name": ..., **params}`` (nested for composites).

        Only ints, floats, strings, bools, None, lists and dicts, so it is safe for
        ``torch.load(weights_only=True)``, JSON and TOML. :func:`get_schedule` rebuilds it.
        """
        from optiscope.schedules._registry import registry_name

        out: dict[str, Any] = {"name": registry_name(type(self))}
        for name in self._param_names():
            out[name] = _plain(getattr(self, name))
        return out

    @classmethod
    def _param_names(cls) -> list[str]:
        return [p for p in inspect.signature(cls.__init__).parameters if p != "self"]

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={getattr(self, k)!r}" for k in self._param_names())
        return f"{type(self).__name__}({params})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Schedule) and self.config() == other.config()

    __hash__ = None  # type: ignore[assignment]


def _plain(value: Any) -> Any:
    if isinstance(value, Schedule):
        return value.config()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _steps_array(steps: int | Iterable[float] | np.ndarray) -> np.ndarray:
    if isinstance(steps, (int, np.integer)) and not isinstance(steps, bool):
        if steps < 0:
            raise ValueError(f"steps must be >= 0, got {steps}")
        return np.arange(int(steps), dtype=np.float64)
    ts = np.asarray(list(steps) if not isinstance(steps, np.ndarray) else steps, dtype=np.float64)
    if ts.ndim != 1:
        raise ValueError(f"steps must be a count or a 1-D sequence, got shape {ts.shape}")
    if ts.size and (not np.all(np.isfinite(ts)) or ts.min() < 0):
        raise ValueError("steps must be finite numbers >= 0")
    return ts


class Constant(Schedule):
    """A constant learning rate (its peak, start and end).

    Args:
        peak_lr: The learning rate, ``>= 0``.

    Raises:
        ValueError: ``peak_lr`` is negative or not finite.
        TypeError: ``peak_lr`` is not a number.

    Example:
        >>> Constant(0.01)(123), Constant(0.01).length
        (0.01, None)
    """

    peak_param = "peak_lr"

    def __init__(self, peak_lr: float = 0.1) -> None:
        self.peak_lr = check_lr("peak_lr", peak_lr)

    def _value(self, t: float) -> float:
        return self.peak_lr
