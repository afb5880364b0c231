"""Sphinx extension: quote numbers and figures of ``results/`` in the book, never by hand.

Role ``{result}`` — ``{result}`notebook:dotted.key|format``` — reads
``results/<notebook>/<scale>.json`` and prints the value at ``dotted.key`` (list items
by index). ``format`` is a Python format spec (``.3f``, ``d``), ``pct`` (a fraction shown as a
percentage with one decimal), ``pct0``, ``int`` (thin-space thousands) or ``mega``
(millions, one decimal); default ``str``. Decimal points become commas (Russian style).

Directive ``{result-figure}`` — a ``{figure}`` whose argument ``notebook/name`` becomes
``results/<notebook>/<scale>/<name>.png``.

The scale is ``THESISLIB_BOOK_SCALE`` (``python -m thesislib.reproduce`` sets it), default ``cpu``.
Directive ``{result-table}`` — ``notebook/name`` renders ``results/<notebook>/<scale>/<name>.csv``
(written by :func:`thesislib.results.save_table`).

A missing file or key is a build error, so the book never shows a stale or invented number.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from docutils import nodes
from sphinx.application import Sphinx
from docutils.parsers.rst.directives.tables import CSVTable
from sphinx.directives.patches import Figure
from sphinx.util.docutils import SphinxRole

REPO_ROOT = Path(__file__).resolve().parent.parent.parent


def book_scale() -> str:
    return os.environ.get("THESISLIB_BOOK_SCALE", "cpu")


def lookup(record: Any, dotted: str) -> Any:
    """Follow ``dotted`` through dicts and lists; a dict key may itself hold dots (``budgets.0.5``),
    the longest key that matches wins."""
    parts = dotted.split(".")
    value, i = record, 0
    while i < len(parts):
        if isinstance(value, list):
            value, i = value[int(parts[i])], i + 1
            continue
        if isinstance(value, dict):
            for j in range(len(parts), i, -1):
                key = ".".join(parts[i:j])
                if key in value:
                    value, i = value[key], j
                    break
            else:
                raise KeyError(f"no key {parts[i]!r} on the way to {dotted!r}")
            continue
        raise KeyError(f"{'.'.join(parts[:i])!r} is a value, not a mapping, on the way to {dotted!r}")
    return value


def format_value(value: Any, spec: str) -> str:
    if value is None:  # NaN is stored as null (e.g. a correlation with a constant prediction)
        return "—"
    if spec in ("", "str"):
        return str(value)
    if spec == "pct":
        return f"{100 * float(value):.1f} %".replace(".", ",")
    if spec == "pct0":
        return f"{100 * float(value):.0f} %"
    if spec == "int":  # thousands separated by a thin space, as in Russian typography
        return f"{int(value):,}".replace(",", "\u2009")
    if spec == "mega":  # millions with one decimal
        return f"{float(value) / 1e6:.1f}".replace(".", ",")
    text = format(value, spec)
    return text.replace(".", ",") if isinstance(value, float) else text


class ResultRole(SphinxRole):
    """``{result}`notebook:key|fmt``` → the number from results/<notebook>/<scale>.json."""

    def run(self):
        target, _, spec = self.text.partition("|")
        notebook, _, key = target.partition(":")
        path = REPO_ROOT / "results" / notebook / f"{book_scale()}.json"
        self.env.note_dependency(str(path))  # a new result re-reads this page on the next build
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            text = format_value(lookup(record, key.strip()), spec.strip())
        except (OSError, ValueError, KeyError, IndexError, TypeError) as error:
            message = self.inliner.reporter.error(
                f"result {self.text!r}: {error} (file {path}); run `python -m thesislib.reproduce`",
                line=self.lineno)
            return [self.inliner.problematic(self.rawtext, self.rawtext, message)], [message]
        return [nodes.Text(text)], []


class ResultFigure(Figure):
    """``{result-figure} notebook/name`` → figure of results/<notebook>/<scale>/<name>.png."""

    def run(self):
        notebook, _, name = self.arguments[0].partition("/")
        relative = f"results/{notebook}/{book_scale()}/{name}.png"
        if not (REPO_ROOT / relative).exists():
            error = self.state_machine.reporter.error(
                f"result figure {relative} does not exist; run `python -m thesislib.reproduce`", line=self.lineno)
            return [error]
        self.state.document.settings.env.note_dependency(str(REPO_ROOT / relative))
        self.arguments[0] = "/" + relative
        return super().run()


class ResultTable(CSVTable):
    """``{result-table} notebook/name`` → a table of results/<notebook>/<scale>/<name>.csv (header row first)."""

    def run(self):
        target, _, title = self.arguments[0].partition(" ")
        notebook, _, name = target.partition("/")
        path = REPO_ROOT / "results" / notebook / book_scale() / f"{name}.csv"
        if not path.exists():
            error = self.state_machine.reporter.error(
                f"result table {path} does not exist; run `python -m thesislib.reproduce`", line=self.lineno)
            return [error]
        self.options["file"] = str(path)
        self.options.setdefault("header-rows", 1)
        self.options.setdefault("encoding", "utf-8")
        self.arguments = [title.strip()] if title.strip() else []  # the rest of the line is the title
        self.state.document.settings.env.note_dependency(str(path))
        return super().run()


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_role("result", ResultRole())
    app.add_directive("result-figure", ResultFigure)
    app.add_directive("result-table", ResultTable)
    return {"version": "0.1", "parallel_read_safe": True, "parallel_write_safe": True}
