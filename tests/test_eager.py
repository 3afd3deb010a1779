"""Eager-mode quantization (qtutor.eager, notebook 09) on a tiny torchvision DenseNet (conftest's tiny_densenet)."""

import torch

from qtutor import eager


def test_rewired_and_fused_compute_the_same(tiny_densenet):
    model, images = tiny_densenet.model, tiny_densenet.images
    with torch.no_grad():
        expected = model(images)
        assert torch.allclose(eager.quantizable_densenet(model)(images), expected, atol=1e-5)
        fused = eager.fuse(eager.quantizable_densenet(model))
        assert torch.allclose(fused(images), expected, atol=1e-4)
    kinds = {type(m).__name__ for m in fused.modules()}
    assert {"ConvReLU2d", "BNReLU2d"} <= kinds


def test_eager_int8_computes_in_int8_between_its_stubs_and_is_close_to_float(tiny_densenet):
    model, images = tiny_densenet.model, tiny_densenet.images
    quantized = eager.quantize_eager(model, tiny_densenet.loader, batches=4)
    with torch.no_grad():
        inside = quantized.quant(images)  # what the QuantStub hands the first convolution
        output = quantized(images)
        difference = (output - model(images)).abs().max()
    assert inside.is_quantized and inside.dtype == torch.quint8
    assert quantized.features.conv0.weight().dtype == torch.qint8  # an INT8 kernel, not a float one
    assert not output.is_quantized and output.dtype == torch.float32  # the DeQuantStub hands back floats
    assert difference < 0.2
