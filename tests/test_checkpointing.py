"""thesislib.checkpointing: exact round trips, RNG states, refusals naming both sides, no overwrite on a failed start."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from thesislib.checkpointing import (Checkpointer, CheckpointMismatch, load_checkpoint, rng_state,
                                     save_checkpoint, set_rng_state)
from thesislib.train import main


def _model(hidden: int = 4) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, hidden), nn.ReLU(), nn.Linear(hidden, 2))


def _digest(path: Path) -> tuple[str, int]:
    return hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns


def test_round_trip_restores_model_optimiser_scheduler_and_rng(tmp_path: Path) -> None:
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 ** s)
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(5, 3)).sum().backward()
        opt.step()
        sched.step()
    torch.manual_seed(11), np.random.seed(11), random.seed(11)
    path = save_checkpoint(tmp_path / "c.pt", experiment="toy", model=model, step=3, optimizer=opt, scheduler=sched,
                           data={"epoch": 1, "offset": 2}, settings={"lr": 0.1})
    expected = (torch.rand(3), np.random.rand(3), random.random())
    fresh = _model()
    opt2 = torch.optim.SGD(fresh.parameters(), lr=0.1, momentum=0.9)
    sched2 = torch.optim.lr_scheduler.LambdaLR(opt2, lambda s: 0.5 ** s)
    torch.manual_seed(99), np.random.seed(99), random.seed(99)
    record = load_checkpoint(path, "toy", fresh)
    opt2.load_state_dict(record["optimizer"])
    sched2.load_state_dict(record["scheduler"])
    set_rng_state(record["rng"][0])
    assert (torch.rand(3).tolist(), np.random.rand(3).tolist(), random.random()) == \
        (expected[0].tolist(), expected[1].tolist(), expected[2])
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), fresh.state_dict().values()))
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"] == pytest.approx(0.1 * 0.5 ** 3)
    assert torch.equal(opt2.state_dict()["state"][0]["momentum_buffer"], opt.state_dict()["state"][0]["momentum_buffer"])
    assert sched2.last_epoch == 3 and record["step"] == 3 and record["data"] == {"epoch": 1, "offset": 2}
    assert list(tmp_path.iterdir()) == [path]  # atomic: no temporary file left behind
    assert set(rng_state()) == {"torch", "cuda", "numpy", "python"}


def test_another_experiment_or_model_shape_is_refused_naming_both(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "c.pt", experiment="fashion", model=_model(4), step=1)
    with pytest.raises(CheckpointMismatch, match=r"experiment 'fashion', not to this run's experiment 'cifar10'"):
        load_checkpoint(path, "cifar10", _model(4))
    with pytest.raises(CheckpointMismatch, match=r"first difference '0.bias': checkpoint \[4\], model \[6\]") as info:
        load_checkpoint(path, "fashion", _model(6))
    assert "shape hash" in str(info.value) and str(info.value).count("tensors") == 2
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointMismatch, match="cannot read"):
        load_checkpoint(tmp_path / "junk.pt", "fashion")
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "none.pt", "fashion")


def test_checkpointer_interval_is_validated() -> None:
    with pytest.raises(ValueError, match="interval"):
        Checkpointer("x.pt", "toy", _model(), every=0)


def test_a_failed_start_never_overwrites_the_existing_checkpoint(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    assert main(["toy", "--scale", "smoke", "--steps", "6", "--checkpoint-every", "3", "--out", str(out),
                 "--no-progress"]) == 0
    ckpt = out / "checkpoint.pt"
    before = _digest(ckpt)
    # another experiment into the same folder: refused before anything is written
    assert main(["fashion", "--scale", "smoke", "--out", str(out), "--no-progress"]) == 2
    assert "belongs to experiment 'toy', not to this run's experiment 'fashion'" in capsys.readouterr().err
    # the same experiment with other settings: refused naming the setting and both values
    assert main(["toy", "--scale", "smoke", "--steps", "6", "--lr", "0.3", "--out", str(out), "--no-progress"]) == 2
    assert "lr: checkpoint 0.1, this run 0.3" in capsys.readouterr().err
    assert _digest(ckpt) == before
    # a rerun of a finished run resumes at its last step and only evaluates
    assert main(["toy", "--scale", "smoke", "--steps", "6", "--checkpoint-every", "3", "--out", str(out),
                 "--no-progress"]) == 0
    assert "from step 6 of 6" in capsys.readouterr().out
    assert _digest(ckpt) == before
