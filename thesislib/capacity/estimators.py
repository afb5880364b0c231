"""Capacity estimators of a continuous model's channel groups, side by side.

A group's *capacity* is the number of samples (channels) its channel function
needs. Three estimators, all after the total-variation permutation of
:func:`thesislib.continuous.to_continuous` (they read the permuted control points
or run the permuted model at full width):

``"weights"``  Nyquist width (:func:`~thesislib.capacity.spectrum.nyquist_width`)
               of the mean normalised DCT spectrum of every producer and consumer
               tensor of the group along its channel axis. Data-free; measures the
               energy of the weights, which is not the same as what the output
               depends on.
``"output"``   The smallest width ``k`` at which resampling the group alone to
               ``k`` (anti-aliased: low-pass to ``k`` samples) keeps the group's
               consumer outputs on calibration data within a relative squared
               error ``||y_k - y||^2 / ||y||^2 <= 1 - energy`` (the output power
               lost, so ``energy`` keeps its meaning of a kept power fraction).
               Found by bisection, assuming the error falls with ``k``. Consumer
               outputs do not depend on the group's width, so they compare directly.
``"features"`` Nyquist width of the mean normalised DCT spectrum of the feature
               maps the group's consumers read (calibration data, full width),
               along their channel axis — the spectrum of the signal the channel
               function is applied to, rather than of the function itself.
``"fisher"``   Nyquist width of the Fisher-weighted spectrum
               (:func:`~thesislib.capacity.fisher.fisher_spectra`): the OBD loss
               increase of removing each DCT band of the group's channel function
               (calibration data; labels are used when the batches carry them).

Each estimator is a :class:`CapacityEstimator` in :data:`ESTIMATORS` (name, whether it needs
calibration data, an ``estimate`` of several groups at several energies); :data:`METHODS` lists them and
:func:`capacities` / :func:`capacities_at` / :func:`group_capacity` look them up there. A new estimator
is one :func:`register_estimator` call.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from thesislib.capacity.knee import bisect_smallest, group_by_name
from thesislib.capacity.spectrum import check_energy, combined_spectrum, nyquist_from_spectrum
from thesislib.graph import Role
from thesislib.registry import Registry
from thesislib.runtime import batch_inputs, check_finite, model_device

if TYPE_CHECKING:
    from thesislib.continuous import ContinuousNet

ROLES = (Role.PRODUCER, Role.CONSUMER)

#: ``estimate(cnet, groups, energies, calib, batches) -> {energy: {group: width}}``.
EstimateFn = Callable[["ContinuousNet", list[str], list[float], Any, int], dict[float, dict[str, int]]]


@dataclass(frozen=True)
class CapacityEstimator:
    """One capacity estimator: its name, whether it reads calibration data, and its ``estimate`` of every
    asked group's width at several energies at once (shared spectra / evaluations)."""

    name: str
    needs_calibration: bool
    estimate: EstimateFn
    description: str


#: Every registered estimator by name, in registration order.
ESTIMATORS: Registry[CapacityEstimator] = Registry(
    "capacity estimator", CapacityEstimator, unknown="unknown capacity method {name!r}: choose one of {names}")


def register_estimator(estimator: CapacityEstimator) -> CapacityEstimator:
    """Add ``estimator`` to the registry (``ValueError`` when the name is taken); returns it."""
    return ESTIMATORS.register(estimator)


def check_method(method: str, calib: Any = None, needs: bool = False) -> CapacityEstimator:
    """The registered estimator called ``method`` (``ValueError`` listing the valid ones); with
    ``needs=True`` also refuse one that needs calibration data when ``calib`` is None."""
    estimator = ESTIMATORS.lookup(method)
    if needs and estimator.needs_calibration and calib is None:
        raise ValueError(f"capacity method {method!r} needs calibration data: pass calib=<tensor or loader>")
    return estimator


def calibration_batches(calib: Any, batches: int = 1) -> list[torch.Tensor]:
    """Input tensors from ``calib``: a tensor (one batch), or an iterable of batches
    (:func:`thesislib.runtime.batch_inputs`: ``x``, ``(x, y, ...)`` or a dict)."""
    if calib is None:
        raise ValueError("this capacity method needs calibration data: pass calib=<tensor or loader>")
    if isinstance(calib, torch.Tensor):
        return [calib]
    out = []
    for item in calib:
        out.append(batch_inputs(item))
        if len(out) >= batches:
            break
    if not out:
        raise ValueError("calib gave no batches")
    return out


def resolve_module(cnet: ContinuousNet, name: str) -> nn.Module | None:
    """The submodule of ``cnet`` that runs the member ``name`` (original model path), or None."""
    candidates = [name]
    for attr in ("net", "model", "module", "network"):
        candidates.append(f"{attr}.{name}" if name else attr)
    for cand in candidates:
        try:
            return cnet.get_submodule(cand)
        except AttributeError:
            continue
    return None


def weight_spectrum(cnet: ContinuousNet, group: str, roles: Sequence[str] = ROLES) -> np.ndarray:
    """Mean normalised DCT power of the group's producer/consumer control points (length = size)."""
    pairs = [(t, m.dim) for m, t in cnet.group_tensors(group) if m.role in roles]
    if not pairs:
        pairs = [(t, m.dim) for m, t in cnet.group_tensors(group)]
    return combined_spectrum(pairs)


def _channel_axis(module: nn.Module, x: torch.Tensor, size: int) -> int | None:
    if isinstance(module, nn.Linear):
        axis = x.ndim - 1
    elif isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
                             nn.ConvTranspose3d)) or x.ndim >= 3:
        axis = 1
    else:
        axis = x.ndim - 1
    if x.shape[axis] == size:
        return axis
    matches = [a for a in range(1, x.ndim) if x.shape[a] == size]
    return matches[0] if matches else None


@torch.no_grad()
def _consumer_inputs(cnet: ContinuousNet, names: Iterable[str], calib: Any, batches: int) -> dict[str, list]:
    """``{module_name: [(module, first input tensor) per batch]}`` at the current widths."""
    captured: dict[str, list] = {}
    handles = []
    for name in set(names):
        module = resolve_module(cnet, name)
        if module is None:
            continue
        captured[name] = []

        def hook(mod, args, _name=name):
            if args and isinstance(args[0], torch.Tensor):
                captured[_name].append((mod, args[0].detach()))
        handles.append(module.register_forward_pre_hook(hook))
    device = model_device(cnet)
    was_training = cnet.training
    cnet.eval()
    try:
        for x in calibration_batches(calib, batches):
            cnet(x.to(device))
    finally:
        for h in handles:
            h.remove()
        cnet.train(was_training)
    return captured


def feature_spectra(cnet: ContinuousNet, calib: Any, groups: Sequence[str] | None = None,
                    batches: int = 1) -> dict[str, np.ndarray]:
    """Mean normalised DCT power, along the channel axis, of the inputs of each group's consumers.

    Groups whose consumers cannot be hooked (or whose inputs do not show the
    group's channel count) are left out.
    """
    names = list(groups) if groups is not None else [g.name for g in cnet.groups]
    consumers = {n: [m.module_name for m in group_by_name(cnet, n).members if m.role == Role.CONSUMER]
                 for n in names}
    with cnet.preserved():
        cnet.resample(1.0, antialias=False)
        inputs = _consumer_inputs(cnet, [c for cs in consumers.values() for c in cs], calib, batches)
    out: dict[str, np.ndarray] = {}
    for n in names:
        size = int(group_by_name(cnet, n).size)
        pairs = []
        for c in consumers[n]:
            for module, x in inputs.get(c, []):
                axis = _channel_axis(module, x, size)
                if axis is not None:
                    pairs.append((x, axis))
        if pairs:
            out[n] = combined_spectrum(pairs)
    return out


class _Stop(Exception):
    """Raised by a hook to end a forward pass early (everything needed was captured)."""


class _OutputProbe:
    """Consumer outputs of one group on calibration inputs, at full width and at any width."""

    def __init__(self, cnet: ContinuousNet, group: str, calib: Any, batches: int = 1):
        g = group_by_name(cnet, group)
        self.cnet, self.group = cnet, group
        self.xs = [x.to(model_device(cnet)) for x in calibration_batches(calib, batches)]
        modules = [resolve_module(cnet, m.module_name) for m in g.members if m.role == Role.CONSUMER]
        self.modules = list({id(m): m for m in modules if m is not None}.values())
        self.full = cnet.full_widths
        self.reference: list[torch.Tensor] | None = None
        self.power = 0.0
        self.cache: dict[tuple[int, bool], float] = {}

    @torch.no_grad()
    def _outputs(self) -> list[torch.Tensor]:
        """Consumer outputs per batch; the forward stops once every consumer has run."""
        got: list[torch.Tensor] = []
        fired: set[int] = set()

        def hook(mod: nn.Module, args: Any, y: Any) -> None:
            got.append(y.detach().double())
            fired.add(id(mod))
            if len(fired) == len(self.modules):
                raise _Stop

        handles = [m.register_forward_hook(hook) for m in self.modules]
        try:
            for x in self.xs:
                fired.clear()
                try:
                    y = self.cnet(x)
                except _Stop:
                    continue
                if not self.modules:
                    got.append(y.detach().double())
        finally:
            for h in handles:
                h.remove()
        return got

    def error(self, width: int, antialias: bool = True) -> float:
        """Relative squared error at ``width`` (call inside ``cnet.preserved()``; cached per width)."""
        if (int(width), antialias) in self.cache:
            return self.cache[int(width), antialias]
        self.cnet.eval()
        if self.reference is None:
            self.cnet.resample(self.full, antialias=False)
            self.reference = self._outputs()
            self.power = sum(float((r ** 2).sum()) for r in self.reference)
        self.cnet.resample({**self.full, self.group: int(width)}, antialias=antialias)
        got = self._outputs()
        err = sum(float(((a - r) ** 2).sum()) for a, r in zip(got, self.reference))
        self.cache[int(width), antialias] = err / self.power if self.power > 0 else 0.0
        return self.cache[int(width), antialias]


def output_error(cnet: ContinuousNet, group: str, widths: Sequence[int], calib: Any, batches: int = 1,
                 antialias: bool = True) -> dict[int, float]:
    """Relative squared error ``||y_w - y||^2 / ||y||^2`` of the group's consumer outputs, the group
    alone at each width ``w`` (others full). Falls back to the network output when no consumer
    module can be hooked. ``cnet`` is restored afterwards."""
    probe = _OutputProbe(cnet, group, calib, batches)
    with cnet.preserved():
        return {int(w): probe.error(int(w), antialias) for w in widths}


def output_capacity(cnet: ContinuousNet, group: str, calib: Any, energy: float | Sequence[float] = 0.99,
                    batches: int = 1, antialias: bool = True) -> int | list[int]:
    """Smallest width whose consumer-output relative squared error is at most ``1 - energy`` (bisection).

    A sequence of energies gives a list of widths, sharing the evaluated widths.
    """
    energies = [check_energy(e) for e in (energy if isinstance(energy, (list, tuple)) else [energy])]
    size = int(group_by_name(cnet, group).size)
    probe = _OutputProbe(cnet, group, calib, batches)
    with cnet.preserved():
        widths = [bisect_smallest(lambda w: probe.error(w, antialias) <= 1.0 - e, 1, size) for e in energies]
    return widths if isinstance(energy, (list, tuple)) else widths[0]


def _names(cnet: ContinuousNet, groups: Sequence[str] | None) -> list[str]:
    names = list(groups) if groups is not None else [g.name for g in cnet.groups]
    for n in names:
        group_by_name(cnet, n)
    return names


def _from_spectra(cnet: ContinuousNet, names: list[str], energies: list[float],
                  spectra: Mapping[str, np.ndarray] | None) -> dict[float, dict[str, int]]:
    """Nyquist widths of ``spectra`` (the weight spectrum where ``spectra`` is None or lacks a group)."""
    out: dict[float, dict[str, int]] = {e: {} for e in energies}
    for n in names:
        spec = spectra.get(n) if spectra is not None else weight_spectrum(cnet, n)
        if spec is None:
            warnings.warn(f"group {n!r}: no consumer input to take a feature spectrum of; "
                          "using the weight spectrum", stacklevel=4)
            spec = weight_spectrum(cnet, n)
        for e in energies:
            out[e][n] = nyquist_from_spectrum(spec, e)
    return out


def _weights(cnet: ContinuousNet, names: list[str], energies: list[float], calib: Any,
             batches: int) -> dict[float, dict[str, int]]:
    return _from_spectra(cnet, names, energies, None)


def _output(cnet: ContinuousNet, names: list[str], energies: list[float], calib: Any,
            batches: int) -> dict[float, dict[str, int]]:
    out: dict[float, dict[str, int]] = {e: {} for e in energies}
    for n in names:
        for e, w in zip(energies, output_capacity(cnet, n, calib, list(energies), batches)):
            out[e][n] = w
    return out


def _features(cnet: ContinuousNet, names: list[str], energies: list[float], calib: Any,
              batches: int) -> dict[float, dict[str, int]]:
    return _from_spectra(cnet, names, energies, feature_spectra(cnet, calib, names, batches))


def _fisher(cnet: ContinuousNet, names: list[str], energies: list[float], calib: Any,
            batches: int) -> dict[float, dict[str, int]]:
    from thesislib.capacity.fisher import fisher_spectra

    spectra = fisher_spectra(cnet, calib, names, batches)
    return {e: {n: nyquist_from_spectrum(spectra[n], e) for n in names} for e in energies}


for _estimator in (
    CapacityEstimator("weights", False, _weights, "Nyquist width of the group's weight spectrum (data-free)"),
    CapacityEstimator("output", True, _output, "smallest width keeping the consumer outputs within 1 - energy"),
    CapacityEstimator("features", True, _features, "Nyquist width of the spectrum of the consumers' input maps"),
    CapacityEstimator("fisher", True, _fisher, "fewest DCT bands holding `energy` of the OBD loss increase of "
                      "removing each band (Fisher-weighted spectrum)"),
):
    register_estimator(_estimator)
del _estimator

#: The built-in estimators, in registration order.
METHODS: tuple[str, ...] = tuple(ESTIMATORS)


def capacities_at(cnet: ContinuousNet, energies: Sequence[float], method: str = "weights", calib: Any = None,
                  batches: int = 1, groups: Sequence[str] | None = None) -> dict[float, dict[str, int]]:
    """``{energy: {group: capacity}}`` for several energies, sharing spectra and output evaluations."""
    energies = [check_energy(e) for e in energies]
    estimator = check_method(method, calib, needs=True)
    check_finite(cnet, "cnet")
    return estimator.estimate(cnet, _names(cnet, groups), energies, calib, batches)


def capacities(cnet: ContinuousNet, energy: float = 0.99, method: str = "weights", calib: Any = None,
               batches: int = 1, groups: Sequence[str] | None = None) -> dict[str, int]:
    """``{group: capacity}`` for every group (or ``groups``) by ``method`` (see the module docstring and
    :data:`ESTIMATORS`); one calibration pass for ``features``."""
    energy = check_energy(energy)
    return capacities_at(cnet, [energy], method, calib, batches, groups)[energy]


def group_capacity(cnet: ContinuousNet, group_name: str, energy: float = 0.99, method: str = "weights",
                   calib: Any = None, batches: int = 1) -> int:
    """Capacity (a width in ``[1, size]``) of one group by ``method`` (see the module docstring)."""
    return capacities(cnet, energy, method, calib, batches, [group_name])[group_name]
