"""The HTTP service against a real uvicorn process: every request kind, limits, errors."""

from __future__ import annotations

import concurrent.futures
import json
import shutil
import subprocess
import sys

import httpx
import numpy as np
import pytest

from export.format import FORMAT_VERSION, writable_copy
from export.runtime import faiss_gpu_count
from tests.support.servers import Server, eventually, metric


def bundle_users(bundle):
    return json.loads((bundle / "user_ids.json").read_text())


def seen_of(bundle, user: str) -> set[str]:
    items = json.loads((bundle / "item_ids.json").read_text())
    indptr = np.load(bundle / "seen_indptr.npy")
    indices = np.load(bundle / "seen_indices.npy")
    u = bundle_users(bundle).index(user)
    return {items[i] for i in indices[indptr[u] : indptr[u + 1]]}


def post(client, **body):
    return client.post("/v1/recommend", json=body)


def test_known_user(client, tiny_bundle):
    user = bundle_users(tiny_bundle)[0]
    r = post(client, user_id=user, k=5)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["user_known"] is True and len(body["items"]) == 5
    assert any("wals" in it["sources"] for it in body["items"])
    assert not {it["item_id"] for it in body["items"]} & seen_of(tiny_bundle, user)
    scores = [it["score"] for it in body["items"]]
    assert scores == sorted(scores, reverse=True)
    assert body["bundle_id"] == tiny_bundle.name
    assert {"ann", "rerank", "total"} <= set(body["timings_ms"])


def test_query_only_is_text(client):
    body = post(client, query="space robots", k=4).json()
    assert body["user_known"] is False and len(body["items"]) == 4
    assert all(it["sources"] == ["text"] for it in body["items"])
    assert "encode" in body["timings_ms"]


def test_user_and_query(client, tiny_bundle):
    user = bundle_users(tiny_bundle)[1]
    body = post(client, user_id=user, query="space robots", k=10).json()
    sources = {s for it in body["items"] for s in it["sources"]}
    assert sources <= {"wals", "text"} and len(body["items"]) == 10


def test_history_fold_in_for_unknown_user(client):
    body = post(client, user_id="nobody", history=["i1", "i2", "i3"], k=6).json()
    assert body["user_known"] is False and len(body["items"]) == 6
    assert not {it["item_id"] for it in body["items"]} & {"i1", "i2", "i3"}
    assert any("wals" in it["sources"] for it in body["items"])
    assert "fold_in" in body["timings_ms"]
    assert any("nobody" in w for w in body["warnings"])


def test_nothing_is_popularity(client, tiny_bundle):
    body = post(client, k=5).json()
    items = json.loads((tiny_bundle / "items.json").read_text())
    popular = sorted(items, key=lambda it: (-it["popularity"], items.index(it)))[:5]
    assert [it["item_id"] for it in body["items"]] == [it["item_id"] for it in popular]
    assert all(it["sources"] == ["popular"] for it in body["items"])


def test_exclusions_still_give_exactly_k(client, tiny_bundle):
    user = bundle_users(tiny_bundle)[0]
    first = post(client, user_id=user, k=30).json()["items"]
    exclude = [it["item_id"] for it in first[:25]]
    body = post(client, user_id=user, k=10, exclude=exclude).json()
    got = [it["item_id"] for it in body["items"]]
    assert len(got) == 10 and not set(got) & set(exclude)


def test_k_larger_than_catalog_returns_what_exists(client, tiny_bundle):
    n_items = len(json.loads((tiny_bundle / "items.json").read_text()))
    body = post(client, query="robots", k=100, exclude=["i0", "i1"]).json()
    assert len(body["items"]) == n_items - 2


def test_unknown_ids_are_warnings(client):
    r = post(client, history=["i1", "zzz"], exclude=["nope"], k=3)
    assert r.status_code == 200
    warnings = " ".join(r.json()["warnings"])
    assert "'zzz'" in warnings and "'nope'" in warnings


@pytest.mark.parametrize(
    "body, field",
    [
        ({"k": 0}, "k"),
        ({"k": 101}, "k"),
        ({"k": "5"}, "k"),
        ({"k": 2.5}, "k"),
        ({"query": ""}, "query"),
        ({"query": "x" * 600}, "query"),
        ({"query": 5}, "query"),
        ({"history": "i1"}, "history"),
        ({"history": ["i1"] * 51}, "history"),
        ({"exclude": [1, 2]}, "exclude"),
        ({"exclude_seen": "yes"}, "exclude_seen"),
        ({"user": "typo"}, "user"),
    ],
)
def test_bad_input_is_422_naming_the_field(client, body, field):
    r = post(client, **body)
    assert r.status_code == 422, r.text
    locs = [d["loc"] for d in r.json()["detail"]]
    assert any(field in loc for loc in locs), locs


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (rb'{"query": "\ud800 a"}', "query"),  # a lone surrogate: valid JSON, not valid text
        (rb'{"user_id": "\udfff"}', "user_id"),
        (rb'{"history": ["i1", "\ud800"]}', "history"),
        (rb'{"exclude": ["\udc00"]}', "exclude"),
        (rb'{"k": 1e999}', "k"),  # beyond the float range: FastAPI's own 422 could not render it
        (rb'{"k": -1e999}', "k"),
        (rb'{"k": NaN}', "k"),
    ],
)
def test_hostile_json_is_422_naming_the_field_never_500(client, raw, field):
    r = client.post("/v1/recommend", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    locs = [d["loc"] for d in r.json()["detail"]]
    assert any(field in loc for loc in locs), locs
    assert all(set(d) == {"loc", "msg", "type"} for d in r.json()["detail"])  # no echo


DEEP = b'{"history": ' + b"[" * 5000 + b"]" * 5000 + b"}"


@pytest.mark.parametrize(
    ("raw", "status", "field"),
    [
        (DEEP, 400, None),  # nesting deeper than the JSON reader's recursion: unparsable
        (b'{"k": 100000000000000000000000000000}', 422, "k"),  # an integer beyond int64
        (b'{"k": true}', 422, "k"),  # a boolean is not a number here
        (b'{"k": 5.0, "query": "ok"}', 200, None),  # JSON Schema's integer: 5.0 is one
        (b'{"user_id": "' + b"u" * 300 + b'"}', 422, "user_id"),  # ids are at most 256 chars
        (rb'{"query": "nul \u0000 inside"}', 200, None),  # valid text: encoded like any other
        (b'{"query": "   "}', 422, "query"),  # blank
        (b"[1, 2, 3]", 422, "body"),  # not an object
        (b"", 422, "body"),  # nothing
        (b'{"k": 3, "k": 4}', 200, None),  # duplicate keys: the last wins, as in JSON parsers
        # UTF-16 and a UTF-8 byte-order mark: Python's JSON reader detects both (RFC 8259
        # asks senders for plain UTF-8, and lets readers accept these)
        ('{"query": "caf\u00e9"}'.encode("utf-16"), 200, None),
        (b'{"query": "caf\xe9"}', 400, None),  # latin-1 bytes: not UTF-8
        (b'\xef\xbb\xbf{"k": 2}', 200, None),
    ],
)
def test_hostile_inputs_get_a_4xx_or_a_clean_answer_never_a_5xx(client, raw, status, field):
    r = client.post("/v1/recommend", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text[:300]
    if field is not None:
        locs = [d["loc"] for d in r.json()["detail"]]
        assert any(field in loc for loc in locs), locs


def test_malformed_json_is_422(client):
    r = client.post(
        "/v1/recommend", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert r.status_code == 422


def test_similar_items(client, tiny_bundle):
    items = json.loads((tiny_bundle / "items.json").read_text())
    warm = next(it["item_id"] for it in items if it["popularity"] > 0)
    body = client.get(f"/v1/items/{warm}/similar", params={"k": 5}).json()
    assert body["source"] == "wals" and len(body["items"]) == 5
    assert warm not in [it["item_id"] for it in body["items"]]
    assert client.get("/v1/items/nope/similar").status_code == 404
    assert client.get(f"/v1/items/{warm}/similar", params={"k": 0}).status_code == 422


def test_health_ready_metrics(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz").json()
    assert ready["ready"] is True and ready["faiss"] == ("gpu" if faiss_gpu_count() else "cpu")
    assert "CPUExecutionProvider" in ready["onnx_providers"]
    assert ready["encoder_precision"] == "fp32"
    post(client, query="robots", k=2)
    text = client.get("/metrics").text
    assert 'walrus_requests_total{endpoint="/v1/recommend",status="200"}' in text
    assert 'walrus_stage_seconds_count{stage="encode"}' in text
    assert 'walrus_request_seconds_bucket{endpoint="/v1/recommend"' in text


def test_openapi_has_examples(client):
    spec = client.get("/openapi.json").json()
    body = spec["paths"]["/v1/recommend"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"] == {"$ref": "#/components/schemas/RecommendRequest"}
    assert body["examples"]
    assert client.get("/docs").status_code == 200


def _rewrite_manifest(bundle, change):
    from export.format import file_table

    manifest = json.loads((bundle / "manifest.json").read_text())
    change(manifest)
    manifest["files"] = {k: v.model_dump() for k, v in file_table(bundle).items()}
    (bundle / "manifest.json").write_text(json.dumps(manifest))


def _corrupt(bundle):
    with open(bundle / "head.onnx", "ab") as f:
        f.write(b"tampered")


def _old_version(bundle):
    _rewrite_manifest(bundle, lambda m: m.update(format_version=1))


def _drifted_parity(bundle):
    import numpy as np

    ref = np.load(bundle / "parity" / "encoder_reference.npy")
    np.save(bundle / "parity" / "encoder_reference.npy", ref + 1e-2)
    _rewrite_manifest(bundle, lambda m: None)


@pytest.mark.parametrize(
    ("break_it", "env", "reason"),
    [
        (_corrupt, {}, "head.onnx is corrupt"),
        (shutil.rmtree, {}, "no manifest.json"),
        (
            _old_version,
            {},
            f"format version 1, this walrus reads {FORMAT_VERSION}; rebuild it with `walrus export",
        ),
        (_drifted_parity, {"WALRUS_ENGINE__VERIFY_PARITY": "true"}, "encoder fp32 max abs diff"),
    ],
    ids=["corrupt", "missing", "old-format", "verify-parity"],
)
def test_a_bad_bundle_is_refused_at_start(tiny_bundle, tmp_path, break_it, env, reason):
    copy = tmp_path / "bundle"
    writable_copy(tiny_bundle, copy)
    break_it(copy)
    with Server(copy, **env) as srv:
        srv.wait(ready=False)
        ready = httpx.get(f"{srv.url}/readyz")
        assert ready.status_code == 503
        assert reason in ready.json()["reason"]
        assert httpx.get(f"{srv.url}/healthz").status_code == 200
        r = httpx.post(f"{srv.url}/v1/recommend", json={"k": 1})
        assert r.status_code == 503 and "not ready" in r.json()["detail"]


def _seen_item_out_of_range(bundle):
    """A bundle whose last user's seen list names an item that does not exist: consistent
    checksums and sizes, wrong contents (the kind of bug no check at load can catch)."""
    indices = np.load(bundle / "seen_indices.npy")
    indices[-1] = 10**6
    np.save(bundle / "seen_indices.npy", indices)
    _rewrite_manifest(bundle, lambda m: None)


def test_files_that_disagree_in_size_are_refused_at_load(tiny_bundle, tmp_path):
    """Each file intact (sha256 as listed), but the user factors miss the last user's row."""
    copy = tmp_path / "bundle"
    writable_copy(tiny_bundle, copy)
    factors = np.load(copy / "user_factors.npy")
    np.save(copy / "user_factors.npy", factors[:-1])
    _rewrite_manifest(copy, lambda m: None)
    with Server(copy) as srv:
        srv.wait(ready=False)
        expected = f"user factor rows is {len(factors) - 1}, expected {len(factors)}"
        eventually(
            lambda: expected in httpx.get(f"{srv.url}/readyz").json().get("reason", ""),
            what=expected,
        )


def test_a_bug_at_request_time_is_a_clean_500_with_its_traceback_logged(tiny_bundle):
    """A fault injected deep in the batch (WALRUS_ENGINE__FAULT_QUERY): the client gets a one-line
    500, the log gets the traceback, /metrics counts it, and the rest is served, also the
    requests that shared its batch."""
    fault = "raise a bug"
    with Server(
        tiny_bundle, WALRUS_ENGINE__FAULT_QUERY=fault, WALRUS_ENGINE__BATCH_WAIT_US="200000"
    ) as srv:
        srv.wait()
        with concurrent.futures.ThreadPoolExecutor(
            4
        ) as pool:  # one batch: the batcher waits 200 ms for more
            bodies = [{"query": fault, "k": 2}] + [{"query": "space", "k": 2}] * 3
            answers = list(
                pool.map(lambda b: httpx.post(f"{srv.url}/v1/recommend", json=b), bodies)
            )
        bad, *fine = answers
        assert bad.status_code == 500 and bad.json() == {"detail": "internal error"}
        assert "Traceback" not in bad.text
        assert [r.status_code for r in fine] == [200, 200, 200]
        eventually(lambda: "unhandled error on Recommend" in srv.output(), 10)
        assert "Traceback" in srv.output() and "WALRUS_ENGINE__FAULT_QUERY" in srv.output()
        metrics = httpx.get(f"{srv.url}/metrics").text
        assert 'walrus_requests_total{endpoint="/v1/recommend",status="500"} 1.0' in metrics
        assert metric(metrics, "walrus_failed_batches_total") >= 1


def test_a_bundle_whose_parts_disagree_is_refused_at_load(tiny_bundle, tmp_path):
    """Intact files (each sha256 as listed) that cannot work together: a seen item outside
    the catalog, a Gramian of the wrong shape, column weights of the wrong length."""
    from export.format import BundleError
    from export.runtime import load_bundle

    cases = {
        "seen item indices span": _seen_item_out_of_range,
        "gramian rows is 3": lambda b: np.save(b / "item_gramian.npy", np.eye(3, dtype=np.float32)),
        "column weights is 2": lambda b: np.save(b / "col_weights.npy", np.ones(2)),
    }
    for expected, spoil in cases.items():
        copy = tmp_path / expected.split()[0]
        writable_copy(tiny_bundle, copy)
        spoil(copy)
        _rewrite_manifest(copy, lambda m: None)
        with pytest.raises(BundleError, match=expected):
            load_bundle(copy)


def test_a_bundle_that_fails_its_warm_up_never_serves(tiny_bundle, tmp_path):
    """A head whose input width disagrees with the features (it would fail every request):
    the bundle is refused with the reason, instead of answering 500s."""
    from export.onnx import export_head
    from models.head import ScoreHead

    copy = tmp_path / "bundle"
    writable_copy(tiny_bundle, copy)
    head = ScoreHead(hidden=4)
    rng = np.random.default_rng(0)
    head.weights = {
        "w1": rng.normal(size=(3, 4)).astype(np.float32),
        "b1": np.zeros(4, np.float32),
        "w2": np.ones(4, np.float32),
        "b2": np.zeros(1, np.float32),
    }
    export_head(head, copy / "head.onnx")
    _rewrite_manifest(copy, lambda m: None)
    with Server(copy) as srv:
        srv.wait(ready=False)
        reason = httpx.get(f"{srv.url}/readyz").json()["reason"]
        assert "retrying in" in reason and "head input width is 3, expected" in reason


def loaded_after(code: str, modules: tuple[str, ...]) -> list[str]:
    """Which of ``modules`` a fresh interpreter has imported after running ``code``."""
    check = f"{code}; import sys; print(','.join(m for m in {modules!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, check=True)
    return [m for m in out.stdout.strip().split(",") if m]


def test_service_never_imports_torch():
    code = (
        "import service.inline, service.engine.server, service.supervisor;"
        "from service.inline import create_app; create_app()"
    )
    assert loaded_after(code, ("torch", "transformers")) == []


def test_a_front_loads_no_engine_modules():
    """A front of process mode, composed as uvicorn composes it: none of the modules that
    hold a bundle are even imported (they would cost every front their memory)."""
    code = (
        "from service.front.app import create_app; from service.settings import Settings;"
        "create_app(Settings(engine={'address': '/tmp/x'}))"
    )
    heavy = ("onnxruntime", "faiss", "tokenizers", "numpy", "export", "service.engine")
    assert loaded_after(code, heavy) == []
    assert loaded_after("import service.inline", heavy) != []  # the check can see them


def test_a_body_over_the_limit_is_413_before_parsing(client):
    big = b'{"query": "' + b"a" * 70_000 + b'"}'
    r = client.post("/v1/recommend", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["detail"][0]["loc"] == ["body", "body"]

    def chunks():  # no Content-Length: the limit holds while reading
        yield b'{"query": "'
        for _ in range(80):
            yield b"a" * 1000
        yield b'"}'

    r = client.post("/v1/recommend", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert client.post("/v1/recommend", json={"k": 2}).status_code == 200  # still serving


@pytest.mark.parametrize("kind", ["text/plain", "application/x-www-form-urlencoded", None])
def test_a_body_that_is_not_json_is_415(client, kind):
    headers = {"content-type": kind} if kind else {}
    r = client.post("/v1/recommend", content=b'{"k": 2}', headers=headers)
    assert r.status_code == 415 and r.json()["detail"][0]["loc"] == ["header", "content-type"]


def test_deadline_and_load_shedding(tiny_bundle):
    """A request past WALRUS_FRONT__DEADLINE_MS is a 504; past WALRUS_ENGINE__MAX_QUEUE waiting requests a
    503 with Retry-After; both counted; nothing else fails."""
    with Server(tiny_bundle.parent, WALRUS_FRONT__DEADLINE_MS="1") as srv:
        srv.wait()
        r = httpx.post(f"{srv.url}/v1/recommend", json={"query": "slow robots", "k": 3})
        assert r.status_code == 504 and "1 ms" in r.json()["detail"]
        assert "walrus_deadline_misses_total 1.0" in httpx.get(f"{srv.url}/metrics").text
    with Server(
        tiny_bundle.parent,
        WALRUS_ENGINE__MAX_QUEUE="1",
        WALRUS_ENGINE__MAX_BATCH="1",
        WALRUS_ENGINE__SESSIONS="1",
        WALRUS_ENGINE__QUERY_CACHE_SIZE="0",
    ) as srv:
        srv.wait()

        def call(i: int) -> httpx.Response:
            return httpx.post(
                f"{srv.url}/v1/recommend", json={"query": f"q {i}", "k": 5}, timeout=30
            )

        with concurrent.futures.ThreadPoolExecutor(32) as pool:
            answers = list(pool.map(call, range(96)))
        statuses = {a.status_code for a in answers}
        assert statuses <= {200, 503} and 503 in statuses and 200 in statuses
        assert all(a.headers["retry-after"] == "1" for a in answers if a.status_code == 503)
        metrics = httpx.get(f"{srv.url}/metrics").text
        shed = float(
            next(
                ln.split()[-1]
                for ln in metrics.splitlines()
                if ln.startswith("walrus_shed_requests_total")
            )
        )
        assert shed == sum(a.status_code == 503 for a in answers)


def test_the_port_opens_at_once_and_a_failed_load_is_retried(tiny_bundle, tmp_path):
    """No bundle yet: alive, not ready, the reason and the retry shown; once the bundle is
    copied in, the same process becomes ready without a restart."""
    bundles = tmp_path / "bundles"
    bundles.mkdir()
    with Server(bundles, WALRUS_ENGINE__LOAD_RETRY_MAX_S="1") as srv:
        srv.wait(ready=False)
        ready = httpx.get(f"{srv.url}/readyz")
        assert ready.status_code == 503 and "retrying in" in ready.json()["reason"]
        assert httpx.get(f"{srv.url}/healthz").status_code == 200
        writable_copy(tiny_bundle, bundles / tiny_bundle.name)
        (bundles / "current").symlink_to(tiny_bundle.name)
        srv.wait(ready=True, timeout=60)
        r = httpx.post(f"{srv.url}/v1/recommend", json={"query": "space robots", "k": 3})
        assert r.status_code == 200 and r.json()["bundle_id"] == tiny_bundle.name


def test_several_workers_report_one_sum_in_metrics(tiny_bundle, tmp_path):
    """`walrus serve --workers 2`: each scrape, whichever front answers it, counts the
    requests of both fronts and shows the engine's series (prometheus-client's
    multiprocess mode), and the start line names the plan."""
    with Server(
        tiny_bundle,
        ["--workers", "2"],
        cli=True,
        WALRUS_LOG_LEVEL="warning",
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path),
    ) as srv:
        srv.wait()
        with httpx.Client(base_url=srv.url, timeout=30) as http:
            ok = 0
            for i in range(40):  # both workers must be ready: each loads on its own
                r = http.post("/v1/recommend", json={"query": f"space {i}", "k": 3})
                ok += r.status_code == 200
            assert ok >= 30
            pids = {p.name for p in tmp_path.iterdir()}
            # two fronts and the engine
            assert len([p for p in pids if p.startswith("counter_")]) >= 3, pids
            line = 'walrus_requests_total{endpoint="/v1/recommend",status="200"}'
            for _ in range(6):
                text = http.get("/metrics").text
                counts = [
                    float(x.rsplit(" ", 1)[1]) for x in text.splitlines() if x.startswith(line)
                ]
                assert counts == [ok], counts
                batches = [x for x in text.splitlines() if x.startswith("walrus_batch_size_sum")]
                assert float(batches[0].rsplit(" ", 1)[1]) == ok  # the engine's: one engine
        assert "and 2 front(s)" in srv.output()


def test_timings_stay_out_of_answers_unless_debugging(tiny_bundle):
    """By default an answer's timings_ms is empty (a cached query's 0 ms encode would tell
    any caller what others asked recently); /metrics still has the stages."""
    with Server(tiny_bundle) as srv:
        srv.wait()
        for _ in range(2):  # the second one is a cache hit
            r = httpx.post(f"{srv.url}/v1/recommend", json={"query": "space robots", "k": 2})
            assert r.status_code == 200 and r.json()["timings_ms"] == {}
        warm = r.json()["items"][0]["item_id"]
        similar = httpx.get(f"{srv.url}/v1/items/{warm}/similar", params={"k": 2})
        assert similar.status_code == 200 and similar.json()["timings_ms"] == {}

        def with_stages() -> str | None:
            text = httpx.get(f"{srv.url}/metrics").text
            return text if 'walrus_stage_seconds_count{stage="encode"}' in text else None

        metrics = eventually(with_stages, what="the encode stage in /metrics")
        assert 'stage="rerank"' in metrics


def test_behind_a_gateway_the_user_comes_from_its_header_only(tiny_bundle):
    """With WALRUS_FRONT__USER_HEADER the body cannot name a user (nobody can ask for another's
    recommendations, or learn their history through exclude_seen)."""
    users = json.loads((tiny_bundle / "user_ids.json").read_text())
    with Server(tiny_bundle, WALRUS_FRONT__USER_HEADER="X-User-Id") as srv:
        srv.wait()
        url = f"{srv.url}/v1/recommend"
        named = httpx.post(url, json={"user_id": users[0], "k": 2}, headers={"X-User-Id": users[0]})
        assert named.status_code == 422 and named.json()["detail"][0]["loc"] == ["body", "user_id"]
        missing = httpx.post(url, json={"k": 2})
        assert missing.status_code == 401 and "X-User-Id" in missing.json()["detail"]
        ok = httpx.post(url, json={"k": 2}, headers={"X-User-Id": users[0]})
        assert ok.status_code == 200 and ok.json()["user_known"] is True
        stranger = httpx.post(url, json={"k": 2}, headers={"X-User-Id": "nobody-here"})
        assert stranger.status_code == 200 and stranger.json()["user_known"] is False
