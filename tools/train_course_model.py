"""Train the course's DenseNet-121 on the bundled digits and write it to data/models/.

    python tools/train_course_model.py [--epochs N] [--out data/models]

Trains with ``qtutor.models.Recipe`` (the defaults are the recipe of the shipped
checkpoint) at the course's image size, then writes:

    densenet121_digits_64px.pth    the state_dict (float32), loaded with weights_only=True
    densenet121_digits_64px.json   the recipe, the per-epoch training curve, test accuracy, SHA-256, machine

The run is seeded, but the weights are not bit-for-bit reproducible across
machines or library versions (float summation order differs), so the shipped
file's SHA-256 is recorded and checked by tests/test_models.py; a rerun gives a
model of the same quality, not the same bytes.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import platform
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from qtutor.data import DIGITS_DIR, bundled_stats, checked_image_folder, image_transform
from qtutor.files import save_atomically
from qtutor.models import COURSE_IMAGE_SIZE, Recipe, build_densenet, train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=Recipe().epochs)
    parser.add_argument("--out", type=Path, default=DIGITS_DIR.parent / "models")
    args = parser.parse_args()
    recipe = dataclasses.replace(Recipe(), epochs=args.epochs)
    start = time.perf_counter()
    state, history = train(DIGITS_DIR, image_size=COURSE_IMAGE_SIZE, recipe=recipe)
    seconds = time.perf_counter() - start
    model = build_densenet(10)
    model.load_state_dict(state)
    model.eval()
    test_set, _ = checked_image_folder(DIGITS_DIR / "test", image_transform(*bundled_stats(), COURSE_IMAGE_SIZE))
    with torch.no_grad():
        correct = sum(
            (model(images).argmax(1) == targets).sum().item()
            for images, targets in DataLoader(test_set, batch_size=100)
        )
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"densenet121_digits_{COURSE_IMAGE_SIZE}px"
    weights = args.out / f"{stem}.pth"
    save_atomically(lambda temporary: torch.save(state, temporary), weights)
    record = {
        "weights": weights.name,
        "sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
        "image_size": COURSE_IMAGE_SIZE,
        "classes": 10,
        "recipe": dataclasses.asdict(recipe)
        | {"optimizer": "AdamW", "schedule": "OneCycleLR (cosine)", "loss": "cross-entropy"},
        "history": history,
        "test_accuracy": correct / len(test_set),
        "test_images": len(test_set),
        "training_seconds": round(seconds),
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__.split("+")[0],
        },
        "command": "python tools/train_course_model.py"
        + ("" if args.epochs == Recipe().epochs else f" --epochs {args.epochs}"),
    }
    (args.out / f"{stem}.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"test accuracy {record['test_accuracy']:.4f} on {len(test_set)} images; {seconds:.0f} s; wrote {weights}")


if __name__ == "__main__":
    main()
