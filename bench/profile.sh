#!/bin/bash
# Where a rampart worker's CPU time goes, under the loads of bench/ab.sh: a cpu-clock
# profile (perf record; no hardware counters needed) of the proxy for each scenario,
# summed by where the time is spent: the kernel, rampart's own code, the crates it calls
# (h2, http, httparse, tokio, aws-lc for TLS), the allocator and libc's memcpy, the rest.
#
#   bench/profile.sh BINARY                 (DURATION=8 seconds per scenario)
#   SCENARIOS="h1 tls" bench/profile.sh BINARY      (default "h1 h2c tls")
#   TOP=40 bench/profile.sh BINARY          (the TOP symbols of each scenario, default 25)
#
# One nginx origin (1 worker) and the load generator run on core 0, rampart on core 1 with
# bench/rampart.yaml; the proxy is profiled at 2,000 samples a second while the load runs.
# The profiles stay in the work directory printed first (perf report -i FILE to read one).
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: $0 BINARY" >&2; exit 2; }
BIN=$(realpath "$1")
DURATION=${DURATION:-8}; SCENARIOS=${SCENARIOS:-h1 h2c tls}; TOP=${TOP:-25}
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/lib.sh"
bench_init profile
echo "profiles in $W"
self_signed_cert
start_origin
BENCH_PORT=18400 BENCH_TLS_PORT=18402 BENCH_CERT=$W/cert.pem BENCH_KEY=$W/key.pem \
  BENCH_BACKEND=127.0.0.1:18080 taskset -c 1 "$BIN" run -c "$HERE/rampart.yaml" \
  > "$W/rampart.log" 2>&1 &
PIDS+=($!); R=$!
wait_port 18400; wait_port 18402

load() {
  case $1 in
    h1) taskset -c 0 wrk -t1 -c64 -d"${DURATION}"s http://127.0.0.1:18400/ ;;
    tls) taskset -c 0 wrk -t1 -c64 -d"${DURATION}"s https://127.0.0.1:18402/ ;;
    h2c) taskset -c 0 h2load -t1 -c16 -m32 -D"${DURATION}" http://127.0.0.1:18400/ ;;
    *) echo "unknown scenario $1" >&2; exit 2 ;;
  esac > "$W/load-$1.txt" 2>&1
}

for s in $SCENARIOS; do
  load "$s" & l=$!
  # Past the load's connection set-up, and stopped before it ends.
  sleep 1
  perf record -q -e cpu-clock -F 2000 -p "$R" -o "$W/perf-$s.data" -- sleep $((DURATION - 2)) \
    > /dev/null 2>&1
  wait "$l"
  perf report -i "$W/perf-$s.data" --no-children --sort dso,sym --stdio 2>/dev/null \
    | awk '/^ +[0-9.]+%/' > "$W/symbols-$s.txt"
  echo "== $s: share of the proxy's CPU time"
  # Kernel symbols are marked [k]; user-space ones are grouped by what they belong to.
  awk '{
    pct = $1; sub("%", "", pct); sym = ""; for (i = 4; i <= NF; i++) sym = sym " " $i
    if ($3 == "[k]") k = "kernel";
    else if (sym ~ /memcpy|memmove/) k = "memcpy";
    else if (sym ~ /rjem|malloc|free/) k = "allocator";
    else if (sym ~ /aws_lc|aead_aes/) k = "aws-lc (TLS records)";
    else if (sym ~ /rampart/) k = "rampart";
    else if (sym ~ / <?h2::/) k = "h2 crate";
    else if (sym ~ / <?http::|httparse/) k = "http, httparse";
    else if (sym ~ /tokio|mio::/) k = "tokio";
    else k = "std, bytes, libc, other";
    t[k] += pct
  } END { for (k in t) printf "  %6.1f %%  %s\n", t[k], k }' "$W/symbols-$s.txt" | sort -rn
  echo "  top symbols:"
  head -n "$TOP" "$W/symbols-$s.txt" | awk '{$2 = ""; print "   " $0}' | cut -c1-150
done
