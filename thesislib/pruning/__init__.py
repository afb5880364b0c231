"""Structured-pruning baselines of the thesis on one interface with continuous resampling.

>>> from thesislib.pruning import prune, METHODS, fine_tune
>>> small = prune(net, method="l1", ratio=0.5, example_inputs=x, calib=loader, recalibrate=True)

``ratio`` is the fraction of channels kept (as in ``cnet.resample(ratio)``); ``prune`` returns a plain,
physically smaller copy and leaves ``net`` untouched.  Methods (:data:`METHODS`): ``random``; ``l1``/``l2``
filter norms (Li et al. 2017); ``bn_scale`` (Liu et al. 2017); ``taylor`` (Molchanov et al. 2019);
``hessian`` (OBD, LeCun et al. 1990); ``obs`` (layer-wise OBS/OBC, Dong et al. 2017, Frantar et al. 2022);
``lfp`` (low-frequency preference, Zhang et al. 2023); ``ifm`` (iterative feature merging, Chen, Zhou, Yan
2023); ``fold`` (k-means channel folding); ``gmp`` (Zhu & Gupta 2017, gradual during :func:`fine_tune`);
``continuous`` (``thesislib.continuous``: ``to_continuous`` -> ``resample`` -> ``export``).  Each is a
:class:`PruningMethod` in :data:`METHOD_REGISTRY` (name, calibration need, score / plan / convert,
citation); a new method is one :func:`register_method` call in :mod:`.pruner`.

Channel groups come from :mod:`thesislib.graph` (the one group model). Modules: :mod:`.structural` (the
removal policy: plans, physical removal, spectral-norm strip/restore), :mod:`.importance`,
:mod:`.obs`, :mod:`.merging`, :mod:`.schedule` (GMP, fine-tuning), :mod:`.calibration` (BatchNorm
recalibration); the sweep behind ``notebooks/baselines.ipynb`` is :mod:`thesislib.experiments.baselines`.
"""

from .calibration import recalibrate_batchnorm
from .pruner import (ALLOCATIONS, METHOD_REGISTRY, METHODS, NEEDS_CALIB, SCORED, PruningMethod, allocate,
                     channel_scores, get_method, prune, register_method, top_k_per_partition)
from .schedule import GMPSchedule, fine_tune, prune_in_place
from .structural import ChannelGroup, analyse, channel_counts, default_ignored_layers

__all__ = [
    "prune", "METHODS", "NEEDS_CALIB", "ALLOCATIONS", "fine_tune", "GMPSchedule", "recalibrate_batchnorm",
    "channel_counts", "channel_scores", "analyse", "ChannelGroup", "default_ignored_layers", "allocate", "prune_in_place",
    "PruningMethod", "METHOD_REGISTRY", "SCORED", "register_method", "get_method", "top_k_per_partition",
]
