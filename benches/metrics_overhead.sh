#!/usr/bin/env bash
# What Prometheus metrics cost per request: the same binary with and without
# --monitoring_config_file (and with --monitoring_per_version_labels), gRPC Predict on
# half_plus_two from h2load, rounds alternating between the servers; server CPU per request
# from /proc. Usage: benches/metrics_overhead.sh [REQUESTS] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-100000}
ROUNDS=${2:-3}
command -v h2load >/dev/null || { echo "h2load not found (apt-get install nghttp2-client)" >&2; exit 1; }
cargo build --release --bin tensorserve >&2
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK"' EXIT
# PredictRequest for half_plus_two, x = [[2.0]] (float_val), gRPC-framed.
echo 000000002a0a0f0a0d68616c665f706c75735f74776f12170a017812120801120812020801120208012a0400000040 | xxd -r -p > "$WORK/predict.grpc"
echo 'prometheus_config { enable: true }' > "$WORK/monitoring.config"
serve() { # port rest_port flags...
  local port=$1 rest=$2; shift 2
  RUST_LOG=warn target/release/tensorserve --port "$port" --rest_api_port "$rest" --grpc_bind_address 127.0.0.1 "$@" \
    >/dev/null 2>&1 &
}
serve 18910 18911; OFF=$!
serve 18920 18921 --monitoring_config_file "$WORK/monitoring.config"; ON=$!
serve 18930 18931 --monitoring_config_file "$WORK/monitoring.config" --monitoring_per_version_labels; DETAIL=$!
sleep 2
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
TICK_US=$((1000000 / $(getconf CLK_TCK)))
declare -A TOTAL
run() { # label port pid
  local before after
  before=$(cpu_ticks "$3")
  out=$(h2load -n "$N" -c 4 -m 16 --data="$WORK/predict.grpc" -H 'content-type: application/grpc' -H 'te: trailers' \
    "http://127.0.0.1:$2/tensorflow.serving.PredictionService/Predict")
  after=$(cpu_ticks "$3")
  echo "$out" | grep -q "$N succeeded" || { echo "$out" >&2; exit 1; }
  local us
  us=$(awk -v t="$((after - before))" -v tick="$TICK_US" -v n="$N" 'BEGIN {printf "%.2f", t * tick / n}')
  TOTAL[$1]=$(awk -v a="${TOTAL[$1]:-0}" -v b="$us" 'BEGIN {print a + b}')
  printf '%-10s req/s=%-10s server_cpu_per_req=%s us\n' "$1" "$(echo "$out" | awk '/^finished in/ {print $4}')" "$us"
}
for p in 18910 18920 18930; do h2load -n 5000 -c 4 -m 16 --data="$WORK/predict.grpc" -H 'content-type: application/grpc' \
  -H 'te: trailers' "http://127.0.0.1:$p/tensorflow.serving.PredictionService/Predict" >/dev/null; done
for r in $(seq 1 "$ROUNDS"); do
  run off 18910 "$OFF"; run metrics 18920 "$ON"; run detailed 18930 "$DETAIL"
done
curl -sf "http://127.0.0.1:18921/monitoring/prometheus/metrics" | grep '^:tensorflow:serving:request_count'
awk -v off="${TOTAL[off]}" -v on="${TOTAL[metrics]}" -v d="${TOTAL[detailed]}" \
  'BEGIN {printf "CPU per request vs off: metrics %.3fx, with per-version labels %.3fx\n", on / off, d / off}'
