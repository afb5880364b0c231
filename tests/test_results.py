"""thesislib.config, thesislib.results and thesislib.provenance: scales, Run, provenance, atomic writes."""

import json
import os
import subprocess

import pytest
import torch

from thesislib import provenance, results
from thesislib.config import SCALES, check_scale, seed_everything


@pytest.fixture()
def results_dir(tmp_path, monkeypatch):
    """Results go to ``tmp_path``; ``demo`` is a valid notebook (``tmp_path/notebooks/demo.ipynb``)."""
    monkeypatch.setenv("THESISLIB_RESULTS", str(tmp_path))
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    (notebooks / "demo.ipynb").write_text('{"cells": []}')
    monkeypatch.setattr(results, "NOTEBOOKS_DIR", notebooks)
    return tmp_path


def test_check_scale_accepts_known_and_names_valid_on_error():
    for scale in SCALES:
        assert check_scale(scale) == scale
    with pytest.raises(ValueError, match="smoke, cpu, gpu"):
        check_scale("nonsense")


def test_seed_everything_repeats_random_draws():
    seed_everything(3)
    first = torch.randn(5)
    seed_everything(3)
    assert torch.equal(first, torch.randn(5))


def test_run_save_writes_provenance_and_round_trips(results_dir):
    run = results.Run("demo", "smoke", {"seed": 7, "scale": "smoke"})
    run.parameters.update({"lr": 0.1})
    path = run.save({"accuracy": torch.tensor(0.5), "curve": (1, 2)})
    assert path == results_dir / "demo" / "smoke.json"
    record = results.load_result("demo", "smoke")
    assert record["results"] == {"accuracy": 0.5, "curve": [1, 2]}
    provenance = record["provenance"]
    assert "+dirty" not in provenance["git_commit"]
    assert provenance["source_hash"] and provenance["code_state"]
    assert provenance["seed"] == 7
    assert provenance["parameters"] == {"seed": 7, "scale": "smoke", "lr": 0.1}
    assert provenance["torch_version"] == torch.__version__
    assert provenance["wall_time_s"] >= 0
    assert provenance["git_commit"]


def test_load_result_missing_says_how_to_produce(results_dir):
    with pytest.raises(FileNotFoundError, match="thesislib.reproduce --scale cpu"):
        results.load_result("absent", "cpu")


def test_atomic_write_keeps_old_file_when_interrupted(tmp_path, monkeypatch):
    target = tmp_path / "r.json"
    results.atomic_write_text(target, "old")

    def broken_replace(src, dst):
        raise KeyboardInterrupt  # an interruption between writing and moving into place

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(KeyboardInterrupt):
        results.atomic_write_text(target, "new")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # no temporary file left behind


def test_figure_path_is_per_notebook_and_scale(results_dir):
    path = results.figure_path("demo", "cpu", "curve")
    assert path == results_dir / "demo" / "cpu" / "curve.png"
    assert path.parent.is_dir()
    with pytest.raises(ValueError):
        results.figure_path("demo", "tiny", "curve")


def test_run_figure_writes_png(results_dir):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    path = results.Run("demo", "smoke", {}).figure(fig, "line")
    plt.close(fig)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_run_table_writes_csv_with_rounded_floats_and_rejects_empty(results_dir):
    run = results.Run("demo", "smoke", {})
    path = run.table([{"method": "l1", "accuracy": 0.123456}, {"method": "fold", "accuracy": 0.5}], "table")
    assert path == results_dir / "demo" / "smoke" / "table.csv"
    assert path.read_text() == "method,accuracy\nl1,0.1235\nfold,0.5\n"
    with pytest.raises(ValueError, match="no rows"):
        run.table([], "empty")


# --- Run ---------------------------------------------------------------------------------------------

def test_run_saves_figure_table_and_json_with_provenance(results_dir, monkeypatch):
    import matplotlib

    monkeypatch.setattr(results, "git_commit", lambda: "c0ffee")
    monkeypatch.setattr(results, "code_state", lambda: "uncommitted changes in thesislib/ or notebooks/: x.py")
    monkeypatch.setattr(results, "source_hash", lambda: "s1")

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run = results.Run("demo", "smoke", {"seed": 3, "lr": 0.1})
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    figure = run.figure(fig, "line")
    plt.close(fig)
    assert figure == results_dir / "demo" / "smoke" / "line.png"
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = run.table([{"method": "l1", "accuracy": 0.123456}, {"method": "fold"}], "t", columns=["method", "accuracy"])
    assert table.read_text() == "method,accuracy\nl1,0.1235\nfold,\n"
    monkeypatch.setattr(results, "source_hash", lambda: "s2")  # the code identity is taken at the start
    monkeypatch.setattr(results, "code_state", lambda: "clean")
    path = run.save({results.ratio_key(0.5): {"acc": torch.tensor(0.25)}, "curve": [float("nan"), 1]})
    assert path == results.result_path("demo", "smoke") == results_dir / "demo" / "smoke.json"
    record = json.loads(path.read_text())
    assert record["notebook"] == "demo" and record["scale"] == "smoke"
    assert record["results"] == {"r0_5": {"acc": 0.25}, "curve": [None, 1]}
    prov = record["provenance"]
    assert prov["parameters"] == {"seed": 3, "lr": 0.1} and prov["seed"] == 3
    assert prov["git_commit"] == "c0ffee"
    assert prov["code_state"] == "uncommitted changes in thesislib/ or notebooks/: x.py"
    assert prov["source_hash"] == "s1"
    assert prov["notebook_hash"] == provenance.file_hash(results_dir / "notebooks" / "demo.ipynb")
    assert prov["wall_time_s"] >= 0 and prov["created_utc"].endswith("+00:00")


def test_run_rejects_unknown_notebook_and_scale_naming_valid_ones(results_dir):
    with pytest.raises(ValueError, match="smoke, cpu, gpu"):
        results.Run("demo", "tiny", {})
    with pytest.raises(ValueError, match=r"unknown notebook 'absent'.*one of demo"):
        results.Run("absent", "smoke", {})
    with pytest.raises(ValueError, match="unknown notebook"):
        results.Run("../demo", "smoke", {})
    run = results.Run("demo", "smoke", {})
    with pytest.raises(ValueError, match="not a plain file name"):
        run.table([{"a": 1}], "sub/table")
    with pytest.raises(ValueError, match="no rows"):
        run.table([], "empty")


@pytest.mark.parametrize("bad, where", [
    ({"0.5": 1}, r"results\['0.5'\]"),
    ({"accuracy": {"l1": {"0.25": 0.9}}}, r"results\['accuracy'\]\['l1'\]\['0.25'\]"),
    ({"curve": [{"acc": 1}, {"x.y": 2}]}, r"results\['curve'\]\[1\]\['x.y'\]"),
])
def test_run_save_rejects_dotted_keys_at_any_depth(results_dir, bad, where):
    run = results.Run("demo", "smoke", {})
    with pytest.raises(ValueError, match=where + ".*contains a dot.*ratio_key"):
        run.save(bad)
    assert not results.result_path("demo", "smoke").exists()  # nothing half-valid is written


def test_dotted_key_error_suggests_the_ratio_key():
    with pytest.raises(ValueError, match="'r0_5'"):
        results.check_keys({"macs": {0.5: 1}})
    results.check_keys({"macs": {results.ratio_key(0.5): 1, 1: 2}, "rows": [{"r1": 0}]})  # plain keys pass


def test_ratio_key_is_a_plain_identifier():
    assert results.ratio_key(0.5) == "r0_5"
    assert results.ratio_key(1) == "r1"
    assert results.ratio_key(0.375) == "r0_375"
    for r in (0.05, 0.1, 0.25, 0.75, 1.0):
        assert results.ratio_key(r).isidentifier()


def test_book_scale_is_checked(monkeypatch):
    monkeypatch.delenv("THESISLIB_BOOK_SCALE", raising=False)
    assert results.book_scale() == "cpu"
    monkeypatch.setenv("THESISLIB_BOOK_SCALE", "huge")
    with pytest.raises(ValueError, match="smoke, cpu, gpu"):
        results.book_scale()


def test_layout_helpers_do_not_create_folders_when_asked_not_to(results_dir):
    path = results.table_path("demo", "gpu", "knees", mkdir=False)
    assert path == results_dir / "demo" / "gpu" / "knees.csv"
    assert not path.parent.exists()
    with pytest.raises(ValueError, match="not a plain file name"):
        results.figure_path("demo", "gpu", "a.b", mkdir=False)


# --- provenance in a temporary git repository ------------------------------------------------------

def git(repo, *args):
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout


@pytest.fixture()
def repo(tmp_path):
    """A git repository with thesislib/ (two modules, one in a subpackage) and notebooks/nb.ipynb."""
    root = tmp_path / "repo"
    (root / "thesislib" / "sub").mkdir(parents=True)
    (root / "notebooks").mkdir()
    (root / "thesislib" / "__init__.py").write_text("x = 1\n")
    (root / "thesislib" / "sub" / "mod.py").write_text("y = 2\n")
    (root / "thesislib" / "data.txt").write_text("not source\n")
    (root / "notebooks" / "nb.ipynb").write_text('{"cells": []}')
    (root / "README.md").write_text("readme\n")
    git(root, "init", "-q")
    git(root, "config", "user.email", "t@example.org")
    git(root, "config", "user.name", "t")
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", "init")
    return root


def test_hash_files_ignores_order_and_sees_names_and_bytes():
    base = provenance.hash_files([("a.py", b"1"), ("b.py", b"2")])
    assert provenance.hash_files([("b.py", b"2"), ("a.py", b"1")]) == base
    assert provenance.hash_files([("a.py", b"2"), ("b.py", b"1")]) != base
    assert provenance.hash_files([("c.py", b"1"), ("b.py", b"2")]) != base


def test_clean_repo_gives_head_commit_and_equal_worktree_and_committed_hashes(repo):
    head = git(repo, "rev-parse", "HEAD").strip()
    assert provenance.git_commit(repo) == head
    assert provenance.code_state(repo) == "clean"
    assert provenance.source_hash(repo) == provenance.committed_source_hash(repo)
    assert provenance.notebook_hash("nb", repo) == provenance.committed_notebook_hash("nb", repo)
    assert provenance.committed_notebook_hash("absent", repo) is None
    assert provenance.notebook_hash("absent", repo) is None


def test_dirty_repo_says_so_and_committed_hash_ignores_the_worktree(repo):
    clean_hash = provenance.source_hash(repo)
    head = git(repo, "rev-parse", "HEAD").strip()
    (repo / "thesislib" / "sub" / "mod.py").write_text("y = 3\n")
    (repo / "notebooks" / "new.ipynb").write_text("{}")
    (repo / "README.md").write_text("changed outside thesislib/ and notebooks/\n")
    assert provenance.git_commit(repo) == head  # never +dirty
    state = provenance.code_state(repo)
    assert state.startswith("uncommitted changes in thesislib/ or notebooks/")
    assert "thesislib/sub/mod.py" in state and "notebooks/new.ipynb" in state and "README.md" not in state
    assert "(2 paths)" in state
    assert provenance.source_hash(repo) != clean_hash
    assert provenance.committed_source_hash(repo) == clean_hash  # HEAD's blobs, not the edit
    git(repo, "commit", "-q", "-am", "edit")
    assert provenance.committed_source_hash(repo) == provenance.source_hash(repo) != clean_hash


def test_non_source_files_do_not_enter_the_source_hash(repo):
    before = provenance.source_hash(repo)
    (repo / "thesislib" / "data.txt").write_text("changed\n")
    assert provenance.source_hash(repo) == before
    (repo / "thesislib" / "extra.py").write_text("")  # a new module does
    assert provenance.source_hash(repo) != before


def test_code_state_lists_at_most_ten_paths_then_counts(repo):
    for i in range(12):
        (repo / "thesislib" / f"m{i:02d}.py").write_text("")
    state = provenance.code_state(repo)
    assert "thesislib/m09.py" in state and "thesislib/m10.py" not in state
    assert "and 2 more (12 paths)" in state


def test_outside_git_provenance_is_unknown(tmp_path):
    (tmp_path / "thesislib").mkdir()
    assert provenance.git_commit(tmp_path) == "unknown"
    assert provenance.code_state(tmp_path) == "unknown"
