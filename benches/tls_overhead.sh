#!/usr/bin/env bash
# What TLS costs per request: one binary serving gRPC Predict (half_plus_two) in plaintext and
# behind --ssl_config_file, h2load over 4 kept-alive connections, rounds alternating; server CPU
# per request from /proc. Certificates come from the make_certs example.
# Usage: benches/tls_overhead.sh [REQUESTS] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-100000}
ROUNDS=${2:-3}
command -v h2load >/dev/null || { echo "h2load not found (apt-get install nghttp2-client)" >&2; exit 1; }
cargo build --release --bin tensorserve --example make_certs >&2
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK"' EXIT
echo 000000002a0a0f0a0d68616c665f706c75735f74776f12170a017812120801120812020801120208012a0400000040 | xxd -r -p > "$WORK/predict.grpc"
target/release/examples/make_certs "$WORK" 2>/dev/null
python3 - "$WORK" <<'PY'
import json, sys
d = sys.argv[1]
read = lambda n: open(f"{d}/{n}").read()
open(f"{d}/tls.config", "w").write(f"server_key: {json.dumps(read('server.key'))}\nserver_cert: {json.dumps(read('server.pem'))}\n")
PY
serve() { # port flags...
  local port=$1; shift
  RUST_LOG=warn target/release/tensorserve --port "$port" --rest_api_port 0 --grpc_bind_address 127.0.0.1 "$@" >/dev/null 2>&1 &
}
serve 18960; PLAIN=$!
serve 18970 --ssl_config_file "$WORK/tls.config"; TLS=$!
sleep 2
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
TICK_US=$((1000000 / $(getconf CLK_TCK)))
declare -A TOTAL
run() { # label url pid
  local before after us out
  before=$(cpu_ticks "$3")
  out=$(h2load -n "$N" -c 4 -m 16 --data="$WORK/predict.grpc" -H 'content-type: application/grpc' -H 'te: trailers' "$2")
  after=$(cpu_ticks "$3")
  echo "$out" | grep -q "$N succeeded" || { echo "$out" >&2; exit 1; }
  us=$(awk -v t="$((after - before))" -v tick="$TICK_US" -v n="$N" 'BEGIN {printf "%.2f", t * tick / n}')
  TOTAL[$1]=$(awk -v a="${TOTAL[$1]:-0}" -v b="$us" 'BEGIN {print a + b}')
  printf '%-9s req/s=%-10s server_cpu_per_req=%s us\n' "$1" "$(echo "$out" | awk '/^finished in/ {print $4}')" "$us"
}
P=http://127.0.0.1:18960/tensorflow.serving.PredictionService/Predict
T=https://127.0.0.1:18970/tensorflow.serving.PredictionService/Predict
for u in "$P" "$T"; do h2load -n 5000 -c 4 -m 16 --data="$WORK/predict.grpc" -H 'content-type: application/grpc' -H 'te: trailers' "$u" >/dev/null; done
for r in $(seq 1 "$ROUNDS"); do run plaintext "$P" "$PLAIN"; run tls "$T" "$TLS"; done
awk -v p="${TOTAL[plaintext]}" -v t="${TOTAL[tls]}" 'BEGIN {printf "server CPU per request, TLS vs plaintext: %.3fx\n", t / p}'
