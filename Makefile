# walrus: the two set-up commands are `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
EXTRAS ?= train,serve,spark,dev
MOVIELENS ?= $(abspath ../shared/data/ml-latest-small)
export WALRUS_MOVIELENS_DIR ?= $(if $(wildcard $(MOVIELENS)/ratings.csv),$(MOVIELENS),)
comma := ,
STAMP := $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))

WALRUS_URL ?= http://127.0.0.1:8000
LOADTEST_USERS ?= 8
LOADTEST_DURATION ?= 30s

.PHONY: install demo demo-answers chaos lock data train export serve test lint format results bench bench-quality ui-screenshot bench-filters bench-events bench-update bench-retrain bench-loop bench-quantization bench-serve soak seed-bundle gpu-check loadtest docker-test clean

# Re-install only when pyproject.toml changes.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[$(EXTRAS)]"
	@touch $@

install: $(STAMP)

# The demo: small synthetic data, the offline all-MiniLM-L6-v2 encoder, a bundle, the service.
demo: export serve

data: install
	$(BIN)/walrus data synthetic --size small --out artifacts/data/synthetic-small

train: data
	$(BIN)/walrus train hybrid -c configs/demo.toml

export: train
	$(BIN)/walrus export -c configs/demo.toml

serve: install
	WALRUS_BUNDLE=$${WALRUS_BUNDLE:-artifacts/demo/bundles} $(BIN)/walrus serve

test: install lint
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check walrus models export service bench tests
	$(BIN)/ruff format --check walrus models export service bench tests
	$(BIN)/mypy
	$(BIN)/lint-imports

format: install
	$(BIN)/ruff format walrus models export service bench tests
	$(BIN)/ruff check --fix walrus models export service bench tests

# Re-run the benchmarks whose tables bench/results.py prints (the API's costs, filters and a
# live catalog at the seed's item scale, events: about 20 minutes on 2 cores), keep their
# results in docs/results and rewrite the docs' tables from them. The others keep their own
# targets (bench-serve, chaos, soak, bench-quality, ...).
results: export
	$(BIN)/python -m bench.results --run

# WALS vs implicit, then WALS on Spark vs MLlib ALS on local[2] (about 15 minutes on 2 cores).
bench: install
	$(BIN)/python -m bench.wals_vs_implicit $(if $(WALRUS_MOVIELENS_DIR),--movielens $(WALRUS_MOVIELENS_DIR),)
	SPARK_LOCAL_IP=127.0.0.1 $(BIN)/python -m bench.spark_wals

# The served hybrid against implicit's ALS, both tuned, on a MovieLens per-user holdout
# (about 10 minutes on 2 cores).
bench-quality: install
	$(BIN)/python -m bench.quality $(if $(WALRUS_MOVIELENS_DIR),--movielens $(WALRUS_MOVIELENS_DIR),)

# The serving image's pinned, hashed requirements (Dockerfile, serve-build); tests/test_lock.py
# checks that they still satisfy pyproject.toml.
lock: install
	$(BIN)/pip-compile --quiet --generate-hashes --extra serve --strip-extras --no-emit-index-url \
		--no-emit-find-links --output-file docker/serve.lock pyproject.toml

demo-answers: install
	$(BIN)/python -m bench.demo_answers --bundle artifacts/demo/bundles

# Filters at the seed's scale: bitmap build, filtered pools, requests/s against no filter
# (500,000 items; about 3 minutes on 2 cores).
bench-filters: install
	$(BIN)/python -m bench.filters

# The README's picture of the page (/ui): its browser test run against the demo bundle.
ui-screenshot: install
	WALRUS_UI_BUNDLE=artifacts/demo/bundles WALRUS_UI_SCREENSHOT=$(abspath docs/ui.png) \
		$(BIN)/python -m pytest -q tests/service/front/test_ui.py

# What users' events and attribution cost the request path: no Redis, events, events and
# attribution (a real redis-server), side by side (about 5 minutes; needs wrk, redis-server
# and the demo bundle).
bench-events: install
	$(BIN)/python -m bench.events_cost --bundle artifacts/demo/bundles

# The learning loop in a simulated world: serve, click, retrain, experiment, restart,
# sabotage (about 10 minutes on 2 cores; needs redis-server).
bench-loop: install
	$(BIN)/python -m bench.loop

# `walrus retrain` on the demo's data, warm start against cold (about 5 minutes on 2 cores).
bench-retrain: install
	$(BIN)/python -m bench.retrain --size small

# A live catalog at the seed's item scale: +1,000 / -1,000 items on 500,000 (builds a
# 100,000-user synthetic bundle once, about 5 minutes; then about 4 minutes on 2 cores).
bench-update: install
	$(BIN)/python -m bench.update

bench-quantization: install
	$(BIN)/python -m bench.quantization

# The seed's scale: 10M users x 500k items, dim 64 (about 10 minutes on 2 cores).
SEED_BUNDLE ?= artifacts/seed/bundles
seed-bundle: $(SEED_BUNDLE)/current
$(SEED_BUNDLE)/current: | install
	$(BIN)/walrus bundle synthetic --out $(SEED_BUNDLE)

# The serving benchmark (docs/benchmarks.md): needs wrk, the demo bundle (make export) and
# the seed bundle (built when missing).
bench-serve: install $(SEED_BUNDLE)/current
	@test -e artifacts/demo/bundles/current || { echo "no demo bundle: run make export first"; exit 2; }
	$(BIN)/python -m bench.serve --bundle artifacts/demo/bundles --seed-bundle $(SEED_BUNDLE)
	$(BIN)/python -m bench.serve --report bench/results/serve.json --plot docs/serve-latency.png

# 10 minutes at 80% of capacity with a hot reload every 2 minutes (needs wrk and make export).
soak: install
	$(BIN)/python -m bench.soak --bundle artifacts/demo/bundles

# Faults in turn under load (slow clients, a /similar flood, the engine killed, a tampered
# and an unsigned bundle): 5xx, errors, and whether /readyz and /metrics showed each.
chaos: install
	$(BIN)/python -m bench.chaos --bundle artifacts/demo/bundles

# On a GPU machine (see docs/benchmarks.md): WALS on CUDA, FAISS GPU, ONNX CUDA, GPU serving.
GPU_CHECK_OUT ?= bench/results/gpu
gpu-check: install
	$(BIN)/python -m bench.gpu_check --out $(GPU_CHECK_OUT) --bundle $${WALRUS_BUNDLE:-artifacts/demo/bundles}

# Against a running service (make serve, or docker compose up): bounded in time.
loadtest: install
	$(BIN)/python -m bench.loadtest --host $(WALRUS_URL) --users $(LOADTEST_USERS) --run-time $(LOADTEST_DURATION)

docker-test: install
	VENV=$(VENV) bash docker/test.sh

clean:
	rm -rf artifacts bench/results .pytest_cache .mypy_cache .ruff_cache
