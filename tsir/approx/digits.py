"""A small CNN trained in-process on scikit-learn's handwritten digits (8x8, 10 classes).

The recipe (architecture, seed, split, epochs) is fixed; its hash keys the trained weights in the user
cache dir, so only the first call trains (a few seconds on two cores). Held-out accuracy is ~0.98.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from tsir.backends.kernel_cache import DEFAULT_DIR


@dataclass(frozen=True)
class Recipe:
    seed: int = 0
    test_fraction: float = 0.2  # held out; never used for training or calibration
    epochs: int = 20
    batch: int = 128
    lr: float = 4e-3
    version: int = 1  # bump when the architecture changes


@dataclass(frozen=True)
class Split:
    """Images ``(N, 1, 8, 8)`` float32 scaled to [0, 1] and int64 labels."""

    train_x: np.ndarray
    train_y: np.ndarray
    heldout_x: np.ndarray
    heldout_y: np.ndarray

    def calibration(self, n: int = 128) -> np.ndarray:
        """The first ``n`` training images: approximations are calibrated on these, never on held-out data."""
        return self.train_x[:n]


class DigitsCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(32 * 4 * 4, 256), nn.ReLU(), nn.Linear(256, 128),
                                        nn.ReLU(), nn.Linear(128, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def split(recipe: Recipe = Recipe()) -> Split:
    """The digits dataset, shuffled with the recipe's seed and split into train / held-out."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x = (data.images / 16.0).astype(np.float32)[:, None]
    y = data.target.astype(np.int64)
    tx, hx, ty, hy = train_test_split(x, y, test_size=recipe.test_fraction, random_state=recipe.seed, stratify=y)
    return Split(tx, ty, hx, hy)


def recipe_hash(recipe: Recipe) -> str:
    return hashlib.sha256(json.dumps(asdict(recipe), sort_keys=True).encode()).hexdigest()[:16]


def load(recipe: Recipe = Recipe(), cache_dir: str | os.PathLike = DEFAULT_DIR) -> tuple[DigitsCNN, Split]:
    """The trained model (eval mode) and its data split; trains once per recipe and caches the weights."""
    data = split(recipe)
    model = DigitsCNN()
    path = Path(cache_dir) / "models" / f"digits-{recipe_hash(recipe)}.pt"
    if path.exists():
        model.load_state_dict(torch.load(path, weights_only=True))
    else:
        _train(model, data, recipe)
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as f:
            torch.save(model.state_dict(), f)
        os.replace(f.name, path)
    return model.eval(), data


def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    with torch.no_grad():
        return float((model(torch.from_numpy(x)).argmax(1).numpy() == y).mean())


def _train(model: DigitsCNN, data: Split, recipe: Recipe) -> None:
    torch.manual_seed(recipe.seed)
    model.load_state_dict(DigitsCNN().state_dict())  # initial weights drawn under the recipe's seed
    gen = torch.Generator().manual_seed(recipe.seed)
    opt = torch.optim.Adam(model.parameters(), lr=recipe.lr)
    x, y = torch.from_numpy(data.train_x), torch.from_numpy(data.train_y)
    model.train()
    for _ in range(recipe.epochs):
        order = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), recipe.batch):
            idx = order[i:i + recipe.batch]
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    model.eval()
