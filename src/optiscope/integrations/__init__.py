"""optiscope inside the trainers people already use: PyTorch Lightning and the HF Trainer.

Thin layers over the rest of optiscope; each lives in its own module and imports its
framework only when that module is imported (``import optiscope`` imports neither):

- :mod:`optiscope.integrations.lightning`: ``OptiscopeCallback`` for ``lightning.Trainer``
  and ``schedule_config`` for ``configure_optimizers``;
- :mod:`optiscope.integrations.transformers`: ``OptiscopeCallback`` for the Hugging Face
  ``Trainer``.

Both bring an optiscope clipper in place of the framework's own clipping, the
instruments (:mod:`optiscope.instruments`) logged through the framework's loggers, and at
the end of training a landscape and curvature analysis with an HTML report. Schedules need
no adapter: :class:`~optiscope.schedules.ScheduleLR` is a torch ``LRScheduler``.
"""

__all__: list[str] = []
