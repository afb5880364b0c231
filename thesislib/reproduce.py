"""Run every experiment notebook through papermill, then build the book; or check the committed results.

    python -m thesislib.reproduce --scale {smoke,cpu,gpu} [--only NAME ...] [--no-build]
    python -m thesislib.reproduce --check [--scale cpu]

Notebooks come from ``notebooks/<name>.ipynb`` in the order of :data:`NOTEBOOKS` and are
executed into ``book/experiments/<name>.ipynb``, where the book reads them. A notebook is
skipped when its source, its parameters and the thesislib sources are unchanged since its
last successful run at the same scale (a stamp file beside the executed notebook records
their hash, built on :func:`thesislib.provenance.source_hash`). The first failing notebook stops
the run, naming the notebook and the cell. The book is then built with warnings as errors.

``--check`` runs nothing: for every committed ``results/<notebook>/<scale>.json`` it compares the
recorded ``source_hash`` and ``notebook_hash`` with thesislib and the notebook *as committed at HEAD*
(uncommitted edits do not count) and the recorded ``code_state``; it prints one line per stale result
and exits 1 when any is stale, 0 when all are current.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from thesislib import provenance
from thesislib.config import SCALES, check_scale, default_scale
from thesislib.results import NOTEBOOKS_DIR, REPO_ROOT, atomic_write_text

NOTEBOOKS: tuple[str, ...] = ("fashion_mnist", "baselines", "capacity", "super_resolution", "inn_training",
                              "batchnorm", "spectralnorm")
SOURCE_DIR = NOTEBOOKS_DIR
EXECUTED_DIR = REPO_ROOT / "book" / "experiments"
BUILDERS = ("html", "pdflatex", "latex")
_RESULT_FILE = re.compile(r"results/([A-Za-z0-9_]+)/([A-Za-z0-9_]+)\.json")


class NotebookFailed(RuntimeError):
    """A notebook raised: names the notebook, the cell and the error."""


def run_fingerprint(name: str, scale: str, parameters: dict, source_hash: str | None = None) -> str:
    """Hash of (notebook source, scale, parameters, thesislib sources): a change in any of them reruns
    the notebook. ``source_hash`` defaults to :func:`thesislib.provenance.source_hash` of the tree."""
    digest = hashlib.sha256()
    digest.update((SOURCE_DIR / f"{name}.ipynb").read_bytes())
    digest.update(json.dumps({"scale": scale, **parameters}, sort_keys=True).encode())
    digest.update((source_hash or provenance.source_hash(REPO_ROOT)).encode())
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
    source_hash = provenance.source_hash(REPO_ROOT)
    progress = tqdm(names, desc=f"notebooks ({scale})", unit="nb")
    for name in progress:
        progress.set_postfix_str(name)
        fingerprint = run_fingerprint(name, scale, parameters, source_hash)
        if not force and is_up_to_date(name, fingerprint):
            tqdm.write(f"[reproduce] {name}: unchanged since its last run at scale {scale}, skipped")
            continue
        started = time.perf_counter()
        _stamp_path(name).unlink(missing_ok=True)
        execute(name, scale, parameters)
        atomic_write_text(_stamp_path(name), json.dumps(
            {"fingerprint": fingerprint, "scale": scale, "source_hash": source_hash,
             "seconds": round(time.perf_counter() - started, 1)}))
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


def committed_results(scale: str | None = None, root: Path | None = None) -> list[str]:
    """``results/<notebook>/<scale>.json`` files tracked by git under ``root`` (default: the repository),
    of ``scale`` or of every scale."""
    root = Path(root or REPO_ROOT)
    scales = (check_scale(scale),) if scale else SCALES
    found = []
    for path in provenance.tracked_paths("results", root):
        match = _RESULT_FILE.fullmatch(path)
        if match and match.group(2) in scales:
            found.append(path)
    return found


def stale_reasons(path: str, root: Path | None = None, rev: str = "HEAD",
                  source_hash: str | None = None) -> list[str]:
    """Why the result ``path`` as committed at ``rev`` does not describe the code committed at ``rev``
    (empty when it is current): a hash that differs, uncommitted code, or no hashes at all."""
    root = Path(root or REPO_ROOT)
    notebook = _RESULT_FILE.fullmatch(path).group(1)
    data = provenance.committed_blob(path, root, rev)
    if data is None:
        return [f"not committed at {rev}"]
    try:
        record = json.loads(data.decode("utf-8"))
        recorded = record["provenance"]
    except (ValueError, KeyError, TypeError):
        return ["not a results file (no JSON with a 'provenance' object)"]
    commit = str(recorded.get("git_commit", ""))
    if "source_hash" not in recorded or "notebook_hash" not in recorded:
        dirty = f" (commit {commit})" if commit else ""
        return [f"no provenance hashes: made before --check existed{dirty}"]
    reasons = []
    source_hash = source_hash or provenance.committed_source_hash(root, rev)
    if recorded["source_hash"] != source_hash:
        reasons.append(f"source_hash differs from thesislib/ at {rev}")
    committed_notebook = provenance.committed_notebook_hash(notebook, root, rev)
    if committed_notebook is None:
        reasons.append(f"notebooks/{notebook}.ipynb is not committed at {rev}")
    elif recorded["notebook_hash"] != committed_notebook:
        reasons.append(f"notebook_hash differs from notebooks/{notebook}.ipynb at {rev}")
    state = recorded.get("code_state")
    if state != provenance.CLEAN or commit.endswith("+dirty"):
        reasons.append(f"made from uncommitted code ({state or commit or 'no code_state recorded'})")
    return reasons


def check(scale: str | None = None, names: tuple[str, ...] | None = None, root: Path | None = None) -> int:
    """``--check``: print one line per stale committed result; 1 when any is stale, 0 when none."""
    root = Path(root or REPO_ROOT)
    try:
        paths = committed_results(scale, root)
        source_hash = provenance.committed_source_hash(root)
    except (OSError, subprocess.CalledProcessError) as error:
        print(f"[reproduce] --check needs a git checkout at {root}: {error}", file=sys.stderr)
        return 2
    if names:
        paths = [p for p in paths if _RESULT_FILE.fullmatch(p).group(1) in names]
    where = f" at scale {scale}" if scale else ""
    if not paths:
        print(f"[reproduce] no committed results{where}: nothing to check")
        return 0
    stale = 0
    for path in paths:
        reasons = stale_reasons(path, root, source_hash=source_hash)
        if reasons:
            stale += 1
            work_tree = root / path
            if work_tree.is_file() and work_tree.read_bytes() != provenance.committed_blob(path, root):
                reasons.append("the working tree holds another version: commit it and check again")
            print(f"[reproduce] stale: {path}: {'; '.join(reasons)}")
    if stale:
        print(f"[reproduce] {stale} of {len(paths)} committed results{where} are stale")
        return 1
    print(f"[reproduce] all {len(paths)} results current{where}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m thesislib.reproduce", description=__doc__.split("\n")[0])
    parser.add_argument("--scale", default=None,
                        help=f"one of {', '.join(SCALES)} (default: gpu with CUDA, else cpu)")
    parser.add_argument("--only", nargs="+", metavar="NAME", help=f"notebooks to run, of {', '.join(NOTEBOOKS)}")
    parser.add_argument("--force", action="store_true", help="rerun notebooks even when unchanged")
    parser.add_argument("--no-build", action="store_true", help="run the notebooks, do not build the book")
    parser.add_argument("--builder", default="html", help=f"jupyter-book builder: {', '.join(BUILDERS)}")
    parser.add_argument("--check", action="store_true",
                        help="run nothing: list every committed results/*/<scale>.json whose source_hash or "
                             "notebook_hash differs from thesislib and its notebook as committed at HEAD, or that "
                             "was made from uncommitted code; exit 1 when any is stale, 0 when none "
                             "(every scale unless --scale is given)")
    args = parser.parse_args(argv)
    try:
        scale = check_scale(args.scale) if args.scale else (None if args.check else default_scale())
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
    if args.check:
        return check(scale, tuple(args.only) if args.only else None)
    state = provenance.code_state(REPO_ROOT)
    if state != provenance.CLEAN:
        print(f"[reproduce] warning: {state}; the results will say so and `--check` will list them as stale "
              "(commit first for results that identify their code)", file=sys.stderr, flush=True)
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
