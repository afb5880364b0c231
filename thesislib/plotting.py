"""Figures of the book, drawn in one style (matplotlib; the caller decides the backend)."""

from __future__ import annotations

from typing import Any, Sequence

import matplotlib.pyplot as plt
import numpy as np

STYLE = {"grid_alpha": 0.3, "marker": "o", "markersize": 4}


def _axes(ax: Any | None) -> Any:
    return ax if ax is not None else plt.gca()


def plot_training_history(history: Sequence[dict[str, float]], ax: Any | None = None) -> Any:
    """Training loss (left axis) and train/test accuracy (right axis) per epoch."""
    ax = _axes(ax)
    epochs = [row["epoch"] for row in history]
    ax.plot(epochs, [row["loss"] for row in history], color="tab:red", marker=STYLE["marker"], label="loss")
    ax.set_xlabel("эпоха")
    ax.set_ylabel("функция потерь", color="tab:red")
    twin = ax.twinx()
    twin.plot(epochs, [row["train_accuracy"] for row in history], marker=STYLE["marker"], label="train")
    if "test_accuracy" in history[0]:
        twin.plot(epochs, [row["test_accuracy"] for row in history], marker=STYLE["marker"], label="test")
    twin.set_ylabel("точность")
    twin.legend(loc="center right")
    ax.grid(alpha=STYLE["grid_alpha"])
    ax.set_xticks(epochs)
    return ax


def plot_confusion(matrix: Sequence[Sequence[float]], labels: Sequence[str], ax: Any | None = None) -> Any:
    """Row-normalised confusion matrix with its diagonal written in the cells."""
    ax = _axes(ax)
    data = np.asarray(matrix, dtype=float)
    ax.imshow(data, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    for i in range(len(labels)):
        ax.text(i, i, f"{data[i, i]:.2f}", ha="center", va="center", fontsize=7,
                color="white" if data[i, i] > 0.5 else "black")
    ax.set_xlabel("предсказанный класс")
    ax.set_ylabel("истинный класс")
    return ax


def plot_curves(x: dict[str, Sequence[float]], y: dict[str, Sequence[float]], ax: Any | None = None,
                xlabel: str = "", ylabel: str = "", logx: bool = False) -> Any:
    """One line per key of ``y`` (x values from ``x`` under the same key) — e.g. accuracy vs kept ratio per method."""
    ax = _axes(ax)
    for name, values in y.items():
        ax.plot(x[name], values, marker=STYLE["marker"], markersize=STYLE["markersize"], label=name)
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=STYLE["grid_alpha"])
    ax.legend(fontsize=8)
    return ax
