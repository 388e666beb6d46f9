"""What a test needs from outside itself: a tool, a package, the MovieLens data, and the
command line as a user runs it. Without one a test skips naming the install, except under
CI=true (``.ci/run`` installs every one of them), where it fails."""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def auto_precision() -> str:
    """The encoder precision ``auto`` serves on this machine: fp16 where onnxruntime offers
    CUDA, int8 on the CPU (the tests run on both)."""
    import onnxruntime as ort

    return "fp16" if "CUDAExecutionProvider" in ort.get_available_providers() else "int8"


def movielens_or_skip(raw: str | None) -> Path:
    """The MovieLens directory; without it the test skips with a reason, except in CI
    (``CI=true``), which is meant to have the data: there a missing copy fails the run."""
    if raw and (Path(raw) / "ratings.csv").is_file():
        return Path(raw)
    reason = (
        f"WALRUS_MOVIELENS_DIR={raw} holds no ratings.csv"
        if raw
        else "WALRUS_MOVIELENS_DIR is not set: point it at ml-latest-small to run this"
    )
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI must run the MovieLens tests: {reason}", pytrace=False)
    pytest.skip(reason)


def tool_or_skip(name: str, install: str) -> str:
    """The path of a command-line tool a test needs; without it the test skips naming the
    install, except in CI (``CI=true``), whose .ci/run installs it: there it fails."""
    path = shutil.which(name)
    if path:
        return path
    reason = f"{name} is not installed ({install})"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI must run this test: {reason}", pytrace=False)
    pytest.skip(reason)


def module_or_skip(name: str, install: str) -> None:
    """At a test module's top: skip the module without the Python package ``name``, naming
    the install, except in CI (``CI=true``), which installs every extra: there it fails."""
    try:
        importlib.import_module(name)
    except ImportError:
        reason = f"{name} is not installed ({install})"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI must run these tests: {reason}", pytrace=False)
        pytest.skip(reason, allow_module_level=True)


def walrus(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "walrus.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=600,
    )
