"""PT2E export quantization (qtutor.pt2e, notebook 09) on tests/tiny.py's TinyDenseBN: convolutions, a batch norm
that follows one (prepare_pt2e folds it), a concatenation, a linear classifier.

No batch norm without a convolution before it: whenever a converted graph still holds one, torchao's convert_pt2e
re-traces its QAT conv-BN folding patterns (qat_utils._fold_conv_bn_qat, 56 small exports: 16 s of a 17 s fixture
on one thread here), although a post-training graph has none to fold. Notebook 09 quantizes DenseNet-121, whose
batch norms mostly follow concatenations, under nbval.
The converted model is built once for this module; a test that changes it works on a copy.
"""

import copy
from types import SimpleNamespace

import pytest
import torch
from tiny import TinyDenseBN, images, loader  # tests/ is on sys.path: pytest's default import mode

from qtutor import pt2e


@pytest.fixture(scope="module")
def tiny():
    """TinyDenseBN (seeded), 16 32x32 images, and a loader of 4 batches of 4."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = TinyDenseBN().eval()
    batch = images(16, size=32)
    return SimpleNamespace(model=model, images=batch, loader=loader(batch))


@pytest.fixture(scope="module")
def converted(tiny):
    return pt2e.quantize_pt2e(tiny.model, tiny.loader, tiny.images[:2], batches=4)


def test_pt2e_quantize_save_load(tiny, converted, tmp_path):
    model, images = tiny.model, tiny.images
    targets = {str(node.target) for node in converted.graph.nodes}
    assert any("quantize_per_tensor" in t for t in targets)
    assert not any("batch_norm" in t for t in targets)  # folded into the stem by prepare_pt2e
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


def test_pt2e_save_leaves_out_unused_float_weights(tiny, converted, tmp_path):
    images = tiny.images
    torch.export.save(pt2e.export(converted, images[:2]), str(tmp_path / "as_converted.pt2"))
    before = sum(t.numel() for t in converted.state_dict().values())
    pt2e.save(converted, images[:2], tmp_path / "dropped.pt2")
    assert sum(t.numel() for t in converted.state_dict().values()) == before  # save works on a copy
    kept, dropped = (values_by_dtype(tmp_path / name) for name in ("as_converted.pt2", "dropped.pt2"))
    assert dropped[torch.int8] == kept[torch.int8] > 0  # every INT8 weight is still there
    assert dropped[torch.float32] < 0.5 * kept[torch.float32]  # the unused FP32 originals are not
    pruned = copy.deepcopy(converted)
    with torch.no_grad():
        expected = converted(images)
        assert pt2e.drop_unused_weights(pruned) > 0 and pt2e.drop_unused_weights(pruned) == 0
        assert torch.equal(pruned(images), expected)


def test_pt2e_save_keeps_only_two_example_images(converted, tmp_path):
    big_batch = torch.randn(64, 3, 32, 32)
    pt2e.save(converted, big_batch[:2], tmp_path / "slice.pt2")  # a view of 64 images
    pt2e.save(converted, big_batch[:2].clone(), tmp_path / "copy.pt2")
    assert (tmp_path / "slice.pt2").stat().st_size <= (tmp_path / "copy.pt2").stat().st_size + 1000
