"""What this machine offers the service, detected once: CPUs it may really use, FAISS GPUs,
onnxruntime's execution providers."""

from __future__ import annotations

import logging
import math
import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

import faiss
import onnxruntime as ort

from models.core.errors import DeviceUnavailable

log = logging.getLogger(__name__)

DevicePreference = Literal["auto", "cpu", "cuda"]


@lru_cache(maxsize=1)
def faiss_gpu_count() -> int:
    """GPUs FAISS can use: 0 with the CPU wheel or without a device (warns if broken)."""
    get = getattr(faiss, "get_num_gpus", None)
    if get is None:
        return 0
    try:
        return int(get())
    except Exception as exc:  # a GPU wheel without a driver
        log.warning("FAISS GPU check failed (%s); FAISS runs on the CPU", exc)
        return 0


def usable_cpus(cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """CPUs this process may really use: its CPU affinity, capped by a cgroup CPU quota
    (v2 ``cpu.max``, or v1 ``cpu.cfs_quota_us``), which is what ``docker run --cpus`` and
    Kubernetes limits set. ``os.cpu_count()`` is the host's and oversubscribes a container."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    quota = _cgroup_quota(cgroup_root)
    if quota is not None:
        cpus = min(cpus or 1, max(1, math.ceil(quota)))
    return max(1, cpus or 1)


def _cgroup_quota(root: Path) -> float | None:
    """The cgroup CPU quota in CPUs, or None when there is none (or it cannot be read)."""
    try:
        v2 = root / "cpu.max"
        if v2.is_file():
            quota, period = v2.read_text().split()[:2]
            return None if quota == "max" else int(quota) / int(period)
        v1 = root / "cpu" / "cpu.cfs_quota_us"
        if v1.is_file():
            quota_us = int(v1.read_text())
            period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
            return None if quota_us <= 0 else quota_us / period_us
    except (OSError, ValueError):
        return None
    return None


def onnx_providers(preference: DevicePreference = "auto") -> list[str]:
    """onnxruntime execution providers to ask for, best first, CPU always last.

    CUDA is asked for only when the installed onnxruntime offers it (``auto``); an explicit
    ``cuda`` without it is ``DeviceUnavailable``. A CUDA provider that fails to initialise
    falls back to the CPU inside onnxruntime: ``require_providers`` checks what a session
    really picked (``ort.get_device()`` says "GPU" for the GPU wheel even without a GPU).
    """
    available = ort.get_available_providers()
    providers = []
    if preference != "cpu" and "CUDAExecutionProvider" in available:
        providers.append("CUDAExecutionProvider")
    elif preference == "cuda":
        raise DeviceUnavailable(
            "device = 'cuda' but this onnxruntime has no CUDA provider (installed: "
            f"{', '.join(available)}): install onnxruntime-gpu, or set the device to auto"
        )
    providers.append("CPUExecutionProvider")
    return providers


def require_providers(preference: DevicePreference, picked: list[str]) -> None:
    """An explicit ``cuda`` whose session came up on the CPU alone (the CUDA provider failed
    to initialise: a missing cuDNN, a driver too old) is ``DeviceUnavailable``."""
    if preference == "cuda" and "CUDAExecutionProvider" not in picked:
        raise DeviceUnavailable(
            "device = 'cuda' but onnxruntime's CUDA provider did not initialise (the session "
            f"runs on {', '.join(picked)}): see onnxruntime's log above for the missing library"
        )


def require_faiss_gpu(preference: DevicePreference) -> None:
    """An explicit ``cuda`` needs FAISS's GPU build and a GPU it can see."""
    if preference == "cuda" and faiss_gpu_count() == 0:
        raise DeviceUnavailable(
            "device = 'cuda' but FAISS sees no GPU (the CPU wheel, or no device): install "
            "FAISS's GPU build, or set the device to auto"
        )
