"""The one place that picks CPU or GPU for torch code (training).

Detected once per process (``lru_cache``); a missing CUDA runtime warns instead of crashing.
The serving side's flags (onnxruntime providers, FAISS GPUs) live in ``export.runtime``,
which must not import torch.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import Literal

import torch

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

    ``auto`` takes CUDA when present, else the CPU; ``cuda`` without a GPU warns and
    falls back to the CPU rather than failing a long pipeline run.
    """
    if preference == "cpu":
        device = torch.device("cpu")
    elif cuda_available():
        device = torch.device("cuda")
    else:
        if preference == "cuda":
            log.warning("device=cuda requested but no CUDA device is visible; using the CPU")
        device = torch.device("cpu")
    log.info("torch device: %s", device)
    return device
