"""Model files (qtutor.files): written atomically, measured in megabytes."""

import os

import pytest

from qtutor.files import file_size_mb, save_atomically


def test_save_atomically_writes_an_ordinary_file(tmp_path):
    target = tmp_path / "model.pt"
    save_atomically(lambda temporary: open(temporary, "wb").write(b"x" * 1500), target)
    assert target.read_bytes() == b"x" * 1500 and file_size_mb(target) == 0.0015
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask  # not the private 0600 of a temporary file
    assert [path.name for path in tmp_path.iterdir()] == ["model.pt"]


def test_a_failed_save_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "model.pt"
    target.write_bytes(b"old")

    def fails(temporary):
        open(temporary, "wb").write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        save_atomically(fails, target)
    assert target.read_bytes() == b"old" and [path.name for path in tmp_path.iterdir()] == ["model.pt"]
