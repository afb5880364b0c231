"""What every experiment shares: the method × ratio sweep, its pivot by method, results as plain dicts."""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Callable, Iterable, Mapping, Sequence

from torch import nn
from torch.utils.data import DataLoader, Subset

from thesislib.results import ratio_key


def sweep(methods: Sequence[str], ratios: Sequence[float], compress: Callable[[str, float, Any], nn.Module],
          measure: Callable[[nn.Module], dict[str, Any]], prepare: Callable[[str], Any] | None = None,
          shared_full: Callable[[str], bool] | None = None, skip_errors: Sequence[type] = (),
          keep: Callable[[str, float], bool] | None = None) -> tuple[list[dict[str, Any]], dict]:
    """Compress with every method at every kept ratio and measure each result.

    For each method ``prepare(method)`` runs once (e.g. its importance scores; its time is added to every
    ratio's ``seconds``), then ``compress(method, ratio, prepared)`` and ``measure(model)`` per ratio.
    Records are ``{"method", "ratio", **measure(model), "seconds"}`` — or ``{"method", "ratio", "error"}``
    when compressing raised one of ``skip_errors`` — in method order, ratios descending. Where
    ``shared_full(method)`` is true, ratio 1.0 keeps every channel for every such method, so that model
    is measured once and its record (``"shared": True``) repeated. Returns the records and
    ``{(method, ratio): model}`` for the pairs where ``keep(method, ratio)`` is true.
    """
    if not methods or not ratios:
        raise ValueError("sweep needs at least one method and one ratio")
    for r in ratios:
        if not 0 < r <= 1:
            raise ValueError(f"kept ratios are in (0, 1], got {r!r}")
    records: list[dict[str, Any]] = []
    models: dict[tuple[str, float], nn.Module] = {}
    shared: dict[str, Any] | None = None
    for method in methods:
        share = shared_full is not None and shared_full(method)
        if share and shared is not None and any(r == 1.0 for r in ratios):
            records.append({**shared, "method": method})
        start = time.perf_counter()
        prepared = prepare(method) if prepare is not None else None
        prepare_seconds = time.perf_counter() - start
        for ratio in ratios:
            if ratio == 1.0 and share and shared is not None:
                continue
            start = time.perf_counter()
            try:
                small = compress(method, ratio, prepared)
            except tuple(skip_errors) as error:  # noqa: PERF203
                records.append({"method": method, "ratio": ratio, "error": f"{type(error).__name__}: {error}"})
                continue
            seconds = time.perf_counter() - start + prepare_seconds
            records.append({"method": method, "ratio": ratio, **measure(small), "seconds": round(seconds, 3)})
            if ratio == 1.0 and share:
                shared = {**records[-1], "shared": True}
            if keep is not None and keep(method, ratio):
                models[(method, ratio)] = small
    order = list(methods)
    records.sort(key=lambda r: (order.index(r["method"]), -r["ratio"]))
    return records, models


def by_method(records: Sequence[Mapping[str, Any]], key: str = "accuracy") -> dict[str, dict[str, Any]]:
    """``{method: {ratio_key(ratio): record[key]}}`` for the records that have ``key`` (ratios descending)."""
    grid: dict[str, dict[str, Any]] = {}
    for rec in sorted(records, key=lambda r: -r["ratio"]):
        if key in rec:
            grid.setdefault(rec["method"], {})[ratio_key(rec["ratio"])] = rec[key]
    return grid


def table_rows(records: Sequence[Mapping[str, Any]], key: str = "accuracy", scale: float = 100.0
               ) -> list[dict[str, Any]]:
    """Rows for ``Run.table``: a method column, then ``key`` × ``scale`` per ratio (columns ``r0_5``, …;
    ``—`` where the method has no value)."""
    grid = by_method(records, key)
    ratios = [ratio_key(r) for r in sorted({r["ratio"] for r in records}, reverse=True)]
    return [{"method": m, **{r: (scale * row[r] if r in row else "—") for r in ratios}} for m, row in grid.items()]


def summary_table(records: Sequence[Mapping[str, Any]], key: str = "accuracy") -> str:
    """Text table: one row per method, one column per ratio, ``key`` in percent (accuracy) or as is."""
    rows = table_rows(records, key, scale=100.0 if key == "accuracy" else 1.0)
    if not rows:
        raise ValueError(f"no record has {key!r}")
    ratios = [c for c in rows[0] if c != "method"]
    lines = ["method      " + "".join(f"{r:>8}" for r in ratios)]
    for row in rows:
        cells = [f"{row[r]:8.1f}" if key == "accuracy" and row[r] != "—" else
                 (f"{row[r]:8.3g}" if row[r] != "—" else f"{'—':>8}") for r in ratios]
        lines.append(f"{row['method']:<12}" + "".join(cells))
    return "\n".join(lines)


def best_method(grid: Mapping[str, Mapping[str, float]], ratio: float, exclude: Iterable[str] = ()) -> str:
    """The method with the highest value at ``ratio`` in a :func:`by_method` grid (first one on ties),
    ``exclude`` left out; ``ValueError`` when no method has a value there."""
    key, skip = ratio_key(ratio), set(exclude)
    candidates = [m for m, row in grid.items() if m not in skip and key in row and row[key] is not None
                  and not (isinstance(row[key], float) and math.isnan(row[key]))]
    if not candidates:
        raise ValueError(f"no method has a value at ratio {ratio} (key {key!r})")
    return max(candidates, key=lambda m: grid[m][key])


def first_images(loader: DataLoader, n: int | None) -> DataLoader:
    """A loader over the first ``n`` examples of ``loader``'s dataset (same batch size, no shuffling);
    ``loader`` itself when ``n`` is ``None`` or covers the dataset."""
    if n is None or n >= len(loader.dataset):
        return loader
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    return DataLoader(Subset(loader.dataset, range(n)), batch_size=loader.batch_size, shuffle=False)


def parameters(settings: Any, seed: int) -> dict[str, Any]:
    """The notebook's recorded parameters: the settings dataclass as a dict (tuples as lists) and the seed."""
    out = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(settings).items()}
    out["seed"] = seed
    return out


class ResultMixin:
    """``to_dict()`` of a result dataclass: its fields, except those marked ``metadata={"save": False}``
    (models, tensors the figures need but the JSON does not)."""

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)  # type: ignore[arg-type]
                if f.metadata.get("save", True)}


def unsaved(default: Any = dataclasses.MISSING, **kwargs: Any) -> Any:
    """A dataclass field left out of ``to_dict()``."""
    if default is not dataclasses.MISSING:
        kwargs["default"] = default
    return dataclasses.field(metadata={"save": False}, repr=False, **kwargs)


def format_rows(rows: Sequence[Mapping[str, Any]]) -> str:
    """Rows of a table as aligned text (floats with four significant digits), for a notebook's output."""
    if not rows:
        return "(no rows)"
    columns = list(rows[0])
    cells = [[f"{row.get(c, ''):.4g}" if isinstance(row.get(c), float) else str(row.get(c, "")) for c in columns]
             for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(v.rjust(w) for v, w in zip(r, widths)) for r in cells]
    return "\n".join(lines)
