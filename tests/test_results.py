"""thesislib.config and thesislib.results: scales, provenance, atomic writes."""

import os

import pytest
import torch

from thesislib import results
from thesislib.config import SCALES, check_scale, seed_everything


@pytest.fixture()
def results_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("THESISLIB_RESULTS", str(tmp_path))
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


def test_save_result_writes_provenance_and_round_trips(results_dir):
    results.start_run("demo", "smoke", {"seed": 7, "scale": "smoke"})
    path = results.save_result("demo", "smoke", {"accuracy": torch.tensor(0.5), "curve": (1, 2)}, {"lr": 0.1})
    assert path == results_dir / "demo" / "smoke.json"
    record = results.load_result("demo", "smoke")
    assert record["results"] == {"accuracy": 0.5, "curve": [1, 2]}
    provenance = record["provenance"]
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


def test_save_figure_writes_png(results_dir):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    path = results.save_figure(fig, "demo", "smoke", "line")
    plt.close(fig)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_save_table_writes_csv_with_rounded_floats_and_rejects_empty(results_dir):
    path = results.save_table([{"method": "l1", "accuracy": 0.123456}, {"method": "fold", "accuracy": 0.5}],
                              "demo", "smoke", "table")
    assert path == results_dir / "demo" / "smoke" / "table.csv"
    assert path.read_text() == "method,accuracy\nl1,0.1235\nfold,0.5\n"
    with pytest.raises(ValueError, match="no rows"):
        results.save_table([], "demo", "smoke", "empty")
