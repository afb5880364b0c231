"""thesislib.reproduce: bad input exits non-zero with the valid choices; the skip logic."""

import json
import subprocess
import sys

import pytest

from thesislib import reproduce


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "thesislib.reproduce", *args], capture_output=True, text=True)


def test_unknown_scale_exits_nonzero_naming_valid_scales():
    result = run_cli("--scale", "nonsense")
    assert result.returncode != 0
    assert "smoke, cpu, gpu" in result.stderr


def test_unknown_notebook_exits_nonzero_naming_valid_notebooks():
    result = run_cli("--scale", "smoke", "--only", "nope", "--no-build")
    assert result.returncode != 0
    assert "fashion_mnist" in result.stderr


def test_fingerprint_follows_source_parameters_and_scale(tmp_path, monkeypatch):
    monkeypatch.setattr(reproduce, "SOURCE_DIR", tmp_path)
    (tmp_path / "nb.ipynb").write_text("{}")
    base = reproduce.run_fingerprint("nb", "smoke", {})
    assert reproduce.run_fingerprint("nb", "smoke", {}) == base
    assert reproduce.run_fingerprint("nb", "cpu", {}) != base
    assert reproduce.run_fingerprint("nb", "smoke", {"seed": 1}) != base
    (tmp_path / "nb.ipynb").write_text('{"cells": []}')
    assert reproduce.run_fingerprint("nb", "smoke", {}) != base


def test_up_to_date_needs_both_stamp_and_executed_notebook(tmp_path, monkeypatch):
    monkeypatch.setattr(reproduce, "EXECUTED_DIR", tmp_path)
    assert not reproduce.is_up_to_date("nb", "abc")
    (tmp_path / ".nb.stamp.json").write_text(json.dumps({"fingerprint": "abc"}))
    assert not reproduce.is_up_to_date("nb", "abc")  # stamp without the executed notebook
    (tmp_path / "nb.ipynb").write_text("{}")
    assert reproduce.is_up_to_date("nb", "abc")
    assert not reproduce.is_up_to_date("nb", "abd")


def test_failing_notebook_is_named_with_its_cell(tmp_path, monkeypatch):
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("scale = 'smoke'", metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell("x = 1"),
                nbformat.v4.new_code_cell("raise RuntimeError('boom')")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    source, executed = tmp_path / "src", tmp_path / "out"
    source.mkdir()
    nbformat.write(nb, source / "broken.ipynb")
    monkeypatch.setattr(reproduce, "SOURCE_DIR", source)
    monkeypatch.setattr(reproduce, "EXECUTED_DIR", executed)
    with pytest.raises(reproduce.NotebookFailed, match=r"broken\.ipynb failed in cell .*RuntimeError: boom"):
        reproduce.run_notebooks("smoke", ("broken",))
    assert not (executed / "broken.ipynb").exists()  # no half-run notebook takes the place of a good one
    assert not (executed / ".broken.stamp.json").exists()
