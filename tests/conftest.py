"""Shared test setup.

OMP_WAIT_POLICY=PASSIVE must be set before torch is imported: with libgomp's default spin-waiting,
two-thread torch ops run ~10x slower when the cores are shared with other processes (measured on the
2-core development machine), which made the suite's timings depend on what else was running.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(scope="session")
def digits():
    """scikit-learn digits as an ImageData (1347 train / 450 test, 1x8x8, normalized)."""
    from dualoptim.vision.data import load_dataset

    return load_dataset("digits")


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a test module: float results depend on the thread count (reduction order), and
    on 2 shared cores one thread is faster for tiny models. Use with ``pytestmark = usefixtures("one_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
