# Supernoba: `make dev` runs the whole exchange locally, `make test` runs every test.
.PHONY: setup dev test lint bench clean help load soak

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

bench: setup  ## run every benchmark and print the figures

load: setup  ## N WebSocket clients + M orders/s against a running `make dev`: make load ARGS="--clients 50 --rate 20 --duration 30"
	$(PY) -m tools.load $(ARGS)

soak: setup  ## load + faults (kill -9, restarts) on its own stack for a bounded time; writes docs/reliability.md
	$(PY) -m tools.soak $(ARGS)

clean:  ## remove the venv, build output and local data
	rm -rf $(VENV) .local build *.egg-info engine_pkg/_book*.so
