"""The data helper (qtutor.data, notebook 06 and the command line) called directly, as a notebook calls it."""

import pytest
import torch
from PIL import Image

from qtutor.data import (
    DIGITS_DIR,
    bundled_stats,
    checked_image_folder,
    image_files,
    image_transform,
    load_rgb,
    parse_triple,
    read_labels,
)
from qtutor.errors import InputError

SAMPLES = DIGITS_DIR.parent / "samples"


def test_parse_triple_reads_a_tuple_literal():
    assert parse_triple("(0.485, 0.456, 0.406)", "mean") == (0.485, 0.456, 0.406)
    assert parse_triple("[1, 2, 3]", "std", nonzero=True) == (1.0, 2.0, 3.0)


@pytest.mark.parametrize(
    "text,message",
    [
        ("0.5", "mean='0.5': expected a tuple of three numbers"),
        ("(0.5, 0.5)", "mean='(0.5, 0.5)': expected a tuple of three numbers"),
        ("(a, b, c)", "mean='(a, b, c)': expected a tuple of three numbers"),
        ("(True, 0.5, 0.5)", "mean='(True, 0.5, 0.5)': expected a tuple of three numbers"),
        ("(float('nan'), 1, 1)", "expected a tuple of three numbers"),
    ],
)
def test_parse_triple_names_the_argument_not_a_flag(text, message):
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")) as caught:
        parse_triple(text, "mean")
    assert "--" not in str(caught.value)  # a notebook caller passed an argument, not a command-line flag


def test_parse_triple_refuses_a_zero_std():
    with pytest.raises(InputError, match=r"std='\(0.3, 0, 0.3\)': expected three non-zero numbers"):
        parse_triple("(0.3, 0, 0.3)", "std", nonzero=True)


def test_read_labels(tmp_path):
    path = tmp_path / "labels.txt"
    path.write_text("0 cat\n\n1 hot dog\n")
    assert read_labels(path, 2) == {0: "cat", 1: "hot dog"}  # split on the first space; blank lines skipped
    assert read_labels(DIGITS_DIR / "labels.txt", 10)[9] == "nine"


@pytest.mark.parametrize(
    "text,classes,message",
    [
        ("0 cat\ndog\n", 2, r"line 2 'dog': expected 'index class_name'"),
        ("0 cat\n0 dog\n", 2, "index 0 appears twice"),
        ("0 cat\n", 2, "no label for class index 1"),
        ("x cat\n", 1, r"line 1 'x cat': expected 'index class_name'"),
    ],
)
def test_read_labels_refuses_bad_files(tmp_path, text, classes, message):
    path = tmp_path / "labels.txt"
    path.write_text(text)
    with pytest.raises(InputError, match=message):
        read_labels(path, classes)
    with pytest.raises(InputError, match="cannot be read"):
        read_labels(tmp_path / "missing.txt", classes)


def image_folder(root, per_class: int = 2, corrupt: bool = False):
    """A two-class ImageFolder of bundled digits, with one file that is not an image when ``corrupt``."""
    for name, digit in (("four", "4"), ("nine", "9")):
        (root / name).mkdir(parents=True)
        for path in sorted((DIGITS_DIR / "train" / digit).glob("*.png"))[:per_class]:
            (root / name / path.name).write_bytes(path.read_bytes())
    if corrupt:
        (root / "four" / "corrupt.png").write_bytes(b"not a png")
    return root


def test_checked_image_folder_skips_and_counts_unreadable_images(tmp_path, recwarn):
    dataset, skipped = checked_image_folder(
        image_folder(tmp_path / "set", corrupt=True), image_transform((0.5,) * 3, (0.25,) * 3, 16)
    )
    assert skipped == 1 and len(dataset) == 4 and dataset.targets == [0, 0, 1, 1]
    assert dataset[0][0].shape == (3, 16, 16)
    assert not recwarn.list  # it returns the count; the caller reports it


def test_checked_image_folder_refuses_folders_without_images(tmp_path):
    transform = image_transform((0.5,) * 3, (0.25,) * 3, 16)
    with pytest.raises(InputError, match="dataset folder .*nowhere: does not exist"):
        checked_image_folder(tmp_path / "nowhere", transform)
    (tmp_path / "empty" / "a").mkdir(parents=True)
    with pytest.raises(InputError, match="no images found"):
        checked_image_folder(tmp_path / "empty", transform)
    (tmp_path / "broken" / "a").mkdir(parents=True)
    (tmp_path / "broken" / "a" / "x.png").write_bytes(b"not a png")
    with pytest.raises(InputError, match="none of its 1 image files can be opened"):
        checked_image_folder(tmp_path / "broken", transform)


def test_load_rgb_converts_every_mode_and_image_files_is_sorted_and_recursive(tmp_path):
    files = image_files(SAMPLES)
    assert files == sorted(files) and {path.suffix for path in files} == {".png", ".jpg", ".txt"}
    for path in files:
        if path.suffix != ".txt":
            assert load_rgb(path).mode == "RGB", path.name  # grayscale, RGBA, palette and CMYK alike
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "deep.png").write_bytes((SAMPLES / "zero_0003_l.png").read_bytes())
    assert image_files(tmp_path) == [tmp_path / "a" / "b" / "deep.png"]


def test_image_transform_is_the_originals_center_crop_without_a_size():
    image = Image.new("RGB", (300, 260), (255, 0, 0))
    original, resized = image_transform((0.5,) * 3, (0.5,) * 3), image_transform((0.5,) * 3, (0.5,) * 3, 32)
    assert original(image).shape == (3, 224, 224) and resized(image).shape == (3, 32, 32)
    assert torch.allclose(original(image)[0], torch.ones(224, 224))  # red: (1 - 0.5) / 0.5 in channel 0


def test_bundled_stats_are_three_numbers_each():
    mean, std = bundled_stats()
    assert len(mean) == len(std) == 3 and all(0 < value < 1 for value in mean + std)
