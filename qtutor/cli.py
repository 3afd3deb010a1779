"""The ``qtutor`` command line (``python -m qtutor``): the original article's script, flag for flag, made safe.

``--task quantize`` and ``--task predict`` behave as the original script does
when given only its flags (CenterCrop(224), ToTensor, Normalize; FX static
quantization with the x86 default qconfig mapping; TorchScript files). On top:
``--task train``, ``--task evaluate`` and ``--task export`` (an ONNX file, FP32
or static INT8 QDQ, notebook 10), ``.onnx`` models run by ONNX Runtime in
predict and evaluate, ``--image_size``, a seeded calibration order, RGB
conversion of any image mode, ``weights_only`` loading, one-line errors with
exit code 2, and atomic writes.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
from pathlib import Path

EXAMPLES = """examples (the bundled digits, ten classes; use your own paths, statistics and class count):
  train:    qtutor --task train --dst_model densenet_digits.pth --classes_number 10 --image_size 64
  quantize: qtutor --task quantize --src_model densenet_digits.pth --dst_model densenet_digits_int8.pt \\
              --classes_number 10 --mean "(0.1315, 0.1315, 0.1315)" --std "(0.3088, 0.3088, 0.3088)" \\
              --dataset_path data/digits --image_size 64
  evaluate: qtutor --task evaluate --src_model densenet_digits.pth --dst_model densenet_digits_int8.pt \\
              --classes_number 10 --mean "(0.1315, 0.1315, 0.1315)" --std "(0.3088, 0.3088, 0.3088)" \\
              --dataset_path data/digits --image_size 64
  predict:  qtutor --task predict --dst_model densenet_digits_int8.pt --labels_file data/digits/labels.txt \\
              --images_path data/samples --mean "(0.1315, 0.1315, 0.1315)" --std "(0.3088, 0.3088, 0.3088)" \\
              --image_size 64
  export:   qtutor --task export --src_model densenet_digits.pth --dst_model densenet_digits_int8.onnx --int8 \\
              --classes_number 10 --mean "(0.1315, 0.1315, 0.1315)" --std "(0.3088, 0.3088, 0.3088)" \\
              --dataset_path data/digits --image_size 64
            (without --int8: the FP32 model as ONNX; predict and evaluate run an .onnx --dst_model in ONNX
            Runtime, and evaluate --onnx_model FILE adds an ONNX row beside the TorchScript INT8 one)
Without --image_size, images are center-cropped to 224x224 with no resize, as in the original script."""

COMPLETED = "====== execution completed ======"


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad command line in one line, exit code 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The original script's flags, then qtutor's additions."""
    import qtutor

    parser = _Parser(
        prog="qtutor",
        description="Quantize a DenseNet-121 classifier to INT8 and predict with it.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    original = parser.add_argument_group("the original script's flags")
    original.add_argument(
        "--task",
        required=True,
        choices=["quantize", "predict", "train", "evaluate", "export"],
        help="what to do (train, evaluate and export are qtutor's additions)",
    )
    original.add_argument("--src_model", help="FP32 DenseNet-121 state_dict (.pth) to quantize or evaluate")
    original.add_argument(
        "--dst_model",
        help="INT8 TorchScript file to write (quantize) or read (predict, "
        "evaluate; an .onnx file runs in ONNX Runtime); for train, the FP32 "
        "state_dict to write; for export, the .onnx file to write",
    )
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
    added.add_argument("--epochs", type=int, help="training epochs (train; default: the course recipe's 20)")
    added.add_argument(
        "--int8",
        action="store_true",
        help="export: static INT8 (ONNX Runtime QDQ, calibrated on --dataset_path/train), not FP32",
    )
    added.add_argument("--onnx_model", help="evaluate: an .onnx file to evaluate beside --dst_model")
    added.add_argument("--version", action="version", version=f"qtutor {qtutor.__version__}")
    return parser


def _require(args, *names):
    from qtutor.errors import InputError

    for name in names:
        if getattr(args, name) is None:
            raise InputError(f"--task {args.task} needs --{name}")


def _positive(value, name):
    from qtutor.errors import InputError

    if value is not None and value < 1:
        raise InputError(f"--{name} {value}: expected a whole number of at least 1")


def _output_path(path, *, source=None) -> Path:
    """Check that ``path`` can be written: its folder exists and it is not the source file."""
    from qtutor.errors import InputError

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
    return parse_triple(args.mean, "mean"), parse_triple(args.std, "std", nonzero=True)


def _dataset_root(args) -> Path:
    from qtutor.errors import InputError

    root = Path(args.dataset_path)
    if not root.is_dir():
        raise InputError(f"--dataset_path {root}: does not exist; expected a folder holding train/")
    if not (root / "train").is_dir():
        raise InputError(
            f"--dataset_path {root}: has no train/ folder; expected ImageFolder layout train/<class>/<image>"
        )
    return root


class _PaddingWarning:
    """A transform wrapper that warns, once per run, when an image is smaller than the center crop it gets.

    The original script center-crops to 224x224 without resizing, so a smaller
    image is padded with black (a 28x28 digit becomes a small patch in a large
    black square) and a model trained on resized images sees something else.
    """

    warned = False  # once per run, across every transform of the run

    def __init__(self, transform, crop: int):
        self.transform, self.crop = transform, crop

    def __call__(self, image):
        if not _PaddingWarning.warned and (image.width < self.crop or image.height < self.crop):
            _PaddingWarning.warned = True
            print(
                f"warning: an image is {image.width}x{image.height}, smaller than the {self.crop}x{self.crop} "
                "center crop, so it is padded with black as in the original script; pass --image_size N to "
                "resize images to NxN first (the bundled digits: --image_size 64)",
                file=sys.stderr,
            )
        return self.transform(image)


def _transform(args, mean, std):
    """The preprocessing of --image_size (or the original's CenterCrop(224)), warning when it pads an image."""
    from qtutor.data import ORIGINAL_CROP, image_transform

    transform = image_transform(mean, std, args.image_size)
    return transform if args.image_size else _PaddingWarning(transform, ORIGINAL_CROP)


def _image_folder(folder, transform):
    """An ImageFolder that skips unreadable images, saying how many it skipped."""
    from qtutor.data import checked_image_folder

    dataset, skipped = checked_image_folder(folder, transform)
    if skipped:
        print(f"warning: skipped {skipped} unreadable image(s) in {folder}", file=sys.stderr)
    return dataset


def _check_calibration(args):
    """``(mean, std, dataset root)`` for a task that calibrates; every flag checked before anything runs."""
    _require(args, "dataset_path")
    mean, std = _statistics(args)
    _positive(args.calibration_batches, "calibration_batches")
    _positive(args.batch_size, "batch_size")
    return mean, std, _dataset_root(args)


def _calibration_loader(args, mean, std, root):
    """--dataset_path/train in a seeded shuffled order, batches of --batch_size; prints what the original prints."""
    import torch
    from torch.utils.data import DataLoader

    dataset = _image_folder(root / "train", _transform(args, mean, std))
    print(
        f"calibration dataset length: {len(dataset)}; classes: {dataset.class_to_idx}; "
        f"number of categories: {len(dataset.classes)}"
    )
    return DataLoader(dataset, batch_size=args.batch_size, shuffle=True, generator=torch.Generator().manual_seed(0))


def _report_sizes(source, destination, label: str) -> None:
    from qtutor.files import file_size_mb

    fp32, written = file_size_mb(source), file_size_mb(destination)
    print(f"FP32 {source}: {fp32:.1f} MB; {label} {destination}: {written:.1f} MB ({written / fp32:.0%} of FP32)")


def task_quantize(args) -> None:
    """Calibrate and convert an FP32 checkpoint to an INT8 TorchScript file, as the original does."""
    import torch

    from qtutor.data import ORIGINAL_CROP
    from qtutor.models import load_checkpoint
    from qtutor.ptq import quantize_fx, save_torchscript

    _require(args, "src_model", "dst_model")
    mean, std, root = _check_calibration(args)
    destination = _output_path(args.dst_model, source=args.src_model)
    model = load_checkpoint(args.src_model, args.classes_number)
    loader = _calibration_loader(args, mean, std, root)
    size = args.image_size or ORIGINAL_CROP
    quantized = quantize_fx(
        model, loader, (torch.randn(1, 3, size, size),), batches=args.calibration_batches, progress=sys.stderr.isatty()
    )
    save_torchscript(quantized, destination)
    _report_sizes(args.src_model, destination, "INT8")


def task_export(args) -> None:
    """Export an FP32 checkpoint to ONNX; with --int8, quantize it with ONNX Runtime's static QDQ quantization.

    The INT8 file is calibrated like --task quantize: --calibration_batches batches of --batch_size images
    of --dataset_path/train in the same seeded order; weights per channel, activations unsigned (notebook 10).
    """
    import tempfile

    import torch

    from qtutor import deploy
    from qtutor.data import ORIGINAL_CROP
    from qtutor.errors import InputError
    from qtutor.models import load_checkpoint

    _require(args, "src_model", "dst_model")
    destination = _output_path(args.dst_model, source=args.src_model)
    if destination.suffix != ".onnx":
        raise InputError(f"--dst_model {destination}: expected a file name ending in .onnx")
    calibration = _check_calibration(args) if args.int8 else None
    deploy.require("onnx", "onnxscript", "onnxruntime")
    model = load_checkpoint(args.src_model, args.classes_number)
    size = args.image_size or ORIGINAL_CROP
    example = torch.zeros(2, 3, size, size)  # a batch of two: the exported batch size stays dynamic
    if calibration is None:
        deploy.export_onnx(model, example, destination)
    else:
        batches = deploy.calibration_batches(_calibration_loader(args, *calibration), args.calibration_batches)
        with tempfile.TemporaryDirectory() as folder:
            deploy.export_onnx(model, example, Path(folder) / "fp32.onnx")
            deploy.quantize_onnx(Path(folder) / "fp32.onnx", destination, batches)
    print(f"{'INT8 (static QDQ)' if args.int8 else 'FP32'} ONNX for {size}x{size} images, any batch size")
    _report_sizes(args.src_model, destination, "INT8 ONNX" if args.int8 else "FP32 ONNX")


def _load_model(path, image_size: int):
    """The model --task predict or evaluate runs: TorchScript, or an .onnx file in ONNX Runtime."""
    from qtutor.errors import InputError

    if Path(path).suffix != ".onnx":
        return _load_torchscript(path)
    from qtutor import deploy

    try:
        model = deploy.load_onnx(path)
    except InputError as error:  # deploy names the file; here the person typed it as --dst_model
        raise InputError(str(error).replace(f"ONNX file {path}:", f"--dst_model {path}:", 1)) from None
    if model.image_size not in (None, image_size):
        raise InputError(
            f"--dst_model {path}: takes {model.image_size}x{model.image_size} images but the "
            f"preprocessing gives {image_size}x{image_size}; expected --image_size {model.image_size}"
        )
    return model


def _load_torchscript(path):
    from qtutor.errors import InputError
    from qtutor.ptq import load_torchscript

    if not Path(path).is_file():
        raise InputError(f"--dst_model {path}: does not exist; expected the TorchScript file --task quantize wrote")
    try:
        return load_torchscript(path)
    except Exception as error:  # torch.jit.load raises RuntimeError and others on a wrong file
        raise InputError(
            f"--dst_model {path}: not a TorchScript model ({error.__class__.__name__}); expected the "
            "file --task quantize wrote"
        ) from None


def task_predict(args) -> None:
    """Classify every image under --images_path: ``name<TAB>class_name<TAB>probability``."""
    import torch

    from qtutor.data import ORIGINAL_CROP, image_files, load_rgb, read_labels
    from qtutor.errors import InputError

    _require(args, "dst_model", "labels_file", "images_path")
    mean, std = _statistics(args)
    folder = Path(args.images_path)
    if not folder.is_dir():
        raise InputError(f"--images_path {folder}: does not exist; expected a folder of images")
    files = image_files(folder)
    if not files:
        raise InputError(f"--images_path {folder}: holds no files; expected images to classify")
    size = args.image_size or ORIGINAL_CROP
    model = _load_model(args.dst_model, size)
    with torch.no_grad():
        outputs = model(torch.zeros(1, 3, size, size)).shape[-1]
    labels = read_labels(args.labels_file, outputs)
    transform = _transform(args, mean, std)
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
    """Train a DenseNet-121 on --dataset_path (the bundled digits by default); write its state_dict.

    For the bundled digits with the course's recipe, statistics and size, the
    result is the model that ships in data/models/, so it is copied instead of
    trained again (20 minutes on 2 cores).
    """
    import dataclasses

    import torch

    from qtutor.data import COURSE_IMAGE_SIZE, DIGITS_DIR, bundled_stats
    from qtutor.files import save_atomically
    from qtutor.models import Recipe, course_checkpoint, train, training_record

    _require(args, "dst_model")
    destination = _output_path(args.dst_model)
    _positive(args.epochs, "epochs")
    recipe = Recipe() if args.epochs is None else dataclasses.replace(Recipe(), epochs=args.epochs)
    image_size = args.image_size or COURSE_IMAGE_SIZE
    root = _dataset_root(args) if args.dataset_path else DIGITS_DIR
    bundled = root.resolve() == DIGITS_DIR.resolve()
    if args.mean is None and args.std is None and bundled:
        mean, std = bundled_stats()
    else:
        mean, std = _statistics(args)
    shipped = (
        bundled
        and (mean, std) == bundled_stats()
        and args.classes_number == 10
        and image_size == COURSE_IMAGE_SIZE
        and recipe == Recipe()
    )
    if shipped:
        save_atomically(lambda temporary: shutil.copyfile(course_checkpoint(), temporary), destination)
        record = training_record()
        print(
            f"the bundled digits with the course's recipe: copied the shipped model {course_checkpoint().name} "
            f"(test accuracy {record['test_accuracy']:.1%}; retrain it with python tools/train_course_model.py)"
        )
    else:
        state, history = train(
            root,
            image_size=image_size,
            recipe=recipe,
            mean=mean,
            std=std,
            classes_number=args.classes_number,
            progress=sys.stderr.isatty(),
        )
        save_atomically(lambda temporary: torch.save(state, temporary), destination)
        print(f"validation accuracy {history['val_accuracy'][-1]:.1%} after {recipe.epochs} epoch(s)")
    print(f"wrote {destination}")


def _onnx_label(path) -> str:
    """ "ONNX INT8" for a quantized (QDQ) ONNX file, "ONNX FP32" otherwise."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return "ONNX INT8" if any(node.op_type == "QuantizeLinear" for node in graph.node) else "ONNX FP32"


def task_evaluate(args) -> None:
    """FP32 against INT8 (and --onnx_model) on dataset_path/test (or val): accuracy, agreement, KL, size, latency."""
    from torch.utils.data import DataLoader

    from qtutor.data import ORIGINAL_CROP
    from qtutor.files import file_size_mb
    from qtutor.metrics import compare, predict, time_in_turns, timing_note
    from qtutor.models import load_checkpoint
    from qtutor.tables import text_table

    _require(args, "src_model", "dst_model", "dataset_path")
    mean, std = _statistics(args)
    root = _dataset_root(args)
    split = "test" if (root / "test").is_dir() else "val" if (root / "val").is_dir() else "train"
    size = args.image_size or ORIGINAL_CROP
    models = {"FP32": (load_checkpoint(args.src_model, args.classes_number), args.src_model)}
    for path in (args.dst_model, args.onnx_model):
        if path is not None:
            model = _load_model(path, size)
            label = _onnx_label(path) if Path(path).suffix == ".onnx" else "INT8"
            models[label if label not in models else Path(path).name] = (model, path)
    dataset = _image_folder(root / split, _transform(args, mean, std))
    loader = DataLoader(dataset, batch_size=32)
    reference = predict(models["FP32"][0], loader)
    example = dataset[0][0].unsqueeze(0)
    timings = time_in_turns({name: (lambda m=model: m(example)) for name, (model, _) in models.items()})
    rows = []
    for name, (model, path) in models.items():
        row = compare(reference, reference if name == "FP32" else predict(model, loader))
        rows.append(
            {
                "model": name,
                "accuracy [95% CI]": f"{row['accuracy']:.2%}",
                "agreement": f"{row['agreement']:.2%}",
                "KL": row["KL"],
                "size MB": file_size_mb(path),
                "batch 1 ms": timings[name].median,
            }
        )
    print(f"{len(dataset)} images in {root / split}, {size}x{size}; agreement and KL (nats) against FP32")
    print(text_table(rows, {"KL": ".2e", "size MB": ".2f", "batch 1 ms": ".2f"}))
    fp32_row = rows[0]
    for row in rows[1:]:
        print(
            f"{row['model']}/FP32: size {row['size MB'] / fp32_row['size MB']:.2f}x, batch 1 latency "
            f"{row['batch 1 ms'] / fp32_row['batch 1 ms']:.2f}x"
        )
    print(timing_note())


TASKS = {
    "quantize": task_quantize,
    "predict": task_predict,
    "train": task_train,
    "evaluate": task_evaluate,
    "export": task_export,
}


def _as_flags(message: str, parser: argparse.ArgumentParser) -> str:
    """An InputError's ``name=value`` for one of the command line's flags, written as the flag: ``--name value``.

    qtutor.data and qtutor.models name a bad setting as a notebook caller passed it (``classes_number=3``);
    here the person typed ``--classes_number 3``.
    """
    flags = "|".join(action.dest for action in parser._actions if action.option_strings)
    return re.sub(rf"(?<![^\s(])({flags})=", r"--\1 ", message)  # a word of its own, not inside a path


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code (2 for bad input, with one line on stderr)."""
    from qtutor.errors import InputError, MissingDataError

    parser = build_parser()
    args = parser.parse_args(argv)
    from qtutor.session import quietly  # (after parsing: --help and a bad command line need no torch)

    try:
        if args.image_size is not None:
            _positive(args.image_size, "image_size")
        with quietly():
            TASKS[args.task](args)
    except (InputError, MissingDataError) as error:
        print(f"qtutor: error: {_as_flags(str(error), parser)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("qtutor: interrupted", file=sys.stderr)
        return 130
    green, reset = ("", "") if os.environ.get("NO_COLOR") else ("\033[92m", "\033[0m")
    print(f"{green}{COMPLETED}{reset}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
