"""thesislib.training: accuracy counting, a training run that learns, per-class accuracy."""

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from thesislib.training import evaluate_accuracy, per_class_accuracy, train_classifier


class Fixed(nn.Module):
    """Predicts class = first input feature (as an integer)."""

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return nn.functional.one_hot(x[:, 0].long(), 3).float() + 0 * self.dummy


def test_evaluate_accuracy_counts_exactly():
    x = torch.tensor([[0.0], [1.0], [2.0], [1.0]])
    y = torch.tensor([0, 1, 1, 2])
    loader = DataLoader(TensorDataset(x, y), batch_size=3)
    assert evaluate_accuracy(Fixed(), loader) == pytest.approx(0.5)
    result = per_class_accuracy(Fixed(), loader, num_classes=3)
    assert result["per_class"] == pytest.approx([1.0, 0.5, 0.0])
    assert result["matrix"][2] == pytest.approx([0.0, 1.0, 0.0])
    with pytest.raises(ValueError, match="empty"):
        evaluate_accuracy(Fixed(), [])


def test_train_classifier_learns_a_separable_problem():
    torch.manual_seed(0)
    x = torch.randn(256, 2)
    y = (x[:, 0] + x[:, 1] > 0).long()
    loader = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(0))
    model = nn.Linear(2, 2)
    steps = []
    history = train_classifier(model, loader, epochs=3, lr=0.1, device="cpu", eval_loader=loader,
                               step_hook=steps.append)
    assert [row["epoch"] for row in history] == [1, 2, 3]
    assert history[-1]["loss"] < history[0]["loss"]
    assert history[-1]["test_accuracy"] > 0.95
    assert steps == list(range(3 * len(loader)))
    with pytest.raises(ValueError, match="epochs"):
        train_classifier(model, loader, epochs=0)
