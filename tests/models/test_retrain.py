"""What retraining does to data: events merged into the base (weights, decay, exposures
left out), the split by time judged on organic events, the warm start's factors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models.core.ids import CompactIds, IdMap
from models.retrain import LED, ORGANIC, RetrainError, merge_events, time_split, warm_factors


def frame(rows: list[tuple]) -> pd.DataFrame:
    return pd.DataFrame(
        rows, columns=["user_id", "item_id", "weight", "timestamp", "recommendation_id"]
    )


BASE = pd.DataFrame({"user_id": ["u1", "u2"], "item_id": ["a", "b"], "weight": [1.0, 1.0]})


def test_events_merge_with_weights_summed_decay_and_no_exposures():
    events = frame([
        ("u1", "a", 1.0, 100.0, ""),  # the base pair again: weights summed
        ("u1", "c", 0.0, 200.0, "r1"),  # an impression: no interaction
        ("u2", "c", 4.0, 100.0 + 86_400.0, "r2"),
    ])  # fmt: skip
    merged = merge_events(BASE, events, half_life_days=1.0).set_index(["user_id", "item_id"])
    assert ("u1", "c") not in merged.index
    # Ages from the newest event: a day back halves; a base row counts as the oldest.
    assert merged.loc[("u2", "c"), "weight"] == pytest.approx(4.0)
    assert merged.loc[("u1", "a"), "weight"] == pytest.approx(0.5 + 0.5)
    assert merged.loc[("u1", "a"), "organic"] and not merged.loc[("u2", "c"), "organic"]
    assert merged.loc[("u1", "a"), "event"] and not merged.loc[("u2", "b"), "event"]


def test_the_split_judges_on_organic_events_and_drops_later_led_ones():
    rows = [
        (f"u{u}", f"i{t}", 1.0, float(t), "" if t % 2 else f"r{t}")
        for u in range(3)
        for t in range(10)
    ]
    merged = merge_events(BASE, frame(rows), half_life_days=0.0)
    train, held, judged = time_split(merged, fraction=0.4)
    assert judged == ORGANIC
    assert held["organic"].all() and len(held) > 0
    cut = held["timestamp"].min()
    assert (train["timestamp"].fillna(-1) < cut).all()  # nothing from after the cut trains
    assert not ((train["timestamp"] > train["timestamp"].max()) & ~train["organic"]).any()
    led = merge_events(BASE, frame([(u, i, w, t, "r") for u, i, w, t, _ in rows]), 0.0)
    assert time_split(led, 0.4)[2] == LED  # nothing organic: say what it was judged on
    with pytest.raises(RetrainError, match="no timestamps"):
        time_split(merge_events(BASE, frame([]), 0.0), 0.4)


def test_the_warm_start_takes_known_users_rows_and_leaves_new_ones_nan():
    factors = np.arange(6, dtype=np.float32).reshape(3, 2)
    out = warm_factors(IdMap(["b", "new", "a"]), CompactIds(["a", "b", "c"]), factors)
    np.testing.assert_array_equal(out[[0, 2]], factors[[1, 0]])
    assert np.isnan(out[1]).all()
