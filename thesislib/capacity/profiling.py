"""Per-layer cost of a network on a device: MACs counted, latency measured.

``profile(net, example_inputs, device)`` runs ``net`` with forward hooks on its
convolutions, linear layers and attention modules and returns, per layer, the
multiply-accumulates of one forward pass (counted from the tensor shapes; the
standard formulas ``out_elements * in_channels/groups * kernel`` for
convolutions, ``out_elements * in_features`` for linear layers, ``2 * B * heads
* L * S * head_dim`` for the two attention matmuls) and its latency: wall time
between a pre-hook and a hook (``time.perf_counter`` with a fixed number of CPU
threads; ``torch.cuda.Event`` pairs on CUDA), after ``warmup`` passes, the
median over ``repeats`` passes. The end-to-end latency is measured separately
without hooks, by :func:`thesislib.metrics.time_calls` (the one timer). Attention modules report their own cost only (their ``qkv`` /
``proj`` layers are separate entries). Results are cached in memory per
(device, threads, model structure, input shapes) and, with ``cache_dir``, on disk
as JSON written atomically.
"""

from __future__ import annotations

import hashlib
import json
import math
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from thesislib.metrics import fixed_threads, time_calls
from thesislib.results import atomic_write_text
from thesislib.runtime import resolve_device

CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
CONV_TRANSPOSE_TYPES = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


@dataclass
class LayerProfile:
    """Cost of one layer in one forward pass of the profiled inputs."""

    name: str
    kind: str                 # "conv", "conv_transpose", "linear", "attention"
    macs: int
    latency: float            # seconds, median over repeats
    in_channels: int
    out_channels: int
    groups: int = 1

    @property
    def depthwise(self) -> bool:
        """Every input channel has its own filter group (cost linear in the channel count)."""
        return self.groups > 1 and self.groups == self.in_channels


@dataclass
class Profile:
    """Per-layer MACs and latency of a model on a device."""

    layers: dict[str, LayerProfile]
    latency: float            # end-to-end forward, seconds (median, no hooks)
    device: str
    threads: int
    key: str
    repeats: int
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def macs(self) -> int:
        """Total MACs of the profiled layers."""
        return sum(layer.macs for layer in self.layers.values())

    @property
    def layer_latency(self) -> float:
        """Sum of the profiled layers' latencies (the rest is BatchNorm, activations, additions...)."""
        return sum(layer.latency for layer in self.layers.values())

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["layers"] = [asdict(layer) for layer in self.layers.values()]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Profile":
        layers = {row["name"]: LayerProfile(**row) for row in d["layers"]}
        return cls(**{**d, "layers": layers})


def _is_attention(module: nn.Module) -> bool:
    if isinstance(module, nn.MultiheadAttention):
        return True
    return hasattr(module, "num_heads") and hasattr(module, "head_dim") and hasattr(module, "qkv")


def profiled_modules(net: nn.Module) -> dict[str, nn.Module]:
    """Modules whose cost ``profile`` reports: convolutions, linear layers, attention."""
    out = {}
    for name, module in net.named_modules():
        if isinstance(module, CONV_TYPES + CONV_TRANSPOSE_TYPES + (nn.Linear,)) or _is_attention(module):
            out[name] = module
    return out


def _first_tensor(args: Any) -> torch.Tensor | None:
    if isinstance(args, torch.Tensor):
        return args
    if isinstance(args, (tuple, list)):
        for a in args:
            t = _first_tensor(a)
            if t is not None:
                return t
    return None


def layer_macs(module: nn.Module, inputs: Sequence[Any], output: Any) -> tuple[str, int, int, int, int]:
    """``(kind, macs, in_channels, out_channels, groups)`` of one call of ``module``."""
    x = _first_tensor(inputs)
    y = _first_tensor(output)
    if isinstance(module, CONV_TYPES):
        kernel = math.prod(module.kernel_size)
        macs = y.numel() * (module.in_channels // module.groups) * kernel
        return "conv", macs, module.in_channels, module.out_channels, module.groups
    if isinstance(module, CONV_TRANSPOSE_TYPES):
        kernel = math.prod(module.kernel_size)
        macs = x.numel() * (module.out_channels // module.groups) * kernel
        return "conv_transpose", macs, module.in_channels, module.out_channels, module.groups
    if isinstance(module, nn.Linear):
        return "linear", y.numel() * module.in_features, module.in_features, module.out_features, 1
    if isinstance(module, nn.MultiheadAttention):
        q = x if module.batch_first else x.transpose(0, 1)
        b, length, e = q.shape
        key = inputs[1] if len(inputs) > 1 and isinstance(inputs[1], torch.Tensor) else x
        s = key.shape[1] if module.batch_first else key.shape[0]
        proj = b * length * e * e + 2 * b * s * e * e + b * length * e * e  # q, k, v, out projections
        return "attention", proj + 2 * b * length * s * e, e, e, 1
    if _is_attention(module):
        b, length = x.shape[0], x.shape[1]
        inner = module.num_heads * module.head_dim
        return "attention", 2 * b * length * length * inner, inner, inner, 1
    raise ValueError(f"no MAC formula for {type(module).__name__}")


def structure_key(net: nn.Module, example_inputs: Any, device: torch.device, threads: int) -> str:
    """Hash of the model structure (module types, tensor shapes), input shapes, device and threads."""
    parts = [str(device.type), str(threads)]
    for name, module in net.named_modules():
        parts.append(f"{name}:{type(module).__name__}")
    for name, t in list(net.named_parameters()) + list(net.named_buffers()):
        parts.append(f"{name}:{tuple(t.shape)}:{t.dtype}")
    inputs = example_inputs if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
    parts.extend(f"in:{tuple(t.shape)}:{t.dtype}" for t in inputs if isinstance(t, torch.Tensor))
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


_MEMORY_CACHE: dict[str, Profile] = {}


def clear_cache() -> None:
    """Forget the in-memory profiles."""
    _MEMORY_CACHE.clear()


class _Timer:
    """Pre-hook/hook pair timing every call of the profiled modules."""

    def __init__(self, modules: dict[str, nn.Module], cuda: bool):
        self.modules, self.cuda = modules, cuda
        self.handles: list[Any] = []
        self.starts: dict[str, Any] = {}
        self.pending: list[tuple[str, Any, Any]] = []
        self.times: dict[str, float] = {}
        self.shapes: dict[str, tuple[str, int, int, int, int]] = {}

    def __enter__(self) -> "_Timer":
        for name, module in self.modules.items():
            self.handles.append(module.register_forward_pre_hook(self._pre(name)))
            self.handles.append(module.register_forward_hook(self._post(name)))
        return self

    def __exit__(self, *exc: Any) -> None:
        for h in self.handles:
            h.remove()

    def _now(self) -> Any:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def _pre(self, name: str):
        def hook(module, args):
            self.starts[name] = self._now()
        return hook

    def _post(self, name: str):
        def hook(module, args, output):
            end = self._now()
            if name not in self.shapes:
                self.shapes[name] = layer_macs(module, args, output)
            self.pending.append((name, self.starts.pop(name), end))
        return hook

    def collect(self) -> dict[str, float]:
        """Seconds per layer of the pass just run (summed over repeated calls)."""
        if self.cuda:
            torch.cuda.synchronize()
        out: dict[str, float] = {}
        for name, start, end in self.pending:
            dt = start.elapsed_time(end) / 1e3 if self.cuda else end - start
            out[name] = out.get(name, 0.0) + dt
        self.pending.clear()
        return out


def _forward(net: nn.Module, inputs: tuple[Any, ...]) -> Any:
    return net(*inputs)


def profile(net: nn.Module, example_inputs: Any, device: torch.device | str | None = None,
            repeats: int = 20, warmup: int = 3, threads: int | None = None,
            cache_dir: str | Path | None = None) -> Profile:
    """Per-layer MACs and measured latency of ``net`` on ``device`` (see the module docstring).

    ``net`` is moved to ``device`` (default: the device of its parameters) and run
    in eval mode under ``torch.no_grad``; ``threads`` fixes ``torch.set_num_threads``
    during the measurement on CPU (default: the current setting). Attention entries
    exclude the time of their child layers.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}")
    device = resolve_device(net, device)
    inputs = tuple(example_inputs) if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
    inputs = tuple(t.to(device) if isinstance(t, torch.Tensor) else t for t in inputs)
    n_threads = threads if threads is not None else torch.get_num_threads()
    key = structure_key(net, inputs, device, n_threads)
    if key in _MEMORY_CACHE:
        return _MEMORY_CACHE[key]
    path = Path(cache_dir) / f"profile-{key}.json" if cache_dir is not None else None
    if path is not None and path.exists():
        result = Profile.from_dict(json.loads(path.read_text()))
        _MEMORY_CACHE[key] = result
        return result

    cuda = device.type == "cuda"
    net = net.to(device)
    was_training = net.training
    net.eval()
    modules = profiled_modules(net)
    try:
        with torch.no_grad(), fixed_threads(None if cuda else threads):
            totals = time_calls(lambda: _forward(net, inputs), repeats, warmup, cuda)
            per_layer: dict[str, list[float]] = {name: [] for name in modules}
            with _Timer(modules, cuda) as timer:
                for i in range(warmup + repeats):
                    _forward(net, inputs)
                    times = timer.collect()
                    if i >= warmup:
                        for name, dt in times.items():
                            per_layer[name].append(dt)
    finally:
        net.train(was_training)

    layers: dict[str, LayerProfile] = {}
    for name, module in modules.items():
        if name not in timer.shapes:       # never called in forward (e.g. MHA's out_proj)
            continue
        kind, macs, cin, cout, groups = timer.shapes[name]
        layers[name] = LayerProfile(name, kind, int(macs), statistics.median(per_layer[name]), cin, cout, groups)
    for name, layer in layers.items():      # attention: exclusive of its child layers
        if layer.kind == "attention":
            children = [c for c in layers if c.startswith(name + ".")]
            layer.latency = max(0.0, layer.latency - sum(layers[c].latency for c in children))
    result = Profile(layers=layers, latency=statistics.median(totals), device=str(device),
                     threads=n_threads, key=key, repeats=repeats)
    _MEMORY_CACHE[key] = result
    if path is not None:
        atomic_write_text(path, json.dumps(result.to_dict(), indent=1))
    return result
