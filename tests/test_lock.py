"""docker/serve.lock (what the serving image installs, hashed) still satisfies
pyproject.toml: every dependency of walrus and of its `serve` extra pinned at a version its
specifier allows, every pin with hashes. `make lock` regenerates it."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]


def pins() -> dict[str, tuple[str, int]]:
    """name -> (version, number of hashes) from the lock file."""
    text = (REPO / "docker/serve.lock").read_text()
    out: dict[str, tuple[str, int]] = {}
    for block in re.split(r"\n(?=[A-Za-z0-9])", text):
        head = re.match(r"([A-Za-z0-9_.\-]+)==([^\s\\;]+)", block)
        if head:
            out[canonicalize_name(head.group(1))] = (head.group(2), block.count("--hash=sha256:"))
    return out


def test_the_lock_pins_every_serving_dependency_with_hashes():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = [
        Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["serve"]
    ]
    locked = pins()
    assert len(locked) > 20 and all(hashes > 0 for _, hashes in locked.values())
    for req in wanted:
        name = canonicalize_name(req.name)
        assert name in locked, f"{req} is not in docker/serve.lock: run make lock"
        assert req.specifier.contains(locked[name][0], prereleases=True), (
            f"docker/serve.lock pins {name}=={locked[name][0]}, outside {req}: run make lock"
        )


def test_no_gpu_or_training_package_is_in_the_serving_lock():
    assert not {"torch", "transformers", "onnxruntime-gpu", "faiss-gpu"} & set(pins())
