#!/usr/bin/env python
"""Draw a small cat/dog image folder: cats are warm-coloured circles, dogs cool-coloured squares.

    python make_data.py                     # 2000 train + 400 val JPEGs (64x64) in ./data
    python make_data.py --count 300 --size 32          # a quick set for a first run
    python make_data.py --count 600 --out /tmp/catdog --size 32

This file ships with the project template (``benchkit startproject``), whose
``Datasets/ProjectDatasets.py`` reads ``data/train`` and ``data/val`` next to it;
``examples/catdog/make_data.py`` is the same file.

Backgrounds are noisy and a few distractor lines cross each image, so a small CNN has to learn
shape and colour rather than one pixel. The same seed draws the same images (byte-identical
JPEGs), so the chunked dataset is deterministic too. Files are named like the original
BenchKit example: ``cat.00017.jpg``, ``dog.00018.jpg`` (the label is the name's first part).
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw


def draw(kind: str, size: int, rng: random.Random) -> Image.Image:
    """One image of ``kind`` ("cat" or "dog")."""
    nrng = np.random.default_rng(rng.getrandbits(32))
    base = np.array([rng.randint(60, 200) for _ in range(3)], dtype=np.int16)
    noise = nrng.integers(-40, 41, size=(size, size, 3), dtype=np.int16)
    img = Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8), "RGB")
    d = ImageDraw.Draw(img)
    for _ in range(rng.randint(1, 3)):  # distractors
        pts = [rng.randrange(size) for _ in range(4)]
        d.line(pts, fill=tuple(rng.randint(0, 255) for _ in range(3)), width=rng.randint(1, 2))
    r = rng.randint(size // 6, size // 3)
    cx, cy = rng.randint(r, size - r - 1), rng.randint(r, size - r - 1)
    if kind == "cat":  # orange-ish
        colour = (rng.randint(200, 255), rng.randint(90, 170), rng.randint(0, 60))
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
    else:  # blue-ish
        colour = (rng.randint(0, 60), rng.randint(60, 150), rng.randint(180, 255))
        d.rectangle([cx - r, cy - r, cx + r, cy + r], fill=colour)
    return img


def make(
    out: Path, count: int, val_fraction: float = 1 / 6, size: int = 64, seed: int = 0
) -> dict[str, int]:
    """Write ``count`` images into ``out/train`` and ``out/val``; returns how many went where."""
    rng = random.Random(seed)
    n_val = int(round(count * val_fraction))
    written = {"train": 0, "val": 0}
    for split in ("train", "val"):
        (out / split).mkdir(parents=True, exist_ok=True)
    for i in range(count):
        split = "val" if i < n_val else "train"
        kind = "cat" if rng.random() < 0.5 else "dog"
        img = draw(kind, size, rng)
        img.save(out / split / f"{kind}.{i:05d}.jpg", format="JPEG", quality=90)
        written[split] += 1
    return written


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--count", type=int, default=2400, help="images in total (default 2400)")
    p.add_argument(
        "--out",
        type=Path,
        # absolute(), not resolve(): examples/catdog/make_data.py links here and draws there
        default=Path(__file__).absolute().parent / "data",
        help="output directory (default: data/ next to this script)",
    )
    p.add_argument("--size", type=int, default=64, help="image side in pixels (default 64)")
    p.add_argument("--val-fraction", type=float, default=1 / 6, help="share of images in val/")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    written = make(args.out, args.count, args.val_fraction, args.size, args.seed)
    print(f"wrote {written['train']} train and {written['val']} val images to {args.out}")


if __name__ == "__main__":
    main()
