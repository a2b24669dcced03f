#!/bin/bash
# User-space instructions per proxied HTTP/1.1 request, counted by callgrind: exact and
# repeatable on a shared machine where CPU time is not, so changes too small for the
# side-by-side harness can still be measured. Kernel time is not counted.
#
#   bench/instructions.sh BINARY [BINARY...]        (N=20000 requests by default)
#   H2C=1 bench/instructions.sh BINARY [BINARY...]  (h2c: h2load -c4 -m8 instead of --h1 -c8)
#   TLS=1 bench/instructions.sh BINARY [BINARY...]  (HTTP/1.1 over TLS 1.3, keep-alive)
#
# One nginx origin (1 worker) answering "hello"; each binary runs under valgrind with
# bench/rampart.yaml; 2,000 requests warm it up, the counters are zeroed, then
# h2load --h1 -c8 sends N requests and the counters are dumped. KEEP=PREFIX keeps each
# profile as PREFIX.BINARY_NAME, with uncompressed names for callgrind_annotate.
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 BINARY [BINARY...]" >&2; exit 2; }
N=${N:-20000}
if [ "${H2C:-0}" = 1 ]; then LOAD=(-c 4 -m 8); else LOAD=(--h1 -c 8); fi
URL=http://127.0.0.1:18400/
if [ "${TLS:-0}" = 1 ]; then URL=https://127.0.0.1:18402/; fi
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/lib.sh"
bench_init instr
self_signed_cert
start_origin
for bin in "$@"; do
  out="$W/callgrind.$(basename "$bin").out"
  BENCH_PORT=18400 BENCH_TLS_PORT=18402 BENCH_CERT=$W/cert.pem BENCH_KEY=$W/key.pem \
    BENCH_BACKEND=127.0.0.1:18080 valgrind --tool=callgrind --callgrind-out-file="$out" ${KEEP:+--compress-strings=no} \
    "$(realpath "$bin")" run -c "$HERE/rampart.yaml" > "$W/vg.log" 2>&1 &
  vg=$!
  PIDS+=("$vg")
  for _ in $(seq 600); do curl -s -o /dev/null http://127.0.0.1:18400/ && break; sleep 0.1; done
  h2load -n 2000 "${LOAD[@]}" "$URL" > /dev/null
  callgrind_control -z "$vg" > /dev/null 2>&1
  h2load -n "$N" "${LOAD[@]}" "$URL" | grep -q "$N succeeded"
  callgrind_control -d "$vg" > /dev/null 2>&1
  kill "$vg"; wait "$vg" 2>/dev/null || true; [ -n "${KEEP:-}" ] && cp "$(ls -t "$out".* | head -1)" "$KEEP.$(basename "$bin")"
  ir=$(callgrind_annotate "$(ls -t "$out".* | head -1)" 2>/dev/null \
    | awk '/PROGRAM TOTALS/{gsub(",","",$1); print $1; exit}')
  echo "$bin: $((ir / N)) instructions per request"
done
