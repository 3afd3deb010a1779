"""The command line: the original flags, the happy path, parity with the original predict, and every bad input."""

import contextlib
import io
import os
import pickle
import re
import shutil
import subprocess
import sys

import pytest
import torch
from PIL import Image
from torchvision import transforms

from qtutor import deploy
from qtutor.cli import COMPLETED, main
from qtutor.data import DIGITS_DIR
from qtutor.models import build_densenet, course_checkpoint, load_checkpoint

MEAN, STD = "(0.1315, 0.1315, 0.1315)", "(0.3088, 0.3088, 0.3088)"
TWO_DIGITS = {"four": "4", "nine": "9"}  # the tiny workspace dataset: two of the bundled classes


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A random-weight FP32 checkpoint, a small dataset with one corrupt image, and its INT8 model."""
    root = tmp_path_factory.mktemp("cli")
    torch.manual_seed(0)
    torch.save(build_densenet(2).state_dict(), root / "fp32.pth")
    for split in ("train", "test"):
        for name, digit in TWO_DIGITS.items():
            folder = root / "dataset" / split / name
            folder.mkdir(parents=True)
            for path in sorted((DIGITS_DIR / split / digit).glob("*.png"))[:6]:
                (folder / path.name).write_bytes(path.read_bytes())
    (root / "dataset" / "train" / "four" / "corrupt.png").write_bytes(b"not a png at all")
    return root


@pytest.fixture(scope="module")
def quantized(workspace):
    """Run --task quantize once (tiny: 32x32, one calibration batch); return its exit code, output and file."""
    argv = [
        "--task",
        "quantize",
        "--src_model",
        str(workspace / "fp32.pth"),
        "--dst_model",
        str(workspace / "int8.pt"),
        "--classes_number",
        "2",
        "--mean",
        MEAN,
        "--std",
        STD,
        "--dataset_path",
        str(workspace / "dataset"),
        "--image_size",
        "32",
        "--calibration_batches",
        "1",
    ]
    result = subprocess.run([sys.executable, "-m", "qtutor", *argv], capture_output=True, text=True, timeout=600)
    return result, workspace / "int8.pt"


def run(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_quantize_happy_path_prints_what_the_original_prints(quantized):
    result, int8 = quantized
    assert result.returncode == 0, result.stderr
    assert "calibration dataset length: 12; classes: {'four': 0, 'nine': 1}; number of categories: 2" in result.stdout
    assert "warning: skipped 1 unreadable image(s)" in result.stderr
    assert COMPLETED in result.stdout.splitlines()[-1]
    assert int8.is_file() and int8.stat().st_size < 0.35 * (int8.parent / "fp32.pth").stat().st_size


def original_predict(model_path, labels_file, images_path, mean, std):
    """The original script's predict path, re-implemented faithfully (RGB images only, as it required)."""
    import ast

    model = torch.jit.load(model_path)
    model.eval()
    labels = {}
    with open(labels_file) as handle:
        for line in handle:
            index, name = line.strip().split(" ")
            labels[int(index)] = name
    transform = transforms.Compose(
        [
            transforms.CenterCrop(224),
            transforms.ToTensor(),
            transforms.Normalize(ast.literal_eval(mean), ast.literal_eval(std)),
        ]
    )
    lines = []
    for folder, _, files in os.walk(images_path):
        for file in sorted(files):
            image = transform(Image.open(os.path.join(folder, file))).unsqueeze(0)
            probabilities = torch.nn.functional.softmax(model(image), dim=1)[0]
            index = int(torch.argmax(probabilities))
            lines.append(f"{file}\t{labels[index]}\t{probabilities[index].item():.4f}")
    return lines


def test_predict_matches_the_original_on_rgb_images(quantized, tmp_path, capsys):
    _, int8 = quantized
    generator = torch.Generator().manual_seed(1)
    for i in range(5):
        pixels = (torch.rand(240 + 8 * i, 256, 3, generator=generator) * 255).to(torch.uint8).numpy()
        Image.fromarray(pixels, "RGB").save(tmp_path / f"image_{i}.png")
    code, out, _ = run(
        capsys,
        "--task",
        "predict",
        "--dst_model",
        str(int8),
        "--labels_file",
        str(DIGITS_DIR / "labels.txt"),
        "--images_path",
        str(tmp_path),
        "--mean",
        MEAN,
        "--std",
        STD,
    )
    assert code == 0
    ours = out.splitlines()[:-1]
    assert ours == original_predict(int8, DIGITS_DIR / "labels.txt", tmp_path, MEAN, STD)
    assert len(ours) == 5


def test_predict_handles_every_image_mode_and_skips_non_images(quantized, capsys):
    _, int8 = quantized
    code, out, err = run(
        capsys,
        "--task",
        "predict",
        "--dst_model",
        str(int8),
        "--labels_file",
        str(DIGITS_DIR / "labels.txt"),
        "--images_path",
        str(DIGITS_DIR.parent / "samples"),
        "--mean",
        MEAN,
        "--std",
        STD,
        "--image_size",
        "32",
    )
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == 11 and COMPLETED in lines[-1]
    for line in lines[:-1]:
        name, label, probability = line.split("\t")
        assert label in ("zero", "one") and 0.5 <= float(probability) <= 1 and len(probability) == 6
    assert {line.split("\t")[0].rsplit("_", 1)[1] for line in lines[:-1]} == {
        "l.png",
        "rgb.png",
        "rgba.png",
        "p.png",
        "cmyk.jpg",
    }
    assert "warning: skipped" in err and "notes.txt: not an image" in err


class RunsCode:
    """Unpickling this runs a shell command: what a malicious checkpoint does."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def malicious_checkpoint(path, marker):
    torch.save({"classifier.weight": RunsCode(marker)}, path)


def bad_files(root):
    """Make the bad input files; return a dict of their paths."""
    (root / "garbage.pth").write_bytes(b"\x00\x01 definitely not a checkpoint")
    torch.save([torch.zeros(2)], root / "list.pth")
    torch.save({"features.conv0.weight": torch.zeros(3)}, root / "partial.pth")
    malicious_checkpoint(root / "evil.pth", root / "pwned")
    (root / "evil_raw.pth").write_bytes(pickle.dumps({"x": RunsCode(root / "pwned")}))
    (root / "labels_bad.txt").write_text("0 four\nnine\n")
    (root / "labels_duplicate.txt").write_text("0 four\n0 nine\n")
    (root / "labels_short.txt").write_text("0 four\n")
    (root / "empty").mkdir()
    (root / "no_train").mkdir()
    (root / "no_images" / "train" / "four").mkdir(parents=True)
    (root / "only_text").mkdir()
    (root / "only_text" / "a.txt").write_text("hello")
    return root


def task_argv(task, defaults, overrides):
    """``--task TASK --flag value ...`` from defaults updated by overrides (a None value drops the flag)."""
    values = {**defaults, **overrides}
    argv = ["--task", task]
    for key, value in values.items():
        if value is not None:
            argv += [f"--{key}", str(value)]
    return argv


def quantize_args(workspace, **overrides):
    return task_argv(
        "quantize",
        {
            "src_model": workspace / "fp32.pth",
            "dst_model": workspace / "out" / "new_int8.pt",
            "mean": MEAN,
            "std": STD,
            "dataset_path": workspace / "dataset",
            "classes_number": "2",
        },
        overrides,
    )


def predict_args(int8, **overrides):
    return task_argv(
        "predict",
        {
            "dst_model": int8,
            "labels_file": DIGITS_DIR / "labels.txt",
            "images_path": DIGITS_DIR.parent / "samples",
            "mean": MEAN,
            "std": STD,
            "image_size": "32",
        },
        overrides,
    )


def assert_rejected(capsys, monkeypatch, workspace, argv, message):
    """Exit code 2, one error line (the last on stderr) naming the problem, no traceback, no file written."""
    if not (workspace / "garbage.pth").exists():
        bad_files(workspace)
    (workspace / "out").mkdir(exist_ok=True)
    monkeypatch.chdir(workspace)
    before = sorted(p.name for p in workspace.rglob("*"))
    code, out, err = run(capsys, *argv)
    assert code == 2
    lines = err.splitlines()  # warnings about skipped files may come first; the error is one line, the last
    assert lines[-1].startswith("qtutor: error: ") and message in lines[-1] and "Traceback" not in err
    assert sum(line.startswith("qtutor: error") for line in lines) == 1
    assert COMPLETED not in out
    assert sorted(p.name for p in workspace.rglob("*")) == before, "a file was written"
    assert not (workspace / "pwned").exists(), "the malicious checkpoint ran code"


QUANTIZE_ERRORS = [
    (dict(src_model="missing.pth"), "missing.pth: does not exist"),
    (dict(src_model="garbage.pth"), "not a readable PyTorch file"),
    (dict(src_model="list.pth"), "holds a list, not a state_dict"),
    (dict(src_model="partial.pth"), "not a DenseNet-121 state_dict"),
    (dict(src_model="evil.pth"), "holds code or objects that weights_only loading refuses (posix.system)"),
    (dict(src_model="evil_raw.pth"), "not a readable PyTorch file"),
    (dict(classes_number="3"), "its classifier has 2 outputs but --classes_number 3; expected them to match"),
    (dict(mean="0.5"), "--mean '0.5': expected a tuple of three numbers"),
    (dict(mean="(0.5, 0.5)"), "--mean '(0.5, 0.5)': expected a tuple of three numbers"),
    (dict(mean="(a, b, c)"), "--mean '(a, b, c)': expected a tuple of three numbers"),
    (dict(std="(0.3, 0, 0.3)"), "--std '(0.3, 0, 0.3)': expected three non-zero numbers"),
    (dict(std=None), "--task quantize needs --std"),
    (dict(dataset_path="nowhere"), "--dataset_path nowhere: does not exist"),
    (dict(dataset_path="no_train"), "has no train/ folder"),
    (dict(dataset_path="no_images"), "no images found"),
    (dict(dst_model="missing_folder/x.pt"), "folder missing_folder does not exist"),
    (dict(dst_model="fp32.pth"), "is the same file as --src_model"),
    (dict(calibration_batches="0"), "--calibration_batches 0: expected a whole number of at least 1"),
]


@pytest.mark.parametrize("overrides,message", QUANTIZE_ERRORS, ids=[m for _, m in QUANTIZE_ERRORS])
def test_quantize_bad_input(workspace, capsys, monkeypatch, overrides, message):
    assert_rejected(capsys, monkeypatch, workspace, quantize_args(workspace, **overrides), message)


PREDICT_ERRORS = [
    (dict(images_path="empty"), "--images_path empty: holds no files"),
    (dict(images_path="nowhere"), "--images_path nowhere: does not exist"),
    (dict(images_path="only_text"), "none of its 1 files is an image"),
    (dict(labels_file="labels_bad.txt"), "line 2 'nine': expected 'index class_name'"),
    (dict(labels_file="labels_duplicate.txt"), "index 0 appears twice"),
    (dict(labels_file="labels_short.txt"), "no label for class index 1"),
    (dict(labels_file="missing.txt"), "cannot be read"),
    (dict(dst_model="missing.pt"), "--dst_model missing.pt: does not exist"),
    (dict(dst_model="garbage.pth"), "not a TorchScript model"),
    (dict(mean="(1, 2, 3, 4)"), "expected a tuple of three numbers"),
    (dict(image_size="0"), "--image_size 0: expected a whole number of at least 1"),
]


@pytest.mark.parametrize("overrides,message", PREDICT_ERRORS, ids=[m for _, m in PREDICT_ERRORS])
def test_predict_bad_input(quantized, capsys, monkeypatch, overrides, message):
    _, int8 = quantized
    assert_rejected(capsys, monkeypatch, int8.parent, predict_args(int8, **overrides), message)


# `python -m qtutor ARGV`, which must answer without loading PyTorch (flags are parsed before any task imports it;
# test_packaging checks that the core API still arrives on first use of qtutor.quantize).
COMMAND_LINE_WITHOUT_TORCH = """
import runpy, sys
try:
    runpy.run_module("qtutor", run_name="__main__", alter_sys=True)
    code = 0
except SystemExit as stop:
    code = stop.code
assert "torch" not in sys.modules, "the command line loaded PyTorch"
sys.exit(code)
"""


def run_command_line(*argv: str) -> subprocess.CompletedProcess:
    """``python -m qtutor ARGV`` in a new process, failing (exit 1, AssertionError) if it imported PyTorch."""
    return subprocess.run([sys.executable, "-c", COMMAND_LINE_WITHOUT_TORCH, *argv], capture_output=True, text=True)


def test_bad_command_line_is_one_line_exit_2_without_loading_pytorch():
    for argv in ([], ["--task", "dance"], ["--task", "predict", "--image_size", "big"]):
        result = run_command_line(*argv)
        assert result.returncode == 2, result.stderr
        assert result.stderr.count("\n") == 1 and "qtutor: error:" in result.stderr
        assert "Traceback" not in result.stderr


def test_help_has_an_example_for_each_task_without_loading_pytorch():
    result = run_command_line("--help")
    assert result.returncode == 0, result.stderr
    for task in ("train:", "quantize:", "evaluate:", "predict:", "export:"):
        assert task in result.stdout
    for flag in (
        "--src_model",
        "--dst_model",
        "--classes_number",
        "--mean",
        "--std",
        "--labels_file",
        "--images_path",
        "--dataset_path",
        "--int8",
        "--onnx_model",
    ):
        assert flag in result.stdout


def test_evaluate_prints_the_table(quantized, capsys):
    result, int8 = quantized
    code, out, _ = run(
        capsys,
        "--task",
        "evaluate",
        "--src_model",
        str(int8.parent / "fp32.pth"),
        "--dst_model",
        str(int8),
        "--mean",
        MEAN,
        "--std",
        STD,
        "--dataset_path",
        str(int8.parent / "dataset"),
        "--image_size",
        "32",
    )
    assert code == 0
    assert "12 images in" in out and "INT8/FP32: size 0.2" in out
    fp32_line, int8_line = (line for line in out.splitlines() if line.startswith(("FP32 ", "INT8 ")))
    estimate = r"\d+\.\d\d% \[\d+\.\d\d%, \d+\.\d\d%\]"  # a proportion with its 95% interval
    # FP32 against itself: agreement 100% (12 images: the interval's low end is 75.75%), KL exactly 0.
    assert re.fullmatch(
        rf"FP32\s+{estimate}\s+100\.00% \[75\.75%, 100\.00%\]\s+0\.00e\+00\s+[\d.]+\s+[\d.]+", fp32_line
    ), fp32_line
    assert re.fullmatch(rf"INT8\s+{estimate}\s+{estimate}\s+\d\.\d\de[+-]\d\d\s+[\d.]+\s+[\d.]+", int8_line), int8_line


def test_train_on_a_custom_dataset_writes_a_loadable_state_dict(workspace, capsys):
    target = workspace / "trained.pth"
    (workspace / "dataset" / "val").mkdir(exist_ok=True)
    for name in ("four", "nine"):
        source = workspace / "dataset" / "test" / name
        (workspace / "dataset" / "val" / name).mkdir(exist_ok=True)
        for path in source.glob("*.png"):
            (workspace / "dataset" / "val" / name / path.name).write_bytes(path.read_bytes())
    code, out, _ = run(
        capsys,
        "--task",
        "train",
        "--dst_model",
        str(target),
        "--dataset_path",
        str(workspace / "dataset"),
        "--mean",
        MEAN,
        "--std",
        STD,
        "--image_size",
        "32",
        "--epochs",
        "1",
    )
    assert code == 0 and "validation accuracy" in out and "after 1 epoch(s)" in out
    state = torch.load(target, weights_only=True)
    assert state["classifier.weight"].shape == (2, 1024)


def test_a_library_message_names_an_argument_and_the_command_line_its_flag():
    """qtutor.data and qtutor.models say classes_number=3 (a notebook passed it); the command line says the flag."""
    from qtutor.cli import _as_flags, build_parser

    parser = build_parser()
    assert (
        _as_flags("model file m.pth: its classifier has 2 outputs but classes_number=3; expected them to match", parser)
        == "model file m.pth: its classifier has 2 outputs but --classes_number 3; expected "
        "them to match"
    )
    assert _as_flags("std='(0, 1, 1)': expected three non-zero numbers", parser).startswith("--std '(0, 1, 1)'")
    for untouched in ("labels file /tmp/mean=x.txt: cannot be read", "x=3: not a flag", "--dst_model a.pt: exists"):
        assert _as_flags(untouched, parser) == untouched


# --task export, and .onnx models in predict and evaluate -----------------------------------------------------


def export_args(workspace, **overrides):
    return task_argv(
        "export",
        {
            "src_model": workspace / "fp32.pth",
            "dst_model": workspace / "out" / "new.onnx",
            "mean": MEAN,
            "std": STD,
            "dataset_path": workspace / "dataset",
            "classes_number": "2",
        },
        overrides,
    ) + ["--int8"]


EXPORT_ERRORS = [
    (dict(dst_model="out/model.pt"), "--dst_model out/model.pt: expected a file name ending in .onnx"),
    (dict(dst_model="fp32.pth"), "is the same file as --src_model"),
    (dict(dst_model="missing_folder/x.onnx"), "folder missing_folder does not exist"),
    (dict(src_model="missing.pth"), "missing.pth: does not exist"),
    (dict(src_model="garbage.pth"), "not a readable PyTorch file"),
    (dict(src_model="evil.pth"), "holds code or objects that weights_only loading refuses (posix.system)"),
    (dict(dataset_path=None), "--task export needs --dataset_path"),  # --int8 calibrates
    (dict(mean="(1, 2)"), "--mean '(1, 2)': expected a tuple of three numbers"),
    (dict(dataset_path="no_train"), "has no train/ folder"),
    (dict(calibration_batches="0"), "--calibration_batches 0: expected a whole number of at least 1"),
]


@pytest.mark.parametrize("overrides,message", EXPORT_ERRORS, ids=[m for _, m in EXPORT_ERRORS])
def test_export_bad_input(workspace, capsys, monkeypatch, overrides, message):
    assert_rejected(capsys, monkeypatch, workspace, export_args(workspace, **overrides), message)


def test_export_fp32_runs_like_the_checkpoint(workspace, tmp_path, capsys):
    code, out, _ = run(
        capsys,
        "--task",
        "export",
        "--src_model",
        str(workspace / "fp32.pth"),
        "--dst_model",
        str(tmp_path / "fp32.onnx"),
        "--image_size",
        "32",
    )
    assert code == 0 and "FP32 ONNX for 32x32 images, any batch size" in out
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = load_checkpoint(workspace / "fp32.pth")(images)
    assert torch.allclose(deploy.load_onnx(tmp_path / "fp32.onnx")(images), expected, atol=1e-4)


def quiet_main(*argv) -> str:
    """Run the command line in this process; return what it printed (it must succeed)."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main([str(a) for a in argv]) == 0
    return printed.getvalue()


@pytest.fixture(scope="module")
def course_int8(tmp_path_factory):
    """The shipped course model made INT8 twice: FX TorchScript (--task quantize), ONNX QDQ (--task export --int8)."""
    root = tmp_path_factory.mktemp("course_int8")
    shutil.copyfile(course_checkpoint(), root / "fp32.pth")
    common = [
        "--src_model",
        root / "fp32.pth",
        "--classes_number",
        "10",
        "--mean",
        MEAN,
        "--std",
        STD,
        "--dataset_path",
        DIGITS_DIR,
        "--image_size",
        "64",
    ]
    quiet_main("--task", "quantize", "--dst_model", root / "int8.pt", *common)
    printed = quiet_main("--task", "export", "--dst_model", root / "int8.onnx", "--int8", *common)
    return root, printed


def test_export_int8_writes_a_quarter_size_qdq_model(course_int8):
    root, printed = course_int8
    assert "calibration dataset length: 3500" in printed and "INT8 (static QDQ) ONNX for 64x64 images" in printed
    assert COMPLETED in printed.splitlines()[-1]
    assert (root / "int8.onnx").stat().st_size < 0.35 * (root / "fp32.pth").stat().st_size
    assert deploy.optimized_op_types(root / "int8.onnx")["QLinearConv"] == 120  # every convolution runs in INT8


def predictions(capsys, model, folder) -> dict[str, str]:
    """--task predict on every image in ``folder``: {file name: class name}."""
    code, out, _ = run(
        capsys,
        "--task",
        "predict",
        "--dst_model",
        str(model),
        "--labels_file",
        str(DIGITS_DIR / "labels.txt"),
        "--images_path",
        str(folder),
        "--mean",
        MEAN,
        "--std",
        STD,
        "--image_size",
        "64",
    )
    assert code == 0
    lines = [line.split("\t") for line in out.splitlines()[:-1]]
    assert all(len(fields) == 3 and len(fields[2]) == 6 for fields in lines)  # the same output format
    return {name: label for name, label, _ in lines}


def test_onnx_int8_predicts_the_classes_the_torchscript_int8_model_predicts(course_int8, tmp_path, capsys):
    """Both INT8 files of the course model on 300 bundled test images (30 per digit), one image at a time."""
    root, _ = course_int8
    for digit in "0123456789":
        for path in sorted((DIGITS_DIR / "test" / digit).glob("*.png"))[:30]:
            shutil.copyfile(path, tmp_path / path.name)
    torchscript, onnx_runtime = (predictions(capsys, root / name, tmp_path) for name in ("int8.pt", "int8.onnx"))
    assert len(torchscript) == 300 and torchscript.keys() == onnx_runtime.keys()
    agreement = sum(torchscript[name] == onnx_runtime[name] for name in torchscript) / len(torchscript)
    print(f"ONNX Runtime INT8 and PyTorch FX INT8 agree on {agreement:.1%} of {len(torchscript)} test images")
    assert agreement >= 0.99, f"agreement {agreement:.1%}"


def test_evaluate_puts_the_onnx_model_beside_the_torchscript_one(course_int8, tmp_path, capsys):
    root, _ = course_int8
    for digit in "0123456789":  # ten test images per class; evaluate wants a train/ folder too
        (tmp_path / "train" / digit).mkdir(parents=True)
        (tmp_path / "test" / digit).mkdir(parents=True)
        for path in sorted((DIGITS_DIR / "test" / digit).glob("*.png"))[:10]:
            shutil.copyfile(path, tmp_path / "test" / digit / path.name)
    code, out, _ = run(
        capsys,
        "--task",
        "evaluate",
        "--src_model",
        str(root / "fp32.pth"),
        "--dst_model",
        str(root / "int8.pt"),
        "--onnx_model",
        str(root / "int8.onnx"),
        "--classes_number",
        "10",
        "--mean",
        MEAN,
        "--std",
        STD,
        "--dataset_path",
        str(tmp_path),
        "--image_size",
        "64",
    )
    assert code == 0
    rows = [line.split()[0:2] for line in out.splitlines() if line.startswith(("FP32 ", "INT8 ", "ONNX INT8 "))]
    assert [r[0] for r in rows] == ["FP32", "INT8", "ONNX"], out
    assert "100 images in" in out and "ONNX INT8/FP32: size 0.3" in out and "INT8/FP32: size 0.2" in out


def test_predict_refuses_an_onnx_model_for_another_image_size(course_int8, workspace, capsys, monkeypatch):
    root, _ = course_int8
    (workspace / "out").mkdir(exist_ok=True)
    shutil.copyfile(root / "int8.onnx", workspace / "out" / "int8_64.onnx")
    assert_rejected(
        capsys,
        monkeypatch,
        workspace,
        predict_args(workspace / "out" / "int8_64.onnx"),
        "takes 64x64 images but the preprocessing gives 32x32; expected --image_size 64",
    )
    (workspace / "garbage.onnx").write_bytes(b"not a model")
    assert_rejected(
        capsys,
        monkeypatch,
        workspace,
        predict_args(workspace / "garbage.onnx"),
        "--dst_model " + str(workspace / "garbage.onnx") + ": not an ONNX model ONNX Runtime can load",
    )
