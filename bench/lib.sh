# Shared by the bench scripts: a work directory removed of its processes on exit, an nginx
# origin on 127.0.0.1:18080 answering "hello" (and /big with $W/big.bin, /page.html as
# text/html with $W/page.html, when a script writes them; one worker, on core 0; the same on 18081
# for connections that begin with a PROXY protocol header), and port waits.
#
#   . "$(dirname "$0")/lib.sh"; bench_init NAME; start_origin

# Sets W (a new work directory) and PIDS (processes stopped on exit, by PID).
bench_init() {
  W=$(mktemp -d "/tmp/rampart-$1-XXXXXX")
  PIDS=()
  trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true' EXIT
  mkdir -p "$W/tmp"
}

# Waits until something listens on 127.0.0.1:PORT (at most 6 s).
wait_port() {
  for _ in $(seq 600); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.01; done
  return 1
}

# Writes a throwaway certificate and key for localhost to $W/cert.pem and $W/key.pem.
self_signed_cert() {
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=localhost \
    -keyout "$W/key.pem" -out "$W/cert.pem" 2>/dev/null
}

# With ORIGIN_TLS=1, the origin also answers over TLS on 18090 with $W/cert.pem.
origin_tls() {
  [ "${ORIGIN_TLS:-0}" = 1 ] || return 0
  echo "    server { listen 127.0.0.1:18090 ssl backlog=4096; ssl_certificate $W/cert.pem;"
  echo "             ssl_certificate_key $W/key.pem; location / { return 200 \"hello\"; } }"
}

start_origin() {
  cat > "$W/origin.conf" <<NGINX
worker_processes 1;
daemon off;
pid $W/origin.pid;
error_log $W/origin-error.log warn;
worker_rlimit_nofile 20000;
events { worker_connections 19000; }
http {
    access_log off;
    client_body_temp_path $W/tmp; proxy_temp_path $W/tmp; fastcgi_temp_path $W/tmp;
    uwsgi_temp_path $W/tmp; scgi_temp_path $W/tmp;
    keepalive_timeout 300s;
    keepalive_requests 100000000;
    server {
        listen 127.0.0.1:18080 backlog=4096;
        location / { return 200 "hello"; }
        # Each response with a header value of its own, as ETags, cookies and lengths are.
        location = /unique { add_header X-Id \$request_id; return 200 "hello"; }
        # A 1 MiB object, when the script has written one.
        location = /big { alias $W/big.bin; }
        # A text page, when the script has written one.
        location = /page.html { default_type text/html; alias $W/page.html; }
    }
    server { listen 127.0.0.1:18081 proxy_protocol backlog=4096; location / { return 200 "hello"; } }
$(origin_tls)
}
NGINX
  taskset -c 0 nginx -c "$W/origin.conf" & PIDS+=($!)
  wait_port 18080
}

# CPU time (user and system) of PID, in clock ticks.
TCK=$(getconf CLK_TCK)
cpu() { awk '{print $14+$15}' "/proc/$1/stat"; }

# us_per C0 C1 N: microseconds of CPU per unit, for N units between the samples C0 and C1.
us_per() { python3 -c "print(round(($2 - $1) / $TCK * 1e6 / $3, 2))"; }

# start_proxy rampart|haproxy CONFIG [LOG]: the proxy under test ($BIN for rampart) on
# core 1, its output in LOG ($W/NAME.log by default); sets pid, stopped on exit.
start_proxy() {
  local log=${3:-$W/$1.log}
  if [ "$1" = rampart ]; then
    taskset -c 1 "$BIN" run -c "$2" > "$log" 2>&1 & pid=$!
  else
    taskset -c 1 haproxy -db -f "$2" > "$log" 2>&1 & pid=$!
  fi
  PIDS+=("$pid")
}

# stop_proxy: stops the proxy start_proxy started.
stop_proxy() { kill "$pid"; wait "$pid" 2>/dev/null || true; }

# haproxy_head MODE [GLOBAL_LINE...]: HAProxy's global and defaults sections as the bench
# scripts run it: one thread, connection reuse in mode http, long client and server
# timeouts.
haproxy_head() {
  local mode=$1; shift
  printf 'global\n    nbthread 1\n    maxconn 4000\n'
  for l in "$@"; do printf '    %s\n' "$l"; done
  printf 'defaults\n    mode %s\n' "$mode"
  [ "$mode" = http ] && printf '    http-reuse always\n'
  printf '    timeout connect 5s\n    timeout client 60s\n    timeout server 60s\n'
}

# HAProxy with the harness's configuration (18100, TLS 18102) and rampart BINARY with
# bench/rampart.yaml (18400, TLS 18402), each on core 1, after an nginx origin; sets H and
# R to their PIDs. Their TLS uses a P-256 certificate, as the harness's.
start_haproxy_and_rampart() {
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=bench \
    -keyout "$W/key.pem" -out "$W/cert.pem" 2>/dev/null
  cat "$W/cert.pem" "$W/key.pem" > "$W/cert_key.pem"
  sed -e "s#@WORK@#$W#g; s#@PORT@#18100#; s#@TLS_PORT@#18102#; s#@BACKEND_PORT@#18080#" \
    "$HERE/../../shared/bench/conf/haproxy.cfg" > "$W/haproxy.cfg"
  start_origin
  taskset -c 1 haproxy -db -f "$W/haproxy.cfg" > "$W/haproxy.log" 2>&1 & PIDS+=($!); H=$!
  BENCH_PORT=18400 BENCH_TLS_PORT=18402 BENCH_CERT="$W/cert.pem" BENCH_KEY="$W/key.pem" \
    BENCH_BACKEND=127.0.0.1:18080 taskset -c 1 "$1" run -c "$HERE/rampart.yaml" \
    > "$W/rampart.log" 2>&1 & PIDS+=($!); R=$!
  local p
  for p in 18100 18102 18400 18402; do wait_port $p; done
}
