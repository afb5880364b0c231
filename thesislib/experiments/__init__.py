"""One module per notebook: the experiments of the book.

Each ``thesislib.experiments.<notebook>`` has a frozen ``Settings`` dataclass, ``SETTINGS`` keyed by
:data:`thesislib.config.SCALES`, ``settings(scale)`` (an unknown scale raises the one
:func:`thesislib.config.check_scale` error), ``run(settings, seed=0, device=None) -> Result`` computing
every number the book quotes (``Result.to_dict()`` is what ``results/<notebook>/<scale>.json`` holds) and
``plot_*(result)`` figures in the style of :mod:`thesislib.plotting`. A notebook is prose around
``settings`` → ``run`` → plots → ``thesislib.results.Run``. A new experiment goes in a new module here,
registered in :data:`EXPERIMENTS` and :data:`thesislib.reproduce.NOTEBOOKS`.
"""

from __future__ import annotations

from types import ModuleType

from . import baselines, batchnorm, capacity, fashion_mnist, inn_training, spectralnorm, super_resolution

#: ``{notebook name: module}`` in the order of :data:`thesislib.reproduce.NOTEBOOKS`
EXPERIMENTS: dict[str, ModuleType] = {
    "fashion_mnist": fashion_mnist,
    "baselines": baselines,
    "capacity": capacity,
    "super_resolution": super_resolution,
    "inn_training": inn_training,
    "batchnorm": batchnorm,
    "spectralnorm": spectralnorm,
}

__all__ = ["EXPERIMENTS", "fashion_mnist", "baselines", "capacity", "super_resolution", "inn_training", "batchnorm",
           "spectralnorm"]
