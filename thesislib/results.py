"""Headline results of the notebooks: JSON with provenance and figures under ``results/``.

Layout: ``results/<notebook>/<scale>.json`` and ``results/<notebook>/<scale>/<figure>.png``.
Every write goes to a temporary file in the same folder and is moved into place with
:func:`os.replace`, so an interrupted run never leaves a half-written result behind.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from thesislib import __version__
from thesislib.config import check_scale, default_device

REPO_ROOT = Path(__file__).resolve().parent.parent


def ratio_key(ratio: float) -> str:
    """A ratio as a results key that is a plain identifier: ``0.5 -> "r0_5"``, ``1 -> "r1"``,
    ``0.375 -> "r0_375"`` (keys never hold dots, so the book's ``{result}`` role splits on dots)."""
    return "r" + f"{float(ratio):g}".replace(".", "_").replace("-", "m")


def results_root() -> Path:
    """The ``results/`` folder (``THESISLIB_RESULTS`` overrides it, e.g. in tests)."""
    return Path(os.environ.get("THESISLIB_RESULTS", REPO_ROOT / "results"))


_RUNS: dict[tuple[str, str], dict[str, Any]] = {}


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temporary file + ``os.replace``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def git_commit() -> str:
    """The repository's HEAD commit (``+dirty`` when the tree has changes), or ``unknown``."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO_ROOT, capture_output=True, text=True, check=True,
        ).stdout.strip()
        return commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def start_run(notebook: str, scale: str, parameters: dict[str, Any]) -> None:
    """Mark the start of a notebook's run; :func:`save_result` records the wall time since."""
    check_scale(scale)
    _RUNS[(notebook, scale)] = {"started": time.perf_counter(), "parameters": dict(parameters)}


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return _jsonable(value.tolist())
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return value.item()
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def save_result(notebook: str, scale: str, results: dict[str, Any],
                parameters: dict[str, Any] | None = None) -> Path:
    """Write ``results/<notebook>/<scale>.json`` atomically, with provenance.

    Provenance: git commit, parameters, seed, device, torch and thesislib versions,
    Python and platform, wall time since :func:`start_run`, and a UTC timestamp.
    """
    check_scale(scale)
    run = _RUNS.get((notebook, scale), {})
    params = dict(run.get("parameters", {}))
    params.update(parameters or {})
    started = run.get("started")
    record = {
        "notebook": notebook,
        "scale": scale,
        "results": _jsonable(results),
        "provenance": {
            "git_commit": git_commit(),
            "parameters": _jsonable(params),
            "seed": params.get("seed"),
            "device": str(default_device()),
            "torch_version": torch.__version__,
            "thesislib_version": __version__,
            "python": platform.python_version(),
            "platform": platform.platform(),
            "wall_time_s": None if started is None else round(time.perf_counter() - started, 2),
            "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        },
    }
    path = results_root() / notebook / f"{scale}.json"
    atomic_write_text(path, json.dumps(record, indent=2, ensure_ascii=False) + "\n")
    return path


def load_result(notebook: str, scale: str) -> dict[str, Any]:
    """Read ``results/<notebook>/<scale>.json``; a missing file says how to produce it."""
    path = results_root() / notebook / f"{check_scale(scale)}.json"
    if not path.exists():
        raise FileNotFoundError(
            f"{path} does not exist: run `python -m thesislib.reproduce --scale {scale}` "
            f"(or the notebook notebooks/{notebook}.ipynb) first"
        )
    return json.loads(path.read_text(encoding="utf-8"))


def figure_path(notebook: str, scale: str, name: str) -> Path:
    """``results/<notebook>/<scale>/<name>.png``, its folder created."""
    folder = results_root() / notebook / check_scale(scale)
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{name}.png"


def save_figure(fig: Any, notebook: str, scale: str, name: str, dpi: int = 150) -> Path:
    """Save a matplotlib figure atomically to :func:`figure_path` and return the path."""
    import io

    path = figure_path(notebook, scale, name)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    atomic_write_bytes(path, buffer.getvalue())
    return path


def save_table(rows: list[dict[str, Any]], notebook: str, scale: str, name: str,
               columns: list[str] | None = None) -> Path:
    """Write ``rows`` as ``results/<notebook>/<scale>/<name>.csv`` atomically (the book's
    ``{result-table}`` directive renders it); floats keep four significant decimals."""
    import csv
    import io

    if not rows:
        raise ValueError(f"table {name!r} of {notebook!r} has no rows")
    columns = columns or list(rows[0])
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([f"{row[c]:.4g}" if isinstance(row.get(c), float) else row.get(c, "") for c in columns])
    path = figure_path(notebook, scale, name).with_suffix(".csv")
    atomic_write_text(path, buffer.getvalue())
    return path
