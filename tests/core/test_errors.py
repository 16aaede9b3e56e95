"""Which errors are the machine's, not a genome's (issue 23, class 1)."""

import errno
import os

import numpy as np
import pytest

from evores.core.errors import is_machine_fault


@pytest.mark.parametrize("number", [errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS])
def test_a_full_disk_an_io_error_or_a_read_only_file_system_is_the_machines(number):
    assert is_machine_fault(OSError(number, os.strerror(number)))


def test_a_fault_behind_another_error_is_still_the_machines():
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as inner:
            raise RuntimeError("saving the network failed") from inner
    except RuntimeError as outer:
        assert is_machine_fault(outer)


@pytest.mark.parametrize(
    "error", [OSError(errno.ENOENT, "No such file"), ValueError("bad genome"), MemoryError()]
)
def test_other_errors_are_not(error):
    assert not is_machine_fault(error)


def test_a_dataset_cache_that_no_longer_reads_is_the_machines(tmp_path):
    h5py = pytest.importorskip("h5py")
    path = tmp_path / "cache.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("images", data=np.arange(1 << 16, dtype=np.uint8))
    with open(path, "r+b") as raw:  # damaged since it was built
        raw.truncate(4096)
    with pytest.raises(OSError) as caught:
        with h5py.File(path, "r") as f:
            f["images"][...]
    assert is_machine_fault(caught.value), caught.value
