"""What ``walrus retrain`` does to data, before any model: merge the events since the last
training into the base interactions (weights per type were set when each event was taken;
optional time decay), hold out the newest slice by time, and the warm start's factors.

Time is the honest split for a model that will serve the future: the slice it is judged on
happened after everything it learnt from.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from models.core.errors import WalrusError
from models.core.ids import CompactIds, IdMap

DAY_S = 86_400.0


class RetrainError(WalrusError):
    """Data retraining cannot use (no timestamps to split by, nothing new)."""


def merge_events(base: pd.DataFrame, events: pd.DataFrame, half_life_days: float) -> pd.DataFrame:
    """``base`` (``user_id, item_id, weight[, timestamp]``) and ``events`` (the same, with a
    timestamp, and a ``recommendation_id`` when an answer led to it) as one frame; a base row
    without a timestamp is older than every event. With ``half_life_days``, every weight is
    multiplied by 0.5 ** (age / half-life), the age counted back from the newest event. The
    same (user, item) twice: weights summed, the latest timestamp kept, as
    ``read_interactions`` merges them. ``event``: any of the row came from the events;
    ``organic``: none of it came from an answer (no ``recommendation_id``)."""
    columns = ["user_id", "item_id", "weight", "timestamp", "event", "organic"]
    base = base.assign(timestamp=base.get("timestamp", np.nan), event=False, organic=True)
    events = events[events["weight"] > 0]  # exposures (impressions) are no interactions
    led = events.get("recommendation_id", pd.Series("", index=events.index)).fillna("")
    events = events.assign(event=True, organic=led.astype(str) == "")
    frame = pd.concat([base[columns], events[columns]], ignore_index=True)
    if half_life_days > 0 and len(events):
        newest = float(events["timestamp"].max())
        age = (newest - frame["timestamp"].fillna(frame["timestamp"].min())) / DAY_S
        frame["weight"] = frame["weight"] * np.power(0.5, age.clip(lower=0) / half_life_days)
    merged = frame.groupby(["user_id", "item_id"], sort=False, as_index=False).agg(
        weight=("weight", "sum"),
        timestamp=("timestamp", "max"),
        event=("event", "max"),
        organic=("organic", "min"),
    )
    merged.attrs["has_weight"] = True
    return merged


ORGANIC = "organic events (no answer led to them)"
LED = (
    "all events: none was organic, so the slice holds what the serving bundle showed, "
    "which favours it"
)


def time_split(frame: pd.DataFrame, fraction: float) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """(train, held out, what it was judged on). The newest ``fraction`` of the timestamped
    organic rows is held out, for users the train part knows: a model is judged on what
    users did of their own accord, not on what the serving bundle showed them (its own
    answers would favour it). Rows after the cut that an answer led to are dropped: they
    are neither the past nor the judge. Without organic rows, all timestamped rows."""
    stamped = frame[frame["timestamp"].notna()]
    if stamped.empty:
        raise RetrainError("no timestamps to split by: events and interactions need them")
    judged = stamped[stamped["organic"]] if stamped["organic"].any() else stamped
    cut = float(np.quantile(judged["timestamp"].to_numpy(), 1 - fraction))
    late = frame["timestamp"] > cut
    train = frame[~late]
    held = frame[late & frame.index.isin(judged.index)]
    held = held[held["user_id"].isin(set(train["user_id"]))]
    if held.empty:
        raise RetrainError(f"nothing held out after {cut:.0f}: raise retrain.holdout_fraction")
    for part in (train, held):
        part.attrs["has_weight"] = True
    label = ORGANIC if judged is not stamped else LED
    return train.reset_index(drop=True), held.reset_index(drop=True), label


def warm_factors(users: IdMap, known: CompactIds, factors: np.ndarray) -> np.ndarray:
    """(len(users), dim) start factors: a user ``known`` has, its row of ``factors``; a new
    user, NaN (``WALS.fit`` starts it at random)."""
    out = np.full((len(users), factors.shape[1]), np.nan, dtype=np.float32)
    rows = known.find_all(users.ids)
    found = rows >= 0
    out[found] = factors[rows[found]]
    return out
