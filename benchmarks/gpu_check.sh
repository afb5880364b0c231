#!/usr/bin/env bash
# GPU check of issue 13 (about 8 minutes at most on one GPU): the Fashion-MNIST ResNet-18 at gpu settings
# for 300 steps under `torchrun --nproc_per_node 1` (nccl, bf16 autocast, channels_last), then on CUDA the
# continuous conversion, one INN training step and the export, printing images/s of a discrete and a
# continuous training step and of export inference. Needs Fashion-MNIST in data/fashion-mnist (or the
# Debian package). Exits 3 with a message when no CUDA device is present.
#   bash benchmarks/gpu_check.sh            # writes $OUT/gpu_check.json (OUT default /tmp/thesislib_gpu_check)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
OUT=${OUT:-/tmp/thesislib_gpu_check}
if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "gpu_check: no CUDA device here (torch.cuda.is_available() is False): nothing to check." >&2
  echo "gpu_check: run it on a machine with an NVIDIA GPU; on CPU use: python -m thesislib.train fashion --scale cpu" >&2
  exit 3
fi
mkdir -p "$OUT"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}
timeout 360 "$PY" -m torch.distributed.run --standalone --nproc_per_node 1 -m thesislib.train fashion \
  --scale gpu --steps 300 --checkpoint-every 100 --log-every 50 --out "$OUT/fashion" --restart --no-progress
timeout 180 "$PY" - "$OUT" <<'PYEOF'
import json, statistics, sys
from pathlib import Path
import torch
import torch.nn.functional as F
from thesislib.continuous import to_continuous
from thesislib.data import fashion_loaders
from thesislib.experiments import fashion_mnist as fm
from thesislib.metrics import accuracy, time_calls
from thesislib.tracking import read_metrics

out = Path(sys.argv[1])
dev = torch.device("cuda")
record = torch.load(out / "fashion" / "checkpoint.pt", map_location="cpu", weights_only=False)
model = fm.build_model(fm.settings("gpu"))
model.load_state_dict(record["model"])
model.to(dev).train()
loaders = fashion_loaders("gpu", seed=0)
x, y = next(iter(loaders.train))
x, y = x.to(dev), y.to(dev)
n = x.shape[0]

def step_of(net):
    opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)
    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = F.cross_entropy(net(x).float(), y)
        loss.backward()
        opt.step()
    return step

rates = {}
rates["discrete_train_step"] = n / statistics.median(time_calls(step_of(model), repeats=20, warmup=5, cuda=True))
cnet = to_continuous(model, x[:8], seed=0).to(dev)
cnet.train()
rates["continuous_train_step_full_width"] = n / statistics.median(time_calls(step_of(cnet), repeats=20, warmup=5, cuda=True))
cnet.train_widths((0.5, 1.0))
rates["inn_train_step"] = n / statistics.median(time_calls(step_of(cnet), repeats=20, warmup=5, cuda=True))
cnet.train_widths(None)
cnet.eval().resample(0.5)
small = cnet.export().to(dev).eval()
with torch.no_grad():
    rates["export_inference_r0_5"] = n / statistics.median(time_calls(lambda: small(x), repeats=30, warmup=5, cuda=True))
    rates["discrete_inference"] = n / statistics.median(time_calls(lambda: model.eval()(x), repeats=30, warmup=5, cuda=True))
train_rates = [r["value"] for r in read_metrics(out / "fashion" / "metrics.csv") if r["metric"] == "images_per_s"]
report = {"device": torch.cuda.get_device_name(dev), "torch": torch.__version__, "batch": n,
          "images_per_s": {k: round(v, 1) for k, v in rates.items()},
          "train_cli_images_per_s_median": round(statistics.median(train_rates), 1) if train_rates else None,
          "fashion_300_steps_test_accuracy": json.loads((out / "fashion" / "result.json").read_text())["metrics"],
          "export_r0_5_test_accuracy": accuracy(small, loaders.test, dev)}
(out / "gpu_check.json").write_text(json.dumps(report, indent=2) + "\n")
print(json.dumps(report, indent=2))
PYEOF
