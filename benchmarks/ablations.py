"""The experiments of notebooks 06 and 08 at full size: what each notebook runs one point of, live.

    python benchmarks/ablations.py [--quick] [--out benchmarks/results]

On the course's DenseNet-121 and the bundled digits (1,000 test images), every
model compared with FP32 by accuracy (95% interval), agreement and KL:

    calibration   x86 INT8 calibrated on 4 .. 3,500 training images, three random orders, histogram and min-max
    bad           x86 INT8 calibrated on the right images and on four wrong ones (normalization, one class,
                  augmentation, the original script's CenterCrop(224))
    bits          fake quantization at (weight bits, activation bits) pairs, three ways to choose ranges
    mixed         real INT8 models keeping the k layers with the lowest own SQNR in FP32 (size, batch-32 latency)
    qat           at 4 bits: PTQ, FP32 fine-tuning then PTQ (same effort), QAT

Writes ablations.md and ablations.json into --out; notebooks 06 and 08 read the JSON. About half an hour on
2 cores; --quick runs a small version of each sweep (minutes, for the tests).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from qtutor import ablations, metrics
from qtutor.data import course_data
from qtutor.models import course_model
from qtutor.session import quiet_deprecations
from qtutor.tables import text_table

from common import RESULTS, command_line, describe, machine, write_results

FULL = dict(counts=(4, 16, 64, 256, 1024, 3500), seeds=(0, 1, 2), bad_images=256,
            widths=((8, 8), (6, 6), (4, 8), (8, 4), (4, 6), (6, 4), (4, 4)),
            observers=("minmax", "histogram", "mse"), ks=(0, 1, 2, 4, 8, 16), qat_widths=((4, 4), (4, 8)),
            qat_images=3500, qat_epochs=1)
QUICK = dict(counts=(4, 32), seeds=(0,), bad_images=32, widths=((8, 8), (4, 4)), observers=("minmax", "mse"),
             ks=(0, 1), qat_widths=((4, 4),), qat_images=64, qat_epochs=1)


def _row(measured: dict) -> dict:
    """An Estimate-holding measurement as plain numbers for JSON: value, interval, count."""
    row = {}
    for key, value in measured.items():
        if isinstance(value, metrics.Estimate):
            row.update({key: value.value, f"{key} low": value.low, f"{key} high": value.high, "images": value.count})
        else:
            row[key] = value
    return row


def run(sizes: dict) -> dict:
    """Every sweep at ``sizes``; returns JSON-ready rows per sweep."""
    data, fp32 = course_data(), course_model()
    example = data.example_inputs()
    reference = metrics.predict(fp32, data.test_loader())
    results = {"fp32": _row({"accuracy": metrics.accuracy(reference)})}
    print("calibration sweep", flush=True)
    results["calibration"] = [
        {k: v for k, v in _row(r).items() if k != "images"} | {"calibration images": r["images"]}
        for r in ablations.calibration_sweep(fp32, data, example, counts=sizes["counts"], seeds=sizes["seeds"],
                                             observers=("histogram", "minmax"), reference=reference)]
    print("bad calibrations", flush=True)
    results["bad"] = []
    for name, loader in ablations.bad_calibrations(data, images=sizes["bad_images"]).items():
        from qtutor import ptq

        model = ptq.quantize_fx(fp32, loader, example, batches=None, progress=False)
        results["bad"].append({"calibration": name, **_row(metrics.compare(reference, metrics.predict(
            model, data.test_loader())))})
    print("bit sweep", flush=True)
    results["bits"] = [_row(r) for r in ablations.bit_sweep(fp32, data, example, widths=sizes["widths"],
                                                            observers=sizes["observers"], reference=reference)]
    print("layer sensitivity and mixed precision", flush=True)
    sensitivity = metrics.layer_sensitivity(fp32, example, [data.batch(64, split="train")], data.batch(32))
    ranked = ablations.weakest_weighted_layers(fp32, sensitivity)
    results["sensitivity"] = sensitivity
    with tempfile.TemporaryDirectory() as folder:
        results["mixed"] = [dict(_row(r), layers=ranked[:r["k"]]) for r in ablations.mixed_precision_sweep(
            fp32, data, example, ranked, ks=sizes["ks"], reference=reference, folder=Path(folder))]
    print("QAT against its control", flush=True)
    results["qat"] = []
    for weight_bits, activation_bits in sizes["qat_widths"]:
        compared = ablations.qat_comparison(fp32, data, example, weight_bits=weight_bits,
                                            activation_bits=activation_bits, images=sizes["qat_images"],
                                            epochs=sizes["qat_epochs"], reference=reference)
        results["qat"] += [{"weight bits": weight_bits, "activation bits": activation_bits, "model": name,
                            **_row(measured)} for name, measured in compared.items()]
    return results


def markdown(info: dict, results: dict, sizes: dict) -> str:
    """The results as a Markdown page, one table per sweep."""
    def table(rows, columns, formats):
        return ["```", text_table([{c: r.get(c, "-") for c in columns} for r in rows], formats), "```", ""]

    estimate = {"accuracy": ".4f", "accuracy low": ".4f", "accuracy high": ".4f", "agreement": ".4f", "KL": ".2e"}
    lines = ["# Notebooks 06 and 08 at full size", "", f"Machine: {describe(info)}.", f"Command: `{command_line()}`",
             "", f"FP32: accuracy {results['fp32']['accuracy']:.4f} on {results['fp32']['images']} test images. "
             "Every row: accuracy with its 95% Wilson interval, top-1 agreement with FP32, mean KL(FP32 || model).",
             "", f"Sizes: `{sizes}`", "", "## Calibration size and observer", ""]
    lines += table(results["calibration"], ["observer", "calibration images", "seed", "accuracy", "accuracy low",
                                            "accuracy high", "agreement", "KL"], estimate)
    lines += ["## Calibration gone wrong", ""]
    lines += table(results["bad"], ["calibration", "accuracy", "accuracy low", "accuracy high", "agreement", "KL"],
                   estimate)
    lines += ["## Weight and activation bits, three range choices (fake quantization)", ""]
    lines += table(results["bits"], ["weight_bits", "activation_bits", "observer", "accuracy", "accuracy low",
                                     "accuracy high", "agreement", "KL"], estimate)
    lines += ["## Mixed precision: the k layers with the lowest own SQNR kept in FP32", ""]
    lines += table(results["mixed"], ["k", "kept in FP32", "accuracy", "agreement", "KL", "file MB", "batch 32 ms"],
                   estimate | {"file MB": ".2f", "batch 32 ms": ".1f"})
    lines += ["## QAT against PTQ after the same fine-tuning", ""]
    lines += table(results["qat"], ["weight bits", "activation bits", "model", "accuracy", "accuracy low",
                                    "accuracy high", "agreement", "KL"], estimate)
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a small version of every sweep (for the tests)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    quiet_deprecations()
    sizes = QUICK if args.quick else FULL
    results = run(sizes)
    info = machine()
    write_results(args.out, "ablations", markdown(info, results, sizes),
                  {"machine": info, "command": command_line(), "sizes": sizes, **results})


if __name__ == "__main__":
    main()
