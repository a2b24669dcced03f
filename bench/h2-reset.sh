#!/usr/bin/env bash
# HTTP/2 requests reset mid-flight leave no gauge raised: CONNS x STREAMS requests (default
# 100 x 100 = 10,000) go to a server that never answers; h2load gives up after SECONDS and
# closes its connections with every stream in flight. `show stat` is read while they are
# in flight and after: scur must fall back to 0 and cli_abrt count every request.
# Usage: bench/h2-reset.sh [path/to/rampart]   (needs h2load and python3)
set -euo pipefail
bin=${1:-target/release/rampart}
conns=${CONNS:-100} streams=${STREAMS:-100} secs=${SECONDS_RUN:-6}
work=$(mktemp -d)
trap 'kill $rp $hp 2>/dev/null || true; rm -rf "$work"' EXIT
ulimit -n 20000
cat > "$work/hung.py" <<'PY'
import asyncio
async def handle(r, w):
    try:
        while await r.read(65536):
            pass
    except Exception:
        pass
async def main():
    s = await asyncio.start_server(handle, '127.0.0.1', 18999, backlog=4096)
    await s.serve_forever()
asyncio.run(main())
PY
cat > "$work/stat.py" <<'PY'
import socket, sys
s = socket.create_connection(("127.0.0.1", 18998)); s.sendall(b"show stat\n")
data = b""
while (c := s.recv(65536)):
    data += c
lines = data.decode().splitlines()
hdr = lines[0].lstrip("# ").split(",")
for l in lines[1:]:
    row = dict(zip(hdr, l.split(",")))
    if row.get("pxname") == "hung":
        print(f"{sys.argv[1]:>7} {row['svname']:>8}: scur {row['scur']}, smax {row['smax']}, stot {row['stot']}, cli_abrt {row['cli_abrt']}")
PY
cat > "$work/rampart.yaml" <<'YAML'
global: { threads: 1, max_connections: 20000 }
admin: { socket: [{ address: "127.0.0.1:18998" }] }
frontends:
  fe: { bind: "127.0.0.1:18500", default_backend: hung }
backends:
  hung:
    balance: leastconn
    timeouts: { server: 120s }
    pool: { max_idle_per_server: 0 }
    servers: { s: { address: "127.0.0.1:18999" } }
YAML
python3 "$work/hung.py" & hp=$!
"$bin" run -c "$work/rampart.yaml" > "$work/rampart.log" 2>&1 & rp=$!
for _ in $(seq 50); do python3 -c 'import socket; socket.create_connection(("127.0.0.1", 18500)); socket.create_connection(("127.0.0.1", 18999))' 2>/dev/null && break; sleep 0.1; done
h2load -c"$conns" -m"$streams" -n $((conns * streams)) -D "$secs" http://127.0.0.1:18500/ > "$work/h2load.out" 2>&1 & h=$!
sleep $((secs - 2))
python3 "$work/stat.py" during
wait $h || true
grep -E '^requests:' "$work/h2load.out"
sleep 1
python3 "$work/stat.py" after
