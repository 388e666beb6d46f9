"""The GPU check: WALS on CUDA, FAISS GPU, the ONNX CUDA provider and GPU serving, in one
script that writes what it measured to ``OUT/gpu_check.json`` as it goes.

    python -m bench.gpu_check --out DIR --bundle BUNDLE [--smoke] [--budget-s 420]

Each section is timed and caught: a failed section records its error and the rest still
run, and a run cut short leaves what it measured so far. ``--smoke`` shrinks every size so
that the script runs on a CPU machine in about a minute (the test suite runs it that way);
without CUDA every GPU path reports the CPU fallback it took. The run on the H100 machine is
described in docs/benchmarks.md (GPU section) and docs/deployment.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from bench.common import median_ms
from bench.wrk import DISTINCT_QUERIES, WORDS, distinct_queries, metric_summary, run_wrk
from export.format import writable_copy


class Results:
    """A JSON document rewritten (temp file, then rename) after every change."""

    def __init__(self, path: Path, deadline: float) -> None:
        self.path = path
        self.deadline = deadline
        self.data: dict[str, Any] = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        self.write()

    def write(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=2, default=_plain))
        os.replace(tmp, self.path)

    def left(self) -> float:
        return self.deadline - time.monotonic()

    @contextmanager
    def section(self, name: str):  # type: ignore[no-untyped-def]
        out: dict[str, Any] = {}
        self.data[name] = out
        start = time.perf_counter()
        print(f"== {name} ({self.left():.0f} s left)", flush=True)
        try:
            yield out
            out["ok"] = True
        except Exception as exc:
            out["ok"] = False
            out["error"] = f"{type(exc).__name__}: {exc}"
            out["traceback"] = traceback.format_exc().splitlines()[-12:]
            print(traceback.format_exc(), flush=True)
        finally:
            out["seconds"] = round(time.perf_counter() - start, 2)
            self.write()


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def power_law_matrix(n_users: int, n_items: int, nnz: int, seed: int) -> sp.csr_matrix:
    """Users x items implicit matrix: uniform users, power-law items, duplicates merged."""
    rng = np.random.default_rng(seed)
    users = rng.integers(0, n_users, size=nnz, dtype=np.int64)
    items = np.minimum((n_items * rng.random(nnz) ** 2.0).astype(np.int64), n_items - 1)
    keys = np.unique(users * n_items + items)
    rows, cols = keys // n_items, (keys % n_items).astype(np.int32)
    indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=n_users))])
    data = np.ones(len(keys), dtype=np.float64)
    return sp.csr_matrix((data, cols, indptr), shape=(n_users, n_items))


def clustered_vectors(n: int, dim: int, clusters: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(clusters, dim)).astype(np.float32)
    labels = rng.integers(0, clusters, size=n)
    return (centers[labels] + 0.3 * rng.normal(size=(n, dim)).astype(np.float32)).astype(np.float32)


# ---------------------------------------------------------------------------------- sections
def env_section(out: dict[str, Any]) -> None:
    import faiss
    import onnxruntime as ort
    import torch

    out["python"] = platform.python_version()
    out["cpus"] = len(os.sched_getaffinity(0))
    out["torch"] = torch.__version__
    out["torch_cuda"] = bool(torch.cuda.is_available())
    if torch.cuda.is_available():
        out["gpu"] = torch.cuda.get_device_name(0)
    out["faiss"] = faiss.__version__
    out["faiss_gpus"] = int(getattr(faiss, "get_num_gpus", lambda: 0)())
    out["onnxruntime"] = ort.__version__
    out["ort_available_providers"] = ort.get_available_providers()
    if shutil.which("nvidia-smi"):
        query = "--query-gpu=name,memory.total,driver_version"
        out["nvidia_smi"] = subprocess.run(
            ["nvidia-smi", query, "--format=csv,noheader"], capture_output=True, text=True
        ).stdout.strip()


def wals_parity_section(out: dict[str, Any], smoke: bool) -> None:
    """The same fit on the CPU and on CUDA: loss and factors agree."""
    import torch

    from models.wals import WALS

    n_users, n_items, nnz = (2_000, 500, 20_000) if smoke else (50_000, 10_000, 1_000_000)
    matrix = power_law_matrix(n_users, n_items, nnz, seed=1)
    out["data"] = {"users": n_users, "items": n_items, "nnz": matrix.nnz, "dim": 32}
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    out["devices"] = devices
    for solver in ("cg", "cholesky"):
        fits = {}
        for device in devices:
            model = WALS(dim=32, regularization=0.05, iterations=5, solver=solver, device=device)
            start = time.perf_counter()
            model.fit(matrix)
            fits[device] = model
            out[f"{solver}_{device}"] = {
                "fit_s": round(time.perf_counter() - start, 3),
                "loss": model.history.loss,
                "seconds_per_iteration": model.history.seconds,
            }
        if "cuda" in fits:
            cpu, gpu = fits["cpu"], fits["cuda"]
            loss_rel = abs(cpu.history.loss[-1] - gpu.history.loss[-1]) / abs(cpu.history.loss[-1])
            item_diff = np.abs(cpu.item_factors - gpu.item_factors)
            user_diff = np.abs(cpu.user_factors - gpu.user_factors)
            scale = float(np.abs(cpu.user_factors).max())
            out[f"{solver}_agreement"] = {
                "loss_relative_diff": loss_rel,
                "loss_within_1e-4": loss_rel <= 1e-4,
                "item_factors_max_abs_diff": float(item_diff.max()),
                "user_factors_max_abs_diff": float(user_diff.max()),
                "user_factors_max_abs": scale,
                "user_factors_relative_frobenius": float(
                    np.linalg.norm(cpu.user_factors - gpu.user_factors)
                    / np.linalg.norm(cpu.user_factors)
                ),
            }


def faiss_section(out: dict[str, Any], res: Results, smoke: bool, bundle: Path | None) -> None:
    """GPU indexes against the exact oracle, thread safety through the service's lock, the
    2048-result limit, and milliseconds per query."""
    import faiss
    from faiss.contrib.evaluation import knn_intersection_measure

    from export.faiss_index import build_index
    from export.runtime import GPU_MAX_K, load_index
    from models.config import IndexConfig

    n, dim, n_queries = (5_000, 16, 64) if smoke else (500_000, 64, 1_000)
    vectors = clustered_vectors(n, dim, clusters=max(10, n // 500), seed=2)
    queries = clustered_vectors(n_queries, dim, clusters=max(10, n // 500), seed=2)
    out["data"] = {"items": n, "dim": dim, "queries": n_queries, "k": 100}
    _, truth = faiss.knn(queries, vectors, 100, metric=faiss.METRIC_INNER_PRODUCT)
    tmp = Path(tempfile.mkdtemp(prefix="gpu-check-faiss-"))
    for kind in ("flat", "ivf"):
        entry: dict[str, Any] = {}
        out[kind] = entry
        built = build_index(vectors, IndexConfig(index_type=kind))
        entry["built_on"], entry["factory"] = built.built_on, built.factory
        path = tmp / f"{kind}.faiss"
        faiss.write_index(built.index, str(path))
        served = load_index(path, kind, built.search_params, use_gpu=True)
        entry["served_on"] = served.device
        ids, _ = served.search(queries, 100)
        entry["recall_at_100"] = knn_intersection_measure(ids, truth)
        cpu_ids, _ = faiss_search_cpu(served, queries, 100)
        entry["recall_at_100_cpu_copy"] = knn_intersection_measure(cpu_ids, truth)
        # Many threads at once through the service's lock: each result must equal the
        # sequential one.
        entry["threads"] = threaded_search_check(served, queries, threads=16)
        # More than the GPU's limit: served from the CPU copy, same as the CPU index.
        big = min(GPU_MAX_K + 500, n)
        big_ids, _ = served.search(queries[:4], big)
        ref_ids, _ = faiss_search_cpu(served, queries[:4], big)
        entry["k_above_gpu_limit"] = {
            "k": big,
            "equal_to_cpu": bool(np.array_equal(big_ids, ref_ids)),
        }
        entry["timing"] = faiss_timing(served, queries)
        res.write()
    if bundle is not None:
        out["bundle_indexes"] = bundle_index_recall(bundle)
    shutil.rmtree(tmp, ignore_errors=True)


def faiss_timing(served: Any, queries: np.ndarray) -> dict[str, float]:
    """Milliseconds per query where the index serves and on its CPU copy, alone and in 64s."""
    timing: dict[str, float] = {}
    for batch in (1, 64):
        q = queries[:batch]
        timing[f"{served.device}_ms_per_query_batch{batch}"] = (
            median_ms(lambda q=q, s=served: s.search(q, 100), repeat=20, warmup=2) / batch
        )
        timing[f"cpu_ms_per_query_batch{batch}"] = (
            median_ms(lambda q=q, s=served: faiss_search_cpu(s, q, 100), repeat=5, warmup=2) / batch
        )
    return timing


def bundle_index_recall(bundle: Path) -> dict[str, Any]:
    """The bundle's own indexes as served (GPU copies where possible) against exact search."""
    import faiss
    from faiss.contrib.evaluation import knn_intersection_measure

    from export.runtime import load_index

    out: dict[str, Any] = {}
    manifest = json.loads((bundle / "manifest.json").read_text())
    item_vectors = {
        "wals": np.load(bundle / "item_factors.npy"),
        "text": np.load(bundle / "item_text_embeddings.npy"),
    }
    for name, meta in manifest["indexes"].items():
        served = load_index(bundle / f"{name}.faiss", meta["kind"], meta["search_params"], True)
        vecs = item_vectors[name]
        k = min(100, len(vecs))
        ids, _ = served.search(vecs[:200], k)
        _, exact = faiss.knn(vecs[:200], vecs, k, metric=faiss.METRIC_INNER_PRODUCT)
        out[name] = {
            "kind": meta["kind"],
            "served_on": served.device,
            "recall_vs_exact": knn_intersection_measure(ids, exact),
        }
    return out


def threaded_search_check(served: Any, queries: np.ndarray, threads: int) -> dict[str, Any]:
    """Search from ``threads`` threads at once; count results that differ from sequential
    ones, and errors (a GPU index entered from two threads can fail or return garbage)."""
    singles = [served.search(queries[i : i + 1], 100)[0][0] for i in range(len(queries))]
    mismatches = [0]
    errors: list[str] = []

    def worker(offset: int) -> None:
        try:
            for i in range(offset, len(queries), threads):
                got = served.search(queries[i : i + 1], 100)[0][0]
                if not np.array_equal(got, singles[i]):
                    mismatches[0] += 1
        except Exception as exc:  # recorded, not raised: the point is to see it
            errors.append(f"{type(exc).__name__}: {exc}")

    pool = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return {
        "threads": threads,
        "searches": len(queries),
        "mismatches": mismatches[0],
        "errors": errors[:3],
    }


def faiss_search_cpu(served: Any, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    from export.faiss_index import search

    return search(served.cpu_index, queries, k)


def _profile_providers(
    session_factory: Callable[[Any], Any], feeds: dict[str, np.ndarray]
) -> dict[str, int]:
    """Nodes per execution provider in one profiled run (onnxruntime's own trace)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.enable_profiling = True
    options.profile_file_prefix = tempfile.mktemp(prefix="ort-profile-")
    session = session_factory(options)
    session.run(None, feeds)
    trace = Path(session.end_profiling())
    counts: dict[str, int] = {}
    for event in json.loads(trace.read_text()):
        provider = event.get("args", {}).get("provider")
        if event.get("cat") == "Node" and provider and event["name"].endswith("_kernel_time"):
            counts[provider] = counts.get(provider, 0) + 1
    trace.unlink(missing_ok=True)
    return counts


@dataclass
class OnnxRun:
    """What every encoder measurement of the ONNX section shares."""

    res: Results
    texts: list[str]
    batches: tuple[int, ...]
    cuda: bool

    def encode_everywhere(
        self, name: str, model: Path, tokenizer: Path, length: int, entry: dict[str, Any]
    ) -> dict[str, np.ndarray]:
        """The encoder on the CPU provider and (when there is one) CUDA: where its nodes
        ran, its speed per batch size, tokenisation's cost; its outputs by place."""
        import onnxruntime as ort

        from export.runtime import OnnxTextEncoder

        gpu = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        outputs = {}
        for where, providers in (("cpu", ["CPUExecutionProvider"]), ("cuda", gpu)):
            if where == "cuda" and not self.cuda:
                continue
            enc = OnnxTextEncoder(model, tokenizer, length, providers)
            item: dict[str, Any] = {"session_providers": enc.providers}
            outputs[where] = enc.encode(self.texts)
            ids, mask = enc.tokenize(self.texts[:8])
            item["nodes_by_provider"] = _profile_providers(
                lambda o, m=model, p=providers: ort.InferenceSession(str(m), o, providers=p),
                {"input_ids": ids, "attention_mask": mask},
            )
            for batch in self.batches:
                if where == "cpu" and batch > 32:
                    continue
                qs = distinct_queries(batch, 4, words=4)
                ms = median_ms(
                    lambda qs=qs, enc=enc: enc.encode(qs), repeat=10 if batch > 1 else 30, warmup=2
                )
                item[f"batch{batch}_ms"] = ms
                item[f"batch{batch}_queries_per_s"] = batch / ms * 1e3
            # Tokenisation alone, single thread: the HTTP path's CPU cost per query.
            qs = distinct_queries(256, 5, words=4)
            item["tokenize_256_ms"] = median_ms(
                lambda qs=qs, enc=enc: enc.tokenize(qs), repeat=10, warmup=2
            )
            entry[f"{name}_{where}"] = item
            self.res.write()
        return outputs


def onnx_section(out: dict[str, Any], res: Results, smoke: bool, bundle: Path, work: Path) -> None:
    """Every encoder precision on the CPU and CUDA providers: where it ran, parity, speed;
    the head on CUDA; a roberta-base-sized encoder."""
    import onnxruntime as ort

    texts = json.loads((bundle / "parity" / "texts.json").read_text()) + distinct_queries(
        32, 3, words=4
    )
    cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    run = OnnxRun(res, texts, (1, 32) if smoke else (1, 32, 256), cuda)
    out["demo_encoder"] = demo_encoder_parity(run, bundle)
    out["head"] = {}
    head_speed(out["head"], bundle, cuda)
    res.write()
    # A roberta-base-sized encoder (random weights: same cost as the real one).
    if res.left() < 120 and not smoke:
        out["roberta_base"] = {"skipped": "too little time left"}
        return
    rb: dict[str, Any] = {}
    out["roberta_base"] = rb
    path = build_roberta_base_onnx(work, smoke)
    rb["config"] = "tiny" if smoke else "roberta-base sizes: 768 hidden, 12 layers, 12 heads"
    outs = run.encode_everywhere("fp32", path / "encoder.onnx", path / "tokenizer.json", 64, rb)
    tokenizer = path / "tokenizer.json"
    outs16 = run.encode_everywhere("fp16", path / "encoder.fp16.onnx", tokenizer, 64, rb)
    if "cuda" in outs:
        rb["fp32_cuda"]["max_abs_diff_vs_cpu_fp32"] = float(
            np.abs(outs["cuda"] - outs["cpu"]).max()
        )
        rb["fp16_cuda"]["min_cosine_vs_cpu_fp32"] = float(
            ((outs16["cuda"] * outs["cpu"]).sum(1)).min()
        )


def demo_encoder_parity(run: OnnxRun, bundle: Path) -> dict[str, Any]:
    """The bundle's encoders, each precision against the CPU fp32 one."""
    max_length = json.loads((bundle / "tokenizer_config.json").read_text())["max_length"]
    demo: dict[str, Any] = {}
    reference = None
    for precision, file in (
        ("fp32", "encoder.onnx"),
        ("fp16", "encoder.fp16.onnx"),
        ("int8", "encoder.int8.onnx"),
    ):
        if not (bundle / file).is_file():
            demo[f"{precision}_missing"] = True
            continue
        outs = run.encode_everywhere(
            precision, bundle / file, bundle / "tokenizer.json", max_length, demo
        )
        reference = outs["cpu"] if reference is None else reference
        for where, emb in outs.items():
            entry = demo[f"{precision}_{where}"]
            entry["max_abs_diff_vs_cpu_fp32"] = float(np.abs(emb - reference).max())
            entry["min_cosine_vs_cpu_fp32"] = float(((emb * reference).sum(1)).min())
    if run.cuda:
        fp32_cuda = demo.get("fp32_cuda", {})
        demo["cuda_fp32_parity_within_1e-3"] = fp32_cuda.get("max_abs_diff_vs_cpu_fp32", 1) <= 1e-3
    return demo


def head_speed(head: dict[str, Any], bundle: Path, cuda: bool) -> None:
    """The head on 200 rows, on the CPU and (when there is one) CUDA, and their agreement."""
    from export.runtime import OnnxHead

    features = np.load(bundle / "parity" / "head_features.npy")
    rows = np.repeat(features, 4, axis=0)[:200]
    cpu_head = OnnxHead(bundle / "head.onnx")
    if cuda:
        gpu_head = OnnxHead(bundle / "head.onnx", ["CUDAExecutionProvider", "CPUExecutionProvider"])
        head["cuda_providers"] = list(gpu_head.session.get_providers())
        head["max_abs_diff_cuda_vs_cpu"] = float(
            np.abs(gpu_head.score(features) - cpu_head.score(features)).max()
        )
        head["cuda_ms_200_rows"] = median_ms(lambda: gpu_head.score(rows), repeat=30, warmup=2)
    head["cpu_ms_200_rows"] = median_ms(lambda: cpu_head.score(rows), repeat=30, warmup=2)


def build_roberta_base_onnx(work: Path, smoke: bool) -> Path:
    """Random roberta-base-sized encoder exported as the bundle exports (fp32 and fp16)."""
    from export.bundle import write_tokenizer
    from export.onnx import convert_to_fp16, export_encoder
    from models.encoder import TextEncoder, build_tiny_roberta

    path = work / "roberta-base-random"
    if (path / "encoder.fp16.onnx").is_file():
        return path
    sizes: dict[str, int] = (
        {"hidden_size": 32, "layers": 2, "heads": 2}
        if smoke
        else {
            "hidden_size": 768,
            "layers": 12,
            "heads": 12,
            "intermediate_size": 3072,
            "max_position": 514,
            "vocab_size": 8000,
        }
    )
    texts = [" ".join(WORDS[i:] + WORDS[:i]) for i in range(len(WORDS))] * 20
    build_tiny_roberta(texts, path / "hf", **sizes)
    encoder = TextEncoder.load(str(path / "hf"), max_length=64)
    export_encoder(encoder, path / "encoder.onnx")
    convert_to_fp16(path / "encoder.onnx", path / "encoder.fp16.onnx")
    write_tokenizer(encoder, path)
    return path


def roberta_bundle(bundle: Path, encoder_dir: Path, work: Path) -> Path:
    """The demo bundle with its encoder swapped for the roberta-base-sized one: item texts
    re-encoded, text index rebuilt, a random head of the new width, manifest rewritten. Its
    ranking means nothing; its cost per request is a roberta-base deployment's."""
    import faiss

    from export.format import MANIFEST, file_table
    from export.runtime import OnnxTextEncoder
    from models.core.features import N_FEATURES
    from models.head import ScoreHead

    out = work / "roberta-bundle"
    if out.exists():
        shutil.rmtree(out)
    writable_copy(bundle, out)
    for name in ("encoder.onnx", "encoder.fp16.onnx", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy2(encoder_dir / name, out / name)
    (out / "encoder.int8.onnx").unlink(missing_ok=True)
    titles = [it["title"] for it in json.loads((out / "items.json").read_text())]
    enc = OnnxTextEncoder(out / "encoder.onnx", out / "tokenizer.json", 64)
    embeddings = np.concatenate(
        [enc.encode(titles[i : i + 256]) for i in range(0, len(titles), 256)]
    )
    np.save(out / "item_text_embeddings.npy", embeddings.astype(np.float32))
    index = faiss.IndexFlatIP(embeddings.shape[1])
    index.add(embeddings)
    faiss.write_index(index, str(out / "text.faiss"))
    manifest = json.loads((out / MANIFEST).read_text())
    width = N_FEATURES
    head = ScoreHead()
    rng = np.random.default_rng(0)
    head.weights = {
        "w1": (rng.normal(size=(width, 128)) * 0.05).astype(np.float32),
        "b1": np.zeros(128, np.float32),
        "w2": (rng.normal(size=128) * 0.05).astype(np.float32),
        "b2": np.zeros(1, np.float32),
    }
    from export.onnx import export_head

    export_head(head, out / "head.onnx")
    manifest["dims"]["text"], manifest["dims"]["features"] = int(embeddings.shape[1]), width
    manifest["indexes"]["text"].update(kind="flat", factory="Flat", search_params="")
    manifest["encoder"] = {
        **manifest["encoder"],
        "name": "random roberta-base-sized",
        "max_length": 64,
    }
    manifest["files"] = {k: v.model_dump() for k, v in file_table(out).items()}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return out


def serving_section(
    out: dict[str, Any],
    res: Results,
    smoke: bool,
    bundle: Path,
    work: Path,
    wrk: str | None,
    workers_list: tuple[int, ...] = (1, 4),
) -> None:
    """The service on this machine's device with dynamic batching, loaded by wrk."""
    if wrk is None:
        out["skipped"] = "no wrk binary (pass --wrk)"
        return
    script = work / "queries.lua"
    script.write_text(DISTINCT_QUERIES)
    seconds = 3 if smoke else 10
    bundles = [("demo", bundle)]
    rb_dir = build_roberta_base_onnx(work, smoke)
    bundles.append(("roberta_base", roberta_bundle(bundle, rb_dir, work)))
    env = {"WALRUS_ENGINE__MAX_BATCH": "256", "WALRUS_ENGINE__SESSIONS": "2"}
    configs = [(f"workers{w}", env, w) for w in workers_list]
    for name, path in bundles:
        for label, env, workers in configs:
            if res.left() < 60 and not smoke:
                out[f"{name}_{label}"] = {"skipped": "too little time left"}
                continue
            entry: dict[str, Any] = {"env": env, "uvicorn_workers": workers}
            out[f"{name}_{label}"] = entry
            serve_under_wrk(
                entry, res, path, wrk, script, seconds, smoke, with_healthz=name == "demo"
            )


def serve_under_wrk(
    entry: dict[str, Any],
    res: Results,
    bundle: Path,
    wrk: str,
    script: Path,
    seconds: int,
    smoke: bool,
    with_healthz: bool,
) -> None:
    """One server configuration (``entry["env"]``, ``entry["uvicorn_workers"]``) under wrk
    at each concurrency; its readiness, a probe and its metrics."""
    import httpx

    from tests.support.servers import Server

    with Server(
        bundle,
        WALRUS_DEVICE="auto",
        WALRUS_LOG_LEVEL="warning",
        extra_args=["--workers", str(entry["uvicorn_workers"])],
        **entry["env"],
    ) as server:
        server.wait(timeout=120)
        entry["readyz"] = httpx.get(server.url + "/readyz").json()
        probe = httpx.post(server.url + "/v1/recommend", json={"query": "space robots", "k": 5})
        entry["probe_status"] = probe.status_code
        entry["probe_timings_ms"] = probe.json().get("timings_ms")
        for c in (8, 64) if smoke else (1, 32, 128, 512):
            entry[f"c{c}"] = run_wrk(
                wrk, server.url, "/v1/recommend", c, seconds, min(8, c), script
            )
            res.write()
        if with_healthz:
            entry["healthz_c128"] = run_wrk(
                wrk, server.url, "/healthz", 128, seconds // 2 or 1, 4, None
            )
        entry["metrics"] = metric_summary(httpx.get(server.url + "/metrics").text)
    res.write()


def wals_scale_section(out: dict[str, Any], res: Results, smoke: bool) -> None:
    """Seconds per iteration at 1M users x 100k items x ~50M interactions, dim 64: CUDA vs
    every CPU core, in the same run."""
    import torch

    from models.wals import WALS

    n_users, n_items, nnz = (20_000, 2_000, 200_000) if smoke else (1_000_000, 100_000, 52_000_000)
    start = time.perf_counter()
    matrix = power_law_matrix(n_users, n_items, nnz, seed=5)
    out["data"] = {
        "users": n_users,
        "items": n_items,
        "nnz": matrix.nnz,
        "dim": 64,
        "generate_s": round(time.perf_counter() - start, 2),
    }
    res.write()
    runs = [("cuda", 5)] if torch.cuda.is_available() else []
    runs.append(("cpu", 2))
    for device, iterations in runs:
        if res.left() < 90 and not smoke:
            out[device] = {"skipped": "too little time left"}
            continue
        model = WALS(dim=64, regularization=0.05, iterations=iterations, device=device)
        start = time.perf_counter()
        model.fit(matrix)
        total = time.perf_counter() - start
        out[device] = {
            "threads": torch.get_num_threads(),
            "iterations": iterations,
            "fit_s": round(total, 2),
            "seconds_per_iteration": model.history.seconds,
            "setup_and_loss_s": round(total - sum(model.history.seconds), 2),
            "loss": model.history.loss,
        }
        res.write()
    if "cuda" in out and "cpu" in out and "seconds_per_iteration" in out.get("cpu", {}):
        gpu_it = float(
            np.median(
                out["cuda"]["seconds_per_iteration"][1:] or out["cuda"]["seconds_per_iteration"]
            )
        )
        cpu_it = float(np.median(out["cpu"]["seconds_per_iteration"]))
        out["speedup_per_iteration"] = cpu_it / gpu_it


def report(paths: list[Path]) -> str:
    """The GPU tables of docs/benchmarks.md, from gpu_check.json files (later files add
    serving rows)."""
    runs = [json.loads(p.read_text()) for p in paths]
    full = next(r for r in runs if "wals_scale" in r)
    env = full["env"]
    lines = [
        f"Machine: {env.get('nvidia_smi', env.get('gpu'))}, {env['cpus']} CPU cores; "
        f"torch {env['torch']}, onnxruntime {env['onnxruntime']}, faiss {env['faiss']}."
    ]
    for table in (wals_table(full), faiss_table(full), onnx_table(full), serving_table(runs)):
        lines += table
    return "\n".join(lines)


def wals_table(full: dict[str, Any]) -> list[str]:
    """WALS on CUDA and the CPU: speed, and how far the two fits agree."""
    lines: list[str] = []
    lines += [
        "",
        "| WALS (dim 64) | seconds / iteration | setup + loss s | threads |",
        "|---|---|---|---|",
    ]
    ws = full["wals_scale"]
    d = ws["data"]
    for dev in ("cuda", "cpu"):
        if "seconds_per_iteration" in ws.get(dev, {}):
            r = ws[dev]
            lines.append(
                f"| {dev}, {d['users']:,} × {d['items']:,}, {d['nnz']:,} nnz | "
                f"{np.median(r['seconds_per_iteration']):.3f} | {r['setup_and_loss_s']} | {r['threads']} |"
            )
    if "speedup_per_iteration" in ws:
        lines.append(f"| speed-up per iteration | {ws['speedup_per_iteration']:.1f}× | | |")
    wp = full["wals_parity"]
    lines += [
        "",
        "| WALS CPU vs CUDA (same fit) | loss relative diff | max abs diff (items / users) |",
        "|---|---|---|",
    ]
    for solver in ("cg", "cholesky"):
        a = wp.get(f"{solver}_agreement")
        if a:
            lines.append(
                f"| {solver} | {a['loss_relative_diff']:.1e} | "
                f"{a['item_factors_max_abs_diff']:.1e} / {a['user_factors_max_abs_diff']:.1e} |"
            )
    return lines


def faiss_table(full: dict[str, Any]) -> list[str]:
    """FAISS GPU indexes: recall, speed, thread safety, the k limit."""
    lines: list[str] = []
    fa = full["faiss"]
    lines += [
        "",
        "| FAISS 500k × 64, k=100 | recall@100 | ms/query batch 1 (GPU / CPU) | ms/query batch 64 (GPU / CPU) | 16 threads: mismatches | k > 2048 |",
        "|---|---|---|---|---|---|",
    ]
    for kind in ("flat", "ivf"):
        e = fa.get(kind)
        if e:
            t = e["timing"]
            lines.append(
                f"| {kind} ({e['served_on']}) | {e['recall_at_100']:.5f} | "
                f"{t.get('gpu_ms_per_query_batch1', float('nan')):.3f} / {t['cpu_ms_per_query_batch1']:.3f} | "
                f"{t.get('gpu_ms_per_query_batch64', float('nan')):.4f} / {t['cpu_ms_per_query_batch64']:.4f} | "
                f"{e['threads']['mismatches']} | {'equal to CPU' if e['k_above_gpu_limit']['equal_to_cpu'] else 'DIFFERS'} |"
            )
    return lines


def onnx_table(full: dict[str, Any]) -> list[str]:
    """Each encoder on each provider: where its nodes ran, speed, parity."""
    lines: list[str] = []
    on = full["onnx"]
    lines += [
        "",
        "| encoder | provider | nodes on CUDA / CPU | queries/s batch 1 / 32 / 256 | vs CPU fp32 |",
        "|---|---|---|---|---|",
    ]
    for group, label in (("demo_encoder", "MiniLM (demo)"), ("roberta_base", "roberta-base size")):
        for key, item in on.get(group, {}).items():
            if not isinstance(item, dict) or "session_providers" not in item:
                continue
            nodes = item["nodes_by_provider"]
            qps = " / ".join(
                f"{item[f'batch{b}_queries_per_s']:,.0f}"
                for b in (1, 32, 256)
                if f"batch{b}_queries_per_s" in item
            )
            if "min_cosine_vs_cpu_fp32" in item and not key.startswith("fp32"):
                versus = f"min cosine {item['min_cosine_vs_cpu_fp32']:.5f}"
            elif "max_abs_diff_vs_cpu_fp32" in item:
                versus = f"max abs diff {item['max_abs_diff_vs_cpu_fp32']:.1e}"
            else:
                versus = ""
            lines.append(
                f"| {label} {key.rsplit('_', 1)[0]} | {key.rsplit('_', 1)[1]} | "
                f"{nodes.get('CUDAExecutionProvider', 0)} / {nodes.get('CPUExecutionProvider', 0)} | {qps} | {versus} |"
            )
    return lines


def serving_table(runs: list[dict[str, Any]]) -> list[str]:
    """Serving rows of every run, one per concurrency."""
    lines: list[str] = []
    lines += [
        "",
        "| serving (wrk, all-distinct queries) | uvicorn workers | connections | requests/s | p50 ms | p99 ms | mean batch | /healthz requests/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        for key, entry in run.get("serving", {}).items():
            if not isinstance(entry, dict) or "readyz" not in entry:
                continue
            m = entry.get("metrics", {})
            batch = m.get("walrus_batch_size_sum", 0) / max(m.get("walrus_batch_size_count", 1), 1)
            health = entry.get("healthz_c128", {}).get("requests_per_s")
            for c in (1, 32, 128, 512):
                r = entry.get(f"c{c}")
                if r and r.get("requests_per_s"):
                    lines.append(
                        f"| {key.rsplit('_', 1)[0]} ({entry['readyz']['encoder_precision']}, FAISS {entry['readyz']['faiss']}) | "
                        f"{entry['uvicorn_workers']} | {c} | {r['requests_per_s']:,.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
                        f"{batch:.1f} | {f'{health:,.0f}' if health and c == 128 else ''} |"
                    )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="Folder for gpu_check.json.")
    parser.add_argument("--bundle", type=Path, help="A bundle (or bundles dir).")
    parser.add_argument("--report", type=Path, nargs="+", help="Print the tables of these runs.")
    parser.add_argument("--smoke", action="store_true", help="Tiny sizes, for CPU machines.")
    parser.add_argument("--budget-s", type=float, default=420, help="Skip sections past this.")
    parser.add_argument("--wrk", default=shutil.which("wrk"), help="The wrk binary.")
    parser.add_argument("--sections", default="env,wals_parity,faiss,onnx,serving,wals_scale")
    parser.add_argument("--serve-workers", default="1,4", help="uvicorn worker counts to load.")
    args = parser.parse_args(argv)
    if args.report:
        print(report(args.report))
        return 0
    if args.out is None or args.bundle is None:
        parser.error("--out and --bundle are required (or --report FILES)")

    from export.format import resolve_bundle

    args.out.mkdir(parents=True, exist_ok=True)
    bundle = resolve_bundle(args.bundle)
    res = Results(args.out / "gpu_check.json", time.monotonic() + args.budget_s)
    work = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    wanted = args.sections.split(",")
    sections: list[tuple[str, Callable[[dict[str, Any]], None]]] = [
        ("env", env_section),
        ("wals_parity", lambda o: wals_parity_section(o, args.smoke)),
        ("faiss", lambda o: faiss_section(o, res, args.smoke, bundle)),
        ("onnx", lambda o: onnx_section(o, res, args.smoke, bundle, work)),
        (
            "serving",
            lambda o: serving_section(
                o,
                res,
                args.smoke,
                bundle,
                work,
                args.wrk,
                tuple(int(w) for w in args.serve_workers.split(",")),
            ),
        ),
        ("wals_scale", lambda o: wals_scale_section(o, res, args.smoke)),
    ]
    for name, fn in sections:
        if name not in wanted:
            continue
        if res.left() <= 0:
            res.data[name] = {"skipped": "budget spent"}
            res.write()
            continue
        with res.section(name) as out:
            fn(out)
    res.data["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    res.write()
    failed = [k for k, v in res.data.items() if isinstance(v, dict) and v.get("ok") is False]
    print("failed sections:", failed or "none", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
