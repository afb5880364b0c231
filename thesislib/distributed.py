"""Data-parallel training with PyTorch's own engine: process group, ranks, seeds, sampler, shared draws.

``torchrun --nproc_per_node N -m thesislib.train ...`` starts ``N`` processes and sets ``RANK``,
``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``; :func:`init_distributed` reads them
and opens the default process group (``nccl`` on CUDA, ``gloo`` on CPU). A plain ``python -m`` run is a
world of one: nothing is initialised and every helper here works unchanged (rank 0, world size 1).

Gradients are all-reduced (averaged) by :class:`torch.nn.parallel.DistributedDataParallel` (Li et al.,
VLDB 2020); :func:`distributed_sampler` gives each rank its ``1/N`` share of every epoch's permutation, so
``N`` ranks of batch ``B`` see, per step, exactly the ``N·B`` examples one process with batch ``N·B`` sees.
Every rank seeds its own random streams with :func:`rank_seed` (one seed → one stream per rank), and a
random choice that all ranks must agree on within a step (the widths of INN or slimmable training)
goes through :func:`broadcast_draw`: rank 0 draws, every rank receives the same value.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Sized, TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DistributedSampler

__all__ = [
    "DistInfo", "init_distributed", "shutdown", "is_distributed", "rank", "world_size", "is_main",
    "barrier", "rank_seed", "per_rank_batch", "distributed_sampler", "broadcast_object", "broadcast_draw",
    "all_gather_objects", "mean_over_ranks", "wrap_ddp", "unwrap",
]

T = TypeVar("T")

_TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: global ``rank``, ``world_size``, ``local_rank`` (its GPU on the node),
    the ``backend`` of the process group (``None`` for a world of one) and its ``device``."""

    rank: int
    world_size: int
    local_rank: int
    backend: str | None
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that writes results, checkpoints, logs and figures."""
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not an integer (torchrun sets it)") from None


def init_distributed(device: str | torch.device = "cpu") -> DistInfo:
    """Open the process group described by torchrun's environment, on ``device`` (``"cpu"`` or ``"cuda"``).

    With ``WORLD_SIZE`` unset or 1 nothing is initialised (a world of one). Otherwise the backend is
    ``nccl`` for CUDA (each process takes ``cuda:LOCAL_RANK``) and ``gloo`` for CPU. Calling it again in
    an initialised process returns the same description.
    """
    kind = torch.device(device).type
    if kind not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
    world = _env_int("WORLD_SIZE", 1)
    grank = _env_int("RANK", 0)
    local = _env_int("LOCAL_RANK", 0)
    if world < 1 or not 0 <= grank < world:
        raise ValueError(f"RANK={grank} and WORLD_SIZE={world} are inconsistent: need 0 <= RANK < WORLD_SIZE")
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("device 'cuda' was asked for but CUDA is not available: use device 'cpu' (gloo)")
        if local >= torch.cuda.device_count():
            raise ValueError(f"LOCAL_RANK={local} but this node has {torch.cuda.device_count()} CUDA devices: "
                             "start torchrun with --nproc_per_node at most the number of GPUs")
        torch.cuda.set_device(local)
        dev = torch.device("cuda", local)
    else:
        dev = torch.device("cpu")
    if world == 1:
        return DistInfo(0, 1, 0, None, dev)
    if not dist.is_initialized():
        missing = [v for v in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(v)]
        if missing:
            raise ValueError(f"WORLD_SIZE={world} but {', '.join(missing)} unset: start the processes with "
                             "torchrun --nproc_per_node N (it sets them)")
        dist.init_process_group("nccl" if kind == "cuda" else "gloo", rank=grank, world_size=world,
                                device_id=dev if kind == "cuda" else None)
    return DistInfo(dist.get_rank(), dist.get_world_size(), local, dist.get_backend(), dev)


def shutdown() -> None:
    """Close the default process group if one is open."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def is_distributed() -> bool:
    """True inside an initialised process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's global rank (0 outside a process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    """The number of processes (1 outside a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main() -> bool:
    """Rank 0 (also true outside a process group): the process that writes files."""
    return rank() == 0


def barrier() -> None:
    """Wait for every rank (no-op in a world of one)."""
    if is_distributed():
        dist.barrier()


def rank_seed(seed: int, rank_: int | None = None) -> int:
    """The seed of rank ``rank_`` (default: this process) derived from one run ``seed``: the first word of
    NumPy's ``SeedSequence([seed, rank])`` (independent streams per rank; rank 0 does not reuse ``seed``)."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    r = rank() if rank_ is None else rank_
    return int(np.random.SeedSequence([seed, r]).generate_state(1)[0])


def per_rank_batch(global_batch: int, world: int | None = None) -> int:
    """``global_batch / world`` (default: the world size); a world size that does not divide the batch is
    a ``ValueError`` saying which process counts would."""
    world = world_size() if world is None else world
    if isinstance(global_batch, bool) or not isinstance(global_batch, int) or global_batch < 1:
        raise ValueError(f"the batch size must be an int >= 1, got {global_batch!r}")
    if global_batch % world:
        divisors = [n for n in range(1, min(global_batch, 64) + 1) if global_batch % n == 0]
        raise ValueError(f"the global batch size {global_batch} is not divisible by the world size {world}: "
                         f"start torchrun with --nproc_per_node in {divisors} or pass --batch-size a multiple "
                         f"of {world}")
    return global_batch // world


def distributed_sampler(dataset: Sized, shuffle: bool = True, seed: int = 0, drop_last: bool = True
                        ) -> DistributedSampler:
    """This rank's :class:`~torch.utils.data.DistributedSampler` of ``dataset`` (a world of one without a
    process group too): epoch ``e``'s permutation comes from ``seed + e`` (``set_epoch``) and rank ``r``
    takes its items ``r, r + N, …``; ``drop_last`` drops the tail that does not split evenly."""
    if len(dataset) < world_size():
        raise ValueError(f"a data set of {len(dataset)} items cannot be split over {world_size()} processes")
    return DistributedSampler(dataset, num_replicas=world_size(), rank=rank(), shuffle=shuffle, seed=seed,
                              drop_last=drop_last)


def broadcast_object(obj: T, src: int = 0) -> T:
    """Rank ``src``'s ``obj`` on every rank (picklable objects; identity in a world of one)."""
    if not is_distributed():
        return obj
    box = [obj if rank() == src else None]
    dist.broadcast_object_list(box, src=src)
    return box[0]  # type: ignore[return-value]


def broadcast_draw(draw: Callable[[], T]) -> T:
    """Call ``draw()`` on rank 0 only and return its value on every rank.

    For random choices every rank must share within a step — the widths of an INN step (Solodskikh et
    al. 2023, Sec. 4.2) or of a slimmable step (Yu et al. 2019): DDP averages gradients of the *same*
    sub-network only if every rank ran it. ``draw`` is any callable returning a picklable value.
    """
    return broadcast_object(draw() if is_main() else None)


def all_gather_objects(obj: Any) -> list[Any]:
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank (``[obj]`` in a world of one)."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def mean_over_ranks(value: float) -> float:
    """The mean of a float over all ranks (the value itself in a world of one); every rank must call it."""
    if not is_distributed():
        return float(value)
    t = torch.tensor([float(value)], dtype=torch.float64,
                     device="cuda" if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(t)
    return float(t.item()) / world_size()


def wrap_ddp(model: nn.Module, device: torch.device) -> nn.Module:
    """``DistributedDataParallel(model)`` in a process group of more than one process, else ``model``.

    The model is moved to ``device`` first; DDP broadcasts rank 0's parameters and buffers, so every
    rank starts from the same weights.
    """
    model.to(device)
    if not is_distributed():
        return model
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def unwrap(model: nn.Module) -> nn.Module:
    """The user's module inside DDP, ``torch.compile`` and :mod:`thesislib.train`'s wrappers."""
    seen = 0
    while seen < 8:
        seen += 1
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):  # torch.compile's OptimizedModule
            model = model._orig_mod  # type: ignore[assignment]
        elif hasattr(model, "wrapped_module"):
            model = model.wrapped_module  # type: ignore[assignment]
        else:
            break
    return model
