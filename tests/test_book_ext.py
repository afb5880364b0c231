"""book/_ext/thesis_results.py: numbers quoted in the book come from results/ and are formatted exactly."""

import importlib.util
import io
import json
from pathlib import Path

import pytest

spec = importlib.util.spec_from_file_location(
    "thesis_results", Path(__file__).resolve().parent.parent / "book" / "_ext" / "thesis_results.py")
ext = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ext)


def test_lookup_follows_dicts_and_list_indices():
    record = {"results": {"curve": [{"acc": 0.5}, {"acc": 0.75}]}}
    assert ext.lookup(record, "results.curve.1.acc") == 0.75
    with pytest.raises(KeyError, match="missing"):
        ext.lookup(record, "results.missing")
    with pytest.raises(IndexError):
        ext.lookup(record, "results.curve.5")
    with pytest.raises(KeyError, match="is a value"):
        ext.lookup(record, "results.curve.0.acc.deeper")


def test_lookup_splits_keys_on_dots_only():
    record = {"budgets": {"r0_5": {"uniform": 0.25}, "0": {"x": 1}}, "spearman": {"output_r0_9": 0.87}}
    assert ext.lookup(record, "budgets.r0_5.uniform") == 0.25
    assert ext.lookup(record, "budgets.0.x") == 1
    assert ext.lookup(record, "spearman.output_r0_9") == 0.87
    old = {"budgets": {"0.5": {"uniform": 0.25}}}  # a key with a dot is never matched across parts
    with pytest.raises(KeyError, match=r"no key '0' at 'budgets'.*keys with dots.*rerun the notebook"):
        ext.lookup(old, "budgets.0.5.uniform")
    with pytest.raises(KeyError, match="not a list index"):
        ext.lookup({"curve": [1, 2]}, "curve.first")


@pytest.mark.parametrize("value, fmt, text", [
    (0.8844, "pct", "88,4 %"),
    (0.5, "pct0", "50 %"),
    (176258, "int", "176\u2009258"),
    (7171840, "mega", "7,2"),
    (0.12345, ".3f", "0,123"),
    (12, "d", "12"),
    ("cpu", "", "cpu"),
    (None, ".3f", "—"),
])
def test_format_value(value, fmt, text):
    assert ext.format_value(value, fmt) == text


def test_book_scale_follows_environment(monkeypatch):
    monkeypatch.delenv("THESISLIB_BOOK_SCALE", raising=False)
    assert ext.book_scale() == "cpu"
    monkeypatch.setenv("THESISLIB_BOOK_SCALE", "smoke")
    assert ext.book_scale() == "smoke"


def test_extension_uses_the_layout_of_thesislib_results():
    from thesislib import results

    assert ext.book_scale is results.book_scale
    assert ext._results.result_path is results.result_path


# --- a small Sphinx build with the extension, results outside the sources -------------------------------

PAGE = """Page
====

Accuracy :result:`demo:results.acc.r0_5|pct`, count :result:`demo:results.n|int`.

.. result-figure:: demo/curve

   A curve.

.. result-table:: demo/rows The rows
"""


def build(tmp_path, monkeypatch, page=PAGE, scale="smoke"):
    """Build ``page`` as HTML with the extension; results live in ``tmp_path/elsewhere``, outside the sources."""
    from sphinx.application import Sphinx
    from sphinx.util.docutils import docutils_namespace

    results_dir, src = tmp_path / "elsewhere" / "results", tmp_path / "book"
    src.mkdir(parents=True)
    (src / "conf.py").write_text(f"import sys\nsys.path.insert(0, {str(EXT_DIR)!r})\n"
                                 "extensions = ['thesis_results']\n")
    (src / "index.rst").write_text(page)
    monkeypatch.setenv("THESISLIB_RESULTS", str(results_dir))
    monkeypatch.setenv("THESISLIB_BOOK_SCALE", scale)
    folder = results_dir / "demo" / scale
    folder.mkdir(parents=True)
    (results_dir / "demo" / f"{scale}.json").write_text(json.dumps({"results": {"acc": {"r0_5": 0.8844}, "n": 176258}}))
    (folder / "curve.png").write_bytes(PNG)
    (folder / "rows.csv").write_text("method,accuracy\nl1,0.1235\n")
    warnings = io.StringIO()
    with docutils_namespace():
        app = Sphinx(str(src), str(src), str(tmp_path / "out"), str(tmp_path / "doctrees"), "html",
                     status=None, warning=warnings, freshenv=True)
        app.build()
    return tmp_path / "out", warnings.getvalue()


EXT_DIR = Path(__file__).resolve().parent.parent / "book" / "_ext"
PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082")


def test_build_quotes_results_from_thesislib_results_outside_the_sources(tmp_path, monkeypatch):
    out, warnings = build(tmp_path, monkeypatch)
    assert "ERROR" not in warnings and "WARNING" not in warnings, warnings
    html = (out / "index.html").read_text(encoding="utf-8")
    assert "88,4 %" in html and "176\u2009258" in html
    assert (out / "_images" / "curve.png").read_bytes() == PNG  # copied from outside the book's sources
    assert 'src="_images/curve.png"' in html
    assert "<td><p>l1</p></td>" in html and "The rows" in html


def test_build_error_for_a_missing_key_names_page_key_file_and_notebook(tmp_path, monkeypatch):
    page = PAGE + "\nMissing :result:`demo:results.acc.0.5|pct`.\n"
    _, warnings = build(tmp_path, monkeypatch, page)
    assert "page index" in warnings
    assert "result key 'results.acc.0.5'" in warnings
    assert str(tmp_path / "elsewhere" / "results" / "demo" / "smoke.json") in warnings
    assert "notebooks/demo.ipynb" in warnings and "--only demo" in warnings


def test_build_errors_for_missing_files_name_the_notebook(tmp_path, monkeypatch):
    page = ("Page\n====\n\n:result:`absent:results.x`\n\n.. result-figure:: demo/nothing\n\n"
            ".. result-table:: demo/none\n\n:result:`no_colon`\n")
    _, warnings = build(tmp_path, monkeypatch, page)
    assert "absent" in warnings and "smoke.json does not exist" in warnings and "notebooks/absent.ipynb" in warnings
    assert "nothing.png does not exist" in warnings and "none.csv does not exist" in warnings
    assert "expected `notebook:dotted.key|format`" in warnings
