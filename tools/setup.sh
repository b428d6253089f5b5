#!/usr/bin/env bash
# Installs whatever is missing for Supernoba on Debian 12, idempotently (make setup).
# apt: valkey-server (bookworm-backports), chromium, nodejs/npm; npm ci under tools/;
# .venv with the project installed editable (compiles the C book through cffi).
set -euo pipefail
case "${1:-}" in
  -h|--help)
    cat <<'USAGE'
usage: bash tools/setup.sh     (what `make setup`, `make dev` and `make test` run first)

Installs whatever is missing for Supernoba on Debian 12, idempotently, and changes nothing
that is already there:
  apt  valkey-server (from bookworm-backports, whose apt source it adds if needed),
       chromium, nodejs + npm, curl, a C compiler and Python headers
  npm  `npm ci` under tools/ (kinesalite, dynalite)
  pip  .venv with the project installed editable: `pip install -e .` compiles the C book
       (engine_pkg/_book*.so) through cffi
Runs apt-get through sudo when not root. Takes no other arguments.
USAGE
    exit 0 ;;
  "") ;;
  *) echo "setup.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
esac
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
# Debian splits venv (ensurepip) and the headers the cffi build compiles against out of python3
if ! "$PY" -c "import ensurepip" >/dev/null 2>&1; then
  echo "setup: installing python3-venv"; apt_update
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q python3-venv
fi
if ! "$PY" -c "import os, sysconfig; assert os.path.exists(os.path.join(sysconfig.get_paths()['include'], 'Python.h'))" >/dev/null 2>&1; then
  echo "setup: installing python3-dev"; apt_update
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q python3-dev
fi
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$PY" -m venv .venv
fi
stamp_src=$(cat pyproject.toml setup.py engine_pkg/_book_build.py engine_pkg/csrc/* 2>/dev/null | sha256sum | cut -d' ' -f1)
if [ ! -f .venv/.setup-stamp ] || [ "$(cat .venv/.setup-stamp)" != "$stamp_src" ] || ! ls engine_pkg/_book*.so >/dev/null 2>&1; then
  echo "setup: pip install -e .[dev] (builds the C order book)"
  .venv/bin/pip install -q --disable-pip-version-check --upgrade "pip<26.3"  # chalice 1.34 wants pip<26.3
  .venv/bin/pip install -q --disable-pip-version-check -e ".[dev]"
  echo "$stamp_src" > .venv/.setup-stamp
fi
echo "setup: ready"
