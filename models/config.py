"""The pipeline's configuration: one pydantic model per stage, loaded from one TOML file.

Every field is validated on load; ``walrus ... --set wals.dim=32`` overrides a field. Relative
paths are taken from the current directory (run commands from the repository root).
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

SplitName = Literal["holdout", "users", "cold_items"]
SPLIT_NAMES: tuple[SplitName, ...] = ("holdout", "users", "cold_items")


class ConfigError(ValueError):
    """A configuration that cannot be used; the message is one line saying what to fix."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Strict):
    """Where the interactions and the catalog are, and how to read them."""

    interactions: Path = Field(
        description="CSV/JSONL/Parquet with user_id,item_id[,weight,rating,timestamp]."
    )
    catalog: Path | None = Field(
        None, description="CSV/JSONL/Parquet with item_id and text columns."
    )
    queries: Path | None = Field(None, description="Optional query log: user_id,query,item_id.")
    rating_threshold: float | None = Field(
        None, description="With a rating column: rows with rating >= this are positives."
    )
    text_template: str | None = Field(
        None,
        description="str.format template over catalog columns, e.g. '{title}. {genres}'. "
        "Default: every text column, non-empty ones joined by '. '.",
    )


class SplitConfig(_Strict):
    """Evaluation splits (see docs/evaluation.md)."""

    holdout_fraction: float = Field(
        0.2, gt=0, lt=1, description="Share of each user's positives held out."
    )
    user_fraction: float = Field(
        0.1, gt=0, lt=1, description="Share of users held out for fold-in."
    )
    fold_in_fraction: float = Field(
        0.5, gt=0, lt=1, description="Share of a held-out user's positives given as history."
    )
    cold_item_fraction: float = Field(0.1, gt=0, lt=1, description="Share of items made cold.")
    seed: int = 0


class WALSConfig(_Strict):
    """Hyper-parameters of ``models.wals.WALS`` (same names)."""

    dim: int = Field(64, ge=1, le=4096)
    regularization: float = Field(0.001, ge=0)
    unobserved_weight: float = Field(0.1, ge=0)
    iterations: int = Field(10, ge=0)
    seed: int = 0
    regularization_exp: float = Field(
        0.0, ge=0, description="iALS frequency-scaled lambda exponent."
    )
    row_weights: Literal["uniform", "linear", "power"] = "uniform"
    col_weights: Literal["uniform", "linear", "power"] = "uniform"
    weight_scale: float = Field(1.0, gt=0)
    weight_exponent: float = Field(0.08, ge=0)
    solver: Literal["cg", "cholesky"] = "cg"
    cg_steps: int = Field(3, ge=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    num_threads: int = Field(0, ge=0, description="Torch CPU threads; 0 keeps torch's default.")
    early_stopping_patience: int = Field(
        0, ge=0, description="Iterations without better validation recall before stopping; 0 = off."
    )

    def estimator_kwargs(self) -> dict[str, Any]:
        return self.model_dump(exclude={"early_stopping_patience"})


class EvalConfig(_Strict):
    ks: list[int] = Field(default_factory=lambda: [10, 20, 50], min_length=1)
    splits: list[SplitName] = Field(default_factory=lambda: list(SPLIT_NAMES), min_length=1)

    @model_validator(mode="after")
    def _positive_ks(self) -> EvalConfig:
        if any(k < 1 for k in self.ks):
            raise ValueError("every k in eval.ks must be >= 1")
        return self


class PipelineConfig(_Strict):
    """The whole offline pipeline."""

    output_dir: Path = Field(Path("artifacts"), description="Where trained models and bundles go.")
    data: DataConfig
    split: SplitConfig = Field(default_factory=SplitConfig)
    wals: WALSConfig = Field(default_factory=WALSConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)


def _set_path(tree: dict[str, Any], dotted: str, raw: str) -> None:
    try:
        value: Any = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    node = tree
    *parents, leaf = dotted.split(".")
    for key in parents:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {dotted}: '{key}' is not a section")
    node[leaf] = value


def load_config(path: str | Path, overrides: list[str] | None = None) -> PipelineConfig:
    """Read a TOML config, apply ``section.field=value`` overrides, validate.

    Raises ``ConfigError`` with one line naming the field at fault.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        tree = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from exc
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: use section.field=value")
        key, raw = item.split("=", 1)
        _set_path(tree, key.strip(), raw.strip())
    try:
        return PipelineConfig.model_validate(tree)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"])
        raise ConfigError(f"{path}: {field}: {err['msg']}") from exc
