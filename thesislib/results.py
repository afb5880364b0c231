"""Headline results of the notebooks: JSON with provenance, figures and tables under ``results/``.

A notebook opens one :class:`Run` and writes everything through it::

    run = Run("capacity", scale, parameters)
    run.figure(fig, "spectra")          # results/capacity/<scale>/spectra.png
    run.table(rows, "knees")            # results/capacity/<scale>/knees.csv
    run.save({"best_spearman": 0.9})    # results/capacity/<scale>.json, with provenance

The layout has one definition here (:func:`results_root`, :func:`result_path`, :func:`figure_path`,
:func:`table_path`, :func:`book_scale`); the book extension ``book/_ext/thesis_results.py`` imports it.
``THESISLIB_RESULTS`` moves the folder (tests), ``THESISLIB_BOOK_SCALE`` picks the scale the book
quotes (default ``cpu``). Result keys are plain identifiers — no dots, since the book's ``{result}``
role splits on dots; a ratio becomes a key through :func:`ratio_key`. Every write goes to a temporary
file in the same folder and is moved into place with :func:`os.replace`, so an interrupted run never
leaves a half-written result behind. Provenance (:mod:`thesislib.provenance`): HEAD commit,
``code_state`` (clean or which paths were uncommitted), ``source_hash`` of thesislib and
``notebook_hash`` of the notebook, which ``python -m thesislib.reproduce --check`` compares with HEAD.
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
import json
import os
import platform
import re
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from thesislib import __version__
from thesislib.config import check_scale, default_device
from thesislib.provenance import REPO_ROOT, code_state, file_hash, git_commit, source_hash

__all__ = [
    "REPO_ROOT", "NOTEBOOKS_DIR", "Run", "ratio_key", "results_root", "result_path", "figure_path",
    "table_path", "interactive_path", "book_scale", "check_notebook", "check_keys", "load_result", "atomic_write_bytes",
    "atomic_write_text", "git_commit",
]

NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
BOOK_SCALE_DEFAULT = "cpu"
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*")


def ratio_key(ratio: float) -> str:
    """A ratio as a results key that is a plain identifier: ``0.5 -> "r0_5"``, ``1 -> "r1"``,
    ``0.375 -> "r0_375"`` (keys never hold dots, so the book's ``{result}`` role splits on dots)."""
    return "r" + f"{float(ratio):g}".replace(".", "_").replace("-", "m")


# --- layout ------------------------------------------------------------------------------------

def results_root() -> Path:
    """The ``results/`` folder (``THESISLIB_RESULTS`` overrides it, e.g. in tests)."""
    return Path(os.environ.get("THESISLIB_RESULTS", REPO_ROOT / "results"))


def book_scale() -> str:
    """The scale the book quotes: ``THESISLIB_BOOK_SCALE`` (``thesislib.reproduce`` sets it), default ``cpu``."""
    return check_scale(os.environ.get("THESISLIB_BOOK_SCALE", BOOK_SCALE_DEFAULT))


def _check_name(name: str, what: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(f"{what} {name!r} is not a plain file name: use letters, digits, '_' and '-' "
                         f"(no dots, slashes or spaces), e.g. 'accuracy_vs_ratio'")
    return name


def check_notebook(notebook: str) -> str:
    """Return ``notebook`` if it names an existing ``notebooks/<notebook>.ipynb`` (a plain identifier,
    the file's stem), else raise a ValueError listing the valid names."""
    valid = sorted(p.stem for p in NOTEBOOKS_DIR.glob("*.ipynb"))
    if not isinstance(notebook, str) or not notebook.isidentifier() or notebook not in valid:
        raise ValueError(f"unknown notebook {notebook!r}: a results notebook is the stem of an existing "
                         f"{NOTEBOOKS_DIR}/<name>.ipynb, one of {', '.join(valid) or '(none found)'}")
    return notebook


def result_path(notebook: str, scale: str) -> Path:
    """``results/<notebook>/<scale>.json``."""
    return results_root() / _check_name(notebook, "notebook") / f"{check_scale(scale)}.json"


def figure_path(notebook: str, scale: str, name: str, *, mkdir: bool = True) -> Path:
    """``results/<notebook>/<scale>/<name>.png`` (its folder created unless ``mkdir=False``)."""
    folder = results_root() / _check_name(notebook, "notebook") / check_scale(scale)
    if mkdir:
        folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{_check_name(name, 'figure')}.png"


def interactive_path(png: Path) -> Path:
    """The Plotly copy ``<name>.plotly.json`` beside a figure's ``<name>.png``."""
    return png.with_name(png.stem + ".plotly.json")


def table_path(notebook: str, scale: str, name: str, *, mkdir: bool = True) -> Path:
    """``results/<notebook>/<scale>/<name>.csv`` (its folder created unless ``mkdir=False``)."""
    return figure_path(notebook, scale, _check_name(name, "table"), mkdir=mkdir).with_suffix(".csv")


# --- atomic writes and JSON ----------------------------------------------------------------------

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


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "tolist") and callable(value.tolist):  # torch tensors, numpy arrays and scalars
        return _jsonable(value.tolist())
    if hasattr(value, "item") and callable(value.item):
        return value.item()
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def check_keys(results: Mapping[str, Any], path: str = "results") -> None:
    """Raise a ValueError naming the first key (with its path) that holds a dot, recursively through
    dicts and lists: the book's ``{result}`` role splits keys on dots."""
    for key, value in results.items():
        here = f"{path}[{key!r}]"
        if "." in str(key):
            raise ValueError(f"result key {here} contains a dot: keys are plain identifiers; write a ratio "
                             f"as thesislib.results.ratio_key({key!r}) -> {ratio_key_hint(key)!r}")
        _check_nested(value, here)


def _check_nested(value: Any, path: str) -> None:
    if isinstance(value, Mapping):
        check_keys(value, path)
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_nested(item, f"{path}[{i}]")


def ratio_key_hint(key: Any) -> str:
    """:func:`ratio_key` of ``key`` when it reads as a number, else the key with dots as underscores."""
    try:
        return ratio_key(float(key))
    except (TypeError, ValueError):
        return str(key).replace(".", "_")


# --- the run -------------------------------------------------------------------------------------

class Run:
    """One notebook's run at one scale: figures, tables and the headline JSON, with provenance.

    ``notebook`` is the stem of an existing ``notebooks/<notebook>.ipynb``, ``scale`` one of
    ``config.SCALES``; ``parameters`` (the papermill parameters) go into the provenance. The wall
    clock starts here and :meth:`save` records the time since. The code's identity (commit, code
    state, source and notebook hashes) is taken here too: the code the notebook imported, not what
    the tree holds when it finishes.
    """

    def __init__(self, notebook: str, scale: str, parameters: Mapping[str, Any] | None = None) -> None:
        self.scale = check_scale(scale)
        self.notebook = check_notebook(notebook)
        self.parameters: dict[str, Any] = dict(parameters or {})
        self.started = time.perf_counter()
        self.code: dict[str, Any] = {
            "git_commit": git_commit(),
            "code_state": code_state(),
            "source_hash": source_hash(),
            "notebook_hash": file_hash(NOTEBOOKS_DIR / f"{self.notebook}.ipynb"),
        }

    def __repr__(self) -> str:
        return f"Run({self.notebook!r}, {self.scale!r}, {self.parameters!r})"

    @property
    def wall_time_s(self) -> float:
        """Seconds since the run started."""
        return round(time.perf_counter() - self.started, 2)

    def figure(self, fig: Any, name: str, dpi: int = 150, interactive: bool | None = None) -> Path:
        """Save a matplotlib figure atomically as ``results/<notebook>/<scale>/<name>.png`` and, beside
        it, the same curves as a Plotly figure ``<name>.plotly.json`` (:func:`thesislib.plotting.to_plotly`;
        the HTML book embeds it with ``{result-figure}``'s ``:interactive:``). ``interactive=None``
        writes it when the figure has curves to convert, ``False`` never, ``True`` or a ValueError."""
        path = figure_path(self.notebook, self.scale, name)
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
        atomic_write_bytes(path, buffer.getvalue())
        spec_path = interactive_path(path)
        spec = None
        if interactive is not False:
            from thesislib.plotting import to_plotly

            spec = to_plotly(fig)
            if spec is None and interactive:
                raise ValueError(f"figure {name!r} of {self.notebook!r} has no curves to make interactive "
                                 "(images or twin axes): pass interactive=None or False")
        if spec is not None:
            atomic_write_text(spec_path, spec.to_json())
        elif spec_path.exists():
            spec_path.unlink()  # a stale interactive copy of an earlier figure of this name
        return path

    def table(self, rows: Sequence[Mapping[str, Any]], name: str, columns: Sequence[str] | None = None) -> Path:
        """Write ``rows`` as ``results/<notebook>/<scale>/<name>.csv`` atomically (the book's
        ``{result-table}`` renders it): a header of ``columns`` (default: the first row's keys),
        floats with four significant digits, a missing cell empty."""
        if not rows:
            raise ValueError(f"table {name!r} of {self.notebook!r} has no rows")
        columns = list(columns or rows[0])
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow([f"{row[c]:.4g}" if isinstance(row.get(c), float) else row.get(c, "") for c in columns])
        path = table_path(self.notebook, self.scale, name)
        atomic_write_text(path, buffer.getvalue())
        return path

    def provenance(self) -> dict[str, Any]:
        """Where the numbers come from: commit, code state, hashes, parameters, seed, device, versions, times."""
        return {
            **self.code,
            "parameters": _jsonable(self.parameters),
            "seed": self.parameters.get("seed"),
            "device": str(self.parameters.get("device") or default_device()),
            "torch_version": _torch_version(),
            "thesislib_version": __version__,
            "python": platform.python_version(),
            "platform": platform.platform(),
            "wall_time_s": self.wall_time_s,
            "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }

    def save(self, results: Mapping[str, Any]) -> Path:
        """Write ``results/<notebook>/<scale>.json`` atomically: ``{"notebook", "scale", "results",
        "provenance"}``. A key holding a dot (at any depth) is a ValueError (see :func:`ratio_key`)."""
        if not isinstance(results, Mapping):
            raise ValueError(f"results must be a dict of plain-identifier keys, got {type(results).__name__}")
        check_keys(results)
        record = {"notebook": self.notebook, "scale": self.scale,
                  "results": _jsonable(results), "provenance": self.provenance()}
        path = result_path(self.notebook, self.scale)
        atomic_write_text(path, json.dumps(record, indent=2, ensure_ascii=False) + "\n")
        return path


def _torch_version() -> str | None:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return None
    return torch.__version__


def load_result(notebook: str, scale: str) -> dict[str, Any]:
    """Read ``results/<notebook>/<scale>.json``; a missing file says how to produce it."""
    path = result_path(notebook, scale)
    if not path.exists():
        raise FileNotFoundError(
            f"{path} does not exist: run `python -m thesislib.reproduce --scale {scale}` "
            f"(or the notebook notebooks/{notebook}.ipynb) first"
        )
    return json.loads(path.read_text(encoding="utf-8"))
