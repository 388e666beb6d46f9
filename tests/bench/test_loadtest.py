"""The load-test report is read from locust's own CSV, not invented."""

from __future__ import annotations

from bench.loadtest import parse_stats
from export.format import writable_copy

CSV = """Type,Name,Request Count,Failure Count,Median Response Time,Average Response Time,Min Response Time,Max Response Time,Average Content Size,Requests/s,Failures/s,50%,66%,75%,80%,90%,95%,98%,99%,99.9%,99.99%,100%
POST,user,100,2,12,14.5,3,80,900,33.3,0.6,12,14,15,16,20,30,40,50,80,80,80
,Aggregated,100,2,12,14.5,3,80,900,33.3,0.6,12,14,15,16,20,30,40,50,80,80,80
"""


def locust_args(url: str, name: str) -> list[str]:
    """Two users for three seconds: a run that finishes quickly and still makes requests."""
    return ["--host", url, "--users", "2", "--spawn-rate", "2", "--run-time", "3s", "--name", name]


def test_parse_stats(tmp_path):
    path = tmp_path / "stats_stats.csv"
    path.write_text(CSV)
    rows = parse_stats(path)
    assert [r["name"] for r in rows] == ["user", "Aggregated"]
    user = rows[0]
    assert user["requests"] == 100 and user["failures"] == 2
    assert (user["p50_ms"], user["p95_ms"], user["p99_ms"]) == (12.0, 30.0, 50.0)
    assert user["requests_per_s"] == 33.3


def test_the_exit_code_says_whether_any_request_failed(server, tiny_bundle, tmp_path):
    """A real locust run: 0 against a healthy service, 1 when requests fail."""

    from bench.loadtest import main
    from tests.support.servers import Server

    ok = main(locust_args(server.url, "test-loadtest-ok"))
    assert ok == 0
    broken = tmp_path / "bundle"
    writable_copy(tiny_bundle, broken)
    (broken / "head.onnx").write_bytes(b"not a model")
    with Server(broken) as srv:
        srv.wait(ready=False)
        failing = main(locust_args(srv.url, "test-loadtest-failing"))
    assert failing == 1
