#!/bin/bash
# Binary upgrades under load, rampart next to HAProxy's seamless reload (master-worker,
# the listening sockets passed to the new worker). For each proxy, one worker on core 1:
# wrk keeps 32 keep-alive connections busy while a probe opens a new connection for every
# request; UPGRADES upgrades (rampart: `upgrade` on the runtime API; HAProxy: `reload` on
# the master CLI) are asked for, one every 2 s. Reported: requests, failed requests
# (the probe's failures and wrk's errors), refused connections, and the gap in accepting:
# the longest time a probe request took from connect to the answer within 1 s after an
# upgrade, next to the median outside those windows.
#
#   bench/upgrade-gap.sh RAMPART_BINARY       (UPGRADES=5)
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: $0 RAMPART_BINARY" >&2; exit 2; }
BIN=$(realpath "$1")
UPGRADES=${UPGRADES:-5}
. "$(cd "$(dirname "$0")" && pwd)/lib.sh"
bench_init upgrade
DURATION=$((UPGRADES * 2 + 3))
cat > "$W/rampart.yaml" <<YAML
global: { threads: 1, grace: 5s }
admin:
  socket: [{ path: "$W/rampart.sock", level: admin }]
frontends:
  bench:
    bind: "127.0.0.1:18400"
    timeouts: { client: 60s, http_request: 60s, keep_alive: 60s }
    forwarded: { x_forwarded_for: false, x_forwarded_proto: false }
    default_backend: b
backends:
  b:
    servers: { s: { address: "127.0.0.1:18080" } }
YAML
{ haproxy_head http "hard-stop-after 5s" "stats socket $W/haproxy.sock level admin expose-fd listeners"; cat <<CFG; } > "$W/haproxy.cfg"
frontend bench
    bind 127.0.0.1:18100
    default_backend b
backend b
    server s 127.0.0.1:18080
CFG
cat > "$W/probe.py" <<'PY'
import socket, sys, time
port, duration, marks = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
req = b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
start = time.monotonic()
rows, refused, failed = [], 0, 0
while time.monotonic() - start < duration:
    t0 = time.monotonic()
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
    except ConnectionRefusedError:
        refused += 1
        continue
    except OSError:
        failed += 1
        continue
    try:
        s.sendall(req)
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        ok = data.startswith(b"HTTP/1.1 200")
    except OSError:
        ok = False
    finally:
        s.close()
    t1 = time.monotonic()
    if ok:
        rows.append((t0 - start, (t1 - t0) * 1000))
    else:
        failed += 1
ups = [float(x) - start for x in open(marks).read().split()] if marks else []
inside = [ms for t, ms in rows if any(0 <= t - u <= 1.0 for u in ups)]
outside = sorted(ms for t, ms in rows if not any(0 <= t - u <= 1.0 for u in ups))
med = outside[len(outside) // 2] if outside else 0
print(f"{len(rows) + failed} {failed} {refused} {max(inside or [0]):.2f} {med:.2f} {len(ups)}")
PY
start_origin
printf '%-8s %9s %7s %8s %13s %13s %9s\n' proxy requests failed refused "gap max ms" "median ms" upgrades
for p in rampart haproxy; do
  : > "$W/marks"
  if [ $p = rampart ]; then
    port=18400
    taskset -c 1 "$BIN" run -c "$W/rampart.yaml" > "$W/rampart.log" 2>&1 & pid=$!
  else
    port=18100
    taskset -c 1 haproxy -W -S "$W/master.sock" -db -f "$W/haproxy.cfg" > "$W/haproxy.log" 2>&1 & pid=$!
  fi
  PIDS+=("$pid")
  wait_port $port
  taskset -c 0 wrk -t1 -c32 -d"${DURATION}"s "http://127.0.0.1:$port/" > "$W/wrk-$p.txt" &
  wrk_pid=$!
  taskset -c 0 python3 "$W/probe.py" $port "$DURATION" "$W/marks" > "$W/probe-$p.txt" &
  probe_pid=$!
  for _ in $(seq "$UPGRADES"); do
    sleep 2
    python3 -c 'import time; print(time.monotonic())' >> "$W/marks"
    if [ $p = rampart ]; then
      "$BIN" ctl -s "$W/rampart.sock" upgrade >> "$W/answers-$p.txt"
    else
      python3 - "$W/master.sock" >> "$W/answers-$p.txt" <<'PY'
import socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.sendall(b"reload\n")
print(s.recv(4096).decode().strip() or "reload sent")
PY
    fi
  done
  wait $probe_pid; wait $wrk_pid
  read -r n failed refused gap med ups < "$W/probe-$p.txt"
  wn=$(awk '/requests in/{print $1}' "$W/wrk-$p.txt")
  werr=$(awk '/Socket errors/{gsub(",","");s=$4+$6+$8+$10} /Non-2xx/{s+=$NF} END{print s+0}' "$W/wrk-$p.txt")
  printf '%-8s %9s %7s %8s %13s %13s %9s\n' $p $((n + wn)) $((failed + werr)) "$refused" "$gap" "$med" "$ups"
  if [ $p = rampart ]; then
    # The process now serving, then every process of the chain.
    last=$("$BIN" ctl -s "$W/rampart.sock" "show info" | awk '/^Pid:/{print $2}')
    kill "$last" 2>/dev/null || true
    grep -c "^Upgrade done" "$W/answers-$p.txt" > /dev/null || { cat "$W/answers-$p.txt" >&2; exit 1; }
  else
    kill "$pid"
  fi
  wait "$pid" 2>/dev/null || true
  sleep 1
done
