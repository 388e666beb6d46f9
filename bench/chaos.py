"""The chaos run (``make chaos``): a benchmark, not a test. ``walrus serve`` (two fronts, one
engine, signed bundles required) under a steady load of clients while faults come in turn:

1. ``slow clients``: hundreds of connections that trickle their headers or their body;
2. ``similar flood``: many threads asking ``/v1/items/{id}/similar`` as fast as they can;
3. ``batch failures``: requests carrying the fault query (``WALRUS_ENGINE__FAULT_QUERY``) among the
   load, each making its batch raise; only they may fail (500), the load's requests that
   shared their batches are served again alone;
4. ``engine killed``: SIGKILL to the engine process (the supervisor starts it again);
5. ``tampered bundle``: ``current`` moved to a signed bundle whose manifest changed after
   signing, and ``POST /admin/reload``;
6. ``unsigned bundle``: the same with a bundle that has no signature;

with a quiet phase before and after. Each phase reports the load's requests by outcome
(2xx, 503 with Retry-After, other 5xx, 4xx, transport errors) and what ``/readyz`` and
``/metrics`` showed of the fault while it lasted. The verdict: no 5xx other than 503 with
Retry-After (the answer while the engine restarts), no transport error, every fault seen.

    python -m bench.chaos --bundle artifacts/demo/bundles --phase-s 10
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench.common import write_results
from bench.serve import running, walrus_cmd
from export.format import MANIFEST, resolve_bundle, switch_current, writable_copy
from export.signing import generate_keypair, sign_bundle

TOKEN = "chaos-token-at-least-thirty-two-chars"
FAULT = "chaos: fail this batch"
PORT = 8941


class Load:
    """``clients`` threads sending recommend requests back to back; outcomes by phase."""

    def __init__(self, url: str, clients: int, user: str | None) -> None:
        self.url, self.phase = url, "warm-up"
        self.outcomes: dict[str, Counter[str]] = {}
        self.stop = threading.Event()
        bodies = [{"query": "space robots", "k": 5}, {"user_id": user, "k": 5}]
        self.threads = [
            threading.Thread(target=self._run, args=(bodies[i % 2],), daemon=True)
            for i in range(clients)
        ]

    def _run(self, body: dict[str, Any]) -> None:
        with httpx.Client(base_url=self.url, timeout=15) as client:
            while not self.stop.is_set():
                try:
                    r = client.post("/v1/recommend", json=body)
                    outcome = outcome_of(r.status_code, "retry-after" in r.headers)
                except httpx.HTTPError as exc:
                    outcome = f"transport error ({type(exc).__name__})"
                    time.sleep(0.05)
                # Counted in the phase it ended in: a request in flight when the engine is
                # killed belongs to that fault.
                self.outcomes.setdefault(self.phase, Counter())[outcome] += 1

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join()


def outcome_of(status: int, retry_after: bool) -> str:
    if status < 300:
        return "2xx"
    if status == 503 and retry_after:
        return "503 with Retry-After"
    return f"{status // 100}xx" if status < 500 else f"5xx ({status})"


def slow_clients(url: str, seconds: float, n: int = 300) -> dict[str, Any]:
    """``n`` connections that never finish their request; how many got 408 and when."""
    host, port = url.removeprefix("http://").split(":")
    socks = []
    for i in range(n):
        sock = socket.create_connection((host, int(port)))
        head = b"POST /v1/recommend HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        sock.sendall(head + (b"Content-Length: 100\r\n\r\n{" if i % 2 else b"X-Slow: "))
        socks.append(sock)
    time.sleep(seconds)
    got = Counter()
    for sock in socks:
        sock.settimeout(5)
        try:
            got[sock.recv(12).decode(errors="replace") or "closed"] += 1
        except OSError:
            got["no answer"] += 1
        sock.close()
    return {"connections": n, "answers": dict(got)}


def similar_flood(url: str, seconds: float, item: str, threads: int = 32) -> dict[str, Any]:
    statuses: Counter[str] = Counter()
    deadline = time.monotonic() + seconds

    def flood() -> None:
        with httpx.Client(base_url=url, timeout=15) as client:
            while time.monotonic() < deadline:
                try:
                    r = client.get(f"/v1/items/{item}/similar", params={"k": 50})
                    statuses[outcome_of(r.status_code, "retry-after" in r.headers)] += 1
                except httpx.HTTPError as exc:
                    statuses[type(exc).__name__] += 1

    workers = [threading.Thread(target=flood) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return {"similar": dict(statuses)}


def batch_failures(url: str, seconds: float, threads: int = 2) -> dict[str, Any]:
    """Fault queries sent among the load for ``seconds``; their outcomes, and the failed
    batches /metrics counted meanwhile."""
    statuses: Counter[str] = Counter()
    before = failed_batches(url)
    deadline = time.monotonic() + seconds

    def poison() -> None:
        with httpx.Client(base_url=url, timeout=15) as client:
            while time.monotonic() < deadline:
                r = client.post("/v1/recommend", json={"query": FAULT, "k": 5})
                statuses[f"{r.status_code} {r.text[:40]}"] += 1
                time.sleep(0.02)

    workers = [threading.Thread(target=poison) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return {"fault_requests": dict(statuses), "failed_batches": failed_batches(url) - before}


def failed_batches(url: str) -> float:
    text = httpx.get(url + "/metrics", timeout=5).text
    lines = [ln for ln in text.splitlines() if ln.startswith("walrus_failed_batches_total ")]
    return float(lines[0].split()[1]) if lines else 0.0


def kill_engine(url: str, seconds: float, pid: int) -> dict[str, Any]:
    """SIGKILL the engine; how long /readyz was red and what it said."""
    engine = next(
        p
        for p in psutil.Process(pid).children(recursive=True)
        if "service.engine" in " ".join(p.cmdline())
    )
    engine.send_signal(signal.SIGKILL)
    start, red, reasons = time.monotonic(), 0.0, set()
    while time.monotonic() - start < seconds:
        ready = httpx.get(url + "/readyz", timeout=5)
        if ready.status_code != 200:
            red = time.monotonic() - start
            reasons.add(ready.text[:100])
        time.sleep(0.1)
    return {"engine_pid": engine.pid, "readyz_red_for_s": round(red, 2), "reasons": sorted(reasons)}


def bad_reload(url: str, bundles: Path, name: str, good: str) -> dict[str, Any]:
    """Point ``current`` at bundle ``name``, ask for a reload, report the answer and what
    /readyz and /metrics say; then point it back."""
    switch_current(bundles, name)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    answer = httpx.post(url + "/admin/reload", headers=auth, timeout=120).json()
    refused = httpx.get(url + "/readyz", timeout=5).json().get("refused", {})
    metrics = httpx.get(url + "/metrics", timeout=5).text
    switch_current(bundles, good)
    return {
        "reload": answer,
        "readyz_refused": [r[:100] for r in refused.values()],
        "metrics_refused": [ln for ln in metrics.splitlines() if "loads_total" in ln],
    }


def prepare(source: Path, work: Path) -> tuple[Path, Path, str]:
    """Bundles ``good`` (signed), ``tampered`` (signed, manifest changed after) and
    ``unsigned``, copies of ``source``; the public key; an item id for /similar."""
    bundles = work / "bundles"
    bundles.mkdir(parents=True)
    private, public = generate_keypair(work / "keys")
    for name in ("good", "tampered", "unsigned"):
        writable_copy(resolve_bundle(source), bundles / name)
    for name in ("good", "tampered"):
        sign_bundle(bundles / name, private)
    manifest = json.loads((bundles / "tampered" / MANIFEST).read_text())
    manifest["candidates"]["n_text"] = 1
    (bundles / "tampered" / MANIFEST).write_text(json.dumps(manifest))
    switch_current(bundles, "good")
    item = json.loads((bundles / "good" / "item_ids.json").read_text())[0]
    return bundles, public, item


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bundle", type=Path, default=Path("artifacts/demo/bundles"))
    ap.add_argument("--phase-s", type=float, default=10.0)
    ap.add_argument("--clients", type=int, default=8)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="walrus-chaos-") as tmp:
        result = run(args, Path(tmp))
    path = write_results("chaos", result)
    print(report(result))
    print(f"wrote {path}")
    return 0 if result["verdict"]["passed"] else 1


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    bundles, public, item = prepare(args.bundle, work)
    user = json.loads((bundles / "good" / "user_ids.json").read_text())[0]
    cmd, env = walrus_cmd(
        bundles,
        PORT,
        WALRUS_FRONT__WORKERS="2",
        WALRUS_FRONT__ADMIN_TOKEN=TOKEN,
        WALRUS_TRUSTED_KEYS=str(public),
        WALRUS_FRONT__READ_TIMEOUT_S="2",
        WALRUS_ENGINE__RELOAD_INTERVAL_S="0",
        WALRUS_ENGINE__FAULT_QUERY=FAULT,
    )
    url, s = f"http://127.0.0.1:{PORT}", args.phase_s
    faults: dict[str, Callable[[int], dict[str, Any]]] = {
        "quiet, before": lambda _pid: (time.sleep(s), {})[1],
        "slow clients": lambda _pid: slow_clients(url, s),
        "similar flood": lambda _pid: similar_flood(url, s, item),
        "batch failures": lambda _pid: batch_failures(url, s),
        "engine killed": lambda pid: kill_engine(url, s, pid),
        "tampered bundle": lambda _pid: bad_reload(url, bundles, "tampered", "good"),
        "unsigned bundle": lambda _pid: bad_reload(url, bundles, "unsigned", "good"),
        "quiet, after": lambda _pid: (time.sleep(s), {})[1],
    }
    seen: dict[str, Any] = {}
    with (
        running(cmd, env, url, {"query": "warm", "k": 2}) as info,
        Load(url, args.clients, user) as load,
    ):
        for phase, fault in faults.items():
            load.phase = phase
            seen[phase] = fault(info["pid"])
        load.phase = "done"
    phases = {p: {"load": dict(load.outcomes.get(p, {})), "fault": seen[p]} for p in faults}
    return {"phase_s": s, "clients": args.clients, "phases": phases, "verdict": verdict(phases)}


def verdict(phases: dict[str, Any]) -> dict[str, Any]:
    """No 5xx but 503-with-Retry-After, no transport error, every fault visible."""
    bad = {
        phase: {k: v for k, v in p["load"].items() if k.startswith(("5xx", "transport"))}
        for phase, p in phases.items()
    }
    bad = {phase: b for phase, b in bad.items() if b}
    f = {phase: p["fault"] for phase, p in phases.items()}
    seen = {
        "slow clients closed with 408": f["slow clients"]["answers"].get("HTTP/1.1 408", 0)
        == f["slow clients"]["connections"],
        "batch failures only failed their own requests": set(f["batch failures"]["fault_requests"])
        == {'500 {"detail":"internal error"}'}
        and f["batch failures"]["failed_batches"] > 0,
        "engine restart red in /readyz": f["engine killed"]["readyz_red_for_s"] > 0,
        "tampered refused": not f["tampered bundle"]["reload"]["reloaded"],
        "unsigned refused": "unsigned" in str(f["unsigned bundle"]["reload"].get("reason")),
    }
    return {"errors": bad, "faults_seen": seen, "passed": not bad and all(seen.values())}


def report(r: dict[str, Any]) -> str:
    lines = ["| phase | load: outcomes | fault |", "|---|---|---|"]
    for phase, p in r["phases"].items():
        load = ", ".join(f"{k} {v}" for k, v in sorted(p["load"].items()))
        lines.append(f"| {phase} | {load} | {json.dumps(p['fault'])[:160]} |")
    v = r["verdict"]
    lines.append("")
    lines.append(
        f"Verdict: {'passed' if v['passed'] else 'FAILED'}; faults seen: {v['faults_seen']}"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
