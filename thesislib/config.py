"""Run configuration shared by every experiment: scales, devices and seeds.

A *scale* sizes an experiment: ``smoke`` (CI, seconds), ``cpu`` (the default here,
minutes on two cores) and ``gpu`` (the full experiment, for a CUDA machine).
"""

from __future__ import annotations

import os
import random
from typing import Mapping, TypeVar

import numpy as np
import torch

SCALES: tuple[str, ...] = ("smoke", "cpu", "gpu")

T = TypeVar("T")


def check_scale(scale: str) -> str:
    """Return ``scale`` if it is one of :data:`SCALES`, else raise a ValueError naming them."""
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}: choose one of {', '.join(SCALES)}")
    return scale


def default_scale() -> str:
    """``THESISLIB_SCALE`` if set, else ``gpu`` when CUDA is present, else ``cpu``."""
    env = os.environ.get("THESISLIB_SCALE")
    if env:
        return check_scale(env)
    return "gpu" if torch.cuda.is_available() else "cpu"


def default_device() -> torch.device:
    """CUDA when available, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) so reruns give the same numbers on CPU."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)


def settings_for(table: Mapping[str, T], scale: str) -> T:
    """``table[scale]`` for a per-scale settings table (keyed by :data:`SCALES`).

    An unknown scale raises :func:`check_scale`'s one ``ValueError``; a table that lacks a known
    scale is a programming error and says which scales it has.
    """
    check_scale(scale)
    if scale not in table:
        raise ValueError(f"this settings table has no scale {scale!r}; it has {', '.join(table)}")
    return table[scale]
