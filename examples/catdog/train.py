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
# The @bench.train function goes here (the training issue adds it): it streams "train" and
# "val" with run.loader(...) and trains a small CNN on them.
