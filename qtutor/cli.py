"""The ``qtutor`` command line (``python -m qtutor``): the original article's script, flag for flag, made safe.

``--task quantize`` and ``--task predict`` behave as the original script does
when given only its flags (CenterCrop(224), ToTensor, Normalize; FX static
quantization with the x86 default qconfig mapping; TorchScript files). On top:
``--task train`` and ``--task evaluate``, ``--image_size``, a seeded
calibration order, RGB conversion of any image mode, ``weights_only`` loading,
one-line errors with exit code 2, and atomic writes.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import warnings
from pathlib import Path

EXAMPLES = """examples (the bundled digits; use your own paths and statistics):
  train:    qtutor --task train --dst_model densenet_digits.pth --image_size 64
  quantize: qtutor --task quantize --src_model densenet_digits.pth --dst_model densenet_digits_int8.pt \\
              --classes_number 2 --mean "(0.1196, 0.1196, 0.1196)" --std "(0.295, 0.295, 0.295)" \\
              --dataset_path data/digits --image_size 64
  evaluate: qtutor --task evaluate --src_model densenet_digits.pth --dst_model densenet_digits_int8.pt \\
              --mean "(0.1196, 0.1196, 0.1196)" --std "(0.295, 0.295, 0.295)" --dataset_path data/digits \\
              --image_size 64
  predict:  qtutor --task predict --dst_model densenet_digits_int8.pt --labels_file data/digits/labels.txt \\
              --images_path data/samples --mean "(0.1196, 0.1196, 0.1196)" --std "(0.295, 0.295, 0.295)" \\
              --image_size 64
Without --image_size, images are center-cropped to 224x224 with no resize, as in the original script."""

COMPLETED = "====== execution completed ======"


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad command line in one line, exit code 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The original script's flags, then qtutor's additions."""
    import qtutor

    parser = _Parser(prog="qtutor", description="Quantize a DenseNet-121 classifier to INT8 and predict with it.",
                     epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    original = parser.add_argument_group("the original script's flags")
    original.add_argument("--task", required=True, choices=["quantize", "predict", "train", "evaluate"],
                          help="what to do (train and evaluate are qtutor's additions)")
    original.add_argument("--src_model", help="FP32 DenseNet-121 state_dict (.pth) to quantize or evaluate")
    original.add_argument("--dst_model", help="INT8 TorchScript file to write (quantize) or read (predict, "
                                              "evaluate); for train, the FP32 state_dict to write")
    original.add_argument("--classes_number", type=int, default=2, help="outputs of the classifier (default 2)")
    original.add_argument("--mean", help='per-channel mean, a tuple literal such as "(0.485, 0.456, 0.406)"')
    original.add_argument("--std", help='per-channel std, a tuple literal such as "(0.229, 0.224, 0.225)"')
    original.add_argument("--labels_file", help="text file of 'index class_name' lines (predict)")
    original.add_argument("--images_path", help="folder of images to classify, searched recursively (predict)")
    original.add_argument("--dataset_path", help="ImageFolder dataset with train/ (and val/, test/) folders")
    added = parser.add_argument_group("qtutor's additions")
    added.add_argument("--image_size", type=int, help="Resize(N) then CenterCrop(N) instead of CenterCrop(224)")
    added.add_argument("--calibration_batches", type=int, default=20, help="calibration batches (default 20)")
    added.add_argument("--batch_size", type=int, default=4, help="calibration batch size (default 4)")
    added.add_argument("--epochs", type=int, default=3, help="training epochs (train; default 3)")
    added.add_argument("--version", action="version", version=f"qtutor {qtutor.__version__}")
    return parser


def _require(args, *names):
    from qtutor.data import InputError

    for name in names:
        if getattr(args, name) is None:
            raise InputError(f"--task {args.task} needs --{name}")


def _positive(value, name):
    from qtutor.data import InputError

    if value is not None and value < 1:
        raise InputError(f"--{name} {value}: expected a whole number of at least 1")


def _output_path(path, *, source=None) -> Path:
    """Check that ``path`` can be written: its folder exists and it is not the source file."""
    from qtutor.data import InputError

    path = Path(path)
    if not path.parent.resolve().is_dir():
        raise InputError(f"--dst_model {path}: folder {path.parent} does not exist; expected an existing folder")
    if path.is_dir():
        raise InputError(f"--dst_model {path}: is a folder; expected a file name")
    if source is not None and path.resolve() == Path(source).resolve():
        raise InputError(f"--dst_model {path}: is the same file as --src_model; expected a different file")
    return path


def _statistics(args):
    """``(mean, std)`` from --mean/--std."""
    from qtutor.data import parse_triple

    _require(args, "mean", "std")
    return parse_triple(args.mean, "--mean"), parse_triple(args.std, "--std", nonzero=True)


def _dataset_root(args) -> Path:
    from qtutor.data import InputError

    root = Path(args.dataset_path)
    if not root.is_dir():
        raise InputError(f"--dataset_path {root}: does not exist; expected a folder holding train/")
    if not (root / "train").is_dir():
        raise InputError(f"--dataset_path {root}: has no train/ folder; expected ImageFolder layout "
                         "train/<class>/<image>")
    return root


def _image_folder(folder, transform):
    """An ImageFolder that skips unreadable images, saying how many it skipped."""
    from qtutor.data import checked_image_folder

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dataset, skipped = checked_image_folder(folder, transform)
    if skipped:
        print(f"warning: skipped {skipped} unreadable image(s) in {folder}", file=sys.stderr)
    return dataset


def task_quantize(args) -> None:
    """Calibrate and convert an FP32 checkpoint to an INT8 TorchScript file, as the original does."""
    import torch
    from torch.utils.data import DataLoader

    from qtutor.data import ORIGINAL_CROP, image_transform
    from qtutor.models import load_checkpoint
    from qtutor.ptq import quantize_fx, save_torchscript
    from qtutor.report import file_size_mb

    _require(args, "src_model", "dst_model", "dataset_path")
    mean, std = _statistics(args)
    _positive(args.calibration_batches, "calibration_batches")
    _positive(args.batch_size, "batch_size")
    destination = _output_path(args.dst_model, source=args.src_model)
    root = _dataset_root(args)
    model = load_checkpoint(args.src_model, args.classes_number)
    dataset = _image_folder(root / "train", image_transform(mean, std, args.image_size))
    print(f"calibration dataset length: {len(dataset)}; classes: {dataset.class_to_idx}; "
          f"number of categories: {len(dataset.classes)}")
    loader = DataLoader(dataset, batch_size=args.batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(0))
    size = args.image_size or ORIGINAL_CROP
    quantized = quantize_fx(model, loader, (torch.randn(1, 3, size, size),), batches=args.calibration_batches,
                            progress=sys.stderr.isatty())
    save_torchscript(quantized, destination)
    fp32, int8 = file_size_mb(args.src_model), file_size_mb(destination)
    print(f"FP32 {args.src_model}: {fp32:.1f} MB; INT8 {destination}: {int8:.1f} MB ({int8 / fp32:.0%} of FP32)")


def _load_int8(path):
    from qtutor.data import InputError
    from qtutor.ptq import load_torchscript

    if not Path(path).is_file():
        raise InputError(f"--dst_model {path}: does not exist; expected the TorchScript file --task quantize wrote")
    try:
        return load_torchscript(path)
    except Exception as error:  # torch.jit.load raises RuntimeError and others on a wrong file
        raise InputError(f"--dst_model {path}: not a TorchScript model ({error.__class__.__name__}); expected the "
                         "file --task quantize wrote") from None


def task_predict(args) -> None:
    """Classify every image under --images_path: ``name<TAB>class_name<TAB>probability``."""
    import torch

    from qtutor.data import ORIGINAL_CROP, InputError, image_files, image_transform, load_rgb, read_labels

    _require(args, "dst_model", "labels_file", "images_path")
    mean, std = _statistics(args)
    folder = Path(args.images_path)
    if not folder.is_dir():
        raise InputError(f"--images_path {folder}: does not exist; expected a folder of images")
    files = image_files(folder)
    if not files:
        raise InputError(f"--images_path {folder}: holds no files; expected images to classify")
    model = _load_int8(args.dst_model)
    size = args.image_size or ORIGINAL_CROP
    with torch.no_grad():
        outputs = model(torch.zeros(1, 3, size, size)).shape[-1]
    labels = read_labels(args.labels_file, outputs)
    transform = image_transform(mean, std, args.image_size)
    classified = 0
    for path in files:
        try:
            image = load_rgb(path)
        except Exception:  # PIL raises several types for files that are not images
            print(f"warning: skipped {path}: not an image", file=sys.stderr)
            continue
        with torch.no_grad():
            probabilities = torch.softmax(model(transform(image).unsqueeze(0)), dim=1)[0]
        best = int(probabilities.argmax())
        print(f"{path.name}\t{labels[best]}\t{probabilities[best].item():.4f}")
        classified += 1
    if not classified:
        raise InputError(f"--images_path {folder}: none of its {len(files)} files is an image")


def task_train(args) -> None:
    """Train a DenseNet-121 on --dataset_path (the bundled digits by default); write its state_dict."""
    import torch

    from qtutor.data import DIGITS_DIR, bundled_stats
    from qtutor.models import COURSE_IMAGE_SIZE, course_checkpoint, save_atomically, train

    _require(args, "dst_model")
    destination = _output_path(args.dst_model)
    _positive(args.epochs, "epochs")
    image_size = args.image_size or COURSE_IMAGE_SIZE
    root = _dataset_root(args) if args.dataset_path else DIGITS_DIR
    bundled = root.resolve() == DIGITS_DIR.resolve()
    if args.mean is None and args.std is None and bundled:
        mean, std = bundled_stats()
    else:
        mean, std = _statistics(args)
    if bundled and (mean, std) == bundled_stats() and args.classes_number == 2:
        cached = course_checkpoint(image_size, epochs=args.epochs, progress=sys.stderr.isatty())
        save_atomically(lambda temporary: shutil.copyfile(cached, temporary), destination)
        print(f"trained DenseNet-121 on the bundled digits at {image_size}x{image_size} (cached in {cached})")
    else:
        state, history = train(root, image_size=image_size, epochs=args.epochs, mean=mean, std=std,
                               classes_number=args.classes_number, progress=sys.stderr.isatty())
        save_atomically(lambda temporary: torch.save(state, temporary), destination)
        print(f"best validation accuracy {max(history['val_accuracy']):.1%} over {args.epochs} epoch(s)")
    print(f"wrote {destination}")


def task_evaluate(args) -> None:
    """FP32 against INT8 on dataset_path/test (or val): accuracy, file size, latency at batch 1."""
    import torch
    from torch.utils.data import DataLoader

    from qtutor.data import ORIGINAL_CROP, image_transform
    from qtutor.models import evaluate, load_checkpoint
    from qtutor.report import file_size_mb, format_table, latency_ms

    _require(args, "src_model", "dst_model", "dataset_path")
    mean, std = _statistics(args)
    root = _dataset_root(args)
    split = "test" if (root / "test").is_dir() else "val" if (root / "val").is_dir() else "train"
    fp32 = load_checkpoint(args.src_model, args.classes_number)
    int8 = _load_int8(args.dst_model)
    dataset = _image_folder(root / split, image_transform(mean, std, args.image_size))
    loader = DataLoader(dataset, batch_size=32)
    size = args.image_size or ORIGINAL_CROP
    example = torch.randn(1, 3, size, size)
    rows = []
    for name, model, path in (("FP32", fp32, args.src_model), ("INT8", int8, args.dst_model)):
        rows.append({"model": name, "accuracy": evaluate(model, loader), "size MB": file_size_mb(path),
                     "latency ms": latency_ms(model, example)})
    rows.append({"model": "INT8/FP32", "accuracy": rows[1]["accuracy"] - rows[0]["accuracy"],
                 "size MB": rows[1]["size MB"] / rows[0]["size MB"],
                 "latency ms": rows[1]["latency ms"] / rows[0]["latency ms"]})
    print(f"{len(dataset)} images in {root / split}, {size}x{size}, batch 1 latency on {torch.get_num_threads()} "
          "thread(s); last row: accuracy change in points, size and latency as ratios")
    print(format_table(rows, {"accuracy": ".4f", "size MB": ".2f", "latency ms": ".2f"}))


TASKS = {"quantize": task_quantize, "predict": task_predict, "train": task_train, "evaluate": task_evaluate}


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code (2 for bad input, with one line on stderr)."""
    from qtutor.data import InputError

    args = build_parser().parse_args(argv)
    try:
        if args.image_size is not None:
            _positive(args.image_size, "image_size")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            TASKS[args.task](args)
    except InputError as error:
        print(f"qtutor: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("qtutor: interrupted", file=sys.stderr)
        return 130
    green, reset = ("", "") if os.environ.get("NO_COLOR") else ("\033[92m", "\033[0m")
    print(f"{green}{COMPLETED}{reset}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
