"""docker-compose.yml: every serving container gets the same hardening (`make docker-test`
checks it on a running `api` container; this checks the file for the others)."""

from __future__ import annotations

from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
HARDENING = ("read_only", "tmpfs", "cap_drop", "security_opt", "pids_limit", "stop_grace_period")


def test_every_serving_container_is_hardened_alike():
    services = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]
    api, gpu = services["api"], services["api-gpu"]
    assert api["read_only"] is True and api["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in api["security_opt"]
    for key in HARDENING:
        assert gpu.get(key) == api.get(key), key
    for service in (api, gpu):
        assert service["cpus"] and service["mem_limit"]
        assert all(v.endswith(":ro") for v in service["volumes"])


def test_redis_keeps_every_acknowledged_event_on_a_volume_and_both_apis_use_it():
    services = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]
    redis = services["redis"]
    assert redis["build"]["target"] == "redis" and redis["read_only"] is True
    assert any(v.startswith("redis-data:/data") for v in redis["volumes"])
    dockerfile = (REPO / "Dockerfile").read_text()
    stage = dockerfile.split("AS redis", 1)[1].split("\nFROM ", 1)[0]
    assert '"--appendonly", "yes", "--appendfsync", "always"' in stage
    for name in ("api", "api-gpu"):
        service = services[name]
        assert service["environment"]["WALRUS_EVENTS__REDIS_URL"].endswith("redis://redis:6379/0}")
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"


def test_the_retrain_job_writes_where_the_api_reads_with_the_api_s_redis():
    """`--profile retrain`: the pipeline image on the same artifacts volume (its candidate
    and experiment plan land beside the bundle the api serves) and the same Redis."""
    services = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]
    retrain, api, pipeline = services["retrain"], services["api"], services["pipeline"]
    assert retrain["profiles"] == ["retrain"] and retrain["image"] == pipeline["image"]
    assert retrain["command"][0] == "retrain"
    volume = {v.split(":")[0] for v in retrain["volumes"]}
    assert volume == {v.split(":")[0] for v in api["volumes"]} == {"artifacts"}
    url = "WALRUS_EVENTS__REDIS_URL"
    assert retrain["environment"][url] == api["environment"][url]
    assert retrain["depends_on"]["redis"]["condition"] == "service_healthy"
