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
"""

from __future__ import annotations

import warnings
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from torch import nn

from thesislib.capacity.knee import bisect_smallest, full_widths, group_by_name, preserved_state
from thesislib.capacity.spectrum import check_energy, combined_spectrum, nyquist_from_spectrum

METHODS = ("weights", "output", "features")
ROLES = ("producer", "consumer")


def check_method(method: str) -> str:
    if method not in METHODS:
        raise ValueError(f"unknown capacity method {method!r}: choose one of {', '.join(METHODS)}")
    return method


def calibration_batches(calib: Any, batches: int = 1) -> list[torch.Tensor]:
    """Input tensors from ``calib``: a tensor (one batch), or an iterable of ``x`` / ``(x, y, ...)``."""
    if calib is None:
        raise ValueError("this capacity method needs calibration data: pass calib=<tensor or loader>")
    if isinstance(calib, torch.Tensor):
        return [calib]
    out = []
    for item in calib:
        out.append(item[0] if isinstance(item, (tuple, list)) else item)
        if len(out) >= batches:
            break
    if not out:
        raise ValueError("calib gave no batches")
    return out


def _device(cnet: nn.Module) -> torch.device:
    p = next(cnet.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def resolve_module(cnet: nn.Module, name: str) -> nn.Module | None:
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


def weight_spectrum(cnet: Any, group: str, roles: Sequence[str] = ROLES) -> np.ndarray:
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
def _consumer_inputs(cnet: nn.Module, names: Iterable[str], calib: Any, batches: int) -> dict[str, list]:
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
    device = _device(cnet)
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


def feature_spectra(cnet: Any, calib: Any, groups: Sequence[str] | None = None,
                    batches: int = 1) -> dict[str, np.ndarray]:
    """Mean normalised DCT power, along the channel axis, of the inputs of each group's consumers.

    Groups whose consumers cannot be hooked (or whose inputs do not show the
    group's channel count) are left out.
    """
    names = list(groups) if groups is not None else [g.name for g in cnet.groups]
    consumers = {n: [m.module_name for m in group_by_name(cnet, n).members if m.role == "consumer"]
                 for n in names}
    with preserved_state(cnet):
        cnet.resample(full_widths(cnet), antialias=False)
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

    def __init__(self, cnet: Any, group: str, calib: Any, batches: int = 1):
        g = group_by_name(cnet, group)
        self.cnet, self.group = cnet, group
        self.xs = [x.to(_device(cnet)) for x in calibration_batches(calib, batches)]
        modules = [resolve_module(cnet, m.module_name) for m in g.members if m.role == "consumer"]
        self.modules = list({id(m): m for m in modules if m is not None}.values())
        self.full = full_widths(cnet)
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
        """Relative squared error at ``width`` (call inside ``preserved_state``; cached per width)."""
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


def output_error(cnet: Any, group: str, widths: Sequence[int], calib: Any, batches: int = 1,
                 antialias: bool = True) -> dict[int, float]:
    """Relative squared error ``||y_w - y||^2 / ||y||^2`` of the group's consumer outputs, the group
    alone at each width ``w`` (others full). Falls back to the network output when no consumer
    module can be hooked. ``cnet`` is restored afterwards."""
    probe = _OutputProbe(cnet, group, calib, batches)
    with preserved_state(cnet):
        return {int(w): probe.error(int(w), antialias) for w in widths}


def output_capacity(cnet: Any, group: str, calib: Any, energy: float | Sequence[float] = 0.99,
                    batches: int = 1, antialias: bool = True) -> int | list[int]:
    """Smallest width whose consumer-output relative squared error is at most ``1 - energy`` (bisection).

    A sequence of energies gives a list of widths, sharing the evaluated widths.
    """
    energies = [check_energy(e) for e in (energy if isinstance(energy, (list, tuple)) else [energy])]
    size = int(group_by_name(cnet, group).size)
    probe = _OutputProbe(cnet, group, calib, batches)
    with preserved_state(cnet):
        widths = [bisect_smallest(lambda w: probe.error(w, antialias) <= 1.0 - e, 1, size) for e in energies]
    return widths if isinstance(energy, (list, tuple)) else widths[0]


def group_capacity(cnet: Any, group_name: str, energy: float = 0.99, method: str = "weights",
                   calib: Any = None, batches: int = 1) -> int:
    """Capacity (a width in ``[1, size]``) of one group by ``method`` (see the module docstring)."""
    energy = check_energy(energy)
    check_method(method)
    group_by_name(cnet, group_name)
    if method == "weights":
        return nyquist_from_spectrum(weight_spectrum(cnet, group_name), energy)
    if method == "output":
        return output_capacity(cnet, group_name, calib, energy, batches)
    spectra = feature_spectra(cnet, calib, [group_name], batches)
    if group_name not in spectra:
        warnings.warn(f"group {group_name!r}: no consumer input to take a feature spectrum of; "
                      "using the weight spectrum", stacklevel=2)
        return nyquist_from_spectrum(weight_spectrum(cnet, group_name), energy)
    return nyquist_from_spectrum(spectra[group_name], energy)


def capacities(cnet: Any, energy: float = 0.99, method: str = "weights", calib: Any = None,
               batches: int = 1, groups: Sequence[str] | None = None) -> dict[str, int]:
    """``{group: capacity}`` for every group (or ``groups``); one calibration pass for ``features``."""
    energy = check_energy(energy)
    check_method(method)
    names = list(groups) if groups is not None else [g.name for g in cnet.groups]
    if method == "features":
        spectra = feature_spectra(cnet, calib, names, batches)
        out = {}
        for n in names:
            spec = spectra.get(n)
            if spec is None:
                warnings.warn(f"group {n!r}: no consumer input to take a feature spectrum of; "
                              "using the weight spectrum", stacklevel=2)
                spec = weight_spectrum(cnet, n)
            out[n] = nyquist_from_spectrum(spec, energy)
        return out
    return {n: group_capacity(cnet, n, energy, method, calib, batches) for n in names}


def capacities_at(cnet: Any, energies: Sequence[float], method: str = "weights", calib: Any = None,
                  batches: int = 1, groups: Sequence[str] | None = None) -> dict[float, dict[str, int]]:
    """``{energy: {group: capacity}}`` for several energies, sharing spectra and output evaluations."""
    energies = [check_energy(e) for e in energies]
    check_method(method)
    names = list(groups) if groups is not None else [g.name for g in cnet.groups]
    out: dict[float, dict[str, int]] = {e: {} for e in energies}
    if method == "output":
        for n in names:
            for e, w in zip(energies, output_capacity(cnet, n, calib, list(energies), batches)):
                out[e][n] = w
        return out
    spectra = feature_spectra(cnet, calib, names, batches) if method == "features" else {}
    for n in names:
        spec = spectra.get(n) if method == "features" else weight_spectrum(cnet, n)
        if spec is None:
            warnings.warn(f"group {n!r}: no consumer input to take a feature spectrum of; "
                          "using the weight spectrum", stacklevel=2)
            spec = weight_spectrum(cnet, n)
        for e in energies:
            out[e][n] = nyquist_from_spectrum(spec, e)
    return out
