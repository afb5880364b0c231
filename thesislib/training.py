"""Training and evaluation of the classifiers, and the cached Fashion-MNIST ResNet-18.

Every experiment notebook starts from the same trained model: :func:`fashion_resnet18`
trains it once per scale with a fixed seed and caches it atomically under ``checkpoints/``.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
from torch import nn
from torch.utils.data import DataLoader

from thesislib.config import check_scale, default_device, seed_everything
from thesislib.metrics import accuracy as evaluate_accuracy  # one top-1 accuracy for the whole package
from thesislib.results import REPO_ROOT, atomic_write_bytes


def train_classifier(model: nn.Module, loader: DataLoader, epochs: int, lr: float = 0.05,
                     device: torch.device | str | None = None, weight_decay: float = 5e-4,
                     eval_loader: Iterable | None = None,
                     step_hook: Callable[[int], None] | None = None) -> list[dict[str, float]]:
    """Train with SGD (momentum 0.9, Nesterov) and a cosine learning-rate schedule on cross-entropy.

    Returns one record per epoch: mean training loss, training accuracy and, when
    ``eval_loader`` is given, its accuracy. ``step_hook(step)`` runs before every step
    (INN training draws its random widths there).
    """
    if epochs < 1:
        raise ValueError(f"epochs must be ≥ 1, got {epochs}")
    device = torch.device(device) if device is not None else default_device()
    model.to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True,
                                weight_decay=weight_decay)
    total_steps = epochs * len(loader)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total_steps) / total_steps)))
    loss_fn = nn.CrossEntropyLoss()
    history: list[dict[str, float]] = []
    step = 0
    for epoch in range(epochs):
        model.train()
        loss_sum = correct = seen = 0.0
        for x, y in loader:
            if step_hook is not None:
                step_hook(step)
            x, y = x.to(device), y.to(device)
            logits = model(x)
            loss = loss_fn(logits, y)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"training loss became {loss.item()} at step {step}: lower lr={lr}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            step += 1
            loss_sum += loss.item() * y.numel()
            correct += (logits.argmax(1) == y).sum().item()
            seen += y.numel()
        record = {"epoch": epoch + 1, "loss": loss_sum / seen, "train_accuracy": correct / seen}
        if eval_loader is not None:
            record["test_accuracy"] = evaluate_accuracy(model, eval_loader, device)
        history.append(record)
    model.eval()
    return history


@dataclass(frozen=True)
class ClassifierRecipe:
    """Model and training settings of the Fashion-MNIST ResNet-18 at one scale."""

    width: float
    epochs: int
    lr: float
    seed: int = 0


FASHION_RECIPES: dict[str, ClassifierRecipe] = {
    "smoke": ClassifierRecipe(width=0.125, epochs=4, lr=0.05),
    "cpu": ClassifierRecipe(width=0.25, epochs=2, lr=0.05),
    "gpu": ClassifierRecipe(width=1.0, epochs=15, lr=0.05),
}


def checkpoint_dir() -> Path:
    """``checkpoints/`` in the repository (ignored by git)."""
    return REPO_ROOT / "checkpoints"


def _fashion_model(recipe: ClassifierRecipe) -> nn.Module:
    from thesislib.models import resnet18

    return resnet18(num_classes=10, in_channels=1, stem="small", width=recipe.width)


def _fashion_checkpoint(scale: str) -> tuple[Path, ClassifierRecipe]:
    recipe = FASHION_RECIPES[check_scale(scale)]
    key = hashlib.sha256(json.dumps({"scale": scale, **asdict(recipe)}, sort_keys=True).encode()).hexdigest()[:10]
    return checkpoint_dir() / f"fashion_resnet18-{scale}-{key}.pt", recipe


def train_fashion_resnet18(scale: str, device: torch.device | str | None = None) -> dict[str, Any]:
    """Train the Fashion-MNIST ResNet-18 (small-image stem) of ``scale`` from its seed, cache it
    atomically, and return the checkpoint record (state_dict, recipe, history, test accuracy, seconds)."""
    from thesislib.data import fashion_loaders

    path, recipe = _fashion_checkpoint(scale)
    device = torch.device(device) if device is not None else default_device()
    seed_everything(recipe.seed)
    loaders = fashion_loaders(scale, seed=recipe.seed)
    model = _fashion_model(recipe)
    started = time.perf_counter()
    history = train_classifier(model, loaders.train, recipe.epochs, lr=recipe.lr, device=device,
                               eval_loader=loaders.test)
    record = {
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "recipe": asdict(recipe),
        "scale": scale,
        "history": history,
        "test_accuracy": history[-1]["test_accuracy"],
        "train_seconds": time.perf_counter() - started,
        "device": str(device),
    }
    buffer = io.BytesIO()
    torch.save(record, buffer)
    atomic_write_bytes(path, buffer.getvalue())
    return record


def fashion_resnet18_record(scale: str) -> dict[str, Any]:
    """The cached checkpoint record of :func:`train_fashion_resnet18`, training it when missing."""
    path, _ = _fashion_checkpoint(scale)
    if path.exists():
        return torch.load(path, map_location="cpu", weights_only=True)
    return train_fashion_resnet18(scale)


def fashion_resnet18(scale: str, device: torch.device | str | None = None) -> nn.Module:
    """The trained Fashion-MNIST ResNet-18 of ``scale`` in eval mode (trained once, then cached)."""
    record = fashion_resnet18_record(scale)
    model = _fashion_model(ClassifierRecipe(**record["recipe"]))
    model.load_state_dict(record["state_dict"])
    device = torch.device(device) if device is not None else default_device()
    return model.to(device).eval()


@torch.no_grad()
def per_class_accuracy(model: nn.Module, loader: Iterable, num_classes: int,
                       device: torch.device | str | None = None) -> dict[str, Any]:
    """Confusion matrix (rows: true class, columns: predicted; row-normalised) and per-class accuracy."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    counts = torch.zeros(num_classes, num_classes, dtype=torch.long)
    for x, y in loader:
        predicted = model(x.to(device)).argmax(1).cpu()
        counts += torch.bincount(y * num_classes + predicted, minlength=num_classes ** 2).view(num_classes, num_classes)
    model.train(was_training)
    matrix = counts.float() / counts.sum(1, keepdim=True).clamp_min(1)
    return {"matrix": matrix.tolist(), "per_class": matrix.diagonal().tolist()}
