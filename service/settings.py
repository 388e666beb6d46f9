"""The service's settings: environment variables with the prefix ``WALRUS_``, one group per
process that reads them (``__`` separates a group from its field).

Example: ``WALRUS_BUNDLE=artifacts/demo/bundles WALRUS_ENGINE__SESSIONS=2 walrus serve``.

- top level: what is served and where (both processes);
- ``WALRUS_FRONT__*``: the HTTP fronts (``service/front/``);
- ``WALRUS_ENGINE__*``: the engine that holds the bundle (``service/engine/``);
- ``WALRUS_LIMITS__*``: request limits, enforced by both (``service.api.LIMITS``);
- ``WALRUS_EVENTS__*``: live events in Redis (both: the front's route, the engine's store).

``python -m service.settings`` prints the reference table of docs/deployment.md.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, SettingsConfigDict

MIN_ADMIN_TOKEN = 32
PREFIX, NESTED = "WALRUS_", "__"


class Group(BaseModel):
    """A group of settings: unknown fields are refused, not ignored (a typo is an error)."""

    model_config = ConfigDict(extra="forbid")


class FrontSettings(Group):
    """Read by every front (uvicorn worker): HTTP, deadlines, draining, who may call what."""

    workers: int = Field(
        0,
        ge=0,
        le=256,
        description="process mode: fronts, 0: one per two usable CPUs; inline: workers, "
        "each holding the bundle, 0: one per usable CPU",
    )
    read_timeout_s: float = Field(
        10.0,
        gt=0,
        le=300,
        description="a request's headers and body must arrive within this from its first "
        "byte; a client that trickles them gets 408 and the connection closes",
    )
    max_header_bytes: int = Field(
        16_384, ge=1024, description="largest header block: 431 and a close"
    )
    max_body_bytes: int = Field(
        65_536, ge=1024, description="largest request body: 413 before it is read"
    )
    limit_concurrency: int = Field(
        0,
        ge=0,
        description="connections plus requests in flight one front takes before answering "
        "503 at once (uvicorn's `limit_concurrency`); 0: no limit",
    )
    backlog: int = Field(2048, ge=1, description="connections the kernel queues for `accept()`")
    deadline_ms: int = Field(
        10_000,
        ge=1,
        description="a request not answered by then gets 504, and its work is dropped if "
        "still queued",
    )
    drain_s: float = Field(
        5.0,
        ge=0,
        description="after SIGTERM: `/readyz` is 503 and requests are still served this long",
    )
    graceful_timeout_s: float = Field(
        20.0, ge=0, description="after the drain: how long requests in flight may take"
    )
    user_header: str = Field(
        "",
        max_length=64,
        pattern=r"^[A-Za-z0-9-]*$",
        description="behind a gateway that authenticates users: the header it sets to the "
        "user's id (e.g. `X-User-Id`); the fronts then require it (401 without) and refuse a "
        "body `user_id` (422). Empty: the body's `user_id`",
    )
    ui: bool = Field(
        True,
        description="the page at `/ui` (static files calling the public API; `/` redirects "
        "to it); false: neither route exists",
    )
    admin_token: SecretStr | None = Field(
        None,
        description="bearer token for `POST /admin/reload`, `POST /admin/experiment` and "
        "`GET /v1/experiments`, at least 32 characters (`openssl rand -hex 32`); unset (and "
        "no `admin_token_file`): those routes do not exist",
    )
    admin_token_file: Path | None = Field(
        None,
        description="the admin token from a file (a mounted secret, trailing newline "
        "ignored) instead of the environment, which every process of the container can read",
    )
    admin_max_failures: int = Field(
        5,
        ge=1,
        description="wrong admin tokens one client address may send per minute; past that "
        "it gets 429 with `Retry-After` until the minute is over, even with the right token",
    )

    @field_validator("admin_token", "admin_token_file", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        """Compose passes an unset variable as "": no token, no admin route."""
        return None if value == "" else value

    @model_validator(mode="after")
    def _admin_token(self) -> FrontSettings:
        if self.admin_token_file is not None:
            if self.admin_token is not None:
                raise ValueError(
                    "set WALRUS_FRONT__ADMIN_TOKEN or WALRUS_FRONT__ADMIN_TOKEN_FILE, not both"
                )
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


class EngineSettings(Group):
    """Read by the engine (in inline mode, by every worker): the bundle's runtime, batching,
    the query cache, reloads."""

    sessions: int = Field(
        0,
        ge=0,
        le=256,
        description="requests computed at once: batches encoded in parallel, each with its "
        "own ONNX session, and the threads serving `/similar` (its own pool: a flood of it "
        "cannot stall reloads or the batcher); 0: process mode, one per CPU the fronts leave "
        "(at least 2), inline 2",
    )
    threads: int = Field(
        0,
        ge=0,
        description="threads per ONNX session and for FAISS; 0: process mode 1, inline the "
        "usable CPUs divided among the workers",
    )
    encoder_precision: Literal["auto", "int8", "fp16", "fp32"] = Field(
        "auto",
        description="`auto`: fp16 with the CUDA provider, else int8 (fp32 when the bundle "
        "lacks that file, logged); or `int8` (quantised, fastest on CPUs), `fp16` (GPUs), "
        "`fp32` (bit-close to PyTorch): an explicit precision the bundle lacks is refused",
    )
    n_wals: int | None = Field(
        None, ge=1, le=10_000, description="candidates from the WALS index; unset: the bundle's"
    )
    n_text: int | None = Field(
        None, ge=1, le=10_000, description="candidates from the text index; unset: the bundle's"
    )
    cold_every: int | None = Field(
        None,
        ge=0,
        le=1000,
        description="one cold item (the head's best of the pool) in every this many places; "
        "0: the head's order alone; unset: the bundle's (`candidates.cold_every`)",
    )
    max_batch: int = Field(
        32, ge=1, le=4096, description="dynamic batching: most requests served together"
    )
    batch_wait_us: int = Field(
        0,
        ge=0,
        le=1_000_000,
        description="dynamic batching: wait this long for more requests (0: take what is queued)",
    )
    max_queue: int = Field(
        1024,
        ge=0,
        description="requests waiting beyond which new ones get 503 with `Retry-After: 1` "
        "(0: unbounded)",
    )
    query_cache_size: int = Field(
        10_000,
        ge=0,
        description="query embeddings kept (LRU, keyed by bundle id and query); 0: off",
    )
    reload_interval_s: float = Field(
        10.0, ge=0, description="how often a moved `current` link is looked for (0: never)"
    )
    load_retry_max_s: float = Field(
        30.0, gt=0, description="a failed bundle load is retried, backing off up to this"
    )
    verify_parity: bool = Field(
        False, description="also re-run the bundle's ONNX parity check on start (slower)"
    )
    debug_timings: bool = Field(
        False,
        description="put each answer's stage timings in its body (`timings_ms`); off it is "
        "`{}`, since a cached query's 0 ms encode would tell any caller what others asked "
        "recently (`/metrics` has the stage histograms either way)",
    )
    fault_query: str = Field(
        "",
        max_length=512,
        description="fault injection for drills (`make chaos`): a batch holding a recommend "
        "request whose query is exactly this raises, as a bug inside the engine would; its "
        "requests are served again one by one and only that one fails (500). Leave it unset "
        "in production",
    )
    guardrail_factor: float = Field(
        2.0,
        gt=1,
        le=100,
        description="an experiment's candidate is stopped (on every replica) when its "
        "recent error rate or p99 latency passes control's by this factor, or its "
        "click-through rate falls below control's divided by it",
    )
    guardrail_min_answers: int = Field(
        200,
        ge=10,
        description="answers each arm must have served before the guardrail judges errors "
        "and latency",
    )
    guardrail_min_impressions: int = Field(
        1000,
        ge=100,
        description="attributed impressions each arm must have before the guardrail judges "
        "click-through: the candidate is stopped when its CTR falls below control's / "
        "`guardrail_factor` and the 95% interval of the difference is below 0",
    )
    address: str = Field(
        "", description="the engine's Unix socket, for the fronts (set by `walrus serve`)"
    )


class LimitSettings(Group):
    """Request limits: the fronts check each body, the engine each call again."""

    k: int = Field(100, ge=1, le=1000, description="largest `k`")
    offset: int = Field(
        1000, ge=0, le=100_000, description="deepest place a page may start at (`offset`)"
    )
    query_chars: int = Field(512, ge=1, description="longest `query`, in characters")
    history: int = Field(1000, ge=0, description="longest `history`")
    exclude: int = Field(1000, ge=0, description="longest `exclude`")


class EventSettings(Group):
    """Live events in Redis: the fronts' `POST /v1/events`, the engine's event store."""

    redis_url: str = Field(
        "",
        max_length=1024,
        description="Redis for users' recent events (`redis://host:6379/0`): turns on "
        "`POST /v1/events`, and every answer for a user folds in their recent events; "
        "empty: off",
    )
    max_batch: int = Field(
        1000, ge=1, le=100_000, description="most events one `POST /v1/events` may carry"
    )
    max_body_bytes: int = Field(
        1_048_576, ge=1024, description="largest `POST /v1/events` body (413 past it)"
    )
    per_user: int = Field(
        100, ge=1, le=10_000, description="a user's newest events kept (the rest drop)"
    )
    ttl_s: int = Field(
        30 * 86_400,
        ge=1,
        description="a user's events expire this long after their last one (export them for "
        "training first: `walrus data events`)",
    )
    redis_timeout_ms: int = Field(
        50,
        ge=1,
        le=10_000,
        description="each Redis call's timeout: a slow Redis costs an answer at most this",
    )
    redis_breaker_s: float = Field(
        5.0,
        gt=0,
        le=3600,
        description="after 3 failed Redis calls in a row, no call for this long (answers "
        "without events, with a warning; `/v1/events` 503), then one trial",
    )
    attribution: bool = Field(
        True,
        description="record every answer in Redis for the events that will name its "
        "`recommendation_id` (answers carry their ids either way)",
    )
    attribution_ttl_s: int = Field(
        3600,
        ge=60,
        le=90 * 86_400,
        description="how long an answer's record is kept for the events that name its "
        "`recommendation_id` (later ones count as unattributed)",
    )
    attribution_max_records: int = Field(
        1_000_000,
        ge=1000,
        description="answer records Redis may hold, across every engine: each minute of "
        "`attribution_ttl_s` gets its share, and a record past it is counted "
        '(`walrus_attribution_records_total{outcome="over_budget"}`), not kept',
    )


# The flat names before the groups: a deployment still setting one stops with its new name
# rather than silently running on the default.
RENAMED = {
    "ENGINE": "MODE",
    "ENGINE_ADDRESS": "ENGINE__ADDRESS",
    "WORKERS": "FRONT__WORKERS",
    "THREADS": "ENGINE__THREADS",
    "BATCH_WORKERS": "ENGINE__SESSIONS",
    "WORKER_THREADS": "ENGINE__SESSIONS",
    "MAX_K": "LIMITS__K",
    "MAX_OFFSET": "LIMITS__OFFSET",
    "MAX_QUERY_CHARS": "LIMITS__QUERY_CHARS",
    "MAX_HISTORY": "LIMITS__HISTORY",
    "MAX_EXCLUDE": "LIMITS__EXCLUDE",
    "REDIS_URL": "EVENTS__REDIS_URL",
    "EVENTS_MAX_BATCH": "EVENTS__MAX_BATCH",
    "EVENTS_MAX_BODY_BYTES": "EVENTS__MAX_BODY_BYTES",
    "EVENTS_PER_USER": "EVENTS__PER_USER",
    "EVENTS_TTL_S": "EVENTS__TTL_S",
    "REDIS_TIMEOUT_MS": "EVENTS__REDIS_TIMEOUT_MS",
    "REDIS_BREAKER_S": "EVENTS__REDIS_BREAKER_S",
    **{
        name.upper(): f"FRONT__{name.upper()}"
        for name in FrontSettings.model_fields
        if name != "workers"
    },
    **{
        name.upper(): f"ENGINE__{name.upper()}"
        for name in EngineSettings.model_fields
        if name not in ("sessions", "threads", "address") and not name.startswith("guardrail_")
    },
}


class Settings(BaseSettings):
    """Validated on start; a bad value stops the process with the variable named."""

    model_config = SettingsConfigDict(
        env_prefix=PREFIX, env_nested_delimiter=NESTED, extra="ignore"
    )

    bundle: str = Field(
        "artifacts/demo/bundles",
        min_length=1,
        description="a bundle directory, or a bundles directory whose `current` link is "
        "used, or a bundles prefix in object storage (`s3://bucket/prefix`, any fsspec URL) "
        "whose `current` object is followed (see Bundles in object storage)",
    )
    bundle_cache: Path = Field(
        Path("/tmp/walrus-bundles"),
        description="with an object-storage `WALRUS_BUNDLE`: the local folder its versions "
        "are pulled into (the newest two are kept)",
    )
    trusted_keys: Path | None = Field(
        None,
        description="an Ed25519 public key (PEM) or a folder of `*.pub` keys: a bundle whose "
        "`manifest.sig` is missing or made by none of them is refused, at start and at "
        "reload (see Signed bundles); unset: bundles need no signature",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto",
        description="`auto`: the CUDA execution provider and FAISS GPU when present, else "
        "the CPU (logged, and named in `/readyz`); `cuda`: both required, a load without "
        "them is refused naming what is missing; `cpu`: never",
    )
    mode: Literal["process", "inline"] = Field(
        "process",
        description="`process`: one engine process holds the bundle, `WALRUS_FRONT__WORKERS` "
        "fronts answer HTTP; `inline`: every worker holds its own bundle",
    )
    host: str = Field("127.0.0.1", description="the address to listen on")
    port: int = Field(8000, ge=1, le=65535, description="the port to listen on")
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="the least severe level logged"
    )
    front: FrontSettings = Field(default_factory=FrontSettings)
    engine: EngineSettings = Field(default_factory=EngineSettings)
    limits: LimitSettings = Field(default_factory=LimitSettings)
    events: EventSettings = Field(default_factory=EventSettings)

    @model_validator(mode="before")
    @classmethod
    def _no_renamed_variables(cls, values: Any) -> Any:
        stale = [
            f"{PREFIX}{old} is now {PREFIX}{new}"
            for old, new in RENAMED.items()
            if f"{PREFIX}{old}" in os.environ
        ]
        if stale:
            raise ValueError("; ".join(stale))
        return values

    @field_validator("bundle", mode="before")
    @classmethod
    def _path_as_text(cls, value: object) -> object:
        return str(value) if isinstance(value, Path) else value

    @field_validator("trusted_keys", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        """Compose passes an unset variable as ""."""
        return None if value == "" else value


def variable(*path: str) -> str:
    """The environment variable of a setting: ``variable("engine", "max_batch")`` is
    ``WALRUS_ENGINE__MAX_BATCH``."""
    return PREFIX + NESTED.join(path).upper()


def fields() -> list[tuple[str, FieldInfo]]:
    """Every setting as (its environment variable, its field), groups in their order."""
    out = []
    for name, field in Settings.model_fields.items():
        group = field.annotation
        if isinstance(group, type) and issubclass(group, Group):
            out += [(variable(name, inner), f) for inner, f in group.model_fields.items()]
        else:
            out.append((variable(name), field))
    return out


def reference() -> str:
    """The settings as docs/deployment.md shows them: one row per variable, from the fields'
    own defaults and descriptions."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, field in fields():
        default = "unset" if field.default in (None, "") else f"`{field.default}`"
        rows.append(f"| `{name}` | {default} | {field.description} |")
    return "\n".join(rows)


class ProcessPlan(NamedTuple):
    """How the service uses the CPUs it may use. Inline mode: ``workers`` processes of
    ``threads`` ONNX and FAISS threads each, never more than ``cpus`` busy threads in all
    (unless the operator asks for it). Process mode: ``workers`` fronts, and one engine with
    ``sessions`` sessions of ``threads`` threads."""

    cpus: int
    workers: int
    threads: int
    sessions: int = 2


def default_workers(cpus: int) -> int:
    """Inline workers when WALRUS_FRONT__WORKERS is 0: one per CPU, each with one ONNX and
    FAISS thread. One process's event loop, batcher and Python code share one GIL, so one
    process tops out well below what its cores can encode; and a second intra-op thread per
    session only spins against the event loop for the same cores. On 2 CPUs, wrk at
    concurrency 1/8/32 (all-distinct queries, requests/s): 1 worker x 2 threads 68/317/452,
    1 x 1 128/444/533, 2 x 1 120/491/689 (docs/benchmarks.md, "Serving")."""
    return max(1, cpus)


def default_fronts(cpus: int) -> int:
    """Fronts when WALRUS_FRONT__WORKERS is 0 in process mode: one per two CPUs
    (docs/benchmarks.md, "Fronts and the engine")."""
    return max(1, cpus // 2)


def process_plan(settings: Settings, cpus: int) -> ProcessPlan:
    front, engine = settings.front, settings.engine
    if settings.mode == "process":
        # One ONNX and FAISS thread per call: the batcher's threads each encode with their
        # own session, in parallel; a second intra-op thread only spins against the event
        # loop (2 CPUs, concurrency 32: 491 requests/s with 2 threads, 820 with 1).
        workers = front.workers or default_fronts(cpus)
        sessions = engine.sessions or max(2, cpus - workers)
        return ProcessPlan(cpus, workers, engine.threads or 1, sessions)
    workers = front.workers or default_workers(cpus)
    threads = engine.threads or max(1, cpus // workers)
    return ProcessPlan(cpus, workers, threads, engine.sessions or 2)


def plan_environment(plan: ProcessPlan) -> dict[str, str]:
    """The resolved plan as the variables every process ``walrus serve`` starts sizes
    itself from."""
    return {
        variable("front", "workers"): str(plan.workers),
        variable("engine", "threads"): str(plan.threads),
        variable("engine", "sessions"): str(plan.sessions),
    }


def main() -> None:
    sys.stdout.write(reference() + "\n")


if __name__ == "__main__":
    main()
