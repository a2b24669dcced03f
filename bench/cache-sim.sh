#!/bin/bash
# User-space instructions and simulated cache misses per proxied request, rampart next to
# HAProxy, under the harness's h2c load (16 connections of 32 streams): callgrind with its
# cache simulation (a 48 KiB L1d and, as the last level, a 1 MiB cache like one core's
# L2 here). What a request costs beyond its instructions, in lines it brings in and
# writes back, for changes to the room a request takes; repeatable where CPU time is not.
#
#   bench/cache-sim.sh RAMPART_BINARY        (N=20000 requests after 4,000 of warm-up)
#   LOAD="-c4 -m8" bench/cache-sim.sh ...    (another h2load load; default "-c16 -m32")
#   PROXIES=rampart bench/cache-sim.sh ...   (default "haproxy rampart")
#
# One nginx origin (1 worker); each proxy runs under valgrind with the harness's
# configuration (HAProxy: ../shared/bench/conf/haproxy.cfg; rampart: bench/rampart.yaml).
# Columns per request: Ir instructions, Dr/Dw data reads/writes, I1mr instruction-cache
# misses, D1mr/D1mw L1d read/write misses, ILmr instruction fetches and DLmr/DLmw data reads
# and writes that miss the last level.
# KEEP=PREFIX keeps each profile as PREFIX.PROXY (callgrind_annotate reads it).
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: $0 RAMPART_BINARY" >&2; exit 2; }
BIN=$(realpath "$1")
N=${N:-20000}; LOAD=${LOAD:--c16 -m32}; PROXIES=${PROXIES:-haproxy rampart}
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/lib.sh"
bench_init csim
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=bench \
  -keyout "$W/key.pem" -out "$W/cert.pem" 2>/dev/null
cat "$W/cert.pem" "$W/key.pem" > "$W/cert_key.pem"
start_origin
printf '%-8s %8s %8s %8s %8s %8s %8s %8s %8s %8s\n' proxy Ir Dr Dw I1mr D1mr D1mw ILmr DLmr DLmw
for who in $PROXIES; do
  out="$W/callgrind.$who.out"
  vg=(valgrind --tool=callgrind --cache-sim=yes --D1=49152,12,64 --LL=1048576,16,64
      --callgrind-out-file="$out")
  if [ "$who" = haproxy ]; then
    sed -e "s#@WORK@#$W#g; s#@PORT@#18100#; s#@TLS_PORT@#18102#; s#@BACKEND_PORT@#18080#" \
      "$HERE/../../shared/bench/conf/haproxy.cfg" > "$W/haproxy.cfg"
    "${vg[@]}" haproxy -db -f "$W/haproxy.cfg" > "$W/vg-$who.log" 2>&1 &
    port=18100
  else
    BENCH_PORT=18400 BENCH_TLS_PORT=18402 BENCH_CERT=$W/cert.pem BENCH_KEY=$W/key.pem \
      BENCH_BACKEND=127.0.0.1:18080 "${vg[@]}" "$BIN" run -c "$HERE/rampart.yaml" \
      > "$W/vg-$who.log" 2>&1 &
    port=18400
  fi
  pid=$!
  PIDS+=("$pid")
  for _ in $(seq 600); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done
  # shellcheck disable=SC2086
  h2load -n 4000 $LOAD "http://127.0.0.1:$port/" > /dev/null
  callgrind_control -z "$pid" > /dev/null 2>&1
  # shellcheck disable=SC2086
  h2load -n "$N" $LOAD "http://127.0.0.1:$port/" | grep -q "$N succeeded"
  callgrind_control -d "$pid" > /dev/null 2>&1
  kill "$pid"; wait "$pid" 2>/dev/null || true
  f=$(ls -t "$out".* | head -1)
  [ -n "${KEEP:-}" ] && cp "$f" "$KEEP.$who"
  callgrind_annotate "$f" 2>/dev/null | awk -v n="$N" -v who="$who" '/PROGRAM TOTALS/ {
    printf "%-8s", who
    for (i = 1; i <= NF; i += 2) { v = $i; gsub(",", "", v); if (v ~ /^[0-9]+$/) printf " %8.0f", v / n }
    printf "\n"; exit }'
done
