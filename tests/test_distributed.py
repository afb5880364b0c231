"""thesislib.distributed: rank seeds, batch split, sampler shares, and real 2-process gloo runs (torchrun)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import DistributedSampler, TensorDataset

from thesislib.distributed import (DistInfo, broadcast_draw, distributed_sampler, per_rank_batch, rank_seed,
                                   unwrap, wrap_ddp)
from thesislib.train import WidthSync, inn_width_draw

ROOT = Path(__file__).resolve().parent.parent
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def test_rank_seeds_are_derived_distinct_and_reproducible() -> None:
    seeds = [rank_seed(7, r) for r in range(4)]
    assert len(set(seeds)) == 4 and seeds == [rank_seed(7, r) for r in range(4)]
    assert rank_seed(7, 0) != 7 and rank_seed(8, 0) != seeds[0]
    with pytest.raises(ValueError, match="seed"):
        rank_seed(-1)


def test_world_size_that_does_not_divide_the_batch_is_a_clear_error() -> None:
    assert per_rank_batch(256, 4) == 64
    with pytest.raises(ValueError, match=r"not divisible by the world size 3.*--nproc_per_node in \[1, 2, 4"):
        per_rank_batch(128, 3)
    with pytest.raises(ValueError, match="batch size"):
        per_rank_batch(0, 1)


def test_rank_shares_of_a_step_are_the_one_process_batch() -> None:
    """N ranks of batch B draw, at every step, exactly the N·B items one process of batch N·B draws."""
    data = TensorDataset(torch.arange(40))
    single = list(distributed_sampler(data, seed=3))
    shares = [list(DistributedSampler(data, num_replicas=2, rank=r, seed=3, drop_last=True)) for r in range(2)]
    b = 5
    for step in range(len(single) // (2 * b)):
        union = sorted(shares[0][step * b:(step + 1) * b] + shares[1][step * b:(step + 1) * b])
        assert union == sorted(single[step * 2 * b:(step + 1) * 2 * b])


def test_world_of_one_helpers_are_identities() -> None:
    assert broadcast_draw(lambda: {"a": 3}) == {"a": 3}
    model = torch.nn.Linear(2, 2)
    assert wrap_ddp(model, torch.device("cpu")) is model and unwrap(model) is model
    info = DistInfo(0, 1, 0, None, torch.device("cpu"))
    assert info.is_main
    sync = WidthSync(inn_width_draw({"g": 10}, 0.5, 1.0, seed=1), lambda w: None)
    draws = [inn_width_draw({"g": 10}, 0.5, 1.0, seed=1)(s)["g"] for s in range(50)]
    assert all(5 <= d <= 10 for d in draws) and len(set(draws)) > 1
    assert draws[:3] == [inn_width_draw({"g": 10}, 0.5, 1.0, seed=1)(s)["g"] for s in range(3)]  # stateless per step
    assert sync.last is None


def test_two_gloo_processes_equal_one_process_with_the_doubled_batch(tmp_path: Path) -> None:
    """torchrun 2 × batch 16 (gloo, DDP all-reduce) vs 1 process × batch 32: the same weights."""
    common = ["-m", "thesislib.train", "toy", "--scale", "smoke", "--steps", "30", "--no-progress"]
    one = subprocess.run([sys.executable, *common, "--batch-size", "32", "--out", str(tmp_path / "one")],
                         env=_env(), capture_output=True, text=True, timeout=240)
    assert one.returncode == 0, one.stderr
    two = subprocess.run([*TORCHRUN, *common, "--batch-size", "32", "--out", str(tmp_path / "two")],
                         env=_env(), capture_output=True, text=True, timeout=240)
    assert two.returncode == 0, two.stderr
    a = torch.load(tmp_path / "one" / "checkpoint.pt", weights_only=False)
    b = torch.load(tmp_path / "two" / "checkpoint.pt", weights_only=False)
    assert a["world_size"] == 1 and b["world_size"] == 2 and a["step"] == b["step"] == 30
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], rtol=1e-5, atol=1e-6)
    assert two.stdout.count("[thesislib.train] done") == 1  # rank 0 alone reports and writes


def test_inn_under_ddp_every_rank_trains_the_widths_rank0_drew(tmp_path: Path) -> None:
    """Each rank's own draw differs; WidthSync broadcasts rank 0's, and every forward of every rank used it."""
    script = tmp_path / "inn_worker.py"
    script.write_text(INN_SCRIPT)
    out = tmp_path / "out.json"
    run = subprocess.run([*TORCHRUN, str(script), str(out)], env=_env(), capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["local_differ"], "the per-rank draws should differ without the broadcast"
    assert report["same_used"] and report["same_params"]
    assert len(report["used"]) == 4
    assert any(w < report["full"][g] for step in report["used"] for g, w in step.items())  # reduced widths trained


INN_SCRIPT = r'''"""2-rank INN step under DDP: every rank must train the widths rank 0 drew (run by tests/test_distributed.py)."""
import json, sys
import torch
from torch import nn
import torch.nn.functional as F
from thesislib.continuous import to_continuous
from thesislib.distributed import all_gather_objects, init_distributed, rank, rank_seed, shutdown, wrap_ddp
from thesislib.train import WidthSync, inn_width_draw, apply_inn_widths
from thesislib.training import train
import numpy as np

info = init_distributed("cpu")
torch.manual_seed(0)
net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                    nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3))
cnet = to_continuous(net, torch.rand(2, 1, 8, 8), seed=0)
local = inn_width_draw(cnet.full_widths, 0.25, 1.0, seed=rank_seed(0))  # differs per rank: only the broadcast aligns them
used = []
def record(widths):
    fixed = dict(widths)
    def dist_fn(group, gen):
        used[-1][group.name] = fixed[group.name]
        return fixed[group.name]
    used.append({})
    cnet.train_widths(dist_fn)
sync = WidthSync(local, record)
model = wrap_ddp(cnet, info.device)
g = torch.Generator().manual_seed(rank())
batches = [(torch.rand(4, 1, 8, 8, generator=g), torch.randint(0, 3, (4,), generator=g)) for _ in range(4)]
opt = torch.optim.SGD(cnet.parameters(), lr=0.1)
train(model, batches, 4, F.cross_entropy, opt, callbacks=[sync])
local_draws = [local(s) for s in range(4)]
everything = all_gather_objects({"used": used, "local": local_draws,
                                 "params": [p.detach().clone() for p in cnet.parameters()]})
if rank() == 0:
    same_used = all(e["used"] == everything[0]["used"] for e in everything)
    local_differ = everything[0]["local"] != everything[1]["local"]
    same_params = all(torch.equal(a, b) for a, b in zip(everything[0]["params"], everything[1]["params"]))
    json.dump({"same_used": same_used, "local_differ": local_differ, "same_params": same_params,
               "used": everything[0]["used"], "full": cnet.full_widths}, open(sys.argv[1], "w"))
shutdown()
'''
