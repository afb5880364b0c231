"""book/_ext/thesis_document.py, gost_style.py, bookcheck.py and the {result-table} options: the book as a
Russian thesis document (issue 14)."""

import importlib
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXT_DIR = ROOT / "book" / "_ext"
sys.path.insert(0, str(EXT_DIR))
document = importlib.import_module("thesis_document")
gost_style = importlib.import_module("gost_style")
bookcheck = importlib.import_module("bookcheck")
thesis_results = importlib.import_module("thesis_results")

META = {key: f"значение {key}" for key in document.FIELDS}


def write_meta(path: Path, **changes) -> Path:
    import yaml

    path.write_text(yaml.safe_dump({**META, **changes}, allow_unicode=True), encoding="utf-8")
    return path


def sphinx_build(src: Path, out: Path, builder: str = "html", extensions=("thesis_document",), fresh=True,
                 extra_conf: str = "") -> str:
    from sphinx.application import Sphinx
    from sphinx.util.docutils import docutils_namespace

    (src / "conf.py").write_text(
        f"import sys\nsys.path.insert(0, {str(EXT_DIR)!r})\nextensions = {list(extensions)!r}\n"
        f"language = 'ru'\nthesis_meta_file = {str(src / 'meta.yml')!r}\nthesis_offline_mathjax = False\n"
        + extra_conf, encoding="utf-8")
    warnings = io.StringIO()
    with docutils_namespace():
        app = Sphinx(str(src), str(src), str(out / builder), str(out / "doctrees"), builder,
                     status=None, warning=warnings, freshenv=fresh)
        app.build()
    return warnings.getvalue()


PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082")
FIGURE = ".. figure:: dot.png\n\n   Точка {n}.\n\n"
INDEX = """Реферат
=======

.. thesis-counts::

.. toctree::
   :numbered:

   body
"""
BODY = """Тело
====

{figures}
.. table:: Таблица

   ===  ===
   a    b
   ===  ===
   1    2
   ===  ===

.. math::

   x = 1
"""


# --- counts ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("count, text", [
    (1, "1 страницу"), (2, "2 страницы"), (5, "5 страниц"), (11, "11 страниц"), (12, "12 страниц"),
    (21, "21 страницу"), (104, "104 страницы"), (111, "111 страниц"), (0, "0 страниц"),
])
def test_russian_plural(count, text):
    assert document.counted(count, "pages") == text


def test_counts_change_when_a_figure_is_added(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    write_meta(src / "meta.yml")
    (src / "dot.png").write_bytes(PNG)
    (src / "index.rst").write_text(INDEX, encoding="utf-8")
    (src / "body.rst").write_text(BODY.format(figures=FIGURE.format(n=1)), encoding="utf-8")
    warnings = sphinx_build(src, tmp_path / "out")
    assert "ERROR" not in warnings, warnings
    html = (tmp_path / "out" / "html" / "index.html").read_text(encoding="utf-8")
    assert "1 рисунок, 1 таблицу, 1 формулу, 0 использованных источников" in html
    assert "число страниц — в PDF-версии" in html  # no PDF built: no invented page count
    (src / "body.rst").write_text(BODY.format(figures=FIGURE.format(n=1) + FIGURE.format(n=2)), encoding="utf-8")
    sphinx_build(src, tmp_path / "out", fresh=False)  # incremental: the Реферат page is re-read too
    html = (tmp_path / "out" / "html" / "index.html").read_text(encoding="utf-8")
    assert "2 рисунка, 1 таблицу, 1 формулу" in html
    body = (tmp_path / "out" / "html" / "body.html").read_text(encoding="utf-8")
    assert "Рисунок 2 — </span>" in body and "Таблица 1 — </span>" in body  # «Рисунок N —» captions
    latex_dir = tmp_path / "out" / "html"
    (latex_dir.parent / "latex").mkdir()
    (latex_dir.parent / "latex" / "thesis.log").write_text("Output written on thesis.pdf (37 pages).\n")
    (src / "index.rst").write_text(INDEX + "\n", encoding="utf-8")
    sphinx_build(src, tmp_path / "out", fresh=False)
    html = (tmp_path / "out" / "html" / "index.html").read_text(encoding="utf-8")
    assert "содержит 37 страниц, 2 рисунка" in html  # the page count of the last PDF build


# --- title page -----------------------------------------------------------------------------------------

def test_meta_needs_every_field_and_names_the_keys(tmp_path):
    import yaml

    data = dict(META)
    del data["city"]
    data["town"] = "x"
    (tmp_path / "meta.yml").write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    with pytest.raises(ValueError, match=r"unknown key\(s\) town.*missing key\(s\) city.*key: null"):
        document.load_meta(tmp_path / "meta.yml")
    with pytest.raises(FileNotFoundError, match="create it with the keys university"):
        document.load_meta(tmp_path / "absent.yml")


def test_the_repository_meta_comes_from_the_plan_and_shows_its_gaps():
    meta = document.load_meta()
    assert meta["title"] == "Непрерывные представления для акселерации глубоких нейронных сетей"
    assert meta["student_group"] == "М05-216б" and meta["supervisor_degree"] == "кандидат технических наук"
    for key in document.missing_fields(meta):  # fields the plan does not give are gaps, never invented
        assert document.latex_escape(document.gap(key)) in document.latex_title_page(meta)


def test_title_page_in_html_and_latex_from_one_block(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    write_meta(src / "meta.yml", city=None)
    (src / "index.rst").write_text("Титул\n=====\n\n.. thesis-title-page::\n", encoding="utf-8")
    warnings = sphinx_build(src, tmp_path / "out")
    assert "ERROR" not in warnings, warnings
    html = (tmp_path / "out" / "html" / "index.html").read_text(encoding="utf-8")
    for key in ("university", "faculty", "department", "title", "student", "supervisor", "year"):
        assert META[key] in html
    assert 'class="thesis-place thesis-missing"' in html and document.gap("city") in html
    assert "значение title</title>" in html  # the project name comes from the block too
    sphinx_build(src, tmp_path / "out", builder="latex")
    tex = (tmp_path / "out" / "latex" / "thesis.tex").read_text(encoding="utf-8")
    escape = document.latex_escape
    assert escape(META["supervisor_degree"]) in tex and r"\fbox{\parbox" in tex and escape(document.gap("city")) in tex
    assert r"\title{значение title}" in tex and "thesis-title-page" not in tex


# --- bibliography ---------------------------------------------------------------------------------------

def entry(text: str):
    from pybtex.database import parse_string

    return next(iter(parse_string(text, "bibtex").entries.values()))


def test_gost_style_few_authors_lead_many_follow_the_title():
    style = gost_style.GostStyle()
    few = entry("@inproceedings{a, author={Dong, Xin and Pan, Sinno Jialin}, title={Learning {OBS}},"
                " booktitle={NIPS}, year={2017}, eprint={1705.07565}, archiveprefix={arXiv}, primaryclass={cs.NE}}")
    assert style.format_text(few).render_as("text") == \
        "Dong X., Pan S. J. Learning OBS // NIPS. 2017. arXiv: 1705.07565 [cs.NE]."
    many = entry("@article{b, author={A, Bob and C, Dan and E, Fay and G, Hal}, title={Title}, journal={J},"
                 " year={2023}, volume={15}, number={12}, pages={10--21}, doi={10.1/x}}")
    assert style.format_text(many).render_as("text") == \
        "Title / B. A, D. C, F. E [et al.] // J. 2023. Vol. 15, no. 12. P. 10–21. DOI: 10.1/x."
    russian = entry("@article{c, author={Котельников, Владимир Александрович and Б, А and В, Г and Д, Е},"
                    " title={О пропускной способности}, journal={Ж}, year={1933}, pages={1--2}}")
    assert style.format_text(russian).render_as("text") == \
        "О пропускной способности / В. А. Котельников, А. Б, Г. В [и др.] // Ж. 1933. С. 1–2."
    with pytest.raises(ValueError, match="no title"):
        style.format_text(entry("@misc{d, author={X, Y}, year={2000}}"))


BIB = "@misc{known2020, author={Known, Ann}, title={A Known Work}, year={2020}}\n"


def test_citations_are_numbered_and_a_missing_key_names_page_key_and_file(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    write_meta(src / "meta.yml")
    (src / "refs.bib").write_text(BIB, encoding="utf-8")
    (src / "index.rst").write_text("Тело\n====\n\nСм. :cite:`known2020` и :cite:`knwon2020`.\n\n"
                                   ".. bibliography::\n", encoding="utf-8")
    warnings = sphinx_build(src, tmp_path / "out", extensions=("sphinxcontrib.bibtex", "thesis_document"),
                            extra_conf="bibtex_bibfiles = ['refs.bib']\nbibtex_default_style = 'gost'\n"
                                       "bibtex_reference_style = 'label'\n")
    assert "page index: bibliography key 'knwon2020' is not in refs.bib" in warnings
    assert "did you mean known2020" in warnings
    html = (tmp_path / "out" / "html" / "index.html").read_text(encoding="utf-8")
    assert "Known A. A Known Work. 2020." in html
    assert re.search(r'title="Known A\. A Known Work\. 2020\.">1</a>\]', html)  # [1], not author-year


# --- notebooks ------------------------------------------------------------------------------------------

def test_parameter_cells_are_removed_so_a_notebook_opens_with_its_title():
    class Env:
        def doc2path(self, docname):
            return f"/book/{docname}.ipynb"

    class App:
        env = Env()

    cells = [{"cell_type": "code", "metadata": {"tags": ["parameters"]}, "source": "scale = 'cpu'"},
             {"cell_type": "code", "metadata": {"tags": ["injected-parameters"]}, "source": "scale = 'smoke'"},
             {"cell_type": "markdown", "metadata": {}, "source": "# Заголовок"}]
    source = [json.dumps({"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5})]
    document.hide_parameter_cells(App(), "nb", source)
    tags = [cell["metadata"].get("tags", []) for cell in json.loads(source[0])["cells"]]
    assert "remove-cell" in tags[0] and "remove-cell" in tags[1] and "remove-cell" not in tags[2]


# --- tables ---------------------------------------------------------------------------------------------

def test_result_table_formats_percentages_decimals_and_russian_headers():
    rows = [["method", "ratio", "accuracy", "psnr"], ["l1", "0.5", "0.8402", "28.2712"]]
    shown = thesis_results.format_table(rows, percent=["accuracy"], decimals={"psnr": 2},
                                        headers=["метод", "доля каналов", "точность, %", "PSNR, дБ"])
    assert shown == [["метод", "доля каналов", "точность, %", "PSNR, дБ"], ["l1", "0,5", "84,0", "28,27"]]
    with pytest.raises(ValueError, match=r"no column 'acc' \(the columns are method, ratio, accuracy, psnr\)"):
        thesis_results.format_table(rows, percent=["acc"])
    with pytest.raises(ValueError, match="gives 1 names for 4 columns"):
        thesis_results.format_table(rows, headers=["метод"])


# --- the reader's check ---------------------------------------------------------------------------------

def test_static_check_finds_broken_links_missing_images_errors_and_english(tmp_path):
    (tmp_path / "other.html").write_text('<html><body><article><h1 id="top">x</h1></article></body></html>')
    (tmp_path / "dot.png").write_bytes(PNG)
    good = ('<html><body><nav>Наверх</nav><article><a href="other.html#top">ok</a><img src="dot.png">'
            '<a href="https://example.org">ext</a></article></body></html>')
    (tmp_path / "index.html").write_text(good)
    assert bookcheck.static_check(tmp_path) == []
    bad = ('<html><body><nav>Back to top</nav><article><a href="missing.html">a</a><a href="other.html#nope">b</a>'
           '<img src="gone.png"><span class="problematic">{result}</span></article></body></html>')
    (tmp_path / "index.html").write_text(bad)
    problems = "\n".join(bookcheck.static_check(tmp_path))
    assert "broken link 'missing.html'" in problems and "no id 'nope'" in problems
    assert "missing image 'gone.png'" in problems and "build error is rendered" in problems
    assert "untranslated interface string 'Back to top'" in problems


# --- the real book as LaTeX source (no compile) -----------------------------------------------------------

def test_the_book_builds_as_latex_source_with_the_thesis_structure(tmp_path):
    executed = sorted(p for p in (ROOT / "book" / "experiments").glob("*.ipynb") if not p.name.startswith("."))
    if not executed:
        pytest.skip("no executed notebooks in book/experiments: run `make book-smoke` (make test does) first")
    from thesislib.results import result_path

    scale = "smoke" if all(result_path(nb.stem, "smoke").is_file() for nb in executed) else "cpu"
    env = dict(os.environ, THESISLIB_BOOK_SCALE=scale)
    command = [str(Path(sys.executable).parent / "jupyter-book"), "build", str(ROOT), "--builder", "latex",
               "--path-output", str(tmp_path), "-W", "--keep-going"]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    tex = (tmp_path / "_build" / "latex" / "thesis.tex").read_text(encoding="utf-8")
    meta = document.load_meta()
    assert document.latex_escape(meta["faculty"]) in tex and r"\thesispages{}" in tex
    position = tex.index

    def chapter(title):
        return position("\\chapter{" + title + "}")

    for unnumbered in ("Реферат", "Введение", "Приложения"):
        assert tex.rfind("\\setcounter{secnumdepth}", 0, chapter(unnumbered)) == \
            tex.rfind("\\setcounter{secnumdepth}{-1}", 0, chapter(unnumbered))
    assert tex.rfind("\\setcounter{secnumdepth}{2}", 0, chapter("Теоретическая часть")) > chapter("Введение")
    assert chapter("Реферат") < position("\\thesistableofcontents\n") < chapter("Введение")
    assert tex.count("\\begin{sphinxthebibliography}") == 1 and "\\chapter{Список использованных источников}" not in tex
    assert position("\\begin{sphinxthebibliography}") < chapter("Приложения")
    assert "Литература" not in tex and "\\captionsetup{labelsep=gostdash}" in tex  # «Рисунок N — …»
    messages = (tmp_path / "_build" / "latex" / "sphinxmessages.sty").read_text(encoding="utf-8")
    assert "{\\figurename}{Рисунок }" in messages and "{\\tablename}{Таблица }" in messages
