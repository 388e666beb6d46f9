"""The serving benchmark (``make bench-serve``): side by side, in one run, on one machine.

1. the limit: the bundle's ONNX encoder alone on all-distinct queries, batch 1 and its best
   batch;
2. walrus as ``make demo`` starts it (``walrus serve``, default settings) on all-distinct
   query-only requests at concurrency 1, 8, 32, 64;
3. the realistic mix (bench/locustfile.py's weights, Zipf-repeated queries) with the cache hit
   rate;
4. the naive peer (bench/peer.py) under the same load as 2;
5. the seed-scale bundle (``walrus bundle synthetic``): start time, resident memory, and
   user, query and history requests at concurrency 8;
6. 1 and 2 again with a randomly initialised roberta-base-sized encoder.

Load comes from ``wrk``. Results: bench/results/serve.json; ``--report`` prints the tables of
docs/benchmarks.md, ``--plot`` draws docs/serve-latency.png.

    python -m bench.serve --bundle artifacts/demo/bundles --seed-bundle artifacts/seed/bundles
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
from matplotlib.figure import Figure

from bench import transport
from bench.common import machine, write_results
from bench.wrk import (
    BODIES_FROM_FILE,
    DISTINCT_QUERIES,
    distinct_queries,
    metric_summary,
    run_wrk,
    write_bodies,
)
from export.format import MANIFEST, Files, file_table, read_manifest, resolve_bundle
from export.runtime import OnnxTextEncoder, usable_cpus

ROOT = Path(__file__).resolve().parent.parent
CONCURRENCY = (1, 8, 32, 64)
BATCHES = (1, 8, 16, 32, 64, 128)
MIX = {"user": 40, "query": 25, "user+query": 20, "history": 15}  # bench/locustfile.py


def encoder_limit(bundle: Path, precision: str, seconds: float = 3.0) -> dict[str, Any]:
    """Queries/s of the bundle's encoder alone on all-distinct texts, the best of two ways to
    use the usable CPUs: one session with a thread per CPU, or a session per CPU with one
    thread each, run side by side (as the service's workers do)."""

    path = resolve_bundle(bundle)
    max_length = json.loads((path / Files.TOKENIZER_CONFIG).read_text())["max_length"]
    cpus = usable_cpus()

    def make(threads: int) -> OnnxTextEncoder:
        return OnnxTextEncoder(
            path / Files.ENCODER[precision], path / Files.TOKENIZER, max_length, threads=threads
        )

    texts = distinct_queries(400_000, seed=1)
    out: dict[str, Any] = {"precision": precision, "cpus": cpus}
    layouts = {f"1 session x {cpus} threads": [make(cpus)]}
    if cpus > 1:
        layouts[f"{cpus} sessions x 1 thread"] = [make(1) for _ in range(cpus)]
    offset = 0
    for layout, sessions in layouts.items():
        for batch in BATCHES:

            def run(encoder: OnnxTextEncoder, start: int, batch: int = batch) -> int:
                done, began, position = 0, time.perf_counter(), start
                while time.perf_counter() - began < seconds:
                    encoder.encode(texts[position : position + batch])
                    position += batch
                    done += batch
                return done

            for encoder in sessions:
                encoder.encode(texts[:batch])  # warm this shape
            began = time.perf_counter()
            with ThreadPoolExecutor(len(sessions)) as pool:
                starts = [offset + i * 50_000 for i in range(len(sessions))]
                done = sum(pool.map(run, sessions, starts))
            offset = (offset + 7_919) % 100_000
            out[f"{layout}: batch {batch}"] = done / (time.perf_counter() - began)
    out["batch1_queries_per_s"] = max(out[f"{layout}: batch 1"] for layout in layouts)
    best = max((k for k in out if ": batch " in k), key=lambda k: out[k])
    out["best"], out["best_queries_per_s"] = best, out[best]
    out["best_batch"] = int(best.rsplit(" ", 1)[1])
    return out


@contextmanager
def running(
    cmd: list[str],
    env: dict[str, str],
    url: str,
    probe: dict[str, Any] | None,
    timeout: float = 300.0,
) -> Iterator[dict[str, Any]]:
    """A server process until the block ends. Ready when ``probe`` is answered 200 five times
    in a row (with several workers each loads on its own; None: ``/healthz``). Yields its
    start time in seconds and, at the end, its resident memory (all its processes)."""
    with tempfile.TemporaryFile("w+") as log:
        start = time.perf_counter()
        proc = subprocess.Popen(
            cmd, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT
        )
        info: dict[str, Any] = {"pid": proc.pid}
        try:
            streak = 0
            while streak < 5:
                if proc.poll() is not None or time.perf_counter() - start > timeout:
                    log.seek(0)
                    raise RuntimeError(f"{cmd[:3]} did not get ready: {log.read()[-2000:]}")
                try:
                    r = (
                        httpx.get(url + "/healthz", timeout=10)
                        if probe is None
                        else httpx.post(url + "/v1/recommend", json=probe, timeout=10)
                    )
                    ok = r.status_code == 200
                except httpx.HTTPError:
                    ok = False
                streak = streak + 1 if ok else 0
                time.sleep(0 if ok else 0.2)
            info["start_s"] = time.perf_counter() - start
            yield info
            info["resident_by_kind"] = resident_by_kind(proc.pid)
            info["resident_bytes"] = sum(info["resident_by_kind"].values())
            log.seek(0)
            info["log_head"] = log.read()[:600]
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


def resident_bytes(pid: int) -> int:
    """Resident set of a process and its children, shared pages counted once (PSS)."""
    return sum(resident_by_kind(pid).values())


def resident_by_kind(pid: int) -> dict[str, int]:
    """PSS of a ``walrus serve`` process tree by kind: the engine, the fronts (uvicorn's
    workers), the rest (the supervisor, uvicorn's resource tracker)."""
    root = psutil.Process(pid)
    out = {"engine": 0, "fronts": 0, "other": 0}
    for proc in [root, *root.children(recursive=True)]:
        try:
            command = " ".join(proc.cmdline())
            pss = proc.memory_full_info().pss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        kind = "engine" if "service.engine" in command else "other"
        kind = "fronts" if "spawn_main" in command else kind
        out[kind] += pss
    return out


def walrus_cmd(bundle: Path, port: int, **settings: str) -> tuple[list[str], dict[str, str]]:
    """``walrus serve`` with the defaults ``make demo`` uses, unless ``settings`` (WALRUS_*
    variables) say otherwise."""
    walrus = shutil.which("walrus", path=str(Path(sys.executable).parent)) or "walrus"
    env = {"WALRUS_BUNDLE": str(bundle), "WALRUS_PORT": str(port), **settings}
    return [walrus, "serve"], env


def peer_cmd(bundle: Path, port: int) -> tuple[list[str], dict[str, str]]:
    cmd = [
        sys.executable,
        "-m",
        "uvicorn",
        "bench.peer:app",
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
    return cmd, {"PEER_BUNDLE": str(resolve_bundle(bundle))}


def run_distinct(wrk: str, url: str, connections: int, seconds: int, work: Path) -> dict[str, Any]:
    """All-distinct query-only requests (no cache can answer them)."""
    script = work / "distinct.lua"
    script.write_text(DISTINCT_QUERIES)
    return run_wrk(wrk, url, "/v1/recommend", connections, seconds, min(connections, 2), script)


def load_curve(wrk: str, url: str, seconds: int, work: Path) -> dict[str, Any]:
    return {f"c{c}": run_distinct(wrk, url, c, seconds, work) for c in CONCURRENCY}


def mix_bodies(bundle: Path, n: int, kinds: dict[str, int], seed: int = 0) -> list[dict[str, Any]]:
    """Request bodies in the locust mix's proportions: Zipf-repeated queries made of title
    words, users and history items drawn from the bundle."""
    path = resolve_bundle(bundle)
    rng = np.random.default_rng(seed)
    users = json.loads((path / Files.USER_IDS).read_text())
    item_ids = json.loads((path / Files.ITEM_IDS).read_text())
    titles = [it["title"] for it in json.loads((path / Files.ITEMS).read_text())[:2000]]
    words = sorted({w.strip("().,").lower() for t in titles for w in t.split() if len(w) > 3})
    queries = [" ".join(rng.choice(words, size=int(rng.integers(1, 4)))) for _ in range(2000)]
    zipf = 1.0 / np.arange(1, len(queries) + 1) ** 1.1
    names = list(kinds)
    share = np.array([kinds[k] for k in names], float)
    bodies = []
    for kind in rng.choice(names, size=n, p=share / share.sum()):
        body: dict[str, Any] = {"k": 10}
        if "user" in kind:
            body["user_id"] = users[int(rng.integers(len(users)))]
        if "query" in kind:
            body["query"] = queries[int(rng.choice(len(queries), p=zipf / zipf.sum()))]
        if kind == "history":
            body["history"] = [item_ids[int(i)] for i in rng.integers(len(item_ids), size=5)]
        bodies.append(body)
    return bodies


def run_bodies(
    wrk: str,
    url: str,
    bodies: list[dict[str, Any]],
    connections: int,
    seconds: int,
    work: Path,
    name: str,
) -> dict[str, Any]:
    script = work / "bodies.lua"
    script.write_text(BODIES_FROM_FILE)
    data = write_bodies(work / f"{name}.jsonl", bodies)
    return run_wrk(
        wrk, url, "/v1/recommend", connections, seconds, min(connections, 2), script, [str(data)]
    )


def cache_rate(before: dict[str, float], after: dict[str, float]) -> float | None:
    hits = after.get("walrus_query_cache_hits_total", 0) - before.get(
        "walrus_query_cache_hits_total", 0
    )
    misses = after.get("walrus_query_cache_misses_total", 0) - before.get(
        "walrus_query_cache_misses_total", 0
    )
    return hits / (hits + misses) if hits + misses else None


def serve_section(
    wrk: str, bundle: Path, seconds: int, work: Path, mix: bool, **settings: str
) -> dict[str, Any]:
    port = 8700
    cmd, env = walrus_cmd(bundle, port, **settings)
    url = f"http://127.0.0.1:{port}"
    out: dict[str, Any] = {}
    with running(cmd, env, url, {"query": "warm up", "k": 10}) as info:
        out["curve"] = load_curve(wrk, url, seconds, work)
        if mix:
            before = metric_summary(httpx.get(url + "/metrics").text)
            out["mix"] = run_bodies(
                wrk, url, mix_bodies(bundle, 20_000, MIX), 32, seconds, work, "mix"
            )
            after = metric_summary(httpx.get(url + "/metrics").text)
            out["mix"]["cache_hit_rate"] = cache_rate(before, after)
            out["metrics"] = after
    out.update(
        start_s=info["start_s"], resident_bytes=info["resident_bytes"], log_head=info["log_head"]
    )
    return out


def healthz_section(wrk: str, bundle: Path, seconds: int) -> dict[str, Any]:
    """``/healthz`` of one front (the engine behind it idle) and of a trivial async FastAPI
    endpoint (bench/trivial.py) under the same uvicorn, side by side: what a front costs
    before any work. With the access log (INFO, the default) and without (WARNING)."""
    out: dict[str, Any] = {}
    for label, level in (("front", "info"), ("front_no_access_log", "warning")):
        cmd, env = walrus_cmd(bundle, 8703, WALRUS_FRONT__WORKERS="1", WALRUS_LOG_LEVEL=level)
        url = "http://127.0.0.1:8703"
        with running(cmd, env, url, {"query": "warm up", "k": 10}):
            out[label] = run_wrk(wrk, url, "/healthz", 32, seconds, 2, None)
    trivial = [sys.executable, "-m", "uvicorn", "bench.trivial:app", "--port", "8704"]
    trivial += ["--log-level", "warning", "--no-access-log"]
    with running(trivial, {}, "http://127.0.0.1:8704", None):
        out["trivial"] = run_wrk(wrk, "http://127.0.0.1:8704", "/healthz", 32, seconds, 2, None)
    for label in ("front", "front_no_access_log"):
        out[f"{label}_over_trivial"] = (
            out[label]["requests_per_s"] / out["trivial"]["requests_per_s"]
        )
    return out


def peer_section(wrk: str, bundle: Path, seconds: int, work: Path) -> dict[str, Any]:
    port = 8701
    cmd, env = peer_cmd(bundle, port)
    url = f"http://127.0.0.1:{port}"
    with running(cmd, env, url, {"query": "warm up", "k": 10}) as info:
        curve = load_curve(wrk, url, seconds, work)
    return {"curve": curve, "start_s": info["start_s"], "resident_bytes": info["resident_bytes"]}


def bundle_bytes(bundle: Path) -> int:
    """What the service must touch: every array and index file of the bundle."""
    path = resolve_bundle(bundle)
    return sum(f.stat().st_size for f in path.iterdir() if f.suffix in (".npy", ".faiss"))


def seed_section(wrk: str, bundle: Path, seconds: int, work: Path) -> dict[str, Any]:
    """The seed-scale bundle with two fronts: start, memory (all processes) against the
    bundle's arrays, latency per request kind; then with three fronts, what one more adds."""
    port = 8702
    cmd, env = walrus_cmd(bundle, port, WALRUS_FRONT__WORKERS="2")
    url = f"http://127.0.0.1:{port}"
    manifest = read_manifest(resolve_bundle(bundle))
    out: dict[str, Any] = {
        "bundle": manifest.bundle_id,
        "counts": manifest.counts,
        "indexes": {k: v.model_dump() for k, v in manifest.indexes.items()},
        "array_bytes": bundle_bytes(bundle),
    }
    rng = np.random.default_rng(3)
    n_users, n_items = manifest.counts["users"], manifest.counts["items"]
    kinds = {
        "user": [{"user_id": f"u{int(u)}", "k": 10} for u in rng.integers(n_users, size=20_000)],
        "history": [
            {"history": [f"i{int(i)}" for i in rng.integers(n_items, size=5)], "k": 10}
            for _ in range(20_000)
        ],
    }
    with running(cmd, env, url, {"user_id": "u1", "k": 10}) as info:
        for kind, bodies in kinds.items():
            out[kind] = run_bodies(wrk, url, bodies, 8, seconds, work, kind)
        out["query"] = run_distinct(wrk, url, 8, seconds, work)
    out.update(start_s=info["start_s"], resident_bytes=info["resident_bytes"])
    out["resident_by_kind"] = info["resident_by_kind"]
    out["resident_over_arrays"] = out["resident_bytes"] / out["array_bytes"]
    # A front shares nothing with the engine but libraries (PSS splits those): its own PSS
    # is what one more front adds.
    out["added_by_a_front_bytes"] = info["resident_by_kind"]["fronts"] / 2
    return out


def roberta_section(wrk: str, bundle: Path, seconds: int, work: Path) -> dict[str, Any]:
    """The demo bundle with a random roberta-base-sized encoder (int8, as the CPU serves)."""
    # Building it needs torch; imported here so that the process measuring the other
    # sections (the bare encoder runs in it) never loads torch's thread pools.
    from bench.gpu_check import build_roberta_base_onnx, roberta_bundle
    from export.bundle import quantize_to_target

    encoder_dir = build_roberta_base_onnx(work, smoke=False)
    rb = roberta_bundle(resolve_bundle(bundle), encoder_dir, work)
    texts = distinct_queries(32, seed=5)
    reference = OnnxTextEncoder(rb / Files.ENCODER["fp32"], rb / Files.TOKENIZER, 64).encode(texts)
    scheme = quantize_to_target(rb, texts, reference, 64, 0.9)
    manifest = json.loads((rb / MANIFEST).read_text())
    manifest["files"] = {k: v.model_dump() for k, v in file_table(rb).items()}
    (rb / MANIFEST).write_text(json.dumps(manifest, indent=2))
    out: dict[str, Any] = {"int8_scheme": scheme, "limit": encoder_limit(rb, "int8")}
    out["walrus"] = serve_section(wrk, rb, seconds, work, mix=False)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bundle", type=Path, default=ROOT / "artifacts/demo/bundles")
    parser.add_argument("--seed-bundle", type=Path, default=ROOT / "artifacts/seed/bundles")
    parser.add_argument("--seconds", type=int, default=10, help="per wrk run")
    parser.add_argument(
        "--skip",
        nargs="*",
        default=[],
        choices=["demo", "inline", "front", "peer", "seed", "roberta"],
    )
    parser.add_argument("--wrk", default=shutil.which("wrk"))
    parser.add_argument("--report", nargs="*", type=Path, help="print tables from results")
    parser.add_argument("--plot", type=Path, help="with --report: write the latency plot here")
    args = parser.parse_args(argv)
    if args.report:
        results = json.loads(args.report[0].read_text())
        print(report(results))
        if args.plot:
            plot(results, args.plot)
        return 0
    if args.wrk is None:
        print("error: wrk not found: install it (apt install wrk) or pass --wrk PATH")
        return 2
    out: dict[str, Any] = {
        "machine": machine(),
        "usable_cpus": usable_cpus(),
        "seconds_per_run": args.seconds,
    }

    with tempfile.TemporaryDirectory(prefix="walrus-bench-serve-") as tmp:
        run_sections(args, out, Path(tmp))
    path = write_results("serve", out)
    if "walrus" in out:
        print(report(out))
    print(f"wrote {path}")
    return 0


def run_sections(args: argparse.Namespace, out: dict[str, Any], work: Path) -> None:
    """Each section not skipped, the results written after each."""
    precision = "int8"  # what WALRUS_ENGINE__ENCODER_PRECISION=auto serves on the CPU
    if "demo" not in args.skip:
        out["limit"] = encoder_limit(args.bundle, precision)
        write_results("serve", out)
        out["walrus"] = serve_section(args.wrk, args.bundle, args.seconds, work, mix=True)
        write_results("serve", out)
    if "inline" not in args.skip:
        out["walrus_inline"] = serve_section(
            args.wrk, args.bundle, args.seconds, work, mix=False, WALRUS_MODE="inline"
        )
        write_results("serve", out)
    if "front" not in args.skip:
        out["transport"] = transport.measure(args.bundle)
        out["healthz"] = healthz_section(args.wrk, args.bundle, args.seconds)
        write_results("serve", out)
    if "peer" not in args.skip:
        out["peer"] = peer_section(args.wrk, args.bundle, args.seconds, work)
        write_results("serve", out)
    if "seed" not in args.skip:
        seed = args.seed_bundle
        if (seed / "current").exists() or (seed / "manifest.json").exists():
            out["seed"] = seed_section(args.wrk, seed, args.seconds, work)
        else:
            out["seed"] = {
                "skipped": f"no bundle at {seed}: run walrus bundle synthetic --out {seed}"
            }
        write_results("serve", out)
    if "roberta" not in args.skip:
        out["roberta_base"] = roberta_section(args.wrk, args.bundle, args.seconds, work)
        write_results("serve", out)


def _ms(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}"


def report(r: dict[str, Any]) -> str:
    """The Markdown tables of docs/benchmarks.md, from a results file."""
    m = r["machine"]
    lines = [
        f"Machine: {m['machine']}, {r['usable_cpus']} usable CPUs, Python {m['python']}; "
        f"{r['seconds_per_run']} s per wrk run.",
        "",
        *curve_table(r),
        *engine_tables(r),
        *seed_tables(r.get("seed", {})),
        *roberta_table(r.get("roberta_base")),
    ]
    return "\n".join(lines)


def curve_table(r: dict[str, Any]) -> list[str]:
    """walrus and the naive peer against the bare encoder, per concurrency; the mix."""
    lines: list[str] = []
    limit = r["limit"]
    best = limit["best_queries_per_s"]
    lines += [
        "| what | concurrency | requests/s | p50 ms | p95 ms | p99 ms | ÷ encoder limit | ÷ peer | wrk CPU |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| encoder alone ({limit['precision']}), batch 1 | | {limit['batch1_queries_per_s']:.0f} | | | | | | |",
        f"| encoder alone, best ({limit['best']}) | | {best:.0f} | | | | 1.00 | | |",
    ]
    peer = r.get("peer", {}).get("curve", {})
    for name, curve in (("walrus", r["walrus"]["curve"]), ("naive peer", peer)):
        for key, run in curve.items():
            ratio = ""
            if name == "walrus" and key in peer and peer[key].get("requests_per_s"):
                ratio = f"{run['requests_per_s'] / peer[key]['requests_per_s']:.1f}"
            lines.append(
                f"| {name}, all-distinct queries | {run['connections']} | {run['requests_per_s']:.0f} | "
                f"{_ms(run.get('p50_ms'))} | {_ms(run.get('p95_ms'))} | {_ms(run.get('p99_ms'))} | "
                f"{run['requests_per_s'] / best:.2f} | {ratio} | {run['load_generator_cpu_cores']:.2f} |"
            )
    mix = r["walrus"].get("mix")
    if mix:
        rate = mix.get("cache_hit_rate")
        lines.append(
            f"| walrus, realistic mix (cache hit rate {rate:.0%}) | {mix['connections']} | "
            f"{mix['requests_per_s']:.0f} | {_ms(mix.get('p50_ms'))} | {_ms(mix.get('p95_ms'))} | "
            f"{_ms(mix.get('p99_ms'))} | | | {mix['load_generator_cpu_cores']:.2f} |"
        )
    return lines


def engine_tables(r: dict[str, Any]) -> list[str]:
    """Process mode (one engine, fronts) against inline mode; the transport; one front."""
    limit = r["limit"]["best_queries_per_s"]
    lines = [
        "",
        "| mode (all-distinct queries) | concurrency | requests/s | ÷ encoder limit | p50 ms | p99 ms |",
        "|---|---|---|---|---|---|",
    ]
    for label, key in (("process: one engine, fronts", "walrus"), ("inline", "walrus_inline")):
        for run in r.get(key, {}).get("curve", {}).values():
            lines.append(
                f"| {label} | {run['connections']} | {run['requests_per_s']:.0f} | "
                f"{run['requests_per_s'] / limit:.2f} | {_ms(run.get('p50_ms'))} | "
                f"{_ms(run.get('p99_ms'))} |"
            )
    t, h = r.get("transport"), r.get("healthz")
    if t and h:
        lines += [
            "",
            "| front and engine | value |",
            "|---|---|",
            f"| round trip front ↔ engine, median (Status, concurrency 1) | {t['socket']['p50_ms']:.3f} ms |",
            f"| round trip front ↔ engine, p99 | {t['socket']['p99_ms']:.3f} ms |",
            f"| the same call in process (inline), median | {t['inline']['p50_ms']:.4f} ms |",
            f"| `/healthz` of one front, requests/s (access log on) | {h['front']['requests_per_s']:.0f} |",
            f"| `/healthz` of one front, access log off | {h['front_no_access_log']['requests_per_s']:.0f} |",
            f"| `/healthz` of a trivial async FastAPI app | {h['trivial']['requests_per_s']:.0f} |",
            f"| one front ÷ trivial (on / off) | {h['front_over_trivial']:.2f} / {h['front_no_access_log_over_trivial']:.2f} |",
        ]
    return lines


def seed_tables(seed: dict[str, Any]) -> list[str]:
    """The seed-scale bundle: start, memory, and latency per request kind."""
    lines: list[str] = []
    if "start_s" not in seed:
        return []
    gib = 1 << 30
    lines += [
        "",
        f"Seed scale: {seed['counts']['users']:,} users × {seed['counts']['items']:,} "
        f"items; indexes "
        + ", ".join(
            f"{n} `{e['factory']}` `{e['search_params']}` recall@100 "
            f"{e['recall_at_100']:.3f}, {e['speedup_over_flat']:.0f}× flat"
            for n, e in seed["indexes"].items()
        )
        + ".",
        "",
        "| seed-scale bundle, one engine and two fronts | value |",
        "|---|---|",
        f"| start (process spawn to answering) | {seed['start_s']:.1f} s |",
        f"| resident memory (PSS, all processes) | {seed['resident_bytes'] / gib:.2f} GiB |",
        f"| array and index files | {seed['array_bytes'] / gib:.2f} GiB |",
        f"| resident ÷ arrays | {seed['resident_over_arrays']:.2f} |",
    ]
    if "added_by_a_front_bytes" in seed:
        kinds = seed["resident_by_kind"]
        lines += [
            f"| of which the engine | {kinds['engine'] / gib:.2f} GiB |",
            f"| of which the two fronts | {kinds['fronts'] / (1 << 20):.0f} MiB |",
            f"| resident memory each further front adds (one front's PSS) | {seed['added_by_a_front_bytes'] / (1 << 20):.0f} MiB |",
        ]
    lines += [
        "",
        "| seed-scale request kind | concurrency | requests/s | p50 ms | p99 ms | errors |",
        "|---|---|---|---|---|---|",
    ]
    for kind in ("user", "query", "history"):
        run = seed[kind]
        lines.append(
            f"| {kind} | {run['connections']} | {run['requests_per_s']:.0f} | "
            f"{_ms(run.get('p50_ms'))} | {_ms(run.get('p99_ms'))} | "
            f"{run.get('errors_status', 0) + run.get('errors_other', 0)} |"
        )
    return lines


def roberta_table(rb: dict[str, Any] | None) -> list[str]:
    """The roberta-base-sized encoder: its limit and walrus against it."""
    lines: list[str] = []
    if not rb:
        return []
    rl = rb["limit"]
    lines += [
        "",
        "| roberta-base-sized encoder (random weights, int8) | concurrency | requests/s | p99 ms | ÷ encoder limit |",
        "|---|---|---|---|---|",
        f"| encoder alone, batch 1 | | {rl['batch1_queries_per_s']:.0f} | | |",
        f"| encoder alone, best ({rl['best']}) | | {rl['best_queries_per_s']:.0f} | | 1.00 |",
    ]
    for run in rb["walrus"]["curve"].values():
        lines.append(
            f"| walrus, all-distinct queries | {run['connections']} | {run['requests_per_s']:.0f} | "
            f"{_ms(run.get('p99_ms'))} | {run['requests_per_s'] / rl['best_queries_per_s']:.2f} |"
        )
    return lines


def plot(r: dict[str, Any], path: Path) -> None:
    """p99 latency against throughput, one line per server, a point per concurrency."""
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    series = [("walrus (MiniLM int8)", r["walrus"]["curve"])]
    if "peer" in r:
        series.append(("naive peer (same model, eager)", r["peer"]["curve"]))
    if "roberta_base" in r:
        series.append(("walrus (roberta-base size)", r["roberta_base"]["walrus"]["curve"]))
    for label, curve in series:
        runs = list(curve.values())
        xs = [run["requests_per_s"] for run in runs]
        ys = [run["p99_ms"] for run in runs]
        ax.plot(xs, ys, marker="o", label=label)
        for run, x, y in zip(runs, xs, ys, strict=True):
            ax.annotate(
                f"c{run['connections']}",
                (x, y),
                textcoords="offset points",
                xytext=(4, 4),
                fontsize=8,
            )
    ax.axvline(
        r["limit"]["best_queries_per_s"],
        color="grey",
        linestyle="--",
        label="encoder alone, best batch",
    )
    ax.set_xlabel("requests/s (all-distinct queries)")
    ax.set_ylabel("p99 latency (ms)")
    ax.set_yscale("log")
    ax.set_title(f"walrus vs a naive peer, {r['usable_cpus']} CPUs, wrk")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    raise SystemExit(main())
