#!/usr/bin/env bash
# The release binary built with profile-guided optimisation: rustc builds an instrumented
# rampart, it proxies a training workload (packaging/pgo-train.yaml: HTTP/1.1, h2c, HTTP/1.1
# and HTTP/2 over TLS, full handshakes, one client at a time, small and 16 KiB bodies,
# rules, a stick table, gzip, mode tcp; an nginx origin), and rustc builds it again laid
# out by what ran, hot paths together and cold ones aside. docs/BENCHMARKS.md
# ("Profile-guided build") has what it saves.
#
#   packaging/pgo.sh            (prints the binary's path: $CARGO_TARGET_DIR/pgo/rampart)
#
# Needs the Rust toolchain's llvm-tools (added with rustup when missing), nginx, wrk and
# h2load (nghttp2-client), installed when missing and run as root. Takes two release builds
# and about 40 s of load; the profile is made from this very source, never reused.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
OUT=$TARGET/pgo
D=${PGO_SECONDS:-3}

need=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v h2load >/dev/null 2>&1 || need+=(nghttp2-client)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
if ((${#need[@]})); then
  if [ "$(id -u)" = 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}"
  else
    echo "pgo: missing ${need[*]} and not root to install them" >&2
    exit 1
  fi
fi
export PATH=$PATH:/usr/sbin

host=$(rustc -vV | sed -n 's/^host: //p')
profdata=$(rustc --print sysroot)/lib/rustlib/$host/bin/llvm-profdata
if [ ! -x "$profdata" ]; then
  rustup component add llvm-tools
fi
# The profile's format is LLVM's: the tool must be the one rustc was built with.
rustc_llvm=$(rustc -vV | sed -n 's/^LLVM version: //p')
profdata_version=$("$profdata" --version)
grep -q "LLVM version $rustc_llvm" <<<"$profdata_version" \
  || { echo "pgo: $profdata is not LLVM $rustc_llvm, rustc's" >&2; exit 1; }

# The work directory, its processes stopped on exit, and the nginx origin: bench/lib.sh's.
. bench/lib.sh
bench_init pgo
# The instrumented binary writes its counts here; a fixed path keeps its build reusable.
PROFILES=$TARGET/pgo-generate/profiles
rm -rf "$PROFILES"
mkdir -p "$PROFILES" "$OUT"

# With --target, RUSTFLAGS reach rampart's crates and dependencies but not build scripts
# and procedural macros, which would otherwise be instrumented (and profiled) as well.
build() { # target-dir rustflags
  RUSTFLAGS="$2" CARGO_TARGET_DIR="$1" cargo build --release --locked --target "$host" -p rampart
}
echo "pgo: instrumented build" >&2
build "$TARGET/pgo-generate" "-Cprofile-generate=$PROFILES"

# The origin (bench/lib.sh): nginx, one worker, a 5-byte answer, and here a 16 KiB object
# and a page to compress.
self_signed_cert
head -c 16384 /dev/urandom > "$W/big.bin"
for i in $(seq 200); do echo "<p>Line $i of a page that compresses well.</p>"; done > "$W/page.html"
chmod 755 "$W"; chmod 644 "$W/big.bin" "$W/page.html"
start_origin
PGO_ORIGIN=127.0.0.1:18080 PGO_CERT=$W/cert.pem PGO_KEY=$W/key.pem \
  LLVM_PROFILE_FILE="$PROFILES/rampart-%p-%m.profraw" \
  "$TARGET/pgo-generate/$host/release/rampart" run -c packaging/pgo-train.yaml > "$W/rampart.log" 2>&1 &
proxy=$!
PIDS+=("$proxy")
for port in 18500 18502 18504 18506 18508; do wait_port "$port"; done

# Each load must complete requests, and none may fail.
wrk_load() { # arguments for wrk
  local out
  out=$(wrk -t1 -d"${D}s" "$@")
  grep -q 'requests in' <<<"$out" && ! grep -q -e 'Non-2xx' -e 'Socket errors' <<<"$out" \
    || { echo "pgo: wrk $*: $out" >&2; return 1; }
}
h2_load() { # arguments for h2load
  local out
  out=$(h2load -t1 -D"$D" "$@")
  grep -Eq '^requests: .* [1-9][0-9]* succeeded, 0 failed, 0 errored' <<<"$out" \
    && grep -Eq '^status codes: [1-9][0-9]* 2xx, 0 3xx, 0 4xx, 0 5xx' <<<"$out" \
    || { echo "pgo: h2load $*: $out" >&2; return 1; }
}
echo "pgo: training" >&2
wrk_load -c64 http://127.0.0.1:18500/
wrk_load -c64 http://127.0.0.1:18500/big
wrk_load -c1 http://127.0.0.1:18500/
h2_load -c16 -m32 http://127.0.0.1:18500/
wrk_load -c64 https://127.0.0.1:18502/
wrk_load -c64 -H 'Connection: close' https://127.0.0.1:18502/
wrk_load -c32 http://127.0.0.1:18504/api/items
wrk_load -c32 https://127.0.0.1:18506/app.js
h2_load -c16 -m16 https://127.0.0.1:18506/
h2_load -c16 -m16 https://127.0.0.1:18506/api/items
h2_load -c8 -m8 -H 'Accept-Encoding: gzip' https://127.0.0.1:18506/page.html
wrk_load -c16 -H 'Accept-Encoding: gzip' http://127.0.0.1:18504/page.html
wrk_load -c16 http://127.0.0.1:18508/
kill -TERM "$proxy"
wait "$proxy" || { echo "pgo: the instrumented proxy did not stop cleanly:" >&2; cat "$W/rampart.log" >&2; exit 1; }

ls "$PROFILES"/rampart-*.profraw > /dev/null
# The optimised build reads the profile from a new path each time: cargo rebuilds when the
# flags change, not when a file they name does.
"$profdata" merge -o "$W/rampart.profdata" "$PROFILES"/rampart-*.profraw
echo "pgo: optimised build" >&2
build "$TARGET/pgo-use" "-Cprofile-use=$W/rampart.profdata"
cp "$TARGET/pgo-use/$host/release/rampart" "$OUT/rampart"
rm -rf "$W"
echo "$OUT/rampart"
