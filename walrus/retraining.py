"""``walrus retrain``: the learning loop's offline half, one command for a scheduler.

1. The events since the last retrain (Redis, or a file ``walrus data events`` wrote) merged
   into the config's interactions (``models.retrain``).
2. The newest slice by time held out; the candidate trained on the rest, WALS warm-started
   from the serving bundle's user factors.
3. The candidate and the serving bundle answer the held-out users through the service's own
   request path (``Recommender``): the serving bundle as it serves them now, folding in
   their events since its training as ``history``, the candidate by user id.
4. Published beside ``current`` only if it is not worse than serving by more than
   ``retrain.tolerance`` on Recall@k and NDCG@k; then an experiment at ``retrain.share``,
   or ``current`` moved with ``retrain.promote``. The report says what was decided, and why.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import redis

from export.bundle import build_bundle
from export.format import resolve_bundle, switch_current
from export.remote import BundleStore, is_remote
from export.runtime import LoadedBundle, load_bundle
from models.config import PipelineConfig
from models.core.errors import WalrusError
from models.data import Dataset, build_dataset, read_catalog, read_interactions
from models.metrics import ranked_metrics
from models.retrain import merge_events, time_split, warm_factors
from models.training import WarmStart, train_all
from service.engine.events import all_events
from service.engine.experiments import ExperimentPlan, new_salt, write_plan
from service.engine.recommender import Recommender
from service.messages import Recommend
from service.settings import Settings

LATEST = "latest.json"  # under output_dir/retrain: the last run's report
BATCH = 256


@dataclass
class Decision:
    """The gate's verdict and what it rested on."""

    published: bool
    reason: str
    candidate: dict[str, float]
    serving: dict[str, float]


@dataclass
class RetrainReport:
    started_at: str
    serving_bundle: str
    candidate_bundle: str | None = None
    events: int = 0
    newest_event: float | None = None
    train_rows: int = 0
    held_out_rows: int = 0
    held_out_users: int = 0
    judged_on: str = ""
    warm_start: bool = False
    seconds: dict[str, float] = field(default_factory=dict)
    decision: Decision | None = None
    action: str = "none"  # experiment, promoted, none

    def write(self, folder: Path) -> None:
        text = json.dumps(asdict(self), indent=2)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "report.json").write_text(text)
        (folder.parent / LATEST).write_text(text)


def read_events(source: str) -> pd.DataFrame:
    """Events as ``user_id, item_id, weight, timestamp``: from Redis (``redis://``) or a CSV
    or Parquet file of those columns."""
    if source.startswith(("redis://", "rediss://", "unix://")):
        try:
            client = redis.Redis.from_url(source, socket_timeout=10)
            rows = [vars(e) for e in all_events(client)]
        except redis.RedisError as exc:
            raise WalrusError(f"--events {source}: {exc}") from None
        columns = ["user_id", "item_id", "weight", "timestamp", "type", "recommendation_id"]
        return pd.DataFrame(rows, columns=columns)
    path = Path(source)
    if not path.exists():
        raise WalrusError(f"--events {source}: no such file (or give a redis:// URL)")
    frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    missing = {"user_id", "item_id", "weight", "timestamp"} - set(frame.columns)
    if missing:
        raise WalrusError(f"--events {source}: missing columns {', '.join(sorted(missing))}")
    if "recommendation_id" not in frame.columns:
        frame["recommendation_id"] = ""
    frame["recommendation_id"] = frame["recommendation_id"].fillna("").astype(str)
    return frame.astype({"user_id": str, "item_id": str})


def sources(
    events: str | None, served: str | None, redis_url: str | None
) -> tuple[str, str | None]:
    """(what to train on, what serving folds in when that is not it): ``--events``, else
    the service's Redis; serving folds in its Redis, unless told otherwise."""
    source = events or redis_url
    if not source:
        raise WalrusError("no events: give --events (a redis:// URL or a file)")
    return source, served or (redis_url if events and redis_url != events else None)


def last_event(output_dir: Path) -> float | None:
    """The newest event the last retrain used (events up to it are trained on)."""
    try:
        report = json.loads((output_dir / "retrain" / LATEST).read_text())
    except (OSError, ValueError):
        return None
    newest = report.get("newest_event")
    return float(newest) if newest is not None else None


def served_metrics(
    bundle: Path, held: pd.DataFrame, history: dict[str, list[str]], k: int
) -> dict[str, float]:
    """Recall@k and NDCG@k of ``bundle``'s answers to the held-out users (``history``:
    each user's events the bundle was not trained on, folded in as serving does)."""
    settings = Settings(bundle=str(bundle), engine={"query_cache_size": 0})
    recommender = Recommender(bundle, settings)
    most = settings.limits.history
    truth = held.groupby("user_id")["item_id"].agg(set)
    users = sorted(truth.index)
    ranked: list[list[str]] = []
    for start in range(0, len(users), BATCH):
        calls = [
            Recommend(user_id=u, history=history.get(u, [])[-most:] or None, k=k)
            for u in users[start : start + BATCH]
        ]
        for answer in recommender.recommend_batch(calls):
            if isinstance(answer, BaseException):
                raise WalrusError(f"{bundle}: {answer}")
            ranked.append([item.item_id for item in answer.items])
    return ranked_metrics(ranked, [truth[u] for u in users], (k,))


def gate(candidate: dict[str, float], serving: dict[str, float], k: int, tol: float) -> Decision:
    worse = [
        f"{m}@{k} {candidate[f'{m}@{k}']:.4f} < {1 - tol:g} x serving's {serving[f'{m}@{k}']:.4f}"
        for m in ("recall", "ndcg")
        if candidate[f"{m}@{k}"] < (1 - tol) * serving[f"{m}@{k}"]
    ]
    if worse:
        return Decision(False, "refused: " + "; ".join(worse), candidate, serving)
    return Decision(True, f"not worse than serving by more than {tol:.0%}", candidate, serving)


def place(candidate: Path, bundles_dir: Path) -> Path:
    """Copy the candidate beside ``current`` (a temporary name, then one rename)."""
    final = bundles_dir / candidate.name
    if not final.exists():
        tmp = bundles_dir / f".{candidate.name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(candidate, tmp)
        tmp.rename(final)
    return final


def publish(cfg: PipelineConfig, candidate: Path, target: str, report: RetrainReport) -> None:
    """Beside ``current`` with an experiment at ``retrain.share``, or as ``current`` with
    ``retrain.promote``. Object storage takes a promotion only: an experiment's plan is a
    local file."""
    if is_remote(target):
        if not cfg.retrain.promote:
            raise WalrusError(
                f"{target}: an experiment needs a local bundles directory; set "
                "retrain.promote = true to publish to object storage as current"
            )
        BundleStore(target).publish(candidate)
        report.action = "promoted"
        return
    bundles_dir = Path(target)
    place(candidate, bundles_dir)
    if cfg.retrain.promote:
        switch_current(bundles_dir, candidate.name)
        write_plan(bundles_dir, None)
        report.action = "promoted"
        return
    plan = ExperimentPlan(candidate.name, cfg.retrain.share, new_salt(), report.started_at)
    write_plan(bundles_dir, plan)
    report.action = "experiment"


def retrain(
    cfg: PipelineConfig,
    events_source: str,
    serving_at: str,
    since: float | None,
    cold: bool,
    say: Callable[[str], None],
    publish_to: str | None = None,
    served_events: str | None = None,
) -> RetrainReport:
    """The whole run; the report (also written under ``output_dir/retrain/<time>/``).
    ``publish_to``: where a candidate that passes goes (default: beside the serving one).
    ``served_events``: what the serving bundle folds in today (its Redis), when that is not
    the events trained on: the gate judges serving as it really serves."""
    if is_remote(serving_at):
        raise WalrusError(f"--serving {serving_at}: give the local bundles folder it serves from")
    serving = resolve_bundle(serving_at)
    folder = cfg.output_dir / "retrain" / time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    report = RetrainReport(time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), serving.name)
    with timed(report.seconds, "events"):
        train, held = gather(cfg, events_source, since, report, say)
    warm = None
    dataset = training_set(cfg, train)
    if cfg.retrain.warm_start and not cold:
        served = load_bundle(serving)
        factors = warm_factors(dataset.users, served.users, served.user_factors)
        warm, report.warm_start = WarmStart(factors, cfg.retrain.warm_iterations), True
    with timed(report.seconds, "train"):
        trained = train_all(cfg, dataset, None, folder / "work", say, warm)
    with timed(report.seconds, "export"):
        candidate = build_bundle(cfg, trained, folder / "bundles", say)
    report.candidate_bundle = candidate.name
    with timed(report.seconds, "evaluate"):
        folded = train[train["event"]]
        if served_events is not None:  # before the held-out slice, as serving saw them
            served = read_events(served_events)
            before = served["timestamp"] < float(held["timestamp"].min())
            folded = served[before & (served["weight"] > 0)]
        history = new_history(folded, load_bundle(serving))
        k = cfg.retrain.k
        report.decision = gate(
            served_metrics(candidate, held, {}, k),
            served_metrics(serving, held, history, k),
            k,
            cfg.retrain.tolerance,
        )
    say(report.decision.reason)
    if report.decision.published:
        with timed(report.seconds, "publish"):
            publish(cfg, candidate, publish_to or str(serving.parent), report)
    report.write(folder)
    return report


def gather(
    cfg: PipelineConfig,
    source: str,
    since: float | None,
    report: RetrainReport,
    say: Callable[[str], None],
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, held out): the events since ``since`` (default: the last retrain's newest)
    merged into the config's interactions, split by time."""
    events = read_events(source)
    since = last_event(cfg.output_dir) if since is None else since
    if since is not None:
        events = events[events["timestamp"] > since]
    if events.empty:
        raise WalrusError(
            f"no events since {since:.0f} (the last retrain's newest): nothing to learn from; "
            "--since sets another start"
            if since is not None
            else f"--events {source}: no events"
        )
    report.events, report.newest_event = len(events), float(events["timestamp"].max())
    say(f"{len(events)} events since {since if since is not None else 'the start'}")
    base = read_interactions(cfg.data.interactions, cfg.data.rating_threshold)
    merged = merge_events(base, events, cfg.retrain.half_life_days)
    train, held, report.judged_on = time_split(merged, cfg.retrain.holdout_fraction)
    report.train_rows, report.held_out_rows = len(train), len(held)
    report.held_out_users = int(held["user_id"].nunique())
    return train, held


def training_set(cfg: PipelineConfig, train: pd.DataFrame) -> Dataset:
    catalog = read_catalog(cfg.data.catalog) if cfg.data.catalog is not None else None
    data = cfg.data
    return build_dataset(train, catalog, data.text_template, data.attributes, data.tag_separator)


@contextmanager
def timed(seconds: dict[str, float], stage: str) -> Iterator[None]:
    """Adds the stage's seconds to ``seconds``."""
    start = time.perf_counter()
    yield
    seconds[stage] = round(time.perf_counter() - start, 3)


def new_history(events: pd.DataFrame, served: LoadedBundle) -> dict[str, list[str]]:
    """Each user's events the serving bundle was not trained on (not in its seen lists),
    oldest first: what serving folds in from Redis for them today."""
    train = events
    rows = served.users.find_all(list(train["user_id"]))
    items = served.items.find_all(list(train["item_id"]))
    n_items = max(len(served.items), 1)
    seen = served.seen
    owners = np.repeat(np.arange(len(seen.indptr) - 1, dtype=np.int64), np.diff(seen.indptr))
    trained = owners * n_items + np.asarray(seen.indices, np.int64)
    pairs = np.where((rows >= 0) & (items >= 0), rows * n_items + items, -1)
    fresh = ~np.isin(pairs, trained)
    new = train[fresh].sort_values("timestamp", kind="stable")
    return {str(u): list(map(str, g["item_id"])) for u, g in new.groupby("user_id", sort=False)}
