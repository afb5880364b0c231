"""One place that builds torch-pruning's DependencyGraph (Fang et al., DepGraph, CVPR 2023) for thesislib.

Both the pruning baselines and the continuous groups trace networks with it; tracing goes through
:func:`dependency_graph` so that the work-around below holds for both.

* In-place activations (``nn.ReLU(inplace=True)`` right after a convolution, as in SRCNN) replace
  the output's ``grad_fn`` that torch-pruning 1.6.1 maps back to the convolution, so the graph
  silently loses those layers and finds no group at all. Tracing runs with ``inplace=False`` on
  every module that has the flag, restored afterwards (also when tracing raises).
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from typing import Any, Iterator

import torch
from torch import nn


@contextmanager
def inplace_disabled(model: nn.Module) -> Iterator[None]:
    """Temporarily set ``inplace=False`` on every module of ``model`` that has ``inplace=True``."""
    modules = [m for m in model.modules() if getattr(m, "inplace", False) is True]
    for m in modules:
        m.inplace = False
    try:
        yield
    finally:
        for m in modules:
            m.inplace = True


def dependency_graph(model: nn.Module, example_inputs: Any, **kwargs: Any):
    """``tp.DependencyGraph().build_dependency(model, example_inputs, **kwargs)`` traced with in-place
    activations disabled and torch-pruning's tracing warnings silenced; gradients are enabled for
    the trace (the graph is read from autograd)."""
    import torch_pruning as tp

    with inplace_disabled(model), warnings.catch_warnings(), torch.enable_grad():
        warnings.simplefilter("ignore")
        return tp.DependencyGraph().build_dependency(model, example_inputs=example_inputs, **kwargs)
