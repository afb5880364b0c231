"""Which code made a result: git commit, state of the working tree, and content hashes.

One definition of the hashes for the whole project: :mod:`thesislib.results` writes them into
every ``results/<notebook>/<scale>.json``, :mod:`thesislib.reproduce` uses :func:`source_hash`
for its skip-by-fingerprint stamps and compares the recorded hashes with the code *as committed*
(:func:`committed_source_hash`, :func:`committed_notebook_hash`) in ``--check``.

* ``source_hash`` — SHA-256 over the ``thesislib/**/*.py`` files, each entering as its path relative
  to ``thesislib/``, a NUL byte and the SHA-256 of its bytes, in path order. The same files read from
  the working tree or from a git commit give the same hash.
* ``notebook_hash`` — SHA-256 of the bytes of ``notebooks/<notebook>.ipynb``.
* ``git_commit`` — HEAD only (never ``+dirty``); ``code_state`` says separately whether
  ``thesislib/`` or ``notebooks/`` had uncommitted changes when the result was made.
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path
from typing import Iterable

REPO_ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "thesislib"
NOTEBOOKS = "notebooks"
CLEAN = "clean"
DIRTY_PREFIX = "uncommitted changes in thesislib/ or notebooks/"
UNKNOWN = "unknown"
_LISTED_PATHS = 10  # code_state names at most this many changed paths, then a count


def hash_files(files: Iterable[tuple[str, bytes]]) -> str:
    """SHA-256 over ``(relative path, bytes)`` pairs, sorted by path (order of reading does not matter)."""
    digest = hashlib.sha256()
    for name, data in sorted(files):
        digest.update(name.encode("utf-8"))
        digest.update(b"\0")
        digest.update(hashlib.sha256(data).digest())
    return digest.hexdigest()


def source_files(root: Path = REPO_ROOT) -> list[tuple[str, bytes]]:
    """The ``thesislib/**/*.py`` files of the working tree under ``root``, paths relative to the package."""
    package = Path(root) / PACKAGE
    return [(path.relative_to(package).as_posix(), path.read_bytes())
            for path in sorted(package.rglob("*.py")) if path.is_file()]


def source_hash(root: Path = REPO_ROOT) -> str:
    """Hash of the thesislib sources in the working tree (see the module docstring)."""
    return hash_files(source_files(root))


def file_hash(path: Path) -> str | None:
    """SHA-256 of the bytes of ``path``, ``None`` when it is not a file."""
    path = Path(path)
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def notebook_hash(notebook: str, root: Path = REPO_ROOT) -> str | None:
    """SHA-256 of ``notebooks/<notebook>.ipynb`` in the working tree, ``None`` when it is missing."""
    return file_hash(Path(root) / NOTEBOOKS / f"{notebook}.ipynb")


def _git(root: Path, *args: str, stdin: bytes | None = None) -> bytes:
    """Run ``git`` in ``root`` and return its stdout; raises ``OSError``/``CalledProcessError``."""
    return subprocess.run(["git", *args], cwd=root, input=stdin, capture_output=True, check=True).stdout


def git_commit(root: Path = REPO_ROOT) -> str:
    """The HEAD commit of the repository at ``root`` (never ``+dirty``: see :func:`code_state`),
    or ``"unknown"`` outside a git checkout."""
    try:
        return _git(Path(root), "rev-parse", "HEAD").decode().strip()
    except (OSError, subprocess.CalledProcessError):
        return UNKNOWN


def changed_paths(root: Path = REPO_ROOT) -> list[str]:
    """Paths under ``thesislib/`` or ``notebooks/`` that differ from HEAD (modified, staged, deleted
    or untracked and not ignored); raises ``OSError``/``CalledProcessError`` outside a git checkout."""
    out = _git(Path(root), "status", "--porcelain=v1", "-z", "--untracked-files=all", "--", PACKAGE, NOTEBOOKS)
    paths, entries = [], out.decode("utf-8", "replace").split("\0")
    i = 0
    while i < len(entries):
        entry = entries[i]
        if len(entry) > 3:
            paths.append(entry[3:])
            if entry[0] in "RC":  # a rename or copy is followed by its source path
                i += 1
        i += 1
    return sorted(paths)


def code_state(root: Path = REPO_ROOT) -> str:
    """``"clean"`` when ``thesislib/`` and ``notebooks/`` match HEAD, else
    ``"uncommitted changes in thesislib/ or notebooks/: <paths>"``; ``"unknown"`` outside git."""
    try:
        paths = changed_paths(root)
    except (OSError, subprocess.CalledProcessError):
        return UNKNOWN
    if not paths:
        return CLEAN
    listed = ", ".join(paths[:_LISTED_PATHS])
    more = f" and {len(paths) - _LISTED_PATHS} more" if len(paths) > _LISTED_PATHS else ""
    return f"{DIRTY_PREFIX}: {listed}{more} ({len(paths)} path{'s' if len(paths) != 1 else ''})"


def committed_files(prefix: str, root: Path = REPO_ROOT, rev: str = "HEAD") -> list[tuple[str, bytes]]:
    """``(path relative to prefix, bytes)`` of every blob under ``prefix/`` at ``rev`` (``git ls-tree``
    + ``git cat-file --batch``): the committed code, whatever the working tree holds."""
    root = Path(root)
    listing = _git(root, "ls-tree", "-r", "-z", "--full-tree", rev, "--", prefix).decode("utf-8").split("\0")
    blobs = []
    for line in filter(None, listing):
        meta, name = line.split("\t", 1)
        _mode, kind, sha = meta.split()
        if kind == "blob":
            blobs.append((name, sha))
    if not blobs:
        return []
    out = _git(root, "cat-file", "--batch", stdin="".join(f"{sha}\n" for _, sha in blobs).encode())
    files, offset = [], 0
    for name, sha in blobs:
        header_end = out.index(b"\n", offset)
        size = int(out[offset:header_end].split()[2])
        start = header_end + 1
        files.append((name[len(prefix) + 1:], out[start:start + size]))
        offset = start + size + 1  # the content is followed by a newline
    return files


def committed_source_hash(root: Path = REPO_ROOT, rev: str = "HEAD") -> str:
    """:func:`source_hash` of the thesislib sources as committed at ``rev``."""
    return hash_files((name, data) for name, data in committed_files(PACKAGE, root, rev) if name.endswith(".py"))


def committed_blob(path: str, root: Path = REPO_ROOT, rev: str = "HEAD") -> bytes | None:
    """The bytes of ``path`` (relative to the repository) at ``rev``, ``None`` when it is not committed."""
    try:
        return _git(Path(root), "show", f"{rev}:{path}")
    except subprocess.CalledProcessError:
        return None


def committed_notebook_hash(notebook: str, root: Path = REPO_ROOT, rev: str = "HEAD") -> str | None:
    """:func:`notebook_hash` of ``notebooks/<notebook>.ipynb`` as committed at ``rev`` (``None`` if absent)."""
    data = committed_blob(f"{NOTEBOOKS}/{notebook}.ipynb", root, rev)
    return None if data is None else hashlib.sha256(data).hexdigest()


def tracked_paths(prefix: str, root: Path = REPO_ROOT) -> list[str]:
    """Paths under ``prefix/`` tracked by git (``git ls-files``), relative to the repository."""
    out = _git(Path(root), "ls-files", "-z", "--", prefix).decode("utf-8")
    return sorted(filter(None, out.split("\0")))
