#!/usr/bin/env bash
# How long `rampart check` takes, and how much memory, on configurations at the limits of
# docs/configuration.md#limits, next to `haproxy -c` on the same configuration written as
# haproxy.cfg; and on files past them, which must be refused at once.
#
#   cargo build --release --bin rampart && bench/check-limits.sh
#
# Each figure is the median of REPS (5) runs: wall seconds and peak RSS (MiB). Needs
# python3, openssl, GNU time (/usr/bin/time); haproxy when present.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
REPS=${REPS:-5}
RAMPART=${RAMPART:-${CARGO_TARGET_DIR:-$root/target}/release/rampart}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"

# 200 RSA-2048 keys with their certificates, each named 5 times: 1,000 certificates.
mkdir certs
for i in $(seq 0 199); do
  openssl req -x509 -newkey rsa:2048 -nodes -keyout k.pem -out c.pem -days 2 \
    -subj "/CN=h$i.example.com" 2>/dev/null
  cat c.pem k.pem > "certs/k$i.pem"
  for j in 0 1 2 3 4; do cp "certs/k$i.pem" "certs/c$((i * 5 + j)).pem"; done
  rm "certs/k$i.pem"
done

python3 - <<'EOF'
import os
def both(name, yaml, cfg=None):
    open(name + '.yaml', 'w').write(yaml)
    if cfg is not None:
        open(name + '.cfg', 'w').write("defaults\n  mode http\n  timeout client 5s\n  timeout server 5s\n  timeout connect 5s\n" + cfg)
FE = "frontends:\n  f:\n    bind: '127.0.0.1:1'\n"
BE = "backends:\n  b:\n    servers:\n      s: {address: '127.0.0.1:1'}\n"
HFE = "frontend f\n  bind 127.0.0.1:1\n"
HBE = "backend b\n  server s 127.0.0.1:1\n"

n = 50_000
both('backends-50k',
     FE + "    default_backend: b0\nbackends:\n" + ''.join(f"  b{i}: {{servers: {{s: {{address: '127.0.0.1:1'}}}}}}\n" for i in range(n)),
     HFE + "  default_backend b0\n" + ''.join(f"backend b{i}\n  server s 127.0.0.1:1\n" for i in range(n)))

y = [FE, "    default_backend: b0\nbackends:\n"]; h = [HFE, "  default_backend b0\n"]
for b in range(1000):
    y.append(f"  b{b}:\n    servers:\n"); h.append(f"backend b{b}\n")
    for i in range(100):
        y.append(f"      s{i}: {{address: '127.0.{i}.{b % 250 + 1}:{1000 + b}'}}\n")
        h.append(f"  server s{i} 127.0.{i}.{b % 250 + 1}:{1000 + b}\n")
both('servers-100k', ''.join(y), ''.join(h))

n = 100_000
both('rules-100k',
     FE + "    default_backend: b\n    http_request:\n" + ''.join(f"      - set-header X-A{i % 100} v if {{ path_beg /a{i}/ }}\n" for i in range(n)) + BE,
     HFE + "  default_backend b\n" + ''.join(f"  http-request set-header X-A{i % 100} v if {{ path_beg /a{i}/ }}\n" for i in range(n)) + HBE)

n = 5_000
both('regexes-5k',
     FE + "    default_backend: b\n    http_request:\n" + ''.join(f"      - deny if {{ path_reg ^/a{i}/[a-z]+(x|y)*$ }}\n" for i in range(n)) + BE,
     HFE + "  default_backend b\n" + ''.join(f"  http-request deny if {{ path_reg ^/a{i}/[a-z]+(x|y)*$ }}\n" for i in range(n)) + HBE)

with open('patterns.lst', 'w') as f:
    for i in range(1_000_000):
        f.write(f"/path/number/{i}\n")
both('patterns-1m',
     FE + "    default_backend: b\n    acls:\n      a: path -f patterns.lst\n    http_request:\n      - deny if a\n" + BE,
     HFE + "  default_backend b\n  acl a path -f patterns.lst\n  http-request deny if a\n" + HBE)

both('certificates-1k',
     "frontends:\n  f:\n    bind: [{address: '127.0.0.1:1', tls: {certificates: [" + ", ".join(f"{{cert: certs/c{i}.pem}}" for i in range(1000)) + "]}}]\n    default_backend: b\n" + BE,
     HFE.replace("127.0.0.1:1", "127.0.0.1:1 ssl crt-list certs.list") + "  default_backend b\n" + HBE)
open('certs.list', 'w').write(''.join(f"certs/c{i}.pem\n" for i in range(1000)))

# Near 150% together: 50,000 servers, 45,000 rules (and their 42,500 patterns), 2,500
# regular expressions.
y = [FE, "    default_backend: b\n    http_request:\n"]; h = [HFE, "  default_backend b\n"]
for i in range(45_000):
    if i < 2_500:
        y.append(f"      - deny if {{ path_reg ^/a{i}/[a-z]+(x|y)*$ }}\n"); h.append(f"  http-request deny if {{ path_reg ^/a{i}/[a-z]+(x|y)*$ }}\n")
    else:
        y.append(f"      - set-header X-A{i % 100} v if {{ path_beg /a{i}/ }}\n"); h.append(f"  http-request set-header X-A{i % 100} v if {{ path_beg /a{i}/ }}\n")
y.append("backends:\n  b:\n    servers:\n"); h.append("backend b\n")
for i in range(50_000):
    y.append(f"      s{i}: {{address: '127.0.{i // 250 % 250}.{i % 250 + 1}:{1000 + i // 62500}'}}\n")
    h.append(f"  server s{i} 127.0.{i // 250 % 250}.{i % 250 + 1}:{1000 + i // 62500}\n")
both('together-150', ''.join(y), ''.join(h))

# Past the limits: refused.
s = "a0: &a0 [lol]\n" + ''.join(f"a{i}: &a{i} [{', '.join([f'*a{i-1}'] * 9)}]\n" for i in range(1, 10))
both('past-alias-bomb', s)
both('past-nodes', "x: [" + ",".join(["1"] * 1_000_001) + "]\n")
both('past-servers', FE + "    default_backend: b\nbackends:\n  b:\n    servers:\n" + ''.join(f"      s{i}: {{address: '127.0.0.1:{1 + i % 60000}'}}\n" for i in range(100_001)))
both('past-errors', FE + "    default_backend: b\n" + BE + "global:\n" + ''.join(f"  unknown{i}: 1\n" for i in range(300_000)))
EOF

median() { sort -n | sed -n "$(((REPS + 1) / 2))p"; }
measure() { # command...: "seconds MiB" medians
  local ts=() ms=()
  for _ in $(seq "$REPS"); do
    /usr/bin/time -f "%e %M" -o t.out "$@" >/dev/null 2>&1 || true
    read -r t m < <(tail -1 t.out)
    ts+=("$t"); ms+=("$m")
  done
  printf "%s %s\n" "$(printf "%s\n" "${ts[@]}" | median)" \
    "$(($(printf "%s\n" "${ms[@]}" | median) / 1024))"
}

printf "| file | size | rampart check: s, MiB | haproxy -c: s, MiB | rampart's answer |\n|---|---|---|---|---|\n"
for f in backends-50k servers-100k rules-100k regexes-5k patterns-1m certificates-1k together-150 \
  past-alias-bomb past-nodes past-servers past-errors; do
  read -r rs rm < <(measure "$RAMPART" check -c "$f.yaml")
  answer=$({ "$RAMPART" check -c "$f.yaml" 2>&1 || true; } | head -1 | sed "s|$work/||; s/|/\\\\|/g" | cut -c1-110)
  hap="-"
  if [ -f "$f.cfg" ] && command -v haproxy >/dev/null; then
    read -r hs hm < <(measure haproxy -c -f "$f.cfg")
    hap="$hs, $hm"
  fi
  size=$(du -k "$f.yaml" | cut -f1)
  printf "| %s | %s KiB | %s, %s | %s | %s |\n" "$f" "$size" "$rs" "$rm" "$hap" "$answer"
done
