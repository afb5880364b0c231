"""The channel-group model of thesislib: coupled channel axes traced once, used by every method.

(Being grown from ``thesislib.dependency``; see the architecture issue.)
"""

from __future__ import annotations

from enum import Enum


class Role(str, Enum):
    """How a tensor axis takes part in a channel group.

    ``PRODUCER``: output channels (sampled / removed); ``CONSUMER``: input channels summed over (sampled
    with quadrature weights / removed, the target of reconstruction); ``NORM``: per-channel parameters
    and statistics (BatchNorm, LayerNorm, free parameters) that follow the group.
    """

    PRODUCER = "producer"
    CONSUMER = "consumer"
    NORM = "norm"


def keep_count(ratio: float, size: int) -> int:
    """Channels kept of ``size`` at kept ratio ``ratio``: ``max(1, round(ratio * size))``, the one rule of
    ``ContinuousNet.resample``, ``prune`` and the width multipliers."""
    return max(1, round(ratio * size))
