"""Sphinx extension: quote numbers, figures and tables of ``results/`` in the book, never by hand.

Role ``{result}`` — ``{result}`notebook:dotted.key|format``` — reads
``results/<notebook>/<scale>.json`` and prints the value at ``dotted.key``: the key is split on
dots, each part a dict key (result keys are plain identifiers, ratios written as
:func:`thesislib.results.ratio_key`, ``r0_5``) or a list index. ``format`` is a Python format spec
(``.3f``, ``d``), ``pct`` (a fraction shown as a percentage with one decimal), ``pct0``, ``int``
(thin-space thousands) or ``mega`` (millions, one decimal); default ``str``. Decimal points become
commas (Russian style).

Directive ``{result-figure}`` — a ``{figure}`` whose argument ``notebook/name`` becomes
``results/<notebook>/<scale>/<name>.png``. Directive ``{result-table}`` — ``notebook/name [title]``
renders ``results/<notebook>/<scale>/<name>.csv`` (written by ``Run.table``). Its options format the cells
for the reader, never the results file: ``:percent: col, col`` (fractions as percentages with one decimal,
``0.8402`` → ``84,0``), ``:decimals: col=2, col=1`` (fixed decimals), ``:headers: метод, доля каналов, …``
(the header row, one name per column); numbers get a decimal comma. An unknown column is a build error
naming the columns of the file.

The layout and the environment come from :mod:`thesislib.results` (one definition):
``THESISLIB_RESULTS`` moves the results folder (it may lie outside the book's sources),
``THESISLIB_BOOK_SCALE`` picks the scale (``python -m thesislib.reproduce`` sets it), default ``cpu``.
A missing file or key is a build error naming the page, the key, the results file and the notebook
that produces it, so the book never shows a stale or invented number.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any

from docutils import nodes
from docutils.parsers.rst import directives
from docutils.parsers.rst.directives.tables import CSVTable
from docutils.statemachine import StringList
from sphinx.application import Sphinx
from sphinx.directives.patches import Figure
from sphinx.util.docutils import SphinxRole

from thesislib import results as _results
from thesislib.results import book_scale  # noqa: F401  (re-exported: the scale the book quotes)

_SHOWN_KEYS = 8  # a missing key's error lists at most this many keys found at that level


def lookup(record: Any, dotted: str) -> Any:
    """Follow ``dotted`` through dicts (one key per dot-separated part) and lists (an integer index).

    Raises ``KeyError`` for a missing key or a part that is not a list index, ``IndexError`` for an
    index out of range, each naming the key path."""
    value, walked = record, []
    for part in dotted.split("."):
        here = ".".join(walked) or "the top level"
        if isinstance(value, list):
            try:
                index = int(part)
            except ValueError:
                raise KeyError(f"{part!r} is not a list index at {here!r} on the way to {dotted!r}") from None
            if not -len(value) <= index < len(value):
                raise IndexError(f"index {index} out of range at {here!r} (a list of {len(value)}) "
                                 f"on the way to {dotted!r}")
            value = value[index]
        elif isinstance(value, dict):
            if part not in value:
                raise KeyError(_missing_key(value, part, here, dotted))
            value = value[part]
        else:
            raise KeyError(f"{'.'.join(walked)!r} is a value, not a mapping, on the way to {dotted!r}")
        walked.append(part)
    return value


def _missing_key(mapping: dict, part: str, here: str, dotted: str) -> str:
    keys = list(mapping)
    shown = ", ".join(map(str, keys[:_SHOWN_KEYS])) + (", …" if len(keys) > _SHOWN_KEYS else "")
    text = f"no key {part!r} at {here!r} on the way to {dotted!r} (keys there: {shown or 'none'})"
    if any("." in str(k) for k in keys):
        text += ("; this file has keys with dots, written before result keys became plain identifiers "
                 "(ratios as ratio_key(0.5) = 'r0_5'): rerun the notebook")
    return text


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


def _how_to_produce(notebook: str, scale: str) -> str:
    return (f"the notebook notebooks/{notebook}.ipynb produces it: run "
            f"`python -m thesislib.reproduce --scale {scale} --only {notebook}`")


class ResultRole(SphinxRole):
    """``{result}`notebook:key|fmt``` → the number from results/<notebook>/<scale>.json."""

    def run(self):
        target, _, spec = self.text.partition("|")
        notebook, colon, key = (part.strip() for part in target.partition(":"))
        try:
            if not colon or not notebook or not key:
                raise ValueError("expected `notebook:dotted.key|format`, e.g. `capacity:results.best_spearman|.3f`")
            scale = book_scale()
            path = _results.result_path(notebook, scale)
        except ValueError as error:
            return self._error(f"{{result}}`{self.text}`: {error}")
        self.env.note_dependency(str(path))  # a new result re-reads this page on the next build
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            text = format_value(lookup(record, key), spec.strip())
        except FileNotFoundError:
            return self._error(f"result key {key!r}: the results file {path} does not exist; "
                               + _how_to_produce(notebook, scale))
        except (OSError, ValueError, KeyError, IndexError, TypeError) as error:
            reason = error.args[0] if isinstance(error, KeyError) and error.args else error
            return self._error(f"result key {key!r} from {path}: {reason}; " + _how_to_produce(notebook, scale))
        return [nodes.Text(text)], []

    def _error(self, text: str):
        message = self.inliner.reporter.error(f"page {self.env.docname}: {text}", line=self.lineno)
        return [self.inliner.problematic(self.rawtext, self.rawtext, message)], [message]


def _directive_error(directive: Any, text: str) -> list:
    env = directive.state.document.settings.env
    return [directive.state_machine.reporter.error(f"page {env.docname}: {text}", line=directive.lineno)]


def _target(argument: str) -> tuple[str, str]:
    notebook, slash, name = argument.partition("/")
    if not slash or not notebook or not name:
        raise ValueError(f"expected `notebook/name`, got {argument!r}")
    return notebook, name


class ResultFigure(Figure):
    """``{result-figure} notebook/name`` → figure of results/<notebook>/<scale>/<name>.png.

    The image is referenced relative to the book's source folder, so a ``THESISLIB_RESULTS`` outside
    it works too (Sphinx copies the file into the build's image folder)."""

    def run(self):
        env = self.state.document.settings.env
        try:
            notebook, name = _target(self.arguments[0])
            scale = book_scale()
            path = _results.figure_path(notebook, scale, name, mkdir=False)
        except ValueError as error:
            return _directive_error(self, f"result figure {self.arguments[0]!r}: {error}")
        if not path.is_file():
            return _directive_error(self, f"result figure {path} does not exist; " + _how_to_produce(notebook, scale))
        env.note_dependency(str(path))
        self.arguments[0] = "/" + Path(os.path.relpath(path.resolve(), Path(env.srcdir).resolve())).as_posix()
        return super().run()


def _names(text: str) -> list[str]:
    return [part.strip() for part in next(csv.reader([text], skipinitialspace=True))] if text.strip() else []


def _number(cell: str) -> float | None:
    try:
        return float(cell)
    except ValueError:
        return None


def format_table(rows: list[list[str]], percent: list[str] = (), decimals: dict[str, int] | None = None,
                 headers: list[str] = ()) -> list[list[str]]:
    """The rows of a results CSV as the reader sees them: ``percent`` columns ×100 with one decimal,
    ``decimals`` columns rounded, every number with a decimal comma, the header row replaced by ``headers``.

    Raises ``ValueError`` naming the file's columns for a column it does not have or a wrong header count."""
    if not rows:
        raise ValueError("the table is empty (no header row)")
    header, body = rows[0], rows[1:]
    decimals = dict(decimals or {})
    unknown = [name for name in [*percent, *decimals] if name not in header]
    if unknown:
        raise ValueError(f"no column {', '.join(map(repr, unknown))} (the columns are {', '.join(header)})")
    if headers and len(headers) != len(header):
        raise ValueError(f":headers: gives {len(headers)} names for {len(header)} columns ({', '.join(header)})")
    shown = []
    for row in body:
        cells = []
        for name, cell in zip(header, row):
            value = _number(cell)
            if value is None:
                cells.append(cell)
            elif name in percent:
                cells.append(f"{100 * value:.1f}".replace(".", ","))
            elif name in decimals:
                cells.append(f"{value:.{decimals[name]}f}".replace(".", ","))
            else:
                cells.append(cell.replace(".", ","))
        shown.append(cells)
    return [list(headers) if headers else header, *shown]


def _decimals_option(text: str) -> dict[str, int]:
    found = {}
    for part in _names(text):
        name, equals, digits = part.partition("=")
        if not equals or not digits.strip().isdigit():
            raise ValueError(f"expected `column=digits`, got {part!r}")
        found[name.strip()] = int(digits)
    return found


class ResultTable(CSVTable):
    """``{result-table} notebook/name [title]`` → a table of results/<notebook>/<scale>/<name>.csv
    (header row first), cells formatted by ``:percent:``, ``:decimals:``, ``:headers:``."""

    option_spec = {**CSVTable.option_spec, "percent": directives.unchanged, "decimals": directives.unchanged,
                   "headers": directives.unchanged}

    def run(self):
        target, _, title = self.arguments[0].partition(" ")
        try:
            notebook, name = _target(target)
            scale = book_scale()
            path = _results.table_path(notebook, scale, name, mkdir=False)
        except ValueError as error:
            return _directive_error(self, f"result table {target!r}: {error}")
        if not path.is_file():
            return _directive_error(self, f"result table {path} does not exist; " + _how_to_produce(notebook, scale))
        self.state.document.settings.env.note_dependency(str(path))
        try:
            with path.open(encoding="utf-8", newline="") as file:
                rows = list(csv.reader(file))
            rows = format_table(rows, _names(self.options.pop("percent", "")),
                                _decimals_option(self.options.pop("decimals", "")),
                                _names(self.options.pop("headers", "")))
        except ValueError as error:
            return _directive_error(self, f"result table {path}: {error}; " + _how_to_produce(notebook, scale)
                                    .replace("produces it", "writes it"))
        text = io.StringIO()
        csv.writer(text, lineterminator="\n").writerows(rows)
        self.content = StringList(text.getvalue().splitlines(), source=str(path))
        self.options.setdefault("header-rows", 1)
        self.arguments = [title.strip()] if title.strip() else []  # the rest of the line is the title
        return super().run()


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_role("result", ResultRole())
    app.add_directive("result-figure", ResultFigure)
    app.add_directive("result-table", ResultTable)
    return {"version": "0.2", "parallel_read_safe": True, "parallel_write_safe": True}
