"""The whole pipeline as a user runs it: data -> train -> export -> verify -> serve -> HTTP."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx

from tests.support.configs import TINY_TOML
from tests.support.servers import Server
from tests.support.tools import auto_precision


def walrus(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "walrus.cli", *args], capture_output=True, text=True, timeout=600
    )


def test_cli_pipeline_end_to_end(tmp_path):
    data = tmp_path / "data"
    assert (
        walrus("data", "synthetic", "--size", "tiny", "--seed", "3", "--out", str(data)).returncode
        == 0
    )
    config = tmp_path / "c.toml"
    config.write_text(TINY_TOML.format(out=tmp_path / "out", data=data))
    run = walrus("train", "hybrid", "-c", str(config))
    assert run.returncode == 0, run.stderr
    run = walrus("export", "-c", str(config))
    assert run.returncode == 0, run.stderr
    bundles = tmp_path / "out" / "bundles"
    assert (bundles / "current").is_symlink()
    run = walrus("export", "--verify", str(bundles))
    assert run.returncode == 0, run.stderr
    with Server(bundles) as srv:
        srv.wait()
        r = httpx.post(
            f"{srv.url}/v1/recommend", json={"user_id": "u0", "query": "anything", "k": 3}
        )
        assert r.status_code == 200 and len(r.json()["items"]) == 3
        assert "ready: curl -s" in srv.output()
        ready = httpx.get(f"{srv.url}/readyz").json()
        assert ready["encoder_precision"] == auto_precision()
        assert (
            ready["bundle_id"]
            == json.loads((bundles / "current" / "manifest.json").read_text())["bundle_id"]
        )


def test_serve_rejects_bad_settings(tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "walrus.cli", "serve"],
        env={"WALRUS_ENGINE__THREADS": "-3", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (
        run.returncode == 2
        and "WALRUS_ENGINE__THREADS" in run.stderr
        and "Traceback" not in run.stderr
    )
