#!/bin/bash
# CPU per request of OpenTelemetry tracing, rampart next to Envoy's OpenTelemetry tracer
# (both exporting OTLP/HTTP to the nginx origin, which answers 200 to every export), with
# HAProxy untraced for reference. One worker each on core 1; wrk (64 keep-alive
# connections) and the origin on core 0. Cases:
#   off    no tracing configured
#   0%     tracing on, sampling 0% (rampart only: Envoy's sampling needs request ids)
#   100%   every request traced: a request span and an attempt span, exported in batches
#
#   base   (with BASE=BINARY) that binary untraced: a build without tracing, to show
#          what tracing's presence costs requests that are not traced
#
#   bench/trace-cost.sh RAMPART_BINARY       (DURATION=5 REPS=3 [BASE=OLDER_BINARY])
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: $0 RAMPART_BINARY" >&2; exit 2; }
BIN=$(realpath "$1")
DURATION=${DURATION:-5}; REPS=${REPS:-3}
. "$(cd "$(dirname "$0")" && pwd)/lib.sh"
bench_init trace
rampart_cfg() {
  local tracing=$1
  cat <<YAML
global: { threads: 1 }
$( [ -n "$tracing" ] && printf 'tracing: { endpoint: "127.0.0.1:18080", service_name: bench }\n' )
frontends:
  bench:
    bind: "127.0.0.1:18400"
    timeouts: { client: 60s, http_request: 60s, keep_alive: 60s }
    forwarded: { x_forwarded_for: false, x_forwarded_proto: false }
    default_backend: b
$( [ -n "$tracing" ] && printf '    tracing: { sampling: %s }\n' "$tracing" )
backends:
  b:
    servers: { s: { address: "127.0.0.1:18080" } }
    pool: { max_idle_per_server: 1024, idle_timeout: 120s }
YAML
}
rampart_cfg "" > "$W/rampart-off.yaml"
rampart_cfg "0%" > "$W/rampart-0.yaml"
rampart_cfg "100%" > "$W/rampart-100.yaml"
envoy_cfg() {
  local traced=$1
  cat <<YAML
admin: { address: { socket_address: { address: 127.0.0.1, port_value: 18201 } } }
static_resources:
  listeners:
  - name: bench
    address: { socket_address: { address: 127.0.0.1, port_value: 18200 } }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: bench
          generate_request_id: $traced
$( [ "$traced" = true ] && cat <<TRACING
          tracing:
            random_sampling: { value: 100 }
            provider:
              name: envoy.tracers.opentelemetry
              typed_config:
                "@type": type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig
                service_name: bench
                http_service:
                  http_uri: { uri: "http://127.0.0.1:18080/v1/traces", cluster: otlp, timeout: 1s }
TRACING
)
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes: [{ match: { prefix: "/" }, route: { cluster: backend } }]
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
              suppress_envoy_headers: true
  clusters:
  - name: backend
    load_assignment:
      cluster_name: backend
      endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: 18080 } } } }] }]
  - name: otlp
    load_assignment:
      cluster_name: otlp
      endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: 18080 } } } }] }]
YAML
}
envoy_cfg false > "$W/envoy-off.yaml"
envoy_cfg true > "$W/envoy-100.yaml"
{ haproxy_head http; cat <<CFG; } > "$W/haproxy.cfg"
frontend bench
    bind 127.0.0.1:18100
    default_backend b
backend b
    server s 127.0.0.1:18080
CFG
start_origin
printf '%-8s %-5s %10s %10s\n' proxy case "µs/req" "req/s"
run_case() {
  local name=$1 case=$2 port=$3
  wait_port "$port"
  curl -sf -o /dev/null "http://127.0.0.1:$port/" || { echo "$name $case: no answer" >&2; exit 1; }
  local c0 c1 n
  c0=$(cpu "$pid")
  n=$(taskset -c 0 wrk -t1 -c64 -d"${DURATION}"s "http://127.0.0.1:$port/" | awk '/requests in/{print $1}')
  c1=$(cpu "$pid")
  printf '%-8s %-5s %10s %10s\n' "$name" "$case" "$(us_per "$c0" "$c1" "$n")" "$(( n / DURATION ))"
  kill "$pid"; wait "$pid" 2>/dev/null || true
}
for _ in $(seq "$REPS"); do
  if [ -n "${BASE:-}" ]; then
    taskset -c 1 "$BASE" run -c "$W/rampart-off.yaml" > "$W/rampart-base.log" 2>&1 & pid=$!; PIDS+=("$pid")
    run_case rampart base 18400
  fi
  for c in off 0 100; do
    taskset -c 1 "$BIN" run -c "$W/rampart-$c.yaml" > "$W/rampart-$c.log" 2>&1 & pid=$!; PIDS+=("$pid")
    run_case rampart "$c" 18400
  done
  for c in off 100; do
    taskset -c 1 envoy -c "$W/envoy-$c.yaml" --concurrency 1 -l error > "$W/envoy-$c.log" 2>&1 & pid=$!; PIDS+=("$pid")
    run_case envoy "$c" 18200
  done
  taskset -c 1 haproxy -db -f "$W/haproxy.cfg" > "$W/haproxy.log" 2>&1 & pid=$!; PIDS+=("$pid")
  run_case haproxy off 18100
done
# Every export reached the collector (rampart logs spans it could not export or dropped
# nothing here; a failed export would be logged).
if grep -h "not exported" "$W"/rampart-*.log; then echo "rampart: exports failed" >&2; exit 1; fi
