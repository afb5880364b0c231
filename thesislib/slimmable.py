"""Slimmable networks: one set of weights, every width a prefix of the channels (Yu et al. ICLR 2019;
universally slimmable, Yu & Huang ICCV 2019).

A :class:`SlimmableNet` is the same channel-group model as :class:`~thesislib.continuous.ContinuousNet`
(:mod:`thesislib.graph` groups, the same forward through ``functional_call``, ``export``, ``recalibrate``)
with a different sampling policy: at width ``m`` a group keeps its *first* ``m`` channels in every member
tensor, unscaled (no interpolation, no quadrature, no anti-aliasing). BatchNorm is *shared* across widths
(the first ``m`` affine parameters and statistics) and its statistics are recalibrated per width after
training, as universally slimmable networks do (Yu & Huang 2019, Sec. 3.4) -- not one BatchNorm per
width (the switchable BatchNorm of Yu et al. 2019, which only a finite set of widths can have).

Train it with :func:`thesislib.width_training.train_continuous` (``sandwich=True, distill=True`` is the
universally slimmable recipe). :func:`to_slimmable` orders each group's channels by decreasing L1 norm
of its members (``order="l1"``, so a prefix of a trained network keeps its largest channels) or keeps
the network's order (``order="none"``, the from-scratch case).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Mapping

import torch
from torch import nn

from thesislib.continuous import ContinuousNet, to_continuous
from thesislib.continuous.axis import AxisOp
from thesislib.graph import Role

__all__ = ["SlimmableNet", "to_slimmable", "prefix_op", "ORDERS"]

#: channel orders of :func:`to_slimmable`
ORDERS: tuple[str, ...] = ("l1", "none")


@lru_cache(maxsize=None)
def prefix_op(n: int, m: int) -> AxisOp:
    """The ``m × n`` selection of the first ``m`` of ``n`` channels (the identity at ``m = n``)."""
    if not (isinstance(n, int) and isinstance(m, int) and 1 <= m <= n):
        raise ValueError(f"a prefix keeps 1..n channels: got m={m!r} of n={n!r}")
    if m == n:
        return AxisOp(n, m, identity=True)
    return AxisOp(n, m, identity=False, idx=torch.arange(m), coef=torch.ones(m, 1))


class SlimmableNet(ContinuousNet):
    """A network whose width-``m`` form keeps the first ``m`` channels of every group (see the module docstring)."""

    def _ops(self, widths: Mapping[str, int], antialias: bool) -> dict[str, dict[str, AxisOp]]:
        ops = {}
        for name, g in self._groups.items():
            if widths[name] > g.size:
                raise ValueError(f"a slimmable network cannot widen group {name!r} beyond its {g.size} channels")
            op = prefix_op(g.size, widths[name])
            ops[name] = {Role.PRODUCER: op, Role.NORM: op, Role.CONSUMER: op}
        return ops

    def extra_repr(self) -> str:
        return f"groups={len(self._groups)}, prefix widths, discrete_groups={len(self.discrete_groups)}"


def _l1_order(net: ContinuousNet, name: str) -> torch.Tensor:
    """Channels of a group by decreasing L1 norm summed over its producer and consumer tensors."""
    score = None
    for member, t in net.group_tensors(name):
        if member.role not in (Role.PRODUCER, Role.CONSUMER):
            continue
        s = t.abs().movedim(member.dim, 0).reshape(t.shape[member.dim], -1).sum(1)
        s = s / s.sum().clamp_min(1e-12)
        score = s if score is None else score + s
    return torch.argsort(score, descending=True)


def to_slimmable(net: nn.Module, example_inputs: Any, order: str = "none", **kwargs: Any) -> SlimmableNet:
    """``net`` (not modified; a deep copy) as a :class:`SlimmableNet` over the same groups as :func:`to_continuous`
    (``keep_discrete`` and the other keyword arguments are passed on; no total-variation permutation), channels in
    ``order`` (:data:`ORDERS`). Computes the same function as ``net`` at full width."""
    from thesislib.continuous.net import _permute

    if order not in ORDERS:
        raise ValueError(f"unknown channel order {order!r}; valid: {', '.join(ORDERS)}")
    kwargs["permute"] = False
    cnet = to_continuous(net, example_inputs, **kwargs)
    cnet.__class__ = SlimmableNet  # same state, the prefix sampling policy
    if order == "l1":
        for g in cnet.groups:
            _permute(cnet, g, _l1_order(cnet, g.name))
    return cnet
