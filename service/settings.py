"""The service's settings: environment variables with the prefix ``WALRUS_``.

Example: ``WALRUS_BUNDLE=artifacts/demo/bundles WALRUS_THREADS=2 walrus serve``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, NamedTuple

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MIN_ADMIN_TOKEN = 32


class Settings(BaseSettings):
    """Validated on start; a bad value stops the process with the field named."""

    model_config = SettingsConfigDict(env_prefix="WALRUS_", extra="ignore")

    bundle: str = Field(
        "artifacts/demo/bundles",
        min_length=1,
        description="A bundle directory, or a bundles directory whose 'current' link is used, "
        "or a bundles prefix in object storage (s3://bucket/prefix, any fsspec URL) whose "
        "'current' object is followed: each version is pulled into WALRUS_BUNDLE_CACHE.",
    )
    bundle_cache: Path = Field(
        Path("/tmp/walrus-bundles"),
        description="With an object-storage WALRUS_BUNDLE: the local folder its versions are "
        "pulled into (the newest two are kept).",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="GPU execution providers and FAISS GPU when present and allowed."
    )
    engine: Literal["process", "inline"] = Field(
        "process",
        description="process: `walrus serve` runs one engine process holding the bundle and "
        "WALRUS_WORKERS fronts in front of it; inline: every worker holds its own bundle.",
    )
    workers: int = Field(
        0,
        ge=0,
        le=256,
        description="uvicorn worker processes (the fronts, in process mode); 0: chosen from "
        "the CPUs the process may use.",
    )
    engine_address: str = Field(
        "",
        description="The engine's Unix socket, for the fronts (set by `walrus serve`).",
    )
    threads: int = Field(
        0,
        ge=0,
        description="Threads per ONNX session and for FAISS in each worker; 0: the CPUs the "
        "process may use, shared among the workers.",
    )
    encoder_precision: Literal["auto", "int8", "fp16", "fp32"] = Field(
        "auto",
        description="Which encoder of the bundle encodes queries; auto: fp16 with the CUDA "
        "provider (int8 has no CUDA kernels), else int8.",
    )
    n_wals: int | None = Field(None, ge=1, le=10_000, description="Default: the bundle's.")
    n_text: int | None = Field(None, ge=1, le=10_000, description="Default: the bundle's.")
    cold_every: int | None = Field(
        None,
        ge=0,
        le=1000,
        description="One cold item in every this many places; 0: off. Default: the bundle's.",
    )
    max_k: int = Field(100, ge=1, le=1000)
    max_offset: int = Field(
        1000, ge=0, le=100_000, description="Deepest place a page may start at (offset)."
    )
    max_body_bytes: int = Field(
        65_536, ge=1024, description="Largest request body; larger ones get 413 unread."
    )
    max_query_chars: int = Field(512, ge=1)
    max_history: int = Field(1000, ge=0)
    max_exclude: int = Field(1000, ge=0)
    worker_threads: int = Field(
        8, ge=1, description="Thread pool for /similar, off the event loop."
    )
    query_cache_size: int = Field(
        10_000, ge=0, description="Query embeddings kept (LRU, per process); 0 turns it off."
    )
    max_batch: int = Field(
        32, ge=1, le=4096, description="Dynamic batching: most requests served in one batch."
    )
    batch_wait_us: int = Field(
        0, ge=0, le=1_000_000, description="Dynamic batching: wait this long for more requests."
    )
    max_queue: int = Field(
        1024, ge=0, description="Requests waiting for the batcher beyond which new ones get 503."
    )
    read_timeout_s: float = Field(
        10.0,
        gt=0,
        le=300,
        description="A request's headers and body must arrive within this (from its first "
        "byte); a client that trickles them gets 408 and the connection closes.",
    )
    max_header_bytes: int = Field(
        16_384, ge=1024, description="Largest header block; larger gets 431 and a close."
    )
    limit_concurrency: int = Field(
        0,
        ge=0,
        description="Connections plus in-flight requests one front takes before answering "
        "503 at once (uvicorn's limit_concurrency); 0: no limit.",
    )
    backlog: int = Field(2048, ge=1, description="Connections the kernel queues for accept().")
    deadline_ms: int = Field(
        10_000, ge=1, description="A request not answered by then gets 504; its work is dropped."
    )
    batch_workers: int = Field(
        0,
        ge=0,
        le=256,
        description="Dynamic batching: batches served at once, each encoding with its own "
        "session; 0: process mode, one per CPU the fronts leave (at least 2); inline, 2.",
    )
    load_retry_max_s: float = Field(
        30.0, gt=0, description="A failed bundle load is retried, backing off up to this."
    )
    reload_interval_s: float = Field(
        10.0, ge=0, description="How often a moved `current` link is looked for; 0: never."
    )
    admin_token: SecretStr | None = Field(
        None,
        description="Bearer token for POST /admin/reload, at least 32 characters; without "
        "one (and without admin_token_file) the route is absent.",
    )
    admin_token_file: Path | None = Field(
        None,
        description="A file holding the admin token (a mounted secret); instead of "
        "WALRUS_ADMIN_TOKEN, which every process of the container can read in its "
        "environment.",
    )
    admin_max_failures: int = Field(
        5,
        ge=1,
        description="Wrong admin tokens one client address may send per minute; past that "
        "it gets 429 until the minute is over.",
    )
    drain_s: float = Field(
        5.0, ge=0, description="After SIGTERM: /readyz is 503 and requests are still served."
    )
    graceful_timeout_s: float = Field(
        20.0, ge=0, description="After the drain: how long in-flight requests may take."
    )
    user_header: str = Field(
        "",
        max_length=64,
        pattern=r"^[A-Za-z0-9-]*$",
        description="Behind a gateway that authenticates users: the header it sets to the "
        "user's id (e.g. X-User-Id). The fronts then take the user from it, require it "
        "(401 without), and refuse a body user_id (422). Empty: the body's user_id.",
    )
    debug_timings: bool = Field(
        False,
        description="Put each answer's stage timings in its body (timings_ms); off, that is "
        "{}: a cached query's 0 ms encode would tell any caller that someone asked it "
        "recently. /metrics has the stage histograms either way.",
    )
    trusted_keys: Path | None = Field(
        None,
        description="An Ed25519 public key (PEM) or a folder of *.pub keys: a bundle whose "
        "manifest.sig is missing or made by none of them is refused, at start and at "
        "reload. Unset: bundles need no signature.",
    )
    verify_parity: bool = Field(
        False, description="Also re-run the bundle's parity check on start (slower start)."
    )
    fault_query: str = Field(
        "",
        max_length=512,
        description="Fault injection for drills (`make chaos`), like Envoy's fault filter: a "
        "batch holding a recommend request whose query is exactly this text raises, as a bug "
        "deep in the request path would (the batch is then served again request by request, "
        "and only that request fails, 500). Empty: never. Leave it empty in production.",
    )

    ui: bool = Field(
        True,
        description="The page at /ui (static files calling the public API; / redirects "
        "to it). False: neither route exists.",
    )
    redis_url: str = Field(
        "",
        max_length=1024,
        description="Redis for users' recent events (redis://host:6379/0): turns on POST "
        "/v1/events, and every answer for a user folds in their recent events. Empty: off.",
    )
    events_max_batch: int = Field(
        1000, ge=1, le=100_000, description="Most events one POST /v1/events may carry."
    )
    events_max_body_bytes: int = Field(
        1_048_576, ge=1024, description="Largest POST /v1/events body (413 past it)."
    )
    events_per_user: int = Field(
        100, ge=1, le=10_000, description="A user's newest events kept in Redis (the rest drop)."
    )
    events_ttl_s: int = Field(
        30 * 86_400,
        ge=1,
        description="A user's events expire this long after their last one (export them "
        "for training first: `walrus data events`).",
    )
    redis_timeout_ms: int = Field(
        50,
        ge=1,
        le=10_000,
        description="Each Redis call's timeout: a slow Redis costs an answer at most this.",
    )
    redis_breaker_s: float = Field(
        5.0,
        gt=0,
        le=3600,
        description="After 3 failed Redis calls in a row, no call for this long (answers "
        "without events, with a warning; /v1/events 503), then one trial.",
    )

    @field_validator("bundle", mode="before")
    @classmethod
    def _path_as_text(cls, value: object) -> object:
        return str(value) if isinstance(value, Path) else value

    @field_validator("admin_token", "admin_token_file", "trusted_keys", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        """Compose passes an unset variable as "": no token, no admin route."""
        return None if value == "" else value

    @model_validator(mode="after")
    def _admin_token(self) -> Settings:
        if self.admin_token_file is not None:
            if self.admin_token is not None:
                raise ValueError("set WALRUS_ADMIN_TOKEN or WALRUS_ADMIN_TOKEN_FILE, not both")
            try:
                text = self.admin_token_file.read_text().strip()
            except OSError as exc:
                raise ValueError(f"admin_token_file: cannot read it ({exc})") from exc
            self.admin_token = SecretStr(text)
        token = self.admin_token
        if token is not None and len(token.get_secret_value()) < MIN_ADMIN_TOKEN:
            raise ValueError(
                f"admin_token must be at least {MIN_ADMIN_TOKEN} characters "
                "(e.g. `openssl rand -hex 32`)"
            )
        return self

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    log_level: Literal["debug", "info", "warning", "error"] = "info"


class ProcessPlan(NamedTuple):
    """How the service uses the CPUs it may use. Inline mode: ``workers`` processes of
    ``threads`` ONNX and FAISS threads each, never more than ``cpus`` busy threads in all
    (unless the operator asks for it). Process mode: ``workers`` fronts, and one engine with
    ``threads`` threads."""

    cpus: int
    workers: int
    threads: int
    batch_workers: int = 2


def default_workers(cpus: int) -> int:
    """Inline workers when WALRUS_WORKERS is 0: one per CPU, each with one ONNX and FAISS
    thread. One process's event loop, batcher and Python code share one GIL, so one process
    tops out well below what its cores can encode; and a second intra-op thread per session
    only spins against the event loop for the same cores. On 2 CPUs, wrk at concurrency
    1/8/32 (all-distinct queries, requests/s): 1 worker x 2 threads 68/317/452, 1 x 1
    128/444/533, 2 x 1 120/491/689 (docs/benchmarks.md, "Serving")."""
    return max(1, cpus)


def default_fronts(cpus: int) -> int:
    """Fronts when WALRUS_WORKERS is 0 in process mode: one per two CPUs (docs/benchmarks.md,
    "Fronts and the engine")."""
    return max(1, cpus // 2)


def process_plan(settings: Settings, cpus: int) -> ProcessPlan:
    if settings.engine == "process":
        # One ONNX and FAISS thread per call: the batcher's threads each encode with their
        # own session, in parallel; a second intra-op thread only spins against the event
        # loop (2 CPUs, concurrency 32: 491 requests/s with 2 threads, 820 with 1).
        workers = settings.workers or default_fronts(cpus)
        batch_workers = settings.batch_workers or max(2, cpus - workers)
        return ProcessPlan(cpus, workers, settings.threads or 1, batch_workers)
    workers = settings.workers or default_workers(cpus)
    threads = settings.threads or max(1, cpus // workers)
    return ProcessPlan(cpus, workers, threads, settings.batch_workers or 2)
