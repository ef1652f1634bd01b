"""The cat/dog example: datasets declared with decorators (training follows below).

    python make_data.py                          # draw the images into data/
    python -m benchkit migrate data train.py     # chunk, test and upload `train` and `val`

``CATDOG_DATA`` points at another image folder (with train/ and val/ inside).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import benchkit as bench

DATA = Path(os.environ.get("CATDOG_DATA", Path(__file__).resolve().parent / "data"))
MEAN = torch.tensor([0.5, 0.5, 0.5]).view(3, 1, 1)
STD = torch.tensor([0.25, 0.25, 0.25]).view(3, 1, 1)


def images(split: str) -> list[Path]:
    """The split's JPEGs, sorted (a fixed order makes the chunks deterministic)."""
    files = sorted((DATA / split).glob("*.jpg"))
    if not files:
        raise FileNotFoundError(f"no images in {DATA / split}: run `python make_data.py` first")
    return files


def label_of(path: Path) -> int:
    """0 for a cat, 1 for a dog (the file name's first part)."""
    return 0 if path.name.split(".")[0] == "cat" else 1


def to_tensor(image) -> torch.Tensor:
    """A stored JPEG (a file object) as a normalised float tensor, C x H x W."""
    rgb = np.asarray(Image.open(image).convert("RGB"), dtype=np.float32) / 255.0
    return (torch.from_numpy(rgb).permute(2, 0, 1) - MEAN) / STD


@bench.dataset("train", chunk_bytes="2MB")
def train_samples():
    for path in images("train"):
        yield bench.File(path), label_of(path)


@train_samples.transform
def decode_train(image, label):
    x = to_tensor(image)
    if torch.rand(()) < 0.5:  # random horizontal flip
        x = x.flip(-1)
    return x, label


@bench.dataset("val", chunk_bytes="2MB")
def val_samples():
    for path in images("val"):
        yield bench.File(path), label_of(path)


@val_samples.transform
def decode_val(image, label):
    return to_tensor(image), label


# --- training --------------------------------------------------------------------------------
#     python -m benchkit run train.py                  # migrates missing datasets, then trains
#     python -m benchkit run train.py --processes 2    # two processes (gloo on the CPU)
#     python -m benchkit run train.py --resume         # continue the latest run from its checkpoint


class Net(torch.nn.Module):
    """A small CNN: three conv blocks, global average pooling, a linear head (any image size)."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        c = width
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(3, c, 3, padding=1), torch.nn.BatchNorm2d(c), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(c, 2 * c, 3, padding=1), torch.nn.BatchNorm2d(2 * c), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(2 * c, 2 * c, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
        )  # fmt: skip
        self.head = torch.nn.Linear(2 * c, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


@bench.train(
    config={"epochs": 3, "batch_size": 32, "lr": 3e-3, "workers": 2, "width": 16},
    monitor="val_accuracy",
    mode="max",
)
def train(run: bench.Run) -> float:
    """Train on "train", report validation accuracy on "val" after every epoch."""
    train_loader = run.loader("train", shuffle=True, num_workers=run.config.workers)
    val_loader = run.loader("val", num_workers=run.config.workers)
    model = Net(run.config.width)
    optim = torch.optim.AdamW(model.parameters(), lr=run.config.lr)
    model, optim, train_loader = run.prepare(model, optim, train_loader)
    accuracy = 0.0
    for epoch in run.epochs():
        model.train()
        for images, labels in run.progress(train_loader):
            loss = torch.nn.functional.cross_entropy(model(images), labels)
            run.backward(loss)
            optim.step()
            optim.zero_grad()
            run.log({"loss": loss})
        model.eval()
        counts = torch.zeros(2, device=run.device)  # correct, total
        with torch.no_grad():
            for images, labels in val_loader:
                counts += torch.stack([(model(images).argmax(1) == labels).sum(), labels.new_tensor(labels.numel())])
        correct, total = run.reduce(counts, "sum").tolist()  # over every process
        accuracy = correct / max(total, 1)
        run.log({"val_accuracy": accuracy, "epoch": epoch + 1})
        run.print(f"epoch {epoch + 1}: validation accuracy {accuracy:.3f}")
        run.save_checkpoint()
    return accuracy
