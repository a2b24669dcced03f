#!/bin/bash
# Two rampart binaries side by side under the same load, alternating, for changes whose
# effect is smaller than the noise between harness runs on a shared machine.
#
#   bench/ab.sh BEFORE_BINARY AFTER_BINARY        (ROUNDS=5 DURATION=6 by default)
#   SCENARIOS="h1 h1_16k" bench/ab.sh ...           (default "h1 h2c tls"; also h1_16k, tlshs)
#
# One nginx origin (1 worker) and the load generator run on core 0, each rampart on core 1
# with bench/rampart.yaml. Each round runs h1 (wrk -t1 -c64), h2c (h2load -t1 -c16 -m32)
# and TLS keep-alive (wrk -t1 -c64), and with SCENARIOS also h1_16k (wrk -t1 -c64, a
# 16 KiB body, as the harness's h1_16k) and tlshs (a full TLS handshake per request, as the
# harness's tlshs), against "before" and then "after". The proxy's CPU
# time comes from /proc/PID/stat. Prints µs per request for each run, then per scenario
# the medians and the median of the per-round after/before ratios.
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: $0 BEFORE_BINARY AFTER_BINARY" >&2; exit 2; }
BEFORE=$(realpath "$1"); AFTER=$(realpath "$2")
ROUNDS=${ROUNDS:-5}; DURATION=${DURATION:-6}; SCENARIOS=${SCENARIOS:-h1 h2c tls}
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/lib.sh"
bench_init ab
self_signed_cert
# The 16 KiB object of h1_16k, readable by nginx's worker.
head -c 16384 /dev/urandom > "$W/big.bin"; chmod 755 "$W"; chmod 644 "$W/big.bin"
start_origin
start() { # binary port tls-port log
  BENCH_PORT=$2 BENCH_TLS_PORT=$3 BENCH_CERT=$W/cert.pem BENCH_KEY=$W/key.pem \
    BENCH_BACKEND=127.0.0.1:18080 taskset -c 1 "$1" run -c "$HERE/rampart.yaml" > "$4" 2>&1 &
  PIDS+=($!)
}
start "$BEFORE" 18400 18402 "$W/before.log"; PB=$!
start "$AFTER" 18410 18412 "$W/after.log"; PA=$!
for port in 18080 18400 18402 18410 18412; do
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
done
tck=$(getconf CLK_TCK)
cpu() { awk '{print $14+$15}' "/proc/$1/stat"; }
run() { # name pid scenario port
  local c0 n c1
  c0=$(cpu "$2")
  case $3 in
    h1) n=$(taskset -c 0 wrk -t1 -c64 -d"${DURATION}"s "http://127.0.0.1:$4/" | awk '/requests in/{print $1}');;
    h1_16k) n=$(taskset -c 0 wrk -t1 -c64 -d"${DURATION}"s "http://127.0.0.1:$4/big" | awk '/requests in/{print $1}');;
    tls) n=$(taskset -c 0 wrk -t1 -c64 -d"${DURATION}"s "https://127.0.0.1:$(( $4 + 2 ))/" | awk '/requests in/{print $1}');;
    h2c) n=$(taskset -c 0 h2load -t1 -c16 -m32 -D"${DURATION}" "http://127.0.0.1:$4/" 2>/dev/null | awk '/^requests:/{print $8}');;
    tlshs) n=$(taskset -c 0 wrk -t1 -c64 -d"${DURATION}"s -H 'Connection: close' "https://127.0.0.1:$(( $4 + 2 ))/" | awk '/requests in/{print $1}');;
  esac
  c1=$(cpu "$2")
  echo "$1 $3 $(python3 -c "print(round(($c1-$c0)/$tck*1e6/$n,2))") n=$n" | tee -a "$W/results"
}
for _ in $(seq "$ROUNDS"); do
  for s in $SCENARIOS; do
    run before "$PB" "$s" 18400
    run after "$PA" "$s" 18410
  done
done
python3 - "$W/results" $SCENARIOS <<'PY'
import collections, statistics, sys
runs = collections.defaultdict(list)
ratios = collections.defaultdict(list)
last = {}
for line in open(sys.argv[1]):
    name, scen, us = line.split()[:3]
    runs[(name, scen)].append(float(us))
    if name == "before":
        last[scen] = float(us)
    else:
        ratios[scen].append(float(us) / last[scen])
for s in sys.argv[2:]:
    b, a = statistics.median(runs[("before", s)]), statistics.median(runs[("after", s)])
    print(f"{s:6} before {b:6.2f}  after {a:6.2f}  after/before {statistics.median(ratios[s]):.3f}")
PY
rm -rf "$W"
