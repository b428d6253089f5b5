#!/usr/bin/env bash
# make fuzz: libFuzzer + AddressSanitizer + UndefinedBehaviorSanitizer on the C order book for a
# bounded time (FUZZ_SECONDS, default 120).  Installs clang and its runtime if missing.
set -euo pipefail
if [ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ]; then
  cat <<'USAGE'
usage: tools/fuzz/run.sh          (what `make fuzz` runs)

Builds tools/fuzz/fuzz_book.c with the C order book under libFuzzer + AddressSanitizer +
UndefinedBehaviorSanitizer and fuzzes it for a bounded time; installs clang if missing.

environment:
  FUZZ_SECONDS  how long to fuzz (default 120)
  FUZZ_OUT      build and corpus folder (default build/fuzz); the log is FUZZ_OUT/last-run.log
USAGE
  exit 0
fi
if [ "$#" -gt 0 ]; then echo "fuzz: no arguments expected (see --help)" >&2; exit 2; fi
cd "$(dirname "$0")/../.."
SECONDS_BUDGET=${FUZZ_SECONDS:-120}
OUT=${FUZZ_OUT:-build/fuzz}
if ! command -v clang >/dev/null 2>&1 || ! echo 'int LLVMFuzzerTestOneInput(const char*d,long n){return 0;}' \
    | clang -x c -fsanitize=fuzzer - -o /dev/null 2>/dev/null; then
  echo "fuzz: installing clang and libclang-rt (libFuzzer)"
  SUDO=""; [ "$(id -u)" != 0 ] && SUDO="sudo"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q clang "libclang-rt-$(clang --version 2>/dev/null | sed -n 's/.*version \([0-9]*\).*/\1/p' | head -1 || echo 14)-dev" \
    || DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q clang libclang-rt-14-dev
fi
mkdir -p "$OUT/corpus"
clang -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer \
  -I engine_pkg/csrc tools/fuzz/fuzz_book.c engine_pkg/csrc/book.c -o "$OUT/fuzz_book"
# seed corpus: valid commands of every action, and some malformed ones
cp tools/fuzz/seeds/* "$OUT/corpus/" 2>/dev/null || true
echo "fuzz: running for ${SECONDS_BUDGET}s (ASan+UBSan, leak detection on)"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  "$OUT/fuzz_book" -max_total_time="$SECONDS_BUDGET" -max_len=4096 -timeout=10 -rss_limit_mb=2048 \
  -dict=tools/fuzz/json.dict -print_final_stats=1 "$OUT/corpus" 2>&1 | tee "$OUT/last-run.log" | grep -E "^#|stat::|ERROR|SUMMARY|Done" | tail -25
status=${PIPESTATUS[0]}
if [ "$status" -ne 0 ]; then echo "fuzz: FAILED (see $OUT/last-run.log and crash-* files)"; exit "$status"; fi
echo "fuzz: clean run (log: $OUT/last-run.log)"
