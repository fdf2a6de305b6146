"""Shared fixtures."""

from __future__ import annotations

import logging
import os

import pytest
import torch

from sdit.data import FASHION_MNIST_DIR, ImageSet, load_dataset
from sdit.heap import retain_freed_memory

logging.getLogger("torch._library.triton").setLevel(logging.ERROR)

# One thread per worker where the workers fill the cores (pytest -n auto): two workers with two OpenMP threads
# each on two cores spin in each other's barriers, and a small model's step gets 10-20x slower. Processes the
# tests start inherit the setting.
if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) >= (os.cpu_count() or 1):
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)

if os.environ.get("SDIT_TEST_HEAP_RETAINED") == "1":  # tests/sdit/test_heap.py: run a suite as the sdit command does
    retain_freed_memory()


@pytest.fixture(autouse=True)
def _deterministic() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def fashion_test() -> ImageSet:
    """The real Fashion-MNIST test split from the Debian package (scripts/setup.sh installs it)."""
    if not FASHION_MNIST_DIR.is_dir():
        pytest.fail(f"Fashion-MNIST missing at {FASHION_MNIST_DIR}: run scripts/setup.sh as root")
    return load_dataset("fashion-mnist", "test")
