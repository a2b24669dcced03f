#!/bin/bash
# Where each proxy's kernel time goes on HTTP/1.1 keep-alive (wrk -c64, 5 B), rampart next
# to HAProxy, per request: the wake-ups and inter-processor interrupts its system calls
# cause (perf tracepoints, counted in the proxy's context), and a flat profile of its
# kernel functions in ns per request (perf record -e cpu-clock), side by side.
#
#   bench/kernel-split.sh RAMPART_BINARY     (ROUNDS=2 DURATION=5 F=5000 TOP=20: the TOP
#                                             largest differences, then the 8 most negative)
#
# Same placement as bench/cpu-split.sh: each proxy on core 1 with the harness's settings,
# wrk and an nginx origin on core 0. Without a PMU, cpu-clock samples taken while
# interrupts are off land where they are turned back on (`_raw_spin_unlock_irqrestore`).
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: $0 RAMPART_BINARY" >&2; exit 2; }
BIN=$(realpath "$1")
ROUNDS=${ROUNDS:-2}; DURATION=${DURATION:-5}; F=${F:-5000}; TOP=${TOP:-20}
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/lib.sh"
bench_init ksplit
start_haproxy_and_rampart "$BIN"
load() { taskset -c 0 wrk -t1 -c64 -d"${DURATION}"s "http://127.0.0.1:$1/" | awk '/requests in/{print $1}'; }
EV=sched:sched_waking,sched:sched_wakeup,sched:sched_wake_idle_without_ipi,ipi:ipi_send_cpu
echo "== wake-ups and IPIs per request"
for _ in $(seq "$ROUNDS"); do
  for p in haproxy rampart; do
    if [ $p = haproxy ]; then pid=$H; port=18100; else pid=$R; port=18400; fi
    perf stat -x, -e "$EV" -p "$pid" -o "$W/stat.$p" -- sleep "$DURATION" & ps=$!
    n=$(load $port); wait $ps || true
    printf '%-8s' $p
    awk -F, -v n="$n" '$3 != "" && $1 ~ /^[0-9]/ {sub("sched:|ipi:", "", $3); printf "  %s %.4f", $3, $1 / n}' "$W/stat.$p"
    echo
  done
done
echo "== kernel functions, ns per request (last round; HAProxy, rampart, difference)"
for p in haproxy rampart; do
  if [ $p = haproxy ]; then pid=$H; port=18100; else pid=$R; port=18400; fi
  perf record -q -e cpu-clock -F "$F" -p "$pid" -o "$W/perf.$p" -- sleep "$DURATION" > /dev/null 2>&1 & pp=$!
  n=$(load $port); wait $pp || true
  perf report -i "$W/perf.$p" -n --no-children --sort sym -q --percent-limit 0.2 2>/dev/null \
    | awk -v n="$n" -v f="$F" '$3 == "[k]" {printf "%s %.0f\n", $4, $2 * 1e9 / f / n}' | sort > "$W/k.$p"
done
join -a1 -a2 -e0 -o 0,1.2,2.2 "$W/k.haproxy" "$W/k.rampart" > "$W/k.both"
awk '{printf "%8d %8d %8d  %s\n", $2, $3, $3 - $2, $1}' "$W/k.both" | sort -k3,3 -g -r > "$W/k.sorted"
head -n "$TOP" "$W/k.sorted"; echo "     ..."; tail -n 8 "$W/k.sorted"
awk '{h += $2; r += $3} END {printf "%8d %8d %8d  (all functions listed)\n", h, r, r - h}' "$W/k.both"
