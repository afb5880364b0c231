"""Width multiplier shared by every model in :mod:`thesislib.models`."""

from __future__ import annotations


def scaled(channels: int, width: float) -> int:
    """Return ``max(1, round(channels * width))``: a channel count under a width multiplier.

    Raises ``ValueError`` for a non-positive or non-finite ``width``.
    """
    if not (isinstance(width, (int, float)) and width > 0 and width != float("inf")):
        raise ValueError(f"width must be a positive finite number (1.0 = the paper's model), got {width!r}")
    return max(1, int(round(channels * width)))
