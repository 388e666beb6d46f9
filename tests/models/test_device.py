"""Training's device choice (``models.device``): the same rule as serving's."""

from __future__ import annotations

import pytest
import torch

from models.core.errors import DeviceUnavailable
from models.device import cuda_available, pick_torch_device
from models.wals import WALS


def test_auto_and_cpu():
    assert pick_torch_device("cpu").type == "cpu"
    assert pick_torch_device("auto").type == ("cuda" if cuda_available() else "cpu")


def test_explicit_cuda_without_a_gpu_is_an_error(tiny_matrix):
    if cuda_available():
        assert pick_torch_device("cuda") == torch.device("cuda")
        return
    with pytest.raises(DeviceUnavailable, match="sees no CUDA device"):
        pick_torch_device("cuda")
    with pytest.raises(DeviceUnavailable):  # before any work, not after a CPU fit
        WALS(dim=2, iterations=1, device="cuda").fit(tiny_matrix)
