"""The Setup cell (qtutor.session.setup) and the helpers every session shares: one seed, one set of filters."""

import logging
import random
import warnings

import numpy as np
import pytest
import torch

import qtutor
from qtutor import session


@pytest.fixture
def restored():
    """Put back what setup() changes for the whole process: print options and the pytree logger's level."""
    logger = logging.getLogger("torch.utils._pytree")
    level = logger.level
    yield
    torch.set_printoptions(profile="default")
    logger.setLevel(level)


def draws():
    return random.random(), float(np.random.rand()), torch.rand(3)


def test_setup_seeds_every_generator_and_says_so_in_one_line(restored, capsys):
    with warnings.catch_warnings():
        session.setup(3)
        first = draws()
        session.setup(3)
        second = draws()
        session.setup(4)
        other = draws()
    assert first[:2] == second[:2] and torch.equal(first[2], second[2])
    assert first[:2] != other[:2] and not torch.equal(first[2], other[2])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"torch {torch.__version__.split('+')[0]}, qtutor {qtutor.__version__}, seed 3"
    assert len(lines) == 3
    assert torch._tensor_str.PRINT_OPTS.precision == 4 and not torch._tensor_str.PRINT_OPTS.sci_mode


def test_setup_warns_about_another_torch_version(restored, monkeypatch, capsys):
    monkeypatch.setattr(session, "TORCH_VERSION", "0.1.0")
    with warnings.catch_warnings(), pytest.warns(UserWarning, match="the course was checked with 0.1.0"):
        session.setup()
    assert "seed 0" in capsys.readouterr().out


def test_seed_everything_returns_a_generator_seeded_alike():
    generator = session.seed_everything(5)
    assert torch.equal(torch.rand(4, generator=generator), torch.rand(4))


def deprecation_warnings():
    """Warn as PyTorch 2.14 does (one of each kind the course silences), then once more with another message."""
    warnings.warn("torch.ao.quantization is deprecated and will be removed in 2.10.", DeprecationWarning, stacklevel=1)
    warnings.warn(
        "`torch.jit.script` is deprecated. Please switch to `torch.compile` or `torch.export`.",
        FutureWarning,
        stacklevel=1,
    )
    warnings.warn(
        "torch.quantize_per_tensor, torch.quantize_per_channel and other quantized tensor creation "
        "functions that produce tensors with dtype torch.quint8 are deprecated",
        UserWarning,
        stacklevel=1,
    )
    warnings.warn("something else is deprecated", DeprecationWarning, stacklevel=1)


def test_quietly_silences_the_courses_deprecations_only_and_only_inside(restored):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with session.quietly():
            deprecation_warnings()
        assert [str(w.message) for w in caught] == ["something else is deprecated"]
        deprecation_warnings()  # the filters are gone after the block
        assert len(caught) == 5
        with session.quietly("something else"):
            deprecation_warnings()
        assert len(caught) == 5


def test_quiet_deprecations_lasts_for_the_session(restored):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        session.quiet_deprecations()
        deprecation_warnings()
        deprecation_warnings()
    assert [str(w.message) for w in caught] == ["something else is deprecated"] * 2
    assert logging.getLogger("torch.utils._pytree").level == logging.ERROR
