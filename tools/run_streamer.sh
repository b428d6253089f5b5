#!/usr/bin/env bash
# Runs the streamer (`python -m streamer_pkg`) from an environment file — the EC2 entry
# point, used by deploy/systemd/supernoba-streamer.service.
#
#   tools/run_streamer.sh [--debug|--init] [--env-file FILE]
#
#   --debug           DEBUG logs
#   --init            reset the anonymous-tier cache before starting
#   --env-file FILE   KEY=VALUE lines (systemd EnvironmentFile format); default
#                     $SUPERNOBA_ENV_FILE, else /etc/supernoba/streamer.env if it exists.
#                     Variables already set in the environment win over the file.
#   -h, --help        this text
#
# The script execs Python, so SIGTERM (systemctl stop) reaches the streamer itself.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=tools/run_common.sh
. "$HERE/run_common.sh"
supernoba_run streamer streamer_pkg "--debug --init" "$@"
