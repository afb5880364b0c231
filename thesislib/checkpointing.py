"""Checkpoints that survive interruption: everything a rerun needs to continue at the same step.

A checkpoint holds the model, optimiser and scheduler states, the RNG states of every rank (torch CPU,
CUDA, NumPy, Python ``random``), the number of completed ``step``s, the data position (epoch and batch
within it, :class:`thesislib.train.ResumableLoader`), the run's settings and the experiment's name and
model shape. It is written atomically (:func:`thesislib.results.atomic_write_bytes`: a temporary file
moved into place), so a run killed while writing leaves the previous checkpoint intact, and only at a
checkpoint step of a run that started correctly, so a failed start never overwrites one.
:func:`load_checkpoint` refuses a checkpoint of another experiment or of another model shape, naming both.
"""

from __future__ import annotations

import hashlib
import io
import random
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
from torch import nn

from thesislib.distributed import all_gather_objects, is_main, rank, world_size
from thesislib.results import atomic_write_bytes
from thesislib.training import Callback, TrainState

__all__ = ["FORMAT", "CheckpointMismatch", "model_signature", "signature_hash", "rng_state", "set_rng_state",
           "save_checkpoint", "load_checkpoint", "check_compatible", "Checkpointer"]

#: version of the checkpoint layout (a checkpoint of another version is refused)
FORMAT = 1


class CheckpointMismatch(ValueError):
    """A checkpoint that belongs to another experiment or model shape than the run that tries to load it."""


def model_signature(model: nn.Module) -> dict[str, list[int]]:
    """``{state_dict key: shape}`` of ``model`` (what must match for its weights to load)."""
    return {k: list(v.shape) for k, v in model.state_dict().items()}


def signature_hash(signature: Mapping[str, list[int]]) -> str:
    """First 12 hex digits of the SHA-256 of a :func:`model_signature` (keys sorted)."""
    text = ";".join(f"{k}:{'x'.join(map(str, v))}" for k, v in sorted(signature.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _describe(signature: Mapping[str, list[int]]) -> str:
    params = sum(int(np.prod(v)) if v else 1 for v in signature.values())
    return f"{len(signature)} tensors, {params} values, shape hash {signature_hash(signature)}"


def rng_state() -> dict[str, Any]:
    """This process's random states: torch CPU, every CUDA device (when present), NumPy, Python."""
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Put back a :func:`rng_state` (the CUDA part only where CUDA is present)."""
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        cuda = list(state["cuda"])[:torch.cuda.device_count()]
        torch.cuda.set_rng_state_all(cuda)
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


def save_checkpoint(path: str | Path, *, experiment: str, model: nn.Module, step: int,
                    optimizer: torch.optim.Optimizer | None = None, scheduler: Any | None = None,
                    data: Mapping[str, Any] | None = None, settings: Mapping[str, Any] | None = None,
                    rng: list[dict[str, Any]] | None = None, extra: Mapping[str, Any] | None = None) -> Path:
    """Write the checkpoint of ``experiment`` after ``step`` completed steps atomically to ``path``.

    ``rng`` is one :func:`rng_state` per rank (default: this process's only); ``data`` the loader's
    position; ``extra`` anything else the run needs back (e.g. a wandb run id). Returns ``path``.
    """
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"step must be an int >= 0 (completed steps), got {step!r}")
    record = {
        "format": FORMAT,
        "experiment": experiment,
        "signature": model_signature(model),
        "step": step,
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "data": dict(data or {}),
        "settings": dict(settings or {}),
        "rng": rng if rng is not None else [rng_state()],
        "world_size": len(rng) if rng is not None else 1,
        "extra": dict(extra or {}),
    }
    buffer = io.BytesIO()
    torch.save(record, buffer)
    path = Path(path)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def check_compatible(record: Mapping[str, Any], experiment: str, model: nn.Module | None,
                     path: str | Path = "the checkpoint") -> None:
    """:class:`CheckpointMismatch` naming both sides when ``record`` is of another format, experiment or
    model shape than ``experiment`` / ``model``."""
    if not isinstance(record, Mapping) or "experiment" not in record or "signature" not in record:
        raise CheckpointMismatch(f"{path} is not a thesislib training checkpoint (no experiment / model "
                                 "signature): point --out at another folder or delete it")
    if record.get("format") != FORMAT:
        raise CheckpointMismatch(f"{path} has checkpoint format {record.get('format')!r}, this thesislib "
                                 f"reads format {FORMAT}: start in another --out folder")
    if record["experiment"] != experiment:
        raise CheckpointMismatch(f"{path} belongs to experiment {record['experiment']!r}, not to this run's "
                                 f"experiment {experiment!r}: use another --out folder (or delete the "
                                 "checkpoint to start over)")
    if model is None:
        return
    theirs, ours = record["signature"], model_signature(model)
    if theirs != ours:
        keys = sorted(set(theirs) | set(ours))
        first = next(k for k in keys if theirs.get(k) != ours.get(k))
        raise CheckpointMismatch(
            f"{path} holds another model shape than this run of {experiment!r}: the checkpoint has "
            f"{_describe(theirs)}, this model {_describe(ours)}; first difference {first!r}: checkpoint "
            f"{theirs.get(first, 'absent')}, model {ours.get(first, 'absent')}. Were the settings (width, "
            "scale) changed? Use another --out folder or the settings that wrote it.")


def load_checkpoint(path: str | Path, experiment: str, model: nn.Module | None = None) -> dict[str, Any]:
    """Read and check a checkpoint (:func:`check_compatible`); with ``model``, load its weights into it.

    Returns the record (``step``, ``optimizer``, ``scheduler``, ``data``, ``rng``, ``settings``, ``extra``);
    optimiser and scheduler states are put back by the caller, who owns those objects.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        record = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # truncated or foreign file
        raise CheckpointMismatch(f"cannot read {path} as a checkpoint ({type(error).__name__}: {error}); "
                                 "use another --out folder or delete the file") from error
    check_compatible(record, experiment, model, path)
    if model is not None:
        model.load_state_dict(record["model"])
    return record


class Checkpointer(Callback):
    """Save a checkpoint every ``every`` completed steps and after the last step (a :func:`train` callback).

    Every rank takes part (their RNG states are gathered to rank 0); rank 0 alone writes. ``model`` is
    the user's module (not the DDP wrapper); ``data()`` returns the loader position, ``extra()`` any
    other state, both read at save time.
    """

    def __init__(self, path: str | Path, experiment: str, model: nn.Module, every: int | None,
                 scheduler: Any | None = None, data: Callable[[], Mapping[str, Any]] | None = None,
                 settings: Mapping[str, Any] | None = None,
                 extra: Callable[[], Mapping[str, Any]] | None = None) -> None:
        if every is not None and (isinstance(every, bool) or not isinstance(every, int) or every < 1):
            raise ValueError(f"checkpoint interval must be an int >= 1 (steps) or None, got {every!r}")
        self.path, self.experiment, self.model, self.every = Path(path), experiment, model, every
        self.scheduler, self.data, self.settings, self.extra = scheduler, data, settings, extra
        self.saved: list[int] = []

    def save(self, state: TrainState, completed: int) -> None:
        """Write the checkpoint after ``completed`` steps (all ranks call this)."""
        rngs = all_gather_objects(rng_state())
        if is_main():
            save_checkpoint(self.path, experiment=self.experiment, model=self.model, step=completed,
                            optimizer=state.optimizer, scheduler=self.scheduler,
                            data=self.data() if self.data else None, settings=self.settings, rng=rngs,
                            extra=self.extra() if self.extra else None)
        self.saved.append(completed)

    def on_step_end(self, state: TrainState) -> None:
        completed = state.step + 1
        if self.every is not None and completed % self.every == 0:
            self.save(state, completed)

    def on_train_end(self, state: TrainState) -> None:
        completed = state.step + 1
        if not self.saved or self.saved[-1] != completed:
            self.save(state, completed)


def restore_rng(record: Mapping[str, Any], fallback_seed: int) -> bool:
    """Put back this rank's RNG state of ``record``; a rank the checkpoint did not have (more processes than
    wrote it) is seeded from ``fallback_seed``. Returns whether a saved state was used."""
    from thesislib.config import seed_everything

    states = record.get("rng") or []
    if rank() < len(states) and len(states) == world_size():
        set_rng_state(states[rank()])
        return True
    seed_everything(fallback_seed)
    return False


__all__.append("restore_rng")
