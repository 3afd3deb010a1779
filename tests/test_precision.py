"""qtutor.precision: the wrappers compute what autocast and casting compute, and the recorder sees real types."""

import pytest
import torch

from qtutor.precision import Autocast, CastInputs, dtypes_under_autocast, feed_forward


def test_cast_inputs_runs_in_the_modules_type_and_returns_float32():
    layer = torch.nn.Linear(8, 3)
    half = CastInputs(torch.nn.Linear(8, 3).to(torch.bfloat16), torch.bfloat16)
    half.module.load_state_dict({k: v.to(torch.bfloat16) for k, v in layer.state_dict().items()})
    x = torch.randn(4, 8)
    out = half(x)
    assert out.dtype == torch.float32
    assert torch.equal(out, half.module(x.to(torch.bfloat16)).float())


def test_autocast_equals_torch_autocast():
    block = feed_forward(16).eval()
    x = torch.randn(2, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected = block(x).float()
    assert torch.equal(Autocast(block)(x), expected)
    assert not torch.equal(Autocast(block)(x), block(x))  # it really ran in BF16


def test_feed_forward_has_two_linear_layers_of_8_d_squared_weights():
    block = feed_forward(32)
    linears = [m for m in block if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 2 and sum(m.weight.numel() for m in linears) == 8 * 32 * 32


@pytest.mark.filterwarnings("ignore:In CPU autocast, but the target dtype is not supported")  # float32, on purpose
def test_recorder_sees_bf16_matrix_work_and_fp32_weights_cast_each_call():
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3),
        torch.nn.BatchNorm2d(4),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(4 * 6 * 6, 5),
    ).eval()
    rows = {
        (r["operation"], r["inputs"], r["output"]): r["calls"]
        for r in dtypes_under_autocast(model, torch.randn(2, 3, 8, 8))
    }
    assert rows[("convolution", "bfloat16", "bfloat16")] == 1
    assert rows[("addmm", "bfloat16", "bfloat16")] == 1
    assert rows[("_to_copy", "float32", "bfloat16")] >= 4  # input, conv weight and bias, linear weight, ...
    assert ("native_batch_norm", "bfloat16 + float32", "bfloat16") in rows
    float_run = {
        (r["operation"], r["output"])
        for r in dtypes_under_autocast(model, torch.randn(2, 3, 8, 8), dtype=torch.float32)
    }
    assert ("convolution", "float32") in float_run  # the recorder reports what ran, not a fixed list
