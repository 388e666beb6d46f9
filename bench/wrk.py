"""Load from ``wrk`` (a compiled generator: the client must not be what limits the numbers).

Two Lua scripts: one sends all-distinct queries (a counter in each text, so no cache can
answer them), the other cycles through request bodies written to a file beforehand (one
JSON object per line: a realistic mix, or one request kind). Both print one ``WRKJSON`` line
with the counts and latency percentiles that ``run_wrk`` reads, along with the CPU the
load generator itself used.
"""

from __future__ import annotations

import json
import resource
import subprocess
from pathlib import Path
from typing import Any

import numpy as np

WORDS = [
    "space",
    "robot",
    "jazz",
    "mystery",
    "cooking",
    "quick",
    "vegetarian",
    "dinner",
    "night",
    "city",
    "river",
    "ocean",
    "story",
    "history",
    "music",
    "piano",
    "guitar",
    "crime",
    "detective",
    "family",
    "comedy",
    "drama",
    "war",
    "love",
    "future",
    "planet",
    "star",
    "galaxy",
    "chef",
    "kitchen",
    "spicy",
    "sweet",
    "garden",
    "travel",
    "mountain",
    "winter",
    "summer",
    "ghost",
    "castle",
]

_DONE = r"""
done = function(summary, latency, requests)
  io.write(string.format('WRKJSON {"requests": %d, "duration_us": %d, "errors_status": %d, ' ..
    '"errors_other": %d, "p50_ms": %.3f, "p95_ms": %.3f, "p99_ms": %.3f}\n',
    summary.requests, summary.duration, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50) / 1000, latency:percentile(95) / 1000, latency:percentile(99) / 1000))
end
"""


def distinct_queries(n: int, seed: int = 0, words: int = 3) -> list[str]:
    """``n`` queries that never repeat (each ends in its own number), of ``words`` random
    words from ``WORDS``: what the benchmarks encode when no cache may help."""
    rng = np.random.default_rng(seed)
    picks = rng.integers(len(WORDS), size=(n, words))
    return [" ".join(WORDS[j] for j in row) + f" {i}" for i, row in enumerate(picks.tolist())]


DISTINCT_QUERIES = (
    "local words = {"
    + ",".join(f'"{w}"' for w in WORDS)
    + r"""}
local counter = 0
-- prefix must be a global: thread:set() sets the thread's global, which a local would hide
-- (each thread would then send the same "distinct" queries as the others).
prefix = 0
setup = function(thread) prefix = prefix + 1; thread:set("prefix", prefix) end
init = function(args) math.randomseed(prefix * 7919) end
request = function()
  counter = counter + 1
  local q = words[math.random(#words)] .. " " .. words[math.random(#words)] .. " " ..
            words[math.random(#words)] .. " " .. prefix .. "-" .. counter
  return wrk.format("POST", "/v1/recommend", {["Content-Type"] = "application/json"},
                    '{"query": "' .. q .. '", "k": 10}')
end
"""
    + _DONE
)
"""All-distinct query-only requests for 10 items."""

BODIES_FROM_FILE = (
    r"""
local bodies = {}
local position = 0
prefix = 0  -- a global, set per thread by setup (see the distinct-queries script)
setup = function(thread) prefix = prefix + 1; thread:set("prefix", prefix) end
init = function(args)
  for line in io.lines(args[1]) do bodies[#bodies + 1] = line end
  position = (prefix * 7919) % #bodies
end
request = function()
  position = position % #bodies + 1
  return wrk.format("POST", "/v1/recommend", {["Content-Type"] = "application/json"},
                    bodies[position])
end
"""
    + _DONE
)
"""Cycles through the lines of the file given after ``--``, each thread from its own offset."""


def write_bodies(path: Path, bodies: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(b) + "\n" for b in bodies))
    return path


def run_wrk(
    wrk: str,
    url: str,
    path: str,
    connections: int,
    seconds: int,
    threads: int,
    script: Path | None,
    script_args: list[str] | None = None,
) -> dict[str, Any]:
    """One wrk run: requests/s, p50/p95/p99 ms, error counts and the load generator's CPU
    (cores busy on average), from the script's ``WRKJSON`` line."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    cmd = [wrk, f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--timeout", "5s"]
    if script is not None:
        cmd += ["-s", str(script)]
    cmd.append(url + path)
    if script_args:
        cmd += ["--", *script_args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    result: dict[str, Any] = {"connections": connections, "seconds": seconds}
    for line in proc.stdout.splitlines():
        if line.startswith("WRKJSON "):
            result.update(json.loads(line[len("WRKJSON ") :]))
    if "requests" in result:
        result["requests_per_s"] = result["requests"] / (result["duration_us"] / 1e6)
    else:
        lines = [ln for ln in proc.stdout.splitlines() if "Requests/sec" in ln]
        result["requests_per_s"] = float(lines[0].split()[-1]) if lines else None
        result["raw"] = proc.stdout[-600:] + proc.stderr[-300:]
    result["load_generator_cpu_cores"] = cpu_s / seconds
    return result


def metric_summary(text: str) -> dict[str, float]:
    """Batch sizes, per-stage seconds and cache counts from a ``/metrics`` exposition."""
    values: dict[str, float] = {}
    wanted = (
        "walrus_batch_size_sum",
        "walrus_batch_size_count",
        "walrus_stage_seconds_sum",
        "walrus_stage_seconds_count",
        "walrus_query_cache_",
    )
    for line in text.splitlines():
        if line.startswith("#") or " " not in line:
            continue
        key, value = line.rsplit(" ", 1)
        if key.startswith(wanted):
            values[key] = float(value)
    return values
