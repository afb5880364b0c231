"""Figures of the book in one style: Russian labels, one colour and marker per method.

Every ``plot_*`` function of :mod:`thesislib.experiments` draws through this module, so a method has
the same colour and marker in every figure (``obs`` is the same purple in the baselines sweep and
anywhere else) and axes are labelled with the same Russian words (:data:`AXIS_LABELS`).
matplotlib is imported here; the caller chooses the backend.
"""

from __future__ import annotations

import zlib
from typing import Any, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

STYLE = {"grid_alpha": 0.3, "marker": "o", "markersize": 4, "linewidth": 1.5, "legend_fontsize": 7}

AXIS_LABELS: dict[str, str] = {
    "ratio": "доля каналов",
    "accuracy": "точность, %",
    "accuracy_fraction": "точность",
    "psnr": "PSNR (Y), дБ",
    "macs": "MACs, доля от исходной",
    "mmacs": "MMAC на изображение",
    "latency": "задержка, доля от исходной",
    "epoch": "эпоха",
    "loss": "функция потерь",
    "knee": "колено / n",
    "predicted": "предсказание / n",
    "dct_fraction": "доля коэффициентов DCT, k / n",
    "energy": "накопленная энергия",
    "predicted_class": "предсказанный класс",
    "true_class": "истинный класс",
}

METHOD_LABELS: dict[str, str] = {
    # pruning baselines and continuous resampling
    "random": "случайный",
    "l1": "L1-норма",
    "l2": "L2-норма",
    "bn_scale": "масштаб BN",
    "taylor": "Тейлор",
    "hessian": "OBD (гессиан)",
    "obs": "OBS",
    "lfp": "LFP",
    "ifm": "IFM",
    "fold": "слияние (k-means)",
    "gmp": "GMP",
    "continuous": "непрерывный",
    "continuous_naive": "непрерывный без антиалиасинга",
    "bicubic": "бикубическая",
    # width allocations of the capacity experiment
    "uniform": "равномерное",
    "nyquist": "по Найквисту",
    "greedy_macs": "жадное по MACs",
    "greedy_latency": "жадное по задержке",
    "greedy_latency_knees": "жадное по задержке (колени)",
    # capacity estimators
    "weights": "спектр весов",
    "output": "ошибка выхода",
    "features": "спектр признаков",
    "fisher": "спектр, взвешенный по Фишеру",
    "size": "размер группы",
    "smoothed_weights": "спектр весов после сглаживания",
    # one network for every width (inn_training)
    "discrete": "дискретная на каждую ширину",
    "inn": "INN (случайные ширины)",
    "inn_aa": "INN, антиалиасинг при оценке",
    "inn_small": "INN (ширины смещены к малым)",
    "slimmable": "универсально сужаемая",
    "posthoc": "дискретная, передискретизация",
    "inn_ft": "INN-дообучение (одно на все ширины)",
    "obs_ft": "OBS + дообучение на каждую ширину",
    "slimmable_ft": "сужаемое дообучение",
}

_PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
            "#bcbd22", "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94")
_MARKERS = ("o", "s", "^", "v", "D", "P", "X", "<", ">", "h", "*", "p")

#: colour and marker of every named method (the order of :data:`METHOD_LABELS` fixes them)
METHOD_STYLES: dict[str, dict[str, str]] = {
    name: {"color": _PALETTE[i % len(_PALETTE)], "marker": _MARKERS[i % len(_MARKERS)]}
    for i, name in enumerate(METHOD_LABELS)
}
METHOD_STYLES["continuous"] = {"color": "black", "marker": "o"}
METHOD_STYLES["continuous_naive"] = {"color": "#555555", "marker": "x"}
METHOD_STYLES["bicubic"] = {"color": "gray", "marker": ""}
METHOD_STYLES.update({  # inn_training: one network for every width (INN red, slimmable blue, per-width green/purple)
    "inn": {"color": "#d62728", "marker": "o"}, "inn_aa": {"color": "#ff9896", "marker": "x"},
    "inn_small": {"color": "#ff7f0e", "marker": "^"}, "slimmable": {"color": "#1f77b4", "marker": "s"},
    "discrete": {"color": "#2ca02c", "marker": "D"}, "posthoc": {"color": "#7f7f7f", "marker": "v"},
    "inn_ft": {"color": "#d62728", "marker": "o"}, "obs_ft": METHOD_STYLES["obs"],
    "slimmable_ft": {"color": "#1f77b4", "marker": "s"},
})


def method_label(name: str) -> str:
    """The Russian name of a method (``"obs@0.9"`` → ``"OBS @ 0.9"``; unknown names as they are)."""
    base, at, energy = name.partition("@")
    label = METHOD_LABELS.get(base, base)
    return f"{label} @ {energy}" if at else label


def method_style(name: str) -> dict[str, Any]:
    """``color``, ``marker`` and ``label`` of a method's line: fixed for a known method, a stable
    hash-chosen pair for any other name (so it too keeps its colour across figures)."""
    base = name.partition("@")[0]
    style = METHOD_STYLES.get(base)
    if style is None:
        h = zlib.crc32(base.encode())
        style = {"color": _PALETTE[h % len(_PALETTE)], "marker": _MARKERS[h % len(_MARKERS)]}
    out: dict[str, Any] = {**style, "label": method_label(name)}
    if base == "continuous":
        out["linewidth"] = 2.5
    return out


def figure(ncols: int = 1, nrows: int = 1, width: float = 5.5, height: float = 4.0, **kwargs: Any
           ) -> tuple[Figure, Any]:
    """A new figure with ``nrows × ncols`` axes of ``width × height`` inches each."""
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), **kwargs)
    return fig, axes


def finish(ax: Any, xlabel: str = "", ylabel: str = "", title: str | None = None, legend: bool = True,
           logx: bool = False) -> Any:
    """Labels (an :data:`AXIS_LABELS` key or Russian text), grid, optional title and legend."""
    ax.set_xlabel(AXIS_LABELS.get(xlabel, xlabel))
    ax.set_ylabel(AXIS_LABELS.get(ylabel, ylabel))
    if logx:
        ax.set_xscale("log")
    if title:
        ax.set_title(title)
    ax.grid(alpha=STYLE["grid_alpha"])
    if legend and ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=STYLE["legend_fontsize"])
    return ax


def plot_methods(ax: Any, x: Mapping[str, Sequence[float]], y: Mapping[str, Sequence[float]],
                 **line: Any) -> Any:
    """One line per method of ``y`` (x values from ``x`` under the same key) in the method's style."""
    for name, values in y.items():
        style = {"markersize": STYLE["markersize"], "linewidth": STYLE["linewidth"], **method_style(name), **line}
        ax.plot(x[name], values, **style)
    return ax


def plot_curves(x: dict[str, Sequence[float]], y: dict[str, Sequence[float]], ax: Any | None = None,
                xlabel: str = "", ylabel: str = "", logx: bool = False) -> Any:
    """One line per key of ``y`` in its method style, then :func:`finish` (e.g. accuracy vs kept ratio)."""
    ax = ax if ax is not None else plt.gca()
    plot_methods(ax, x, y)
    return finish(ax, xlabel, ylabel, logx=logx)


def plot_training_history(history: Sequence[dict[str, float]], ax: Any | None = None) -> Any:
    """Training loss (left axis) and train/test accuracy (right axis) per epoch."""
    ax = ax if ax is not None else plt.gca()
    epochs = [row["epoch"] for row in history]
    ax.plot(epochs, [row["loss"] for row in history], color="tab:red", marker=STYLE["marker"],
            label=AXIS_LABELS["loss"])
    ax.set_xlabel(AXIS_LABELS["epoch"])
    ax.set_ylabel(AXIS_LABELS["loss"], color="tab:red")
    twin = ax.twinx()
    twin.plot(epochs, [row["train_accuracy"] for row in history], marker=STYLE["marker"], label="обучение")
    if "test_accuracy" in history[0]:
        twin.plot(epochs, [row["test_accuracy"] for row in history], marker=STYLE["marker"], label="тест")
    twin.set_ylabel(AXIS_LABELS["accuracy_fraction"])
    twin.legend(loc="center right", fontsize=STYLE["legend_fontsize"])
    ax.grid(alpha=STYLE["grid_alpha"])
    ax.set_xticks(epochs)
    return ax


def plot_confusion(matrix: Sequence[Sequence[float]], labels: Sequence[str], ax: Any | None = None) -> Any:
    """Row-normalised confusion matrix with its diagonal written in the cells."""
    ax = ax if ax is not None else plt.gca()
    data = np.asarray(matrix, dtype=float)
    ax.imshow(data, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    for i in range(len(labels)):
        ax.text(i, i, f"{data[i, i]:.2f}", ha="center", va="center", fontsize=7,
                color="white" if data[i, i] > 0.5 else "black")
    ax.set_xlabel(AXIS_LABELS["predicted_class"])
    ax.set_ylabel(AXIS_LABELS["true_class"])
    return ax


# --- the same figure as Plotly (interactive in the HTML book) --------------------------------------------

_PLOTLY_SYMBOLS = {"o": "circle", "s": "square", "^": "triangle-up", "v": "triangle-down", "D": "diamond",
                   "d": "diamond", "P": "cross", "X": "x", "x": "x-thin-open", "+": "cross-thin-open",
                   "<": "triangle-left", ">": "triangle-right", "h": "hexagon", "H": "hexagon2", "*": "star",
                   "p": "pentagon", ".": "circle"}
_PLOTLY_DASHES = {"-": "solid", "--": "dash", ":": "dot", "-.": "dashdot"}


def _hover(name: str, xlabel: str, ylabel: str) -> str:
    return (f"<b>{name}</b><br>{xlabel or 'x'}: %{{x:.4g}}<br>{ylabel or 'y'}: %{{y:.4g}}<extra></extra>")


def to_plotly(fig: Figure) -> Any | None:
    """The data lines and scatters of a matplotlib figure drawn in this module's style as a Plotly
    figure with the same subplots, Russian axis labels, titles, colours and markers; hovering a point
    shows the method (the legend label), the x value (width, MACs, latency…) and the y value.

    Returns ``None`` for a figure with nothing to make interactive (images such as a confusion matrix,
    twin axes, or no labelled data). Reference lines (``axhline``) become dashed horizontal lines."""
    from matplotlib.collections import PathCollection
    from matplotlib.colors import to_hex
    from plotly.subplots import make_subplots

    axes = [ax for ax in fig.axes if ax.get_subplotspec() is not None]
    if not axes or len(axes) != len(fig.axes) or any(ax.images for ax in axes):
        return None
    geometry = axes[0].get_subplotspec().get_gridspec().get_geometry()
    if any(ax.get_subplotspec().get_gridspec().get_geometry() != geometry for ax in axes):
        return None
    nrows, ncols = geometry
    cells = {(ax.get_subplotspec().rowspan.start + 1, ax.get_subplotspec().colspan.start + 1): ax for ax in axes}
    titles = [cells[(r, c)].get_title() if (r, c) in cells else "" for r in range(1, nrows + 1)
              for c in range(1, ncols + 1)]
    out = make_subplots(rows=nrows, cols=ncols, subplot_titles=titles, horizontal_spacing=0.1)
    shown: set[str] = set()
    drawn = 0
    for (row, col), ax in cells.items():
        xlabel = ax.get_xlabel() or next((a.get_xlabel() for (r, c), a in cells.items() if c == col and a.get_xlabel()), "")
        ylabel = ax.get_ylabel() or next((a.get_ylabel() for (r, c), a in cells.items() if r == row and a.get_ylabel()), "")
        by_colour = {to_hex(line.get_color()): str(line.get_label()) for line in ax.get_lines()
                     if not str(line.get_label()).startswith("_")}
        for line in ax.get_lines():
            label = str(line.get_label())
            x, y = np.asarray(line.get_xdata(), float), np.asarray(line.get_ydata(), float)
            color = to_hex(line.get_color())
            dash = _PLOTLY_DASHES.get(str(line.get_linestyle()), "solid")
            if line.get_transform() != ax.transData:  # axhline/axvline: axes-fraction coordinates
                if y.size and np.all(y == y[0]):
                    out.add_hline(y=float(y[0]), line_dash="dash", line_color=color, row=row, col=col,
                                  annotation_text="" if label.startswith("_") else label)
                continue
            if x.size == 0:
                continue
            unlabelled = label.startswith("_")
            if unlabelled and color in by_colour:  # a second line of a method (e.g. dashed: naive)
                label, unlabelled = f"{by_colour[color]} ({'пунктир' if dash != 'solid' else 'вторая линия'})", False
            marker = str(line.get_marker())
            mode = "lines+markers" if marker in _PLOTLY_SYMBOLS else "lines"
            if str(line.get_linestyle()) in ("None", "none", ""):
                mode = "markers"
            if unlabelled:  # a reference line (the diagonal): drawn, no legend, no hover
                out.add_scatter(x=x, y=y, mode="lines", showlegend=False, hoverinfo="skip",
                                line={"color": color, "dash": dash, "width": float(line.get_linewidth())},
                                row=row, col=col)
                continue
            out.add_scatter(x=x, y=y, name=label, legendgroup=label, showlegend=label not in shown, mode=mode,
                            line={"color": color, "dash": dash, "width": float(line.get_linewidth())},
                            marker={"symbol": _PLOTLY_SYMBOLS.get(marker, "circle"), "color": color, "size": 7},
                            hovertemplate=_hover(label, xlabel, ylabel), row=row, col=col)
            shown.add(label)
            drawn += 1
        for collection in ax.collections:
            label = str(collection.get_label())
            if not isinstance(collection, PathCollection) or label.startswith("_"):
                continue
            xy = np.asarray(collection.get_offsets(), float)
            colors = collection.get_facecolors()
            color = to_hex(colors[0]) if len(colors) else "#1f77b4"
            out.add_scatter(x=xy[:, 0], y=xy[:, 1], name=label, legendgroup=label, showlegend=label not in shown,
                            mode="markers", marker={"color": color, "size": 8},
                            hovertemplate=_hover(label, xlabel, ylabel), row=row, col=col)
            shown.add(label)
            drawn += 1
        out.update_xaxes(title_text=xlabel, type="log" if ax.get_xscale() == "log" else "linear",
                         showgrid=True, row=row, col=col)
        out.update_yaxes(title_text=ylabel, showgrid=True, row=row, col=col)
    if not drawn:
        return None
    suptitle = fig._suptitle.get_text() if getattr(fig, "_suptitle", None) is not None else ""
    out.update_layout(template="plotly_white", title_text=suptitle or None, height=420 * nrows,
                      margin={"l": 60, "r": 20, "t": 60, "b": 60}, hovermode="closest",
                      legend={"orientation": "h", "yanchor": "top", "y": -0.15, "font": {"size": 11}},
                      separators=", ")  # decimal comma, as in the text
    return out
