"""Make the benchmark dataset: a folder of JPEG images in class subfolders, with labels.

Layout (what torchvision's ImageFolder expects, plus a manifest)::

    _work/<preset>/images/<class>/<index>.jpg      10 classes
    _work/<preset>/images/labels.csv               relative path,label
    _work/<preset>/images/manifest.json            count, total bytes, settings

Images are 500x375 (ImageNet's typical size), a colour gradient that depends on the class with
Gaussian noise on top, so the JPEGs are really about 100 KB each (plain shapes would compress
to a few KB and make every reader look faster than it is on real photos). Every image is made
from a generator seeded by its index, so the same settings give byte-identical files.

    python benchmarks/make_data.py            # 10,000 images, about 1 GB
    python benchmarks/make_data.py --quick    # 1,000 images, about 100 MB
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import shutil
import sys
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import WORKERS, data_dir, preset_from_args, setup_logging  # noqa: E402

log = logging.getLogger("benchmarks.make_data")

CLASSES = 10
WIDTH, HEIGHT = 500, 375
QUALITY = 90
FORMAT_VERSION = 1  # bump when the images change, so stale folders are rebuilt


def image_bytes(index: int) -> tuple[int, bytes]:
    """The label and JPEG bytes of image ``index`` (deterministic)."""
    rng = np.random.default_rng(index)
    label = index % CLASSES
    w, h = (WIDTH, HEIGHT) if index % 3 else (HEIGHT, WIDTH)  # a third are portrait
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    hue = label / CLASSES
    base = np.stack(
        [
            128 + 100 * np.sin(2 * np.pi * (xx / w + hue)),
            128 + 100 * np.cos(2 * np.pi * (yy / h + hue)),
            np.full((h, w), 60 + 140 * hue, np.float32),
        ],
        axis=-1,
    )
    sigma = rng.uniform(20, 30)
    pixels = np.clip(base + rng.normal(0, sigma, (h, w, 3)).astype(np.float32), 0, 255)
    buf = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buf, "JPEG", quality=QUALITY)
    return label, buf.getvalue()


def _write(args: tuple[int, str]) -> tuple[str, int, int]:
    index, root = args
    label, data = image_bytes(index)
    rel = f"{label:02d}/{index:06d}.jpg"
    path = Path(root) / rel
    path.write_bytes(data)
    return rel, label, len(data)


def make_dataset(root: Path, images: int, workers: int = WORKERS) -> dict:
    """Write ``images`` JPEGs under ``root`` (replacing what is there) and return the manifest."""
    if root.exists():
        shutil.rmtree(root)
    for c in range(CLASSES):
        (root / f"{c:02d}").mkdir(parents=True)
    t0 = time.perf_counter()
    rows = []
    with Pool(workers) as pool:
        for row in pool.imap(_write, ((i, str(root)) for i in range(images)), chunksize=32):
            rows.append(row)
    rows.sort()
    (root / "labels.csv").write_text("".join(f"{rel},{label}\n" for rel, label, _ in rows))
    manifest = {
        "format_version": FORMAT_VERSION,
        "images": images,
        "classes": CLASSES,
        "bytes": sum(size for _, _, size in rows),
        "size": [WIDTH, HEIGHT],
        "quality": QUALITY,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest


def read_manifest(root: Path) -> dict | None:
    try:
        return json.loads((root / "manifest.json").read_text())
    except (OSError, ValueError):
        return None


def list_samples(root: Path) -> list[tuple[str, int]]:
    """(absolute path, label) of every image, in the dataset's fixed order."""
    out = []
    for line in (root / "labels.csv").read_text().splitlines():
        rel, label = line.rsplit(",", 1)
        out.append((str(root / rel), int(label)))
    return out


def ensure_dataset(root: Path, images: int) -> dict:
    """Make the dataset unless an identical one is already there."""
    m = read_manifest(root)
    if m and m.get("images") == images and m.get("format_version") == FORMAT_VERSION:
        log.info("dataset already present: %s (%d images, %.0f MB)", root, images, m["bytes"] / 1e6)
        return m
    log.info("making %d images under %s with %d processes", images, root, WORKERS)
    m = make_dataset(root, images)
    log.info("made %d images, %.0f MB, in %.1f s", images, m["bytes"] / 1e6, m["seconds"])
    return m


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="1,000 images (~100 MB) instead of 10,000")
    ap.add_argument("--images", type=int, help="number of images (overrides the preset)")
    ap.add_argument("--out", type=Path, help="output folder (default: benchmarks/_work/<preset>/images)")
    ap.add_argument("--force", action="store_true", help="rebuild even if present")
    args = ap.parse_args(argv)
    setup_logging()
    preset = preset_from_args(args.quick)
    root = args.out or data_dir(preset)
    images = args.images or preset.images
    if args.force:
        make_dataset(root, images)
    else:
        ensure_dataset(root, images)
    return 0


if __name__ == "__main__":
    sys.exit(main())
