"""python -m thesislib.train: kill and resume, torchrun on CPU, wandb offline, and the clear errors of bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from thesislib.distributed import DistInfo
from thesislib.train import EXPERIMENTS, Options, fit, main
from thesislib.tracking import read_metrics

ROOT = Path(__file__).resolve().parent.parent


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), **extra}


def _step(path: Path) -> int:
    try:
        return int(torch.load(path, weights_only=False)["step"])
    except Exception:  # not there yet, or being replaced
        return -1


def _kill_after(cmd: list[str], ckpt: Path, at_least: int, sig: int) -> int:
    """Start ``cmd``, send ``sig`` once ``ckpt`` holds >= ``at_least`` steps; return the exit code."""
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    deadline = time.monotonic() + 240
    while proc.poll() is None and time.monotonic() < deadline:
        if ckpt.exists() and _step(ckpt) >= at_least:
            os.killpg(proc.pid, sig)  # the whole group: torchrun and its workers
            break
        time.sleep(0.005)
    return proc.wait(timeout=60)


def test_killed_run_resumes_at_the_saved_step_with_the_uninterrupted_weights(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "thesislib.train", "toy", "--scale", "smoke", "--steps", "400",
           "--checkpoint-every", "20", "--log-every", "1", "--no-progress"]
    ref = subprocess.run([*cmd, "--out", str(tmp_path / "ref")], env=_env(), capture_output=True, text=True,
                         timeout=240)
    assert ref.returncode == 0, ref.stderr
    out = tmp_path / "cut"
    code = _kill_after([*cmd, "--out", str(out)], out / "checkpoint.pt", 100, signal.SIGKILL)
    assert code == -signal.SIGKILL, "the run ended before it could be killed mid-way"
    saved = _step(out / "checkpoint.pt")
    assert 100 <= saved < 400
    again = subprocess.run([*cmd, "--out", str(out)], env=_env(), capture_output=True, text=True, timeout=240)
    assert again.returncode == 0, again.stderr
    assert f"resuming toy (smoke) from step {saved} of 400" in again.stdout
    a = torch.load(tmp_path / "ref" / "checkpoint.pt", weights_only=False)
    b = torch.load(out / "checkpoint.pt", weights_only=False)
    assert b["step"] == 400
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key  # bit-identical on CPU
    assert a["optimizer"]["state"][0]["momentum_buffer"].equal(b["optimizer"]["state"][0]["momentum_buffer"])
    # the CSV describes one history: the interrupted run's lines after the checkpoint were dropped
    losses = {(r["step"], r["value"]) for r in read_metrics(out / "metrics.csv") if r["metric"] == "loss"}
    assert sorted(s for s, _ in losses) == list(range(1, 401))
    assert losses == {(r["step"], r["value"]) for r in read_metrics(tmp_path / "ref" / "metrics.csv")
                      if r["metric"] == "loss"}


def test_torchrun_two_processes_fashion_smoke_writes_one_result_and_resumes(tmp_path: Path) -> None:
    out = tmp_path / "fashion"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "thesislib.train", "fashion", "--scale", "smoke", "--steps", "6", "--checkpoint-every", "2",
           "--out", str(out), "--no-progress"]
    code = _kill_after(cmd, out / "checkpoint.pt", 2, signal.SIGTERM)
    saved = _step(out / "checkpoint.pt")
    assert code != 0 and 2 <= saved < 6 and not (out / "result.json").exists()
    again = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"resuming fashion (smoke) from step {saved} of 6" in again.stdout
    assert again.stdout.count("[thesislib.train] done") == 1
    result = json.loads((out / "result.json").read_text())
    assert result["provenance"]["world_size"] == 2 and result["provenance"]["backend"] == "gloo"
    assert result["resumed_from"] == saved and 0 <= result["metrics"]["test_accuracy"] <= 1
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt", "metrics.csv", "result.json"]


def test_wandb_offline_writes_its_run_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WANDB_MODE", raising=False)  # offline is the default: no account, no network
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "elsewhere"))
    out = tmp_path / "run"
    assert main(["toy", "--scale", "smoke", "--steps", "5", "--out", str(out), "--wandb", "--no-progress",
                 "--log-every", "1"]) == 0
    runs = list((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("run-*.wandb"))
    assert os.environ["WANDB_MODE"] == "offline"
    record = torch.load(out / "checkpoint.pt", weights_only=False)
    assert runs[0].name.endswith(record["extra"]["wandb_id"])  # a resumed run continues the same wandb run
    assert {r["metric"] for r in read_metrics(out / "metrics.csv")} >= {"loss", "lr", "eval_test_accuracy"}


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without CUDA")
def test_scale_gpu_without_cuda_says_so_and_offers_cpu(capsys: pytest.CaptureFixture) -> None:
    assert main(["toy", "--scale", "gpu", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "--scale gpu needs CUDA" in err and "--scale cpu" in err


def test_missing_or_misplaced_data_names_the_expected_layout(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["cifar10-resnet20", "--scale", "smoke", "--data", str(tmp_path / "nowhere"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "cifar-10-batches-py" in err and "data_batch_1" in err and "--data" in err
    flat = tmp_path / "imagenet"
    (flat / "train").mkdir(parents=True)
    (flat / "train" / "img.JPEG").write_bytes(b"")  # images without class folders: the wrong layout
    assert main(["imagenet-resnet18", "--scale", "smoke", "--data", str(flat), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "train/<wnid>" in err and "val/<wnid>" in err
    assert main(["sr", "--scale", "gpu", "--data", str(tmp_path), "--no-progress"]) == 2 or torch.cuda.is_available()
    from thesislib.data.gpu import require_data

    with pytest.raises(FileNotFoundError, match=r"DIV2K_train_HR.*Set5.*Set14.*B100"):
        require_data("sr", tmp_path)


def test_world_size_that_does_not_divide_the_batch_refuses_before_training(tmp_path: Path) -> None:
    opts = Options("toy", "smoke", steps=2, out=tmp_path, progress=False)
    task = EXPERIMENTS["toy"](opts, torch.device("cpu"))
    with pytest.raises(ValueError, match="global batch size 32 is not divisible by the world size 3"):
        fit(task, opts, DistInfo(0, 3, 0, "gloo", torch.device("cpu")))
    assert not any(tmp_path.iterdir())


def test_unknown_experiment_and_bad_numbers_are_rejected(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        main(["resnet50"])
    assert "invalid choice" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["toy", "--steps", "0"])
    assert ">= 1" in capsys.readouterr().err
