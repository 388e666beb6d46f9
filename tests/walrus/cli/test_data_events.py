"""`walrus data events`: the events a real Redis holds, as interactions training reads."""

from __future__ import annotations

import pandas as pd

from models.data.io import read_interactions
from service.engine.events import EventStore, StoredEvent
from tests.support.redis import redis_or_skip
from tests.support.tools import walrus


def test_events_export_as_interactions_alone_and_after_a_base_file(tmp_path):
    with redis_or_skip(tmp_path).start() as server:
        store = EventStore(server.url, 10, 60, timeout_s=1, breaker_s=1)
        store.append(
            [
                StoredEvent("u1", "i1", 2.0, 100.0),
                StoredEvent("u1", "i2", 1.0, 101.0),
                StoredEvent("new user", "i3", 1.0, 102.0),
            ]
        )
        run = walrus("data", "events", "--redis-url", server.url, "--out", str(tmp_path / "e.csv"))
        assert run.returncode == 0, run.stderr
        exported = read_interactions(tmp_path / "e.csv")
        rows = sorted(zip(exported.user_id, exported.item_id, exported.weight, strict=True))
        assert rows == [("new user", "i3", 1.0), ("u1", "i1", 2.0), ("u1", "i2", 1.0)]
        base = tmp_path / "interactions.csv"
        pd.DataFrame({"user_id": ["u9"], "item_id": ["i1"]}).to_csv(base, index=False)
        merged_path = tmp_path / "merged.csv"
        run = walrus(
            "data", "events", "--redis-url", server.url, "--out", str(merged_path),
            "--merge-with", str(base),
        )  # fmt: skip
        assert run.returncode == 0, run.stderr
        merged = pd.read_csv(merged_path)
        assert list(merged.columns) == ["user_id", "item_id"] and len(merged) == 4
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    run = walrus("data", "events", "--redis-url", server.url, "--out", str(tmp_path / "x.csv"))
    assert run.returncode == 2 and len(run.stderr.strip().splitlines()) == 1
    assert "--redis-url" in run.stderr and not (tmp_path / "x.csv").exists()
