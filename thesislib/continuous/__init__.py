"""Continuous channel representations of neural networks (Integral Neural Networks, Solodskikh et al. 2023).

``to_continuous(net, example_inputs)`` converts a trained network into a :class:`ContinuousNet`
whose coupled channel groups are continuous axes; ``resample`` changes their sample counts
(structured pruning without retraining), ``export`` returns a plain, physically smaller model.

This package is the sampling policy on :mod:`thesislib.graph`'s channel groups. Modules: :mod:`.axis`
(interpolation, quadrature, anti-aliasing), :mod:`.permutation` (channel order of least total
variation), :mod:`.attention` (sampling the head and head-dimension axes), :mod:`.net` (ContinuousNet,
``to_continuous``: which groups become continuous axes).
"""

from thesislib.graph import ChannelGroup, Member

from .axis import INTERPOLATIONS, QUADRATURES, axis_op, interpolation_matrix, lowpass_matrix, quadrature_weights
from .net import ContinuousNet, to_continuous
from .permutation import channel_distances, total_variation, tv_order, two_opt_reference

__all__ = [
    "to_continuous", "ContinuousNet", "ChannelGroup", "Member",
    "INTERPOLATIONS", "QUADRATURES", "axis_op", "interpolation_matrix", "lowpass_matrix", "quadrature_weights",
    "channel_distances", "total_variation", "tv_order", "two_opt_reference",
]
