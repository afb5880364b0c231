"""Capacity of a layer as the Nyquist rate of its channel function, and cost-aware widths.

* :mod:`~thesislib.capacity.spectrum` — DCT-II power along the channel axis and the
  Nyquist width (smallest sample count keeping a fraction of the power);
* :mod:`~thesislib.capacity.estimators` — per-group capacity of a continuous model
  by the weight spectrum, the consumer-output error, or the feature-map spectrum
  (a registry of :class:`CapacityEstimator` objects, :data:`ESTIMATORS`);
* :mod:`~thesislib.capacity.fisher` — the Fisher-weighted spectrum (OBD loss increase of removing
  each DCT band of a channel function), behind the ``"fisher"`` estimator;
* :mod:`~thesislib.capacity.knee` — measured knees (bisection over one group's width)
  and the predicted-vs-knee table with Spearman correlation;
* :mod:`~thesislib.capacity.profiling` — per-layer MACs and measured latency;
* :mod:`~thesislib.capacity.smoothing` — band-limited by training: Sobolev fine-tuning
  of the channel functions, after which the weight spectrum is read again;
* :mod:`~thesislib.capacity.allocation` — widths under a MACs or latency budget;
* the notebook's experiment (estimators vs knees, allocations at equal cost) is
  :mod:`thesislib.experiments.capacity`.
"""

from thesislib.capacity.allocation import CostModel, allocate, proportional_widths, uniform_widths
from thesislib.capacity.estimators import (ESTIMATORS, METHODS, CapacityEstimator, capacities, capacities_at,
                                           feature_spectra, group_capacity, output_error, register_estimator,
                                           weight_spectrum)
from thesislib.capacity.fisher import fisher_spectra
from thesislib.capacity.knee import ContinuousLike, KneeTable, compare, knee_table, knee_width
from thesislib.capacity.profiling import LayerProfile, Profile, profile
from thesislib.capacity.smoothing import smooth_finetune, sobolev_penalty
from thesislib.capacity.spectrum import band_limited, combined_spectrum, nyquist_from_spectrum, nyquist_width, spectrum

__all__ = [
    "spectrum", "nyquist_width", "nyquist_from_spectrum", "combined_spectrum", "band_limited",
    "group_capacity", "capacities", "capacities_at", "weight_spectrum", "feature_spectra", "fisher_spectra",
    "output_error", "METHODS",
    "ESTIMATORS", "CapacityEstimator", "register_estimator", "ContinuousLike",
    "knee_width", "knee_table", "compare", "KneeTable",
    "profile", "Profile", "LayerProfile",
    "allocate", "uniform_widths", "proportional_widths", "CostModel",
    "smooth_finetune", "sobolev_penalty",
]
