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
{ haproxy_head tcp; cat <<CFG; } > "$W/haproxy.cfg"
frontend tcp
    bind 127.0.0.1:18100
    default_backend origin
backend origin
    server s 127.0.0.1:18080
CFG
printf '%-6s %-8s %12s %12s\n' scenario proxy "µs/unit" "units/s"
for _ in $(seq "$REPS"); do
  for p in rampart haproxy; do
    if [ $p = rampart ]; then cfg=$W/rampart.yaml port=18400; else cfg=$W/haproxy.cfg port=18100; fi
    start_proxy $p "$cfg"
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
        "$(us_per "$c0" "$c1" "$n")" "$(( n / DURATION ))"
    done
    stop_proxy
  done
done
