"""``notebooks/spectralnorm.ipynb``: spectral normalisation under resampling and pruning (``book/part1/spectralnorm.md``).

Two spectrally normalised networks (``spectral_norm`` on every Conv and Linear layer,
:mod:`thesislib.models.lipschitz`), trained once per scale and cached under ``checkpoints/``:

* ``classifier`` -- the Lipschitz-constrained Fashion-MNIST classifier;
* ``discriminator`` -- the SR-GAN discriminator stack, trained to tell a real high-resolution patch of the
  built-in training photos from its ×2 bicubic down- and up-sampled version (test: the test photos).

Each is compressed at every ``ratios`` entry by ``continuous`` (the raw weight ``original`` resampled, then
re-normalised: ``to_continuous`` → ``resample`` → ``export``, which keeps the parametrisation),
``continuous_normalised`` (the normalised weight ``W/σ`` resampled, no re-normalisation: the left side of eq.
``eq-sn-commute``), ``l1`` and ``obs`` (``thesislib.pruning.prune``: spectral norm stripped, pruned, registered
again). Measured for each: every layer's σ of the reshaped weight (SVD) and operator norm at its input size
(:mod:`thesislib.spectral`), their products (the Lipschitz bound uses the operator norms), accuracy, the
empirical Lipschitz estimate (largest gradient norm of the logit margin over test images), and for a
spectral-norm result the power-iteration drift (σ change after one train-mode forward). The quadrature's
effect: eq. ``eq-sn-scale`` predicts that resampling a layer from ``n_out × n_in`` to ``m_out × m_in``
channels multiplies σ by ``sqrt((m_out/n_out) / (m_in/n_in))``, compared with the measured ratio.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch import nn
from torch.utils.data import DataLoader, Dataset

from thesislib.config import default_device, seed_everything, settings_for
from thesislib.results import REPO_ROOT, atomic_write_bytes, ratio_key
from thesislib.runtime import batch_inputs, model_device

from .common import ResultMixin, first_images

NAME = "spectralnorm"
NETWORKS: tuple[str, ...] = ("classifier", "discriminator")
VARIANTS: tuple[str, ...] = ("continuous", "continuous_normalised", "l1", "obs")
#: Russian names of the variants in tables and figures
VARIANT_LABELS: dict[str, str] = {"continuous": "непрерывный (ренормировка)",
                                  "continuous_normalised": "непрерывный (нормированные веса)",
                                  "l1": "L1-норма", "obs": "OBS"}

__all__ = ["Settings", "SETTINGS", "settings", "Result", "run", "sn_model", "RealOrUpsampled", "measure",
           "compress", "quadrature_rows", "plot_sigmas", "plot_lipschitz", "summary_rows", "NETWORKS", "VARIANTS"]


@dataclass(frozen=True)
class Settings:
    """Sizes of the SpectralNorm experiment at one scale: the classifier (``width``, ``epochs``, Adam ``lr``), the
    discriminator (``disc_width``, ``patch``, ``disc_patches`` per training photo, ``disc_epochs``,
    ``disc_lr``), the training ``temperature`` (cross-entropy of ``temperature · logits``), the kept
    ``ratios``, ``test_images`` for accuracy, ``lipschitz_images`` for the empirical estimate,
    ``calib_batches`` for OBS."""

    scale: str
    width: float
    epochs: int
    lr: float
    disc_width: float
    patch: int
    disc_patches: int
    disc_epochs: int
    disc_lr: float
    ratios: tuple[float, ...]
    test_images: int | None
    lipschitz_images: int
    calib_batches: int
    temperature: float = 20.0
    seed: int = 0


SETTINGS: dict[str, Settings] = {
    "smoke": Settings("smoke", width=0.25, epochs=1, lr=1e-3, disc_width=0.125, patch=32, disc_patches=8,
                      disc_epochs=1, disc_lr=1e-3, ratios=(0.5,), test_images=256, lipschitz_images=64,
                      calib_batches=1),
    "cpu": Settings("cpu", width=0.5, epochs=1, lr=1e-3, disc_width=0.125, patch=32, disc_patches=128,
                    disc_epochs=4, disc_lr=1e-3, ratios=(0.75, 0.5, 0.25), test_images=2000, lipschitz_images=500,
                    calib_batches=5),
    "gpu": Settings("gpu", width=1.0, epochs=15, lr=1e-3, disc_width=0.5, patch=32, disc_patches=1024,
                    disc_epochs=10, disc_lr=1e-3, ratios=(0.75, 0.5, 0.25), test_images=None, lipschitz_images=2000,
                    calib_batches=20),
}


def settings(scale: str) -> Settings:
    """The settings of ``scale`` (``ValueError`` naming the scales for an unknown one)."""
    return settings_for(SETTINGS, scale)


# ------------------------------------------------------------------------------------------------ data
class RealOrUpsampled(Dataset):
    """Item ``2i``: the HR patch ``i`` of an :class:`thesislib.data.sr.SRPatches` set, label 1 (real); item
    ``2i + 1``: its LR patch upsampled back by bicubic interpolation, label 0 (what an SR generator's
    discriminator must reject)."""

    def __init__(self, patches: Dataset) -> None:
        self.patches = patches

    def __len__(self) -> int:
        return 2 * len(self.patches)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        lr, hr = self.patches[index // 2]
        if index % 2 == 0:
            return hr, torch.tensor(1)
        up = F.interpolate(lr[None], size=hr.shape[-2:], mode="bicubic", align_corners=False)[0].clamp(0, 1)
        return up, torch.tensor(0)


def _disc_loaders(s: Settings) -> tuple[DataLoader, DataLoader]:
    from thesislib.data.sr import SRPatches, sr_photos

    train = RealOrUpsampled(SRPatches(sr_photos("train"), 2, s.patch, s.disc_patches, seed=s.seed))
    test = RealOrUpsampled(SRPatches(sr_photos("test"), 2, s.patch, max(8, s.disc_patches // 2), seed=s.seed + 1,
                                     augment=False))
    gen = torch.Generator().manual_seed(s.seed + 1)
    return (DataLoader(train, batch_size=64, shuffle=True, generator=gen, drop_last=True),
            DataLoader(test, batch_size=256, shuffle=False))


def _loaders(network: str, s: Settings) -> tuple[Any, DataLoader, DataLoader]:
    """``(train, calib, test)`` of a network."""
    if network == "classifier":
        from thesislib.data import fashion_loaders

        loaders = fashion_loaders(s.scale, seed=s.seed)
        return loaders.train, loaders.calib, first_images(loaders.test, s.test_images)
    train, test = _disc_loaders(s)
    return train, train, first_images(test, s.test_images)


# ------------------------------------------------------------------------------------------ the models
def _recipe(network: str, s: Settings) -> dict[str, Any]:
    if network == "classifier":
        return {"width": s.width, "epochs": s.epochs, "lr": s.lr, "temperature": s.temperature, "seed": s.seed}
    return {"width": s.disc_width, "patch": s.patch, "patches": s.disc_patches, "epochs": s.disc_epochs,
            "lr": s.disc_lr, "temperature": s.temperature, "seed": s.seed}


def _build(network: str, s: Settings) -> nn.Module:
    from thesislib.models.lipschitz import sn_classifier, sn_discriminator

    if network == "classifier":
        return sn_classifier(width=s.width)
    if network == "discriminator":
        return sn_discriminator(width=s.disc_width, patch_size=s.patch)
    raise ValueError(f"unknown network {network!r}; networks: {', '.join(NETWORKS)}")


def checkpoint_path(network: str, s: Settings) -> Path:
    """``checkpoints/sn_<network>-<scale>-<key>.pt`` (``key``: SHA-256 of the recipe and of the architecture's
    ``repr``, 10 hex digits: a changed model is trained anew)."""
    spec = {"scale": s.scale, **_recipe(network, s), "architecture": repr(_build(network, s))}
    key = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()
    return REPO_ROOT / "checkpoints" / f"sn_{network}-{s.scale}-{key[:10]}.pt"


def sn_model(network: str, s: Settings, device: torch.device | str | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """The trained spectral-norm ``network`` of ``s`` in eval mode and its record (trained once, cached
    atomically; the state dict holds the power-iteration vectors). Training: Adam with a cosine learning rate
    on the cross-entropy of ``temperature · logits`` -- the network itself is unchanged (argmax, σ and the
    Lipschitz constant are those of the logits); without it a 1-Lipschitz stack's logits are too small to
    learn from (SGD stays at chance)."""
    from thesislib.metrics import accuracy
    from thesislib.training import cosine_factor
    from thesislib.training import train as train_steps

    model = _build(network, s)
    path = checkpoint_path(network, s)
    if path.exists():
        record = torch.load(path, map_location="cpu", weights_only=True)
    else:
        seed_everything(s.seed)
        model = _build(network, s)
        train, _calib, test = _loaders(network, s)
        dev = torch.device(device) if device is not None else default_device()
        started = time.perf_counter()
        epochs, lr = (s.epochs, s.lr) if network == "classifier" else (s.disc_epochs, s.disc_lr)
        steps = epochs * len(train)
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda k: cosine_factor(k, steps))
        state = train_steps(model, train, steps, lambda z, y: F.cross_entropy(s.temperature * z, y), optimizer,
                      schedule, device=dev)
        model.eval()
        history = [{"steps": steps, "loss": float(sum(state.losses[-50:]) / len(state.losses[-50:])),
                    "test_accuracy": accuracy(model, test)}]
        record = {"state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                  "recipe": _recipe(network, s), "history": history, "train_seconds": time.perf_counter() - started,
                  "device": str(dev)}
        buffer = io.BytesIO()
        torch.save(record, buffer)
        atomic_write_bytes(path, buffer.getvalue())
    model.load_state_dict(record["state_dict"])
    dev = torch.device(device) if device is not None else default_device()
    return model.to(dev).eval(), record


# ------------------------------------------------------------------------------------- compress, measure
def compress(model: nn.Module, variant: str, ratio: float, example: torch.Tensor, calib: Any,
             calib_batches: int) -> nn.Module:
    """``model`` compressed to ``ratio`` by ``variant`` (one of :data:`VARIANTS`; see the module docstring)."""
    from thesislib.continuous import to_continuous
    from thesislib.pruning import prune
    from thesislib.pruning.structural import strip_spectral_norm

    if variant == "continuous":
        return to_continuous(model, example).resample(ratio).export().eval()
    if variant == "continuous_normalised":
        plain = copy.deepcopy(model).eval()
        strip_spectral_norm(plain)
        return to_continuous(plain, example).resample(ratio).export().eval()
    if variant in ("l1", "obs"):
        return prune(model, variant, ratio, example, calib=calib, calib_batches=calib_batches)
    raise ValueError(f"unknown variant {variant!r}; variants: {', '.join(VARIANTS)}")


def measure(model: nn.Module, example: torch.Tensor, test: Any, lipschitz: Any) -> dict[str, Any]:
    """Layers' σ (matrix, raw, operator), the two products, accuracy, empirical Lipschitz estimate, and the
    largest power-iteration drift (``None`` without spectral norm)."""
    from thesislib.graph import spectral_norms
    from thesislib.metrics import accuracy
    from thesislib.spectral import empirical_lipschitz, layer_sigmas, lipschitz_bound, power_iteration_drift

    layers = layer_sigmas(model, example)
    drift = None
    if spectral_norms(model):
        probe = copy.deepcopy(model)
        drift = max(r["drift"] for r in power_iteration_drift(probe, example))
    return {"layers": layers, "sigma_max": max(r["matrix"] for r in layers),
            "matrix_bound": lipschitz_bound(layers, "matrix"), "lipschitz_bound": lipschitz_bound(layers),
            "accuracy": accuracy(model, test), "empirical_lipschitz": empirical_lipschitz(model, lipschitz),
            "drift": drift, "spectral_norm": bool(spectral_norms(model))}


def quadrature_rows(full: Sequence[dict[str, Any]], small: Sequence[dict[str, Any]], key: str = "raw"
                    ) -> list[dict[str, Any]]:
    """Per layer: measured ``σ_small / σ_full`` of ``key`` against eq. ``eq-sn-scale``'s
    ``sqrt((m_out/n_out) / (m_in/n_in))``."""
    rows = []
    for f, m in zip(full, small):
        r_out, r_in = m["out_channels"] / f["out_channels"], m["in_channels"] / f["in_channels"]
        rows.append({"name": f["name"], "r_out": r_out, "r_in": r_in, "measured": m[key] / f[key],
                     "predicted": math.sqrt(r_out / r_in)})
    return rows


def _log_error(rows: Sequence[dict[str, Any]], key: str) -> float:
    return sum(abs(math.log(r["measured"] / (r[key] if key != "one" else 1.0))) for r in rows) / len(rows)


@dataclass
class Result(ResultMixin):
    """Every number ``book/part1/spectralnorm.md`` quotes. ``records``: one per (network, variant, ratio) with
    its layer rows; grids ``<quantity>.<network>.<variant>.<r-key>`` for ``accuracy``, ``lipschitz_bound``,
    ``matrix_bound``, ``empirical_lipschitz``, ``sigma_max``, ``drift``; ``unpruned.<network>.<quantity>``;
    ``quadrature.<network>.<variant>``: per-layer measured vs predicted σ ratios and ``*_error`` their mean
    ``|ln(measured/predicted)|`` (and against "no change"); ``predictions``: which predictions held."""

    ratios: list[float]
    unpruned: dict[str, dict[str, Any]]
    records: list[dict[str, Any]]
    accuracy: dict[str, dict[str, dict[str, float]]]
    lipschitz_bound: dict[str, dict[str, dict[str, float]]]
    matrix_bound: dict[str, dict[str, dict[str, float]]]
    empirical_lipschitz: dict[str, dict[str, dict[str, float]]]
    sigma_max: dict[str, dict[str, dict[str, float]]]
    drift: dict[str, dict[str, dict[str, float]]]
    quadrature: dict[str, dict[str, list[dict[str, Any]]]]
    quadrature_error: dict[str, dict[str, float]]
    no_change_error: dict[str, dict[str, float]]
    exported_sigma_max: float
    exported_drift_max: float
    training: dict[str, dict[str, Any]]
    predictions: dict[str, bool]
    verdicts: dict[str, str]


def _grid(records: Sequence[dict[str, Any]], key: str) -> dict[str, dict[str, dict[str, float]]]:
    out: dict[str, dict[str, dict[str, float]]] = {}
    for r in records:
        if r.get(key) is not None:
            out.setdefault(r["network"], {}).setdefault(r["variant"], {})[ratio_key(r["ratio"])] = r[key]
    return out


def run(settings: Settings, seed: int = 0, device: torch.device | str | None = None) -> Result:
    """Both networks, every variant and ratio (see the module docstring)."""
    s = settings
    seed_everything(seed)
    unpruned, records, training = {}, [], {}
    quadrature: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for network in NETWORKS:
        model, record = sn_model(network, s, device=device)
        _train, calib, test = _loaders(network, s)
        lip = first_images(test, s.lipschitz_images)
        dev = model_device(model)
        example = batch_inputs(next(iter(test)))[:1].to(dev)
        training[network] = {"test_accuracy": record["history"][-1].get("test_accuracy"),
                             "train_seconds": record["train_seconds"], "device": record["device"],
                             "recipe": record["recipe"]}
        full = measure(model, example, test, lip)
        unpruned[network] = full
        for variant in VARIANTS:
            for ratio in s.ratios:
                small = compress(model, variant, ratio, example, calib, s.calib_batches)
                rec = {"network": network, "variant": variant, "ratio": ratio, **measure(small, example, test, lip)}
                records.append(rec)
                if variant.startswith("continuous"):
                    quadrature.setdefault(network, {}).setdefault(variant, []).extend(
                        {**q, "ratio": ratio} for q in quadrature_rows(full["layers"], rec["layers"],
                                                                        "raw" if variant == "continuous" else "matrix"))
    q_err = {n: {v: _log_error(rows, "predicted") for v, rows in per.items()} for n, per in quadrature.items()}
    no_change = {n: {v: _log_error(rows, "one") for v, rows in per.items()} for n, per in quadrature.items()}
    cont = [r for r in records if r["variant"] == "continuous"]
    sn_results = [r for r in records if r["spectral_norm"]]
    exported_sigma = max(r["sigma_max"] for r in cont)
    exported_drift = max(r["drift"] for r in cont)
    predictions = {
        "exported_sigma_within_1e3": exported_sigma <= 1 + 1e-3,
        "exported_vectors_consistent": exported_drift <= 0.01,
        "normalised_resampling_breaks_sigma": all(abs(r["sigma_max"] - 1) > 1e-3 for r in records
                                                  if r["variant"] == "continuous_normalised"),
        "quadrature_law_beats_no_change": all(q_err[n][v] < no_change[n][v] for n in q_err for v in q_err[n]),
        "empirical_below_sqrt2_bound": all(r["empirical_lipschitz"] <= math.sqrt(2) * r["lipschitz_bound"] * (1 + 1e-6)
                                           for r in [*records, *unpruned.values()]),
        "pruned_sigma_within_1e3": all(r["sigma_max"] <= 1 + 1e-3 for r in sn_results if r["variant"] in ("l1", "obs")),
    }
    return Result(
        ratios=list(s.ratios), unpruned=unpruned, records=records, accuracy=_grid(records, "accuracy"),
        lipschitz_bound=_grid(records, "lipschitz_bound"), matrix_bound=_grid(records, "matrix_bound"),
        empirical_lipschitz=_grid(records, "empirical_lipschitz"), sigma_max=_grid(records, "sigma_max"),
        drift=_grid(records, "drift"), quadrature=quadrature, quadrature_error=q_err, no_change_error=no_change,
        exported_sigma_max=exported_sigma, exported_drift_max=exported_drift, training=training,
        predictions=predictions, verdicts={k: "да" if v else "нет" for k, v in predictions.items()})


# ------------------------------------------------------------------------------------------ tables, figures
def summary_rows(result: Result, network: str) -> list[dict[str, Any]]:
    """One row per (variant, ratio) and the unpruned net: accuracy (fraction), max σ, the bounds, the estimate,
    the drift."""
    def row(name: str, ratio: float, r: dict[str, Any]) -> dict[str, Any]:
        return {"вариант": name, "доля": ratio, "точность": r["accuracy"], "max σ": r["sigma_max"],
                "Π σ (матрицы)": r["matrix_bound"], "Π ‖·‖ (оператор)": r["lipschitz_bound"],
                "эмп. Липшиц": r["empirical_lipschitz"], "дрейф σ": "—" if r["drift"] is None else r["drift"]}
    rows = [row("исходная", 1.0, result.unpruned[network])]
    rows += [row(VARIANT_LABELS[r["variant"]], r["ratio"], r) for r in result.records if r["network"] == network]
    return rows


def plot_sigmas(result: Result, network: str) -> Figure:
    """σ of every layer's reshaped weight after compression at each ratio, one panel per variant."""
    from thesislib.plotting import figure, finish

    fig, axes = figure(len(VARIANTS), width=3.4, height=3.2, sharey=True)
    names = [r["name"] for r in result.unpruned[network]["layers"]]
    for ax, variant in zip(axes, VARIANTS):
        for ratio in result.ratios:
            rec = next(r for r in result.records if r["network"] == network and r["variant"] == variant
                       and r["ratio"] == ratio)
            ax.plot(range(len(names)), [l["matrix"] for l in rec["layers"]], marker="o", label=f"r = {ratio}")
        ax.axhline(1.0, color="gray", linestyle="--", linewidth=1)
        ax.set_xticks(range(len(names)), [str(i + 1) for i in range(len(names))])
        finish(ax, "слой", "σ весов" if variant == VARIANTS[0] else "", title=VARIANT_LABELS[variant],
               legend=variant == VARIANTS[-1])
    fig.tight_layout()
    return fig


def plot_lipschitz(result: Result) -> Figure:
    """The Lipschitz bound (product of operator norms, solid) and the empirical estimate (dashed) against the
    kept ratio, one colour per variant, one panel per network (log scale)."""
    from thesislib.plotting import figure, finish, method_style

    fig, axes = figure(len(NETWORKS), width=4.5, height=3.6)
    for ax, network in zip(axes, NETWORKS):
        for variant in VARIANTS:
            st = method_style(variant)
            xs = [1.0, *result.ratios]
            grid_b = result.lipschitz_bound[network][variant]
            grid_e = result.empirical_lipschitz[network][variant]
            full = result.unpruned[network]
            ax.plot(xs, [full["lipschitz_bound"], *(grid_b[ratio_key(r)] for r in result.ratios)],
                    color=st["color"], marker=st["marker"], label=VARIANT_LABELS[variant])
            ax.plot(xs, [full["empirical_lipschitz"], *(grid_e[ratio_key(r)] for r in result.ratios)],
                    color=st["color"], marker=st["marker"], linestyle="--")
        ax.set_yscale("log")
        finish(ax, "ratio", "константа Липшица", title={"classifier": "классификатор",
                                                        "discriminator": "дискриминатор"}[network],
               legend=network == NETWORKS[0])
    fig.tight_layout()
    return fig

