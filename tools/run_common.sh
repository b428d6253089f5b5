# Shared part of tools/run_engine.sh and tools/run_streamer.sh (sourced, not run).
#
# supernoba_run PART MODULE "ALLOWED FLAGS" [ARGS...]
#   parses --env-file/--help and the part's flags, loads the environment file without
#   overriding variables already set, then execs "$PYTHON -m MODULE FLAGS...".
#   Python: $SUPERNOBA_PYTHON, else the repo's .venv/bin/python, else python3.

_supernoba_usage() {  # print the header comment of the calling script
  sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'
}

_supernoba_load_env() {  # _supernoba_load_env FILE
  local file=$1 line key value n=0
  while IFS= read -r line || [ -n "$line" ]; do
    n=$((n + 1))
    line="${line%$'\r'}"
    # blank lines and comments
    if [[ "$line" =~ ^[[:space:]]*(#.*)?$ ]]; then continue; fi
    line="${line#export }"
    if [[ ! "$line" =~ ^[[:space:]]*([A-Za-z_][A-Za-z0-9_]*)=(.*)$ ]]; then
      echo "run_$PART: $file:$n: not a KEY=VALUE line: $line" >&2
      exit 2
    fi
    key="${BASH_REMATCH[1]}"
    value="${BASH_REMATCH[2]}"
    # one pair of surrounding quotes is removed, as systemd does
    if [[ "$value" =~ ^\"(.*)\"$ ]] || [[ "$value" =~ ^\'(.*)\'$ ]]; then value="${BASH_REMATCH[1]}"; fi
    if [ -z "${!key+x}" ]; then export "$key=$value"; fi
  done < "$file"
}

supernoba_run() {
  PART=$1 MODULE=$2 ALLOWED=" $3 "
  shift 3
  local env_file="${SUPERNOBA_ENV_FILE:-}" explicit=0 flags=()
  if [ -n "$env_file" ]; then explicit=1; fi
  while [ $# -gt 0 ]; do
    case "$1" in
      -h|--help) _supernoba_usage; exit 0 ;;
      --env-file) [ $# -ge 2 ] || { echo "run_$PART: --env-file needs a path" >&2; exit 2; }
                  env_file=$2; explicit=1; shift 2 ;;
      --env-file=*) env_file=${1#--env-file=}; explicit=1; shift ;;
      *) if [[ "$ALLOWED" == *" $1 "* ]]; then flags+=("$1"); shift
         else echo "run_$PART: unknown option $1 (try --help)" >&2; exit 2; fi ;;
    esac
  done
  if [ -z "$env_file" ]; then env_file="/etc/supernoba/$PART.env"; fi
  if [ -r "$env_file" ]; then
    _supernoba_load_env "$env_file"
  elif [ "$explicit" = 1 ]; then
    echo "run_$PART: cannot read environment file $env_file" >&2
    exit 2
  else
    env_file="(none; using the current environment)"
  fi
  local root py
  root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  py="${SUPERNOBA_PYTHON:-}"
  if [ -z "$py" ]; then
    if [ -x "$root/.venv/bin/python" ]; then py="$root/.venv/bin/python"; else py="$(command -v python3)"; fi
  fi
  cd "$root"
  export PYTHONUNBUFFERED=1
  echo "run_$PART: exec $py -m $MODULE ${flags[*]:-} (env file: $env_file)" >&2
  exec "$py" -m "$MODULE" "${flags[@]}"
}
