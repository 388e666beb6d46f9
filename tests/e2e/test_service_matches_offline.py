"""Serving equals the offline pipeline for the same inputs: same ids, scores within 1e-4.

Offline: PyTorch encoder, numpy head, exact numpy search (what `walrus eval` runs).
Online: the HTTP service with ONNX and FAISS.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.support.offline import CASES, offline, request_body
from tests.support.tools import auto_precision


@pytest.mark.parametrize(
    "case", CASES, ids=lambda c: "+".join(sorted(k for k in c if k != "k")) or "nothing"
)
def test_service_equals_offline(client, tiny_trained, case):
    response = client.post("/v1/recommend", json=request_body(tiny_trained, case)).json()
    ids, scores, sources = offline(tiny_trained, case)
    assert [it["item_id"] for it in response["items"]] == ids
    np.testing.assert_allclose([it["score"] for it in response["items"]], scores, atol=1e-4)
    assert [it["sources"] for it in response["items"]] == sources


def test_concurrent_clients_get_what_they_get_alone(server, tiny_trained):
    """Dynamic batching on: many clients at once, each answer equals the sequential one."""
    import concurrent.futures

    import httpx

    users = tiny_trained.dataset_users.ids
    bodies = []
    for i in range(48):
        body: dict = {"k": 5 + i % 4}
        if i % 3 != 1:
            body["user_id"] = users[i % len(users)]
        if i % 2 == 0:
            body["query"] = ["space robots", "quiet drama", "jazz night", f"story {i}"][i % 4]
        if i % 5 == 0:
            body["exclude_seen"] = False
        if i % 7 == 0:
            body["history"] = ["i2", "i5"]
        bodies.append(body)
    with httpx.Client(base_url=server.url, timeout=30) as c:
        alone = [c.post("/v1/recommend", json=b).json() for b in bodies]

    def call(body: dict) -> dict:
        with httpx.Client(base_url=server.url, timeout=30) as c:
            return c.post("/v1/recommend", json=body).json()

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        together = list(pool.map(call, bodies * 3))
    for i, got in enumerate(together):
        want = alone[i % len(bodies)]
        assert [it["item_id"] for it in got["items"]] == [it["item_id"] for it in want["items"]]
        np.testing.assert_allclose(
            [it["score"] for it in got["items"]], [it["score"] for it in want["items"]], atol=1e-5
        )
    metrics = httpx.get(f"{server.url}/metrics").text
    count = float(
        next(
            ln.split()[-1]
            for ln in metrics.splitlines()
            if ln.startswith("walrus_batch_size_count")
        )
    )
    total = float(
        next(
            ln.split()[-1] for ln in metrics.splitlines() if ln.startswith("walrus_batch_size_sum")
        )
    )
    assert total > count, "no request was ever served in a batch of more than one"


@pytest.mark.parametrize(
    "case", CASES, ids=lambda c: "+".join(sorted(k for k in c if k != "k")) or "nothing"
)
def test_defaults_with_an_approximate_index_equal_offline(served_defaults, tiny_trained, case):
    import httpx

    from export.format import read_manifest
    from export.runtime import OnnxTextEncoder

    srv, bundle = served_defaults
    manifest = read_manifest(bundle)
    assert {e.kind for e in manifest.indexes.values()} == {"hnsw"}
    assert all("efSearch" in e.search_params for e in manifest.indexes.values())
    ready = httpx.get(f"{srv.url}/readyz").json()
    precision = auto_precision()
    assert ready["encoder_precision"] == precision
    served_encoder = OnnxTextEncoder(
        bundle / f"encoder.{precision}.onnx", bundle / "tokenizer.json", 32
    )
    body = request_body(tiny_trained, case)
    response = httpx.post(f"{srv.url}/v1/recommend", json=body, timeout=30).json()
    ids, scores, sources = offline(tiny_trained, case, served_encoder.encode)
    assert [it["item_id"] for it in response["items"]] == ids
    np.testing.assert_allclose([it["score"] for it in response["items"]], scores, atol=1e-4)
    assert [it["sources"] for it in response["items"]] == sources
