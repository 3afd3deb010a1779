"""PT2E export quantization with torchao: the way forward from FX mode (notebook 09).

``torch.export`` captures the model as an ``ExportedProgram``; torchao's
``prepare_pt2e`` inserts observers as the ``X86InductorQuantizer`` annotates;
``convert_pt2e`` turns them into quantize/dequantize (Q/DQ) operations. With its
default ``fold_quantize=True`` the weights are stored as INT8 constants and
dequantized on every call; activations are quantized and dequantized around
each FP32 operation. Until ``torch.compile`` (inductor, with freezing) lowers
each dequantize-op-quantize pattern to an INT8 kernel, it computes in FP32.
"""

from __future__ import annotations

import copy

import torch
from torch.utils.data import DataLoader

from qtutor.session import quietly

__all__ = ["quantizer", "export", "quantize_pt2e", "drop_unused_weights", "save", "load", "to_eval"]


def quantizer(*, reduce_range: bool = False):
    """torchao's ``X86InductorQuantizer`` with its default config (``reduce_range=False``: activations 0..255)."""
    import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as x86

    config = x86.get_default_x86_inductor_quantization_config(reduce_range=reduce_range)
    return x86.X86InductorQuantizer().set_global(config)


def export(model: torch.nn.Module, example: torch.Tensor) -> torch.export.ExportedProgram:
    """``torch.export.export`` with a dynamic batch dimension (``example`` needs a batch of at least 2)."""
    batch = torch.export.Dim("batch")
    try:
        model.eval()
    except NotImplementedError:  # already an exported module, switched to eval by to_eval
        pass
    with quietly():
        return torch.export.export(model, (example,), dynamic_shapes=({0: batch},))


def to_eval(module: torch.nn.Module) -> torch.nn.Module:
    """Exported modules refuse ``.eval()``; torchao switches their dropout and batch-norm ops instead."""
    from torchao.quantization.pt2e import move_exported_model_to_eval

    return move_exported_model_to_eval(module)


def quantize_pt2e(
    model: torch.nn.Module, loader: DataLoader, example: torch.Tensor, *, batches: int = 20, reduce_range: bool = False
) -> torch.nn.Module:
    """Export, ``prepare_pt2e`` with the X86InductorQuantizer, calibrate, ``convert_pt2e``; in eval mode."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    from qtutor.ptq import calibrate

    with quietly():
        prepared = prepare_pt2e(export(model, example).module(), quantizer(reduce_range=reduce_range))
        calibrate(prepared, loader, batches, progress=False)
        return to_eval(convert_pt2e(prepared))


def drop_unused_weights(module: torch.fx.GraphModule) -> int:
    """Delete parameters and buffers no graph node reads; returns how many values went.

    ``convert_pt2e`` stores each convolution's weight as INT8 but leaves many of the
    original FP32 weights attached to the module, unused; saved as they are, they make
    the INT8 file bigger than the FP32 one (notebook 09).
    """
    used = {node.target for node in module.graph.nodes if node.op == "get_attr"}
    dropped = 0
    for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
        if name not in used:
            owner, _, attribute = name.rpartition(".")
            delattr(module.get_submodule(owner), attribute)
            dropped += tensor.numel()
    return dropped


def save(module: torch.nn.Module, example: torch.Tensor, path) -> None:
    """Export a (quantized) module again, without its unused weights, and write it with ``torch.export.save``."""
    if isinstance(module, torch.fx.GraphModule):
        module = copy.deepcopy(module)
        drop_unused_weights(module)
    # torch.export keeps the example input in the file; a slice of a batch would bring the whole batch along.
    torch.export.save(export(module, example[:2].clone()), str(path))


def load(path) -> torch.nn.Module:
    """``torch.export.load(path).module()``, in eval mode."""
    return to_eval(torch.export.load(str(path)).module())
