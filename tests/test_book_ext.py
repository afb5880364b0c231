"""book/_ext/thesis_results.py: numbers quoted in the book come from results/ and are formatted exactly."""

import importlib.util
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


def test_lookup_accepts_keys_with_dots():
    record = {"budgets": {"0.5": {"uniform": 0.25}, "0": {"x": 1}}, "spearman": {"output@0.9": 0.87}}
    assert ext.lookup(record, "budgets.0.5.uniform") == 0.25
    assert ext.lookup(record, "budgets.0.x") == 1
    assert ext.lookup(record, "spearman.output@0.9") == 0.87


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
