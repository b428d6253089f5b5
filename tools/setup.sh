#!/usr/bin/env bash
# Installs whatever is missing for Supernoba on Debian 12, idempotently (make setup).
# apt: valkey-server (bookworm-backports), chromium, nodejs/npm; npm ci under tools/;
# .venv with the project installed editable (compiles the C book through cffi).
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
APT_UPDATED=0
apt_update() { if [ "$APT_UPDATED" = 0 ]; then $SUDO apt-get update -q; APT_UPDATED=1; fi; }
need_apt() {  # need_apt COMMAND PACKAGE [apt args...]
  local cmd=$1 pkg=$2; shift 2
  if ! command -v "$cmd" >/dev/null 2>&1; then
    echo "setup: installing $pkg"
    apt_update
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "$@" "$pkg"
  fi
}

if ! command -v valkey-server >/dev/null 2>&1; then
  if ! grep -rqs "bookworm-backports" /etc/apt/sources.list /etc/apt/sources.list.d/; then
    echo "setup: adding the bookworm-backports apt source"
    printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
      | $SUDO tee /etc/apt/sources.list.d/bookworm-backports.sources >/dev/null
  fi
  need_apt valkey-server valkey-server -t bookworm-backports
fi
need_apt chromium chromium
need_apt node nodejs
need_apt npm npm
need_apt gcc gcc
need_apt curl curl  # the `try:` line `make dev` prints, run by tests/test_end_to_end.py

# npm packages, pinned by tools/package-lock.json
if [ ! -f tools/node_modules/.package-lock.json ] || [ tools/package-lock.json -nt tools/node_modules/.package-lock.json ]; then
  echo "setup: npm ci (tools/)"
  (cd tools && npm ci --no-audit --no-fund --loglevel=error)
fi

# Python venv; reinstalled when the packaging files or the C sources change
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$PY" -m venv .venv
fi
stamp_src=$(cat pyproject.toml setup.py engine_pkg/_book_build.py engine_pkg/csrc/* 2>/dev/null | sha256sum | cut -d' ' -f1)
if [ ! -f .venv/.setup-stamp ] || [ "$(cat .venv/.setup-stamp)" != "$stamp_src" ] || ! ls engine_pkg/_book*.so >/dev/null 2>&1; then
  echo "setup: pip install -e .[dev] (builds the C order book)"
  .venv/bin/pip install -q --disable-pip-version-check --upgrade pip
  .venv/bin/pip install -q --disable-pip-version-check -e ".[dev]"
  echo "$stamp_src" > .venv/.setup-stamp
fi
echo "setup: ready"
