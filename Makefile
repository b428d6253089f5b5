# Supernoba: `make dev` runs the whole exchange locally, `make test` runs every test.
.PHONY: setup dev test lint bench clean help load soak invoke bench-local-stack bench-engine bench-streamer bench-engine-service bench-scaling fuzz bench-chalice-app bench-cache-cluster

VENV := .venv
PY := $(VENV)/bin/python
ARGS ?=

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*##/ —/'

setup:  ## install everything missing (apt, npm, venv, C book); idempotent
	@bash tools/setup.sh

dev: setup  ## start the whole local stack and print the console URL
	$(PY) -m tools.dev $(ARGS)

test: setup  ## run every test
	$(PY) -m pytest $(ARGS)

lint: setup  ## ruff
	$(VENV)/bin/ruff check .

bench: setup bench-engine bench-local-stack bench-streamer bench-engine-service bench-scaling bench-chalice-app bench-cache-cluster  ## run every benchmark and print the figures

invoke:  ## fire one schedule of the running local stack now: make invoke NAME=trades_backup
	@test -n "$(NAME)" || { echo "usage: make invoke NAME=trades_backup  (names: $(PY) -m tools.pump list)"; exit 2; }
	$(PY) -m tools.pump $(ARGS) invoke $(NAME)

bench-local-stack: setup  ## POST /orders -> depth at a WebSocket client, on the whole local stack
	$(PY) -m tools.bench.bench_local_stack $(BENCH_ARGS)

bench-engine: setup  ## C order book alone, Engine.process JSON vs liquibook, latency, memory (issue 3)
	$(PY) -m tools.bench.bench_book $(BENCH_ENGINE_ARGS)

bench-streamer: setup  ## streamer sends/s with 1,000/5,000 connections, depth write -> receipt latency (issue 6)
	$(PY) -m tools.bench.bench_streamer $(BENCH_STREAMER_ARGS)

bench-engine-service: setup  ## engine service orders/s, PutRecord -> depth latency, replay speed (issue 4)
	$(PY) -m tools.bench.bench_engine_service --profile $(BENCH_ENGINE_SERVICE_ARGS)

bench-scaling: setup  ## 1/2/4 engines on an 8-shard local stream: orders/s, takeover after kill -9 / SIGTERM (issue 9)
	$(PY) -m tools.bench.bench_scaling $(BENCH_SCALING_ARGS)

bench-chalice-app: setup  ## Chalice handlers in process: POST /orders, /chart, on_fills, trades_backup (issue 5)
	$(PY) -m tools.bench.bench_chalice_app $(BENCH_CHALICE_APP_ARGS)

bench-cache-cluster: setup  ## depth writer / streamer reader: one valkey-server vs a 3-primary cluster (issue 9)
	$(PY) -m tools.bench.bench_cache_cluster $(BENCH_CACHE_CLUSTER_ARGS)

fuzz:  ## libFuzzer + ASan/UBSan on the C order book for FUZZ_SECONDS (default 120)
	bash tools/fuzz/run.sh

load: setup  ## N WebSocket clients + M orders/s against a running `make dev`: make load ARGS="--clients 50 --rate 20 --duration 30"
	$(PY) -m tools.load $(ARGS)

soak: setup  ## load + faults (kill -9, restarts) on its own stack for a bounded time; writes docs/reliability.md
	$(PY) -m tools.soak $(ARGS)

clean:  ## remove the venv, build output and local data
	rm -rf $(VENV) .local build *.egg-info engine_pkg/_book*.so
