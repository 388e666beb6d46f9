"""Process mode as an operator starts it (`walrus serve --workers 2`): one engine process
holding the bundle, two fronts. Its answers equal the offline pipeline's; killing the engine
under load costs 503s with Retry-After, never a 500 or a hang; killing a front costs the
other nothing; a reload through any front is seen by every front at once."""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest

from export.format import MANIFEST, switch_current, writable_copy
from tests.support.offline import CASES, offline, request_body
from tests.support.servers import Server

pytestmark = pytest.mark.slow
TOKEN = "engine-test-token-32-characters-long"


def processes(srv: Server) -> tuple[list[psutil.Process], list[psutil.Process]]:
    """(the engine, the fronts) among the supervisor's descendants."""
    commands = {}
    for child in psutil.Process(srv.process.pid).children(recursive=True):
        try:
            commands[child] = " ".join(child.cmdline())
        except psutil.Error:  # gone, or a zombie not yet reaped
            continue
    engines = [p for p, command in commands.items() if "service.engine" in command]
    fronts = [p for p, command in commands.items() if "spawn_main" in command]
    return engines, fronts


def wait_for(condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        time.sleep(0.1)


def two_fronts(bundles: Path, **env: str) -> Server:
    srv = Server(
        bundles,
        ["--workers", "2"],
        cli=True,
        WALRUS_MODE="process",
        WALRUS_ENGINE__ENCODER_PRECISION="fp32",
        WALRUS_ENGINE__QUERY_CACHE_SIZE="0",
        WALRUS_LIMITS__HISTORY="50",
        WALRUS_LOG_LEVEL="warning",
        **env,
    )
    try:
        srv.wait()
        wait_for(lambda: len(processes(srv)[1]) == 2)
    except BaseException:
        srv.stop()
        raise
    return srv


@pytest.fixture(scope="module")
def served(tiny_bundle: Path):
    # Batches wait 20 ms for company: with two batcher threads, requests arriving together
    # could otherwise each be taken alone, and the batching under test would not happen.
    with two_fronts(tiny_bundle.parent, WALRUS_ENGINE__BATCH_WAIT_US="20000") as srv:
        yield srv


def test_one_engine_and_two_fronts_run(served):
    engines, fronts = processes(served)
    assert len(engines) == 1 and len(fronts) == 2
    # BLAS and OpenMP pools sized by the plan, not one thread per host core.
    assert {"OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"} <= set(engines[0].environ())
    # The fronts hold no bundle: the engine alone loaded onnxruntime's and FAISS's libraries.
    maps = {p.pid: " ".join(m.path for m in p.memory_maps()) for p in (*engines, *fronts)}
    assert "onnxruntime" in maps[engines[0].pid]
    assert all("onnxruntime" not in maps[p.pid] and "faiss" not in maps[p.pid] for p in fronts)


@pytest.mark.parametrize(
    "case", CASES, ids=lambda c: "+".join(sorted(k for k in c if k != "k")) or "nothing"
)
def test_answers_through_the_engine_equal_offline(served, tiny_trained, case):
    response = httpx.post(f"{served.url}/v1/recommend", json=request_body(tiny_trained, case))
    ids, scores, sources = offline(tiny_trained, case)
    got = response.json()
    assert [it["item_id"] for it in got["items"]] == ids
    np.testing.assert_allclose([it["score"] for it in got["items"]], scores, atol=1e-4)
    assert [it["sources"] for it in got["items"]] == sources


def test_concurrent_clients_of_both_fronts_get_the_offline_answers(served, tiny_trained):
    def call(case: dict) -> tuple[dict, dict]:
        with httpx.Client(base_url=served.url, timeout=30) as c:  # new connections: both fronts
            return case, c.post("/v1/recommend", json=request_body(tiny_trained, case)).json()

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(call, CASES * 6))
    for case, got in answers:
        ids, scores, _ = offline(tiny_trained, case)
        assert [it["item_id"] for it in got["items"]] == ids
        np.testing.assert_allclose([it["score"] for it in got["items"]], scores, atol=1e-4)
    text = httpx.get(f"{served.url}/metrics").text
    sums = {
        ln.split()[0]: float(ln.split()[1])
        for ln in text.splitlines()
        if ln.startswith("walrus_batch_size_")
    }
    assert sums["walrus_batch_size_sum"] > sums["walrus_batch_size_count"], "never batched"


class Load:
    """Clients sending requests in a loop until stopped: every status, header and time."""

    def __init__(self, url: str, clients: int = 4) -> None:
        self.url, self.results, self.errors = url, [], []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run) for _ in range(clients)]

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as c:
            while not self.stop.is_set():
                start = time.monotonic()
                try:
                    r = c.post("/v1/recommend", json={"query": "space robots", "k": 3})
                    elapsed = time.monotonic() - start
                    self.results.append((r.status_code, r.headers.get("retry-after"), elapsed))
                except httpx.HTTPError as exc:  # a connection to a killed front
                    self.errors.append(exc)

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join()


def test_the_engine_killed_under_load_costs_503s_then_answers_again(tiny_bundle):
    with two_fronts(tiny_bundle.parent, WALRUS_FRONT__DEADLINE_MS="3000") as srv:
        (engine,), _ = processes(srv)
        with Load(srv.url) as load:
            time.sleep(1.0)
            engine.send_signal(signal.SIGKILL)
            wait_for(lambda: (e := processes(srv)[0]) != [] and e[0].pid != engine.pid)
            wait_for(lambda: httpx.get(f"{srv.url}/readyz").status_code == 200)
            time.sleep(1.0)
        statuses = [status for status, _, _ in load.results]
        assert 500 not in statuses, statuses
        assert set(statuses) <= {200, 503}, set(statuses)
        unavailable = [r for r in load.results if r[0] == 503]
        assert unavailable and all(retry == "1" for _, retry, _ in unavailable)
        assert max(elapsed for _, _, elapsed in load.results) < 3.5  # nothing past its deadline
        assert statuses[-8:] == [200] * 8  # answering again after the restart
        assert load.errors == []
        assert "exited with -9: starting it again" in srv.output()


def test_a_front_killed_is_started_again_and_the_other_goes_on(tiny_bundle):
    with two_fronts(tiny_bundle.parent) as srv:
        _, (victim, survivor) = processes(srv)
        with Load(srv.url) as load:
            time.sleep(0.5)
            victim.send_signal(signal.SIGKILL)
            wait_for(lambda: {p.pid for p in processes(srv)[1]} - {victim.pid, survivor.pid})
            time.sleep(1.0)
        assert survivor.is_running()
        statuses = [status for status, _, _ in load.results]
        assert set(statuses) == {200}, set(statuses)
        # Connections the killed front held fail; the clients' next ones are answered.
        assert len(load.errors) <= 4, load.errors
        assert httpx.get(f"{srv.url}/readyz").status_code == 200


def test_a_reload_through_any_front_is_seen_by_every_front(tiny_bundle, tmp_path):
    bundles = tmp_path / "bundles"
    bundles.mkdir()
    writable_copy(tiny_bundle, bundles / "v1")
    switch_current(bundles, "v1")
    with two_fronts(
        bundles, WALRUS_FRONT__ADMIN_TOKEN=TOKEN, WALRUS_ENGINE__RELOAD_INTERVAL_S="0"
    ) as srv:
        first = httpx.get(f"{srv.url}/readyz").json()["bundle_id"]
        writable_copy(tiny_bundle, bundles / "v2")
        manifest = json.loads((bundles / "v2" / MANIFEST).read_text())
        manifest["bundle_id"] = "v2-id"
        (bundles / "v2" / MANIFEST).write_text(json.dumps(manifest))
        switch_current(bundles, "v2")
        auth = {"Authorization": f"Bearer {TOKEN}"}
        r = httpx.post(f"{srv.url}/admin/reload", headers=auth, timeout=120)
        assert r.status_code == 200 and r.json() == {
            "bundle_id": "v2-id",
            "reloaded": True,
            "reason": None,
        }
        seen = set()
        for i in range(30):  # a new connection each: the kernel spreads them over both fronts
            ready = httpx.get(f"{srv.url}/readyz").json()["bundle_id"]
            body = {"query": f"after {i}", "k": 2}
            answer = httpx.post(f"{srv.url}/v1/recommend", json=body).json()["bundle_id"]
            seen |= {ready, answer}
        assert first != "v2-id" and seen == {"v2-id"}
        again = httpx.post(f"{srv.url}/admin/reload", headers=auth, timeout=120).json()
        assert again["reloaded"] is False and again["reason"] == "already serving it"


def test_the_engine_stops_with_its_supervisor(tiny_bundle):
    """The supervisor killed outright: the engine notices its parent gone and exits, rather
    than hold the bundle (and its memory) as an orphan."""
    srv = two_fronts(tiny_bundle.parent)
    (engine,), fronts = processes(srv)
    try:
        os.kill(srv.process.pid, signal.SIGKILL)  # no chance to stop the engine itself
        wait_for(lambda: not engine.is_running() or engine.status() == psutil.STATUS_ZOMBIE, 10)
    finally:
        for front in fronts:  # uvicorn's workers outlive a killed parent: not ours to test
            front.kill()
        srv.stop()
