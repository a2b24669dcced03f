#!/bin/bash
# Memory per idle keep-alive client connection, plain HTTP/1.1 and TLS, for rampart next to
# HAProxy and nginx, at several connection counts.
#
#   bench/idle-mem.sh RAMPART_BINARY       (COUNTS="10000" MODES="plain tls h2"
#                                           PROXIES="rampart haproxy nginx" REPS=1
#                                           LATER=SECONDS: RSS again that long after;
#                                           RAMPART_ENV="env VAR=value": rampart's environment)
#
# Each proxy runs one worker on core 1 with the configuration of the side-by-side harness
# (bench/rampart.yaml for rampart); an nginx origin and the client run on core 0. For each
# proxy, mode and count: a fresh proxy, 4 requests, RSS; then COUNT connections that each
# send one GET, read the response and stay open (bench/idle_conns.py, PARALLEL=200 at a time); RSS
# again 2 s later. Prints (loaded - idle) / COUNT. RSS is user-space memory only. Mode h2
# is HTTP/2 over TLS: one stream per connection, on the TLS port, which offers h2 here (an
# HTTP/1.1 client still gets HTTP/1.1 there).
# The hard limit of 20,000 open files per process on these machines caps COUNT at about
# 19,000.
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: $0 RAMPART_BINARY" >&2; exit 2; }
BIN=$(realpath "$1")
COUNTS=${COUNTS:-10000}; MODES=${MODES:-plain tls h2}; REPS=${REPS:-1}; PARALLEL=${PARALLEL:-200}
PROXIES=${PROXIES:-rampart haproxy nginx}
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/lib.sh"
bench_init idle
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -subj /CN=localhost -keyout "$W/key.pem" -out "$W/cert.pem" 2>/dev/null
cat "$W/cert.pem" "$W/key.pem" > "$W/cert_key.pem"
cat > "$W/haproxy.cfg" <<HAPROXY
global
    nbthread 1
    maxconn 19500
    no strict-limits
    tune.ssl.cachesize 0
    ssl-default-bind-options ssl-min-ver TLSv1.2 no-tls-tickets
defaults
    mode http
    maxconn 19500
    option http-keep-alive
    http-reuse always
    timeout connect 5s
    timeout client 120s
    timeout server 120s
    timeout http-request 120s
    timeout http-keep-alive 120s
frontend fe
    bind 127.0.0.1:18100 backlog 4096
    bind 127.0.0.1:18102 ssl crt $W/cert_key.pem alpn h2,http/1.1 backlog 4096
    default_backend be
backend be
    server s1 127.0.0.1:18080
HAPROXY
cat > "$W/nginx.conf" <<NGINX
worker_processes 1;
daemon off;
pid $W/nginx.pid;
error_log $W/nginx-error.log warn;
worker_rlimit_nofile 20000;
events { worker_connections 19500; }
http {
    access_log off;
    client_body_temp_path $W/tmp; proxy_temp_path $W/tmp; fastcgi_temp_path $W/tmp;
    uwsgi_temp_path $W/tmp; scgi_temp_path $W/tmp;
    tcp_nodelay on;
    keepalive_timeout 120s;
    keepalive_requests 100000000;
    ssl_certificate $W/cert.pem;
    ssl_certificate_key $W/key.pem;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache off;
    ssl_session_tickets off;
    upstream backend {
        server 127.0.0.1:18080;
        keepalive 1024;
        keepalive_requests 100000000;
        keepalive_timeout 120s;
    }
    server {
        listen 127.0.0.1:18300 backlog=4096;
        listen 127.0.0.1:18302 ssl http2 backlog=4096;
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
NGINX
# rampart's harness configuration, its TLS bind offering h2 too.
sed 's#alpn: \[http/1.1\]#alpn: [h2, http/1.1]#' "$HERE/rampart.yaml" > "$W/rampart.yaml"
grep -q 'alpn: \[h2, http/1.1\]' "$W/rampart.yaml" || { echo "no alpn in rampart.yaml" >&2; exit 1; }
start_origin
rss() { # KiB of a process and its children
  local t=0 p
  for p in $1 $(pgrep -P "$1" || true); do
    t=$(( t + $(awk '/^VmRSS:/{print $2}' "/proc/$p/status" 2>/dev/null || echo 0) ))
  done
  echo "$t"
}
one() { # proxy mode count
  local port pid idle loaded ready
  case $1 in
    rampart)
      BENCH_PORT=18400 BENCH_TLS_PORT=18402 BENCH_CERT=$W/cert.pem BENCH_KEY=$W/key.pem \
        BENCH_BACKEND=127.0.0.1:18080 ${RAMPART_ENV:-} taskset -c 1 "$BIN" run -c "$W/rampart.yaml" \
        > "$W/rampart.log" 2>&1 &
      pid=$!; port=18400;;
    haproxy) taskset -c 1 haproxy -db -f "$W/haproxy.cfg" > "$W/haproxy.log" 2>&1 & pid=$!; port=18100;;
    nginx) taskset -c 1 nginx -c "$W/nginx.conf" > "$W/nginx.log" 2>&1 & pid=$!; port=18300;;
  esac
  local client=()
  case $2 in
    tls) port=$(( port + 2 )); client=(--tls);;
    h2) port=$(( port + 2 )); client=(--h2);;
  esac
  wait_port "$port" || { echo "$1 did not start" >&2; kill "$pid"; return 1; }
  for _ in 1 2 3 4; do curl -sk -o /dev/null "$([ "$2" = plain ] && echo http || echo https)://127.0.0.1:$port/"; done
  sleep 1
  idle=$(rss "$pid")
  coproc CL { taskset -c 0 python3 "$HERE/idle_conns.py" --port "$port" -n "$3" --parallel "$PARALLEL" "${client[@]}"; }
  read -r ready <&"${CL[0]}"
  sleep 2
  loaded=$(rss "$pid")
  local later=""
  if [ -n "${LATER:-}" ]; then
    sleep $(( LATER - 2 ))
    later=$(printf '  after %ss %6.0f B/conn' "$LATER" "$(echo "($(rss "$pid")-$idle)*1024/$3" | bc -l)")
  fi
  exec {CL[1]}>&-
  wait "$CL_PID" 2>/dev/null || true
  kill "$pid"; wait "$pid" 2>/dev/null || true
  printf '%-8s %-5s %6d  idle %6.1f MiB  loaded %6.1f MiB  %6.0f B/conn%s  (%s)\n' "$1" "$2" "$3" \
    "$(echo "$idle/1024" | bc -l)" "$(echo "$loaded/1024" | bc -l)" \
    "$(echo "($loaded-$idle)*1024/$3" | bc -l)" "$later" "$ready"
}
for _ in $(seq "$REPS"); do
  for n in $COUNTS; do
    for m in $MODES; do
      for p in $PROXIES; do one "$p" "$m" "$n"; done
    done
  done
done
