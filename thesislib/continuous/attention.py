"""Continuous multi-head attention: a head axis and a per-head (head-dimension) axis.

For ``thesislib.models.vit.Attention`` (timm layout: ``qkv`` rows ``[3, heads, head_dim]``,
``proj`` columns ``[heads, head_dim]``) the attention output is

    o = sum_h sum_d P[:, h, d] * (softmax(s * Q_h K_h^T) V_h)[:, d],   Q_h K_h^T = sum_d q_{h,d} k_{h,d},

so the head-dimension axis is summed twice -- in ``q . k`` and in ``proj`` -- and the head axis
once, in ``proj``. The groups (:func:`thesislib.graph.attention_group`) list the q, k, v rows as
producers and ``proj``'s columns as consumer; which tensor carries the quadrature weights is the
sampling policy of this module (:class:`AttnSpec`). With ``d`` samples of ``head_dim`` and ``h`` of ``heads``: q, v are sampled
(producers), k carries the head-dimension quadrature weights (so ``q . k`` keeps its scale and the
logit scale ``s`` stays that of the original ``head_dim``), and ``proj`` carries the quadrature
weights of both axes. At full width every operator is the identity, so the original block is
reproduced exactly. ``num_heads``/``head_dim``/``scale`` of the module follow the widths.

``nn.MultiheadAttention`` is handled the same way except that its projections have ``embed_dim``
rows (``heads * head_dim = embed_dim``): the number of heads is fixed, ``head_dim`` follows the
embedding width, and since it always scales logits by ``1 / sqrt(head_dim)`` of the *current*
``head_dim`` the sampled q rows are multiplied by ``sqrt(d / D)`` to keep the original ``1 / sqrt(D)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .axis import AxisOp


@dataclass
class AttnSpec:
    """How a ``qkv`` (``sections = 3``) or ``proj`` (``sections = 1``) tensor splits into heads."""

    dim: int            # physical axis holding sections x heads x head_dim
    sections: int
    heads: str | None   # group names (``None``: the number of heads is fixed)
    head_dim: str
    head_roles: tuple[str, ...]
    dim_roles: tuple[str, ...]
    q_rescale: bool = False  # nn.MultiheadAttention: q *= sqrt(d / D) keeps the logit scale 1 / sqrt(D)


def section_view(t: torch.Tensor, spec: AttnSpec, heads: int, head_dim: int) -> torch.Tensor:
    """``t`` with axis ``spec.dim`` split into ``[sections, heads, head_dim]`` (a view)."""
    shape = list(t.shape)
    return t.reshape(shape[:spec.dim] + [spec.sections, heads, head_dim] + shape[spec.dim + 1:])


def sample_attention_axes(t: torch.Tensor, spec: AttnSpec, sizes: tuple[int, int],
                          ops: dict[str, dict[str, AxisOp]]) -> torch.Tensor:
    """Resample the head and head-dimension axes of one ``qkv``/``proj`` tensor."""
    op_h = ops[spec.heads] if spec.heads is not None else None
    op_d = ops[spec.head_dim]
    if (op_h is None or all(o.identity for o in op_h.values())) and all(o.identity for o in op_d.values()):
        return t
    v = section_view(t, spec, *sizes)
    parts = []
    for s in range(spec.sections):
        p = v.select(spec.dim, s)
        if op_h is not None:
            p = op_h[spec.head_roles[s]].apply(p, spec.dim)
        op = op_d[spec.dim_roles[s]]
        p = op.apply(p, spec.dim + 1)
        if spec.q_rescale and s == 0 and op.m != op.n:
            p = p * math.sqrt(op.m / op.n)
        parts.append(p.flatten(spec.dim, spec.dim + 1))
    return torch.cat(parts, spec.dim)


def member_view(t: torch.Tensor, view: str, heads: int, head_dim: int) -> torch.Tensor:
    """The view of an attention tensor a :class:`thesislib.graph.Member` with ``view`` refers to."""
    if view in ("q", "k", "v"):
        return t.reshape(3, heads, head_dim, *t.shape[1:])["qkv".index(view)]
    if view == "proj":
        return t.reshape(t.shape[0], heads, head_dim)
    raise ValueError(f"unknown attention view {view!r}; valid: q, k, v, proj")
