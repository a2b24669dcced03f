#!/bin/bash
# A large configuration, rampart next to HAProxy: BACKENDS backends of SERVERS servers each
# (1,000 x 10 by default), every server the same nginx origin, no health checks. Measures
# the time and peak memory of checking it (`rampart check` / `haproxy -c`), the time to
# start until the port answers and the RSS then, and for rampart the time of each of
# RELOADS reloads (SIGHUP until "Configuration reloaded" is logged) while wrk sends
# requests through it, with wrk's count of failed requests.
#
#   bench/config-scale.sh RAMPART_BINARY     (BACKENDS=1000 SERVERS=10 RELOADS=5)
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: $0 RAMPART_BINARY" >&2; exit 2; }
BIN=$(realpath "$1")
BACKENDS=${BACKENDS:-1000}; SERVERS=${SERVERS:-10}; RELOADS=${RELOADS:-5}
. "$(cd "$(dirname "$0")" && pwd)/lib.sh"
bench_init cfg
python3 - "$W" "$BACKENDS" "$SERVERS" <<'PY'
import sys
w, nb, ns = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
r = ["global: { threads: 1 }", "frontends:", "  bench:", '    bind: "127.0.0.1:18400"',
     "    default_backend: b0", "backends:"]
h = ["global", "    nbthread 1", "    maxconn 4000", "defaults", "    mode http",
     "    timeout connect 5s", "    timeout client 30s", "    timeout server 30s",
     "frontend bench", "    bind 127.0.0.1:18100", "    default_backend b0"]
for b in range(nb):
    r.append(f"  b{b}:")
    r.append("    servers:")
    h.append(f"backend b{b}")
    for s in range(ns):
        r.append(f'      s{s}: {{ address: "127.0.0.1:18080" }}')
        h.append(f"    server s{s} 127.0.0.1:18080")
open(f"{w}/rampart.yaml", "w").write("\n".join(r) + "\n")
open(f"{w}/haproxy.cfg", "w").write("\n".join(h) + "\n")
PY
echo "configuration: $BACKENDS backends x $SERVERS servers; rampart.yaml $(wc -c < "$W/rampart.yaml") bytes, haproxy.cfg $(wc -c < "$W/haproxy.cfg") bytes"
now() { date +%s.%N; }
ms() { python3 -c "print(f'{($2 - $1) * 1000:.0f}')" ; }
rss() { awk '/^VmRSS:/{printf "%.1f MiB", $2/1024}' "/proc/$1/status"; }
start_origin
/usr/bin/time -f "%e s, peak RSS %M KiB" -o "$W/t" "$BIN" check -c "$W/rampart.yaml" > /dev/null
echo "rampart check: $(cat "$W/t")"
/usr/bin/time -f "%e s, peak RSS %M KiB" -o "$W/t" haproxy -c -f "$W/haproxy.cfg" > /dev/null
echo "haproxy -c:    $(cat "$W/t")"
t0=$(now)
taskset -c 1 "$BIN" run -c "$W/rampart.yaml" > "$W/rampart.log" 2>&1 & R=$!; PIDS+=($R)
wait_port 18400; t1=$(now)
curl -sf -o /dev/null http://127.0.0.1:18400/
echo "rampart start: $(ms "$t0" "$t1") ms to answer, RSS $(rss $R)"
t0=$(now)
taskset -c 1 haproxy -db -f "$W/haproxy.cfg" > "$W/haproxy.log" 2>&1 & H=$!; PIDS+=($H)
wait_port 18100; t1=$(now)
curl -sf -o /dev/null http://127.0.0.1:18100/
echo "haproxy start: $(ms "$t0" "$t1") ms to answer, RSS $(rss $H)"
# Reloads under traffic.
taskset -c 0 wrk -t1 -c16 -d$(( RELOADS * 2 + 4 ))s http://127.0.0.1:18400/ > "$W/wrk.txt" 2>&1 & WRK=$!
sleep 1
for i in $(seq "$RELOADS"); do
  gen=$(( i + 1 ))
  t0=$(now)
  kill -HUP "$R"
  for _ in $(seq 3000); do grep -q "generation $gen)" "$W/rampart.log" && break; sleep 0.005; done
  t1=$(now)
  echo "rampart reload $i: $(ms "$t0" "$t1") ms, RSS $(rss $R)"
  sleep 1
done
wait "$WRK"
failed=$(grep -E 'Non-2xx|Socket errors' "$W/wrk.txt" | xargs || true)
echo "wrk during the reloads: $(grep -E 'requests in' "$W/wrk.txt" | xargs); failed: ${failed:-none}"
grep -q "generation $(( RELOADS + 1 )))" "$W/rampart.log" || { echo "a reload did not finish" >&2; exit 1; }
