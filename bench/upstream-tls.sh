#!/bin/bash
# TLS towards servers, two rampart binaries side by side: memory per pooled idle TLS
# connection, then CPU per request (HTTP/1.1 clients, TLS 1.3 to the origin).
#
#   bench/upstream-tls.sh BEFORE_BINARY AFTER_BINARY        (N=1500 ROUNDS=4)
#
# The nginx origin of lib.sh (1 worker, core 0) serves "hello" over TLS. Memory: a fresh rampart,
# N requests at once (h2load --h1 -c N) so that it opens N connections to the origin and
# pools them; 12 s later (jemalloc's decay), (RSS - RSS before) / sockets. That figure
# also holds what the burst of N clients left behind, so only the difference between
# the two binaries is the pooled connection's. CPU: both binaries on core 1, wrk -c64 on
# core 0, alternating; CPU time from /proc/PID/stat.
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: $0 BEFORE_BINARY AFTER_BINARY" >&2; exit 2; }
BEFORE=$(realpath "$1"); AFTER=$(realpath "$2")
N=${N:-1500}; ROUNDS=${ROUNDS:-4}
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/lib.sh"
bench_init uptls
self_signed_cert
ORIGIN_TLS=1 start_origin
wait_port 18090
config() { # file port
  cat > "$1" <<YAML
global: { threads: 1, max_connections: 20000 }
frontends:
  f:
    bind: ["127.0.0.1:$2"]
    default_backend: be
backends:
  be:
    servers: { s1: { address: "127.0.0.1:18090" } }
    tls: { verify: false }
    pool: { max_idle_per_server: 5000, idle_timeout: 300s }
YAML
}
config "$W/a.yaml" 18400
config "$W/b.yaml" 18410
rss() { awk '/VmRSS/{print $2}' "/proc/$1/status"; }
for bin in "$BEFORE" "$AFTER"; do
  "$bin" run -c "$W/a.yaml" > "$W/mem.log" 2>&1 &
  p=$!
  wait_port 18400
  for _ in 1 2 3 4; do curl -s -o /dev/null http://127.0.0.1:18400/; done
  sleep 1
  r0=$(rss $p)
  h2load --h1 -n "$N" -c "$N" http://127.0.0.1:18400/ | grep -q "$N succeeded"
  sleep 12
  socks=$(find "/proc/$p/fd" -lname 'socket:*' | wc -l)
  r1=$(rss $p)
  echo "memory $(basename "$bin"): $socks sockets, RSS $r0 -> $r1 KiB, $(( (r1 - r0) * 1024 / socks )) B per socket"
  kill $p; wait $p 2>/dev/null || true
done
taskset -c 1 "$BEFORE" run -c "$W/a.yaml" > "$W/a.log" 2>&1 & PA=$!; PIDS+=($PA)
taskset -c 1 "$AFTER" run -c "$W/b.yaml" > "$W/b.log" 2>&1 & PB=$!; PIDS+=($PB)
wait_port 18400; wait_port 18410
run() { # pid port
  local c0 n c1
  c0=$(cpu "$1")
  n=$(taskset -c 0 wrk -t1 -c64 -d5s "http://127.0.0.1:$2/" | awk '/requests in/{print $1}')
  c1=$(cpu "$1")
  python3 -c "print(round(($c1-$c0)/$TCK*1e6/$n,2))"
}
ratios=()
for r in $(seq "$ROUNDS"); do
  a=$(run $PA 18400); b=$(run $PB 18410)
  ratios+=("$(python3 -c "print($b/$a)")")
  echo "cpu round $r: before $a after $b us/request"
done
python3 -c "import statistics,sys; print('cpu after/before (median of rounds): %.3f' % statistics.median(map(float, sys.argv[1:])))" "${ratios[@]}"
rm -rf "$W"
