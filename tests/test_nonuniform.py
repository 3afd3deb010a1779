"""Logarithmic, k-means and mu-law quantizers (notebooks 03 and 04): golden values and brute force."""

import math

import pytest
import torch

from qtutor import fake_quantize, qparams, sqnr_db
from qtutor.nonuniform import (
    assign_to_codebook,
    compare_methods,
    kmeans_codebook,
    kmeans_fake_quantize,
    lloyd_step,
    log_dequantize,
    log_fake_quantize,
    log_quantize,
    lut_dequantize,
    mulaw_fake_quantize,
    shift_multiply,
    uniform_codebook,
)


def brute_force_nearest_power(x, exponents):
    """Nearest of 0 and ±2**e for e in exponents, by trying every level (ties to the smaller magnitude)."""
    levels = torch.cat([torch.zeros(1), torch.exp2(torch.tensor(exponents, dtype=torch.float32))])
    index = (x.abs()[:, None] - levels[None, :]).abs().argmin(dim=1)
    return torch.sign(x) * levels[index]


@pytest.mark.parametrize("bits", [3, 4, 5])
def test_log_quantizer_picks_the_nearest_level(bits):
    x = torch.randn(5000, generator=torch.Generator().manual_seed(bits)) * 0.3
    top = round(math.log2(x.abs().max().item()))
    exponents = list(range(top - 2 ** (bits - 1) + 2, top + 1))
    assert log_fake_quantize(x, bits=bits).equal(brute_force_nearest_power(x, exponents))


def test_log_codes_golden():
    sign, code, top = log_quantize(torch.tensor([1.0, -0.5, 0.3, 0.0, 0.01, 3.1]), bits=3, max_exponent=1)
    # 3 bits: sign + 2-bit code; code 0 = zero, codes 1..3 = 2**-1, 2**0, 2**1.
    assert code.tolist() == [2, 1, 1, 0, 0, 3] and sign.tolist() == [1, -1, 1, 0, 0, 1] and top == 1
    assert log_dequantize(sign, code, top, bits=3).tolist() == [1.0, -0.5, 0.5, 0.0, 0.0, 2.0]


def test_log_sqnr_stops_growing_with_bits():
    x = torch.randn(20000, generator=torch.Generator().manual_seed(0))
    gains = [sqnr_db(x, log_fake_quantize(x, bits=b)) for b in (4, 6, 8)]
    assert abs(gains[2] - gains[1]) < 0.5  # relative error is set by the factor-2 spacing, not by bits


def test_shift_multiply_equals_multiply_and_floor_divide():
    a = torch.arange(-300, 300)
    for e in range(0, 6):
        assert shift_multiply(a, e).equal(a * 2**e)
    for e in range(1, 6):
        assert shift_multiply(a, -e).equal(torch.div(a, 2**e, rounding_mode="floor"))
    with pytest.raises(ValueError, match="expected an integer tensor"):
        shift_multiply(torch.ones(2), 1)


def test_assign_to_codebook_is_the_brute_force_argmin():
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(10000, generator=generator)
    codebook = torch.sort(torch.randn(9, generator=generator)).values
    expected = (x[:, None] - codebook[None, :]).abs().argmin(dim=1)
    assert assign_to_codebook(x, codebook).equal(expected)
    with pytest.raises(ValueError, match="sorted ascending"):
        assign_to_codebook(x, torch.tensor([1.0, 0.0]))


def clusters(centres, generator):
    centres = torch.tensor(centres)
    picks = torch.randint(0, len(centres), (8000,), generator=generator)
    return centres[picks] + torch.randn(8000, generator=generator) * 0.05


def test_kmeans_finds_well_separated_clusters():
    x = clusters([-3.0, 0.0, 3.0, 6.0], torch.Generator().manual_seed(2))
    codebook, indices = kmeans_codebook(x, bits=2)
    assert torch.allclose(codebook, torch.tensor([-3.0, 0.0, 3.0, 6.0]), atol=0.01)
    assert lut_dequantize(indices, codebook).sub(x).abs().max() < 0.3


def test_kmeans_starts_from_the_uniform_grid_and_can_stop_at_a_local_optimum():
    x = clusters([-3.0, -1.0, 0.5, 4.0], torch.Generator().manual_seed(2))
    assert 0.0 in uniform_codebook(x, bits=2).tolist()
    codebook, _, steps = kmeans_codebook(x, bits=2, return_iterations=True)
    assert lloyd_step(x, codebook).equal(codebook)  # a fixed point of Lloyd's algorithm...
    best = torch.tensor([-3.0, -1.0, 0.5, 4.0])
    error = lambda book: (lut_dequantize(assign_to_codebook(x, book), book) - x).pow(2).mean()  # noqa: E731
    assert error(best) < error(codebook) / 10  # ...far from the best codebook: two clusters share one entry


def test_kmeans_converged_equals_repeated_lloyd_steps():
    x = torch.distributions.Laplace(0.0, 1.0).sample((3000,))
    codebook, _, steps = kmeans_codebook(x, bits=3, return_iterations=True)
    reference = uniform_codebook(x, bits=3)
    for _ in range(steps):
        reference = lloyd_step(x, reference)
    assert torch.allclose(codebook, reference, rtol=1e-6, atol=1e-7) and 1 < steps < 1000


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_kmeans_never_worse_than_uniform_minmax(bits):
    x = torch.distributions.Laplace(0.0, 1.0).sample((20000,))
    scale, zero_point = qparams(x.min(), x.max(), bits=bits)
    uniform = sqnr_db(x, fake_quantize(x, scale, zero_point, bits=bits))
    assert sqnr_db(x, kmeans_fake_quantize(x, bits=bits)) >= uniform


def test_mulaw_golden_and_shape():
    x = torch.tensor([-1.0, -0.01, 0.0, 0.01, 1.0])
    y = mulaw_fake_quantize(x, bits=8)
    assert y[[0, 2, 4]].tolist() == [-1.0, 0.0, 1.0]  # the peak and zero are exact
    # Near zero mu-law is finer than a uniform 8-bit grid over the same range (step 2/255).
    assert (y[[1, 3]] - x[[1, 3]]).abs().max() < 2 / 255 / 4
    assert mulaw_fake_quantize(torch.zeros(3)).equal(torch.zeros(3))


def test_compare_methods_table():
    x = torch.distributions.Laplace(0.0, 0.05).sample((20000,))
    table = compare_methods(x, bit_widths=(2, 4))
    assert set(table) == {"uniform", "clipped", "log", "kmeans", "mulaw"}
    for method in table:
        assert set(table[method]) == {2, 4}
    assert table["clipped"][4] > table["uniform"][4]  # clipping pays on heavy tails
    assert table["kmeans"][2] >= table["uniform"][2]


def test_power_of_two_scale():
    from qtutor.nonuniform import power_of_two_scale

    assert power_of_two_scale(127.0, bits=8).item() == 1.0  # exactly a power: kept
    assert power_of_two_scale(127.01, bits=8).item() == 2.0
    assert power_of_two_scale(7.0, bits=4).item() == 1.0 and power_of_two_scale(6.9, bits=4).item() == 1.0
    assert power_of_two_scale(0.5, bits=4).item() == 2.0**-3  # 0.5 / 7 = 0.0714 -> 0.125
    with pytest.raises(ValueError, match="expected positive"):
        power_of_two_scale(0.0)
