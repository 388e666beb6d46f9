"""``walrus tune`` and ``walrus eval --report`` as a user runs them, on the tiny data."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from models.config import ConfigError, load_config, write_config


def walrus(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "walrus.cli", *args], capture_output=True, text=True, timeout=900
    )


def tune(config, out, report, *settings: str) -> subprocess.CompletedProcess[str]:
    """`walrus tune -c CONFIG --out OUT --report REPORT --set S...`."""
    sets = [arg for setting in settings for arg in ("--set", setting)]
    return walrus("tune", "-c", str(config), "--out", str(out), "--report", str(report), *sets)


def test_write_config_round_trips_and_keeps_only_what_differs(tiny_pipeline_config, tmp_path):
    cfg = load_config(tiny_pipeline_config, ["wals.regularization=2.5", "head.loss=bpr"])
    out = tmp_path / "tuned.toml"
    write_config(cfg, out, "first line\nsecond line")
    text = out.read_text()
    assert text.startswith("# first line\n# second line\n")
    assert "cold_every" not in text  # defaults are left out
    assert load_config(out) == cfg


def test_tune_ranges_are_checked(tiny_pipeline_config):
    with pytest.raises(ConfigError, match=r"tune\.regularization"):
        load_config(tiny_pipeline_config, ["tune.regularization=[0, 1]"])
    with pytest.raises(ConfigError, match="must be 1"):
        load_config(tiny_pipeline_config, ["head.query_share=0.9"])


def test_tune_writes_a_config_with_the_best_trial_and_a_report(tiny_pipeline_config, tmp_path):
    """Both studies run; the first trial of each is the config's own values, the written
    config carries the best trial's values, and the report lists every trial."""
    out, report = tmp_path / "tuned.toml", tmp_path / "report"
    run = tune(
        tiny_pipeline_config,
        out,
        report,
        "tune.wals_trials=4",
        "tune.head_trials=2",
        "tune.dims=[4,8]",
    )
    assert run.returncode == 0, run.stderr
    tuned, before = load_config(out), load_config(tiny_pipeline_config)
    trials = {}
    for study in ("wals", "head"):
        md = (report / study / "tuning.md").read_text()
        assert (report / study / "tuning.png").stat().st_size > 1000
        rows = [line for line in md.splitlines() if line.startswith("| ") and "trial" not in line]
        assert len(rows) == {"wals": 4, "head": 2}[study]
        trials[study] = rows
    best_wals = trials["wals"][0].split("|")[2:6]  # best first: dim, λ, w0, exp
    assert int(best_wals[0]) == tuned.wals.dim
    assert float(best_wals[1]) == pytest.approx(tuned.wals.regularization, rel=1e-3)
    assert tuned.wals.iterations == before.wals.iterations  # not searched: kept
    assert tuned.head.hidden == 128 and tuned.data == before.data
    baseline = next(r for r in trials["wals"] if r.startswith("| 0 |"))
    assert int(baseline.split("|")[2]) == before.wals.dim  # trial 0: the config's values


def test_tune_bad_config_is_one_line_and_exit_2(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[data]\ninteractions = "x.csv"\n[tune]\nwals_trials = 0\n')
    run = walrus("tune", "-c", str(bad))
    assert run.returncode == 2
    assert run.stderr.strip().count("\n") == 0 and "tune.wals_trials" in run.stderr


def test_eval_report_has_curves_tables_and_importances(tiny_pipeline_config, tmp_path):
    report, js = tmp_path / "report", tmp_path / "eval.json"
    run = walrus(
        "eval",
        "-c",
        str(tiny_pipeline_config),
        "--report",
        str(report),
        "--json",
        str(js),
        "--set",
        'eval.splits=["holdout"]',
        "--models",
        "wals,hybrid",
    )
    assert run.returncode == 0, run.stderr
    md = (report / "report.md").read_text()
    for png in ("recall.png", "ndcg.png", "importances.png"):
        assert (report / png).stat().st_size > 1000 and f"({png})" in md
    results = json.loads(js.read_text())["results"]
    hybrid = next(r for r in results if r["model"] == "hybrid")
    assert f"| holdout | hybrid | {hybrid['recall@10']:.4f} |" in md
    importances = hybrid["importances"]
    from models.core.features import FEATURES

    assert list(importances) == list(FEATURES)
    assert np.isfinite(list(importances.values())).all()
    assert any(abs(v) > 0 for v in importances.values())
    assert "| user_known |" in md


def _pairs(matrix) -> set[tuple[int, int]]:
    coo = matrix.tocoo()
    return set(zip(coo.row.tolist(), coo.col.tolist(), strict=True))


def test_eval_tune_never_scores_or_fits_a_test_pair(tiny_pipeline_config, monkeypatch):
    """``walrus eval --tune``'s tuner, spied on: every matrix a trial fits on or is scored
    against comes from the split's training part, and the values it returns are recorded
    as tuned on exactly that part."""
    import models.tuning as tuning
    from models.evaluation import MODELS, Shared, evaluate
    from models.pipeline import load_dataset, make_split

    cfg = load_config(
        tiny_pipeline_config, ["tune.wals_trials=3", "tune.head_trials=1", "tune.dims=[4]"]
    )
    dataset = load_dataset(cfg.data)
    split = make_split(dataset, "holdout", cfg.split)
    test = _pairs(split.test)
    seen: list[set[tuple[int, int]]] = []
    fit, score = tuning.fit_wals, tuning.evaluate_scores
    monkeypatch.setattr(
        tuning, "fit_wals", lambda c, m, *a, **kw: (seen.append(_pairs(m)), fit(c, m, *a, **kw))[1]
    )
    monkeypatch.setattr(
        tuning,
        "evaluate_scores",
        lambda fn, known, target, ks: (
            seen.extend([_pairs(known), _pairs(target)]),
            score(fn, known, target, ks),
        )[1],
    )
    tuned: dict = {}
    rows = evaluate(
        Shared(cfg, dataset), [split], {"wals": MODELS["wals"]}, tuner=tuning.per_split_tuner(tuned)
    )
    assert len(seen) >= 3 * 3 and all(pairs and not pairs & test for pairs in seen)
    assert all(pairs <= _pairs(split.train) for pairs in seen)
    assert tuned["holdout"].tuned_on.fingerprint == tuning.fingerprint(split.train)
    assert tuned["holdout"].tuned_on.interactions == split.train.nnz
    assert rows[0]["split"] == "holdout" and rows[0]["recall@10"] >= 0


def test_tune_carves_its_validation_split_from_all_the_data(tiny_pipeline_config, tmp_path):
    """`walrus tune` chooses values for a model of all the data: its [tuned_on] names the
    whole matrix (not a holdout split's training part), and walrus eval says the figures
    are then optimistic."""
    from models.pipeline import load_dataset, make_split, observed
    from models.tuning import fingerprint, provenance

    out = tmp_path / "tuned.toml"
    run = tune(
        tiny_pipeline_config,
        out,
        tmp_path / "r",
        "tune.wals_trials=2",
        "tune.head_trials=0",
        "tune.dims=[4]",
    )
    assert run.returncode == 0, run.stderr
    tuned = load_config(out)
    dataset = load_dataset(tuned.data)
    whole = observed(dataset)
    assert tuned.tuned_on.fingerprint == fingerprint(whole)
    assert tuned.tuned_on.interactions == whole.nnz and tuned.tuned_on.wals_trials == 2
    assert "[tuned_on]" in out.read_text()
    holdout = make_split(dataset, "holdout", tuned.split)
    said = provenance(tuned, whole, {"holdout": holdout.train})
    assert "optimistic" in said and "--tune" in said
    inside = tuned.model_copy(deep=True)
    inside.tuned_on.fingerprint = fingerprint(holdout.train)
    assert "leak-free" in provenance(inside, whole, {"holdout": holdout.train})
    assert "no [tuned_on]" in provenance(load_config(tiny_pipeline_config), whole, {})


def test_a_pruned_trial_is_marked_and_never_chosen(tiny_pipeline_config, tmp_path):
    """With pruning, trials trailing the median stop early: the report marks them and the
    written values are a completed trial's."""
    out, report = tmp_path / "tuned.toml", tmp_path / "report"
    run = tune(
        tiny_pipeline_config,
        out,
        report,
        "tune.wals_trials=24",
        "tune.head_trials=0",
        "tune.dims=[2,8]",
    )
    assert run.returncode == 0, run.stderr
    md = (report / "wals" / "tuning.md").read_text()
    rows = [ln for ln in md.splitlines() if ln.startswith("| ") and "trial" not in ln]
    pruned = [r for r in rows if "(pruned)" in r]
    assert pruned and len(pruned) < len(rows)
    assert "(pruned)" not in rows[0]  # the best row: a completed trial
    assert int(rows[0].split("|")[2]) == load_config(out).wals.dim


def test_the_movielens_config_says_where_its_values_were_chosen():
    """configs/movielens.toml's values come from `walrus tune` on all of the converted data
    ([tuned_on]), and the figures its header quotes are that record's."""
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "configs/movielens.toml"
    cfg, text = load_config(path), path.read_text()
    t = cfg.tuned_on
    assert t is not None and t.data == str(cfg.data.interactions)
    assert t.wals_trials == cfg.tune.wals_trials and t.head_trials == cfg.tune.head_trials
    assert f"tuned WALS {t.wals_validation_value:.4f}" in text
    assert f"the hybrid {t.head_validation_value:.4f}" in text
