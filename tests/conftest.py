"""Shared test setup.

OMP_WAIT_POLICY=PASSIVE must be set before torch is imported: with libgomp's default spin-waiting,
two-thread torch ops run ~10x slower when the cores are shared with other processes (measured on the
2-core development machine), which made the suite's timings depend on what else was running.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def digits():
    """scikit-learn digits as an ImageData (1347 train / 450 test, 1x8x8, normalized)."""
    from dualoptim.vision.data import load_dataset

    return load_dataset("digits")
