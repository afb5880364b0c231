"""Logging of a training run: a tqdm bar on rank 0, a local CSV always, wandb when asked (offline by default).

The CSV ``metrics.csv`` sits beside the checkpoint in long form, one line per value:
``step,metric,value`` (``step`` = completed optimisation steps). A resumed run first drops the lines of
steps after the checkpoint it resumes from (they were logged by the interrupted run and are redone),
so the file always describes one uninterrupted history. With ``wandb=True`` the same metrics and the
run's parameters go to a Weights & Biases run in ``<folder>/wandb`` with ``WANDB_MODE=offline`` unless
the environment says otherwise (no account, no network; ``wandb sync`` uploads it later); a resumed run
continues the same wandb run id.
"""

from __future__ import annotations

import csv
import io
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Mapping

from thesislib.distributed import is_main, mean_over_ranks
from thesislib.results import atomic_write_text
from thesislib.training import Callback, TrainState

__all__ = ["CSV_NAME", "MetricsCSV", "read_metrics", "Tracker", "new_wandb_id"]

CSV_NAME = "metrics.csv"
_HEADER = ["step", "metric", "value"]


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """Rows ``{"step": int, "metric": str, "value": float}`` of a metrics CSV."""
    with open(path, newline="", encoding="utf-8") as handle:
        return [{"step": int(r["step"]), "metric": r["metric"], "value": float(r["value"])}
                for r in csv.DictReader(handle)]


class MetricsCSV:
    """Append-only ``step,metric,value`` file; ``start_step`` > 0 keeps only the lines up to that step."""

    def __init__(self, path: str | Path, start_step: int = 0) -> None:
        self.path = Path(path)
        self.start_step = start_step
        self._handle: Any = None

    def _open(self) -> None:
        kept: list[list[str]] = []
        if self.start_step > 0 and self.path.is_file():
            with open(self.path, newline="", encoding="utf-8") as handle:
                rows = list(csv.reader(handle))
            kept = [r for r in rows[1:] if len(r) == 3 and r[0].isdigit() and int(r[0]) <= self.start_step]
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerows([_HEADER, *kept])
        atomic_write_text(self.path, buffer.getvalue())  # the lines of the interrupted run's lost steps go
        self._handle = open(self.path, "a", newline="", encoding="utf-8")
        self._writer = csv.writer(self._handle, lineterminator="\n")

    def write(self, step: int, metrics: Mapping[str, float]) -> None:
        """Append one line per metric (opening and, on resume, trimming the file at the first write)."""
        if self._handle is None:
            self._open()
        for name, value in metrics.items():
            self._writer.writerow([step, name, f"{float(value):.8g}"])
        self._handle.flush()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def new_wandb_id() -> str:
    """A fresh wandb run id (8 lowercase letters and digits)."""
    import secrets
    import string

    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(8))


class Tracker(Callback):
    """Rank-0 logging of :func:`thesislib.training.train`: loss (mean over ranks), learning rate and
    images per second every ``log_every`` steps, evaluation metrics after each evaluation.

    ``folder`` receives ``metrics.csv`` (and ``wandb/`` with ``wandb=True``); ``parameters`` are the run's
    settings (wandb config); ``steps`` the total step count of the run (the bar's length) and
    ``start_step`` where this process starts. Every rank must hold a Tracker (the loss is averaged
    across ranks); only rank 0 writes.
    """

    def __init__(self, folder: str | Path, parameters: Mapping[str, Any], steps: int, start_step: int = 0,
                 log_every: int = 1, wandb: bool = False, wandb_id: str | None = None,
                 project: str = "thesislib", name: str | None = None, progress: bool = True,
                 images_per_step: int | None = None) -> None:
        if log_every < 1:
            raise ValueError(f"log_every must be >= 1, got {log_every}")
        self.folder = Path(folder)
        self.parameters = dict(parameters)
        self.steps, self.start_step, self.log_every = steps, start_step, log_every
        self.images_per_step = images_per_step
        self.main = is_main()
        self.csv = MetricsCSV(self.folder / CSV_NAME, start_step) if self.main else None
        self.wandb_run: Any = None
        self.wandb_id = wandb_id
        if wandb and self.main:
            self.wandb_run = _start_wandb(self.folder, self.parameters, wandb_id, project, name)
            self.wandb_id = self.wandb_run.id
        self.bar: Any = None
        if progress and self.main:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=steps, initial=start_step, desc=name or "train", file=sys.stderr,
                            dynamic_ncols=True, leave=True)
        self._loss_sum, self._count, self._tick = 0.0, 0, time.perf_counter()
        self.last: dict[str, float] = {}

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        """Write ``metrics`` at ``step`` to the CSV (and wandb) on rank 0."""
        if not self.main or not metrics:
            return
        self.last.update({k: float(v) for k, v in metrics.items()})
        assert self.csv is not None
        self.csv.write(step, metrics)
        if self.wandb_run is not None:
            self.wandb_run.log(dict(metrics), step=step)

    def on_step_end(self, state: TrainState) -> None:
        self._loss_sum += state.loss
        self._count += 1
        completed = state.step + 1
        if self.bar is not None:
            self.bar.update(1)
        if completed % self.log_every and completed != self.steps:
            return
        loss = mean_over_ranks(self._loss_sum / self._count)  # every rank reaches this line at the same step
        now = time.perf_counter()
        metrics = {"loss": loss, "lr": float(state.optimizer.param_groups[0]["lr"])}
        if self.images_per_step:
            metrics["images_per_s"] = self.images_per_step * self._count / max(now - self._tick, 1e-9)
        if not math.isfinite(loss):
            raise FloatingPointError(f"mean training loss over ranks became {loss} at step {completed}")
        self.log(completed, metrics)
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{loss:.4g}", refresh=False)
        self._loss_sum, self._count, self._tick = 0.0, 0, now

    def on_eval(self, state: TrainState, metrics: dict[str, float]) -> None:
        self.log(state.step + 1, {f"eval_{k}" if not k.startswith("eval_") else k: v for k, v in metrics.items()})

    def on_train_end(self, state: TrainState) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def close(self) -> None:
        """Close the bar, the CSV and the wandb run (idempotent)."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self.csv is not None:
            self.csv.close()
        if self.wandb_run is not None:
            self.wandb_run.finish()
            self.wandb_run = None


def _start_wandb(folder: Path, parameters: Mapping[str, Any], run_id: str | None, project: str,
                 name: str | None) -> Any:
    """A wandb run under ``folder/wandb``: offline unless ``WANDB_MODE`` says otherwise."""
    try:
        import wandb
    except ImportError as error:  # pragma: no cover - wandb is a pinned dependency
        raise ValueError("--wandb needs the wandb package (pip install wandb==0.30.0)") from error
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    folder.mkdir(parents=True, exist_ok=True)
    return wandb.init(project=project, name=name, dir=str(folder), config=dict(parameters),
                      id=run_id or new_wandb_id(), resume="allow", mode=os.environ["WANDB_MODE"])
