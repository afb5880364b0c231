"""Width multiplier and argument checks shared by every model in :mod:`thesislib.models`."""

from __future__ import annotations


def scaled(channels: int, width: float) -> int:
    """Return ``max(1, round(channels * width))``: a channel count under a width multiplier.

    Raises ``ValueError`` for a non-positive or non-finite ``width``.
    """
    if not (isinstance(width, (int, float)) and width > 0 and width != float("inf")):
        raise ValueError(f"width must be a positive finite number (1.0 = the paper's model), got {width!r}")
    return max(1, int(round(channels * width)))


def check_positive_ints(**values: object) -> None:
    """Raise ``ValueError`` naming the first argument that is not a positive int (bools are refused)."""
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
