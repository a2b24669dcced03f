#!/bin/bash
# Peak memory of HTTP/2 clients whose responses each carry a header value of their own (as
# ETags, cookies and lengths do), for rampart next to HAProxy. An HTTP/2 connection's HPACK
# encoder keeps the values it indexes (up to its 4 KiB table) for as long as the connection
# lives, so what those values point into stays in memory too.
#
#   bench/h2-busy-mem.sh RAMPART_BINARY [RAMPART_BINARY...]   (CONNS=100 N=200000)
#
# For each binary: a fresh rampart and HAProxy (bench/rampart.yaml and the harness's
# HAProxy configuration, one worker each on core 1), an nginx origin on core 0 whose
# /unique adds `X-Id: $request_id` to each response, and h2load -c CONNS -m 4 -n N over h2c.
# Prints each proxy's RSS before the load and its peak RSS (VmHWM) during it.
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 RAMPART_BINARY [RAMPART_BINARY...]" >&2; exit 2; }
CONNS=${CONNS:-100}; N=${N:-200000}
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/lib.sh"
kib() { awk -v k="$2" '$1 == k":" {print $2}' "/proc/$1/status"; }
for bin in "$@"; do
  bench_init h2mem
  start_haproxy_and_rampart "$(realpath "$bin")"
  for p in "haproxy $H 18100" "rampart $R 18400"; do
    set -- $p
    idle=$(kib "$2" VmRSS)
    taskset -c 0 h2load -c "$CONNS" -m 4 -n "$N" "http://127.0.0.1:$3/unique" \
      | grep -q "$N succeeded" || { echo "$1: requests failed" >&2; exit 1; }
    printf '%-8s %-32s RSS before %7d KiB  peak %7d KiB  peak - before %7d KiB (%d B per connection)\n' \
      "$1" "$([ "$1" = rampart ] && basename "$bin" || echo -)" "$idle" "$(kib "$2" VmHWM)" \
      "$(( $(kib "$2" VmHWM) - idle ))" "$(( ($(kib "$2" VmHWM) - idle) * 1024 / CONNS ))"
  done
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true
  PIDS=()
done
