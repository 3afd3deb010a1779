"""The tiny network, images and loaders that plumbing tests run on (conftest's fixtures build them once per run).

Kept out of conftest.py so that the browser and hub tests, which share that conftest, never import PyTorch.
"""

import torch
from torch.utils.data import DataLoader, TensorDataset


class TinyDense(torch.nn.Module):
    """A stem, one 'dense layer' whose output is concatenated with its input, and a classifier."""

    def __init__(self):
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.relu = torch.nn.ReLU()
        self.layer = torch.nn.Conv2d(4, 4, 3, padding=1)
        self.pool = torch.nn.AdaptiveAvgPool2d(1)
        self.classifier = torch.nn.Linear(8, 2)

    def forward(self, x):
        x = self.relu(self.stem(x))
        x = torch.cat([x, self.layer(x)], 1)
        return self.classifier(torch.flatten(self.pool(x), 1))


class TinyDenseBN(TinyDense):
    """TinyDense with a batch norm between the stem and its ReLU, with running statistics of its own.

    PT2E's prepare_pt2e folds it into the stem (test_pt2e). A batch norm with no convolution before it, as in
    DenseNet, would make convert_pt2e re-trace its QAT folding patterns (see test_pt2e).
    """

    def __init__(self):
        super().__init__()
        self.norm = torch.nn.BatchNorm2d(4)
        with torch.no_grad():
            self.norm.running_mean.uniform_(-0.5, 0.5)
            self.norm.running_var.uniform_(0.5, 2.0)
            self.norm.weight.uniform_(0.5, 1.5)
            self.norm.bias.uniform_(-0.2, 0.2)

    def forward(self, x):
        x = self.relu(self.norm(self.stem(x)))
        x = torch.cat([x, self.layer(x)], 1)
        return self.classifier(torch.flatten(self.pool(x), 1))


def images(count: int, size: int = 8, seed: int = 0) -> torch.Tensor:
    """``count`` random 3-channel ``size`` x ``size`` images, the same for the same seed."""
    return torch.randn(count, 3, size, size, generator=torch.Generator().manual_seed(seed))


def loader(batch: torch.Tensor, batch_size: int = 4) -> DataLoader:
    """``batch`` as a calibration loader (labels all 0), in order."""
    return DataLoader(TensorDataset(batch, torch.zeros(len(batch), dtype=torch.long)), batch_size=batch_size)
