"""The straight-through estimator against PyTorch's fake-quantize gradient, and the FX QAT flow on a tiny model."""

import torch
from torch.utils.data import DataLoader, TensorDataset

from qtutor import ptq, qparams
from qtutor.qat import fine_tune, prepare_qat, ste_fake_quantize


def test_ste_forward_and_gradient_equal_pytorch_fake_quantize():
    generator = torch.Generator().manual_seed(0)
    for bits, signed in ((8, False), (4, False), (3, True)):
        x = (torch.randn(5000, generator=generator) * 3).requires_grad_()
        scale, zero_point = qparams(-2.0, 2.5, bits=bits, signed=signed)
        ours = ste_fake_quantize(x, scale, zero_point, bits=bits, signed=signed)
        ours.backward(torch.arange(5000.0))
        our_grad = x.grad.clone()
        x.grad = None
        low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
        theirs = torch.fake_quantize_per_tensor_affine(x, scale.item(), zero_point.item(), low, high)
        theirs.backward(torch.arange(5000.0))
        assert torch.equal(ours, theirs) and torch.equal(our_grad, x.grad)
        assert (our_grad == 0).any() and (our_grad != 0).any()  # clamped values stop the gradient


def test_plain_round_has_no_gradient_but_ste_does():
    x = torch.linspace(-1, 1, 11, requires_grad=True)
    torch.round(x * 10).sum().backward()
    assert torch.equal(x.grad, torch.zeros(11))
    x.grad = None
    ste_fake_quantize(x, 0.1, 10, bits=8).sum().backward()
    assert torch.equal(x.grad, torch.ones(11))


def test_qat_fine_tuning_lowers_the_loss_at_4_bits():
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(8 * 6 * 6, 2)
    )
    images = torch.randn(64, 1, 8, 8)
    targets = (images.mean((1, 2, 3)) > 0).long()
    loader = DataLoader(
        TensorDataset(images, targets), batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(0)
    )
    prepared = prepare_qat(model, (images[:1],), bits=4)
    assert not any(hasattr(m, "qconfig") for m in model.modules()), "the model itself must stay untouched"
    losses = fine_tune(prepared, loader, epochs=4, learning_rate=1e-2)
    assert losses[-1] < losses[0]
    eight = prepare_qat(model, (images[:1],), bits=8)
    fine_tune(eight, loader, epochs=1)
    converted = ptq.convert(eight)
    assert converted(images).shape == (64, 2)


def test_weight_and_activation_bits_of_qat_are_set_apart():
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU())
    prepared = prepare_qat(model, (torch.randn(1, 1, 8, 8),), bits=4, activation_bits=8)
    conv = prepared.get_submodule("0")
    assert (conv.weight_fake_quant.quant_min, conv.weight_fake_quant.quant_max) == (-7, 7)
    activation = next(m for n, m in prepared.named_children() if n.startswith("activation_post_process"))
    assert (activation.quant_min, activation.quant_max) == (0, 255)


def test_fine_tune_trains_a_plain_model_with_the_same_loop():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2))
    images = torch.randn(64, 1, 4, 4)
    targets = (images.mean((1, 2, 3)) > 0).long()
    loader = DataLoader(TensorDataset(images, targets), batch_size=16)
    losses = fine_tune(model, loader, epochs=3, learning_rate=1e-2)
    assert len(losses) == 3 and losses[-1] < losses[0] and not model.training
