#!/bin/bash
# What mode tcp costs, rampart next to HAProxy's mode tcp (one worker each on core 1; wrk
# and an nginx origin on core 0). Both relay HTTP/1.1 as bytes, without reading it:
#   mib    keep-alive downloads of a 1 MiB object (wrk -c16): CPU per relayed MiB;
#   conn   one 5-byte request per connection (wrk -c16 with Connection: close, which
#          makes wrk open a new connection for each request): CPU per short connection.
#
#   bench/tcp-cost.sh RAMPART_BINARY       (DURATION=5 REPS=1)
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: $0 RAMPART_BINARY" >&2; exit 2; }
BIN=$(realpath "$1")
DURATION=${DURATION:-5}; REPS=${REPS:-1}
. "$(cd "$(dirname "$0")" && pwd)/lib.sh"
bench_init tcp-cost
head -c $((1 << 20)) /dev/urandom > "$W/big.bin"
chmod 755 "$W"; chmod 644 "$W/big.bin"  # read by nginx workers running as nobody
start_origin
cat > "$W/rampart.yaml" <<YAML
global: { threads: 1 }
frontends:
  tcp: { mode: tcp, bind: "127.0.0.1:18400", default_backend: origin }
backends:
  origin:
    mode: tcp
    servers: { s: { address: "127.0.0.1:18080" } }
YAML
cat > "$W/haproxy.cfg" <<CFG
global
    nbthread 1
    maxconn 4000
defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s
frontend tcp
    bind 127.0.0.1:18100
    default_backend origin
backend origin
    server s 127.0.0.1:18080
CFG
tck=$(getconf CLK_TCK)
cpu() { awk '{print $14+$15}' "/proc/$1/stat"; }
printf '%-6s %-8s %12s %12s\n' scenario proxy "µs/unit" "units/s"
for _ in $(seq "$REPS"); do
  for p in rampart haproxy; do
    if [ $p = rampart ]; then
      taskset -c 1 "$BIN" run -c "$W/rampart.yaml" > "$W/$p.log" 2>&1 & pid=$!; port=18400
    else
      taskset -c 1 haproxy -db -f "$W/haproxy.cfg" > "$W/$p.log" 2>&1 & pid=$!; port=18100
    fi
    PIDS+=($pid)
    wait_port $port
    for s in mib conn; do
      case $s in
        mib) args=(-c16); url=http://127.0.0.1:$port/big;;
        conn) args=(-c16 -H "Connection: close"); url=http://127.0.0.1:$port/;;
      esac
      c0=$(cpu $pid)
      taskset -c 0 wrk -t1 "${args[@]}" -H "Host: bench" -d"${DURATION}"s "$url" > "$W/wrk.out"
      c1=$(cpu $pid)
      n=$(awk '/requests in/{print $1}' "$W/wrk.out")
      [ "${n:-0}" -gt 0 ] || { echo "$p $s: no requests" >&2; exit 1; }
      if grep -qE "Non-2xx|Socket errors: connect [1-9]|read [1-9]" "$W/wrk.out"; then
        echo "$p $s: errors" >&2; cat "$W/wrk.out" >&2; exit 1
      fi
      # One unit: a MiB relayed (plus its response head), or a connection.
      printf '%-6s %-8s %12s %12s\n' "$s" "$p" \
        "$(python3 -c "print(round(($c1-$c0)/$tck*1e6/$n,2))")" "$(( n / DURATION ))"
    done
    kill $pid; wait $pid 2>/dev/null || true
  done
done
