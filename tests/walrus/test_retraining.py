"""`walrus retrain` on tiny data, for real: the serving bundle trained on the older part of
the interactions, the rest arriving as timestamped events. A candidate trained on them is
published beside `current` with an experiment; one trained on shuffled data is refused;
nothing is published twice, and bad input is one line and exit 2."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from export.format import resolve_bundle
from service.engine.experiments import read_plan
from tests.support.configs import TINY_TOML
from tests.support.tools import walrus

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def world(synthetic_files: Path, tmp_path_factory):
    """Base interactions (no timestamps), events (the newest 40% of each user's rows, with
    timestamps), a config over the base, and a serving bundle trained on the base only."""
    from export.bundle import build_bundle
    from models.config import load_config
    from models.pipeline import load_dataset
    from models.training import train_all

    out = tmp_path_factory.mktemp("retrain")
    # In a random order: the file lists each user's items by index, and "the newest" must
    # not mean "the highest-numbered items" (those would be cold to the serving bundle).
    frame = pd.read_csv(synthetic_files / "interactions.csv", dtype=str)
    frame = frame.sample(frac=1.0, random_state=0)
    rank = frame.groupby("user_id").cumcount() / frame.groupby("user_id")["item_id"].transform(
        "size"
    )
    late = rank >= 0.6
    data = out / "data"
    data.mkdir()
    frame[~late].to_csv(data / "interactions.csv", index=False)
    shutil.copy(synthetic_files / "catalog.csv", data / "catalog.csv")
    events = frame[late].assign(weight=1.0)
    order = np.random.default_rng(0).permutation(len(events))  # users interleave in time
    events["timestamp"] = 1_700_000_000.0 + order * 60.0
    events.to_csv(out / "events.csv", index=False)
    config = out / "pipeline.toml"
    retrain = "[retrain]\nholdout_fraction = 0.3\nk = 5\n"
    config.write_text(TINY_TOML.format(out=out / "artifacts", data=data) + retrain)
    cfg = load_config(config)
    trained = train_all(cfg, load_dataset(cfg.data), None, cfg.output_dir / "encoder")
    build_bundle(cfg, trained, cfg.bundles_dir)
    return config, cfg.bundles_dir, out


def report_of(bundles: Path) -> dict:
    return json.loads((bundles.parent / "retrain" / "latest.json").read_text())


def test_a_candidate_that_learnt_the_events_is_published_with_an_experiment(world):
    config, bundles, out = world
    serving = resolve_bundle(bundles).name
    run = walrus("retrain", "-c", str(config), "--events", str(out / "events.csv"))
    assert run.returncode == 0, run.stderr
    report = report_of(bundles)
    decision = report["decision"]
    assert decision["published"] and report["action"] == "experiment", decision
    assert report["warm_start"] and report["serving_bundle"] == serving
    assert report["events"] > 0 and report["held_out_users"] > 10
    assert decision["candidate"]["recall@5"] >= 0.98 * decision["serving"]["recall@5"]
    candidate = report["candidate_bundle"]
    assert (bundles / candidate / "manifest.json").exists()
    assert resolve_bundle(bundles).name == serving  # current did not move
    plan = read_plan(bundles)
    assert plan is not None and plan.candidate == candidate and plan.share == 0.1
    # Again: no event is newer than the last retrain's newest: nothing new, exit 2.
    again = walrus("retrain", "-c", str(config), "--events", str(out / "events.csv"))
    assert again.returncode == 2 and "no events since" in again.stderr, again.stderr


def test_a_candidate_trained_on_shuffled_data_is_refused(world, tmp_path):
    """Everything the candidate learns from is shuffled (a bug upstream: items no longer
    match their users): its interactions, and the events older than the held-out slice. The
    held-out events are real, so the gate judges against what users really did next, and
    serving is judged as it serves, folding in the real events (``--served-events``)."""
    config, bundles, out = world
    rng = np.random.default_rng(1)
    base = pd.read_csv(out / "data" / "interactions.csv", dtype=str)
    base["item_id"] = rng.permutation(base["item_id"].to_numpy())
    base.to_csv(tmp_path / "interactions.csv", index=False)
    events = pd.read_csv(out / "events.csv", dtype={"user_id": str, "item_id": str})
    older = events["timestamp"] <= np.quantile(events["timestamp"], 0.7)
    events.loc[older, "item_id"] = rng.permutation(events.loc[older, "item_id"].to_numpy())
    events.to_csv(tmp_path / "events.csv", index=False)
    sabotaged = tmp_path / "sabotaged.toml"
    sabotaged.write_text(
        config.read_text()
        .replace(str(out / "data" / "interactions.csv"), str(tmp_path / "interactions.csv"))
        .replace(str(out / "artifacts"), str(tmp_path / "artifacts"))
    )
    before = sorted(p.name for p in bundles.iterdir())
    plan = read_plan(bundles)
    run = walrus(
        "retrain", "-c", str(sabotaged), "--events", str(tmp_path / "events.csv"),
        "--serving", str(bundles), "--served-events", str(out / "events.csv"),
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    report = json.loads((tmp_path / "artifacts" / "retrain" / "latest.json").read_text())
    assert not report["decision"]["published"] and report["action"] == "none", report
    assert report["decision"]["reason"].startswith("refused: ")
    assert sorted(p.name for p in bundles.iterdir()) == before  # nothing placed
    assert read_plan(bundles) == plan  # no experiment started


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--events", "/no/such/file.csv"], "no such file"),
        (["--events", "redis://127.0.0.1:1/0"], "--events redis://"),
    ],
)
def test_bad_events_are_one_line_and_exit_2(world, args, says):
    config, _bundles, _out = world
    run = walrus("retrain", "-c", str(config), *args)
    assert run.returncode == 2 and says in run.stderr and "Traceback" not in run.stderr
