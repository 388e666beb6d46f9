#!/usr/bin/env bash
# make docker-test: lint the Dockerfile, validate the compose file, then really build the
# serving image, run it with a bundle made on the host, and check its answer.
#
# Works on a machine with no Docker engine running and no registry for base images (see
# docs/deployment.md): it starts a private dockerd, and when python:3.11-slim is not there
# it imports a Debian bookworm stand-in made with debootstrap from this machine's own apt
# mirror (read from its apt sources, never hard-coded). State is kept in WALRUS_DOCKER_STATE
# (default /var/tmp/walrus-docker) so later runs reuse the base image and layer cache.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
STATE=${WALRUS_DOCKER_STATE:-/var/tmp/walrus-docker}
IMAGE=walrus-serve:docker-test
NAME=walrus-docker-test-$$
REDIS=walrus-docker-redis-$$
say() { printf '\n== %s\n' "$*"; }

say "hadolint"
"$VENV/bin/hadolint" --failure-threshold error Dockerfile

say "docker compose config"
COMPOSE=$("$VENV/bin/python" -c "import compose, os; print(os.path.join(os.path.dirname(compose.__file__), 'docker-compose'))")
WALRUS_CONFIG=configs/demo.toml "$COMPOSE" -f docker-compose.yml config --quiet
if "$COMPOSE" -f docker-compose.yml config --quiet 2>/dev/null; then
  echo "compose accepted a missing WALRUS_CONFIG: required variables must fail fast" >&2
  exit 1
fi

if ! command -v dockerd >/dev/null || ! command -v debootstrap >/dev/null; then
  say "installing docker.io and debootstrap (apt)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker.io debootstrap >/dev/null
fi

say "private dockerd"
mkdir -p "$STATE/data" "$STATE/exec"
SOCK="$STATE/docker.sock"
dockerd --data-root "$STATE/data" --exec-root "$STATE/exec" --pidfile "$STATE/dockerd.pid" \
  -H "unix://$SOCK" --storage-driver overlay2 --iptables=false --ip6tables=false \
  --ip-masq=false --bridge=none >"$STATE/dockerd.log" 2>&1 &
DOCKERD=$!
export DOCKER_HOST="unix://$SOCK"
cleanup() {
  docker rm -f "$NAME" "$REDIS" >/dev/null 2>&1 || true
  docker volume rm -f "$REDIS" >/dev/null 2>&1 || true
  kill "$DOCKERD" 2>/dev/null || true
  wait "$DOCKERD" 2>/dev/null || true
  umount "$STATE/exec/netns/default" 2>/dev/null || true
}
trap cleanup EXIT
for _ in $(seq 1 50); do docker info >/dev/null 2>&1 && break; sleep 0.2; done
docker info >/dev/null

if ! docker image inspect python:3.11-slim >/dev/null 2>&1; then
  if [ ! -s "$STATE/base.tar" ]; then
    say "debootstrap: a bookworm stand-in for python:3.11-slim"
    MIRROR=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
    [ -n "$MIRROR" ] || MIRROR=$(awk '/^deb / {print $2; exit}' /etc/apt/sources.list)
    ROOTFS="$STATE/rootfs"
    rm -rf "$ROOTFS"
    debootstrap --variant=minbase \
      --include=python3,python3-pip,python3-venv,python-is-python3,ca-certificates \
      bookworm "$ROOTFS" "$MIRROR" >"$STATE/debootstrap.log" 2>&1
    rm -f "$ROOTFS"/usr/lib/python3.*/EXTERNALLY-MANAGED
    # A TLS-intercepting proxy's CA must be trusted inside too; copied at run time only.
    if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
      cp /usr/local/share/ca-certificates/*.crt "$ROOTFS/usr/local/share/ca-certificates/"
      chroot "$ROOTFS" update-ca-certificates >/dev/null
    fi
    tar -C "$ROOTFS" -cf "$STATE/base.tar" .
    rm -rf "$ROOTFS"
  fi
  docker import -c 'ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin' \
    -c 'ENV LANG=C.UTF-8' "$STATE/base.tar" python:3.11-slim >/dev/null
fi

say "build the serving image (compose, BuildKit: stages the target does not need are skipped)"
export WALRUS_CONFIG=configs/demo.toml WALRUS_TAG=docker-test
"$COMPOSE" -f docker-compose.yml -f docker/compose.build-host-network.yml build api \
  >"$STATE/build.log" 2>&1 || {
  tail -40 "$STATE/build.log" >&2
  exit 1
}
docker run --rm --entrypoint python "$IMAGE" -c \
  "import importlib.util, sys; bad = [m for m in ('torch', 'transformers') if importlib.util.find_spec(m)]; sys.exit(f'serving image has {bad}' if bad else 0)"

say "a bundle made on the host"
WORK=$(mktemp -d)
"$VENV/bin/walrus" data synthetic --size tiny --out "$WORK/data" >/dev/null 2>&1
cat >"$WORK/c.toml" <<TOML
output_dir = "$WORK/out"
[data]
interactions = "$WORK/data/interactions.csv"
catalog = "$WORK/data/catalog.csv"
[wals]
dim = 8
[encoder]
name = "tiny-roberta"
[head]
epochs = 3
max_requests = 300
TOML
"$VENV/bin/walrus" train hybrid -c "$WORK/c.toml" >/dev/null 2>&1
"$VENV/bin/walrus" export -c "$WORK/c.toml" >/dev/null 2>&1
chmod -R a+rX "$WORK"

say "the bundle through object storage: published from the host, pulled by the image"
# As on Kubernetes (deploy/k8s): the serving image's own `walrus bundle pull` (the init
# container's command) fetches the store's current into an empty folder, read-only root, no
# capabilities, as uid 10001; the service then serves that copy. The store is moto's S3 server.
SPORT=$("$VENV/bin/python" -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
"$VENV/bin/python" -m moto.server -H 127.0.0.1 -p "$SPORT" >"$STATE/moto.log" 2>&1 &
MOTO=$!
trap 'kill $MOTO 2>/dev/null || true; cleanup' EXIT
S3_ENV=("AWS_ENDPOINT_URL=http://127.0.0.1:$SPORT" AWS_ACCESS_KEY_ID=walrus-docker
  AWS_SECRET_ACCESS_KEY=walrus-docker-secret AWS_DEFAULT_REGION=us-east-1)
for _ in $(seq 1 60); do curl -sf "http://127.0.0.1:$SPORT/moto-api/" >/dev/null && break; sleep 0.5; done
curl -sf -X PUT "http://127.0.0.1:$SPORT/walrus-docker" >/dev/null
env "${S3_ENV[@]}" "$VENV/bin/walrus" bundle publish "$WORK/out/bundles" s3://walrus-docker/bundles \
  >"$STATE/publish.log" 2>&1 || { cat "$STATE/publish.log" >&2; exit 1; }
mkdir -p "$WORK/pulled" && chown 10001:10001 "$WORK/pulled"
docker run --rm --network host --read-only --tmpfs /tmp --cap-drop ALL \
  --security-opt no-new-privileges:true "${S3_ENV[@]/#/--env=}" -v "$WORK/pulled:/bundles" "$IMAGE" \
  walrus bundle pull s3://walrus-docker/bundles /bundles --keep 2 || {
  echo "the serving image could not pull the bundle from object storage" >&2; exit 1; }
[ "$(readlink "$WORK/pulled/current")" = "$(readlink "$WORK/out/bundles/current")" ] || {
  echo "the pulled current is not the published bundle" >&2; exit 1; }
kill "$MOTO"

say "the redis image: read-only, on a volume, every acknowledged write in its append-only file"
"$COMPOSE" -f docker-compose.yml -f docker/compose.build-host-network.yml build redis \
  >"$STATE/build-redis.log" 2>&1 || { tail -40 "$STATE/build-redis.log" >&2; exit 1; }
RPORT=$("$VENV/bin/python" -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
# The image's own command, on a free host port (the containers share the host's network).
REDIS_CMD=$(docker image inspect -f '{{json .Config.Cmd}}' walrus-redis:docker-test | "$VENV/bin/python" -c '
import json, sys; print(" ".join(json.load(sys.stdin)[1:]))')
# shellcheck disable=SC2086 # one flag per word
docker run -d --name "$REDIS" --network host --read-only --tmpfs /tmp --cap-drop ALL \
  --security-opt no-new-privileges:true -v "$REDIS:/data" walrus-redis:docker-test \
  redis-server $REDIS_CMD --port "$RPORT" --bind 127.0.0.1 >/dev/null
# The image's healthcheck pings the default port; this one listens on $RPORT.
redis_healthy() {
  for _ in $(seq 1 60); do
    [ "$(docker exec "$REDIS" redis-cli -p "$RPORT" ping 2>/dev/null)" = PONG ] && return 0
    sleep 1
  done
  docker logs "$REDIS" >&2; echo "redis did not become healthy" >&2; exit 1
}
redis_healthy

say "run the image with the compose file's hardening (read-only, no capabilities, limits)"
# The flags come from the compose file itself, so what is checked is what compose runs.
HARDENING=$(WALRUS_CPUS=1 "$COMPOSE" -f docker-compose.yml config --format json | "$VENV/bin/python" -c '
import json, sys
api = json.load(sys.stdin)["services"]["api"]
flags = ["--read-only"] if api.get("read_only") else []
flags += [f"--tmpfs={t}" for t in api.get("tmpfs", [])]
flags += [f"--cap-drop={c}" for c in api.get("cap_drop", [])]
flags += [f"--security-opt={o}" for o in api.get("security_opt", [])]
cpus, memory, pids = api["cpus"], api["mem_limit"], api["pids_limit"]
flags += [f"--cpus={cpus}", f"--memory={memory}", f"--pids-limit={pids}"]
print(" ".join(flags))')
echo "$HARDENING"
PORT=$("$VENV/bin/python" -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
# shellcheck disable=SC2086 # one flag per word
docker run -d --name "$NAME" --network host -e WALRUS_HOST=127.0.0.1 -e WALRUS_PORT="$PORT" \
  -e WALRUS_EVENTS__REDIS_URL="redis://127.0.0.1:$RPORT/0" \
  $HARDENING -v "$WORK/pulled:/bundles:ro" "$IMAGE" >/dev/null
for _ in $(seq 1 90); do
  status=$(docker inspect -f '{{.State.Health.Status}}' "$NAME")
  [ "$status" = healthy ] && break
  [ "$(docker inspect -f '{{.State.Running}}' "$NAME")" = true ] || break
  sleep 1
done
if [ "$status" != healthy ]; then
  docker logs "$NAME" >&2 || true
  echo "container did not become healthy (status: $status)" >&2
  exit 1
fi
uid=$(docker exec "$NAME" id -u)
[ "$uid" = 10001 ] || { echo "the serving container runs as uid $uid, not 10001" >&2; exit 1; }
check() { "$@" || { echo "hardening check failed: $*" >&2; exit 1; }; }
inspect() { docker inspect -f "$1" "$NAME"; }
check test "$(inspect '{{.HostConfig.ReadonlyRootfs}}')" = true
check test "$(inspect '{{json .HostConfig.CapDrop}}')" = '["ALL"]'
check test "$(inspect '{{json .HostConfig.SecurityOpt}}')" = '["no-new-privileges:true"]'
check test "$(inspect '{{.HostConfig.NanoCpus}}')" = 1000000000
check test "$(inspect '{{.HostConfig.Memory}}')" -gt 0
check test "$(inspect '{{range .Mounts}}{{if eq .Destination "/bundles"}}{{.RW}}{{end}}{{end}}')" = false
if docker exec "$NAME" touch /app/written 2>/dev/null; then echo "the root filesystem is writable" >&2; exit 1; fi
docker exec "$NAME" touch /tmp/written  # the tmpfs is
docker exec "$NAME" grep -q NoNewPrivs:.*1 /proc/1/status
# Logs are read whole, then searched: `docker logs | grep -q` under pipefail fails when grep
# stops reading at the first match and docker logs gets SIGPIPE.
logs_have() { local logs; logs=$(docker logs "$NAME" 2>&1); grep -qF -- "$1" <<<"$logs"; }
# The worker plan read the cgroup quota (--cpus=1), not the host's CPU count.
logs_have "one engine (2 x 1 thread(s)) and 1 front(s) for the 1 CPU(s)" || {
  docker logs "$NAME" >&2; echo "the worker plan ignored the CPU quota" >&2; exit 1; }
echo "read-only root, tmpfs /tmp, no capabilities, no-new-privileges, 1 CPU, read-only bundle: checked"

say "POST /v1/recommend, compared with the host"
"$VENV/bin/python" - "$PORT" "$WORK/out/bundles" <<'PY'
import sys

import httpx

from service.engine.recommender import Recommender
from service.messages import Recommend
from service.settings import Settings

port, bundle = sys.argv[1], sys.argv[2]
body = {"user_id": "u0", "query": "robots", "k": 5}
got = httpx.post(f"http://127.0.0.1:{port}/v1/recommend", json=body, timeout=30)
got.raise_for_status()
want = Recommender(bundle, Settings(bundle=bundle)).recommend(Recommend(**body))
ids = [it["item_id"] for it in got.json()["items"]]
expected = [it.item_id for it in want.items]
assert ids == expected and len(ids) == 5, (ids, expected)
print(f"container answered {ids}, the same as the host")
PY
say "POST /v1/events: the next answer folds them in; a Redis restart keeps them"
events_check() {
  "$VENV/bin/python" - "$PORT" "$1" <<'PY'
import sys

import httpx

port, post = sys.argv[1], sys.argv[2] == "post"
url = f"http://127.0.0.1:{port}"
five = [f"i{n}" for n in range(5)]
if post:
    events = [{"user_id": "docker-new-user", "item_id": i} for i in five]
    r = httpx.post(f"{url}/v1/events", json={"events": events}, timeout=30)
    assert r.status_code == 202 and r.json()["accepted"] == 5, r.text
got = httpx.post(f"{url}/v1/recommend", json={"user_id": "docker-new-user", "k": 5}, timeout=30)
want = httpx.post(f"{url}/v1/recommend", json={"history": five, "k": 5}, timeout=30)
ids = [[i["item_id"] for i in r.json()["items"]] for r in (got, want)]
assert ids[0] == ids[1] and not got.json()["warnings"], got.text
print("the new user's answer is the one their five events give as a history")
PY
}
events_check post
docker restart "$REDIS" >/dev/null
redis_healthy
for _ in $(seq 1 30); do
  curl -sf "http://127.0.0.1:$PORT/readyz" | grep -q '"events":"ok"' && break
  sleep 0.5
done
events_check after-restart

say "the page's files are in the image"
for file in "" ui.js ui.css; do
  curl -sf "http://127.0.0.1:$PORT/ui/$file" >/dev/null || { echo "/ui/$file is not served" >&2; exit 1; }
done
headers=$(curl -sf -D - -o /dev/null "http://127.0.0.1:$PORT/ui/")
grep -qi "content-security-policy: default-src 'none'" <<<"$headers" || {
  echo "/ui/ comes without its content security policy" >&2; exit 1; }

say "docker stop: drained, then exit status 0"
docker stop -t 40 "$NAME" >/dev/null
code=$(docker inspect -f '{{.State.ExitCode}}' "$NAME")
[ "$code" = 0 ] || { docker logs "$NAME" 2>&1 | tail -20 >&2; echo "exit status $code after SIGTERM" >&2; exit 1; }
logs_have "SIGTERM: draining" || {
  docker logs "$NAME" 2>&1 | tail -20 >&2; echo "no drain on SIGTERM" >&2; exit 1; }

say "the spark profile: a master and two workers; the job submitted to spark://spark-master:7077"
SPARK="$COMPOSE -f docker-compose.yml -f docker/compose.build-host-network.yml --profile spark"
$SPARK build spark-master >"$STATE/build-spark.log" 2>&1 || { tail -40 "$STATE/build-spark.log" >&2; exit 1; }
docker run --rm --entrypoint python walrus-spark:docker-test -c \
  "import importlib.util, sys; bad = [m for m in ('torch', 'scipy', 'transformers') if importlib.util.find_spec(m)]; sys.exit(f'spark image has {bad}' if bad else 0)"
export WALRUS_SPARK_DATA="$WORK/spark" WALRUS_SPARK_UI_PORT=$("$VENV/bin/python" -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
mkdir -p "$WALRUS_SPARK_DATA" && chmod 777 "$WALRUS_SPARK_DATA"
cp "$WORK/data/interactions.csv" "$WALRUS_SPARK_DATA/"
spark_down() { $SPARK down -v --remove-orphans >/dev/null 2>&1 || true; }
trap 'spark_down; cleanup' EXIT
$SPARK up -d spark-master spark-worker-1 spark-worker-2 >"$STATE/spark-up.log" 2>&1 || { cat "$STATE/spark-up.log" >&2; exit 1; }
workers=0
for _ in $(seq 1 60); do
  workers=$("$VENV/bin/python" -c "import json, sys, urllib.request; print(json.load(urllib.request.urlopen(sys.argv[1], timeout=2)).get('aliveworkers', 0))" "http://127.0.0.1:$WALRUS_SPARK_UI_PORT/json/" 2>/dev/null || echo 0)
  [ "$workers" = 2 ] && break
  sleep 1
done
[ "$workers" = 2 ] || { $SPARK logs >&2; echo "the Spark master has $workers live workers, not 2" >&2; exit 1; }
PARAMS='{"dim": 8, "iterations": 2, "regularization": 0.1}'
$SPARK run --rm spark-job --interactions /data/interactions.csv --checkpoint-dir /data/checkpoints \
  --blocks 4 --shuffle-partitions 4 --params "$PARAMS" --out /data/cluster >"$STATE/spark-job.log" 2>&1 || { tail -40 "$STATE/spark-job.log" >&2; exit 1; }
tail -1 "$STATE/spark-job.log"
SPARK_LOCAL_IP=127.0.0.1 "$VENV/bin/python" -m models.spark.job --master 'local[2]' \
  --interactions "$WALRUS_SPARK_DATA/interactions.csv" --checkpoint-dir "$WORK/checkpoints" --blocks 4 \
  --shuffle-partitions 4 --params "$PARAMS" --out "$WORK/local" >"$STATE/spark-local.log" 2>&1 || {
  tail -20 "$STATE/spark-local.log" >&2; exit 1; }
"$VENV/bin/python" - "$WALRUS_SPARK_DATA/cluster" "$WORK/local" "http://127.0.0.1:$WALRUS_SPARK_UI_PORT/json/" <<'PY'
import json, sys, urllib.request

import numpy as np
import pandas as pd

cluster, local, master = sys.argv[1:]
for side in ("user", "item"):
    a = pd.read_parquet(f"{cluster}/{side}_factors.parquet").sort_values("id")
    b = pd.read_parquet(f"{local}/{side}_factors.parquet").sort_values("id")
    assert list(a["id"]) == list(b["id"]), f"{side} ids differ"
    fa, fb = np.stack(a["factors"]), np.stack(b["factors"])
    diff = float(np.abs(fa - fb).max() / np.abs(fb).max())
    assert diff <= 1e-4, f"{side} factors differ by {diff:.2e} (relative)"
    print(f"{side} factors: {len(a)} rows, cluster vs local[2] max relative difference {diff:.1e}")
apps = json.load(urllib.request.urlopen(master, timeout=5))["completedapps"]
assert any(a["name"] == "walrus-wals-job" for a in apps), "the job did not run on the cluster"
print("the job ran on the standalone cluster's two workers; its factors equal the local run's")
PY
spark_down

rm -rf "$WORK"
say "docker-test passed"
