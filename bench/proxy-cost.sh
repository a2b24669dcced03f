#!/bin/bash
# What the PROXY protocol costs per request, rampart next to HAProxy (one worker each,
# core 1; wrk, an nginx origin and, for the close scenarios, a client-side HAProxy on
# core 0). Each proxy serves every scenario from one process, on its own port:
#   ka        HTTP/1.1 keep-alive (wrk -c64), nothing sent;
#   ka-send   the same, each server connection beginning with a v2 header
#             (send_proxy_v2 / send-proxy-v2; nginx's listen ... proxy_protocol reads it);
#   close     one request per connection: wrk -c16 through a client-side HAProxy with
#             http-server-close, which opens a new connection to the proxy per request;
#   close-pp  the same with that HAProxy sending a v1 header first (send-proxy) and the
#             proxy reading it (accept_proxy / accept-proxy): a header read on every
#             request, its worst case.
#
#   bench/proxy-cost.sh RAMPART_BINARY       (DURATION=5 REPS=1)
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: $0 RAMPART_BINARY" >&2; exit 2; }
BIN=$(realpath "$1")
DURATION=${DURATION:-5}; REPS=${REPS:-1}
. "$(cd "$(dirname "$0")" && pwd)/lib.sh"
bench_init proxy-cost
cat > "$W/rampart.yaml" <<YAML
global: { threads: 1 }
frontends:
  ka: { bind: "127.0.0.1:18400", default_backend: plain, timeouts: { client: 60s, http_request: 60s, keep_alive: 60s }, forwarded: { x_forwarded_for: false, x_forwarded_proto: false } }
  ka-send: { bind: "127.0.0.1:18401", default_backend: send, timeouts: { client: 60s, http_request: 60s, keep_alive: 60s }, forwarded: { x_forwarded_for: false, x_forwarded_proto: false } }
  close: { bind: "127.0.0.1:18402", default_backend: plain, timeouts: { client: 60s, http_request: 60s, keep_alive: 60s }, forwarded: { x_forwarded_for: false, x_forwarded_proto: false } }
  close-pp: { bind: { address: "127.0.0.1:18403", accept_proxy: true }, default_backend: plain, timeouts: { client: 60s, http_request: 60s, keep_alive: 60s }, forwarded: { x_forwarded_for: false, x_forwarded_proto: false } }
backends:
  plain:
    servers: { s: { address: "127.0.0.1:18080" } }
    pool: { max_idle_per_server: 1024, idle_timeout: 120s }
  send:
    servers: { s: { address: "127.0.0.1:18081", send_proxy_v2: true } }
    pool: { max_idle_per_server: 1024, idle_timeout: 120s }
YAML
{ haproxy_head http; cat <<CFG; } > "$W/haproxy.cfg"
frontend ka
    bind 127.0.0.1:18100
    default_backend plain
frontend ka-send
    bind 127.0.0.1:18101
    default_backend send
frontend close
    bind 127.0.0.1:18102
    default_backend plain
frontend close-pp
    bind 127.0.0.1:18103 accept-proxy
    default_backend plain
backend plain
    server s 127.0.0.1:18080
backend send
    server s 127.0.0.1:18081 send-proxy-v2
CFG
# The client side of the close scenarios: a new connection to the proxy for each request.
{
  printf 'global\n    nbthread 1\n    maxconn 4000\ndefaults\n    mode http\n'
  printf '    option http-server-close\n    timeout connect 5s\n    timeout client 60s\n'
  printf '    timeout server 60s\n'
  # front port, target port, server option
  while read -r front target opt; do
    printf 'listen f%s\n    bind 127.0.0.1:%s\n    server s 127.0.0.1:%s %s\n' \
      "$front" "$front" "$target" "$opt"
  done <<PORTS
18202 18402
18203 18403 send-proxy
18302 18102
18303 18103 send-proxy
PORTS
} > "$W/front.cfg"
start_origin
taskset -c 0 haproxy -db -f "$W/front.cfg" > "$W/front.log" 2>&1 & PIDS+=($!)
wait_port 18202
printf '%-9s %-8s %10s %10s\n' scenario proxy "µs/req" "req/s"
for _ in $(seq "$REPS"); do
  for p in rampart haproxy; do
    if [ $p = rampart ]; then cfg=$W/rampart.yaml base=18400; else cfg=$W/haproxy.cfg base=18100; fi
    start_proxy $p "$cfg"
    for i in 0 1 2 3; do wait_port $((base + i)); done
    i=0
    for s in ka ka-send close close-pp; do
      port=$((base + i)); i=$((i + 1))
      case $s in
        ka*) args=(-c64); url=http://127.0.0.1:$port/;;
        *) args=(-c16); url=http://127.0.0.1:$((port - base + (base == 18400 ? 18200 : 18300)))/;;
      esac
      c0=$(cpu $pid)
      taskset -c 0 wrk -t1 "${args[@]}" -H "Host: bench" -d"${DURATION}"s "$url" > "$W/wrk.out"
      c1=$(cpu $pid)
      n=$(awk '/requests in/{print $1}' "$W/wrk.out")
      [ "${n:-0}" -gt 0 ] || { echo "$p $s: no requests" >&2; exit 1; }
      if grep -q "Non-2xx" "$W/wrk.out"; then echo "$p $s: errors" >&2; cat "$W/wrk.out" >&2; exit 1; fi
      printf '%-9s %-8s %10s %10s\n' "$s" "$p" \
        "$(us_per "$c0" "$c1" "$n")" "$(( n / DURATION ))"
    done
    stop_proxy
  done
done
