"""Sphinx extension: the book as a Russian thesis document (issue 14), in HTML and in the PDF.

* **Title page** from one YAML block, ``book/meta.yml`` (:data:`FIELDS`): the PDF title page
  (``latex_elements['maketitle']``), the HTML front page (directive ``{thesis-title-page}``), the book's
  ``project``/``author`` and MyST substitutions ``{{ thesis_title }}``, ``{{ thesis_author }}``. An empty field
  shows as a visible gap, never an invented value.
* **Counts for the Реферат** (directive ``{thesis-counts}``): figures, tables, display formulas and cited
  sources are counted in the built document (all doctrees of the table of contents, after the bibliography
  is resolved); the PDF page count is LaTeX's own (``zref-totpages``, resolved on the next xelatex pass), the
  HTML quotes the page count of the last PDF build when there is one.
* **Numbering of a Russian thesis**: continuous figure, table and equation numbers, «Рисунок N —»,
  «Таблица N —» captions (HTML and PDF), sections 1, 1.1, 1.1.1; in the PDF the documents of unnumbered
  parts of ``_toc.yml`` (Реферат, Введение, the sources and the appendices) are unnumbered chapters, the table
  of contents follows the Реферат, and the bibliography is printed once, where ``book/bibliography.md`` stands,
  as «Список использованных источников», numbered in order of first citation (:mod:`gost_style`).
* **Offline HTML**: MathJax 2 is copied from a local installation (Debian ``libjs-mathjax``) into
  ``_static/mathjax`` and ``mathjax_path`` points at it; executed notebooks lose their parameters cells
  (tags ``parameters``/``injected-parameters`` become ``remove-cell``), so they open with their title.
* **Bad input**: a citation key missing from ``references.bib`` is a build error naming the page and the key.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import yaml
from docutils import nodes
from docutils.parsers.rst import Directive
from sphinx import addnodes
from sphinx.application import Sphinx
from sphinx.builders.latex.nodes import thebibliography
from sphinx.config import Config
from sphinx.environment import BuildEnvironment
from sphinx.util import logging
from sphinx.writers.html5 import HTML5Translator

import gost_style

logger = logging.getLogger(__name__)

EXT_DIR = Path(__file__).resolve().parent
BOOK_DIR = EXT_DIR.parent
META_FILE = BOOK_DIR / "meta.yml"
STATIC_DIR = EXT_DIR / "static"
LATEX_TARGET = "thesis.tex"  # _build/latex/thesis.tex → thesis.pdf
LOCALE_SOURCE = EXT_DIR / "locale"  # .po files: interface strings the theme's catalogues lack

#: The fields of ``book/meta.yml``, in title-page order, with the Russian name shown for an empty one.
FIELDS: dict[str, str] = {
    "university": "университет",
    "faculty": "факультет",
    "department": "кафедра",
    "work_type": "вид работы",
    "work_kind": "тип работы",
    "title": "тема",
    "student": "студент",
    "student_group": "группа",
    "student_course": "курс",
    "supervisor": "научный руководитель",
    "supervisor_degree": "учёная степень руководителя",
    "city": "город",
    "year": "год",
}

#: Where a local MathJax 2 may be installed (``THESISLIB_MATHJAX_DIR`` first).
MATHJAX_CANDIDATES = ("/usr/share/javascript/mathjax", "/usr/share/nodejs/mathjax2")
#: The parts of MathJax 2 that TeX input with CommonHTML output loads (about 1.5 MB of 56).
MATHJAX_PARTS = ("MathJax.js", "jax/input/TeX", "jax/output/CommonHTML", "jax/element", "extensions",
                 "fonts/HTML-CSS/TeX/woff")
MATHJAX2_CONFIG: dict[str, Any] = {
    "jax": ["input/TeX", "output/CommonHTML"],
    "extensions": ["tex2jax.js"],
    "TeX": {"extensions": ["AMSmath.js", "AMSsymbols.js"]},
    "tex2jax": {"inlineMath": [["\\(", "\\)"]], "displayMath": [["\\[", "\\]"]], "processEscapes": True,
                "ignoreClass": "tex2jax_ignore|mathjax_ignore",
                "processClass": "tex2jax_process|mathjax_process|math|output_area"},
    "CommonHTML": {"linebreaks": {"automatic": True}},
    "showMathMenu": False,
    "messageStyle": "none",
}

#: Russian word forms after «содержит N …» (one, few, many): 1 страницу, 2 страницы, 5 страниц.
FORMS: dict[str, tuple[str, str, str]] = {
    "pages": ("страницу", "страницы", "страниц"),
    "figures": ("рисунок", "рисунка", "рисунков"),
    "tables": ("таблицу", "таблицы", "таблиц"),
    "equations": ("формулу", "формулы", "формул"),
    "sources": ("использованный источник", "использованных источника", "использованных источников"),
}
_PDF_PAGES = re.compile(r"Output written on \S*?\.(?:pdf|xdv) \((\d+) pages?")


# --- the title page -----------------------------------------------------------------------------------

def load_meta(path: Path = META_FILE) -> dict[str, str | None]:
    """Read the title-page block: every key of :data:`FIELDS`, a string or null (= not known yet)."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"the title-page block {path} does not exist: create it with the keys "
                                f"{', '.join(FIELDS)}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping with the keys {', '.join(FIELDS)}")
    unknown = sorted(set(data) - set(FIELDS))
    missing = [key for key in FIELDS if key not in data]
    if unknown or missing:
        raise ValueError(f"{path}: " + "; ".join(
            ([f"unknown key(s) {', '.join(unknown)}"] if unknown else [])
            + ([f"missing key(s) {', '.join(missing)} (write `key: null` when the value is not known)"]
               if missing else []))
            + f"; the keys are {', '.join(FIELDS)}")
    meta = {}
    for key in FIELDS:
        value = data[key]
        if isinstance(value, (dict, list)):
            raise ValueError(f"{path}: {key} must be a text or null, not {type(value).__name__}")
        meta[key] = None if value is None or str(value).strip() == "" else " ".join(str(value).split())
    return meta


def missing_fields(meta: dict[str, str | None]) -> list[str]:
    """The keys of ``meta`` that are empty (shown as gaps on the title page)."""
    return [key for key, value in meta.items() if value is None]


def gap(key: str) -> str:
    """The visible text of an empty field."""
    return f"[поле «{FIELDS[key]}» ({key}) не заполнено в book/meta.yml]"


def _value(meta: dict, key: str) -> str:
    return meta[key] if meta[key] is not None else gap(key)


def title_page_lines(meta: dict[str, str | None]) -> list[tuple[str, str, bool]]:
    """The title page as ``(css class, text, is a gap)`` lines, shared by HTML and LaTeX."""
    def line(css: str, key: str, fmt: str = "{}") -> tuple[str, str, bool]:
        return css, fmt.format(_value(meta, key)), meta[key] is None

    student = f"Выполнил студент группы {_value(meta, 'student_group')}, {_value(meta, 'student_course')}"
    return [
        line("university", "university"),
        line("faculty", "faculty"),
        line("department", "department"),
        line("work-type", "work_type"),
        line("work-kind", "work_kind"),
        line("title", "title", "«{}»"),
        ("student", student, meta["student_group"] is None or meta["student_course"] is None),
        line("student-name", "student"),
        ("supervisor", "Научный руководитель:", False),
        line("supervisor-degree", "supervisor_degree"),
        line("supervisor-name", "supervisor"),
        ("place", f"{_value(meta, 'city')}, {_value(meta, 'year')}", meta["city"] is None or meta["year"] is None),
    ]


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "{": r"\{", "}": r"\}", "$": r"\$", "&": r"\&", "#": r"\#",
                  "^": r"\^{}", "_": r"\_", "%": r"\%", "~": r"\textasciitilde{}"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(char, char) for char in text)


def latex_title_page(meta: dict[str, str | None]) -> str:
    """``latex_elements['maketitle']``: the title page of a MIPT thesis (page 1, its number not printed)."""
    lines = {css: (latex_escape(text), is_gap) for css, text, is_gap in title_page_lines(meta)}

    def show(css: str) -> str:
        text, is_gap = lines[css]
        return r"\fbox{\parbox{0.8\linewidth}{\centering " + text + "}}" if is_gap else text

    return "\n".join([
        r"\begingroup\thispagestyle{empty}\centering",
        r"{\small " + show("university") + r"\par}\vspace{1.5em}",
        show("faculty") + r"\par",
        show("department") + r"\par",
        r"\vspace*{\fill}",
        r"{\Large\bfseries\MakeUppercase{" + show("work-type") + r"}\par}\vspace{1em}",
        show("work-kind") + r"\par\vspace{0.5em}",
        r"{\large\bfseries " + show("title") + r"\par}",
        r"\vspace*{\fill}",
        r"\begin{flushright}\begin{minipage}{0.55\linewidth}\raggedright",
        show("student") + r"\\ " + show("student-name") + r"\\[1.5em]",
        show("supervisor") + r"\\ " + show("supervisor-degree") + r"\\ " + show("supervisor-name"),
        r"\end{minipage}\end{flushright}",
        r"\vspace*{\fill}",
        show("place") + r"\par",
        r"\endgroup\clearpage",
    ])


class title_page(nodes.General, nodes.Element):
    """The HTML front page; the PDF has its own (``maketitle``), so LaTeX skips this node."""


class TitlePageDirective(Directive):
    """``{thesis-title-page}``: the title page of ``book/meta.yml`` as the HTML front page."""

    has_content = False

    def run(self):
        env = self.state.document.settings.env
        env.note_dependency(str(META_FILE))
        try:
            meta = load_meta(env.config.thesis_meta_file)
        except (OSError, ValueError, yaml.YAMLError) as error:
            return [self.state_machine.reporter.error(f"page {env.docname}: {error}", line=self.lineno)]
        page = title_page()
        for css, text, is_gap in title_page_lines(meta):
            paragraph = nodes.paragraph(text, text, classes=[f"thesis-{css}"] + (["thesis-missing"] if is_gap else []))
            page += paragraph
        return [page]


def visit_title_page_html(self, node: title_page) -> None:
    self.body.append('<div class="thesis-title-page">')


def depart_title_page_html(self, node: title_page) -> None:
    self.body.append("</div>")


def skip(self, node) -> None:
    raise nodes.SkipNode


# --- the counts of the Реферат -------------------------------------------------------------------------

def plural(count: int, forms: tuple[str, str, str]) -> str:
    """Russian plural: 1 рисунок, 2 рисунка, 5 рисунков, 11 рисунков, 21 рисунок."""
    tens, units = count % 100, count % 10
    if units == 1 and tens != 11:
        return forms[0]
    if 2 <= units <= 4 and not 12 <= tens <= 14:
        return forms[1]
    return forms[2]


def counted(count: int, kind: str) -> str:
    return f"{count} {plural(count, FORMS[kind])}"


class thesis_counts(nodes.General, nodes.Inline, nodes.Element):
    """Placeholder for the counts sentence, filled at ``doctree-resolved`` when every page is read."""


class CountsDirective(Directive):
    """``{thesis-counts}``: «Дипломная работа содержит N страниц, N рисунков, N таблиц, N формул, N источников.»"""

    has_content = False

    def run(self):
        env = self.state.document.settings.env
        env.thesis_counts_docs = getattr(env, "thesis_counts_docs", set()) | {env.docname}
        paragraph = nodes.paragraph()
        paragraph += thesis_counts()
        return [paragraph]


def document_counts(env: BuildEnvironment) -> dict[str, int]:
    """Figures, tables and display formulas of every page in the table of contents, and cited sources."""
    counts = {"figures": 0, "tables": 0, "equations": 0}
    for docname in sorted(env.found_docs):
        doctree = env.get_doctree(docname)
        counts["figures"] += sum(1 for _ in doctree.findall(nodes.figure))
        counts["tables"] += sum(1 for _ in doctree.findall(nodes.table))
        counts["equations"] += sum(1 for _ in doctree.findall(nodes.math_block))
    try:
        domain = env.get_domain("cite")
        counts["sources"] = len({citation.key for citation in domain.citations})
    except Exception:  # sphinxcontrib-bibtex not loaded
        counts["sources"] = 0
    return counts


def pdf_page_count(app: Sphinx) -> int | None:
    """Pages of the last PDF build (from its xelatex log), or None when there is none."""
    target = Path(LATEX_TARGET).stem
    for log in (Path(app.outdir).parent / "latex" / f"{target}.log", Path(app.outdir) / f"{target}.log"):
        if log.is_file():
            found = _PDF_PAGES.findall(log.read_text(encoding="utf-8", errors="replace"))
            if found:
                return int(found[-1])
    return None


def counts_nodes(app: Sphinx, counts: dict[str, int]) -> list[nodes.Node]:
    rest = ", ".join(counted(counts[kind], kind) for kind in ("figures", "tables", "equations", "sources"))
    if app.builder.format == "latex":
        pages: nodes.Node = nodes.raw("", r"\thesispages{}", format="latex")
    else:
        known = pdf_page_count(app)
        pages = nodes.Text(counted(known, "pages") if known is not None else
                           "(число страниц — в PDF-версии, make pdf)")
    return [nodes.Text("Дипломная работа содержит "), pages, nodes.Text(f", {rest}.")]


def fill_counts(app: Sphinx, doctree: nodes.document, docname: str) -> None:
    placeholders = list(doctree.findall(thesis_counts))
    if not placeholders:
        return
    counts = document_counts(app.env)
    for node in placeholders:
        node.replace_self(counts_nodes(app, counts))


def outdated_counts(app: Sphinx, env: BuildEnvironment, added, changed, removed) -> list[str]:
    """Pages with ``{thesis-counts}`` are re-read whenever any page changed (their counts depend on all)."""
    docs = getattr(env, "thesis_counts_docs", set())
    return sorted(docs & env.found_docs) if (added or changed or removed) else []


def purge_doc(app: Sphinx, env: BuildEnvironment, docname: str) -> None:
    getattr(env, "thesis_counts_docs", set()).discard(docname)


def merge_info(app: Sphinx, env: BuildEnvironment, docnames, other: BuildEnvironment) -> None:
    env.thesis_counts_docs = getattr(env, "thesis_counts_docs", set()) | getattr(other, "thesis_counts_docs", set())


# --- LaTeX: unnumbered front and back matter, the table of contents, one bibliography --------------------

LATEX_PREAMBLE = r"""
% --- thesis_document: a Russian thesis (ГОСТ 7.32-like layout) ---
\makeatletter
\usepackage{zref-totpages}
\usepackage{caption}
\DeclareCaptionLabelSeparator{gostdash}{~— }
\captionsetup{labelsep=gostdash}
\captionsetup[figure]{justification=centering}
\captionsetup[table]{justification=raggedright,singlelinecheck=false}
\renewcommand{\py@HeaderFamily}{\normalfont\bfseries}
\titleformat{\chapter}[block]{\normalfont\large\bfseries\centering}{\thechapter}{0.7em}{}
\titlespacing*{\chapter}{0pt}{0pt}{1.5em}
% pages numbered at the bottom centre, no running heads (ГОСТ 7.32)
\fancypagestyle{normal}{\fancyhf{}\fancyfoot[C]{\thepage}\renewcommand{\headrulewidth}{0pt}\renewcommand{\footrulewidth}{0pt}}
\fancypagestyle{plain}{\fancyhf{}\fancyfoot[C]{\thepage}\renewcommand{\headrulewidth}{0pt}\renewcommand{\footrulewidth}{0pt}}
\addto\captionsrussian{\renewcommand{\contentsname}{Содержание}%
  \renewcommand{\bibname}{Список использованных источников}}
\renewcommand{\contentsname}{Содержание}
\renewcommand{\bibname}{Список использованных источников}
% 1 страницу, 2 страницы, 5 страниц, 11 страниц, 21 страницу
\newcommand{\thesisruplural}[4]{\begingroup
  \count@=#1\relax
  \@tempcnta=\count@ \divide\@tempcnta 100 \multiply\@tempcnta 100 \advance\count@ -\@tempcnta
  \@tempcntb=\count@ \divide\@tempcntb 10 \multiply\@tempcntb 10
  \@tempcnta=\count@ \advance\@tempcnta -\@tempcntb
  \ifnum\count@>10 \ifnum\count@<15 \@tempcnta=0 \fi\fi
  \ifnum\@tempcnta=1 \def\thesis@form{#2}\else
    \ifnum\@tempcnta=0 \def\thesis@form{#4}\else
      \ifnum\@tempcnta>4 \def\thesis@form{#4}\else \def\thesis@form{#3}\fi\fi\fi
  \expandafter\endgroup\thesis@form}
\newcommand{\thesispages}{\ztotpages~\thesisruplural{\ztotpages}{страницу}{страницы}{страниц}}
\newcommand{\thesistableofcontents}{\clearpage\begingroup\parskip\z@skip\tableofcontents\endgroup\clearpage}
\makeatother
"""


def _secnumdepth(numbered: bool) -> nodes.raw:
    return nodes.raw("", "\\setcounter{secnumdepth}{%d}\n" % (2 if numbered else -1), format="latex")


def _bibliography_docs(env: BuildEnvironment) -> set[str]:
    try:
        return {key.docname for key in env.get_domain("cite").bibliographies}
    except Exception:
        return set()


def restructure_latex(app: Sphinx, doctree: nodes.document, docname: str) -> None:
    """The assembled LaTeX tree: unnumbered chapters for unnumbered toc parts, the TOC after the first
    front-matter page (the Реферат), the bibliography moved from the end to its own page."""
    if app.builder.format != "latex":
        return
    env = app.env
    files = list(doctree.findall(addnodes.start_of_file))
    for node in files:
        node.insert(0, _secnumdepth(bool(env.toc_secnumbers.get(node["docname"]))))
    toc_after = app.config.thesis_toc_after
    for index, node in enumerate(files):
        if node["docname"] == toc_after and index + 1 < len(files):
            files[index + 1].insert(0, nodes.raw("", "\\thesistableofcontents\n", format="latex"))
            break
    else:
        if files:
            files[0].insert(0, nodes.raw("", "\\thesistableofcontents\n", format="latex"))
    bibliographies = list(doctree.findall(thebibliography))
    homes = [node for node in files if node["docname"] in _bibliography_docs(env)]
    if bibliographies and homes:
        home, bib = homes[0], bibliographies[0]
        labels = [ident for section in home.findall(nodes.section) for ident in section["ids"]]
        bib.parent.remove(bib)
        anchors = "".join("\\label{\\detokenize{%s:%s}}" % (home["docname"], ident) for ident in labels)
        home.children = []
        home += nodes.raw("", "\\clearpage\\phantomsection%s\n" % anchors, format="latex")
        home += bib


# --- HTML: «Рисунок N — подпись», offline MathJax -------------------------------------------------------

class ThesisHTMLTranslator(HTML5Translator):
    """Captions «Рисунок 1 — …», «Таблица 1 — …» (ГОСТ 7.32): a dash after the number of a caption."""

    def add_fignumber(self, node) -> None:
        before = len(self.body)
        super().add_fignumber(node)
        if len(self.body) - before == 3 and self.body[-1] == "</span>":  # '<span>', 'Рисунок 1 ', '</span>'
            self.body[-2] = self.body[-2].rstrip() + " — "


def find_mathjax(config: Config) -> Path | None:
    """A local MathJax 2 folder (containing MathJax.js), or None."""
    candidates = [os.environ.get("THESISLIB_MATHJAX_DIR", ""), config.thesis_mathjax_dir, *MATHJAX_CANDIDATES]
    for candidate in candidates:
        if candidate and (Path(candidate) / "MathJax.js").is_file():
            return Path(candidate)
    return None


def copy_mathjax(source: Path, target: Path) -> None:
    """Copy the parts of MathJax 2 that TeX input and CommonHTML output need (:data:`MATHJAX_PARTS`)."""
    for part in MATHJAX_PARTS:
        origin, destination = source / part, target / part
        if origin.is_dir():
            shutil.copytree(origin, destination, dirs_exist_ok=True)
        elif origin.is_file():
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(origin, destination)
        else:
            raise FileNotFoundError(f"MathJax at {source} lacks {part}: reinstall it (apt-get install libjs-mathjax)")


def install_mathjax(app: Sphinx) -> None:
    if app.builder.format != "html" or not app.config.thesis_offline_mathjax:
        return
    source = find_mathjax(app.config)
    if source is None:
        logger.warning("no local MathJax 2 (looked in %s): formulas would be fetched from a CDN and stay raw LaTeX "
                       "offline; install it with `apt-get install libjs-mathjax` (make mathjax) or set "
                       "THESISLIB_MATHJAX_DIR", ", ".join(MATHJAX_CANDIDATES), type="thesis", subtype="mathjax")
        return
    copy_mathjax(source, Path(app.outdir) / "_static" / "mathjax")


# --- notebooks: open with their title -------------------------------------------------------------------

HIDDEN_TAGS = ("parameters", "injected-parameters")


def hide_parameter_cells(app: Sphinx, docname: str, source: list[str]) -> None:
    """The parameters cells of an executed notebook are bookkeeping: tag them ``remove-cell``."""
    if not str(app.env.doc2path(docname)).endswith(".ipynb"):
        return
    try:
        notebook = json.loads(source[0])
    except ValueError:
        return
    changed = False
    for cell in notebook.get("cells", []):
        tags = cell.setdefault("metadata", {}).setdefault("tags", [])
        if any(tag in tags for tag in HIDDEN_TAGS) and "remove-cell" not in tags:
            tags.append("remove-cell")
            changed = True
    if changed:
        source[0] = json.dumps(notebook, ensure_ascii=False)


# --- bad input: citation keys --------------------------------------------------------------------------

def check_citation_keys(app: Sphinx, env: BuildEnvironment) -> None:
    """Every ``{cite}`` key must be in the bibliography files: an error names the page, the key and the file."""
    try:
        domain = env.get_domain("cite")
        known = set(domain.bibdata.data.entries)
    except Exception:
        return
    files = ", ".join(os.path.relpath(f, env.srcdir) for f in domain.bibdata.bibfiles)
    for citation_ref in domain.citation_refs:
        for target in citation_ref.targets:
            if target.key not in known:
                close = difflib.get_close_matches(target.key, known, n=3)
                hint = f" (did you mean {', '.join(close)}?)" if close else ""
                logger.error("page %s: bibliography key %r is not in %s%s; add the entry there or fix the key",
                             citation_ref.docname, target.key, files, hint,
                             location=(citation_ref.docname, citation_ref.line))


# --- configuration -------------------------------------------------------------------------------------

def configure(app: Sphinx, config: Config) -> None:
    """Title and author from ``book/meta.yml``; numbering, captions, bibliography style, LaTeX layout, MathJax."""
    meta = load_meta(config.thesis_meta_file)
    title, author = meta["title"] or gap("title"), meta["student"] or gap("student")
    config.project, config.author, config.html_title = title, author, title
    set_latex_documents(config, title, author)
    config.thesis_title_author = (title, author)
    config.myst_substitutions = {**getattr(config, "myst_substitutions", {}),
                                 "thesis_title": title, "thesis_author": author}
    config.numfig = True
    config.numfig_secnum_depth = 0  # figures, tables and formulas numbered through the whole work
    config.numfig_format = {**config.numfig_format, "figure": "Рисунок %s", "table": "Таблица %s",
                            "code-block": "Листинг %s", "section": "раздел %s"}
    config.html_secnumber_suffix = " "  # «1.1 Обзор литературы», not «1.1. …»
    config.bibtex_default_style = gost_style.STYLE_NAME
    config.bibtex_reference_style = "label"
    elements = dict(config.latex_elements)
    elements.update({
        "papersize": "a4paper", "pointsize": "12pt", "fncychap": "", "extraclassoptions": "oneside,openany",
        "sphinxsetup": "hmargin={30mm,15mm}, vmargin={20mm,20mm}, TitleColor={rgb}{0,0,0}",
        "maketitle": latex_title_page(meta), "tableofcontents": "",
        "preamble": elements.get("preamble", "") + LATEX_PREAMBLE,
    })
    config.latex_elements = elements
    if config.thesis_offline_mathjax and find_mathjax(config) is not None:
        config.mathjax_path = "mathjax/MathJax.js"
        config.mathjax2_config = MATHJAX2_CONFIG
        config.mathjax3_config = None
        config.myst_update_mathjax = False  # MathJax 2 takes its classes from MATHJAX2_CONFIG
    if str(STATIC_DIR) not in config.html_static_path:
        config.html_static_path = [*config.html_static_path, str(STATIC_DIR)]
    missing = missing_fields(meta)
    if missing:
        logger.info("[thesis] title page: empty fields in %s: %s", config.thesis_meta_file, ", ".join(missing))


def set_latex_documents(config: Config, title: str, author: str) -> None:
    config.latex_documents = [(config.root_doc, LATEX_TARGET, title, author, "manual")]


def reset_latex_documents(app: Sphinx, env: BuildEnvironment, docnames: list[str]) -> None:
    """Jupyter Book rewrites ``latex_documents`` with its own title after Sphinx starts: take meta.yml's back."""
    set_latex_documents(app.config, *app.config.thesis_title_author)


def compile_catalogs(source: Path, target: Path) -> Path:
    """Compile ``source/<lang>/LC_MESSAGES/*.po`` into ``.mo`` files under ``target`` (Babel, a Sphinx dependency)."""
    from babel.messages.mofile import write_mo
    from babel.messages.pofile import read_po

    for po in source.glob("*/LC_MESSAGES/*.po"):
        mo = target / po.relative_to(source).with_suffix(".mo")
        mo.parent.mkdir(parents=True, exist_ok=True)
        with po.open("rb") as file:
            catalog = read_po(file)
        with mo.open("wb") as file:
            write_mo(file, catalog)
    return target


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_config_value("thesis_meta_file", str(META_FILE), "env")
    app.add_config_value("thesis_toc_after", "book/abstract", "env")
    app.add_config_value("thesis_mathjax_dir", "", "env")
    app.add_config_value("thesis_offline_mathjax", True, "env")
    app.add_config_value("thesis_title_author", ("", ""), "env")
    app.connect("env-before-read-docs", reset_latex_documents)
    app.connect("config-inited", configure, priority=900)
    app.add_node(title_page, html=(visit_title_page_html, depart_title_page_html), latex=(skip, None),
                 text=(skip, None), man=(skip, None), texinfo=(skip, None))
    app.add_node(thesis_counts, html=(skip, None), latex=(skip, None), text=(skip, None))
    app.add_directive("thesis-title-page", TitlePageDirective)
    app.add_directive("thesis-counts", CountsDirective)
    app.connect("doctree-resolved", fill_counts)
    app.connect("doctree-resolved", restructure_latex)
    app.connect("env-get-outdated", outdated_counts)
    app.connect("env-purge-doc", purge_doc)
    app.connect("env-merge-info", merge_info)
    app.connect("env-check-consistency", check_citation_keys)
    app.connect("builder-inited", install_mathjax)
    app.connect("source-read", hide_parameter_cells)
    app.set_translator("html", ThesisHTMLTranslator)
    app.add_css_file("thesis.css")
    app.add_message_catalog("sphinx", str(compile_catalogs(LOCALE_SOURCE, Path(app.doctreedir) / "thesis_locale")))
    return {"version": "0.1", "parallel_read_safe": True, "parallel_write_safe": True}
