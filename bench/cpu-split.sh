#!/bin/bash
# Where the proxy's CPU goes: user space and kernel time per request, rampart next to
# HAProxy (the harness's configuration, one thread each, core 1; wrk or h2load and an
# nginx origin on core 0), with the TCP segments the whole machine sent per request.
# Alternates the two proxies ROUNDS times per scenario.
#
#   bench/cpu-split.sh RAMPART_BINARY       (ROUNDS=3 DURATION=5 SCENARIOS="h1 h2c tls";
#                                            h1_16k: a 16 KiB body, as the harness's)
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: $0 RAMPART_BINARY" >&2; exit 2; }
BIN=$(realpath "$1")
ROUNDS=${ROUNDS:-3}; DURATION=${DURATION:-5}; SCENARIOS=${SCENARIOS:-h1 h2c tls}
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/lib.sh"
bench_init split
# The 16 KiB object of h1_16k (nginx's /big), readable by its worker.
head -c 16384 /dev/urandom > "$W/big.bin"; chmod 755 "$W"; chmod 644 "$W/big.bin"
start_haproxy_and_rampart "$BIN"
tck=$(getconf CLK_TCK)
ticks() { awk '{print $14, $15}' "/proc/$1/stat"; }
segs() { nstat -az TcpOutSegs | awk '/TcpOutSegs/{print $2}'; }
# run SCENARIO PID PORT TLS_PORT: prints "requests user_ticks sys_ticks segments"
run() {
  local u0 s0 g0 n u1 s1
  read -r u0 s0 < <(ticks "$2"); g0=$(segs)
  case $1 in
    h1) n=$(taskset -c 0 wrk -t1 -c64 -d"${DURATION}"s "http://127.0.0.1:$3/" | awk '/requests in/{print $1}');;
    h1_16k) n=$(taskset -c 0 wrk -t1 -c64 -d"${DURATION}"s "http://127.0.0.1:$3/big" | awk '/requests in/{print $1}');;
    tls) n=$(taskset -c 0 wrk -t1 -c64 -d"${DURATION}"s "https://127.0.0.1:$4/" | awk '/requests in/{print $1}');;
    h2c) n=$(taskset -c 0 h2load -t1 -c16 -m32 -D"$DURATION" "http://127.0.0.1:$3/" 2>/dev/null \
             | awk '/^requests:/{print $4}');;
  esac
  read -r u1 s1 < <(ticks "$2")
  echo "$n $((u1 - u0)) $((s1 - s0)) $(( $(segs) - g0 ))"
}
printf '%-6s %-8s %9s %9s %9s %9s\n' scen proxy "µs/req" "user" "kernel" "segs/req"
for s in $SCENARIOS; do
  for _ in $(seq "$ROUNDS"); do
    for p in haproxy rampart; do
      if [ $p = haproxy ]; then set -- $(run "$s" $H 18100 18102); else set -- $(run "$s" $R 18400 18402); fi
      awk -v s="$s" -v p=$p -v n="$1" -v u="$2" -v k="$3" -v g="$4" -v t="$tck" 'BEGIN {
        f = 1e6 / t / n; printf "%-6s %-8s %9.2f %9.2f %9.2f %9.2f\n", s, p, (u + k) * f, u * f, k * f, g / n }'
    done
  done
done
