"""Run every experiment notebook through papermill, then build the book.

    python -m thesislib.reproduce --scale {smoke,cpu,gpu} [--only NAME ...] [--no-build]

Notebooks come from ``notebooks/<name>.ipynb`` in the order of :data:`NOTEBOOKS` and are
executed into ``book/experiments/<name>.ipynb``, where the book reads them. A notebook is
skipped when its source, its parameters and the thesislib sources are unchanged since its
last successful run at the same scale (a stamp file beside the executed notebook records
their hash). The first failing notebook stops the run, naming the notebook and the cell.
The book is then built with warnings as errors.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from thesislib.config import SCALES, check_scale, default_scale
from thesislib.results import REPO_ROOT, atomic_write_text

NOTEBOOKS: tuple[str, ...] = ("fashion_mnist", "baselines", "capacity", "super_resolution")
SOURCE_DIR = REPO_ROOT / "notebooks"
EXECUTED_DIR = REPO_ROOT / "book" / "experiments"
BUILDERS = ("html", "pdflatex", "latex")


class NotebookFailed(RuntimeError):
    """A notebook raised: names the notebook, the cell and the error."""


def thesislib_fingerprint() -> str:
    """Hash of every thesislib source file: a change anywhere in the package reruns the notebooks."""
    digest = hashlib.sha256()
    package = REPO_ROOT / "thesislib"
    for path in sorted(package.rglob("*.py")):
        digest.update(str(path.relative_to(package)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def run_fingerprint(name: str, scale: str, parameters: dict) -> str:
    """Hash of (notebook source, scale, parameters, thesislib sources)."""
    digest = hashlib.sha256()
    digest.update((SOURCE_DIR / f"{name}.ipynb").read_bytes())
    digest.update(json.dumps({"scale": scale, **parameters}, sort_keys=True).encode())
    digest.update(thesislib_fingerprint().encode())
    return digest.hexdigest()


def _stamp_path(name: str) -> Path:
    return EXECUTED_DIR / f".{name}.stamp.json"


def is_up_to_date(name: str, fingerprint: str) -> bool:
    """True when the executed notebook exists and its stamp carries ``fingerprint``."""
    stamp = _stamp_path(name)
    if not stamp.exists() or not (EXECUTED_DIR / f"{name}.ipynb").exists():
        return False
    try:
        return json.loads(stamp.read_text())["fingerprint"] == fingerprint
    except (ValueError, KeyError):
        return False


def execute(name: str, scale: str, parameters: dict) -> None:
    """Execute one notebook with papermill into :data:`EXECUTED_DIR` (atomically replaced)."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    EXECUTED_DIR.mkdir(parents=True, exist_ok=True)
    target = EXECUTED_DIR / f"{name}.ipynb"
    partial = EXECUTED_DIR / f".{name}.running.ipynb"
    env_scale = os.environ.get("THESISLIB_SCALE")
    os.environ["THESISLIB_SCALE"] = scale  # the parameters cell's default, for consistency
    try:
        papermill.execute_notebook(
            str(SOURCE_DIR / f"{name}.ipynb"), str(partial), parameters={"scale": scale, **parameters},
            kernel_name="python3", cwd=str(SOURCE_DIR), progress_bar=True, log_output=False,
        )
    except PapermillExecutionError as error:
        raise NotebookFailed(
            f"notebook notebooks/{name}.ipynb failed in cell {error.exec_count} "
            f"(cell index {error.cell_index}): {error.ename}: {error.evalue}\n"
            f"the partly executed notebook is {partial}"
        ) from None
    finally:
        if env_scale is None:
            os.environ.pop("THESISLIB_SCALE", None)
        else:
            os.environ["THESISLIB_SCALE"] = env_scale
    os.replace(partial, target)


def run_notebooks(scale: str, names: tuple[str, ...] = NOTEBOOKS, force: bool = False,
                  parameters: dict | None = None) -> list[str]:
    """Run the notebooks that changed; return the names that were executed."""
    from tqdm.auto import tqdm

    parameters = parameters or {}
    executed = []
    progress = tqdm(names, desc=f"notebooks ({scale})", unit="nb")
    for name in progress:
        progress.set_postfix_str(name)
        fingerprint = run_fingerprint(name, scale, parameters)
        if not force and is_up_to_date(name, fingerprint):
            tqdm.write(f"[reproduce] {name}: unchanged since its last run at scale {scale}, skipped")
            continue
        started = time.perf_counter()
        _stamp_path(name).unlink(missing_ok=True)
        execute(name, scale, parameters)
        atomic_write_text(_stamp_path(name), json.dumps(
            {"fingerprint": fingerprint, "scale": scale, "seconds": round(time.perf_counter() - started, 1)}))
        tqdm.write(f"[reproduce] {name}: ran in {time.perf_counter() - started:.1f} s")
        executed.append(name)
    return executed


def build_book(scale: str, builder: str = "html") -> None:
    """``jupyter-book build`` with warnings as errors; the book quotes results of ``scale``."""
    env = dict(os.environ, THESISLIB_BOOK_SCALE=scale)
    command = [str(Path(sys.executable).parent / "jupyter-book"), "build", str(REPO_ROOT),
               "--builder", builder, "-W", "--keep-going"]
    print("[reproduce] " + " ".join(command), flush=True)
    result = subprocess.run(command, cwd=REPO_ROOT, env=env)
    if result.returncode != 0:
        raise SystemExit(f"the book build failed (exit {result.returncode}); see the warnings above")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m thesislib.reproduce", description=__doc__.split("\n")[0])
    parser.add_argument("--scale", default=None,
                        help=f"one of {', '.join(SCALES)} (default: gpu with CUDA, else cpu)")
    parser.add_argument("--only", nargs="+", metavar="NAME", help=f"notebooks to run, of {', '.join(NOTEBOOKS)}")
    parser.add_argument("--force", action="store_true", help="rerun notebooks even when unchanged")
    parser.add_argument("--no-build", action="store_true", help="run the notebooks, do not build the book")
    parser.add_argument("--builder", default="html", help=f"jupyter-book builder: {', '.join(BUILDERS)}")
    args = parser.parse_args(argv)
    try:
        scale = check_scale(args.scale) if args.scale else default_scale()
    except ValueError as error:
        parser.error(str(error))
    if args.builder not in BUILDERS:
        parser.error(f"unknown builder {args.builder!r}: choose one of {', '.join(BUILDERS)}")
    names = tuple(args.only) if args.only else NOTEBOOKS
    unknown = [n for n in names if n not in NOTEBOOKS]
    if unknown:
        parser.error(f"unknown notebook(s) {', '.join(unknown)}: choose from {', '.join(NOTEBOOKS)}")
    missing = [n for n in names if not (SOURCE_DIR / f"{n}.ipynb").exists()]
    if missing:
        parser.error(f"notebook source missing: {', '.join(f'notebooks/{n}.ipynb' for n in missing)}")
    started = time.perf_counter()
    try:
        run_notebooks(scale, names, force=args.force)
    except NotebookFailed as error:
        print(f"[reproduce] FAILED: {error}", file=sys.stderr)
        return 1
    print(f"[reproduce] notebooks done in {time.perf_counter() - started:.1f} s", flush=True)
    if not args.no_build:
        build_book(scale, args.builder)
        print(f"[reproduce] book built in _build/{'html' if args.builder == 'html' else 'latex'} "
              f"({time.perf_counter() - started:.1f} s in all)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
