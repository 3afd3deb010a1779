"""The experiments of notebooks 06 and 08: calibration size and observer, calibration gone wrong, bit widths,
mixed precision, and QAT against a same-effort control.

Each function runs one sweep over the flows of :mod:`qtutor.ptq` and
:mod:`qtutor.qat` and returns rows measured with :mod:`qtutor.metrics` against
the FP32 model's outputs (``reference``): accuracy with its 95% interval,
agreement and KL divergence. The notebooks run one point of each live;
``benchmarks/ablations.py`` runs them at full size on 2 cores (about half an
hour) and the notebooks plot its results.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Subset

from qtutor import metrics, ptq
from qtutor.data import ImageData, checked_image_folder, image_transform
from qtutor.files import file_size_mb

__all__ = [
    "RESULTS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "stored_results",
    "calibration_sweep",
    "bad_calibrations",
    "bit_sweep",
    "weakest_weighted_layers",
    "mixed_precision_sweep",
    "qat_comparison",
]

# Where benchmarks/ablations.py writes the full-size results that notebooks 06 and 08 plot.
RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "ablations.json"

# torchvision's ImageNet statistics: the normalization people copy from tutorials.
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def stored_results() -> dict:
    """The full-size sweeps ``benchmarks/ablations.py`` measured (its JSON), with the machine and the command."""
    import json

    if not RESULTS.is_file():
        raise FileNotFoundError(
            f"{RESULTS}: missing; it ships with the repository, or rerun "
            "python benchmarks/ablations.py (about 25 minutes on 2 cores)"
        )
    return json.loads(RESULTS.read_text())


def _measured(model, loader, reference: metrics.Outputs) -> dict:
    return metrics.compare(reference, metrics.predict(model, loader))


def _first(dataset, count: int, seed: int) -> Subset:
    """``count`` images of ``dataset`` in a random order fixed by ``seed``."""
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))
    return Subset(dataset, order[:count].tolist())


def calibration_sweep(
    model, data: ImageData, example_inputs: tuple, *, counts, seeds, observers, reference: metrics.Outputs
) -> list[dict]:
    """INT8 models calibrated on ``count`` training images in ``seeds`` random orders, per activation observer.

    Counts below the training set's size are repeated for every seed (the
    images differ); the whole set only once. One prepared model per observer
    is copied for each run, so tracing happens once.
    """
    rows, train, test = [], data.split("train"), data.test_loader()
    for observer in observers:
        template = ptq.prepare(model, example_inputs, ptq.x86_mapping(observer))
        for count in counts:
            for seed in seeds if count < len(train) else seeds[:1]:
                prepared = copy.deepcopy(template)
                loader = DataLoader(_first(train, count, seed), batch_size=min(count, 32))
                ptq.calibrate(prepared, loader, batches=None, progress=False)
                rows.append(
                    {
                        "observer": observer,
                        "images": count,
                        "seed": seed,
                        **_measured(ptq.convert(prepared), test, reference),
                    }
                )
    return rows


def bad_calibrations(data: ImageData, *, images: int = 256, seed: int = 0) -> dict[str, DataLoader]:
    """Calibration loaders of ``images`` training images each: the right one, then four ways to get it wrong."""
    train = data.split("train")
    augmented, _ = checked_image_folder(
        data.root / "train", image_transform(data.mean, data.std, data.image_size, augment=True)
    )
    one_class = Subset(train, [i for i, target in enumerate(train.targets) if target == 1])
    loaders = {
        "right: the model's preprocessing, every class": train,
        "wrong normalization (ImageNet's mean and std)": ImageData(
            data.root, IMAGENET_MEAN, IMAGENET_STD, data.image_size
        ).split("train"),
        "one class only (all ones)": one_class,
        "augmented images (shifts, turns, zooms)": augmented,
        "original script's CenterCrop(224), no resize": ImageData(data.root, data.mean, data.std, None).split("train"),
    }
    return {
        name: DataLoader(_first(dataset, min(images, len(dataset)), seed), batch_size=32)
        for name, dataset in loaders.items()
    }


def bit_sweep(
    model, data: ImageData, example_inputs: tuple, *, widths, observers, reference: metrics.Outputs, batches: int = 8
) -> list[dict]:
    """Fake-quantized models at each (weight bits, activation bits) in ``widths``, for each range ``observer``.

    Calibrated on ``batches`` batches of 32 training images in a fixed order.
    """
    rows, test = [], data.test_loader()
    for weight_bits, activation_bits in widths:
        for observer in observers:
            mapping = ptq.fake_quant_mapping(weight_bits, activation_bits, observer=observer)
            simulated = ptq.simulate(
                model, mapping, data.calibration_loader(batch_size=32), example_inputs, batches=batches
            )
            rows.append(
                {
                    "weight_bits": weight_bits,
                    "activation_bits": activation_bits,
                    "observer": observer,
                    **_measured(simulated, test, reference),
                }
            )
    return rows


def weakest_weighted_layers(model: torch.nn.Module, sensitivity: list[dict]) -> list[str]:
    """The convolutions and linear layers of ``model``, lowest own SQNR first (rows of ``metrics.layer_sensitivity``).

    Only layers with weights: ``set_module_name(name, None)`` keeps those in
    FP32, while a fused BatchNorm + ReLU is converted to INT8 anyway.
    """
    modules = dict(model.named_modules())
    weighted = [r for r in sensitivity if isinstance(modules.get(r["layer"]), (torch.nn.Conv2d, torch.nn.Linear))]
    return [r["layer"] for r in sorted(weighted, key=lambda r: r["sqnr_db"])]


def mixed_precision_sweep(
    model,
    data: ImageData,
    example_inputs: tuple,
    ranked_layers: list[str],
    *,
    ks,
    reference: metrics.Outputs,
    folder: Path,
    repeats: int = 5,
) -> list[dict]:
    """Real INT8 models that keep the first ``k`` of ``ranked_layers`` in FP32, for each ``k`` in ``ks``.

    Each is calibrated like the x86 default flow, saved as TorchScript in
    ``folder`` (file size) and timed at batch 32 in turns with the others;
    ``kept in FP32`` counts the layers that really stayed in float.
    """
    rows, models, test = [], {}, data.test_loader()
    for k in ks:
        mapping = ptq.keep_in_float(ptq.x86_mapping(), ranked_layers[:k])
        converted = ptq.quantize_fx(
            model, data.calibration_loader(), example_inputs, progress=False, qconfig_mapping=mapping
        )
        path = Path(folder) / f"mixed_{k}.pt"
        kept = ptq.float_modules(converted, ranked_layers[:k])
        ptq.save_torchscript(converted, path)
        models[k] = ptq.load_torchscript(path)
        rows.append(
            {"k": k, "kept in FP32": len(kept), "file MB": file_size_mb(path), **_measured(models[k], test, reference)}
        )
    batch = data.batch(32)
    timings = metrics.time_in_turns({k: (lambda m=m: m(batch)) for k, m in models.items()}, repeats=repeats)
    for row in rows:
        row["batch 32 ms"] = timings[row["k"]].median
    return rows


def qat_comparison(
    model,
    data: ImageData,
    example_inputs: tuple,
    *,
    weight_bits: int,
    activation_bits: int,
    images: int,
    epochs: int = 1,
    learning_rate: float = 1e-4,
    observer: str = "histogram",
    reference: metrics.Outputs,
) -> dict[str, dict]:
    """PTQ, FP32 fine-tuning then PTQ (the same effort as QAT), and QAT, all fake-quantized at the given widths.

    Both fine-tuning runs see the same ``images`` training images in the same
    order, with the same optimizer and learning rate (notebook 08). PTQ ranges
    come from ``observer`` (default: PyTorch's histogram observer, the best of
    notebook 06's three at 4-bit activations); QAT's are moving averages of min
    and max, frozen before the test images are measured, as PTQ's are.
    """
    from qtutor.qat import fine_tune, prepare_qat

    def fine_tuning_images():
        return data.calibration_loader(batch_size=32, seed=1, subset=images)

    def quantized_after_training(trained):
        mapping = ptq.fake_quant_mapping(weight_bits, activation_bits, observer=observer)
        return ptq.simulate(trained, mapping, data.calibration_loader(batch_size=32), example_inputs, batches=8)

    tuned = copy.deepcopy(model)
    fine_tune(tuned, fine_tuning_images(), epochs=epochs, learning_rate=learning_rate)
    qat = prepare_qat(model, example_inputs, bits=weight_bits, activation_bits=activation_bits)
    fine_tune(qat, fine_tuning_images(), epochs=epochs, learning_rate=learning_rate)
    qat.apply(torch.ao.quantization.disable_observer)  # FakeQuantize observes even in eval(): freeze before testing
    runs = {
        "PTQ": quantized_after_training(model),
        "FP32 fine-tune, then PTQ": quantized_after_training(tuned),
        "QAT": qat,
    }
    test = data.test_loader()
    return {name: _measured(run, test, reference) for name, run in runs.items()}
