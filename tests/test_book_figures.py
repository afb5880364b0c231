"""Issue 14 (part B): interactive figures (plotting.to_plotly, Run.figure, {result-figure} :interactive:),
result tables with Russian headers, the {compare} and {version} roles of book/_ext/thesis_results.py."""

import importlib
import io
import json
import sys
from importlib import metadata
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from thesislib import plotting  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
EXT_DIR = ROOT / "book" / "_ext"
sys.path.insert(0, str(EXT_DIR))
thesis_results = importlib.import_module("thesis_results")


def sweep_figure():
    fig, axes = plotting.figure(2)
    x = {"l1": [1.0, 0.5, 0.25], "obs": [1.0, 0.5, 0.25]}
    y = {"l1": [90.0, 20.0, 10.0], "obs": [90.0, 70.0, 40.0]}
    plotting.plot_methods(axes[0], x, y)
    plotting.finish(axes[0], "ratio", "accuracy", title="без дообучения")
    plotting.plot_methods(axes[1], x, y)
    axes[1].axhline(95.0, color="gray", linestyle="--", label="исходная")
    plotting.finish(axes[1], "macs", "")
    return fig


# --- plotting.to_plotly ----------------------------------------------------------------------------------

def test_plotly_copy_has_the_methods_values_russian_labels_and_one_legend_entry_per_method():
    fig = sweep_figure()
    out = plotting.to_plotly(fig)
    plt.close(fig)
    traces = [t for t in out.data if t.name]
    assert [t.name for t in traces] == ["L1-норма", "OBS", "L1-норма", "OBS"]
    assert [t.showlegend for t in traces] == [True, True, False, False]  # one legend entry per method
    assert list(traces[1].y) == [90.0, 70.0, 40.0] and list(traces[1].x) == [1.0, 0.5, 0.25]
    assert traces[1].line.color == plotting.method_style("obs")["color"]
    # hover: method, x (width), y (value) with the Russian axis names; the shared y label of the row
    assert traces[0].hovertemplate.startswith("<b>L1-норма</b><br>доля каналов: %{x")
    assert "точность, %: %{y" in traces[2].hovertemplate and "MACs, доля от исходной: %{x" in traces[2].hovertemplate
    assert out.layout.xaxis.title.text == "доля каналов" and out.layout.yaxis.title.text == "точность, %"
    assert [a.text for a in out.layout.annotations if a.text] == ["без дообучения", "исходная"]
    assert any(shape.y0 == 95.0 for shape in out.layout.shapes)  # the reference line


def test_images_and_empty_figures_have_no_plotly_copy():
    fig, ax = plotting.figure()
    plotting.plot_confusion([[1.0, 0.0], [0.2, 0.8]], ["a", "b"], ax=ax)
    assert plotting.to_plotly(fig) is None
    fig2, _ = plotting.figure()
    assert plotting.to_plotly(fig2) is None
    plt.close("all")


def test_run_figure_writes_the_plotly_copy_beside_the_png_and_removes_a_stale_one(tmp_path, monkeypatch):
    from thesislib import results

    monkeypatch.setenv("THESISLIB_RESULTS", str(tmp_path))
    run = results.Run("baselines", "smoke")
    fig = sweep_figure()
    png = run.figure(fig, "sweep")
    spec = results.interactive_path(png)
    assert spec == tmp_path / "baselines" / "smoke" / "sweep.plotly.json"
    assert json.loads(spec.read_text(encoding="utf-8"))["data"][0]["name"] == "L1-норма"
    run.figure(fig, "sweep", interactive=False)
    assert png.is_file() and not spec.exists()  # no stale interactive copy of an older figure
    image, ax = plotting.figure()
    ax.imshow([[0.0, 1.0]])
    with pytest.raises(ValueError, match="no curves to make interactive"):
        run.figure(image, "matrix", interactive=True)
    plt.close("all")


# --- {result-figure} :interactive: -----------------------------------------------------------------------

def build(src: Path, out: Path, builder: str, page: str) -> str:
    from sphinx.application import Sphinx
    from sphinx.util.docutils import docutils_namespace

    (src / "conf.py").write_text(f"import sys\nsys.path.insert(0, {str(EXT_DIR)!r})\n"
                                 "extensions = ['thesis_results']\nlanguage = 'ru'\nnumfig = True\n"
                                 "latex_documents = [('index', 'book.tex', 'Книга', 'Автор', 'manual')]\n",
                                 encoding="utf-8")
    (src / "index.rst").write_text("Тело\n====\n\n" + page, encoding="utf-8")
    warnings = io.StringIO()
    with docutils_namespace():
        app = Sphinx(str(src), str(src), str(out / builder), str(out / "doctrees"), builder,
                     status=None, warning=warnings, freshenv=True)
        app.build()
    return warnings.getvalue()


FIGURE_PAGE = ".. result-figure:: baselines/sweep\n   :interactive:\n   :name: fig-sweep\n\n   Кривые.\n"


def test_interactive_figure_is_plotly_in_html_and_the_png_in_latex(tmp_path, monkeypatch):
    from thesislib import results

    results_dir = tmp_path / "src" / "results"
    monkeypatch.setenv("THESISLIB_RESULTS", str(results_dir))
    monkeypatch.setenv("THESISLIB_BOOK_SCALE", "smoke")
    (tmp_path / "src").mkdir()
    results.Run("baselines", "smoke").figure(sweep_figure(), "sweep")
    plt.close("all")
    warnings = build(tmp_path / "src", tmp_path / "out", "html", FIGURE_PAGE)
    assert "ERROR" not in warnings and "WARNING" not in warnings, warnings
    html = (tmp_path / "out" / "html" / "index.html").read_text(encoding="utf-8")
    assert 'class="plotly-graph-div' in html and 'id="plotly-baselines-sweep"' in html
    assert '"name":"L1-\\u043d\\u043e\\u0440\\u043c\\u0430"' in html  # the method («L1-норма»), JSON-escaped
    assert '<script src="_static/plotly.min.js' in html and "cdn.plot.ly" not in html  # served offline
    assert (tmp_path / "out" / "html" / "_static" / "plotly.min.js").stat().st_size > 1_000_000
    assert "thesis-plotly" in html and "sweep.png" in html  # the PNG stays as the fallback, hidden by CSS
    warnings = build(tmp_path / "src", tmp_path / "out", "latex", FIGURE_PAGE)
    assert "ERROR" not in warnings, warnings
    tex = (tmp_path / "out" / "latex" / "book.tex").read_text(encoding="utf-8")
    assert "\\sphinxincludegraphics{{sweep}.png}" in tex and "plotly" not in tex.lower()


def test_interactive_figure_without_its_plotly_copy_names_the_file_and_the_notebook(tmp_path, monkeypatch):
    from thesislib import results

    results_dir = tmp_path / "src" / "results"
    monkeypatch.setenv("THESISLIB_RESULTS", str(results_dir))
    monkeypatch.setenv("THESISLIB_BOOK_SCALE", "smoke")
    (tmp_path / "src").mkdir()
    results.Run("baselines", "smoke").figure(sweep_figure(), "sweep", interactive=False)
    plt.close("all")
    warnings = build(tmp_path / "src", tmp_path / "out", "html", FIGURE_PAGE)
    assert "sweep.plotly.json does not exist" in warnings and "--only baselines" in warnings
    assert "page index" in warnings


# --- tables -----------------------------------------------------------------------------------------------

def test_ratio_columns_get_russian_headers_whatever_the_scale():
    rows = [["method", "1", "0.75", "r0_5", "шагов"], ["obs", "89.31", "51.45", "14.55", "60"]]
    shown = thesis_results.format_table(rows, decimals={"*": 1}, rename=thesis_results.COLUMN_NAMES,
                                        ratio_headers=True, methods=["method"])
    assert shown == [["метод", "r = 1", "r = 0,75", "r = 0,5", "шагов"], ["OBS", "89,3", "51,5", "14,6", "60,0"]]
    assert thesis_results.ratio_header("1.5") is None and thesis_results.ratio_header("шагов") is None
    sr = [["method", "ratio", "psnr", "macs"], ["l1", "0.5", "28.2712", "2033713152"]]
    assert thesis_results.format_table(sr, decimals={"psnr": 2}, mega=["macs"], rename=thesis_results.COLUMN_NAMES,
                                       ratio_headers=True)[1] == ["l1", "0,5", "28,27", "2033,7"]
    with pytest.raises(ValueError, match="no column 'method2'"):
        thesis_results.format_table(rows, methods=["method2"])
    with pytest.raises(ValueError, match="expected `column=Russian name`"):
        thesis_results._rename_option("method")


# --- {compare} and {version} ------------------------------------------------------------------------------

def claims_page(results_dir: Path, accuracy_obs: float, accuracy_l1: float) -> None:
    path = results_dir / "baselines" / "smoke.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"results": {"accuracy": {"obs": {"r0_5": accuracy_obs},
                                                         "l1": {"r0_5": accuracy_l1}}}}), encoding="utf-8")


CLAIMS = ("OBS {compare}`baselines:results.accuracy.obs.r0_5 ? results.accuracy.l1.r0_5|точнее|хуже|так же точен`,"
          " чем L1{compare}`baselines:results.accuracy.obs.r0_5 > baselines:results.accuracy.l1.r0_5`.\n\n"
          "PyTorch {version}`torch`.\n")


def test_compare_renders_the_true_word_and_a_claim_that_turned_false_fails_the_build(tmp_path, monkeypatch):
    results_dir = tmp_path / "results"
    monkeypatch.setenv("THESISLIB_RESULTS", str(results_dir))
    monkeypatch.setenv("THESISLIB_BOOK_SCALE", "smoke")
    (tmp_path / "src").mkdir()
    page = CLAIMS.replace("L1{compare}", "L1\\ {compare}")  # reST: a role glued to a word needs "\\ "
    page = page.replace("{compare}", ":compare:").replace("{version}", ":version:")
    claims_page(results_dir, 0.8, 0.2)
    warnings = build(tmp_path / "src", tmp_path / "out", "html", page)
    assert "ERROR" not in warnings, warnings
    html = (tmp_path / "out" / "html" / "index.html").read_text(encoding="utf-8")
    assert "OBS точнее, чем L1." in html
    assert metadata.version("torch") in html  # the installed version, not a typed one
    claims_page(results_dir, 0.1, 0.2)  # the same sentence at another scale: the word follows the numbers
    warnings = build(tmp_path / "src", tmp_path / "out", "html", page)
    html = (tmp_path / "out" / "html" / "index.html").read_text(encoding="utf-8")
    assert "OBS хуже" in html
    assert "the claim 'baselines:results.accuracy.obs.r0_5 > baselines:results.accuracy.l1.r0_5' no longer " \
           "holds at scale smoke" in warnings and "= 0.1" in warnings and "page index" in warnings


def test_compare_and_version_reject_bad_input_clearly(tmp_path, monkeypatch):
    results_dir = tmp_path / "results"
    monkeypatch.setenv("THESISLIB_RESULTS", str(results_dir))
    monkeypatch.setenv("THESISLIB_BOOK_SCALE", "smoke")
    claims_page(results_dir, 0.8, 0.2)
    with pytest.raises(ValueError, match="expected `notebook:key OP notebook:key`"):
        thesis_results.evaluate_comparison("baselines:results.accuracy.obs.r0_5")
    with pytest.raises(ValueError, match="no key 'r9' .*--only baselines"):
        thesis_results.evaluate_comparison("baselines:results.accuracy.obs.r9 > 0.5")
    with pytest.raises(ValueError, match="not a number"):
        thesis_results.evaluate_comparison("baselines:results.accuracy > 0.5")
    assert thesis_results.evaluate_comparison("baselines:results.accuracy.obs.r0_5 >= 0,8")[1:3] == (0.8, 0.8)
    with pytest.raises(ValueError, match="'no-such-package-xyz' is not installed"):
        thesis_results.installed_version("no-such-package-xyz")


def test_option_items_with_commas_are_separated_by_semicolons():
    assert thesis_results._names("точность, %; задержка, мс") == ["точность, %", "задержка, мс"]
    assert thesis_results._names("a, b") == ["a", "b"]
    assert thesis_results._decimals_option("задержка, мс=1;") == {"задержка, мс": 1}
    assert thesis_results._rename_option("точность=точность, %; наивно=наивно, %") == {
        "точность": "точность, %", "наивно": "наивно, %"}
