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


def test_fingerprint_follows_the_thesislib_source_hash(tmp_path, monkeypatch):
    monkeypatch.setattr(reproduce, "SOURCE_DIR", tmp_path)
    (tmp_path / "nb.ipynb").write_text("{}")
    assert reproduce.run_fingerprint("nb", "smoke", {}, "a") == reproduce.run_fingerprint("nb", "smoke", {}, "a")
    assert reproduce.run_fingerprint("nb", "smoke", {}, "a") != reproduce.run_fingerprint("nb", "smoke", {}, "b")
    from thesislib import provenance

    assert reproduce.run_fingerprint("nb", "smoke", {}) == reproduce.run_fingerprint(
        "nb", "smoke", {}, provenance.source_hash(reproduce.REPO_ROOT))


def test_help_mentions_check():
    result = run_cli("--help")
    assert result.returncode == 0
    assert "--check" in result.stdout


# --- --check on a temporary git repository -------------------------------------------------------------

def git(repo, *args):
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout


def write_result(repo, notebook="nb", scale="cpu", **overrides):
    """A results file whose provenance describes ``repo``'s working tree as it is now."""
    from thesislib import provenance

    prov = {"git_commit": provenance.git_commit(repo), "code_state": provenance.code_state(repo),
            "source_hash": provenance.source_hash(repo), "notebook_hash": provenance.notebook_hash(notebook, repo)}
    prov.update(overrides)
    path = repo / "results" / notebook / f"{scale}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"notebook": notebook, "scale": scale, "results": {"a": 1}, "provenance": prov}))
    return path


def commit(repo, message="commit"):
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)


@pytest.fixture()
def repo(tmp_path, monkeypatch):
    root = tmp_path / "repo"
    (root / "thesislib").mkdir(parents=True)
    (root / "notebooks").mkdir()
    (root / "thesislib" / "__init__.py").write_text("x = 1\n")
    (root / "notebooks" / "nb.ipynb").write_text('{"cells": []}')
    (root / "notebooks" / "other.ipynb").write_text('{"cells": [1]}')
    git(root, "init", "-q")
    git(root, "config", "user.email", "t@example.org")
    git(root, "config", "user.name", "t")
    commit(root, "code")
    monkeypatch.setattr(reproduce, "REPO_ROOT", root)
    return root


def test_check_passes_when_every_committed_result_matches_head(repo, capsys):
    write_result(repo)
    write_result(repo, "other", "smoke")
    commit(repo, "results")
    assert reproduce.main(["--check"]) == 0
    assert "all 2 results current" in capsys.readouterr().out
    assert reproduce.main(["--check", "--scale", "cpu"]) == 0
    assert "all 1 results current at scale cpu" in capsys.readouterr().out


def test_check_ignores_uncommitted_edits_and_untracked_results(repo, capsys):
    write_result(repo)
    commit(repo, "results")
    (repo / "thesislib" / "__init__.py").write_text("x = 2\n")  # not committed: HEAD still matches
    write_result(repo, "other")  # not tracked: not a committed result
    assert reproduce.main(["--check"]) == 0
    assert "all 1 results current" in capsys.readouterr().out


def test_check_fails_naming_the_hash_that_differs(repo, capsys):
    write_result(repo)
    write_result(repo, "other")
    commit(repo, "results")
    (repo / "thesislib" / "__init__.py").write_text("x = 2\n")
    (repo / "notebooks" / "other.ipynb").write_text('{"cells": [2]}')
    commit(repo, "new code")
    assert reproduce.main(["--check"]) == 1
    out = capsys.readouterr().out
    assert "stale: results/nb/cpu.json: source_hash differs from thesislib/ at HEAD" in out
    assert "notebook_hash differs from notebooks/other.ipynb at HEAD" in out
    assert "notebook_hash differs from notebooks/nb.ipynb" not in out
    assert "2 of 2 committed results are stale" in out
    assert reproduce.check(names=("nb",)) == 1
    assert "other" not in capsys.readouterr().out


def test_check_fails_for_results_made_from_uncommitted_code(repo, capsys):
    (repo / "thesislib" / "extra.py").write_text("")
    write_result(repo)  # code_state names thesislib/extra.py
    commit(repo, "code and results together")  # the hashes match HEAD, but the run was dirty
    assert reproduce.main(["--check"]) == 1
    out = capsys.readouterr().out
    assert "made from uncommitted code (uncommitted changes in thesislib/ or notebooks/: thesislib/extra.py" in out


def test_check_fails_for_results_without_hashes(repo, capsys):
    write_result(repo, git_commit="abc+dirty")
    (repo / "results" / "nb" / "cpu.json").write_text(json.dumps(
        {"results": {}, "provenance": {"git_commit": "abc+dirty"}}))
    commit(repo, "old result")
    assert reproduce.main(["--check"]) == 1
    assert "no provenance hashes: made before --check existed (commit abc+dirty)" in capsys.readouterr().out


def test_check_reads_the_committed_result_not_the_working_tree(repo, capsys):
    write_result(repo, source_hash="old")
    commit(repo, "stale result")
    write_result(repo)  # a current result, not yet committed
    assert reproduce.main(["--check"]) == 1
    out = capsys.readouterr().out
    assert "source_hash differs" in out and "the working tree holds another version: commit it" in out
    commit(repo, "current result")
    assert reproduce.main(["--check"]) == 0


def test_check_without_results_and_outside_git(repo, tmp_path, capsys, monkeypatch):
    assert reproduce.main(["--check", "--scale", "gpu"]) == 0
    assert "no committed results at scale gpu" in capsys.readouterr().out
    monkeypatch.setattr(reproduce, "REPO_ROOT", tmp_path / "nowhere")
    (tmp_path / "nowhere").mkdir()
    assert reproduce.main(["--check"]) == 2
    assert "needs a git checkout" in capsys.readouterr().err
