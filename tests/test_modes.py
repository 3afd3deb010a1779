"""Eager and PT2E flows (notebook 09) on a tiny torchvision DenseNet: same class as DenseNet-121, far fewer layers."""

import pytest
import torch
import torchvision
from torch.utils.data import DataLoader, TensorDataset

from qtutor import eager, pt2e


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = torchvision.models.DenseNet(growth_rate=8, block_config=(2, 2), num_init_features=16, bn_size=2,
                                        num_classes=2).eval()
    images = torch.randn(16, 3, 32, 32)
    loader = DataLoader(TensorDataset(images, torch.zeros(16, dtype=torch.long)), batch_size=4)
    return model, images, loader


def test_rewired_and_fused_compute_the_same(tiny):
    model, images, _ = tiny
    with torch.no_grad():
        expected = model(images)
        assert torch.allclose(eager.quantizable_densenet(model)(images), expected, atol=1e-5)
        fused = eager.fuse(eager.quantizable_densenet(model))
        assert torch.allclose(fused(images), expected, atol=1e-4)
    kinds = {type(m).__name__ for m in fused.modules()}
    assert {"ConvReLU2d", "BNReLU2d"} <= kinds


def test_eager_int8_is_close_to_float(tiny):
    model, images, loader = tiny
    quantized = eager.quantize_eager(model, loader, batches=4)
    with torch.no_grad():
        difference = (quantized(images) - model(images)).abs().max()
    assert "QuantizedCPU" not in str(type(quantized)) and difference < 0.2
    assert any(type(m).__module__.startswith("torch.ao.nn.quantized") for m in quantized.modules())


def test_pt2e_quantize_save_load(tiny, tmp_path):
    model, images, loader = tiny
    converted = pt2e.quantize_pt2e(model, loader, images[:2], batches=4)
    targets = {str(node.target) for node in converted.graph.nodes}
    assert any("quantize_per_tensor" in t for t in targets)
    with torch.no_grad():
        assert (converted(images) - model(images)).abs().max() < 0.2
        pt2e.save(converted, images[:2], tmp_path / "tiny.pt2")
        assert torch.equal(pt2e.load(tmp_path / "tiny.pt2")(images), converted(images))


def values_by_dtype(path) -> dict:
    """How many tensor values of each dtype a torch.export file holds."""
    counts = {}
    for tensor in torch.export.load(str(path)).state_dict.values():
        counts[tensor.dtype] = counts.get(tensor.dtype, 0) + tensor.numel()
    return counts


def test_pt2e_save_leaves_out_unused_float_weights(tiny, tmp_path):
    model, images, loader = tiny
    converted = pt2e.quantize_pt2e(model, loader, images[:2], batches=4)
    torch.export.save(pt2e.export(converted, images[:2]), str(tmp_path / "as_converted.pt2"))
    before = sum(t.numel() for t in converted.state_dict().values())
    pt2e.save(converted, images[:2], tmp_path / "dropped.pt2")
    assert sum(t.numel() for t in converted.state_dict().values()) == before  # save works on a copy
    kept, dropped = (values_by_dtype(tmp_path / name) for name in ("as_converted.pt2", "dropped.pt2"))
    assert dropped[torch.int8] == kept[torch.int8] > 0  # every INT8 weight is still there
    assert dropped[torch.float32] < 0.5 * kept[torch.float32]  # the unused FP32 originals are not
    with torch.no_grad():
        expected = converted(images)
        assert pt2e.drop_unused_weights(converted) > 0 and pt2e.drop_unused_weights(converted) == 0
        assert torch.equal(converted(images), expected)


def test_pt2e_save_keeps_only_two_example_images(tiny, tmp_path):
    model, images, loader = tiny
    converted = pt2e.quantize_pt2e(model, loader, images[:2], batches=1)
    big_batch = torch.randn(64, 3, 32, 32)
    pt2e.save(converted, big_batch[:2], tmp_path / "slice.pt2")  # a view of 64 images
    pt2e.save(converted, big_batch[:2].clone(), tmp_path / "copy.pt2")
    assert (tmp_path / "slice.pt2").stat().st_size <= (tmp_path / "copy.pt2").stat().st_size + 1000
