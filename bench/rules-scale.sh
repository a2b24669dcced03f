#!/bin/bash
# CPU per request as the backend choice grows, rampart next to HAProxy (one worker each,
# core 1; wrk and an nginx origin on core 0):
#   base     no rule, the default backend;
#   rules-N  N `use_backend bI if { path_beg /pI/ }` rules (N = 10, 100, 1000), the
#            request matching the last one, so that a rule-by-rule evaluation tries all;
#   patterns two rules over 10,000 patterns each, `path_beg -f paths` and
#            `hdr(host) -f hosts`, the request matching the last host pattern;
#   map      the backend named by a 10,000-entry map of host names
#            (`use_backend %[req.hdr(host),lower,map(hosts.map,b0)]`), the request's host
#            the last entry, next to `base` for what a map lookup adds.
#
#   bench/rules-scale.sh RAMPART_BINARY       (DURATION=5 REPS=1 SCENARIOS="base map")
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: $0 RAMPART_BINARY" >&2; exit 2; }
BIN=$(realpath "$1")
DURATION=${DURATION:-5}; REPS=${REPS:-1}
. "$(cd "$(dirname "$0")" && pwd)/lib.sh"
bench_init rules
# configs: $W/<scenario>.yaml and .cfg
python3 - "$W" <<'PY'
import sys
w = sys.argv[1]
def write(name, nbackends, rules_r, rules_h):
    r = ["global: { threads: 1 }", "frontends:", "  bench:", '    bind: "127.0.0.1:18400"',
         "    timeouts: { client: 60s, http_request: 60s, keep_alive: 60s }",
         "    forwarded: { x_forwarded_for: false, x_forwarded_proto: false }",
         "    default_backend: b0"]
    if rules_r:
        r.append("    use_backend:")
        r += [f'      - "{x}"' for x in rules_r]
    r.append("backends:")
    for b in range(nbackends):
        r += [f"  b{b}:", '    servers: { s: { address: "127.0.0.1:18080" } }',
              "    pool: { max_idle_per_server: 1024, idle_timeout: 120s }"]
    h = ["global", "    nbthread 1", "    maxconn 4000", "defaults", "    mode http",
         "    http-reuse always", "    timeout connect 5s", "    timeout client 60s",
         "    timeout server 60s", "frontend bench", "    bind 127.0.0.1:18100"]
    h += [f"    use_backend {x}" for x in rules_h]
    h.append("    default_backend b0")
    for b in range(nbackends):
        h += [f"backend b{b}", "    server s 127.0.0.1:18080"]
    open(f"{w}/{name}.yaml", "w").write("\n".join(r) + "\n")
    open(f"{w}/{name}.cfg", "w").write("\n".join(h) + "\n")
write("base", 1, [], [])
for n in (10, 100, 1000):
    rules = [f"b{i} if {{ path_beg /p{i}/ }}" for i in range(n)]
    write(f"rules-{n}", n, rules, rules)
open(f"{w}/paths.lst", "w").write("".join(f"/x{i}/\n" for i in range(10000)))
open(f"{w}/hosts.lst", "w").write("".join(f"h{i}.example\n" for i in range(10000)))
pat = [f"b1 if {{ path_beg -f {w}/paths.lst }}", f"b2 if {{ hdr(host) -f {w}/hosts.lst }}"]
write("patterns", 3, pat, pat)
open(f"{w}/hosts.map", "w").write("".join(f"h{i}.example b{1 + i % 2}\n" for i in range(10000)))
m = f"%[req.hdr(host),lower,map({w}/hosts.map,b0)]"
write("map", 3, [m], [m])
PY
start_origin
printf '%-10s %-8s %10s %10s\n' scenario proxy "µs/req" "req/s"
for _ in $(seq "$REPS"); do
  for s in ${SCENARIOS:-base rules-10 rules-100 rules-1000 patterns map}; do
    case $s in
      rules-*) path="/p$(( ${s#rules-} - 1 ))/x"; host=bench;;
      patterns|map) path=/y; host=h9999.example;;
      *) path=/; host=bench;;
    esac
    for p in rampart haproxy; do
      if [ $p = rampart ]; then cfg=$W/$s.yaml port=18400; else cfg=$W/$s.cfg port=18100; fi
      start_proxy $p "$cfg" "$W/$p-$s.log"
      wait_port $port
      code=$(curl -s -o /dev/null -w '%{http_code}' -H "Host: $host" "http://127.0.0.1:$port$path")
      [ "$code" = 200 ] || { echo "$p $s: status $code" >&2; exit 1; }
      c0=$(cpu $pid)
      n=$(taskset -c 0 wrk -t1 -c64 -d"${DURATION}"s -H "Host: $host" "http://127.0.0.1:$port$path" \
          | awk '/requests in/{print $1}')
      c1=$(cpu $pid)
      stop_proxy
      printf '%-10s %-8s %10s %10s\n' "$s" "$p" \
        "$(us_per "$c0" "$c1" "$n")" "$(( n / DURATION ))"
    done
  done
done
