"""A live catalog through a real service: `walrus bundle update` while requests flow; the
poll swaps the new version in; added items are found by their words and by /similar, and a
withdrawn item never comes back in any answer served from the new version."""

from __future__ import annotations

import concurrent.futures
import csv
import threading

import httpx
import pytest

from tests.support.bundles import NEW, bundles_of
from tests.support.servers import Server, eventually
from tests.support.tools import walrus

pytestmark = pytest.mark.slow


def test_items_added_and_withdrawn_under_load(tiny_bundle, tmp_path):
    root = bundles_of(tiny_bundle, tmp_path)
    with Server(root, WALRUS_ENGINE__RELOAD_INTERVAL_S="0.2") as srv:
        srv.wait()
        client = httpx.Client(base_url=srv.url, timeout=30)
        old_id = client.get("/readyz").json()["bundle_id"]
        popular = [
            i["item_id"] for i in client.post("/v1/recommend", json={"k": 10}).json()["items"]
        ]
        gone = popular[:3]
        bodies = [{"k": 10}, {"k": 10, "query": "space robots"}, {"k": 10, "user_id": "u3"}]
        stop = threading.Event()

        def load() -> list[tuple[str, list[str], int]]:
            seen = []
            with httpx.Client(base_url=srv.url, timeout=30) as c:
                while not stop.is_set():
                    for body in bodies:
                        r = c.post("/v1/recommend", json=body)
                        items = [i["item_id"] for i in r.json().get("items", [])]
                        seen.append((r.json().get("bundle_id", ""), items, r.status_code))
            return seen

        add = tmp_path / "add.csv"
        with add.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(NEW[0]))
            writer.writeheader()
            writer.writerows(NEW)
        (tmp_path / "gone.txt").write_text("\n".join(gone))
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            running = [pool.submit(load) for _ in range(2)]
            run = walrus(
                "bundle", "update", "--bundles", str(root), "--add", str(add),
                "--remove", str(tmp_path / "gone.txt"),
            )  # fmt: skip
            assert run.returncode == 0, run.stderr
            eventually(lambda: client.get("/readyz").json()["bundle_id"] != old_id, 30, "reload")
            for _ in range(20):  # more load on the new version
                client.post("/v1/recommend", json={"k": 10})
            stop.set()
            answers = [a for f in running for a in f.result()]
        assert {status for _, _, status in answers} == {200}
        new_id = client.get("/readyz").json()["bundle_id"]
        on_new = [items for bundle, items, _ in answers if bundle == new_id]
        assert on_new and not any(set(items) & set(gone) for items in on_new)
        found = client.post("/v1/recommend", json={"k": 5, "query": "zanzibar quokka submarine"})
        assert {"new-1", "new-2"} <= {i["item_id"] for i in found.json()["items"][:2]}
        similar = client.get("/v1/items/new-1/similar", params={"k": 3}).json()
        assert similar["source"] == "text" and similar["items"][0]["item_id"] == "new-2"
        assert client.get(f"/v1/items/{gone[0]}/similar").status_code == 404
