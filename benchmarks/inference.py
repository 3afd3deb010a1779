"""DenseNet-121 inference in every form the course teaches, measured side by side in one run.

    python benchmarks/inference.py [--sizes 224 64] [--batches 1 16] [--repeats 15] [--threads 2]
                                   [--variants fp32 fp32_compiled fx_int8 pt2e_int8_compiled bf16 fp16 ort_fp32
                                               ort_int8 openvino_fp32 openvino_fp32_default openvino_int8]
                                   [--random-weights | --small] [--out benchmarks/results]

For each image size the course's DenseNet-121 (trained on the bundled digits at 64x64, shipped in data/models/;
at other sizes the same weights run for speed and size only) is turned into each variant:

    fp32                 the float model, eager
    fp32_compiled        torch.compile (inductor, freezing on)
    fx_int8              FX static INT8 (x86 engine), saved as TorchScript and loaded back, as the CLI does
    pt2e_int8_compiled   torchao PT2E with X86InductorQuantizer, lowered to INT8 kernels by torch.compile
    bf16, fp16           the float model cast to bfloat16 / float16, eager (only where the CPU computes in them)
    ort_fp32             the model exported to ONNX (torch.onnx.export), run by ONNX Runtime
    ort_int8             that ONNX file quantized by ONNX Runtime's quantize_static (QDQ, per-channel weights,
                         unsigned activations), run by ONNX Runtime
    openvino_fp32        the same ONNX file in OpenVINO, computed in FP32 (inference precision hint f32)
    openvino_fp32_default  the same, at OpenVINO's default inference precision (bf16 on CPUs with BF16 instructions)
    openvino_int8        the OpenVINO model quantized by NNCF (nncf.quantize), run by OpenVINO

Latency: every variant is called once (for compiled ones: the compilation), twice more as warm-up, then the
variants take turns, one call each, ``--repeats`` times, so drift on a shared machine hits all of them alike.
Median and interquartile range per variant (qtutor.metrics.time_in_turns, the course's one timing helper);
speed-up is FP32 eager's median over the variant's, same batch, same run. ONNX Runtime and OpenVINO use as many
threads as torch (--threads), and ONNX Runtime's threads do not spin between calls. File size: each variant's saved
form on disk (an OpenVINO model: its .xml graph and .bin weights). Accuracy, agreement and KL against FP32: the
bundled test split (1,000 images), at the size the model was trained at only.
Writes inference.md and inference.json into --out.
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path

import torch
import torchvision
from torch.utils.data import DataLoader

from qtutor import deploy, pt2e, ptq
from qtutor.data import COURSE_IMAGE_SIZE, course_data
from qtutor.files import file_size_mb
from qtutor.hardware import cpu_flags
from qtutor.metrics import compare, predict, time_in_turns
from qtutor.models import build_densenet, course_model
from qtutor.precision import CastInputs
from qtutor.session import quiet_deprecations
from qtutor.tables import text_table

from common import RESULTS, command_line, describe, machine, timing_row, write_results

VARIANTS = [
    "fp32",
    "fp32_compiled",
    "fx_int8",
    "pt2e_int8_compiled",
    "bf16",
    "fp16",
    "ort_fp32",
    "ort_int8",
    "openvino_fp32",
    "openvino_fp32_default",
    "openvino_int8",
]
RUNTIMES = {"ort_fp32", "ort_int8", "openvino_fp32", "openvino_fp32_default", "openvino_int8"}
INT8 = ["fx_int8", "pt2e_int8_compiled", "ort_int8", "openvino_int8"]
FILE_COLUMNS = [
    "size",
    "variant",
    "file",
    "file MB",
    "build s",
    "size vs fp32",
    "accuracy",
    "accuracy low",
    "accuracy high",
    "agreement",
    "KL",
    "accuracy - fp32 (pp)",
]
WELL_TRAINED = 0.95  # below this FP32 test accuracy, an INT8-minus-FP32 difference says nothing about quantization
HALF_FLAGS = {"bf16": {"avx512_bf16", "amx_bf16"}, "fp16": {"avx512_fp16", "amx_fp16"}}


def float_model(random_weights: bool, small: bool = False) -> tuple[torch.nn.Module, str]:
    """The course's trained DenseNet-121 (shipped in data/models/), a seeded random one, or a seeded small one.

    The small one has DenseNet-121's stem, growth rate (32) and bottleneck (4 x 32 channels) but two blocks of four
    layers instead of four blocks of 6, 12, 24 and 16: each variant builds in seconds (tests/test_benchmarks.py).
    """
    if small:
        torch.manual_seed(0)
        model = torchvision.models.DenseNet(growth_rate=32, block_config=(4, 4), num_init_features=64, num_classes=10)
        return model.eval(), "a small DenseNet (two blocks of four layers), random weights (seed 0)"
    if random_weights:
        torch.manual_seed(0)
        return build_densenet(10).eval(), "random weights (seed 0)"
    return course_model(), f"the course model, trained on the bundled digits at {COURSE_IMAGE_SIZE}x{COURSE_IMAGE_SIZE}"


def compiled(model: torch.nn.Module) -> torch.nn.Module:
    """``torch.compile`` with inductor; freezing lets it fold weights and lower quantized patterns to INT8."""
    import torch._inductor.config

    torch._inductor.config.freezing = True
    torch._dynamo.config.automatic_dynamic_shapes = False  # a static graph for each batch size
    return torch.compile(model)


def build_runtime(name: str, model: torch.nn.Module, calibration: DataLoader, example: torch.Tensor, folder: Path):
    """An ONNX Runtime or OpenVINO variant: (callable model, saved file). All start from one ONNX export."""
    onnx_file = folder / "fp32.onnx"
    if not onnx_file.exists():
        deploy.export_onnx(model, example, onnx_file)
    if name == "ort_fp32":
        return deploy.OnnxRuntimeModel(onnx_file), onnx_file
    batches = deploy.calibration_batches(calibration, 10)
    if name == "ort_int8":
        deploy.quantize_onnx(onnx_file, folder / "ort_int8.onnx", batches)
        return deploy.OnnxRuntimeModel(folder / "ort_int8.onnx"), folder / "ort_int8.onnx"
    if name == "openvino_int8":
        deploy.save_openvino(deploy.quantize_openvino(deploy.to_openvino(onnx_file), batches), folder / f"{name}.xml")
        return deploy.OpenVinoModel(folder / f"{name}.xml"), folder / f"{name}.xml"
    file = folder / "openvino_fp32.xml"
    if not file.exists():
        deploy.save_openvino(deploy.to_openvino(onnx_file), file)
    return deploy.OpenVinoModel(file, precision="f32" if name == "openvino_fp32" else None), file


def saved_mb(file: Path) -> float:
    """Megabytes of a variant's saved form: one file, or an OpenVINO model's .xml and .bin together."""
    return sum(map(file_size_mb, deploy.openvino_files(file))) if file.suffix == ".xml" else file_size_mb(file)


def build(name: str, model: torch.nn.Module, calibration: DataLoader, example: torch.Tensor, folder: Path):
    """Variant ``name`` of ``model``: (callable module, saved file, seconds it took to make, not counting compile).

    ``folder`` already holds the FP32 state_dict as fp32.pth.
    """
    start = time.perf_counter()
    fp32_file = folder / "fp32.pth"
    if name in RUNTIMES:
        return (*build_runtime(name, model, calibration, example, folder), time.perf_counter() - start)
    if name == "fp32":
        return model, fp32_file, time.perf_counter() - start
    if name == "fp32_compiled":
        return compiled(model), fp32_file, time.perf_counter() - start
    if name == "fx_int8":
        file = folder / "fx_int8.pt"
        ptq.save_torchscript(ptq.quantize_fx(model, calibration, (example,), batches=10, progress=False), file)
        return ptq.load_torchscript(file), file, time.perf_counter() - start
    if name == "pt2e_int8_compiled":
        file = folder / "pt2e_int8.pt2"
        pt2e.save(pt2e.quantize_pt2e(model, calibration, example, batches=10), example, file)
        return compiled(pt2e.load(file)), file, time.perf_counter() - start
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[name]
    file = folder / f"{name}.pth"
    half = copy.deepcopy(model).to(dtype)
    torch.save(half.state_dict(), file)
    return CastInputs(half, dtype).eval(), file, time.perf_counter() - start


def available(names: list[str]) -> tuple[list[str], dict[str, str]]:
    """The variants this CPU can run well, and why each other one was skipped."""
    flags, skipped = cpu_flags(), {}
    for name, needed in HALF_FLAGS.items():
        if name in names and not flags & needed:
            skipped[name] = (
                f"the CPU has none of {', '.join(sorted(needed))}: it would emulate {name}, not compute in it"
            )
    return [n for n in names if n not in skipped], skipped


@torch.no_grad()
def latency_rows(models: dict, images: torch.Tensor, size: int, repeats: int) -> list[dict]:
    """Every variant on the same batch of real images: a first call each, then ``time_in_turns``."""
    first = time_in_turns({name: (lambda m=model: m(images)) for name, model in models.items()}, repeats=1, warmup=0)
    timings = time_in_turns(
        {name: (lambda m=model: m(images)) for name, model in models.items()}, repeats=repeats, warmup=2
    )
    fp32 = timings["fp32"].median if "fp32" in timings else None
    rows = []
    for name, timing in timings.items():
        row = {
            "size": size,
            "batch": len(images),
            "variant": name,
            **timing_row(timing),
            "first call s": first[name].median / 1e3,
        }
        row["speed-up vs fp32"] = fp32 / timing.median if fp32 else float("nan")
        rows.append(row)
    return rows


def size_rows(size: int, names: list[str], args, folder: Path) -> tuple[list[dict], list[dict], str]:
    """Build every variant at one image size; return its latency rows, its file/accuracy rows and the model note."""
    model, origin = float_model(args.random_weights, args.small)
    data = course_data(size)
    calibration = data.calibration_loader(batch_size=16)
    example = data.batch(2, split="train")
    torch.save(model.state_dict(), folder / "fp32.pth")
    models, files = {}, []
    for name in names:
        print(f"[{size}px] building {name}", flush=True)
        models[name], file, seconds = build(name, model, calibration, example, folder)
        files.append({"size": size, "variant": name, "file": file.name, "file MB": saved_mb(file), "build s": seconds})
    latency = []
    for batch in args.batches:
        print(f"[{size}px] timing batch {batch}", flush=True)
        latency += latency_rows(models, data.batch(batch), size, args.repeats)
    reference = next((r for r in files if r["variant"] == "fp32"), None)
    judged = size == COURSE_IMAGE_SIZE and reference is not None
    outputs = {}
    for row in files:
        row["size vs fp32"] = row["file MB"] / reference["file MB"] if reference else float("nan")
        if judged:
            print(f"[{size}px] accuracy of {row['variant']}", flush=True)
            outputs[row["variant"]] = predict(models[row["variant"]], data.test_loader(batch_size=50))
            measured = compare(outputs["fp32"], outputs[row["variant"]])
            row.update(
                {
                    "accuracy": measured["accuracy"].value,
                    "accuracy low": measured["accuracy"].low,
                    "accuracy high": measured["accuracy"].high,
                    "agreement": measured["agreement"].value,
                    "KL": measured["KL"],
                }
            )
            row["accuracy - fp32 (pp)"] = 100 * (row["accuracy"] - files[0]["accuracy"])
    return latency, files, origin + ("" if judged else f", run at {size}x{size} for speed and size only")


def targets(latency: list[dict], files: list[dict]) -> list[str]:
    """The course's targets (issue 6) checked against this run's figures, one line each."""
    lines = []

    def check(label, rows, key, test):
        for row in rows:
            lines.append(f"- {'met' if test(row[key]) else 'MISSED'}: {label} ({row['size']}px: {row[key]:.2f})")

    fx = [r for r in latency if r["variant"] == "fx_int8" and r["size"] == 224 and r["batch"] == 1]
    check("FX INT8 at least 3x faster than FP32 eager at 224, batch 1", fx, "speed-up vs fp32", lambda v: v >= 3)
    int8 = [r for r in files if r["variant"] == "fx_int8"]
    check("INT8 (TorchScript) file at most 30% of FP32", int8, "size vs fp32", lambda v: v <= 0.30)
    fp32 = {r["size"]: r["accuracy"] for r in files if r["variant"] == "fp32" and "accuracy" in r}
    quantized = [r for r in files if r["variant"] in INT8 and "accuracy" in r]
    check(
        "INT8 test accuracy within 0.5 points of FP32",
        [r for r in quantized if fp32[r["size"]] >= WELL_TRAINED],
        "accuracy - fp32 (pp)",
        lambda v: abs(v) <= 0.5,
    )
    lines += [
        f"- not judged: INT8 accuracy at {size}px, where the FP32 model itself scores {accuracy:.1%} (below "
        f"{WELL_TRAINED:.0%}): differences there are noise"
        for size, accuracy in fp32.items()
        if accuracy < WELL_TRAINED and any(r["size"] == size for r in quantized)
    ]
    return lines


def fastest_int8(latency: list[dict], files: list[dict], within_pp: float = 0.5) -> list[str]:
    """For each size and batch, the fastest INT8 variant whose test accuracy is within ``within_pp`` points of FP32.

    Accuracy is judged where it was measured (the size the model was trained at, with FP32 well trained);
    a variant qualifies at every size if it qualifies there.
    """
    fp32 = {r["size"]: r["accuracy"] for r in files if r["variant"] == "fp32" and "accuracy" in r}
    judged = [r for r in files if r["variant"] in INT8 and "accuracy" in r and fp32[r["size"]] >= WELL_TRAINED]
    qualified = {r["variant"] for r in judged if abs(r["accuracy - fp32 (pp)"]) <= within_pp}
    if not judged:
        return ["- not judged: no INT8 accuracy was measured on a well-trained FP32 model in this run"]
    lines = []
    for size, batch in dict.fromkeys((r["size"], r["batch"]) for r in latency):
        rows = [r for r in latency if (r["size"], r["batch"]) == (size, batch) and r["variant"] in qualified]
        if rows:
            best = min(rows, key=lambda r: r["median ms"])
            lines.append(
                f"- {size}px, batch {batch}: {best['variant']} ({best['median ms']:.2f} ms, "
                f"{best['speed-up vs fp32']:.2f}x FP32 eager)"
            )
    left_out = sorted({r["variant"] for r in judged} - qualified)
    return lines + ([f"- more than {within_pp} points from FP32, left out: {', '.join(left_out)}"] if left_out else [])


def markdown(info: dict, latency: list[dict], files: list[dict], origins: dict, skipped: dict, args) -> str:
    """The results as a Markdown page."""
    lines = [
        "# DenseNet-121 inference: FP32, compiled, INT8, BF16/FP16, ONNX Runtime, OpenVINO",
        "",
        f"Machine: {describe(info)}.",
        f"Command: `{command_line()}`",
        "",
        f"Latency: median and interquartile range of {args.repeats} calls per variant, taken in turns after "
        "a first call and two warm-up calls; speed-up = FP32 eager median / variant median, same batch, "
        "same run. `first call s` includes compilation for the compiled variants.",
        "",
    ]
    lines += [f"- {size}px model: {origin}" for size, origin in origins.items()]
    lines += [f"- skipped {name}: {why}" for name, why in skipped.items()]
    if any(r["variant"] == "openvino_fp32_default" for r in files):
        lines.append(
            f"- openvino_fp32_default: OpenVINO's default inference precision on this CPU is "
            f"{deploy.default_precision()}"
        )
    lines += [
        "",
        "```",
        text_table(latency, {"median ms": ".2f", "IQR ms": ".2f", "first call s": ".1f", "speed-up vs fp32": ".2f"}),
        "```",
        "",
        "Files and accuracy (bundled test split, 1,000 images, with the 95% interval; agreement and KL "
        "against FP32; `build s` = quantizing/saving, not compiling):",
        "",
        "```",
        text_table(
            [{k: r.get(k, "-") for k in FILE_COLUMNS} for r in files],
            {
                "file MB": ".2f",
                "build s": ".1f",
                "accuracy": ".4f",
                "accuracy low": ".4f",
                "accuracy high": ".4f",
                "agreement": ".4f",
                "KL": ".2e",
                "size vs fp32": ".2f",
                "accuracy - fp32 (pp)": "+.1f",
            },
        ),
        "```",
        "",
        "Targets:",
        "",
        *targets(latency, files),
        "",
        "Fastest INT8 variant within 0.5 points of FP32's test accuracy:",
        "",
        *fastest_int8(latency, files),
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[224, 64])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=VARIANTS)
    untrained = parser.add_mutually_exclusive_group()
    untrained.add_argument("--random-weights", action="store_true", help="a seeded untrained DenseNet (speed only)")
    untrained.add_argument("--small", action="store_true", help="a seeded untrained two-block DenseNet (a smoke test)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    quiet_deprecations()  # the course's targeted filters, and torch's logged note when torchao is imported
    names, skipped = available(args.variants)
    latency, files, origins = [], [], {}
    with tempfile.TemporaryDirectory() as temporary:
        for size in args.sizes:
            folder = Path(temporary) / str(size)
            folder.mkdir()
            size_latency, size_files, origins[size] = size_rows(size, names, args, folder)
            latency += size_latency
            files += size_files
    info = machine()
    page = markdown(info, latency, files, origins, skipped, args)
    write_results(
        args.out,
        "inference",
        page,
        {
            "machine": info,
            "command": command_line(),
            "latency": latency,
            "files": files,
            "models": origins,
            "skipped": skipped,
        },
    )


if __name__ == "__main__":
    main()
