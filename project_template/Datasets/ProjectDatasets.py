"""The project's datasets in the original BenchKit class style.

``CatDog`` (a ``ProcessorDataset``) says which files and labels make up a dataset; ``CatDogChunk``
(an ``IterableChunk``) turns the stored samples back into what the model eats; ``main()`` lists
the datasets to migrate. ``python manage.py migrate-data`` chunks, tests and uploads them.

The images come from the project's ``make_data.py`` (``python make_data.py --count 300 --size
32`` draws a quick set into ``data/``); ``CATDOG_DATA`` points at another folder holding
``train/`` and ``val/``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from benchkit import IterableChunk, ProcessorDataset

DATA = Path(os.environ.get("CATDOG_DATA", Path(__file__).resolve().parent.parent / "data"))
MEAN = torch.tensor([0.5, 0.5, 0.5]).view(3, 1, 1)
STD = torch.tensor([0.25, 0.25, 0.25]).view(3, 1, 1)


class CatDog(ProcessorDataset):
    """Images named ``cat.<n>.jpg`` / ``dog.<n>.jpg`` in one directory."""

    def __init__(self, dataset_path: str | os.PathLike[str], data_list: list[str]) -> None:
        self._dataset_path = str(dataset_path)
        self._data_list = data_list

    @staticmethod
    def convert_label_to_numeric(animal: str) -> int:
        return 0 if animal == "cat" else 1

    def __len__(self) -> int:
        return len(self._data_list)

    def get_label_and_numeric_data(self, item: int) -> int:
        split = self._data_list[item].split(".")[0]
        assert len(split) == 3
        return self.convert_label_to_numeric(split)

    def get_file(self, item: int) -> list[str]:
        return [os.path.join(self._dataset_path, self._data_list[item])]


class CatDogChunk(IterableChunk):
    """Decodes each stored JPEG to a normalised tensor (with random flips for training)."""

    def __init__(self, name: str, cloud: bool, is_train: bool, *args, **kwargs) -> None:
        super().__init__(name, cloud, *args, **kwargs)
        self._is_train = is_train

    def _data_iterator(self):
        for labels, files in super()._data_iterator():
            rgb = np.asarray(Image.open(files[0]).convert("RGB"), dtype=np.float32) / 255.0
            x = (torch.from_numpy(rgb).permute(2, 0, 1) - MEAN) / STD
            if self._is_train and torch.rand(()) < 0.5:
                x = x.flip(-1)
            yield x, labels


def _list(split: str) -> list[str]:
    folder = DATA / split
    names = sorted(p.name for p in folder.glob("*.jpg"))
    if not names:
        raise FileNotFoundError(
            f"no images in {folder}: draw a sample set with `python make_data.py --count 300 "
            f"--size 32 --out {DATA}` in the project, or point CATDOG_DATA at your images"
        )
    return names


def main():
    data = [
        (CatDog(DATA / "train", _list("train")), CatDogChunk, "train", [True], {}),
        (CatDog(DATA / "val", _list("val")), CatDogChunk, "val", [False], {}),
    ]
    return data
