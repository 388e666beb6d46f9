"""The layers hold because a tool checks them: a forbidden import fails `lint-imports`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")


def lint(tree: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run(
        [str(LINT), "--no-cache"], cwd=tree, env=env, capture_output=True, text=True, timeout=120
    )


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    for name in ("walrus", "service", "export", "models", "bench", "tests"):
        shutil.copytree(REPO / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    return tmp_path


def test_the_contracts_hold_on_the_tree(tree):
    result = lint(tree)
    assert result.returncode == 0, result.stdout[-2000:]


WHOLE_TREE = "The whole tree: the command line, then service"
INSIDE_MODELS = "Inside models: the training modules, then models.core"
NO_CYCLES = "No import cycles"


PLANTED = [
    # Upward imports, one per layer of the whole tree.
    ("models/wals.py", "import export.format", WHOLE_TREE),
    ("models/training.py", "import service.settings", WHOLE_TREE),
    ("models/config.py", "import walrus.cli", WHOLE_TREE),
    ("export/format.py", "import service.settings", WHOLE_TREE),
    ("export/bundle.py", "import walrus.cli.common", WHOLE_TREE),
    ("service/settings.py", "import walrus.cli", WHOLE_TREE),
    # models.core is the floor of models.
    ("models/core/hybrid.py", "from models.wals import WALS", INSIDE_MODELS),
    ("models/core/ids.py", "import models.config", INSIDE_MODELS),
    # A loop between two modules of one package.
    ("models/core/topk.py", "import models.core.hybrid", NO_CYCLES),
    ("service/front/state.py", "import service.front.routes", NO_CYCLES),
    # What the serving image must not carry, and the bundle as the one contract.
    ("service/api.py", "import torch", "never imports torch"),
    ("models/core/ids.py", "import scipy.sparse", "never imports torch"),
    (
        "service/front/routes.py",
        "from export.bundle import build_bundle",
        "only through export.format",
    ),
    ("service/front/routes.py", "import faiss", "A front holds no bundle"),
    (
        "service/front/client.py",
        "from service.engine.engine import Engine",
        "A front holds no bundle",
    ),
    ("service/messages.py", "import service.engine.engine", "Inside service"),
    ("export/format.py", "import export.runtime.loaded", "then export.format, then models.core"),
    ("models/spark/blocks.py", "import models.wals", "models.core only"),
    # The harnesses: bench drives entry points; tests share code through tests.support.
    ("bench/api.py", "import service.engine.batcher", "bench is a harness"),
    ("tests/service/test_api.py", "import tests.e2e.test_engine", "tests.support only"),
]


def test_every_contract_has_a_planted_import_that_breaks_it():
    contracts = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
    names = [c["name"] for c in contracts["contracts"]]
    uncovered = [n for n in names if not any(c in n for _, _, c in PLANTED)]
    assert uncovered == []


@pytest.mark.parametrize(("module", "line", "contract"), PLANTED)
def test_a_forbidden_import_breaks_lint(tree, module, line, contract):
    path = tree / module
    path.write_text(path.read_text() + f"\n{line}  # deliberately forbidden\n")
    result = lint(tree)
    assert result.returncode != 0
    broken = [ln for ln in result.stdout.splitlines() if " BROKEN" in ln]
    assert any(contract in ln for ln in broken), result.stdout[-2000:]
