"""qtutor.metrics: intervals from their definition, KL against PyTorch's kl_div, SQNR against a hand computation."""

import math

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from qtutor import metrics


@pytest.mark.parametrize("successes,trials", [(0, 10), (3, 10), (10, 10), (967, 1000), (1, 1)])
def test_wilson_interval_endpoints_solve_the_score_equation(successes, trials):
    """Wilson's interval is every p with |p_hat - p| <= z sqrt(p (1 - p) / n): its ends make that an equality."""
    estimate = metrics.wilson_interval(successes, trials)
    p_hat = successes / trials
    assert estimate.value == p_hat and estimate.count == trials
    assert 0 <= estimate.low <= p_hat <= estimate.high <= 1
    for end in (estimate.low, estimate.high):
        score = (p_hat - end) ** 2 - metrics.Z95**2 * end * (1 - end) / trials
        assert abs(score) < 1e-12


def test_wilson_interval_shrinks_like_one_over_root_n():
    small, large = metrics.wilson_interval(90, 100), metrics.wilson_interval(9000, 10000)
    assert (small.high - small.low) / (large.high - large.low) == pytest.approx(10, rel=0.05)
    assert f"{small}" == "90.0% [82.6%, 94.5%]"


@pytest.mark.parametrize("successes,trials", [(-1, 10), (11, 10), (0, 0)])
def test_wilson_interval_rejects_impossible_counts(successes, trials):
    with pytest.raises(ValueError, match=f"successes={successes}, trials={trials}"):
        metrics.wilson_interval(successes, trials)


def outputs(seed, count=200, classes=10):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(count, classes, generator=generator) * 3
    targets = torch.randint(0, classes, (count,), generator=torch.Generator().manual_seed(99))
    return metrics.Outputs(logits, targets)


def test_kl_divergence_equals_pytorchs_kl_div():
    p, q = outputs(0), outputs(1)
    expected = torch.nn.functional.kl_div(
        torch.log_softmax(q.logits.double(), 1),
        torch.log_softmax(p.logits.double(), 1),
        log_target=True,
        reduction="batchmean",
    )
    assert metrics.kl_divergence(p, q) == pytest.approx(expected.item(), rel=1e-12)
    assert metrics.kl_divergence(p, p) == 0.0 and metrics.kl_divergence(p, q) > 0


def test_accuracy_and_agreement_count_the_right_things():
    p = outputs(0)
    q = metrics.Outputs(p.logits.clone(), p.targets)
    q.logits[:20] = -q.logits[:20]  # flips the top class of the first 20 images
    assert metrics.agreement(p, q).value == pytest.approx(0.9)
    assert metrics.accuracy(p).value == (p.logits.argmax(1) == p.targets).sum().item() / 200
    row = metrics.compare(p, q)
    assert set(row) == {"accuracy", "agreement", "KL"} and row["agreement"].count == 200


def test_outputs_on_different_images_are_refused():
    with pytest.raises(ValueError, match="same images in the same order"):
        metrics.agreement(outputs(0), outputs(1, count=100))


def test_predict_keeps_every_logit_in_order():
    model = torch.nn.Linear(4, 3)
    images = torch.randn(10, 4)
    loader = DataLoader(TensorDataset(images, torch.arange(10)), batch_size=3)
    result = metrics.predict(model, loader)
    assert torch.equal(result.targets, torch.arange(10))
    assert torch.allclose(result.logits, model(images).detach())


@pytest.fixture(scope="module")
def tiny_int8(tiny_fx):
    """conftest's tiny FX model: prepared (calibrated), converted, and its 16 images."""
    return tiny_fx.prepared, tiny_fx.converted, tiny_fx.images


@torch.no_grad()
def sqnr(reference, noisy):
    return 20 * math.log10(reference.norm() / (reference - noisy).norm())


def test_layer_sqnr_covers_every_quantized_layer_in_graph_order(tiny_int8):
    prepared, converted, images = tiny_int8
    rows = metrics.layer_sqnr(prepared, converted, images)
    assert [row["layer"] for row in rows] == ["stem", "layer", "cat", "pool", "flatten", "classifier"]
    assert [row["kind"] for row in rows][:3] == ["ConvReLU2d", "Conv2d", "cat"]
    assert all(10 < row["sqnr_db"] < 80 for row in rows)


def first_layer_sqnr(prepared, converted, images):
    """The stem's SQNR by hand: the float stem (conv + ReLU) against the INT8 stem's dequantized output."""
    caught = {}
    handle = converted.stem.register_forward_hook(lambda module, inputs, output: caught.setdefault("int8", output))
    try:
        converted(images)
    finally:
        handle.remove()
    return sqnr(torch.relu(prepared.stem(images)), caught["int8"].dequantize())


def test_layer_sqnr_of_the_first_layer_matches_a_hand_computation(tiny_int8):
    prepared, converted, images = tiny_int8
    expected = first_layer_sqnr(prepared, converted, images)
    assert metrics.layer_sqnr(prepared, converted, images)[0]["sqnr_db"] == pytest.approx(expected, abs=1e-3)


def test_layer_sensitivity_isolates_each_layer(tiny_int8, tiny_fx):
    prepared, converted, images = tiny_int8
    model = tiny_fx.model  # the float model the fixture prepared a copy of
    rows = metrics.layer_sensitivity(model, (images[:1],), [images[:4], images[4:8]], images)
    layers = [row["layer"] for row in rows]
    assert layers == ["stem", "layer", "cat", "pool", "flatten", "classifier"]
    # The stem's shadow sees the float input, as in the end-to-end run: the same error to within calibration.
    assert rows[0]["sqnr_db"] == pytest.approx(first_layer_sqnr(prepared, converted, images), abs=3)
    # Later layers get the float model's input, not the INT8 one, so their error does not pile up.
    end_to_end = {row["layer"]: row["sqnr_db"] for row in metrics.layer_sqnr(prepared, converted, images)}
    assert rows[layers.index("classifier")]["sqnr_db"] > end_to_end["classifier"]


def test_time_in_turns_takes_turns_after_warming_up():
    calls = []
    timings = metrics.time_in_turns(
        {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, repeats=3, warmup=2
    )
    assert calls == ["a", "a", "b", "b"] + ["a", "b"] * 3
    assert set(timings) == {"a", "b"} and len(timings["a"].times_ms) == 3
    low, high = timings["a"].iqr
    assert low <= timings["a"].median <= high
    assert f"{metrics.Timing((1.0, 2.0, 3.0, 4.0, 5.0))}" == "3.0 ms [2.0, 4.0]"
