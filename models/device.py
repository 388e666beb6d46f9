"""The one place that picks CPU or GPU for torch code (training).

Detected once per process (``lru_cache``); a broken CUDA runtime reads as no GPU. ``auto``
then chooses the CPU and says so; an explicit ``cuda`` is refused (``DeviceUnavailable``).
The serving side's flags (onnxruntime providers, FAISS GPUs) live in ``export.runtime``,
which must not import torch.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import Literal

import torch

from models.core.errors import DeviceUnavailable

log = logging.getLogger(__name__)

DevicePreference = Literal["auto", "cpu", "cuda"]


@lru_cache(maxsize=1)
def cuda_available() -> bool:
    """True when torch sees at least one CUDA device."""
    try:
        return bool(torch.cuda.is_available())
    except Exception as exc:  # a broken driver must not take training down
        log.warning("CUDA check failed (%s); using the CPU", exc)
        return False


def pick_torch_device(preference: DevicePreference = "auto") -> torch.device:
    """Return the torch device to train on and log which one was picked.

    ``auto`` takes CUDA when present, else the CPU; an explicit ``cuda`` without a GPU is
    ``DeviceUnavailable``: a run asked for the GPU must not spend hours on the CPU unseen.
    """
    if preference == "cpu":
        device = torch.device("cpu")
    elif cuda_available():
        device = torch.device("cuda")
    elif preference == "cuda":
        raise DeviceUnavailable(
            "device = 'cuda' but torch sees no CUDA device: install the GPU build and a "
            "driver, or set device = 'auto' (or 'cpu')"
        )
    else:
        device = torch.device("cpu")
    log.info("torch device: %s (asked: %s)", device, preference)
    return device
