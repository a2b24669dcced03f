#!/bin/bash
# CPU per request of gzip level 1 on a 16 KiB HTML page, rampart next to HAProxy's
# `compression algo gzip` (one worker each, core 1; wrk and an nginx origin on core 0):
#   plain  the page sent as it is (the client does not ask for compression);
#   gzip   the page compressed (Accept-Encoding: gzip).
#
#   bench/compress-cost.sh RAMPART_BINARY       (DURATION=5 REPS=3)
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: $0 RAMPART_BINARY" >&2; exit 2; }
BIN=$(realpath "$1")
DURATION=${DURATION:-5}; REPS=${REPS:-3}
. "$(cd "$(dirname "$0")" && pwd)/lib.sh"
bench_init compress
chmod 755 "$W"
python3 - "$W/page.html" <<'PY'
import sys
rows = "".join(f"<tr><td>{i}</td><td>item {i}</td><td>{i * 37 % 1000} units</td></tr>\n" for i in range(400))
page = "<html><body><table>\n" + rows + "</table></body></html>\n"
open(sys.argv[1], "w").write(page[:16384])
PY
cat > "$W/rampart.yaml" <<YAML
global: { threads: 1 }
frontends:
  bench:
    bind: "127.0.0.1:18400"
    timeouts: { client: 60s, http_request: 60s, keep_alive: 60s }
    forwarded: { x_forwarded_for: false, x_forwarded_proto: false }
    default_backend: b
backends:
  b:
    compression: { algorithms: [gzip], level: 1 }
    servers: { s: { address: "127.0.0.1:18080" } }
    pool: { max_idle_per_server: 1024, idle_timeout: 120s }
YAML
{ haproxy_head http "tune.comp.maxlevel 1"; cat <<CFG; } > "$W/haproxy.cfg"
frontend bench
    bind 127.0.0.1:18100
    default_backend b
backend b
    compression algo gzip
    compression type text/html
    server s 127.0.0.1:18080
CFG
start_origin
printf '%-6s %-8s %10s %10s %10s\n' case proxy "µs/req" "req/s" "bytes/resp"
for _ in $(seq "$REPS"); do
  for p in rampart haproxy; do
    if [ $p = rampart ]; then cfg=$W/rampart.yaml port=18400; else cfg=$W/haproxy.cfg port=18100; fi
    start_proxy $p "$cfg"
    wait_port $port
    for c in plain gzip; do
      hdr=(-H "X-Case: $c"); [ $c = gzip ] && hdr=(-H "Accept-Encoding: gzip")
      size=$(curl -s "${hdr[@]}" -o /dev/null -w '%{size_download}' "http://127.0.0.1:$port/page.html")
      enc=$(curl -s -D - -o /dev/null "${hdr[@]}" "http://127.0.0.1:$port/page.html" | tr -d '\r' | awk -F': ' 'tolower($1)=="content-encoding"{print $2}')
      if [ $c = gzip ] && [ "$enc" != gzip ]; then echo "$p: not compressed" >&2; exit 1; fi
      c0=$(cpu $pid)
      n=$(taskset -c 0 wrk -t1 -c64 -d"${DURATION}"s "${hdr[@]}" "http://127.0.0.1:$port/page.html" \
          | awk '/requests in/{print $1}')
      c1=$(cpu $pid)
      printf '%-6s %-8s %10s %10s %10s\n' "$c" "$p" \
        "$(us_per "$c0" "$c1" "$n")" "$(( n / DURATION ))" "$size"
    done
    stop_proxy
  done
done
