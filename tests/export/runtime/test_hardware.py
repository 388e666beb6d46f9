"""Device choice: ``auto`` picks what the machine has; an explicit ``cuda`` it cannot honour
is an error naming what is missing, never a quiet run on the CPU."""

from __future__ import annotations

import onnxruntime as ort
import pytest

from export.runtime.hardware import (
    faiss_gpu_count,
    onnx_providers,
    require_faiss_gpu,
    require_providers,
)
from models.core.errors import DeviceUnavailable, WalrusError

HAS_CUDA_PROVIDER = "CUDAExecutionProvider" in ort.get_available_providers()


def test_auto_takes_cuda_only_when_onnxruntime_offers_it():
    providers = onnx_providers("auto")
    assert providers[-1] == "CPUExecutionProvider"
    assert ("CUDAExecutionProvider" in providers) == HAS_CUDA_PROVIDER
    assert onnx_providers("cpu") == ["CPUExecutionProvider"]


def test_explicit_cuda_without_the_provider_is_an_error():
    if HAS_CUDA_PROVIDER:
        assert onnx_providers("cuda")[0] == "CUDAExecutionProvider"
    else:
        with pytest.raises(DeviceUnavailable, match="onnxruntime-gpu"):
            onnx_providers("cuda")


def test_a_cuda_session_that_came_up_on_the_cpu_is_refused():
    require_providers("cuda", ["CUDAExecutionProvider", "CPUExecutionProvider"])
    require_providers("auto", ["CPUExecutionProvider"])
    with pytest.raises(DeviceUnavailable, match="did not initialise") as info:
        require_providers("cuda", ["CPUExecutionProvider"])
    assert isinstance(info.value, WalrusError)  # the CLI's one-line exit 2


def test_explicit_cuda_needs_a_faiss_gpu():
    require_faiss_gpu("auto")
    if faiss_gpu_count():
        require_faiss_gpu("cuda")
    else:
        with pytest.raises(DeviceUnavailable, match="FAISS sees no GPU"):
            require_faiss_gpu("cuda")
