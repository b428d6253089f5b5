#!/usr/bin/env bash
# Runs the matching engine (`python -m engine_pkg`) from an environment file — the EC2
# entry point, used by deploy/systemd/supernoba-engine.service.
#
#   tools/run_engine.sh [--debug|--dev] [--env-file FILE]
#
#   --debug           DEBUG logs
#   --dev             clear this engine's caches, snapshots and leases, start with empty
#                     books from LATEST (never in production: it forgets every open order)
#   --env-file FILE   KEY=VALUE lines (systemd EnvironmentFile format); default
#                     $SUPERNOBA_ENV_FILE, else /etc/supernoba/engine.env if it exists.
#                     Variables already set in the environment win over the file.
#   -h, --help        this text
#
# The script execs Python, so SIGTERM (systemctl stop) reaches the engine itself, which
# writes its shard snapshots and releases its leases before it exits.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=tools/run_common.sh
. "$HERE/run_common.sh"
supernoba_run engine engine_pkg "--debug --dev" "$@"
