"""Sphinx extension: quote numbers, figures and tables of ``results/`` in the book, never by hand.

Role ``{result}`` — ``{result}`notebook:dotted.key|format``` — reads
``results/<notebook>/<scale>.json`` and prints the value at ``dotted.key``: the key is split on
dots, each part a dict key (result keys are plain identifiers, ratios written as
:func:`thesislib.results.ratio_key`, ``r0_5``) or a list index. ``format`` is a Python format spec
(``.3f``, ``d``), ``pct`` (a fraction shown as a percentage with one decimal), ``pct0``, ``int``
(thin-space thousands) or ``mega`` (millions, one decimal); default ``str``. Decimal points become
commas (Russian style).

Directive ``{result-figure}`` — a ``{figure}`` whose argument ``notebook/name`` becomes
``results/<notebook>/<scale>/<name>.png``; with ``:interactive:`` the HTML book draws its Plotly copy
``<name>.plotly.json`` instead (plotly.js served from ``_static``, offline) and the PDF keeps the PNG.
Directive ``{result-table}`` — ``notebook/name [title]``
renders ``results/<notebook>/<scale>/<name>.csv`` (written by ``Run.table``). Its options format the cells
for the reader, never the results file: ``:percent: col, col`` (fractions as percentages with one decimal,
``0.8402`` → ``84,0``), ``:decimals: col=2, col=1`` (fixed decimals; ``*=1`` for every other numeric column), ``:headers: метод, доля каналов, …``
(the header row, one name per column; items are separated by ``;`` instead of commas when a name has a comma), ``:rename: column=имя, …`` (added to :data:`COLUMN_NAMES`, the Russian
names of ``method``, ``ratio``, … used by default), ``:mega: col`` (millions, one decimal), ``:methods: col`` (method keys by their Russian names); ratio columns
(``0.5`` or ``r0_5``) are headed «r = 0,5» automatically; numbers get a decimal comma. An unknown column is a build error
naming the columns of the file.

Role ``{compare}`` — ``{compare}`baselines:results.accuracy.obs.r0_5 ? results.accuracy.l1.r0_5|выше|ниже```
prints the word true of the two results (so a comparative sentence is generated from the results);
``{compare}`a > b``` prints nothing and fails the build once the relation no longer holds. Role
``{version}`` — ``{version}`torch``` prints the installed version (``importlib.metadata``) at build time.

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
import re
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
from thesislib.plotting import method_label
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


def read_result(notebook: str, key: str) -> Any:
    """The value at ``key`` of ``results/<notebook>/<scale>.json`` for the book's scale; ``ValueError``
    naming the key, the file and the notebook that produces it when the file or the key is missing."""
    scale = book_scale()
    path = _results.result_path(notebook, scale)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        return lookup(record, key)
    except FileNotFoundError:
        raise ValueError(f"result key {key!r}: the results file {path} does not exist; "
                         + _how_to_produce(notebook, scale)) from None
    except (OSError, ValueError, KeyError, IndexError, TypeError) as error:
        reason = error.args[0] if isinstance(error, KeyError) and error.args else error
        raise ValueError(f"result key {key!r} from {path}: {reason}; " + _how_to_produce(notebook, scale)) from None


_RELATIONS = {">": lambda a, b: a > b, "<": lambda a, b: a < b, ">=": lambda a, b: a >= b,
              "<=": lambda a, b: a <= b}
_COMPARISON = re.compile(r"^\s*(\S+)\s*(>=|<=|>|<|\?)\s*(\S+)\s*$")


def _operand(text: str, default_notebook: str | None) -> tuple[float, str]:
    """A number literal or ``notebook:dotted.key`` (``notebook:`` may be left out after the first side)."""
    number = _number(text.replace(",", "."))
    if number is not None:
        return number, text
    notebook, colon, key = text.partition(":")
    if not colon:
        notebook, key = default_notebook or "", text
    if not notebook or not key:
        raise ValueError(f"{text!r} is neither a number nor `notebook:dotted.key`")
    value = read_result(notebook, key)
    if value is None or isinstance(value, (bool, str, list, dict)):
        raise ValueError(f"{notebook}:{key} is {value!r}, not a number")
    return float(value), f"{notebook}:{key} = {value:g}"


def evaluate_comparison(text: str) -> tuple[str, float, float, str, str]:
    """Parse ``a OP b`` (OP one of ``> < >= <= ?``; each side a number or ``notebook:key``, the second
    side's notebook defaulting to the first's) and read both sides: ``(op, a, b, a_text, b_text)``."""
    match = _COMPARISON.match(text)
    if not match:
        raise ValueError(f"expected `notebook:key OP notebook:key` with OP one of >, <, >=, <=, ?, got {text!r}")
    left, op, right = match.groups()
    a, a_text = _operand(left, None)
    b, b_text = _operand(right, left.partition(":")[0] if ":" in left else None)
    return op, a, b, a_text, b_text


class CompareRole(SphinxRole):
    """``{compare}`a ? b|выше|ниже|равна``` → the word that is true of the two results at the book's
    scale (default words «выше», «ниже», «такая же»), so a comparative sentence cannot turn false at
    another scale; ``{compare}`a > b``` (a relation) renders nothing and fails the build when the
    relation no longer holds, naming the page, both keys and their values."""

    def run(self):
        target, *words = [part.strip() for part in self.text.split("|")]
        try:
            op, a, b, a_text, b_text = evaluate_comparison(target)
        except ValueError as error:
            return self._error(f"{{compare}}`{self.text}`: {error}")
        scale = book_scale()
        for path in {_results.result_path(side.partition(":")[0], scale)
                     for side in (a_text, b_text) if ":" in side}:
            self.env.note_dependency(str(path))
        if op != "?":
            if words:
                return self._error(f"{{compare}}`{self.text}`: a relation ({op}) renders nothing; "
                                   "words go with `?` (`a ? b|выше|ниже`)")
            if not _RELATIONS[op](a, b):
                return self._error(f"the claim {target!r} no longer holds at scale {scale} ({a_text}, {b_text}): "
                                   "rewrite the sentence, or let {compare}`a ? b|…` choose the word")
            return [], []
        higher, lower, same = (words + ["выше", "ниже", "такая же"][len(words):])[:3]
        return [nodes.Text(higher if a > b else lower if a < b else same)], []

    def _error(self, text: str):
        message = self.inliner.reporter.error(f"page {self.env.docname}: {text}", line=self.lineno)
        return [self.inliner.problematic(self.rawtext, self.rawtext, message)], [message]


def installed_version(distribution: str) -> str:
    """The installed version of a distribution (``importlib.metadata``); ``ValueError`` when absent."""
    from importlib import metadata

    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        raise ValueError(f"the package {distribution!r} is not installed in the environment that builds the "
                         "book (pip install -e . installs the pinned tools)") from None


class VersionRole(SphinxRole):
    """``{version}`torch``` → the version of the installed distribution, read when the book is built."""

    def run(self):
        try:
            return [nodes.literal(text=installed_version(self.text.strip()))], []
        except ValueError as error:
            message = self.inliner.reporter.error(f"page {self.env.docname}: {{version}}`{self.text}`: {error}",
                                                  line=self.lineno)
            return [self.inliner.problematic(self.rawtext, self.rawtext, message)], [message]


def _directive_error(directive: Any, text: str) -> list:
    env = directive.state.document.settings.env
    return [directive.state_machine.reporter.error(f"page {env.docname}: {text}", line=directive.lineno)]


def _target(argument: str) -> tuple[str, str]:
    notebook, slash, name = argument.partition("/")
    if not slash or not notebook or not name:
        raise ValueError(f"expected `notebook/name`, got {argument!r}")
    return notebook, name


def _result_file(directive: Any, kind: str, target: str, locate: Any) -> tuple[Path, str, str, str] | list:
    """``(path, notebook, name, scale)`` of the results file ``locate(notebook, scale, name)`` that a
    directive's ``notebook/name`` target names (the page then depends on it), or the build error naming the
    page and the notebook that should produce it when the target is malformed or the file is missing."""
    try:
        notebook, name = _target(target)
        scale = book_scale()
        path = locate(notebook, scale, name, mkdir=False)
    except ValueError as error:
        return _directive_error(directive, f"result {kind} {target!r}: {error}")
    if not path.is_file():
        return _directive_error(directive, f"result {kind} {path} does not exist; " + _how_to_produce(notebook, scale))
    directive.state.document.settings.env.note_dependency(str(path))
    return path, notebook, name, scale


class ResultFigure(Figure):
    """``{result-figure} notebook/name`` → figure of results/<notebook>/<scale>/<name>.png.

    The image is referenced relative to the book's source folder, so a ``THESISLIB_RESULTS`` outside
    it works too (Sphinx copies the file into the build's image folder). With ``:interactive:`` the HTML
    shows the Plotly copy ``<name>.plotly.json`` (hover: method, x, y) and hides the PNG; LaTeX keeps the PNG."""

    option_spec = {**Figure.option_spec, "interactive": directives.flag}

    def run(self):
        env = self.state.document.settings.env
        found = _result_file(self, "figure", self.arguments[0], _results.figure_path)
        if isinstance(found, list):
            return found
        path, notebook, name, scale = found
        self.arguments[0] = "/" + Path(os.path.relpath(path.resolve(), Path(env.srcdir).resolve())).as_posix()
        interactive = "interactive" in self.options
        self.options.pop("interactive", None)
        embed = None
        if interactive:
            spec = _results.interactive_path(path)
            if not spec.is_file():
                return _directive_error(self, f"result figure {self.arguments[0]!r} is :interactive: but {spec} "
                                        "does not exist (Run.figure writes it beside the PNG for a figure of curves); "
                                        + _how_to_produce(notebook, scale))
            env.note_dependency(str(spec))
            embed = plotly_html(spec.read_text(encoding="utf-8"), f"plotly-{notebook}-{name}")
        result = super().run()
        if embed is not None:
            figure = next((node for node in result if isinstance(node, nodes.figure)), None)
            if figure is None:  # Figure.run returned only a system message
                return result
            figure["classes"].append(INTERACTIVE_CLASS)
            figure.insert(0, nodes.raw("", embed, format="html", classes=[INTERACTIVE_CLASS]))
        return result


INTERACTIVE_CLASS = "thesis-plotly"
PLOTLY_JS = "plotly.min.js"


def plotly_html(spec_json: str, div_id: str) -> str:
    """A ``<div>`` drawing the Plotly figure ``spec_json`` (written by :meth:`thesislib.results.Run.figure`)
    with the plotly.js the book serves from ``_static`` (no CDN: the page works offline)."""
    import plotly.io as pio

    fig = pio.from_json(spec_json)
    return pio.to_html(fig, full_html=False, include_plotlyjs=False, div_id=div_id,
                       config={"displaylogo": False, "responsive": True})


def _serve_plotly(app: Sphinx) -> None:
    """Copy plotly.js of the installed ``plotly`` package into the HTML build's static files."""
    if app.builder.format != "html":
        return
    import plotly

    source = Path(plotly.__file__).parent / "package_data" / PLOTLY_JS
    if not source.is_file():
        raise RuntimeError(f"{source} is missing: reinstall the pinned plotly (pip install -e .)")
    folder = Path(app.doctreedir) / "thesis_plotly"
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / PLOTLY_JS
    if not target.is_file() or target.stat().st_size != source.stat().st_size:
        target.write_bytes(source.read_bytes())
    if str(folder) not in app.config.html_static_path:
        app.config.html_static_path = [*app.config.html_static_path, str(folder)]


def _plotly_on_page(app: Sphinx, pagename: str, templatename: str, context: dict, doctree: Any) -> None:
    """Load plotly.js only on the pages that embed an interactive figure."""
    if doctree is not None and any(INTERACTIVE_CLASS in node.get("classes", []) for node in doctree.findall(nodes.raw)):
        app.add_js_file(PLOTLY_JS)


def _names(text: str) -> list[str]:
    """Option items: separated by ``;`` when the text has one (column names with commas:
    ``точность, %=1; задержка, мс=2``), else by commas (CSV quoting allowed)."""
    if not text.strip():
        return []
    if ";" in text:
        return [part.strip() for part in text.split(";") if part.strip()]
    return [part.strip() for part in next(csv.reader([text], skipinitialspace=True))]


def _number(cell: str) -> float | None:
    try:
        return float(cell)
    except ValueError:
        return None


#: Russian names of the fixed English columns that results tables use (``{result-table}`` renames them
#: unless ``:headers:`` gives the whole row; ``:rename:`` adds to or overrides this map)
COLUMN_NAMES: dict[str, str] = {
    "method": "метод", "ratio": "доля каналов", "accuracy": "точность, %", "psnr": "PSNR, дБ",
    "ssim": "SSIM", "macs": "MAC, млн", "group": "группа", "estimator": "оценщик", "width": "ширина",
    "seed": "зерно",
}

_RATIO_KEY = re.compile(r"^r(\d+)(?:_(\d+))?$")


def ratio_header(name: str) -> str | None:
    """«r = 0,5» for a ratio column — a number in (0, 1] (``0.5``) or a :func:`thesislib.results.ratio_key`
    (``r0_5``); ``None`` for any other column name."""
    match = _RATIO_KEY.match(name.strip())
    text = f"{match.group(1)}.{match.group(2)}" if match and match.group(2) else (match.group(1) if match else name)
    value = _number(text)
    if value is None or not 0 < value <= 1:
        return None
    return "r = " + f"{value:g}".replace(".", ",")


def format_table(rows: list[list[str]], percent: list[str] = (), decimals: dict[str, int] | None = None,
                 headers: list[str] = (), rename: dict[str, str] | None = None, ratio_headers: bool = False,
                 mega: list[str] = (), methods: list[str] = ()) -> list[list[str]]:
    """The rows of a results CSV as the reader sees them: ``percent`` columns ×100 with one decimal,
    ``decimals`` columns rounded, ``mega`` columns in millions with one decimal, every number with a
    decimal comma, ``methods`` columns' method keys by their Russian names
    (:func:`thesislib.plotting.method_label`, as in the figures); the header row replaced by ``headers`` or else renamed by ``rename`` (column → name)
    and, with ``ratio_headers``, ratio columns shown as «r = 0,5» (:func:`ratio_header`), so a table
    whose ratio columns change with the scale needs no list of headers.

    Raises ``ValueError`` naming the file's columns for a column it does not have or a wrong header count."""
    if not rows:
        raise ValueError("the table is empty (no header row)")
    header, body = rows[0], rows[1:]
    decimals = dict(decimals or {})
    unknown = [name for name in [*percent, *decimals, *mega, *methods] if name not in header and name != "*"]
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
                cells.append(method_label(cell) if name in methods else cell)
            elif name in percent:
                cells.append(f"{100 * value:.1f}".replace(".", ","))
            elif name in mega:
                cells.append(f"{value / 1e6:.1f}".replace(".", ","))
            elif name in decimals or "*" in decimals:  # "*": every other numeric column
                cells.append(f"{value:.{decimals.get(name, decimals.get('*'))}f}".replace(".", ","))
            else:
                cells.append(cell.replace(".", ","))
        shown.append(cells)
    if headers:
        return [list(headers), *shown]
    rename = dict(rename or {})
    named = [rename.get(name) or (ratio_headers and ratio_header(name)) or name for name in header]
    return [named, *shown]


def _decimals_option(text: str) -> dict[str, int]:
    found = {}
    for part in _names(text):
        name, equals, digits = part.partition("=")
        if not equals or not digits.strip().isdigit():
            raise ValueError(f"expected `column=digits`, got {part!r}")
        found[name.strip()] = int(digits)
    return found


def _rename_option(text: str) -> dict[str, str]:
    found = {}
    for part in _names(text):
        name, equals, shown = part.partition("=")
        if not equals or not name.strip() or not shown.strip():
            raise ValueError(f"expected `column=Russian name`, got {part!r}")
        found[name.strip()] = shown.strip()
    return found


class ResultTable(CSVTable):
    """``{result-table} notebook/name [title]`` → a table of results/<notebook>/<scale>/<name>.csv
    (header row first), cells formatted by ``:percent:``, ``:decimals:``, ``:headers:``."""

    option_spec = {**CSVTable.option_spec, "percent": directives.unchanged, "decimals": directives.unchanged,
                   "headers": directives.unchanged, "rename": directives.unchanged, "mega": directives.unchanged,
                   "methods": directives.unchanged}

    def run(self):
        target, _, title = self.arguments[0].partition(" ")
        found = _result_file(self, "table", target, _results.table_path)
        if isinstance(found, list):
            return found
        path, notebook, name, scale = found
        try:
            with path.open(encoding="utf-8", newline="") as file:
                rows = list(csv.reader(file))
            rows = format_table(rows, _names(self.options.pop("percent", "")),
                                _decimals_option(self.options.pop("decimals", "")),
                                _names(self.options.pop("headers", "")),
                                rename={**COLUMN_NAMES, **_rename_option(self.options.pop("rename", ""))},
                                ratio_headers=True, mega=_names(self.options.pop("mega", "")),
                                methods=_names(self.options.pop("methods", "")))
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
    app.add_role("compare", CompareRole())
    app.add_role("version", VersionRole())
    app.add_directive("result-figure", ResultFigure)
    app.add_directive("result-table", ResultTable)
    app.connect("builder-inited", _serve_plotly)
    app.connect("html-page-context", _plotly_on_page)
    return {"version": "0.2", "parallel_read_safe": True, "parallel_write_safe": True}
