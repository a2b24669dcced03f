#!/usr/bin/env bash
# The cost of a `track-sc0 src` rule in instructions per request, for rampart and HAProxy,
# counted by callgrind: unlike time on a shared machine, the count repeats run after run.
#
#   bench/track-cost.sh            # after `cargo build --release --bin rampart`
#
# Each proxy runs under callgrind in front of one nginx backend, with and without the rule
# (bench/rampart.yaml and bench/rampart-track.yaml; bench/haproxy-track.cfg and the same
# file without its two tracking lines). h2load sends LOW and then HIGH requests to fresh
# processes; (instructions(HIGH) - instructions(LOW)) / (HIGH - LOW) is the cost of one
# request without start-up and shutdown. The backend is the harness's nginx. Needs valgrind,
# nginx, haproxy, h2load, openssl.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
LOW=${LOW:-1000}
HIGH=${HIGH:-3000}
RAMPART=${RAMPART:-$root/target/release/rampart}
work=$(mktemp -d)
backend=
cleanup() {
  if [ -n "$backend" ]; then kill "$backend" 2>/dev/null || true; fi
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

export BENCH_PORT=18400 BENCH_TLS_PORT=18402 BENCH_BACKEND=127.0.0.1:18080
export BENCH_CERT=$work/cert.pem BENCH_KEY=$work/key.pem BENCH_PEM=$work/both.pem
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -subj /CN=localhost -keyout "$BENCH_KEY" -out "$BENCH_CERT" 2>/dev/null
cat "$BENCH_CERT" "$BENCH_KEY" >"$BENCH_PEM"

wait_port() {
  for _ in $(seq 1 600); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "port $1 did not open" >&2
  return 1
}

# The harness's own backend (../shared/bench/conf/backend-nginx.conf), filled in as it does.
mkdir -p "$work/tmp-backend"
sed -e "s|@WORK@|$work|g" -e 's/@BACKEND_PORT@/18080/g' -e 's/@BACKEND_H2C_PORT@/18081/g' \
  -e 's/@BACKEND_TLS_PORT@/18082/g' -e 's/@BACKEND_WORKERS@/1/g' \
  ../shared/bench/conf/backend-nginx.conf >"$work/backend.conf"
nginx -c "$work/backend.conf" -e "$work/backend-error.log" &
backend=$!
wait_port 18080

sed -e '/stick-table/d' -e '/track-sc0/d' bench/haproxy-track.cfg >"$work/haproxy.cfg"

# instructions NAME SCENARIO COUNT COMMAND...: the proxy's total instruction count for COUNT
# requests of SCENARIO (h1: HTTP/1.1 over 8 connections; h2c: 4 connections x 8 streams).
instructions() {
  local name=$1 scenario=$2 count=$3
  shift 3
  local out=$work/$name-$scenario-$count.cg
  valgrind --tool=callgrind --callgrind-out-file="$out" "$@" >"$work/$name.log" 2>&1 &
  local pid=$!
  wait_port "$BENCH_PORT"
  if [ "$scenario" = h1 ]; then
    h2load --h1 -n "$count" -c 8 "http://127.0.0.1:$BENCH_PORT/" >"$work/load.txt"
  else
    h2load -n "$count" -c 4 -m 8 "http://127.0.0.1:$BENCH_PORT/" >"$work/load.txt"
  fi
  kill -TERM "$pid"
  wait "$pid" || true
  if ! grep -q " $count succeeded, 0 failed, 0 errored" "$work/load.txt" \
    || ! grep -q "status codes: $count 2xx" "$work/load.txt"; then
    echo "$name $scenario: not every request succeeded:" >&2
    grep -E "requests:|status codes:" "$work/load.txt" >&2
    return 1
  fi
  # callgrind writes its totals once the process has exited.
  awk '/^(summary|totals):/ { print $2; exit }' "$out"
}

printf '%-16s %-4s %14s %14s %12s\n' proxy scen "instr@$LOW" "instr@$HIGH" instr/request
for scenario in h1 h2c; do
  for name in rampart rampart-track haproxy haproxy-track; do
    case $name in
      rampart) cmd=("$RAMPART" run -c bench/rampart.yaml) ;;
      rampart-track) cmd=("$RAMPART" run -c bench/rampart-track.yaml) ;;
      haproxy) cmd=(haproxy -db -f "$work/haproxy.cfg") ;;
      haproxy-track) cmd=(haproxy -db -f bench/haproxy-track.cfg) ;;
    esac
    lo=$(instructions "$name" "$scenario" "$LOW" "${cmd[@]}")
    hi=$(instructions "$name" "$scenario" "$HIGH" "${cmd[@]}")
    printf '%-16s %-4s %14s %14s %12s\n' "$name" "$scenario" "$lo" "$hi" $(((hi - lo) / (HIGH - LOW)))
  done
done
