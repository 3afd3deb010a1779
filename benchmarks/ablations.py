"""The experiments of notebooks 06 and 08 at full size: what each notebook runs one point of, live.

    python benchmarks/ablations.py [--quick] [--only calibration bits mixed qat] [--out benchmarks/results]

On the course's DenseNet-121 and the bundled digits (1,000 test images), every
model compared with FP32 by accuracy (95% interval), agreement and KL:

    calibration   x86 INT8 calibrated on 4 .. 3,500 training images, three random orders, histogram and min-max
    bad           x86 INT8 calibrated on the right images and on four wrong ones (normalization, one class,
                  augmentation, the original script's CenterCrop(224))
    bits          fake quantization at (weight bits, activation bits) pairs, three ways to choose ranges
    mixed         real INT8 models keeping the k layers with the lowest own SQNR in FP32 (size, batch-32 latency)
    qat           at 4-bit weights: PTQ, FP32 fine-tuning then PTQ (same effort), QAT

Writes ablations.md and ablations.json into --out; notebooks 06 and 08 read the JSON. About 25 minutes on
2 cores; --quick runs a small version of each sweep (minutes, for the tests); --only runs some sweeps again and
keeps the others' results from the file already in --out (each sweep's command and date are recorded).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from qtutor import ablations, metrics, ptq
from qtutor.data import course_data
from qtutor.models import course_model
from qtutor.session import quiet_deprecations
from qtutor.tables import text_table

from common import RESULTS, command_line, describe, machine, write_results

FULL = dict(
    counts=(4, 16, 64, 256, 1024, 3500),
    seeds=(0, 1, 2),
    bad_images=256,
    widths=((8, 8), (6, 6), (4, 8), (8, 4), (4, 6), (6, 4), (4, 4)),
    observers=("minmax", "histogram", "mse"),
    ks=(0, 1, 2, 4, 8, 16),
    qat_widths=((4, 4), (4, 8)),
    qat_images=3500,
    qat_epochs=1,
)
QUICK = dict(
    counts=(4, 32),
    seeds=(0,),
    bad_images=32,
    widths=((8, 8), (4, 4)),
    observers=("minmax", "mse"),
    ks=(0, 1),
    qat_widths=((4, 4),),
    qat_images=64,
    qat_epochs=1,
)


def _row(measured: dict) -> dict:
    """An Estimate-holding measurement as plain numbers for JSON: value, interval, count."""
    row = {}
    for key, value in measured.items():
        if isinstance(value, metrics.Estimate):
            row.update({key: value.value, f"{key} low": value.low, f"{key} high": value.high, "images": value.count})
        else:
            row[key] = value
    return row


def calibration(fp32, data, example, reference, sizes) -> dict:
    """Calibration size and observer, then calibration gone wrong."""
    rows = [
        {k: v for k, v in _row(r).items() if k != "images"} | {"calibration images": r["images"]}
        for r in ablations.calibration_sweep(
            fp32,
            data,
            example,
            counts=sizes["counts"],
            seeds=sizes["seeds"],
            observers=("histogram", "minmax"),
            reference=reference,
        )
    ]
    bad = []
    for name, loader in ablations.bad_calibrations(data, images=sizes["bad_images"]).items():
        model = ptq.quantize_fx(fp32, loader, example, batches=None, progress=False)
        bad.append(
            {"calibration": name, **_row(metrics.compare(reference, metrics.predict(model, data.test_loader())))}
        )
    return {"calibration": rows, "bad": bad}


def bits(fp32, data, example, reference, sizes) -> dict:
    """Weight and activation widths apart, three range choices."""
    return {
        "bits": [
            _row(r)
            for r in ablations.bit_sweep(
                fp32, data, example, widths=sizes["widths"], observers=sizes["observers"], reference=reference
            )
        ]
    }


def mixed(fp32, data, example, reference, sizes) -> dict:
    """Each layer's own SQNR (numeric suite), then real INT8 models keeping the k weakest in FP32."""
    sensitivity = metrics.layer_sensitivity(fp32, example, [data.batch(64, split="train")], data.batch(32))
    ranked = ablations.weakest_weighted_layers(fp32, sensitivity)
    with tempfile.TemporaryDirectory() as folder:
        rows = [
            dict(_row(r), layers=ranked[: r["k"]])
            for r in ablations.mixed_precision_sweep(
                fp32, data, example, ranked, ks=sizes["ks"], reference=reference, folder=Path(folder)
            )
        ]
    return {"sensitivity": sensitivity, "mixed": rows}


def qat(fp32, data, example, reference, sizes) -> dict:
    """At low widths: PTQ, FP32 fine-tuning then PTQ (the same effort), QAT."""
    rows = []
    for weight_bits, activation_bits in sizes["qat_widths"]:
        compared = ablations.qat_comparison(
            fp32,
            data,
            example,
            weight_bits=weight_bits,
            activation_bits=activation_bits,
            images=sizes["qat_images"],
            epochs=sizes["qat_epochs"],
            reference=reference,
        )
        rows += [
            {"weight bits": weight_bits, "activation bits": activation_bits, "model": name, **_row(measured)}
            for name, measured in compared.items()
        ]
    return {"qat": rows}


SWEEPS = {"calibration": calibration, "bits": bits, "mixed": mixed, "qat": qat}


def runs_after(kept: dict, only: list[str], this_run: dict) -> list[dict]:
    """Which run measured which sweep, once ``this_run`` has measured ``only`` again over the ``kept`` results."""
    earlier = kept.get("runs") or (
        [{"command": kept["command"], "sweeps": list(SWEEPS), "date": kept["machine"]["date"]}] if kept else []
    )
    runs = [dict(run, sweeps=[name for name in run["sweeps"] if name not in only]) for run in earlier]
    return [run for run in runs if run["sweeps"]] + [this_run]


def run(sizes: dict, sweeps) -> dict:
    """The chosen ``sweeps`` at ``sizes``; returns JSON-ready rows per sweep."""
    data, fp32 = course_data(), course_model()
    example = data.example_inputs()
    reference = metrics.predict(fp32, data.test_loader())
    results = {"fp32": _row({"accuracy": metrics.accuracy(reference)})}
    for name in sweeps:
        print(name, flush=True)
        results |= SWEEPS[name](fp32, data, example, reference, sizes)
    return results


INTERVAL = ["accuracy", "accuracy low", "accuracy high", "agreement", "KL"]
# One Markdown table per sweep: (heading, results key, columns).
TABLES = [
    ("Calibration size and observer", "calibration", ["observer", "calibration images", "seed", *INTERVAL]),
    ("Calibration gone wrong", "bad", ["calibration", *INTERVAL]),
    (
        "Weight and activation bits, three range choices (fake quantization)",
        "bits",
        ["weight_bits", "activation_bits", "observer", *INTERVAL],
    ),
    (
        "Mixed precision: the k layers with the lowest own SQNR kept in FP32",
        "mixed",
        ["k", "kept in FP32", "accuracy", "agreement", "KL", "file MB", "batch 32 ms"],
    ),
    ("QAT against PTQ after the same fine-tuning", "qat", ["weight bits", "activation bits", "model", *INTERVAL]),
]


def markdown(info: dict, results: dict, sizes: dict, runs: list[dict]) -> str:
    """The results as a Markdown page, one table per sweep."""
    formats = {
        "accuracy": ".4f",
        "accuracy low": ".4f",
        "accuracy high": ".4f",
        "agreement": ".4f",
        "KL": ".2e",
        "file MB": ".2f",
        "batch 32 ms": ".1f",
    }
    commands = "; ".join(f"`{run['command']}` ({', '.join(run['sweeps'])}, {run['date']})" for run in runs)
    lines = [
        "# Notebooks 06 and 08 at full size",
        "",
        f"Machine: {describe(info)}.",
        f"Commands: {commands}",
        "",
        f"FP32: accuracy {results['fp32']['accuracy']:.4f} on {results['fp32']['images']} test images. "
        "Every row: accuracy with its 95% Wilson interval, top-1 agreement with FP32, mean KL(FP32 || model).",
        "",
        f"Sizes: `{sizes}`",
        "",
    ]
    for heading, key, columns in TABLES:
        rows = [{c: r.get(c, "-") for c in columns} for r in results[key]]
        lines += [f"## {heading}", "", "```", text_table(rows, formats), "```", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a small version of every sweep (for the tests)")
    parser.add_argument(
        "--only",
        nargs="+",
        choices=list(SWEEPS),
        default=list(SWEEPS),
        help="run these sweeps again and keep the others from the results already in --out",
    )
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    sizes = QUICK if args.quick else FULL
    kept = {}
    if set(args.only) != set(SWEEPS):
        kept = json.loads((args.out / "ablations.json").read_text())
        if kept["sizes"] != json.loads(json.dumps(sizes)):
            parser.error(f"--only: {args.out / 'ablations.json'} was run at other sizes; run every sweep")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    quiet_deprecations()
    results = kept | run(sizes, args.only)
    info = machine()
    runs = runs_after(kept, args.only, {"command": command_line(), "sweeps": args.only, "date": info["date"]})
    results |= {"machine": info, "command": runs[0]["command"], "runs": runs, "sizes": sizes}
    write_results(args.out, "ablations", markdown(info, results, sizes, runs), results)


if __name__ == "__main__":
    main()
