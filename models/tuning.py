"""``walrus tune``: hyper-parameters chosen on a validation split carved from the training data.

Two Optuna studies (TPE, seeded), both scored by ``tune.metric`` on a validation split carved
from the training part of the evaluation's ``holdout`` split (``validation_split``), never on
a test split:

1. WALS: ``dim``, ``regularization``, ``unobserved_weight`` and ``regularization_exp``,
   scored by WALS alone (the evaluation's ``wals`` model), a second or so per trial on
   MovieLens.
2. The head, on top of the best WALS: ``loss``, ``learning_rate``, ``weight_decay`` and
   ``cold_item_share``, scored by the hybrid as served (``models.evaluation.hybrid_model``:
   the training pipeline's own ``train_hybrid`` and ``recommend``).

The result is the input config with the best values written in, which every other command
takes, and a report (a table of every trial and a plot).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import optuna

from models.config import PipelineConfig
from models.data.splits import Split, holdout_split
from models.evaluation import EvalContext, ModelFactory, Shared, hybrid_model, wals_model
from models.metrics import evaluate_scores
from models.pipeline import make_split

log = logging.getLogger(__name__)


@dataclass
class Study:
    """One study's trials (``number``, ``params``, ``value``) and its best parameters."""

    name: str
    trials: list[dict[str, Any]]
    best: dict[str, Any]
    best_value: float


def validation_split(shared: Shared) -> Split:
    """What every trial is scored on: a per-user holdout (``tune.validation_fraction``) of
    the *training* part of the evaluation's ``holdout`` split, so the values chosen have
    never seen that split's test interactions (and ``walrus eval`` cannot flatter them)."""
    cfg = shared.cfg
    train = make_split(shared.dataset, "holdout", cfg.split).train
    split = holdout_split(train, cfg.tune.validation_fraction, seed=cfg.tune.seed)
    return Split("validation", split.train, split.test)


def score(shared: Shared, split: Split, factory: ModelFactory) -> float:
    """``tune.metric`` of one model on the validation split."""
    cfg = shared.cfg
    k = int(cfg.tune.metric.split("@")[1])
    metrics = evaluate_scores(factory(EvalContext(shared, split)), split.train, split.test, (k,))
    return float(metrics[cfg.tune.metric])


def with_params(cfg: PipelineConfig, section: str, params: dict[str, Any]) -> PipelineConfig:
    """A copy of ``cfg`` with ``params`` set in ``section`` (validated)."""
    out = cfg.model_copy(deep=True)
    for key, value in params.items():
        setattr(getattr(out, section), key, value)
    return out


def wals_params(trial: optuna.Trial, cfg: PipelineConfig) -> dict[str, Any]:
    space = cfg.tune
    return {
        "dim": trial.suggest_categorical("dim", space.dims),
        "regularization": trial.suggest_float("regularization", *space.regularization, log=True),
        "unobserved_weight": trial.suggest_float(
            "unobserved_weight", *space.unobserved_weight, log=True
        ),
        "regularization_exp": trial.suggest_float("regularization_exp", *space.regularization_exp),
    }


def head_params(trial: optuna.Trial, cfg: PipelineConfig) -> dict[str, Any]:
    space = cfg.tune
    return {
        "loss": trial.suggest_categorical("loss", ["softmax", "bpr"]),
        "learning_rate": trial.suggest_float("learning_rate", *space.learning_rate, log=True),
        "weight_decay": trial.suggest_float("weight_decay", *space.weight_decay, log=True),
        "cold_item_share": trial.suggest_float("cold_item_share", *space.cold_item_share),
    }


def clamp(value: float, bounds: tuple[float, float]) -> float:
    return min(max(value, bounds[0]), bounds[1])


def run_study(
    name: str,
    n_trials: int,
    seed: int,
    objective: Callable[[optuna.Trial], float],
    baseline: dict[str, Any],
    on_trial: Callable[[str, int, float], None],
) -> Study:
    """A TPE study whose first trial is ``baseline`` (the config's own values), so the best
    is never worse than what the config had on the validation split."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    study.enqueue_trial(baseline)
    study.optimize(
        objective,
        n_trials=n_trials,
        callbacks=[lambda s, t: on_trial(name, t.number, float(t.value or 0.0))],
    )
    trials = [
        {"number": t.number, "params": t.params, "value": float(t.value)}
        for t in study.trials
        if t.value is not None
    ]
    return Study(name, trials, study.best_params, float(study.best_value))


def tune(
    shared: Shared, on_trial: Callable[[str, int, float], None] = lambda *_: None
) -> tuple[PipelineConfig, list[Study]]:
    """Both studies; returns the config with the best values and the studies."""
    cfg = shared.cfg
    split = validation_split(shared)

    def wals_objective(trial: optuna.Trial) -> float:
        trial_cfg = with_params(cfg, "wals", wals_params(trial, cfg))
        return score(shared.with_config(trial_cfg), split, wals_model)

    space = cfg.tune
    baseline = {
        "dim": min(space.dims, key=lambda d: abs(d - cfg.wals.dim)),
        "regularization": clamp(cfg.wals.regularization, space.regularization),
        "unobserved_weight": clamp(cfg.wals.unobserved_weight, space.unobserved_weight),
        "regularization_exp": clamp(cfg.wals.regularization_exp, space.regularization_exp),
    }
    wals = run_study(
        "wals", cfg.tune.wals_trials, cfg.tune.seed, wals_objective, baseline, on_trial
    )
    best = with_params(cfg, "wals", wals.best)
    studies = [wals]
    if cfg.tune.head_trials > 0:
        shared.text  # noqa: B018 -- built once here, shared by every trial's config

        def head_objective(trial: optuna.Trial) -> float:
            trial_cfg = with_params(best, "head", head_params(trial, best))
            return score(shared.with_config(trial_cfg), split, hybrid_model)

        hc = best.head
        start = {
            "loss": hc.loss,
            "learning_rate": clamp(hc.learning_rate, space.learning_rate),
            "weight_decay": clamp(hc.weight_decay, space.weight_decay),
            "cold_item_share": clamp(hc.cold_item_share, space.cold_item_share),
        }
        head = run_study("head", space.head_trials, space.seed, head_objective, start, on_trial)
        best = with_params(best, "head", head.best)
        studies.append(head)
    return best, studies
